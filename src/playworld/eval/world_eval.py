"""``playworld eval world``: the Genie paper's metrics for a trained world, on held-out episodes.

For every sampled test clip ``x_0 .. x_H`` (H = ``--horizon``, default Genie's t = 4):

- **tokenizer**: PSNR / SSIM of ``decode(encode(x))`` against ``x``;
- **dynamics**: prompt with ``x_0``; generate ``x̂_1 .. x̂_H`` with the latent actions the LAM
  infers from the real clip; next-frame PSNR (t = 1) and PSNR at t = H;
- **dtPSNR** (Genie's controllability): PSNR(x_H, x̂_H | inferred actions) - PSNR(x_H, x̂_H |
  random actions), same prompt and sampling seed;
- **latent actions**: codebook usage and perplexity on the test transitions; where the data has
  true actions, the normalised mutual information between latent and true actions, and the
  accuracy of the best latent -> true action map fitted on the validation split and scored on
  the test split (all transitions, and those whose action has a visible effect: the true
  action is not NOOP and the frame changed);
- **Fréchet distance** between real and generated frames on features of the ImageNet-trained
  EfficientNet-lite0 (an FID-style proxy for FVD, whose I3D weights cannot be fetched here;
  pass another extractor to :func:`evaluate_world` for true FVD).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from playworld.data.clips import ClipDataset
from playworld.data.format import load_dataset
from playworld.errors import PlayworldError
from playworld.utils import atomic_write_json, get_logger
from playworld.world.world import World, frames_to_video

log = get_logger("eval")


def _clip_batches(clips: ClipDataset, n: int, batch_size: int, seed: int):
    idx = np.random.default_rng(seed).permutation(len(clips))[:n]
    for s in range(0, len(idx), batch_size):
        items = [clips[int(i)] for i in idx[s : s + batch_size]]
        frames = torch.stack([it["frames"] for it in items])  # (B, T, H, W, 3)
        actions = torch.stack([it["actions"] for it in items]) if "actions" in items[0] else None
        yield frames, actions


@torch.no_grad()
def latent_action_agreement(lam, data, seed: int = 0, max_clips: int = 256, clip_len: int = 8) -> dict[str, Any]:
    """Latent vs true actions of a :class:`LatentActionModel`: codebook usage on the test split and,
    where the data has true actions, NMI and a latent -> true map fitted on val, scored on test."""
    from playworld.eval.metrics import codebook_stats, fit_latent_action_map, latent_map_accuracy, normalized_mutual_info

    ds = load_dataset(data)
    out: dict[str, Any] = {}
    device = next(lam.parameters()).device
    lam.eval()

    def collect(split: str):
        clips = ClipDataset(ds, clip_len, split=split, with_actions=ds.has_actions, seed=seed)
        lat, tru, changed = [], [], []
        for frames, actions in _clip_batches(clips, max_clips, 16, seed):
            video = frames_to_video(frames, device)
            lat.append(lam.infer_actions(video).cpu().numpy().ravel())
            diff = (frames[:, 1:].float() - frames[:, :-1].float()).abs().mean(dim=(2, 3, 4))  # (B, T-1)
            changed.append((diff > 0.5).numpy().ravel())
            if actions is not None:
                tru.append(actions[:, :-1].numpy().ravel())
        return np.concatenate(lat), (np.concatenate(tru) if tru else None), np.concatenate(changed)

    lat_test, true_test, changed = collect("test")
    out.update({f"latent_{k}": v for k, v in codebook_stats(lat_test, lam.num_actions).items()})
    if true_test is not None and ds.action_names and ds.actions is not None and ds.actions.ndim == 1:
        n_true = len(ds.action_names)
        lat_val, true_val, _ = collect("val")
        mapping = fit_latent_action_map(lat_val, true_val, lam.num_actions, n_true)
        names = [n.upper() for n in ds.action_names]
        effect = changed & (true_test != (names.index("NOOP") if "NOOP" in names else -1))
        majority = np.bincount(true_val, minlength=n_true).argmax()
        out.update(
            nmi=normalized_mutual_info(lat_test, true_test),
            map_accuracy=latent_map_accuracy(mapping, lat_test, true_test),
            map_accuracy_visible_effect=latent_map_accuracy(mapping, lat_test[effect], true_test[effect]) if effect.any() else float("nan"),
            majority_baseline_accuracy=float((true_test == majority).mean()),
            visible_effect_transitions=int(effect.sum()),
            latent_to_true={i: ds.action_names[int(m)] for i, m in enumerate(mapping)},
        )
    return out


@torch.no_grad()
def evaluate_world(
    world: World,
    data: str | Path,
    split: str = "test",
    num_clips: int = 64,
    horizon: int = 4,
    batch_size: int = 8,
    seed: int = 0,
    maskgit_steps: int | None = None,
    feature_extractor=None,
    frechet: bool = True,
) -> dict[str, Any]:
    """Compute every metric of the module docstring; returns a flat JSON-able dict."""
    from playworld.eval.metrics import FrechetFeatureDistance, dt_psnr, psnr, ssim

    ds = load_dataset(data)
    if tuple(ds.frame_size) != tuple(world.frame_size):
        raise PlayworldError(
            f"{data} has {tuple(ds.frame_size)} frames but the world was trained on {tuple(world.frame_size)}; "
            "evaluate on data recorded at the world's frame size (--size)."
        )
    clips = ClipDataset(ds, horizon + 1, split=split, seed=seed)
    n = min(num_clips, len(clips))
    g = torch.Generator(device=world.device)
    tok_psnr, tok_ssim, next_psnr, h_psnr, dts, n_done = [], [], [], [], [], 0
    if frechet and feature_extractor is None:
        from playworld.eval.features import EfficientNetLite0Features

        feature_extractor = EfficientNetLite0Features(device=str(world.device))
    fd = FrechetFeatureDistance(feature_extractor) if frechet else None
    t0 = time.perf_counter()
    from tqdm.auto import tqdm

    bar = tqdm(total=n, desc="eval world", unit="clip")
    for frames, _ in _clip_batches(clips, n, batch_size, seed):
        video = frames_to_video(frames, world.device)  # (B, H+1, 3, h, w)
        B = video.shape[0]
        recon = world.tokenizer.decode(world.tokenizer.encode(video))
        tok_psnr.append(psnr(recon, video, reduction="none").flatten())
        tok_ssim.append(ssim(recon.flatten(0, 1), video.flatten(0, 1), reduction="none"))
        inferred = world.lam.infer_actions(video)  # (B, H)
        rand = torch.randint(0, world.num_actions, inferred.shape, generator=torch.Generator().manual_seed(seed + n_done))
        g.manual_seed(seed + n_done)
        gen_inf = world.generate(video[:, :1], inferred, steps=maskgit_steps, generator=g)  # (B, H, 3, h, w)
        g.manual_seed(seed + n_done)
        gen_rand = world.generate(video[:, :1], rand.to(world.device), steps=maskgit_steps, generator=g)
        prompt = video[:, :1]
        full_inf, full_rand = torch.cat([prompt, gen_inf], 1), torch.cat([prompt, gen_rand], 1)
        next_psnr.append(psnr(gen_inf[:, 0], video[:, 1], reduction="none"))
        h_psnr.append(psnr(gen_inf[:, -1], video[:, -1], reduction="none"))
        dts.append(dt_psnr(video, full_inf, full_rand, t=horizon) * B)
        if fd is not None:
            fd.update_real(video[:, 1:])
            fd.update_fake(gen_inf)
        n_done += B
        bar.update(B)
    bar.close()
    if n_done == 0:
        raise PlayworldError(f"no {split} clips of {horizon + 1} frames in {data}; record more or longer episodes.")
    cat = lambda xs: torch.cat(xs).float()  # noqa: E731
    res: dict[str, Any] = {
        "clips": n_done,
        "split": split,
        "horizon_t": horizon,
        "maskgit_steps": maskgit_steps or world.maskgit_steps,
        "tokenizer_psnr": float(cat(tok_psnr).mean()),
        "tokenizer_ssim": float(cat(tok_ssim).mean()),
        "next_frame_psnr": float(cat(next_psnr).mean()),
        f"psnr_t{horizon}": float(cat(h_psnr).mean()),
        f"dtpsnr_t{horizon}": float(sum(dts) / n_done),
    }
    if fd is not None:
        res[f"frechet_{getattr(feature_extractor, 'name', 'features')}"] = float(fd.compute())
    res.update(latent_action_agreement(world.lam, data, seed=seed))
    res["eval_seconds"] = round(time.perf_counter() - t0, 1)
    return res


TARGETS = {  # issue #3's targets (64x64 Atari test episodes)
    "tokenizer_psnr": (">=", 30.0),
    "dtpsnr_t4": (">=", 1.5),
    "latent_usage": (">=", 6),
    "map_accuracy_visible_effect": (">=", 0.8),
}


def print_table(res: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="playworld world evaluation")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("target")
    for k, v in res.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}->{b}" for a, b in v.items())
        elif isinstance(v, float):
            v = f"{v:.4g}"
        tgt = ""
        if k in TARGETS:
            op, val = TARGETS[k]
            ok = res[k] >= val if isinstance(res[k], (int, float)) else False
            tgt = f"{op} {val} {'[green]met[/]' if ok else '[red]missed[/]'}"
        table.add_row(k, str(v), tgt)
    Console().print(table)


@dataclass
class EvalWorld:
    """Evaluate a world on held-out episodes: tokenizer PSNR/SSIM, next-frame PSNR, dtPSNR, latent actions, Fréchet distance."""

    world: Path
    """World folder (from `playworld train world`)."""
    data: Path
    """Dataset folder the world was trained on (its test split is never trained on)."""
    split: Literal["train", "val", "test"] = "test"
    """Which episodes to evaluate on."""
    clips: int = 64
    """Number of clips to evaluate."""
    horizon: int = 4
    """Generated frames per clip; dtPSNR is reported at t = horizon (Genie: 4)."""
    maskgit_steps: int | None = None
    """MaskGIT steps (default: the world's play setting)."""
    batch_size: int = 8
    """Clips per batch."""
    frechet: bool = True
    """Compute the EfficientNet-lite0 Fréchet distance (slowest part: turn off for quick checks)."""
    seed: int = 0
    """Seed for clip choice, random actions and sampling."""
    out: Path | None = None
    """Write the results as JSON here (default: <world>/eval-<split>.json)."""

    def run(self) -> dict[str, Any]:
        world = World.from_pretrained(self.world)
        res = evaluate_world(
            world, self.data, self.split, self.clips, self.horizon, self.batch_size, self.seed,
            self.maskgit_steps, frechet=self.frechet,
        )
        print_table(res)
        out = self.out or self.world / f"eval-{self.split}.json"
        atomic_write_json(out, res)
        print(f"wrote {out}")
        return 0
