"""Open-loop diagnosis of a trained VLA on its held-out demonstrations (why closed loop fails).

    python benchmarks/vla_openloop.py --policy runs/vla-tiny --data data/tabletop

On the validation episodes of the training run (same split as ``playworld train vla``: seed 0,
``--val-fraction`` 0.1), prints

- exact-bin accuracy per action dimension, teacher-forced (the training metric) and decoded
  greedily from the recorded frames (what the closed loop does);
- how many distinct (dx, dy, dz) the greedy decoder emits, and on how many frames its
  horizontal direction is within 45 degrees of the expert's (where the expert moves > 1 cm):
  a model that ignores the scene emits a handful of actions and ~chance directions; the same
  split by task family and by the expert's gripper (open: reaching for the object; closed:
  carrying it, or pushing), since the two halves need different things (docs/vla.md);
- whether the model reads the gripper's position from the state: how much its greedy dy moves
  when the state says the gripper is 8 cm further left, then 8 cm further right (the expert
  would steer back: a model that relates the gripper to its goal answers with a lower dy);
- for T=1 sampling: the chance per episode that the terminate token fires before the expert's
  end, and the mean per-step chance of a gripper token on the wrong side of 0.5; and how many
  false terminates greedy decoding makes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from playworld.policy.decoding import decode_actions
from playworld.policy.train_vla import load_episodes
from playworld.policy.vla import VLA, robot_prompt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", type=Path, required=True, help="folder written by `playworld train vla`")
    ap.add_argument("--data", type=Path, required=True, help="the LeRobot folder it was trained on")
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0, help="the training run's --seed (it picks the split)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--episodes", type=int, default=0, help="only the first N held-out episodes (0 = all)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from playworld.data.lerobot import load_lerobot

    n = load_lerobot(args.data).num_episodes
    val = sorted(np.random.default_rng(args.seed).permutation(n)[: int(round(n * args.val_fraction))].tolist())
    val = val[: args.episodes or None]
    m = VLA.from_pretrained(args.policy).eval()
    tok = m.config.get_action_tokenizer()
    eps, _, _ = load_episodes(args.data, m.config.image_size, tok, val, wrist_size=m.config.wrist_size)
    names = tok.names or [str(i) for i in range(tok.dim)]
    d = len(names)
    forced, free = np.zeros(d), np.zeros(d)
    frames, distinct, direction_ok, groups = 0, set(), [], []
    p_term, p_grip, false_term, nonfinal, state_response = [], [], 0, 0, []
    with torch.no_grad():
        for ep in eps:
            T = len(ep.bins)
            state = torch.from_numpy(ep.states) if m.config.use_state else None
            images = torch.from_numpy(ep.frames)
            wrist = torch.from_numpy(ep.wrist) if ep.wrist is not None else None
            prompt = torch.tensor([m.encode_text(robot_prompt(ep.instruction))]).expand(T, -1)
            L = prompt.shape[1]
            target = torch.tensor(np.asarray([m.action_target_ids(b) for b in ep.bins]))
            hidden = m(images, torch.cat([prompt, target], 1), state, wrist, torch.full((T,), L))  # (T, L + d, D)
            logits = m.action_logits(hidden[:, L : L + d]).float()  # (T, d, 256): teacher-forced
            forced += (logits.argmax(-1).numpy() == ep.bins).sum(0)
            probs = torch.softmax(logits, -1).numpy()
            nonterm = ep.bins[:, 0] < tok.num_bins // 2
            p_term.append(1 - np.prod(1 - probs[nonterm, 0, tok.num_bins // 2 :].sum(-1)))
            closed = ep.bins[:, -1] >= tok.num_bins // 2
            p_grip.append(np.where(closed, probs[:, -1, : tok.num_bins // 2].sum(-1), probs[:, -1, tok.num_bins // 2 :].sum(-1)).mean())

            bins = decode_actions(m, *m.prefill(images, prompt, state, wrist))[0].numpy()  # greedy, free-running
            free += (bins == ep.bins).sum(0)
            frames += T
            distinct |= {tuple(r[1:4]) for r in bins}
            false_term += int((bins[nonterm, 0] >= tok.num_bins // 2).sum())
            nonfinal += int(nonterm.sum())
            pred, true = tok.decode(bins)[:, 1:3], tok.decode(ep.bins)[:, 1:3]
            moving = np.linalg.norm(true, axis=1) > 0.01
            cos = (pred[moving] * true[moving]).sum(1) / (
                np.linalg.norm(pred[moving], axis=1) * np.linalg.norm(true[moving], axis=1) + 1e-9
            )
            direction_ok += list(cos > np.cos(np.pi / 4))
            if state is not None and moving.any():  # the same moving frames, the gripper said to be 8 cm left / right
                dys = []
                for shift in (0.08, -0.08):
                    moved = state[moving].clone()
                    moved[:, 1] += shift
                    w = wrist[moving] if wrist is not None else None
                    b = decode_actions(m, *m.prefill(images[moving], prompt[moving], moved, w))[0].numpy()
                    dys.append(tok.decode(b)[:, 2])
                state_response += list(dys[0] - dys[1])  # metres; < 0: steers back towards the goal
            gripping = tok.decode(ep.bins)[moving, -1] >= 0.5
            family = (ep.spec or {}).get("family", "?")
            groups += [(family, "closed" if g else "open") for g in gripping]
    fmt = lambda acc: "  ".join(f"{k} {100 * v / frames:.0f}%" for k, v in zip(names, acc, strict=True))  # noqa: E731
    print(f"{args.policy}: {len(eps)} held-out episodes, {frames} frames")
    print(f"exact-bin accuracy, teacher-forced:  {fmt(forced)}")
    print(f"exact-bin accuracy, greedy decoding: {fmt(free)}")
    print(f"greedy: {len(distinct)} distinct (dx, dy, dz); horizontal direction within 45 deg of the expert's on "
          f"{100 * np.mean(direction_ok):.0f}% of {len(direction_ok)} moving frames; false terminates {false_term}/{nonfinal}")
    ok, groups = np.asarray(direction_ok), np.asarray(groups).reshape(-1, 2)
    for family in sorted(set(groups[:, 0])):
        parts = []
        for grip in ("open", "closed"):
            sel = (groups[:, 0] == family) & (groups[:, 1] == grip)
            parts.append(f"gripper {grip} {100 * ok[sel].mean():.0f}% of {sel.sum()}" if sel.any() else f"gripper {grip} -")
        print(f"  direction within 45 deg, {family}: " + ", ".join(parts))
    if state_response:
        r = np.asarray(state_response) * 100
        print(f"state: gripper said 16 cm further left -> greedy dy changes by {r.mean():+.2f} cm on average; "
              f"steers back (< -0.5 cm) on {100 * np.mean(r < -0.5):.0f}%, unchanged (within 0.5 cm) on "
              f"{100 * np.mean(abs(r) <= 0.5):.0f}% of {len(r)} moving frames")
    print(f"T=1 sampling: P(terminate fires before the expert's end) per episode {np.mean(p_term):.2f}; "
          f"per-step P(gripper on the wrong side) {np.mean(p_grip):.3f}")


if __name__ == "__main__":
    main()
