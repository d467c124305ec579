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
