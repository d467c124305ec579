"""``playworld eval vla``: a VLA policy in closed loop on the tabletop suites, RT-2 style.

Per suite (``seen``, ``unseen-objects``, ``unseen-instructions``, ``symbols``, ``reasoning``):

- **success rate** over ``--episodes`` episodes with its 95% Wilson interval, and per task;
- **control rate**: actions per second of the policy alone (image encoding + prefix + 8 tokens),
  with the machine it was measured on;
- **VQA accuracy**: questions about the first frame of each episode, answered from the
  simulator's state (:mod:`playworld.policy.vqa`), exact match after normalisation;
- a **GIF** of the first episodes with the instruction and the decoded action text overlaid.

The episode list is ``suite.episodes(n, seed)`` with ``--seed 1`` by default; training data is
recorded with seed 0, so the evaluation episodes are new layouts.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from playworld.errors import PlayworldError
from playworld.utils import atomic_write_json, get_logger, machine_info

log = get_logger("eval.vla")

SuiteName = Literal["seen", "unseen-objects", "unseen-instructions", "symbols", "reasoning", "all"]


def overlay(image: np.ndarray, top: str, bottom: str, scale: int = 3) -> np.ndarray:
    """Upscale an (H, W, 3) frame and write ``top`` / ``bottom`` text on dark bands (the bottom
    text, e.g. action + plan, wrapped over 2 lines; every frame gets the same size, for GIFs)."""
    import textwrap

    from PIL import Image, ImageDraw, ImageFont

    h, w = image.shape[:2]
    img = Image.fromarray(image).resize((w * scale, h * scale), Image.NEAREST)
    band = 14 * max(1, scale // 2)
    chars = max(20, int(w * scale / (0.55 * (band - 4))))  # characters per line at this font size
    lines = textwrap.wrap(bottom, chars)[:2]
    canvas = Image.new("RGB", (w * scale, h * scale + band * 3), (20, 20, 24))
    canvas.paste(img, (0, band))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(10, band - 4))
    draw.text((4, 2), top[:chars], fill=(255, 255, 255), font=font)
    for i, line in enumerate(lines):
        draw.text((4, h * scale + band * (1 + i) + 2), line, fill=(255, 220, 120), font=font)
    return np.asarray(canvas)


def camera_view(obs: dict[str, Any]) -> np.ndarray:
    """The fixed camera's image, with the wrist camera's beside it (scaled to the same height)
    when the observation has one: what the policy saw, for the GIFs."""
    image = obs["image"]
    wrist = obs.get("wrist_image")
    if wrist is None:
        return image
    from PIL import Image

    h = image.shape[0]
    wrist = np.asarray(Image.fromarray(wrist).resize((h, h), Image.NEAREST))
    return np.concatenate([image, wrist], axis=1)  # (H, 2H, 3)


def _reach_error(env, spec) -> float:
    """Horizontal distance (m) from the grasp point to the object the instruction is about."""
    ee, _ = env.ee_pose()
    obj, _ = env.object_pose(spec.goal.target)
    return float(np.linalg.norm(ee[:2] - obj[:2]))


#: How an episode ends (``outcome`` of vla_eval.json's per-episode rows), in report order.
OUTCOMES = ("success", "closed on another object", "closed on no object", "closed on the named object",
            "never closed the gripper")

#: A gripper closed within this horizontal distance (m) of an object's centre is "on" that object.
GRASP_RADIUS = 0.03


def _grasp_outcome(env, spec) -> str:
    """Where the first gripper close of a failed episode happened: on the named object, on
    another one (a grounding error), or on none (an approach error)."""
    ee, _ = env.ee_pose()
    d = [float(np.linalg.norm(ee[:2] - env.object_pose(i)[0][:2])) for i in range(len(spec.objects))]
    j = int(np.argmin(d))
    if d[j] > GRASP_RADIUS:
        return "closed on no object"
    return "closed on the named object" if j == spec.goal.target else "closed on another object"


def evaluate_suite(
    policy,
    suite: str,
    episodes: int,
    seed: int = 1,
    max_steps: int = 120,
    gif_episodes: int = 0,
    vqa_per_episode: int = 4,
    camera_size: int = 128,
    tasks: tuple[str, ...] = (),
    wrist_size: int = 0,
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Run ``episodes`` closed-loop episodes of ``suite`` with the camera rendering
    ``camera_size`` px images (and the wrist camera at ``wrist_size`` px, 0 = none); returns
    (metrics, GIF frames)."""
    from playworld.envs.tabletop import Tabletop, get_suite
    from playworld.eval.metrics import confidence_interval_95
    from playworld.policy.train_vla import vqa_options
    from playworld.policy.vqa import (
        answers_match,
        located_points,
        plan_question,
        sample_questions,
        scene_from_env,
    )

    env = Tabletop(suite=suite, max_steps=max_steps, image_size=camera_size, tasks=tuple(tasks), wrist_size=wrist_size)
    specs = get_suite(suite, tasks or None).episodes(episodes, seed=seed)
    rng = np.random.default_rng([seed, 17])
    gif, closest = [], []
    plan_errors, plan_on_named = [], 0  # plans that say where the named object is (plan_locate)
    results: list[dict] = []  # one row per episode; the suite's counts are made from these
    vqa_total, vqa_right, vqa_kinds = 0, 0, {}
    policy.step_seconds.clear()
    fallbacks0, cut0 = policy.num_fallbacks, policy.num_cut_plans
    drafts0 = list(getattr(policy, "draft_tokens", (0, 0)))  # any object with select_action may be scored
    try:
        for k, spec in enumerate(specs):
            obs, info = env.reset(options={"episode": spec})
            qas = []
            if vqa_per_episode:  # with the lexicon's and pointing questions if the model was taught them
                qas = sample_questions(scene_from_env(env), rng, vqa_per_episode, **vqa_options(policy.model))
            if vqa_per_episode:
                qas.append(plan_question(spec))
            for qa in qas:
                ok = answers_match(policy.answer(obs, qa.question), qa.answer)
                vqa_total += 1
                vqa_right += ok
                r, n = vqa_kinds.get(qa.kind, (0, 0))
                vqa_kinds[qa.kind] = (r + ok, n + 1)
            policy.reset(seed=k)  # the same sampled actions on every run
            t = 0
            near, first_grasp = _reach_error(env, spec), None
            start_xy = [env.object_pose(i)[0][:2] for i in range(len(spec.objects))]
            while True:
                action = policy.select_action(obs, spec.instruction)
                if t == 0 and (points := located_points(policy.last_plan or "", policy.model.image_grid)):
                    d = [float(np.linalg.norm(np.asarray(points[0]) - xy)) for xy in start_xy]
                    plan_errors.append(d[spec.goal.target])
                    plan_on_named += int(np.argmin(d)) == spec.goal.target
                if first_grasp is None and action[-1] > 0.5:
                    first_grasp = _grasp_outcome(env, spec)
                if k < gif_episodes:
                    text = f"{policy.last_action_text}" + (f" | {policy.last_plan}" if policy.last_plan else "")
                    gif.append(overlay(camera_view(obs), spec.instruction, text))
                obs, _, terminated, truncated, info = env.step(action)
                t += 1
                near = min(near, _reach_error(env, spec))
                if terminated or truncated:
                    break
            if k < gif_episodes:
                verdict = "success" if info["success"] else "failure"
                gif += [overlay(camera_view(obs), spec.instruction, verdict)] * 5
            closest.append(near)
            outcome = "success" if info["success"] else (first_grasp or "never closed the gripper")
            results.append({"instruction": spec.instruction, "family": spec.family, "success": bool(info["success"]),
                            "outcome": outcome, "steps": t})
            log.info("%s %d/%d: %s -> %s in %d steps", suite, k + 1, episodes, spec.instruction,
                     "success" if info["success"] else "failure", t)
    finally:
        env.close()
    successes = sum(r["success"] for r in results)
    per_task: dict[str, tuple[int, int]] = {}
    for r in results:
        s, n = per_task.get(r["family"], (0, 0))
        per_task[r["family"]] = (s + r["success"], n + 1)
    lo, hi = confidence_interval_95(successes, episodes)
    metrics = {
        "episodes": episodes,
        "successes": successes,
        "success_rate": successes / episodes,
        "ci95": [lo, hi],
        "per_task": {t: {"successes": s, "episodes": n, "success_rate": s / n} for t, (s, n) in sorted(per_task.items())},
        "mean_steps": float(np.mean([r["steps"] for r in results])),
        "closest_approach_cm": {  # how near the hand came to the object it had to move (2-D, grasp point)
            "median": float(np.median(closest)) * 100,
            "per_episode": [round(c * 100, 1) for c in closest],
        },
        "outcomes": dict(sorted(Counter(r["outcome"] for r in results).items())),  # what each episode's first gripper close was on (failures)
        "per_episode": results,  # instruction, family, success, outcome, steps of every episode, in order
        # plan_locate models: where the first step's plan says the object to move is
        "plan_location": {
            "episodes": len(plan_errors),
            "nearest_is_named_object": plan_on_named,  # the located point is nearer to it than to any other
            "median_error_cm": float(np.median(plan_errors)) * 100,
        } if plan_errors else None,
        "control_hz": policy.control_hz,
        "policy_ms_per_step": 1000.0 * float(np.mean(policy.step_seconds)) if policy.step_seconds else None,
        "no_op_fallbacks": policy.num_fallbacks - fallbacks0,
        "plans_cut": policy.num_cut_plans - cut0,
        # greedy steps after an episode's first read the last action in as a draft (VLAPolicy.draft_actions)
        "draft_tokens_kept": getattr(policy, "draft_tokens", (0, 0))[0] - drafts0[0],
        "draft_tokens_proposed": getattr(policy, "draft_tokens", (0, 0))[1] - drafts0[1],
        "vqa_accuracy": vqa_right / vqa_total if vqa_total else None,
        "vqa_questions": vqa_total,
        "vqa_per_kind": {k: {"correct": r, "questions": n, "accuracy": r / n} for k, (r, n) in sorted(vqa_kinds.items())},
    }
    return metrics, gif


@dataclass
class EvalVLA:
    """Evaluate a VLA policy in closed loop: success rate (95% CI) per suite, control rate, VQA accuracy, GIFs."""

    policy: Path
    """Folder of a trained VLA (`playworld train vla --out`)."""
    suite: SuiteName = "seen"
    """Tabletop suite, or all of them."""
    episodes: int = 20
    """Episodes per suite."""
    seed: int = 1
    """Seed of the episode list (training data is recorded with seed 0)."""
    max_steps: int = 120
    """Control steps before an episode counts as a failure."""
    vqa_per_episode: int = 4
    """Scene questions per episode (plus one plan question); 0 skips VQA."""
    gif_episodes: int = 3
    """Episodes per suite drawn into the GIF (0: no GIF)."""
    dtype: Literal["bfloat16", "float32"] = "bfloat16"
    """Weights at inference."""
    unconstrained: bool = False
    """Switch off the action-token constraint (ablation)."""
    temperature: float = 0.0
    """Sampling temperature of the action tokens (0 = greedy, the default; > 0 samples: each of the ~40 steps then risks a spurious terminate, see docs/vla.md)."""
    hold_plan: bool = False
    """Plan models: keep the plan written at each episode's first step for the whole episode (read in, not re-written); default: a new plan every step (RT-2)."""
    draft_actions: bool = True
    """Greedy decoding reads the previous step's action in as a draft and keeps the tokens it would write anyway (same actions, fewer forward passes; --no-draft-actions: plain decoding)."""
    int8_decode: bool = False
    """SmolLM2 backbones, bf16: decode steps read int8 copies of the decoder's weights (about twice as fast; an approximation, see docs/vla.md)."""
    drop_unknown_words: bool = False
    """tiny backbone: leave words the model's vocabulary lacks out of the instruction instead of reading them as <unk>."""
    threads: int = 0
    """torch CPU threads (0: torch's default)."""
    tasks: tuple[str, ...] = ()
    """Only these task families (e.g. pick); suites with none of them are skipped (default: every family of each suite)."""
    camera_size: int = 0
    """Camera image side the env renders (0: the size the policy's training data was recorded at, from its config; 128 if unknown)."""
    out: Path | None = None
    """Where vla_eval.json and the GIFs go (default: POLICY/eval)."""
    training_data: Path | None = None
    """The policy's training recording, to check that no evaluation episode is one it was trained on (default: the policy's train_episodes.json, else the data in its command.json)."""
    allow_training_episodes: bool = False
    """Evaluate even when some episodes are layouts the policy was trained on (a recording made with the same --seed and suite); they are counted in the JSON."""

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise PlayworldError(f"--episodes must be >= 1, got {self.episodes}.")
        if self.max_steps < 1 or self.threads < 0 or self.vqa_per_episode < 0 or self.gif_episodes < 0:
            raise PlayworldError("--max-steps must be >= 1 and --threads, --vqa-per-episode, --gif-episodes >= 0.")
        if self.camera_size < 0:
            raise PlayworldError(f"--camera-size must be >= 0 (0: the training data's size), got {self.camera_size}.")

    def _suite_tasks(self, name: str) -> tuple[str, ...]:
        """The ``--tasks`` families that suite ``name`` has (empty: all of its families)."""
        from playworld.envs.tabletop.tasks import SUITE_FAMILIES

        return tuple(t for t in self.tasks if t in SUITE_FAMILIES[name]) if self.tasks else ()

    def _training_overlap(self, suites: list[str]) -> dict[str, int | None]:
        """Per suite, how many of the evaluation episodes the policy was trained on (None: unknown).
        A recording made with the same ``--seed`` as the evaluation holds the same ``seen`` layouts
        and instructions, so those scores would measure memory, not generalisation: refused unless
        ``--allow-training-episodes``."""
        from playworld.envs.tabletop.tasks import get_suite
        from playworld.policy.train_vla import episode_key, training_episode_keys

        keys = training_episode_keys(Path(self.policy), self.training_data)
        if keys is None:
            log.info("cannot check the episodes against the policy's training data (no train_episodes.json, "
                     "command.json or --training-data)")
            return {name: None for name in suites}
        out = {}
        for name in suites:
            specs = get_suite(name, self._suite_tasks(name) or None).episodes(self.episodes, seed=self.seed)
            out[name] = sum(episode_key(spec.to_dict()) in keys for spec in specs)
            if out[name] and not self.allow_training_episodes:
                raise PlayworldError(
                    f"{out[name]} of the {self.episodes} {name} episodes for --seed {self.seed} are layouts {self.policy} "
                    f"was trained on (its data was recorded with the same seed); pass another --seed, or "
                    "--allow-training-episodes to score them on purpose."
                )
        return out

    def run(self) -> dict[str, Any]:
        from playworld.envs.tabletop import SUITES
        from playworld.envs.tabletop.tasks import SUITE_FAMILIES
        from playworld.policy.vla_policy import VLAPolicy
        from playworld.viz import save_gif

        if self.threads:
            torch.set_num_threads(self.threads)
        suites = list(SUITES) if self.suite == "all" else [self.suite]
        if self.tasks:
            keep = [name for name in suites if set(self.tasks) & set(SUITE_FAMILIES[name])]
            if not keep:
                raise PlayworldError(f"no suite in {suites} has the tasks {list(self.tasks)}.")
            suites = keep
        seen_in_training = self._training_overlap(suites)  # before loading the model: a refusal costs nothing
        policy = VLAPolicy.from_pretrained(
            self.policy, dtype=self.dtype, constrained=not self.unconstrained, temperature=self.temperature,
            hold_plan=self.hold_plan, drop_unknown_words=self.drop_unknown_words, int8_decode=self.int8_decode,
            draft_actions=self.draft_actions,
        )
        trained_camera, wrist = policy.model.config.render_sizes()
        camera = self.camera_size or trained_camera
        out = Path(self.out) if self.out else Path(self.policy) / "eval"
        report: dict[str, Any] = {
            "policy": str(self.policy),
            "backbone": policy.model.config.backbone,
            "plan": policy.model.config.plan,
            "constrained": not self.unconstrained,
            "temperature": self.temperature,
            "hold_plan": self.hold_plan,
            "drop_unknown_words": self.drop_unknown_words,
            "int8_decode": self.int8_decode,
            "draft_actions": self.draft_actions,
            "dtype": self.dtype,
            "seed": self.seed,
            "max_steps": self.max_steps,
            "camera_size": camera,
            "wrist_camera_size": wrist,
            "tasks": list(self.tasks),
            "machine": machine_info(),
            "suites": {},
        }
        start = time.perf_counter()
        for name in suites:
            metrics, frames = evaluate_suite(
                policy, name, self.episodes, self.seed, self.max_steps, self.gif_episodes, self.vqa_per_episode,
                camera, self._suite_tasks(name), wrist,
            )
            if frames:
                metrics["gif"] = str(save_gif(np.stack(frames), out / f"episodes-{name}.gif", fps=5))
            metrics["training_episodes"] = seen_in_training.get(name)
            report["suites"][name] = metrics
            lo, hi = metrics["ci95"]
            vqa = metrics["vqa_accuracy"]
            print(
                f"{name:<20} success {metrics['successes']}/{metrics['episodes']} = {100 * metrics['success_rate']:.0f}% "
                f"[95% CI {100 * lo:.0f}-{100 * hi:.0f}%]  control {metrics['control_hz']:.1f} Hz  "
                f"VQA {'-' if vqa is None else f'{100 * vqa:.0f}%'}  "
                f"closest approach {metrics['closest_approach_cm']['median']:.1f} cm (median)"
            )
            print(
                "    failures: " + (", ".join(f"{n} {k}" for k, n in metrics["outcomes"].items() if k != "success") or "none")
            )
            if loc := metrics["plan_location"]:
                print(
                    f"    plan location: nearest to the named object in {loc['nearest_is_named_object']}/{loc['episodes']} "
                    f"episodes, {loc['median_error_cm']:.1f} cm from it (median)"
                )
        report["seconds"] = time.perf_counter() - start
        atomic_write_json(out / "vla_eval.json", report)
        print(f"wrote {out / 'vla_eval.json'}")
        return report
