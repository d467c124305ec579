"""Fault tolerance: kill -9 a real training process (mid-run and mid-checkpoint-write), resume it,
and get exactly the loss curve and weights of an uninterrupted run; corrupt, truncated and
half-written checkpoints are detected and skipped.

The subprocess tests drive the real CLI (``python -m playworld.cli train tokenizer``) on a tiny
synthetic sprites dataset, with one thread so the CPU arithmetic is reproducible.
``PLAYWORLD_FAULT=checkpoint-write:N`` makes the loop SIGKILL itself inside the checkpoint
write of step N (after the weights and optimiser state are written, before the folder is
complete), which is a kill -9 at the worst moment, deterministically.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from playworld.train.loop import METRICS_FILE, TrainConfig, Trainer, list_checkpoints

REPO = Path(__file__).resolve().parents[1]
STEPS = 10


def train_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "playworld.cli", "train", "tokenizer", "--data", str(data), "--out", str(out),
        "--steps", str(STEPS), "--batch-size", "4", "--warmup-steps", "2", "--ckpt-every", "4",
        "--log-every", "1", "--eval-every", "0", "--sample-every", "0", "--num-workers", "0",
        "--no-progress", *extra,
    ]


def env(**kw: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("PLAYWORLD_FAULT", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**e, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src"), **kw}


def run(cmd: list[str], **kw: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env(**kw), capture_output=True, text=True, timeout=300)


def curve(out: Path) -> list[dict]:
    """Every logged training record without its wall-clock fields, in file order."""
    recs = [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("time", "clips_per_s")} for r in recs]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module")
def sprites(tmp_path_factory) -> Path:
    from playworld.data.synthetic import make_sprites_dataset

    return make_sprites_dataset(tmp_path_factory.mktemp("data") / "sprites", episodes=8, length=12, size=32)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sprites) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    r = run(train_cmd(sprites, out))
    assert r.returncode == 0, r.stderr[-4000:]
    assert [rec["step"] for rec in curve(out)] == list(range(1, STEPS + 1))
    return out


def test_kill_9_mid_run_then_resume_gives_the_same_curve(reference, sprites, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(sprites, out), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:  # kill once step 6 is logged (after the step-4 checkpoint)
        if (out / METRICS_FILE).exists() and len((out / METRICS_FILE).read_text().splitlines()) >= 6:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    assert proc.wait(60) == -signal.SIGKILL, proc.stderr.read()[-3000:]
    assert not (out / "train_summary.json").exists()
    killed_at = len(curve(out))
    assert 6 <= killed_at < STEPS and list_checkpoints(out)

    r = run(train_cmd(sprites, out, "--resume"))
    assert r.returncode == 0, r.stderr[-4000:]
    assert "resumed tokenizer" in r.stderr
    assert curve(out) == curve(reference)  # every logged number, bit for bit
    assert_same_weights(out, reference)


def test_kill_9_mid_checkpoint_write_leaves_only_an_ignored_temp_folder(reference, sprites, tmp_path):
    out = tmp_path / "run"
    r = run(train_cmd(sprites, out), PLAYWORLD_FAULT="checkpoint-write:8")
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    ckdir = out / "checkpoints"
    temps = [p for p in ckdir.iterdir() if p.name.startswith(".step-00000008.tmp-")]
    assert len(temps) == 1 and (temps[0] / "optimizer.safetensors").exists()  # half-written
    assert not (temps[0] / "trainer_state.json").exists()
    assert [p.name for p in list_checkpoints(out)] == ["step-00000004"]  # readers ignore it

    r = run(train_cmd(sprites, out, "--resume"))
    assert r.returncode == 0, r.stderr[-4000:]
    assert "left by an interrupted run" in r.stderr and not temps[0].exists()  # cleaned up
    assert not [p for p in ckdir.iterdir() if p.name.startswith(".")]
    assert curve(out) == curve(reference)
    assert_same_weights(out, reference)


# ---------------------------------------------------------------------------------------------
# Damaged checkpoints, in process (fast)
# ---------------------------------------------------------------------------------------------


class Vectors(torch.utils.data.Dataset):
    def __init__(self, n: int = 32):
        self.x = torch.randn(n, 16, generator=torch.Generator().manual_seed(1))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i]}


def toy_trainer(out: Path, steps: int = 20, **kw) -> Trainer:
    from test_train_loop import Toy, ToyConfig  # a tiny model whose training_step draws random noise

    torch.manual_seed(0)
    cfg = TrainConfig(steps=steps, batch_size=4, lr=1e-2, warmup_steps=2, ckpt_every=5, eval_every=0, log_every=1,
                      num_workers=0, progress=False, **{"keep_last": 3, **kw})
    return Trainer(Toy(ToyConfig()), cfg, out, Vectors(), batch_fn=lambda b: (b["x"],))


@pytest.fixture
def finished(tmp_path) -> Path:
    out = tmp_path / "run"
    toy_trainer(out).fit()
    assert [p.name for p in list_checkpoints(out)] == ["step-00000010", "step-00000015", "step-00000020"]  # keep_last=3
    return out


def damage_truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "damage",
    [
        lambda c: damage_truncate(c / "model" / "model.safetensors"),
        lambda c: damage_truncate(c / "optimizer.safetensors"),
        lambda c: damage_truncate(c / "trainer_state.json"),
        lambda c: (c / "model" / "config.json").unlink(),
        # A plausible edit that breaks nothing else: the state file checks itself.
        lambda c: (c / "trainer_state.json").write_text(
            (c / "trainer_state.json").read_text().replace('"step": 20', '"step": 21')
        ),
    ],
    ids=["truncated-weights", "truncated-optimizer", "truncated-state", "missing-file", "edited-state"],
)
def test_damaged_newest_checkpoint_falls_back_to_the_previous(finished, damage):
    newest = list_checkpoints(finished)[-1]
    damage(newest)
    t = toy_trainer(finished)
    with pytest.warns(UserWarning, match="corrupt"):
        assert t.load_latest_checkpoint()
    assert t.step == 15
    assert not newest.exists()  # removed, so it is not tried again on every resume


def test_every_checkpoint_corrupt_starts_over_with_warnings(finished):
    for c in list_checkpoints(finished):
        damage_truncate(c / "optimizer.safetensors")
    t = toy_trainer(finished, steps=3)
    with pytest.warns(UserWarning, match="corrupt"):
        t.fit(resume=True)
    assert t.step == 3 and [json.loads(x)["step"] for x in (finished / METRICS_FILE).read_text().splitlines()] == [1, 2, 3]


def test_half_replaced_checkpoint_is_restored_and_partial_metrics_line_dropped(finished, tmp_path):
    ref = tmp_path / "ref"  # the same runs, undamaged: 20 steps, then extended to 25
    toy_trainer(ref).fit()
    toy_trainer(ref, steps=25).fit(resume=True)
    # Kill between the two renames of an overwrite: the final folder is gone, `.old-` holds it.
    newest = list_checkpoints(finished)[-1]
    os.replace(newest, newest.with_name(f".{newest.name}.old-4242"))
    (finished / ".final-model").mkdir()
    (finished / "checkpoints" / ".step-00000025.tmp-xyz").mkdir()
    (finished / ".train_summary.json.k3j2h1").write_text("{")  # an atomic_write_json cut short
    lines = (finished / METRICS_FILE).read_text().splitlines()
    (finished / METRICS_FILE).write_text("\n".join(lines) + '\n{"step": 21, "loss": 0.12')  # cut by a kill
    t = toy_trainer(finished, steps=25)
    t.fit(resume=True)
    assert not [p for p in (finished / "checkpoints").iterdir() if p.name.startswith(".")]
    assert not (finished / ".final-model").exists() and not (finished / ".train_summary.json.k3j2h1").exists()
    assert [json.loads(x)["step"] for x in (finished / METRICS_FILE).read_text().splitlines()] == list(range(1, 26))
    assert curve(finished) == curve(ref)  # resumed from the restored step 20, exactly
    assert_same_weights(finished, ref)


def test_resume_with_other_model_settings_is_a_clear_error(finished):
    from test_train_loop import Toy, ToyConfig

    from playworld.errors import PlayworldError

    cfg = TrainConfig(steps=25, batch_size=4, num_workers=0, progress=False, eval_every=0)
    t = Trainer(Toy(ToyConfig(dim=8)), cfg, finished, Vectors(), batch_fn=lambda b: (b["x"],))
    with pytest.raises(PlayworldError, match="other settings.*dim"):
        t.fit(resume=True)


@pytest.mark.slow
def test_kill_9_ddp_run_then_resume_gives_the_same_curve(tmp_path):
    """2 processes (gloo): one SIGKILLs itself mid-run, torchrun tears the job down; a resumed
    2-process run reproduces the uninterrupted one exactly (per-rank RNG states are saved)."""
    from test_distributed import HERE as DIST_WORKER  # noqa: F401 - the same launcher settings

    def torchrun(out: Path, *extra: str, **kw: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "playworld.cli", *train_cmd(data, out, *extra)[3:]]
        return run(cmd, **kw)

    from playworld.data.synthetic import make_sprites_dataset

    data = make_sprites_dataset(tmp_path / "sprites", episodes=8, length=12, size=32)
    r = torchrun(tmp_path / "ref")
    assert r.returncode == 0, r.stderr[-4000:]
    r = torchrun(tmp_path / "cut", PLAYWORLD_FAULT="step:7")
    assert r.returncode != 0
    r = torchrun(tmp_path / "cut", "--resume")
    assert r.returncode == 0, r.stderr[-4000:]
    assert curve(tmp_path / "cut") == curve(tmp_path / "ref")
    assert_same_weights(tmp_path / "cut", tmp_path / "ref")
    shutil.rmtree(tmp_path / "sprites")
