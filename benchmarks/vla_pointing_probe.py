"""Can the frozen vision features say which image token holds "the <colour> <shape>"?

    python benchmarks/vla_pointing_probe.py --scenes 900

A diagnostic for the tiny VLA's grounding (docs/vla.md). It renders the first frame of
``--scenes`` seen pick layouts at 128 px, runs the frozen ImageNet EfficientNet-lite0 up to
stride 16 (the tiny VLA's ``--tiny-vision efficientnet``: 8 x 8 tokens of 112 channels), and
trains a small bilinear probe on all but the last 150 scenes: a query from the one-hot
(colour, shape) of an object, keys from each token's features, softmax over the 64 tokens,
cross-entropy on the token that shows the object (:func:`playworld.policy.vqa.image_cell`).
Prints, on the held-out scenes, how often the probe's token is the object's token, and how often
it is nearer (on the token grid) to the named object than to any other object in the scene;
the same for the mean colour of each token's pixels alone, as a baseline.

If the probe points well, the features hold what grounding needs and a VLA that does not
ground the words has a learning problem, not a seeing one.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn

from playworld.envs.tabletop import Tabletop, get_suite
from playworld.envs.tabletop.scene import SHAPES
from playworld.envs.tabletop.tasks import SEEN_COLORS, SEEN_SHAPES
from playworld.policy.backbones import EfficientNetEncoder
from playworld.policy.vqa import image_cell

GRID = 8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=900, help="layouts (the last 150 are held out)")
    ap.add_argument("--steps", type=int, default=1500, help="probe training steps (batch 128)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    held_out = 150
    if args.scenes <= held_out:
        raise SystemExit(f"--scenes must be more than the {held_out} held-out scenes.")

    env = Tabletop(suite="seen", image_size=128, tasks=("pick",))
    images, queries = [], []  # queries: (scene, colour, shape, token, tokens of every object)
    try:
        for k, spec in enumerate(get_suite("seen", ["pick"]).episodes(args.scenes, seed=args.seed)):
            obs, _ = env.reset(options={"episode": spec})
            images.append(obs["image"])
            cells = [image_cell(o.xy, SHAPES[o.shape].half_height, GRID) for o in spec.objects]
            tokens = [r * GRID + c for r, c in cells]
            names = [o.name for o in spec.objects]
            for i, o in enumerate(spec.objects):
                if names.count(o.name) == 1:
                    queries.append((k, SEEN_COLORS.index(o.color), SEEN_SHAPES.index(o.shape), tokens[i], tokens))
    finally:
        env.close()

    encoder = EfficientNetEncoder(grid=GRID, stride=16).eval()
    with torch.no_grad():
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255  # (S, 3, 128, 128)
        features = torch.cat([encoder(x[i : i + 64]) for i in range(0, len(x), 64)])  # (S, 64, 112)
        mean_rgb = nn.functional.avg_pool2d(x, 128 // GRID).flatten(2).transpose(1, 2) * 10  # (S, 64, 3)

    train = [q for q in queries if q[0] < args.scenes - held_out]
    test = [q for q in queries if q[0] >= args.scenes - held_out]

    def batch(qs):
        scene = torch.tensor([q[0] for q in qs])
        one_hot = torch.cat([nn.functional.one_hot(torch.tensor([q[1] for q in qs]), len(SEEN_COLORS)),
                             nn.functional.one_hot(torch.tensor([q[2] for q in qs]), len(SEEN_SHAPES))], -1)
        return scene, one_hot.float(), torch.tensor([q[3] for q in qs])

    print(f"{args.scenes} scenes ({held_out} held out), {len(train)} training / {len(test)} test queries")
    for name, feats in (("EfficientNet-lite0 stride 16", features), ("mean colour per token", mean_rgb)):
        torch.manual_seed(args.seed)
        d = feats.shape[-1]
        key = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 128), nn.GELU(), nn.Linear(128, 64))
        query = nn.Sequential(nn.Linear(len(SEEN_COLORS) + len(SEEN_SHAPES), 64), nn.GELU(), nn.Linear(64, 64))
        pos = nn.Parameter(torch.zeros(GRID * GRID, 64))
        opt = torch.optim.Adam([*key.parameters(), *query.parameters(), pos], 3e-3)
        rng = np.random.default_rng(args.seed)
        for _ in range(args.steps):
            scene, q, target = batch([train[i] for i in rng.integers(len(train), size=128)])
            logits = torch.einsum("bd,btd->bt", query(q), key(feats[scene]) + pos)  # (B, 64)
            loss = nn.functional.cross_entropy(logits, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            scene, q, target = batch(test)
            pred = torch.einsum("bd,btd->bt", query(q), key(feats[scene]) + pos).argmax(-1).tolist()
        exact = sum(p == t for p, t in zip(pred, target.tolist(), strict=True))
        nearest = 0
        for (_, _, _, tok, tokens), p in zip(test, pred, strict=True):
            dist = [abs(p // GRID - t // GRID) + abs(p % GRID - t % GRID) for t in tokens]
            nearest += tokens[int(np.argmin(dist))] == tok
        print(f"  {name:<30} exact token {exact / len(test):.0%}   nearest object is the named one "
              f"{nearest / len(test):.0%}   (final training loss {loss.item():.3f})")


if __name__ == "__main__":
    main()
