"""LAPA (Latent Action Pretraining, arXiv 2410.11758) for playworld's RT-2-style VLA.

LAPA's three stages, and where each lives here:

1. **Latent action quantisation**: a latent action model learned from video alone
   (:mod:`playworld.world.latent_actions`, ``playworld train lam``).
2. **Latent pretraining**: the frozen LAM labels every transition of the video; the VLA learns to
   write those latent actions as tokens from image + instruction, with RT-2's prompt
   (``playworld train vla --latent-lam LAM``). The video's actions are never read. LAPA's latent
   spans frame t to a future frame t+H; our LAM labels one step at a time, so the answer is the
   codes of the next ``--latent-horizon`` transitions (:func:`label_episodes`).
3. **Action fine-tuning**: start from the pretrained VLA (``--init``) and train on a small
   labelled set with RT-2's 256-bin action tokens (:func:`init_from_checkpoint`); the latent
   tokens stay in the vocabulary, unused.

``benchmarks/lapa.py`` runs all three and compares with the same VLA trained on the labelled
set alone (``docs/bridge.md``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from playworld.errors import PlayworldError
from playworld.utils import get_logger

if TYPE_CHECKING:
    from playworld.policy.train_vla import Episode
    from playworld.policy.vla import VLA

log = get_logger("policy.lapa")

#: Fewer latent examples than this cannot pretrain (or even fill a few batches of) a VLA.
MIN_LATENT_EXAMPLES = 64


def label_episodes(
    lam_path: Path,
    data: Path,
    episode_ids: list[int],
    clip_len: int = 6,
    num_latent: int | None = None,
    camera: str | None = None,
) -> tuple[dict[int, np.ndarray], dict[str, Any]]:
    """The LAM's latent action of every transition of ``episode_ids`` of ``data``.

    Returns ({episode: int64 (T-1,) codes}, a summary: codebook size, codes used, histogram, and,
    when the data happens to have actions, how much the codes say about the motion - a
    diagnostic only, the labels never read them). Deterministic: the LAM's latent statistics are
    recomputed once on ``data`` and the same clip windows are used every time
    (:func:`playworld.policy.train_latent.label_transitions`). ``num_latent``: the codebook size
    the VLA expects (a LAM with another is refused). ``camera``: the video the LAM reads, for a LeRobot
    folder with several cameras (None: its first; the tabletop's wrist camera shows the arm's own motion).
    """
    from playworld.data.format import load_dataset
    from playworld.eval.metrics import normalized_mutual_info
    from playworld.policy.latent_policy import check_codebook
    from playworld.policy.train_latent import (
        label_transitions,
        load_lam,
        recalibrate_latent_norm,
        transitions_of,
    )

    ds = load_dataset(data, camera)
    several = len(getattr(ds, "camera_keys", ())) > 1
    lam = load_lam(Path(lam_path), ds.frame_size,
                   hint=f" ({ds.camera}; pick another camera with --latent-camera)" if several else "")
    if num_latent is not None:
        check_codebook(lam.num_actions, num_latent, f"the VLA (its {num_latent} latent-action tokens)")
    recalibrate_latent_norm(lam, ds, clip_len)
    tr = transitions_of(ds, sorted(episode_ids))
    codes = label_transitions(lam, tr, clip_len)
    per_episode = {int(e): codes[tr.episode == e] for e in episode_ids}  # (T-1,) each, empty for 1-frame episodes
    hist = np.bincount(codes, minlength=lam.num_actions)
    summary: dict[str, Any] = {
        "lam": str(lam_path),
        "camera": getattr(ds, "camera", None),
        "num_latent_actions": lam.num_actions,
        "transitions": int(len(codes)),
        "latent_codes_used": int((hist > 0).sum()),
        "latent_histogram": hist.tolist(),
    }
    motion = _motion_classes(ds, tr)
    if motion is not None:
        summary["nmi_latent_motion"] = round(normalized_mutual_info(codes, motion), 4)
    return per_episode, summary


def _motion_classes(ds, tr) -> np.ndarray | None:
    """Diagnostic only: each transition's dominant end-effector motion (+-x, +-y, +-z, still) when
    the data has ``dx, dy, dz`` actions, else None."""
    names = list(getattr(ds, "action_names", None) or [])
    if not getattr(ds, "has_actions", False) or not {"dx", "dy", "dz"} <= set(names):
        return None
    cols = [names.index(n) for n in ("dx", "dy", "dz")]
    out = []
    for e in np.unique(tr.episode):
        a = ds.episode_actions(int(e))
        if a is None or a.ndim != 2:
            return None
        d = np.asarray(a, np.float32)[tr.t[tr.episode == e]][:, cols]  # (n, 3)
        axis = np.abs(d).argmax(1)
        cls = axis * 2 + (d[np.arange(len(d)), axis] > 0)
        out.append(np.where(np.abs(d).max(1) < 1e-3, 6, cls))  # under a millimetre: still
    return np.concatenate(out).astype(np.int64)


def shuffle_latent_labels(labels: dict[int, np.ndarray], seed: int) -> dict[int, np.ndarray]:
    """The control for LAPA's gain: the same codes, permuted across every transition of every episode.

    Each transition gets the code of a random other transition, so the codes keep their frequencies
    (and the pretraining its answer lengths, vocabulary and plans) but say nothing about the frames
    they follow. A gain that survives this is not from the latent actions (docs/bridge.md).
    Deterministic with ``seed``; the episodes keep their lengths."""
    eps = sorted(labels)
    flat = np.concatenate([labels[e] for e in eps]) if eps else np.zeros(0, np.int64)
    flat = flat[np.random.default_rng(seed).permutation(len(flat))]
    out, start = {}, 0
    for e in eps:
        out[e] = flat[start:start + len(labels[e])]
        start += len(labels[e])
    return out


def attach_latent_labels(episodes: list[Episode], labels: dict[int, np.ndarray], episode_ids: list[int]) -> None:
    """Give each loaded episode (in the order of ``episode_ids``) its transitions' latent codes."""
    for ep, i in zip(episodes, episode_ids, strict=True):
        ep.latent = labels[int(i)]
        if len(ep.latent) != len(ep.frames) - 1:
            raise PlayworldError(f"episode {i}: {len(ep.latent)} latent labels for {len(ep.frames)} frames.")


def check_enough_latent_examples(n: int, horizon: int, data: Path) -> None:
    """Refuse video with too few transitions to pretrain on (what is needed, and what to do)."""
    if n < MIN_LATENT_EXAMPLES:
        raise PlayworldError(
            f"{data} gives {n} latent examples (frames followed by {horizon} labelled transitions in the training "
            f"episodes); LAPA pretraining needs at least {MIN_LATENT_EXAMPLES}. Use more video (a few thousand frames "
            "is a useful minimum), more --episodes, or a shorter --latent-horizon."
        )


# ---------------------------------------------------------------------------------------------
# --init: start a run from a trained VLA's weights
# ---------------------------------------------------------------------------------------------


def init_from_checkpoint(
    path: Path,
    backbone: str,
    episodes: list[Episode],
    changes: dict[str, Any],
    plan: bool,
) -> VLA:
    """A VLA for this run with the weights of the trained VLA in ``path`` (LAPA's fine-tuning).

    The architecture and vocabulary come from the checkpoint (backbone, sizes, word vocabulary,
    action and latent token ids, LoRA rank); ``changes`` sets what belongs to this run's data (its action
    tokenizer, state statistics, ``use_state``, latent tokens). Weights the checkpoint lacks
    (the state MLP of a checkpoint pretrained without state, the latent tokens when adding
    them, the wrist camera's position embeddings when adding it) start fresh; the rest must match exactly. Refused, with the reason: another backbone,
    a checkpoint that is not a VLA, a word vocabulary missing words of this data, another
    number of bins or action dimensions, examples longer than the checkpoint's context.
    """
    from playworld.policy.train_vla import max_example_tokens, training_texts, vqa_options_from
    from playworld.policy.vla import VLA

    path = Path(path)
    source = VLA.from_pretrained(path)
    old = source.config
    if old.backbone != backbone:
        raise PlayworldError(
            f"--init {path} is a VLA with the {old.backbone!r} backbone, but this run uses {backbone!r}; pass "
            f"--backbone {old.backbone} (the weights only fit their own architecture)."
        )
    if changes.get("image_size", old.image_size) != old.image_size:
        raise PlayworldError(
            f"--init {path} reads {old.image_size} px images; drop --image-size or pass --image-size {old.image_size}."
        )
    if changes.get("tiny_patch", old.tiny_patch) != old.tiny_patch:
        raise PlayworldError(
            f"--init {path} has tiny_patch {old.tiny_patch}; drop --tiny-patch or pass --tiny-patch {old.tiny_patch}."
        )
    if old.use_state and changes.get("state_fourier", old.state_fourier) != old.state_fourier:
        raise PlayworldError(
            f"--init {path} reads its state with {old.state_fourier} Fourier bands; drop --state-fourier or pass --state-fourier {old.state_fourier}."
        )
    if changes.get("tiny_vision", old.tiny_vision) != old.tiny_vision:
        raise PlayworldError(
            f"--init {path} has the {old.tiny_vision!r} vision encoder; drop --tiny-vision or pass --tiny-vision {old.tiny_vision}."
        )
    tok = changes.get("action_tokenizer")
    if tok and (tok["num_bins"] != old.num_bins or len(tok["q01"]) != old.action_dim):
        raise PlayworldError(
            f"--init {path} writes {old.action_dim} actions in {old.num_bins} bins, this data has "
            f"{len(tok['q01'])} in {tok['num_bins']}; its action tokens would not fit."
        )
    if old.backbone == "tiny":
        known = set(old.vocab)
        grid = old.image_size // old.tiny_patch
        vqa = {"vqa_scenes": old.vqa_scenes, "vqa_lexicon": old.vqa_lexicon, "vqa_refer": old.vqa_refer, **changes}
        texts = training_texts(episodes, changes.get("plan_locate", ""), grid, vqa_options_from(vqa, grid))
        missing = sorted({w for t in texts for w in source.tokenizer.words(t)} - known)
        if missing:
            raise PlayworldError(
                f"--init {path} has a word vocabulary without {len(missing)} word(s) of this data ({', '.join(missing[:8])}); "
                "a tiny VLA cannot learn new words after pretraining: pretrain on video whose instructions cover this data."
            )
    k_old, k_new = old.num_latent_actions, changes.get("num_latent_actions", old.num_latent_actions)
    if k_old and k_new != k_old:
        from playworld.policy.latent_policy import check_codebook

        check_codebook(k_new, k_old, f"the --init VLA {path} (its {k_old} latent-action tokens)")
    config = old.replace(**{**changes, "plan": plan, "num_latent_actions": k_new})
    if k_new and not k_old:
        config.latent_token_ids = ()  # new latent tokens: ids assigned on build
    model = VLA(config)
    need = max_example_tokens(model, episodes, plan)
    config.max_text_len = max(config.max_text_len, need)
    longest = model.num_prefix_tokens + config.max_text_len + config.max_answer_tokens
    if config.backbone == "tiny" and longest > config.max_seq_len:
        raise PlayworldError(
            f"this data makes examples of {config.max_text_len} tokens; with the image tokens ({model.num_prefix_tokens}) "
            f"and the answer that is {longest} positions, more than the {config.max_seq_len} the --init VLA {path} was "
            "built with. Pretrain with text of this length (and the same cameras)."
        )
    own, theirs = model.state_dict(), source.state_dict()
    fresh = [k for k in own if k not in theirs and not model._is_base_weight(k)]
    dropped = [k for k in theirs if k not in own]
    wrong = [f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}" for k, v in theirs.items() if k in own and v.shape != own[k].shape]
    if wrong or any(not k.startswith(("state_proj.", "latent_embed", "wrist_pos")) for k in fresh + dropped):
        raise PlayworldError(
            f"--init {path} does not fit this run's VLA: wrong shapes {wrong[:3]}, missing {fresh[:3]}, extra {dropped[:3]}."
        )
    with torch.no_grad():
        model.load_state_dict({k: v for k, v in theirs.items() if k in own}, strict=False)
    if fresh or dropped:
        log.info("--init %s: fresh %s, not used %s", path, sorted({k.split(".")[0] for k in fresh}),
                 sorted({k.split(".")[0] for k in dropped}))
    log.info("initialised from the VLA in %s (%s backbone, %d latent tokens)", path, config.backbone, k_new)
    return model

