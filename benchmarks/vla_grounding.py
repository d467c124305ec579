"""Does a VLA follow the instruction's object? Same scene, each object named in turn.

    python benchmarks/vla_grounding.py --policy runs/vla-eff-pick-wrist --scenes 30

For each of ``--scenes`` pick layouts of the suite, the policy sees the first frame once per
graspable object, with the instruction "pick up the <colour> <shape>" naming that object
(objects whose name is not unique in the scene are skipped). Prints

- how often the first greedy move heads for the named object (the object whose direction from
  the gripper is nearest, in angle, to the move's (dx, dy)), against the chance of a move that
  ignores the instruction (1 / objects, averaged) and the scripted expert on the same scenes;
- in how many scenes every instruction gives the same heading (a policy blind to the words);
- for a model that writes a located plan (``--plan-locate``): how often the plan's first cell
  is nearest to the named object, and its median distance from it.

``--synonyms`` names each object with a colour and a shape synonym instead ("pick up the
scarlet box"): words no robot demonstration uses, which a ``--vqa-lexicon`` model met only in
VQA (RT-2's transfer from web knowledge, in miniature).

Success in closed loop counts episodes; this counts whether the *words* change what the policy
does, which success alone cannot tell apart from picking any graspable object (docs/vla.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from playworld.envs.tabletop import Tabletop, get_suite
from playworld.envs.tabletop.expert import ScriptedExpert
from playworld.envs.tabletop.tasks import COLOR_SYNONYMS, SHAPE_SYNONYMS, Goal, _eligible
from playworld.policy.vla_policy import VLAPolicy
from playworld.policy.vqa import located_points


def heading(move: np.ndarray, origin: np.ndarray, points: list[np.ndarray]) -> int:
    """Index of the point whose direction from ``origin`` is nearest in angle to ``move`` (2-D)."""
    cos = [np.dot(p - origin, move) / (np.linalg.norm(p - origin) * np.linalg.norm(move) + 1e-12) for p in points]
    return int(np.argmax(cos))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", type=Path, required=True, help="folder written by `playworld train vla`")
    ap.add_argument("--suite", default="seen", help="tabletop suite whose pick layouts to use")
    ap.add_argument("--scenes", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1, help="seed of the layouts (training data is recorded with 0)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON here")
    ap.add_argument("--synonyms", action="store_true", help="name objects with colour/shape synonyms ('scarlet box')")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    policy = VLAPolicy.from_pretrained(args.policy)
    camera, wrist = policy.model.config.render_sizes()
    env = Tabletop(suite=args.suite, max_steps=10, image_size=camera, tasks=("pick",), wrist_size=wrist)
    words = np.random.default_rng(args.seed)  # which synonym names each object
    trials = hits = expert_hits = blind_scenes = scenes = 0
    chance, plan_hits, plan_errors = [], 0, []
    try:
        for spec in get_suite(args.suite, ["pick"]).episodes(args.scenes, seed=args.seed):
            names = [o.name for o in spec.objects]
            named = [i for i, o in enumerate(spec.objects)
                     if _eligible("pick", "target", o.shape) and names.count(o.name) == 1]
            if len(named) < 2:
                continue
            scenes += 1
            heads = []
            for i in named:
                o = spec.objects[i]
                name = names[i]
                if args.synonyms and o.color in COLOR_SYNONYMS and o.shape in SHAPE_SYNONYMS:
                    syn = COLOR_SYNONYMS[o.color], SHAPE_SYNONYMS[o.shape]
                    name = f"{syn[0][words.integers(len(syn[0]))]} {syn[1][words.integers(len(syn[1]))]}"
                variant = dataclasses.replace(spec, instruction=f"pick up the {name}", goal=Goal("lift", i))
                obs, _ = env.reset(options={"episode": variant})
                ee = env.ee_pose()[0][:2].copy()
                points = [env.object_pose(j)[0][:2].copy() for j in range(len(spec.objects))]
                policy.reset(seed=0)
                action = policy.select_action(obs, variant.instruction)
                heads.append(heading(action[1:3], ee, points))
                hits += heads[-1] == i
                expert = ScriptedExpert(env)
                expert.reset()
                expert_hits += heading(expert.act()[1:3], ee, points) == i
                trials += 1
                chance.append(1 / len(points))
                if cells := located_points(policy.last_plan or "", policy.model.image_grid):
                    d = [float(np.linalg.norm(np.asarray(cells[0]) - p)) for p in points]
                    plan_hits += int(np.argmin(d)) == i
                    plan_errors.append(d[i])
            blind_scenes += len(set(heads)) == 1
    finally:
        env.close()
    if not trials:
        raise SystemExit("no scene had two graspable objects with distinct names; try more --scenes.")
    result = {
        "policy": str(args.policy), "suite": args.suite, "synonyms": args.synonyms, "scenes": scenes, "trials": trials,
        "first_move_to_named": hits / trials, "chance": float(np.mean(chance)),
        "expert_first_move_to_named": expert_hits / trials,
        "scenes_with_one_heading_for_every_instruction": blind_scenes,
        "plan_nearest_named": plan_hits / len(plan_errors) if plan_errors else None,
        "plan_median_error_cm": float(np.median(plan_errors)) * 100 if plan_errors else None,
    }
    named_as = "colour/shape synonyms" if args.synonyms else "plain names"
    print(f"{args.policy} on {scenes} {args.suite} scenes, {trials} instructions ({named_as}):")
    print(f"  first move heads for the named object: {hits}/{trials} = {100 * hits / trials:.0f}% "
          f"(ignoring the words: {100 * result['chance']:.0f}%; scripted expert: "
          f"{100 * result['expert_first_move_to_named']:.0f}%)")
    print(f"  scenes where every instruction gives the same heading: {blind_scenes}/{scenes}")
    if plan_errors:
        print(f"  plan's cell nearest to the named object: {plan_hits}/{len(plan_errors)} = "
              f"{100 * plan_hits / len(plan_errors):.0f}%, median {result['plan_median_error_cm']:.1f} cm from it")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
