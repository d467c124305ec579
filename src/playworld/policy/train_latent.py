"""``playworld train latent-policy``: learn to act from action-free video (Genie's agent study).

The pipeline, top to bottom (arXiv 2402.15391, Sec. 3.3; ``docs/bridge.md``):

1. a latent action model (LAM) - given with ``--lam``, or trained here on all of ``--data``
   without its actions (``out/lam``);
2. the frozen LAM labels every transition of the expert episodes with a latent action
   (deterministic: eval mode with its latent statistics recomputed once on the data, see
   :func:`recalibrate_latent_norm`, the same clip windows every time; ``out/latent_labels.npz``);
3. a policy learns observation (the last frames) -> the expert's latent action;
4. the latent -> real action map is fitted on ``--labels K`` transitions whose true action is
   known (majority vote per latent action, as Genie): the only real labels used. They also
   pick the step the latent action is read at (``--latent-delay``): the decision at t may only
   show in transition t+1 (Pong's paddle, with its input lag and momentum).

``--adapt finetune`` replaces step 4 by LAPA's adaptation (arXiv 2410.11758): the latent policy
(``out/latent-pretrain``) gets a fresh real-action output layer and the whole net is fine-tuned
on the K labelled transitions' real actions (``--finetune-steps`` at ``--finetune-lr``, same
batch and schedule as its training); the policy in ``out`` then outputs real actions directly.

``--adapt relabel`` grounds the video instead (map before cloning): a relabeller fitted on the K labels
gives every video transition a real action and the policy clones them - the window map of the LAM's
codes (``--map-window``), or with ``--relabeller idm`` VPT's inverse-dynamics model, a small CNN on
the frames around t trained on the K labelled transitions only (no LAM needed).

``--target real`` trains the *oracle* instead: the same network and budget, on the K
transitions with their real actions (behaviour cloning), no LAM. ``benchmarks/latent_bc.py``
compares the two over K.

Output folder: ``config.json`` + ``model.safetensors`` (``LatentActionPolicy.from_pretrained``
loads it; the map is in the config), ``latent_policy.json`` (what was fitted and how well),
``latent_labels.npz``, the training loop's checkpoints / ``metrics.jsonl`` / TensorBoard logs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
import tyro
from torch.utils.data import Dataset

from playworld.data.format import VideoDataset, load_dataset
from playworld.errors import PlayworldError
from playworld.eval.metrics import fit_latent_action_map, latent_map_accuracy, normalized_mutual_info
from playworld.policy.experts import policy_episodes
from playworld.policy.latent_policy import LatentPolicyConfig, LatentPolicyNet, check_codebook
from playworld.train.loop import TrainConfig, Trainer
from playworld.utils import atomic_write_bytes, atomic_write_json, get_logger, seed_everything

log = get_logger("policy.train_latent")

MIN_TRANSITIONS = 64  # fewer expert transitions than this cannot train (or even validate) a policy
TrainSettings = Annotated[TrainConfig, tyro.conf.OmitArgPrefixes]


# ---------------------------------------------------------------------------------------------
# Transitions: (episode, t) pairs of the video the policy imitates
# ---------------------------------------------------------------------------------------------


@dataclass
class Transitions:
    """Every transition t -> t+1 of some episodes: ``episode (N,)``, ``t (N,)``, ``real (N,)`` or None."""

    dataset: VideoDataset
    episode: np.ndarray
    t: np.ndarray
    real: np.ndarray | None

    def __len__(self) -> int:
        return len(self.t)

    def subset(self, idx: np.ndarray) -> Transitions:
        return Transitions(self.dataset, self.episode[idx], self.t[idx], None if self.real is None else self.real[idx])


def transitions_of(ds: VideoDataset, episodes: list[int]) -> Transitions:
    """The transitions of ``episodes`` (an episode of T frames has T-1; its last action leads nowhere)."""
    eps, ts = [], []
    for e in episodes:
        n = int(ds.episode_lengths[e]) - 1
        eps.append(np.full(max(n, 0), e, np.int64))
        ts.append(np.arange(max(n, 0), dtype=np.int64))
    ep, t = (np.concatenate(eps), np.concatenate(ts)) if eps else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    real = None
    actions = getattr(ds, "actions", None)  # LeRobot folders have no frame-level action array (continuous actions)
    if ds.has_actions and actions is not None and actions.ndim == 1:
        real = np.asarray(actions)[ds.episode_starts[ep] + t].astype(np.int64)
    return Transitions(ds, ep, t, real)


def imitation_split(data: Path | VideoDataset, imitate: Literal["expert", "all"] = "expert",
                    seed: int = 0) -> tuple[Transitions, Transitions]:
    """(train, val) transitions of the episodes to imitate; val = those in the dataset's val split.

    Raises a clear error when there are fewer than :data:`MIN_TRANSITIONS` training transitions.
    """
    ds = load_dataset(data)
    eps = policy_episodes(ds, "expert" if imitate == "expert" else None)
    if not eps:
        raise PlayworldError(
            f"{ds.root} has no episodes recorded by an expert (episode info 'policy'); pass --imitate all to "
            "imitate every episode, or record expert video (`playworld record atari --policy expert`)."
        )
    val_eps = set(ds.split_episodes("val", seed=seed))
    train_eps = [e for e in eps if e not in val_eps]
    val = [e for e in eps if e in val_eps] if len(train_eps) < len(eps) else []
    train = transitions_of(ds, train_eps or eps)
    if len(train) < MIN_TRANSITIONS:
        raise PlayworldError(
            f"{ds.root} has {len(train)} transitions in the episodes to imitate; a latent policy needs at least "
            f"{MIN_TRANSITIONS}. Record or ingest more video (a few thousand frames is a useful minimum)."
        )
    return train, transitions_of(ds, val)


def select_labelled(n: int, k: int | str, seed: int = 0, where: str = "the data") -> np.ndarray:
    """Indices of the ``k`` transitions whose true action is used (``"all"``: every one)."""
    if k == "all":
        return np.arange(n)
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise PlayworldError(f"--labels must be a positive number of labelled transitions or 'all', got {k!r}.")
    if k > n:
        raise PlayworldError(
            f"--labels {k} asks for more labelled transitions than {where} has ({n}); pass --labels {n} "
            "(or --labels all), or record more labelled expert video."
        )
    return np.sort(np.random.default_rng(seed).choice(n, size=int(k), replace=False))


class TransitionDataset(Dataset):
    """Item ``i``: ``{"frames": uint8 (num_frames, H, W, 3) ending at frame t, "target": int64}``.

    Frames before an episode's start repeat its first frame (as the runtime policy does).
    """

    def __init__(self, tr: Transitions, targets: np.ndarray, num_frames: int):
        if len(targets) != len(tr):
            raise ValueError(f"{len(targets)} targets for {len(tr)} transitions")
        self.tr, self.targets, self.num_frames = tr, np.asarray(targets, np.int64), num_frames

    def __len__(self) -> int:
        return len(self.tr)

    def __getitem__(self, i: int) -> dict:
        e, t = int(self.tr.episode[i]), int(self.tr.t[i])
        idx = np.clip(np.arange(t - self.num_frames + 1, t + 1), 0, None)
        frames = np.array(self.tr.dataset.episode_frames(e)[idx])  # (F, H, W, 3), copied out of the memmap
        return {"frames": torch.from_numpy(frames), "target": torch.tensor(self.targets[i])}


# ---------------------------------------------------------------------------------------------
# Latent labels from a frozen LAM
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def label_transitions(lam, tr: Transitions, clip_len: int = 6, batch_size: int = 32, device: str = "cpu") -> np.ndarray:
    """The LAM's latent action of every transition of ``tr``: int64 ``(N,)``, deterministic.

    Each episode is cut into windows of ``clip_len`` frames that overlap by one frame, so every
    transition is labelled once, seeing the same amount of past as in the LAM's training clips
    (its encoder is causal). The LAM runs in eval mode (running statistics), so a transition's
    label never depends on what else is in the batch.
    """
    from playworld.world.world import frames_to_video

    if clip_len < 2:
        raise PlayworldError(f"clip_len must be >= 2 (an action needs two frames), got {clip_len}.")
    lam = lam.eval()
    ds = tr.dataset
    windows: dict[int, list[tuple[int, int]]] = {}  # window length -> [(episode, start)]
    for e in np.unique(tr.episode):
        n = int(ds.episode_lengths[e])
        for s in range(0, n - 1, clip_len - 1):
            windows.setdefault(min(clip_len, n - s), []).append((int(e), s))
    latent: dict[tuple[int, int], int] = {}
    for length, items in windows.items():
        for b in range(0, len(items), batch_size):
            chunk = items[b : b + batch_size]
            frames = np.stack([ds.episode_frames(e)[s : s + length] for e, s in chunk])  # (B, L, H, W, 3)
            codes = lam.infer_actions(frames_to_video(frames, device)).cpu().numpy()  # (B, L-1)
            for (e, s), row in zip(chunk, codes, strict=True):
                for j, z in enumerate(row):
                    latent[(e, s + j)] = int(z)
    return np.array([latent[(int(e), int(t))] for e, t in zip(tr.episode, tr.t, strict=True)], dtype=np.int64)


@torch.no_grad()
def recalibrate_latent_norm(lam, data: Path | VideoDataset, clip_len: int = 6, max_clips: int = 512,
                            batch_size: int = 32, device: str = "cpu") -> None:
    """Set the LAM's latent standardisation to the exact statistics of its final encoder on ``data``.

    The LAM standardises its latents with batch statistics in training and running averages at
    eval. On a short CPU run the latents' spread is tiny (std ~0.01) and the running mean lags
    the moving encoder by several standard deviations, so in eval mode every transition falls
    into one code (measured on Pong: 1 of 8 codes in eval, 8 in training). Recomputing the
    statistics once with the final weights (as BatchNorm recalibration does) fixes the labels;
    ``max_clips`` clips evenly spread over all episodes, so the result is deterministic.
    """
    from playworld.data.clips import ClipDataset
    from playworld.world.world import frames_to_video

    if not lam.config.latent_norm:
        return
    lam = lam.eval()
    clips = ClipDataset(data, clip_len, split="all")
    idx = np.linspace(0, len(clips) - 1, num=min(max_clips, len(clips))).round().astype(int)
    lam.config.latent_norm = False  # raw latents
    try:
        zs = []
        for b in range(0, len(idx), batch_size):
            frames = torch.stack([clips[int(i)]["frames"] for i in idx[b : b + batch_size]])
            zs.append(lam.encode_latents(frames_to_video(frames, device)).reshape(-1, lam.config.code_dim).float())
    finally:
        lam.config.latent_norm = True
    z = torch.cat(zs)  # (N, code_dim)
    lam.latent_norm.running_mean.copy_(z.mean(0))
    lam.latent_norm.running_var.copy_(z.var(0, unbiased=True))


def delayed_latents(tr: Transitions, latent: np.ndarray, delay: int,
                    among: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(idx, latent of transition idx + delay)`` for the transitions ``idx`` (of ``among``, default
    all) that have a transition ``delay`` steps later in the same episode."""
    idx = np.arange(len(tr)) if among is None else np.asarray(among, dtype=np.int64)
    if delay == 0:
        return idx, latent[idx]
    later = idx + delay
    ok = later < len(tr)
    ok[ok] = (tr.episode[later[ok]] == tr.episode[idx[ok]]) & (tr.t[later[ok]] == tr.t[idx[ok]] + delay)
    return idx[ok], latent[later[ok]]


def choose_latent_delay(tr: Transitions, latent: np.ndarray, labelled: np.ndarray, num_latent: int,
                        num_actions: int, delays: tuple[int, ...] = (0, 1, 2)) -> int:
    """The delay whose latent -> real map fits the labelled transitions best (ties: the shorter).

    An action may show in the video only some steps later (momentum, input lag); the labelled
    set, which exists to ground latent actions in real ones, also says which step to read.
    """
    best, best_acc = 0, -1.0
    for d in delays:
        idx, z = delayed_latents(tr, latent, d, labelled)
        if len(idx) == 0:
            continue
        acc = latent_map_accuracy(fit_action_map(z, tr.real[idx], num_latent, num_actions), z, tr.real[idx])
        if acc > best_acc + 1e-9:
            best, best_acc = d, acc
    return best


def fit_action_map(latent: np.ndarray, real: np.ndarray, num_latent: int, num_actions: int) -> np.ndarray:
    """Genie's latent -> real map: each latent action's most frequent true action (see metrics)."""
    return fit_latent_action_map(latent, real, num_latent, num_actions)


def has_predecessor(tr: Transitions) -> np.ndarray:
    """Bool ``(N,)``: transition i - 1 is step t - 1 of the same episode (i is not an episode's first in ``tr``)."""
    return np.r_[False, (tr.episode[1:] == tr.episode[:-1]) & (tr.t[1:] == tr.t[:-1] + 1)]


def previous_actions(tr: Transitions, start: int = 0) -> np.ndarray:
    """The real action of each transition's predecessor (t - 1, same episode): int64 ``(N,)``.

    A transition without its predecessor in ``tr`` (an episode's first step) gets ``start``, as the
    runtime policy does at an episode's start (:class:`~playworld.policy.latent_policy.LatentActionPolicy`).
    """
    if tr.real is None:
        raise PlayworldError("previous actions need real actions; this data has none.")
    prev = np.full(len(tr), start, np.int64)
    ok = has_predecessor(tr)
    prev[ok] = tr.real[np.flatnonzero(ok) - 1]
    return prev


def select_labelled_pairs(tr: Transitions, k: int | str, seed: int = 0, where: str = "the data") -> tuple[np.ndarray, np.ndarray]:
    """``k`` real labels as ``k // 2`` labelled pairs (t - 1, t) of consecutive transitions.

    Returns ``(targets, labelled)``: the sorted second transitions t of the pairs (whose predecessor's
    action is known, for a map that reads the previous action) and every labelled index (both of each
    pair, ``k`` in all when the pairs do not overlap; ``"all"``: every transition). The labels are
    spent as pairs so that a previous-action map uses no more real actions than Genie's map.
    """
    has_prev = np.flatnonzero(has_predecessor(tr))
    if k == "all":
        return has_prev, np.arange(len(tr))
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 2:
        raise PlayworldError(f"labelled pairs need k >= 2 real labels (k // 2 pairs), got {k!r}.")
    if k // 2 > len(has_prev):
        raise PlayworldError(f"{k} labels ask for {k // 2} labelled pairs but {where} has {len(has_prev)}.")
    targets = np.sort(np.random.default_rng(seed).choice(has_prev, size=int(k) // 2, replace=False))
    return targets, np.unique(np.r_[targets - 1, targets])


def fit_prev_action_map(latent: np.ndarray, prev: np.ndarray, real: np.ndarray, num_latent: int, num_actions: int,
                        fallback: np.ndarray) -> np.ndarray:
    """A latent -> real map that also reads the previous real action: int64 ``(num_latent, num_actions)``.

    ``map[z, p]`` = the real action most often taken with latent ``z`` right after action ``p`` (majority
    vote, as :func:`fit_action_map`); pairs never seen take ``fallback[z]`` (a map of the latent alone).
    With momentum (Breakout: the paddle moves 12.3 a_t + 10.1 a_(t-1) pixels) the move a latent sees
    mixes two actions; knowing the previous one (an agent knows what it did) separates them, as LAPA
    grounds latents with the observation.
    """
    key = np.asarray(latent, np.int64) * num_actions + np.asarray(prev, np.int64)
    seen = np.bincount(key, minlength=num_latent * num_actions) > 0
    joint = fit_action_map(key, real, num_latent * num_actions, num_actions)
    fb = np.repeat(np.asarray(fallback, np.int64), num_actions)
    return np.where(seen, joint, fb).reshape(num_latent, num_actions)


def prev_map_accuracy(amap: np.ndarray, latent: np.ndarray, prev: np.ndarray, real: np.ndarray) -> float:
    """Fraction of transitions where ``amap[latent, prev]`` is the real action."""
    return float((np.asarray(amap)[latent, prev] == real).mean())


MAX_MAP_WINDOW = 5
"""Largest ``--map-window``: the window map has (|A| + 1) ** window cells (8 codes, window 5: 59,049)."""


def window_offsets(window: int) -> list[int]:
    """The steps a window map reads around transition t: 1 -> [0], 2 -> [-1, 0], 3 -> [-1, 0, 1], 4 -> [-2..1], 5 -> [-2..2]."""
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or not 1 <= window <= MAX_MAP_WINDOW:
        raise PlayworldError(f"--map-window must be an integer from 1 to {MAX_MAP_WINDOW}, got {window!r}.")
    return list(range(-(window // 2), window - window // 2))


def window_keys(tr: Transitions, latent: np.ndarray, num_latent: int, window: int) -> np.ndarray:
    """One id per transition for the ``window`` consecutive latent actions around it (:func:`window_offsets`).

    Digit j (base ``num_latent + 1``) is the latent of transition t + offset_j of the same episode, or
    ``num_latent`` ("none") where that transition is not in ``tr`` (an episode's edges). int64 ``(N,)``.
    """
    latent = np.asarray(latent, np.int64)
    if len(latent) != len(tr):
        raise PlayworldError(f"window keys need one latent per transition, got {len(latent)} for {len(tr)}.")
    base, n = num_latent + 1, len(tr)
    keys = np.zeros(n, np.int64)
    for j, off in enumerate(window_offsets(window)):
        idx = np.arange(n) + off
        ok = (idx >= 0) & (idx < n)
        ok[ok] = (tr.episode[idx[ok]] == tr.episode[ok]) & (tr.t[idx[ok]] == tr.t[ok] + off)
        digit = np.full(n, num_latent, np.int64)
        digit[ok] = latent[idx[ok]]
        keys += digit * base**j
    return keys


def fit_window_map(keys: np.ndarray, latent: np.ndarray, real: np.ndarray, num_latent: int, num_actions: int,
                   window: int) -> np.ndarray:
    """A map from ``window`` consecutive latent actions (:func:`window_keys`) to the real action at t.

    Majority vote per window over the labelled transitions (``keys``, their own latents ``latent`` and real
    actions ``real``), as Genie's map; a window never seen takes Genie's map of its middle latent z_t. Returns
    int64 ``((num_latent + 1) ** window,)``: index it with :func:`window_keys`. Why: a LAM whose decoder sees
    the past can code each move relative to the last one (Breakout: NMI(latent, a_t) 0.04 but 0.28 with
    (a_t, a_(t-1))), so a_t is spread over consecutive codes; on the video, where every code is known, the
    codes before and after t read it back (docs/bridge.md, fifth attempt).
    """
    offsets = window_offsets(window)
    base = num_latent + 1
    size = base**window
    keys, latent = np.asarray(keys, np.int64), np.asarray(latent, np.int64)
    if len(keys) != len(latent) or len(keys) != len(real) or len(keys) == 0:
        raise PlayworldError(f"a window map needs labelled transitions with keys, latents and real actions of one "
                             f"length, got {len(keys)}, {len(latent)}, {len(real)}.")
    fallback = fit_action_map(latent, real, num_latent, num_actions)
    joint = fit_action_map(keys, real, size, num_actions)
    seen = np.bincount(keys, minlength=size) > 0
    middle = (np.arange(size) // base ** offsets.index(0)) % base  # z_t of every window (never "none")
    return np.where(seen, joint, fallback[np.minimum(middle, num_latent - 1)])


def relabel_actions(tr: Transitions, latent: np.ndarray, source: Transitions, source_latent: np.ndarray,
                    labelled: np.ndarray, num_latent: int, num_actions: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Map before cloning: the real action of every transition of ``tr`` read off its window of latent actions.

    The map (:func:`fit_window_map`) is fitted on the transitions ``labelled`` (indices into ``source``, whose
    real actions are known); their windows are read in ``source`` with its latents ``source_latent``, so the
    neighbours of a labelled transition need latents, not labels. ``tr`` / ``latent``: the video to relabel
    (may be ``source`` itself). Returns ``(pseudo_actions int64 (N,), window_map)``.
    """
    if source.real is None or len(labelled) == 0:
        raise PlayworldError("relabelling needs labelled transitions with real actions (pass --labels K >= 1).")
    labelled = np.asarray(labelled, np.int64)
    source_latent = np.asarray(source_latent, np.int64)
    lab_keys = window_keys(source, source_latent, num_latent, window)[labelled]
    wmap = fit_window_map(lab_keys, source_latent[labelled], source.real[labelled], num_latent, num_actions, window)
    return wmap[window_keys(tr, latent, num_latent, window)], wmap


# ---------------------------------------------------------------------------------------------
# Relabelling with an inverse-dynamics model (VPT) trained on the K labelled transitions
# ---------------------------------------------------------------------------------------------

RELABELLERS = ("window-map", "idm")
"""How ``--adapt relabel`` reads a_t off the video: the LAM codes' window map, or an inverse-dynamics model on frames."""

IDM_FRAME_OFFSETS = (-1, 0, 1, 2)
"""Frames the inverse-dynamics model reads around transition t (t -> t+1); clipped at an episode's edges."""


@dataclass(frozen=True)
class IDMConfig:
    """Training of the small inverse-dynamics model that ``--relabeller idm`` fits on the K labelled transitions.

    The defaults are those measured on Breakout (docs/bridge.md, sixth attempt): 400 AdamW steps of 64 at lr 2e-3,
    weight decay 1e-2, dropout 0.3 before the head, random horizontal shifts of up to ``max_shift`` pixels.
    ``mirror``: also train on horizontally mirrored inputs with the LEFT and RIGHT actions swapped
    (:func:`mirror_permutation`; only for games whose left/right actions move things sideways, e.g. Breakout).
    """

    steps: int = 400
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-2
    dropout: float = 0.3
    max_shift: int = 3
    mirror: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise PlayworldError(f"--idm-{name.replace('_', '-')} must be an integer >= 1, got {v!r}.")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.dropout < 1 or self.max_shift < 0:
            raise PlayworldError(f"bad inverse-dynamics settings: {self}.")


class InverseDynamicsNet(torch.nn.Module):
    """a_t from the frames t-1, t, t+1, t+2 (:data:`IDM_FRAME_OFFSETS`): a 3-layer CNN, spatially pooled.

    Input ``(B, 4 * 3, H, W)`` float (:func:`idm_inputs`): frame t and the differences t+1 - t, t - (t-1) and
    (t+2) - (t+1), so the net sees the move of transition t and the moves around it (with momentum a move mixes
    a_t and a_(t-1)). Mean- and max-pooling over space make it read *what* moved, wherever it is, which 200 labels
    can teach.
    """

    def __init__(self, num_actions: int, dropout: float = 0.3):
        super().__init__()
        self.conv = torch.nn.Sequential(
            torch.nn.Conv2d(3 * len(IDM_FRAME_OFFSETS), 16, 5, 2, 2), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3, 2, 1), torch.nn.ReLU())
        self.drop = torch.nn.Dropout(dropout)
        self.head = torch.nn.Linear(64, num_actions)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)  # (B, 32, H/8, W/8)
        return self.head(self.drop(torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1)))  # (B, num_actions)


def idm_inputs(tr: Transitions, idx: np.ndarray) -> torch.Tensor:
    """The inverse-dynamics model's input for the transitions ``idx`` of ``tr``: float ``(B, 12, H, W)`` in [-1, 1].

    Frames outside the episode repeat its first or last frame (a still neighbour).
    """
    out = []
    for i in np.asarray(idx, np.int64):
        frames = tr.dataset.episode_frames(int(tr.episode[i]))
        t, n = int(tr.t[i]), len(frames)
        f = np.asarray(frames[np.clip(np.array(IDM_FRAME_OFFSETS) + t, 0, n - 1)], np.float32) / 255.0  # (4,H,W,3)
        out.append(np.concatenate([f[1], f[2] - f[1], f[1] - f[0], f[3] - f[2]], -1))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def mirror_permutation(action_names: list[str] | None) -> np.ndarray:
    """The action ids after a horizontal mirror: every name with LEFT swapped with the same name with RIGHT.

    ``["NOOP", "FIRE", "RIGHT", "LEFT"]`` -> ``[0, 1, 3, 2]``. Refuses names without such a pair (the mirror would
    teach nothing, or the wrong thing).
    """
    names = [str(n).upper() for n in (action_names or [])]
    perm = np.arange(len(names))
    for i, n in enumerate(names):
        if "LEFT" in n and n.replace("LEFT", "RIGHT") in names:
            j = names.index(n.replace("LEFT", "RIGHT"))
            perm[i], perm[j] = j, i
    if (perm == np.arange(len(names))).all():
        raise PlayworldError(f"--idm-mirror swaps LEFT and RIGHT actions, but the action names {action_names} have no "
                             "such pair; leave it off.")
    return perm


def fit_inverse_dynamics(source: Transitions, labelled: np.ndarray, num_actions: int, cfg: IDMConfig = IDMConfig(),
                         action_names: list[str] | None = None) -> InverseDynamicsNet:
    """VPT's inverse-dynamics model, trained on the ``labelled`` transitions of ``source`` (their real actions) only.

    A small CNN (:class:`InverseDynamicsNet`) on the frames around t, with random horizontal shifts and, with
    ``cfg.mirror``, mirrored copies whose LEFT/RIGHT actions are swapped (``action_names``). Why: the LAM's code holds
    the move relative to the last one, so even a window of codes reads a_t back only 0.65-0.73 of the time from
    200 labels on Breakout; the frames show the move itself (docs/bridge.md, sixth attempt).
    """
    labelled = np.asarray(labelled, np.int64)
    if source.real is None or len(labelled) == 0:
        raise PlayworldError("an inverse-dynamics model needs labelled transitions with real actions (--labels K >= 1).")
    perm = torch.from_numpy(mirror_permutation(action_names)) if cfg.mirror else None
    seed_everything(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    y_all = torch.from_numpy(source.real[labelled].astype(np.int64))
    x_all = idm_inputs(source, labelled) if len(labelled) <= 4096 else None  # small K: once; else per batch
    model = InverseDynamicsNet(num_actions, dropout=cfg.dropout).train()
    opt = torch.optim.AdamW(model.parameters(), cfg.lr, weight_decay=cfg.weight_decay)
    for _ in range(cfg.steps):
        b = torch.randint(0, len(labelled), (cfg.batch_size,), generator=gen)
        x = x_all[b] if x_all is not None else idm_inputs(source, labelled[b.numpy()])
        y = y_all[b]
        if perm is not None:
            flip = torch.rand(len(b), generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            y = torch.where(flip, perm[y], y)
        if cfg.max_shift:
            x = torch.roll(x, int(torch.randint(-cfg.max_shift, cfg.max_shift + 1, (1,), generator=gen)), -1)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def idm_actions(model: InverseDynamicsNet, tr: Transitions, batch_size: int = 256) -> np.ndarray:
    """The inverse-dynamics model's action for every transition of ``tr``: int64 ``(N,)``."""
    model = model.eval()
    out = [model(idm_inputs(tr, np.arange(b, min(b + batch_size, len(tr))))).argmax(-1).numpy()
           for b in range(0, len(tr), batch_size)]
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)


def relabel_with_idm(tr: Transitions, source: Transitions, labelled: np.ndarray, num_actions: int,
                     cfg: IDMConfig = IDMConfig(), action_names: list[str] | None = None
                     ) -> tuple[np.ndarray, InverseDynamicsNet]:
    """Map before cloning with VPT's recipe: an inverse-dynamics model fitted on the ``labelled`` transitions of
    ``source`` (:func:`fit_inverse_dynamics`) relabels every transition of ``tr``. Returns ``(pseudo_actions, model)``.

    Unlike :func:`relabel_actions` it reads frames, not the LAM's codes (on Breakout, K = 200: relabelled actions right
    0.88 against the window map's 0.68; docs/bridge.md, sixth attempt).
    """
    model = fit_inverse_dynamics(source, labelled, num_actions, cfg, action_names)
    return idm_actions(model, tr), model


def action_pair_diagnostics(latent: np.ndarray, tr: Transitions) -> dict:
    """What a latent action holds of a_t, of a_(t-1), and of the pair: NMIs over the transitions ``tr``.

    ``latent`` (N,) is the code of each transition of ``tr`` (which needs real actions). A code can be
    nearly independent of a_t and of a_(t-1) alone yet hold their *pair*: with momentum the visible
    move mixes two actions (Breakout: 12.3 a_t + 10.1 a_(t-1) pixels), and a LAM whose decoder sees the
    past frames can code the move relative to the last one ("same again", "reversed"). Then
    ``nmi_latent_real`` is near 0 while ``nmi_latent_action_pair`` is not, and a map that also reads
    the previous action (``fit_prev_action_map``) recovers a_t. Transitions without their predecessor
    in ``tr`` take a_(t-1) = 0, as :func:`previous_actions` does. Keys:

    - ``nmi_latent_prev_action``: NMI(latent, a_(t-1));
    - ``nmi_latent_action_pair``: NMI(latent, (a_t, a_(t-1)));
    - ``nmi_latent_prev_real``: NMI((latent, a_(t-1)), a_t), what the (latent, previous action) map reads;
    - ``nmi_prev_real``: NMI(a_(t-1), a_t), the same from the previous action alone.
    """
    latent = np.asarray(latent, np.int64)
    if tr.real is None or len(latent) != len(tr) or len(tr) == 0:
        raise PlayworldError(
            f"action-pair diagnostics need one latent per transition and real actions; got {len(latent)} latents "
            f"for {len(tr)} transitions{'' if tr.real is not None else ' without real actions'}."
        )
    prev = previous_actions(tr)
    n = int(max(tr.real.max(), prev.max())) + 1
    return {
        "nmi_latent_prev_action": round(normalized_mutual_info(latent, prev), 4),
        "nmi_latent_action_pair": round(normalized_mutual_info(latent, tr.real * n + prev), 4),
        "nmi_latent_prev_real": round(normalized_mutual_info(latent * n + prev, tr.real), 4),
        "nmi_prev_real": round(normalized_mutual_info(prev, tr.real), 4),
    }


def load_lam(path: Path, frame_size: tuple[int, int], device: str = "cpu", hint: str = ""):
    """The frozen LAM in ``path``, refused unless it reads frames of ``frame_size`` (``hint``: which video
    the frames came from, for the message)."""
    from playworld.world.latent_actions import LatentActionModel

    lam = LatentActionModel.from_pretrained(path, map_location=device).eval().requires_grad_(False)
    if tuple(lam.config.image_size) != tuple(frame_size):
        raise PlayworldError(
            f"the latent action model in {path} reads {tuple(lam.config.image_size)} frames but the data has "
            f"{tuple(frame_size)}{hint}; use a LAM trained on video of the same frame size."
        )
    return lam


# ---------------------------------------------------------------------------------------------
# Training a policy
# ---------------------------------------------------------------------------------------------


def train_policy(
    config: LatentPolicyConfig,
    train: Transitions,
    train_targets: np.ndarray,
    out: Path,
    train_cfg: TrainConfig,
    val: Transitions | None = None,
    val_targets: np.ndarray | None = None,
    resume: bool = False,
    init_from: LatentPolicyNet | None = None,
) -> LatentPolicyNet:
    """Behaviour cloning through the one training loop: ``config.target`` ids from the last frames.

    ``init_from``: start from that network's trunk (every weight but the output layer, see
    :meth:`LatentPolicyNet.load_trunk`) instead of a random initialisation.
    """
    seed_everything(train_cfg.seed)
    model = LatentPolicyNet(config)
    if init_from is not None:
        model.load_trunk(init_from)
    train_set = TransitionDataset(train, train_targets, config.num_frames)
    val_set = None
    if val is not None and val_targets is not None and len(val) >= train_cfg.batch_size:
        val_set = TransitionDataset(val, val_targets, config.num_frames)
    trainer = Trainer(model, train_cfg, out, train_set, batch_fn=lambda b: (b["frames"], b["target"]),
                      val_data=val_set, name=f"{config.target}-policy")
    trainer.fit(resume=resume)
    return LatentPolicyNet.from_pretrained(out)


def finetune_train_config(base: TrainConfig, steps: int | None = None, lr: float | None = None) -> TrainConfig:
    """The fine-tuning budget: ``base`` (batch, schedule, seed, device) with ``steps`` steps at peak ``lr``.

    None keeps ``base``'s value, so by default the fine-tuning gets exactly the budget of a policy
    trained from scratch on the same labels (the oracle): the two then differ only in their start.
    """
    steps = base.steps if steps is None else steps
    lr = base.lr if lr is None else lr
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise PlayworldError(f"--finetune-steps must be an integer >= 1, got {steps!r}.")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise PlayworldError(f"--finetune-lr must be a number > 0, got {lr!r}.")
    return dataclasses.replace(base, steps=int(steps), lr=float(lr), warmup_steps=min(base.warmup_steps, steps // 10),
                               ckpt_every=min(base.ckpt_every, steps))


def finetune_policy(pretrained: LatentPolicyNet, labelled: Transitions, out: Path, train_cfg: TrainConfig,
                    val: Transitions | None = None, resume: bool = False) -> LatentPolicyNet:
    """LAPA's adaptation: ``pretrained``'s trunk + a fresh real-action head, fine-tuned on ``labelled``.

    ``pretrained`` is normally the latent-action policy (obs -> the LAM's latent action, learnt on
    every unlabelled expert frame); the whole network is trained on the real actions of the
    labelled transitions with ``train_cfg`` (see :func:`finetune_train_config`). Returns a
    ``target="real"`` policy (saved in ``out``, loads with ``from_pretrained`` and acts directly).
    """
    if labelled.real is None or len(labelled) == 0:
        raise PlayworldError(
            "fine-tuning needs labelled transitions with their real actions; the labelled set is empty or has "
            "no discrete actions (pass --labels K >= 1 and data recorded with actions)."
        )
    cfg = dataclasses.replace(pretrained.config, target="real", action_map=None)
    val_real = val.real if val is not None and val.real is not None and len(val) else None
    return train_policy(cfg, labelled, labelled.real, out, train_cfg, val if val_real is not None else None, val_real,
                        resume=resume, init_from=pretrained)


@torch.no_grad()
def action_accuracy(model: LatentPolicyNet, tr: Transitions, targets: np.ndarray | None = None,
                    batch_size: int = 256) -> float:
    """Open-loop accuracy of ``model``'s greedy choice on ``tr`` (default targets: the real actions)."""
    targets = tr.real if targets is None else targets
    if targets is None or len(tr) == 0:
        raise PlayworldError("accuracy needs transitions with targets (real actions); this set has none.")
    data = TransitionDataset(tr, targets, model.config.num_frames)
    model = model.eval()
    hits = 0
    for b in range(0, len(data), batch_size):
        items = [data[i] for i in range(b, min(b + batch_size, len(data)))]
        frames = torch.stack([it["frames"] for it in items])
        hits += int((model(frames).argmax(-1) == torch.stack([it["target"] for it in items])).sum())
    return hits / len(data)


def _default_train() -> TrainConfig:
    # CPU-sized: ~2 minutes for the tiny net on 64x64 frames at 1500 steps (benchmarks/latent_bc.py).
    return TrainConfig(steps=2000, batch_size=32, lr=3e-3, warmup_steps=100, weight_decay=1e-4, precision="fp32",
                       eval_every=500, sample_every=0, ckpt_every=1000, num_workers=0)


@dataclass
class TrainLatentPolicy:
    """Learn to act from action-free video: LAM labels -> latent policy -> latent->real map on K labels."""

    data: Path
    """Dataset of expert video (e.g. `playworld record atari --policy expert`, or `playworld ingest`); true actions are read only for the K labelled transitions."""
    out: Path
    """Output folder: the policy (config.json + model.safetensors), latent_policy.json, latent_labels.npz, logs."""
    lam: Path | None = None
    """Trained latent action model folder (`playworld train lam`); default: train one on --data into OUT/lam."""
    labels: int | Literal["all"] = 200
    """K: transitions whose true action is known (Genie: 200), to fit the latent -> real map (or, with --target real, to clone)."""
    labelled_data: Path | None = None
    """Dataset the K labelled transitions come from (same frame size, with true actions); default: --data itself."""
    target: Literal["latent", "real"] = "latent"
    """latent: Genie's latent-action policy; real: the oracle, behaviour cloning on the K real labels (same net, same budget)."""
    imitate: Literal["expert", "all"] = "expert"
    """Episodes to imitate: those an expert recorded (the LAM still learns from all), or every episode."""
    preset: Literal["tiny", "small"] = "tiny"
    """Policy network size."""
    num_frames: int = 2
    """Frames the policy sees (the last N)."""
    rgb: bool = False
    """The policy reads RGB frames instead of greyscale (small coloured objects, e.g. Breakout's red ball, are dim in grey)."""
    num_latent: int | None = None
    """Latent actions |A|: must equal the LAM's codebook (default: the LAM's; 8 when training one)."""
    lam_preset: Literal["tiny", "small", "base"] = "tiny"
    """Size of the LAM trained when --lam is not given."""
    lam_steps: int = 2000
    """Optimiser steps of that LAM."""
    lam_clip_len: int = 6
    """Frames per LAM training clip; labelling uses windows of the same length."""
    label_seed: int = 0
    """Seed of which K transitions are labelled."""
    latent_delay: int | Literal["auto"] = "auto"
    """The decision at step t shows in the latent action of transition t+d (Pong's paddle answers an action a step later); auto: the d in 0..2 that the K labels fit best."""
    adapt: Literal["map", "finetune", "relabel"] = "map"
    """How the K labels ground the latent policy: map = Genie's latent -> real map (majority vote per latent action); finetune = LAPA: a fresh real-action head on the latent policy's trunk (trained into OUT/latent-pretrain), the whole net fine-tuned on the K labelled transitions; relabel = map before cloning: the K labels fit a map from --map-window consecutive latent actions to the real action, it relabels every video transition, and the policy clones those actions (no latent pretraining). finetune and relabel leave in OUT a policy that outputs real actions."""
    map_window: int = 3
    """--adapt relabel: consecutive latent actions the map reads around t (1: z_t, Genie's map; 2: z_t-1, z_t; 3: z_t-1..z_t+1; up to 5); replaces --latent-delay."""
    relabeller: Literal["window-map", "idm"] = "window-map"
    """--adapt relabel: what reads a_t off the video. window-map: the LAM codes' window map (--map-window); idm: VPT's inverse-dynamics model, a small CNN on the frames t-1..t+2 trained on the K labelled transitions only (no LAM is used or trained; Breakout, K = 200: relabelled actions right 0.88 against the window map's 0.68, docs/bridge.md)."""
    idm_steps: int = 400
    """--relabeller idm: optimiser steps of the inverse-dynamics model (batch 64) on the K labelled transitions."""
    idm_mirror: bool = False
    """--relabeller idm: also train on horizontally mirrored frames with the LEFT and RIGHT actions swapped (games whose left/right move things sideways, e.g. Breakout; not Pong)."""
    finetune_steps: int | None = None
    """--adapt finetune: optimiser steps on the K labelled transitions (default: --steps, the budget the oracle gets; same batch size and schedule)."""
    finetune_lr: float | None = None
    """--adapt finetune: peak learning rate of the fine-tuning (default: --lr)."""
    train: TrainSettings = field(default_factory=_default_train)
    """Optimisation settings of the policy."""
    resume: bool = False
    """Continue an interrupted policy training in --out."""

    def run(self) -> Path:
        if self.adapt not in ("map", "finetune", "relabel"):
            raise PlayworldError(f"--adapt must be 'map', 'finetune' or 'relabel', got {self.adapt!r}.")
        if self.adapt != "map" and self.target == "real":
            raise PlayworldError(f"--adapt {self.adapt} grounds latent actions; the oracle (--target real) has nothing to adapt.")
        if self.relabeller not in RELABELLERS:
            raise PlayworldError(f"--relabeller must be one of {', '.join(RELABELLERS)}, got {self.relabeller!r}.")
        if self.relabeller != "window-map" and self.adapt != "relabel":
            raise PlayworldError(f"--relabeller {self.relabeller} relabels the video; it needs --adapt relabel.")
        if self.adapt == "relabel":
            window_offsets(self.map_window)  # a bad window fails before anything is trained
            self._idm_config()  # bad --idm-* settings fail before anything is trained
        ft_cfg = finetune_train_config(self.train, self.finetune_steps, self.finetune_lr) if self.adapt == "finetune" else None
        train, val = imitation_split(self.data, self.imitate)
        ds = train.dataset
        source = train if self.labelled_data is None else labelled_source(self.labelled_data, ds.frame_size)
        if source.real is None:
            raise PlayworldError(
                f"{source.dataset.root} has no discrete true actions, so nothing can be labelled; the K labelled "
                "transitions need them: pass --labelled-data with a small dataset recorded with actions."
            )
        labelled = select_labelled(len(source), self.labels, self.label_seed, f"the labelled episodes of {source.dataset.root}")
        lab = source.subset(labelled)
        names = source.dataset.action_names or ds.action_names
        num_actions = len(names) if names else int(lab.real.max()) + 1
        game = (ds.meta.get("extra", {}).get("games") or [None])[0]
        base = dict(image_size=ds.frame_size, num_frames=self.num_frames, grayscale=not self.rgb, num_actions=num_actions,
                    action_names=names, game=game)
        summary: dict = {"data": str(self.data), "labels": len(lab), "label_seed": self.label_seed,
                         "target": self.target, "train_transitions": len(train), "val_transitions": len(val)}
        if self.adapt == "relabel" and self.relabeller == "idm":  # VPT: frames, not latent actions, read a_t
            self._relabel(summary, train, val, None, source, None, labelled, self.num_latent or 8, num_actions, base)
        elif self.target == "real":
            cfg = LatentPolicyConfig.preset(self.preset, target="real", num_latent=self.num_latent or 8, **base)
            val_real = val.real if val.real is not None and len(val) else None
            train_policy(cfg, lab, lab.real, self.out, self.train, val, val_real, resume=self.resume)
        else:
            lam = self._lam(ds)
            num_latent = lam.num_actions
            if self.num_latent is not None:
                check_codebook(num_latent, self.num_latent, f"--num-latent {self.num_latent}")
            log.info("labelling %d transitions with the latent action model", len(train) + len(val))
            recalibrate_latent_norm(lam, self.data, self.lam_clip_len)
            latent = label_transitions(lam, train, self.lam_clip_len)
            val_latent = label_transitions(lam, val, self.lam_clip_len) if len(val) else np.zeros(0, np.int64)
            src_latent = latent if source is train else label_transitions(lam, source, self.lam_clip_len)
            self.out.mkdir(parents=True, exist_ok=True)
            np.savez(self.out / "latent_labels.npz", episode=train.episode, t=train.t, latent=latent,
                     real=train.real if train.real is not None else np.zeros(0, np.int64))
            summary["lam"] = str(self.lam or self.out / "lam")
            if self.adapt == "relabel":
                self._relabel(summary, train, val, latent, source, src_latent, labelled, num_latent, num_actions, base)
                atomic_write_json(self.out / "latent_policy.json", summary)
                log.info("relabelled policy written to %s: %s", self.out, {k: v for k, v in summary.items() if k != "data"})
                print(f"policy in {self.out}; evaluate it: playworld eval latent-policy --policy {self.out}")
                return self.out
            delay = self.latent_delay
            if delay == "auto":
                delay = choose_latent_delay(source, src_latent, labelled, num_latent, num_actions)
            # The latent action that shows the decision at t is the one of transition t + delay.
            lab_idx, lab_latent = delayed_latents(source, src_latent, int(delay), labelled)
            amap = fit_action_map(lab_latent, source.real[lab_idx], num_latent, num_actions)
            summary["latent_delay"] = int(delay)
            summary.update(map_diagnostics(amap, lab_latent, source.real[lab_idx], num_latent=num_latent))
            tr_idx, tr_latent = delayed_latents(train, latent, int(delay))
            if train.real is not None:  # how well the map reads all of the video's true actions
                summary["map_accuracy_train"] = round(latent_map_accuracy(amap, tr_latent, train.real[tr_idx]), 4)
                summary["nmi_latent_real"] = round(normalized_mutual_info(tr_latent, train.real[tr_idx]), 4)
                summary.update(action_pair_diagnostics(tr_latent, train.subset(tr_idx)))
            va_idx, va_latent = delayed_latents(val, val_latent, int(delay))
            if val.real is not None and len(va_idx):
                summary["map_accuracy_val"] = round(latent_map_accuracy(amap, va_latent, val.real[va_idx]), 4)
            cfg = LatentPolicyConfig.preset(self.preset, target="latent", num_latent=num_latent,
                                            action_map=amap.tolist(), **base)
            latent_out = self.out if ft_cfg is None else self.out / "latent-pretrain"
            if ft_cfg is not None and self.resume and (latent_out / "train_summary.json").exists():
                pre = LatentPolicyNet.from_pretrained(latent_out)  # pretraining finished before the interruption
            else:
                pre = train_policy(cfg, train.subset(tr_idx), tr_latent, latent_out, self.train, val.subset(va_idx),
                                   va_latent, resume=self.resume)
            if ft_cfg is not None:  # LAPA: the same trunk, a real-action head, fine-tuned on the K labels
                summary.update(adapt="finetune", pretrained=str(latent_out), finetune_steps=ft_cfg.steps,
                               finetune_lr=ft_cfg.lr)
                net = finetune_policy(pre, lab, self.out, ft_cfg, val if source is train else None, resume=self.resume)
                if val.real is not None and len(val):
                    summary["finetune_accuracy_val"] = round(action_accuracy(net, val), 4)
        atomic_write_json(self.out / "latent_policy.json", summary)
        log.info("latent policy written to %s: %s", self.out, {k: v for k, v in summary.items() if k != "data"})
        print(f"policy in {self.out}; evaluate it: playworld eval latent-policy --policy {self.out}")
        return self.out

    def _idm_config(self) -> IDMConfig:
        return IDMConfig(steps=self.idm_steps, mirror=self.idm_mirror, seed=self.train.seed)

    def _relabel(self, summary: dict, train: Transitions, val: Transitions, latent: np.ndarray | None,
                 source: Transitions, src_latent: np.ndarray | None, labelled: np.ndarray, num_latent: int,
                 num_actions: int, base: dict) -> None:
        """--adapt relabel: the K labels fit a relabeller (the window map of the LAM's codes, or with --relabeller idm
        an inverse-dynamics model on the frames, ``latent`` then None), it relabels the video, the policy clones it."""
        summary.update(adapt="relabel", relabeller=self.relabeller)
        if self.relabeller == "idm":
            cfg_idm = self._idm_config()
            pseudo, idm = relabel_with_idm(train, source, labelled, num_actions, cfg_idm, base.get("action_names"))
            self.out.mkdir(parents=True, exist_ok=True)
            from safetensors.torch import save

            atomic_write_bytes(self.out / "idm.safetensors", save(idm.state_dict()))
            lab = source.subset(labelled)
            summary.update(idm=dataclasses.asdict(cfg_idm), idm_frame_offsets=list(IDM_FRAME_OFFSETS),
                           idm_accuracy_labelled=round(float((idm_actions(idm, lab) == lab.real).mean()), 4))
        else:
            pseudo, wmap = relabel_actions(train, latent, source, src_latent, labelled, num_latent, num_actions,
                                           self.map_window)
            summary.update(map_window=self.map_window, window_map=wmap.tolist(),
                           map_windows_labelled=int(len(np.unique(window_keys(source, src_latent, num_latent,
                                                                              self.map_window)[labelled]))))
        summary["relabelled_histogram"] = np.bincount(pseudo, minlength=num_actions).tolist()
        if train.real is not None:  # diagnostics only: how often the relabelled action is the true one
            summary["relabel_accuracy_train"] = round(float((pseudo == train.real).mean()), 4)
            if latent is not None:
                summary["nmi_latent_real"] = round(normalized_mutual_info(latent, train.real), 4)
                summary.update(action_pair_diagnostics(latent, train))
        cfg = LatentPolicyConfig.preset(self.preset, target="real", num_latent=num_latent, **base)
        val_real = val.real if val.real is not None and len(val) else None
        net = train_policy(cfg, train, pseudo, self.out, self.train, val if val_real is not None else None, val_real,
                           resume=self.resume)
        if val_real is not None:
            summary["relabel_policy_accuracy_val"] = round(action_accuracy(net, val), 4)

    def _lam(self, ds: VideoDataset):
        if self.lam is not None:
            return load_lam(self.lam, ds.frame_size)
        lam_out = self.out / "lam"
        if not (lam_out / "model.safetensors").exists():
            log.info("training a latent action model on %s (no actions) -> %s", self.data, lam_out)
            train_lam(self.data, lam_out, self.lam_preset, steps=self.lam_steps, clip_len=self.lam_clip_len,
                      num_actions=self.num_latent or 8, seed=self.train.seed, device=self.train.device,
                      progress=self.train.progress)
        return load_lam(lam_out, ds.frame_size)


def train_lam(data: Path, out: Path, preset: str = "tiny", steps: int = 2000, clip_len: int = 6, num_actions: int = 8,
              batch_size: int = 8, lr: float = 6e-4, seed: int = 0, device: str = "auto", progress: bool = True,
              camera: str | None = None, **overrides) -> Path:
    """Train a latent action model on every episode of ``data`` (actions unused) with the one loop.

    ``overrides`` change fields of the preset (e.g. ``dim=64, enc_depth=2`` for a CPU-sized LAM);
    ``camera`` picks the camera of a LeRobot folder with several (None: its first).
    An interrupted run in ``out`` resumes.
    """
    from playworld.data.clips import ClipDataset
    from playworld.train.commands import _frames_to_video
    from playworld.world.latent_actions import LatentActionConfig, LatentActionModel

    seed_everything(seed)
    clips = ClipDataset(load_dataset(data, camera), clip_len, split="all")
    model = LatentActionModel(LatentActionConfig.preset(preset, image_size=clips.dataset.frame_size,
                                                        num_actions=num_actions, **overrides))
    log.info("latent action model: %.2fM parameters", model.num_parameters() / 1e6)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=min(200, steps // 10), seed=seed,
                      precision="fp32", eval_every=0, sample_every=0, ckpt_every=max(1, steps // 4), num_workers=0,
                      progress=progress, device=device)
    Trainer(model, cfg, out, clips, batch_fn=lambda b: (_frames_to_video(b),), name="lam").fit(
        resume=(out / "checkpoints").exists())
    return out


def map_diagnostics(amap: np.ndarray, latent: np.ndarray, real: np.ndarray, num_latent: int = 8) -> dict:
    """How well latent actions stand for real ones on labelled transitions: NMI, map accuracy, codes used."""
    return {
        "action_map": [int(a) for a in amap],
        "nmi_latent_real": round(normalized_mutual_info(latent, real), 4),
        "map_accuracy_labelled": round(latent_map_accuracy(amap, latent, real), 4),
        "latent_codes_used": int(len(np.unique(latent))),
        "latent_histogram": np.bincount(latent, minlength=num_latent).tolist(),
    }


def labelled_source(path: Path, frame_size: tuple[int, int]) -> Transitions:
    """All transitions of a small labelled dataset (expert episodes if tagged), checked against the video."""
    ds = load_dataset(path)
    if tuple(ds.frame_size) != tuple(frame_size):
        raise PlayworldError(
            f"the labelled data {path} has {tuple(ds.frame_size)} frames but the video has {tuple(frame_size)}; "
            "record both at the same size."
        )
    return transitions_of(ds, policy_episodes(ds, "expert"))
