"""benchmarks/vla_compare.py pools evaluation files per model and compares with the baseline."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

BENCH = runpy.run_path(str(Path(__file__).parents[1] / "benchmarks" / "vla_compare.py"))


def _eval(folder: Path, suite: str, successes: int, episodes: int) -> None:
    folder.mkdir(parents=True)
    (folder / "vla_eval.json").write_text(json.dumps({"suites": {suite: {"successes": successes, "episodes": episodes}}}))


def test_pools_layout_seeds_and_compares_the_unseen_average(tmp_path, capsys):
    base, new = tmp_path / "base", tmp_path / "new"
    _eval(base / "eval-unseen-objects", "unseen-objects", 20, 50)
    _eval(base / "eval-unseen-instructions", "unseen-instructions", 10, 50)
    _eval(base / "eval2-unseen-instructions", "unseen-instructions", 5, 50)
    _eval(base / "eval-old" / "nested", "seen", 50, 50)  # not an eval-SUITE folder: ignored
    _eval(new / "eval-unseen-objects", "unseen-objects", 30, 50)
    _eval(new / "eval2-unseen-instructions", "unseen-instructions", 25, 50)
    result = BENCH["main"]([str(base), str(new), "--suites", "seen", "unseen-objects", "unseen-instructions"])
    assert result[str(base)]["suites"]["unseen-instructions"] == (15, 100)
    assert "seen" not in result[str(base)]["suites"]
    assert result[str(base)]["unseen"] == (35, 150) and result[str(new)]["unseen"] == (55, 100)
    out = capsys.readouterr().out
    assert "15/100 = 15%" in out and "55/100 = 55%" in out
    assert "+32 [" in out  # 55% - 23.3%


def test_a_model_without_evaluations_is_a_clear_error(tmp_path):
    _eval(tmp_path / "a" / "eval-seen", "seen", 1, 2)
    (tmp_path / "b").mkdir()
    with pytest.raises(SystemExit, match="no evaluation files"):
        BENCH["main"]([str(tmp_path / "a"), str(tmp_path / "b")])


def test_by_reference_splits_unseen_instructions_by_how_the_object_is_named(tmp_path, capsys):
    folder = tmp_path / "m" / "eval-unseen-instructions"
    folder.mkdir(parents=True)
    rows = [
        {"instruction": "grab the leftmost block and raise it", "success": True},
        {"instruction": "take hold of the cube closest to you and hold it up", "success": False},
        {"instruction": "could you raise the crimson box?", "success": True},
    ]
    suites = {"unseen-instructions": {"successes": 2, "episodes": 3, "per_episode": rows}}
    (folder / "vla_eval.json").write_text(json.dumps({"suites": suites}))
    result = BENCH["main"]([str(tmp_path / "m"), "--by-reference"])
    assert result[str(tmp_path / "m")]["by_reference"] == {"spatial": (1, 2), "synonyms": (1, 1)}
    assert "1/2 = 50%" in capsys.readouterr().out


def test_a_plus_joined_model_is_one_row_pooled_over_its_folders(tmp_path, capsys):
    _eval(tmp_path / "s0" / "eval-unseen-objects", "unseen-objects", 10, 50)
    _eval(tmp_path / "s1" / "eval-unseen-objects", "unseen-objects", 30, 50)
    _eval(tmp_path / "s1" / "eval2-unseen-instructions", "unseen-instructions", 5, 50)
    pooled = f"{tmp_path / 's0'}+{tmp_path / 's1'}"
    result = BENCH["main"]([str(tmp_path / "s0"), pooled])
    assert result[pooled]["suites"] == {"unseen-objects": (40, 100), "unseen-instructions": (5, 50)}
    assert result[pooled]["unseen"] == (45, 150)
    assert "`s0+s1`" in capsys.readouterr().out


def test_outcomes_count_how_the_episodes_ended_over_the_shown_suites(tmp_path, capsys):
    def write(folder: Path, suite: str, counts: dict) -> None:
        folder.mkdir(parents=True)
        m = {"successes": counts.get("success", 0), "episodes": sum(counts.values()), "outcomes": counts}
        (folder / "vla_eval.json").write_text(json.dumps({"suites": {suite: m}}))

    write(tmp_path / "a" / "eval-seen", "seen", {"success": 3, "closed on another object": 1})
    write(tmp_path / "a" / "eval2-seen", "seen", {"success": 2, "never closed the gripper": 2})
    write(tmp_path / "a" / "eval-unseen-objects", "unseen-objects", {"closed on no object": 5})
    write(tmp_path / "b" / "eval-seen", "seen", {"success": 1, "closed on no object": 3})
    result = BENCH["main"]([str(tmp_path / "a"), str(tmp_path / "b"), "--suites", "seen", "--outcomes"])
    assert result[str(tmp_path / "a")]["outcomes"] == {
        "success": 5, "closed on another object": 1, "closed on no object": 0,
        "closed on the named object": 0, "never closed the gripper": 2,
    }  # unseen-objects is not shown, so its 5 episodes are not counted
    assert result[str(tmp_path / "b")]["outcomes"]["closed on no object"] == 3
    out = capsys.readouterr().out
    assert "| `a` | 5/8 = 62% | 1/8 = 12% | 0/8 = 0% | 2/8 = 25% |" in out
    assert "closed on the named object" not in out  # a column no model has is left out


def test_rows_with_the_same_folder_name_are_told_apart_by_their_parents(tmp_path, capsys):
    for seed in ("seed0", "seed1"):
        _eval(tmp_path / seed / "lapa" / "eval-seen", "seen", 1, 2)
    BENCH["main"]([str(tmp_path / "seed0" / "lapa"), str(tmp_path / "seed1" / "lapa"), "--suites", "seen"])
    out = capsys.readouterr().out
    assert "| `seed0/lapa` |" in out and "| `seed1/lapa` |" in out and "vs seed0/lapa" in out


def test_a_pooled_row_of_same_named_folders_is_named_once_with_its_count(tmp_path, capsys):
    for seed in ("seed0", "seed1"):
        for arm in ("lapa", "base"):
            _eval(tmp_path / seed / arm / "eval-seen", "seen", 1, 2)
    rows = [f"{tmp_path / 'seed0' / arm}+{tmp_path / 'seed1' / arm}" for arm in ("base", "lapa")]
    BENCH["main"]([*rows, "--suites", "seen"])
    out = capsys.readouterr().out
    assert "| `base x2 pooled` |" in out and "| `lapa x2 pooled` |" in out
