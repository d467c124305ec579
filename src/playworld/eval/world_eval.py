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
  the test split (all transitions, and those whose action has a visible effect). On data
  recorded with ``--action-effects`` "visible effect" is the emulator's answer (the taken
  action's next frame differs from NOOP's) and ``map_accuracy_effect_equivalent`` also counts
  a mapped action as right when it gives the same next frame as the taken one; on other data
  it is approximated as "the true action is not NOOP and the frame changed";
- **Fréchet distance** between real and generated frames on features of the ImageNet-trained
  EfficientNet-lite0 (an FID-style proxy for FVD, whose I3D weights cannot be fetched here;
  pass another extractor to :func:`evaluate_world` for true FVD).
"""

from __future__ import annotations

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


def _clip_batches(clips: ClipDataset, n: int, batch_size: int, seed: int, with_position: bool = False):
    """Batches of ``n`` random clips: ``(frames, actions)``, plus ``(episodes, starts)`` of each
    clip with ``with_position``."""
    idx = np.random.default_rng(seed).permutation(len(clips))[:n]
    for s in range(0, len(idx), batch_size):
        items = [clips[int(i)] for i in idx[s : s + batch_size]]
        frames = torch.stack([it["frames"] for it in items])  # (B, T, H, W, 3)
        actions = torch.stack([it["actions"] for it in items]) if "actions" in items[0] else None
        if with_position:
            yield frames, actions, [it["episode"] for it in items], [it["start"] for it in items]
        else:
            yield frames, actions


EFFECT_ARRAYS = ("action_effect", "equivalent_actions")  # written by `playworld record atari --action-effects`


def fit_equivalent_action_map(latent: np.ndarray, equivalent: np.ndarray, num_latent: int, num_true: int) -> np.ndarray:
    """Map each latent code to the action most often *equivalent* to the taken one on its steps:
    ``mapping[z] = argmax_b #{steps with code z whose equivalence bitmask has bit b}`` (ties: lowest
    id; unseen codes: the action most often equivalent overall). This is the map that maximises
    :func:`equivalent_map_accuracy` on the steps it is fitted on."""
    bits = (np.asarray(equivalent, np.int64)[:, None] >> np.arange(num_true)) & 1  # (N, num_true)
    counts = np.zeros((num_latent, num_true), np.int64)
    np.add.at(counts, np.asarray(latent, np.int64), bits)
    mapping = counts.argmax(axis=1)
    mapping[counts.sum(axis=1) == 0] = bits.sum(axis=0).argmax() if len(bits) else 0
    return mapping.astype(np.int64)


def equivalent_map_accuracy(mapping: np.ndarray, latent: np.ndarray, equivalent: np.ndarray) -> float:
    """Fraction of steps whose mapped action ``mapping[latent]`` is in the step's equivalence set
    (bit ``mapping[latent]`` of ``equivalent``: that action gives the same next frame as the taken one)."""
    m = np.asarray(mapping, np.int64)[np.asarray(latent, np.int64)]
    return float(((np.asarray(equivalent, np.int64) >> m) & 1).mean()) if len(m) else float("nan")


@torch.no_grad()
def latent_action_agreement(lam, data, seed: int = 0, max_clips: int = 256, clip_len: int = 8) -> dict[str, Any]:
    """Latent vs true actions of a :class:`LatentActionModel`: codebook usage on the test split and,
    where the data has true actions, NMI and a latent -> true map fitted on val, scored on test."""
    from playworld.eval.metrics import (
        codebook_stats,
        fit_latent_action_map,
        latent_map_accuracy,
        normalized_mutual_info,
    )

    ds = load_dataset(data)
    out: dict[str, Any] = {}
    device = next(lam.parameters()).device
    lam.eval()
    # Emulator-grounded effects (`record atari --action-effects`), when the dataset has them.
    has_effects = all(n in getattr(ds, "frame_array_names", ()) for n in EFFECT_ARRAYS)

    def collect(split: str) -> dict[str, np.ndarray]:
        """Per transition (clip frame t -> t+1) of up to ``max_clips`` clips of ``split``."""
        clips = ClipDataset(ds, clip_len, split=split, with_actions=ds.has_actions, seed=seed)
        got: dict[str, list[np.ndarray]] = {"latent": [], "true": [], "changed": [], **{n: [] for n in EFFECT_ARRAYS}}
        for frames, actions, episodes, starts in _clip_batches(clips, max_clips, 16, seed, with_position=True):
            video = frames_to_video(frames, device)
            got["latent"].append(lam.infer_actions(video).cpu().numpy().ravel())
            diff = (frames[:, 1:].float() - frames[:, :-1].float()).abs().mean(dim=(2, 3, 4))  # (B, T-1)
            got["changed"].append((diff > 0.5).numpy().ravel())
            if actions is not None:
                got["true"].append(actions[:, :-1].numpy().ravel())
            if has_effects:  # the rows of the clip's first T-1 frames: their actions lead to frames 1..T-1
                for name in EFFECT_ARRAYS:
                    got[name] += [np.asarray(ds.episode_array(name, e)[s : s + clip_len - 1]) for e, s in zip(episodes, starts, strict=True)]
        return {k: np.concatenate(v) for k, v in got.items() if v}

    test = collect("test")
    lat_test = test["latent"]
    out.update({f"latent_{k}": v for k, v in codebook_stats(lat_test, lam.num_actions).items()})
    if "true" in test and ds.action_names and ds.actions is not None and ds.actions.ndim == 1:
        true_test = test["true"]
        n_true = len(ds.action_names)
        val = collect("val")
        lat_val, true_val = val["latent"], val["true"]
        mapping = fit_latent_action_map(lat_val, true_val, lam.num_actions, n_true)
        names = [n.upper() for n in ds.action_names]
        if has_effects:
            effect = test["action_effect"].astype(bool)
        else:
            effect = test["changed"] & (true_test != (names.index("NOOP") if "NOOP" in names else -1))
        majority = np.bincount(true_val, minlength=n_true).argmax()
        out.update(
            nmi=normalized_mutual_info(lat_test, true_test),
            map_accuracy=latent_map_accuracy(mapping, lat_test, true_test),
            map_accuracy_visible_effect=latent_map_accuracy(mapping, lat_test[effect], true_test[effect]) if effect.any() else float("nan"),
            majority_baseline_accuracy=float((true_test == majority).mean()),
            visible_effect_transitions=int(effect.sum()),
            visible_effect_definition=(
                "emulator: next frame differs from NOOP's" if has_effects else "frame changed and action != NOOP"
            ),
            latent_to_true={i: ds.action_names[int(m)] for i, m in enumerate(mapping)},
        )
        if has_effects:
            # Fitted on val's effect transitions, scored on test's: right when the mapped action
            # gives the same next frame as the taken one.
            eff_val = val["action_effect"].astype(bool)
            eq_map = fit_equivalent_action_map(lat_val[eff_val], val["equivalent_actions"][eff_val], lam.num_actions, n_true)
            const = fit_equivalent_action_map(np.zeros(int(eff_val.sum()), np.int64), val["equivalent_actions"][eff_val], 1, n_true)
            eq_test = test["equivalent_actions"][effect]
            out.update(
                map_accuracy_effect_equivalent=equivalent_map_accuracy(eq_map, lat_test[effect], eq_test),
                effect_equivalent_baseline_accuracy=equivalent_map_accuracy(const, np.zeros(len(eq_test), np.int64), eq_test),
                visible_effect_share=float(effect.mean()),
                latent_to_equivalent_action={i: ds.action_names[int(m)] for i, m in enumerate(eq_map)},
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
    "map_accuracy_effect_equivalent": (">=", 0.8),
}


def print_table(res: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="playworld world evaluation")
    table.add_column("metric", no_wrap=True)
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
