"""The first step of each episode: which object the plan names, and whether the action is well formed.

For each episode of a suite, one observation and one decoded step (no rollout): the instruction,
the plan the VLA writes (``--plan`` models) and its first action. It prints

- how often the plan names the target object ("pick up the red cube at ..." for a red cube);
- how often the action is out of place: the scripted expert never rolls or pitches the gripper,
  so in its demonstrations those two dimensions are always bin 128; a decoded action with
  another roll or pitch bin has its dimensions shifted (docs/vla.md, "Unknown words, and actions
  that count positions").

    python benchmarks/vla_first_step.py --policy runs/vla-pick --suite unseen-instructions --tasks pick
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from playworld.envs.tabletop import Tabletop, get_suite
from playworld.policy.vla_policy import VLAPolicy

STILL_BIN = "128"  # roll and pitch in every expert action


def first_steps(policy: VLAPolicy, suite: str, episodes: int, seed: int, tasks: tuple[str, ...]) -> list[dict]:
    camera, wrist = policy.model.config.render_sizes()
    env = Tabletop(suite=suite, max_steps=2, image_size=camera, tasks=tasks, wrist_size=wrist)
    rows = []
    try:
        for k, spec in enumerate(get_suite(suite, tasks or None).episodes(episodes, seed=seed)):
            obs, _ = env.reset(options={"episode": spec})
            policy.reset(seed=k)
            policy.select_action(obs, spec.instruction)
            target = spec.objects[spec.goal.target]
            bins = policy.last_action_text.split()
            rows.append({
                "instruction": spec.instruction,
                "target": f"{target.color} {target.shape}",
                "plan": policy.last_plan,
                "action": policy.last_action_text,
                "plan_names_target": f"{target.color} {target.shape}" in (policy.last_plan or ""),
                "out_of_place": len(bins) == 8 and (bins[4] != STILL_BIN or bins[5] != STILL_BIN),
            })
    finally:
        env.close()
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--policy", type=Path, required=True, help="a trained VLA folder")
    p.add_argument("--suite", default="unseen-instructions", help="tabletop suite (default unseen-instructions)")
    p.add_argument("--episodes", type=int, default=50, help="episodes (first steps) to look at")
    p.add_argument("--seed", type=int, default=1, help="seed of the episode list (playworld eval vla's default: 1)")
    p.add_argument("--tasks", nargs="*", default=["pick"], help="task families (default: pick)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--drop-unknown-words", action="store_true",
                   help="leave words outside the tiny model's vocabulary out of the prompt (VLAPolicy option)")
    p.add_argument("--out", type=Path, default=None, help="also write every row as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    policy = VLAPolicy.from_pretrained(args.policy, drop_unknown_words=args.drop_unknown_words)
    rows = first_steps(policy, args.suite, args.episodes, args.seed, tuple(args.tasks))
    for r in rows:
        mark = "OK" if r["plan_names_target"] else "--"
        print(f"{mark} {r['instruction']!r:56} target={r['target']:14} plan={r['plan']!r} action={r['action']}")
    n = len(rows)
    summary = {
        "policy": str(args.policy), "suite": args.suite, "episodes": n,
        "plan_names_target": sum(r["plan_names_target"] for r in rows),
        "actions_out_of_place": sum(r["out_of_place"] for r in rows),
    }
    print(f"plan names the target: {summary['plan_names_target']}/{n}; first actions out of place "
          f"(roll or pitch bin != 128): {summary['actions_out_of_place']}/{n}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**summary, "rows": rows}, indent=1) + "\n")
    return summary


if __name__ == "__main__":
    main()
