"""End to end through the CLI: data -> train world (tokenizer, LAM, dynamics) -> eval -> resume.

Small synthetic data and a few steps each, so it runs in about a minute; the real-data run is
``benchmarks/genie_tiny.py``.
"""

from __future__ import annotations

import json

import pytest

from playworld.cli import main
from playworld.data.synthetic import make_sprites_dataset

TINY = ["--preset", "tiny", "--batch-size", "4"]


@pytest.fixture(scope="module")
def sprites(tmp_path_factory):
    return make_sprites_dataset(tmp_path_factory.mktemp("data") / "sprites", episodes=12, length=24, size=32)


def test_train_world_eval_and_play(sprites, tmp_path):
    out = tmp_path / "world"
    steps = ["--tokenizer-steps", "6", "--lam-steps", "6", "--dynamics-steps", "6"]
    assert main(["train", "world", "--data", str(sprites), "--out", str(out), *TINY, *steps]) == 0
    meta = json.loads((out / "world.json").read_text())
    assert meta["num_actions"] == 8 and len(meta["action_labels"]) == 8
    assert sorted(p.name for p in (out / "prompts").iterdir())[:1] == ["prompt-00.png"]
    timings = json.loads((out / "train_world.json").read_text())  # wall-clock per part, for benchmarks
    assert set(timings) == {"tokenizer_s", "lam_s", "dynamics_s", "assemble_s"} and min(timings.values()) > 0
    for part in ("tokenizer", "lam", "dynamics"):
        assert (out / part / "model.safetensors").exists()
        assert list((out / part / "samples").glob("*.png")), f"{part} wrote no sample pictures"
    # Re-running without --resume must refuse to clobber the world; with --resume it is a no-op.
    assert main(["train", "world", "--data", str(sprites), "--out", str(out), *TINY, *steps]) == 1
    assert main(["train", "world", "--data", str(sprites), "--out", str(out), *TINY, *steps, "--resume"]) == 0

    res_file = tmp_path / "eval.json"
    args = ["eval", "world", "--world", str(out), "--data", str(sprites), "--clips", "4", "--batch-size", "2",
            "--no-frechet", "--split", "test", "--out", str(res_file)]
    assert main(args) == 0
    res = json.loads(res_file.read_text())
    for key in ("tokenizer_psnr", "tokenizer_ssim", "next_frame_psnr", "dtpsnr_t4", "latent_usage", "nmi", "map_accuracy"):
        assert key in res, key
    assert 0 < res["tokenizer_psnr"] < 100 and 0 <= res["nmi"] <= 1


def test_eval_rejects_data_of_another_frame_size(sprites, tmp_path):
    other = make_sprites_dataset(tmp_path / "big", episodes=4, length=12, size=16)
    out = tmp_path / "world"
    steps = ["--tokenizer-steps", "2", "--lam-steps", "2", "--dynamics-steps", "2"]
    assert main(["train", "world", "--data", str(sprites), "--out", str(out), *TINY, *steps]) == 0
    assert main(["eval", "world", "--world", str(out), "--data", str(other), "--no-frechet"]) == 1


def test_train_dynamics_rejects_mismatched_tokenizer(sprites, tmp_path, capsys):
    other = make_sprites_dataset(tmp_path / "small", episodes=6, length=12, size=16)
    tok = tmp_path / "tok"
    assert main(["train", "tokenizer", "--data", str(other), "--out", str(tok), "--steps", "1", *TINY[:2], "--batch-size", "2"]) == 0
    lam = tmp_path / "lam"
    assert main(["train", "lam", "--data", str(sprites), "--out", str(lam), "--steps", "1", "--batch-size", "2"]) == 0
    code = main(["train", "dynamics", "--data", str(sprites), "--tokenizer", str(tok), "--lam", str(lam),
                 "--out", str(tmp_path / "dyn"), "--steps", "1"])
    assert code == 1
    assert "frames" in capsys.readouterr().err
