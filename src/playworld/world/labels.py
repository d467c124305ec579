"""Say what each latent action does, automatically, so a player sees labels, not numbers.

Where the training video came with true actions (the Atari recorder stores them, never shown to
the models), each latent action is labelled with the true action it co-occurs with most: the
latent action model is run on real clips, and for every latent code we count the true actions
of the same transitions. The counts also give how *specific* a code is (the share of its
majority action), which the label carries as a percentage.
"""

from __future__ import annotations

import numpy as np
import torch

from playworld.data.clips import ClipDataset
from playworld.world.latent_actions import LatentActionModel
from playworld.world.world import frames_to_video


@torch.no_grad()
def latent_true_counts(
    lam: LatentActionModel, clips: ClipDataset, max_clips: int = 256, batch_size: int = 16
) -> tuple[np.ndarray, list[str]] | None:
    """(num_latent, num_true) co-occurrence counts on ``clips``; None without true actions."""
    ds = clips.dataset
    names = ds.action_names
    if not clips.with_actions or not names or ds.actions is None or ds.actions.ndim != 1:
        return None
    counts = np.zeros((lam.num_actions, len(names)), dtype=np.int64)
    device = next(lam.parameters()).device
    idx = np.linspace(0, len(clips) - 1, num=min(max_clips, len(clips))).astype(int)
    for s in range(0, len(idx), batch_size):
        items = [clips[int(i)] for i in idx[s : s + batch_size]]
        video = frames_to_video(torch.stack([it["frames"] for it in items]), device)
        latent = lam.infer_actions(video).cpu().numpy()  # (B, T-1)
        true = torch.stack([it["actions"] for it in items])[:, :-1].numpy()  # (B, T-1)
        np.add.at(counts, (latent.ravel(), true.ravel()), 1)
    return counts, list(names)


def labels_from_counts(counts: np.ndarray, names: list[str]) -> list[str]:
    """A label per latent code: its majority true action (lower-case) and how specific it is."""
    labels = []
    for row in counts:
        if row.sum() == 0:
            labels.append("unused")
            continue
        j = int(row.argmax())
        share = 100.0 * row[j] / row.sum()
        labels.append(f"{names[j].lower().replace('_', ' ')} ({share:.0f}%)")
    return labels


def _shift_in_region(a: np.ndarray, b: np.ndarray, mask: np.ndarray, max_shift: int = 6) -> tuple[float, float, float]:
    """The (dy, dx) that best moves ``a``'s content onto ``b`` inside ``mask``; and the MSE gain over no shift."""
    best, base = (0, 0), None
    best_err = np.inf
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            shifted = np.roll(a, (dy, dx), axis=(0, 1))
            err = float(((shifted - b) ** 2)[mask].mean())
            if dy == 0 and dx == 0:
                base = err
            if err < best_err:
                best, best_err = (dy, dx), err
    return float(best[0]), float(best[1]), (base - best_err) / (base + 1e-9)


DIRECTIONS = {(0, 0): "stays still", (0, 1): "moves right", (0, -1): "moves left", (-1, 0): "moves up",
              (1, 0): "moves down", (-1, 1): "moves up-right", (-1, -1): "moves up-left", (1, 1): "moves down-right",
              (1, -1): "moves down-left"}


@torch.no_grad()
def motion_labels(world, prompts: list[np.ndarray], steps: int = 4, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Label each latent action by the mean motion it causes across ``prompts``.

    For every prompt, each action is held for ``steps`` steps. What differs between actions
    (the frame minus the mean frame over all actions) marks where the controllable thing is;
    the shift that best maps the prompt onto the generated frame there is the motion. Returns
    labels and the mean (dy, dx) per action in pixels.
    """
    A = world.num_actions
    shifts = np.zeros((A, 2))
    for p in prompts:
        finals = np.stack([world.rollout(p, [a] * steps, seed=seed)[-1].astype(np.float32) / 255.0 for a in range(A)])
        start = finals.mean(0)  # what every action shares (camera, other objects)
        p0 = world.reset(p, seed=seed).astype(np.float32) / 255.0
        for a in range(A):
            specific = np.abs(finals[a] - start).sum(-1) + np.abs(finals[a] - p0).sum(-1)
            mask = specific > np.quantile(specific, 0.9)
            mask = np.repeat(mask[..., None], 3, axis=-1)
            dy, dx, gain = _shift_in_region(p0, finals[a], mask)
            if gain > 0.05:
                shifts[a] += (dy, dx)
    shifts /= max(1, len(prompts))
    labels = []
    for dy, dx in shifts:
        key = tuple(int(np.sign(v)) if abs(v) >= 0.5 else 0 for v in (dy, dx))
        labels.append(DIRECTIONS[key])
    return labels, shifts


def combine_labels(motion: list[str], true_labels: list[str] | None, min_share: float = 40.0) -> list[str]:
    """One short label per action: the motion it causes, plus the true action it co-occurs with
    when that is specific (>= ``min_share`` percent); duplicates get "#2", "#3"."""
    out = []
    for i, m in enumerate(motion):
        lbl = m
        if true_labels and "(" in true_labels[i]:
            name, share = true_labels[i].rsplit(" (", 1)
            if float(share.rstrip("%)")) >= min_share:
                lbl = f"{m} ({name})"
        out.append(lbl)
    base, counts = list(out), {}
    for i, lbl in enumerate(base):
        if base.count(lbl) > 1:
            counts[lbl] = counts.get(lbl, 0) + 1
            out[i] = f"{lbl} #{counts[lbl]}"
    return out
