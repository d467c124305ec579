"""Multi-process training under torchrun (gloo, CPU): DDP and FSDP2 against one process.

The test file is also the worker: ``python -m torch.distributed.run --standalone
--nproc_per_node 2 tests/test_distributed.py SCENARIO OUT DATA`` runs one scenario on every
rank, writing results under OUT; the tests compare them with single-process runs of the same
configurations. Two launches (about 10 s each on a busy 2-core machine) cover:

- DDP: a deterministic model's per-step losses match one process with the same global batch
  (to float rounding); the tiny tokenizer's match within a tolerance (its VQ restarts draw
  from each rank's half of the batch); identical initial weights but different RNG streams on
  each rank; parameters still identical on every rank after training (the VQ restarts are
  re-synchronised from rank 0); a non-finite loss on one rank only skips the step on all
  ranks (no hang); a refused start is refused on every rank; only rank 0 writes.
- FSDP2: the tokenizer's blocks are really sharded (DTensor); its losses match one process;
  an interrupted FSDP run resumes bit-exactly (per-rank RNG states, gathered optimiser state);
  the checkpoint and the final model are ordinary folders a single process loads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from playworld.errors import PlayworldError
from playworld.nn.pretrained import ModelConfig, PretrainedModel
from playworld.train.loop import TrainConfig, Trainer, list_checkpoints

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]


# ---------------------------------------------------------------------------------------------
# What both sides train
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class RegressorConfig(ModelConfig):
    model_type: ClassVar[str] = "test_regressor"
    dim: int = 8
    """Width."""


class Regressor(PretrainedModel):
    """Deterministic (no randomness in training_step), with an nn.ModuleList of blocks for FSDP."""

    config_class = RegressorConfig

    def __init__(self, config: RegressorConfig):
        super().__init__(config)
        self.blocks = nn.ModuleList(nn.Linear(config.dim, config.dim) for _ in range(2))
        self.head = nn.Linear(config.dim, 1)
        self.poison_calls: set[int] = set()
        self.calls = 0
        self.extra_logs: dict[str, float] = {}

    def training_step(self, x, y):
        self.calls += 1
        h = x
        for block in self.blocks:
            h = F.gelu(block(h))
        loss = F.mse_loss(self.head(h).squeeze(-1), y)
        if self.calls in self.poison_calls:
            loss = loss * float("nan")
        return loss, {"mse": float(loss.detach()), **self.extra_logs}


class Points(Dataset):
    def __init__(self, n: int = 64, dim: int = 8):
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, dim, generator=g)
        self.y = self.x[:, :4].sum(1) * 0.5  # learnable in a few steps

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


def regressor_trainer(out: Path, steps: int = 20, **kw) -> Trainer:
    torch.manual_seed(0)
    cfg = TrainConfig(steps=steps, batch_size=8, lr=0.1, warmup_steps=2, ckpt_every=10, eval_every=0,
                      log_every=1, num_workers=0, progress=False, precision="fp32", **kw)
    return Trainer(Regressor(RegressorConfig()), cfg, out, Points(), batch_fn=lambda b: (b["x"], b["y"]))


def tokenizer_trainer(out: Path, data: Path, steps: int = 10, restarts: bool = True, **kw) -> Trainer:
    from playworld.data.clips import ClipDataset
    from playworld.world.tokenizer import VideoTokenizer, VideoTokenizerConfig

    torch.manual_seed(0)
    cfg = VideoTokenizerConfig(image_size=(32, 32), patch_size=8, enc_dim=64, enc_depth=2, dec_dim=64,
                               dec_depth=2, head_dim=32, num_codes=64, code_dim=8, dead_code_steps=5 * restarts)
    train = ClipDataset(data, 4, split="all")
    tcfg = TrainConfig(steps=steps, batch_size=4, lr=2e-3, warmup_steps=2, ckpt_every=6, eval_every=0,
                       log_every=1, num_workers=0, progress=False, precision="fp32", **kw)

    def batch_fn(b):
        return (b["frames"].permute(0, 1, 4, 2, 3).float() / 255.0,)

    return Trainer(VideoTokenizer(cfg), tcfg, out, train, batch_fn=batch_fn)


def read_losses(out: Path) -> dict[int, float | None]:
    """step -> training loss (None for a skipped step) from rank 0's metrics.jsonl."""
    losses = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec:
            assert rec["step"] not in losses, f"step {rec['step']} logged twice"
            losses[rec["step"]] = rec["loss"]
    return losses


def params_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        v = v.full_tensor() if hasattr(v, "full_tensor") else v
        h.update(k.encode() + v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# The worker (every rank runs this under torchrun)
# ---------------------------------------------------------------------------------------------


def _write(out: Path, name: str, obj) -> None:
    (out / f"{name}-rank{os.environ['RANK']}.json").write_text(json.dumps(obj))


def worker_ddp(out: Path, data: Path) -> None:
    t = regressor_trainer(out / "reg")
    _write(out, "probe", {"init": params_digest(t.model), "rand": torch.rand(3).tolist()})
    t.fit()
    _write(out, "reg-final", params_digest(t.model))
    try:  # a refused start must be refused on every rank (a one-rank error would hang the others)
        regressor_trainer(out / "reg").fit()
        _write(out, "refused", False)
    except PlayworldError:
        _write(out, "refused", True)
    t = regressor_trainer(out / "nan", steps=8, max_nan_skips=2)
    if os.environ["RANK"] == "1":
        t.model.poison_calls = {3}  # rank 1 alone sees a NaN at its third step
    t.fit()
    _write(out, "nan-final", params_digest(t.model))
    t = regressor_trainer(out / "keys", steps=4)  # ranks that log different keys (a VLA batch without questions)
    if os.environ["RANK"] == "1":
        t.model.extra_logs = {"only_rank1": 5.0}
    t.fit()
    t = tokenizer_trainer(out / "tok", data)  # with VQ restarts: ranks must stay identical
    t.fit()
    _write(out, "tok-final", params_digest(t.model))
    tokenizer_trainer(out / "tok-norestart", data, restarts=False).fit()


def worker_fsdp(out: Path, data: Path) -> None:
    from torch.distributed.tensor import DTensor

    t = tokenizer_trainer(out / "full", data, strategy="fsdp")
    p = t.model.encoder.blocks[0].mlp.fc.weight
    _write(out, "sharded", {"dtensor": isinstance(p, DTensor), "local_rows": p.to_local().shape[0]
                            if isinstance(p, DTensor) else None, "rows": p.shape[0]})
    t.fit()
    t = tokenizer_trainer(out / "cut", data, strategy="fsdp")
    fn, calls = t.batch_fn, {"n": 0}

    def crashing(b):
        calls["n"] += 1
        if calls["n"] == 8:  # after the step-6 checkpoint
            raise KeyboardInterrupt
        return fn(b)

    t.batch_fn = crashing
    try:
        t.fit()
    except KeyboardInterrupt:
        pass
    tokenizer_trainer(out / "cut", data, strategy="fsdp").fit(resume=True)
    tokenizer_trainer(out / "norestart", data, restarts=False, strategy="fsdp").fit()


if __name__ == "__main__":
    scenario, out_dir, data_dir = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    torch.set_num_threads(1)
    {"ddp": worker_ddp, "fsdp": worker_fsdp}[scenario](out_dir, data_dir)


# ---------------------------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------------------------


def torchrun(scenario: str, out: Path, data: Path, nproc: int = 2) -> None:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(HERE), scenario, str(out), str(data)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]


def read(out: Path, name: str, rank: int):
    return json.loads((out / f"{name}-rank{rank}.json").read_text())


@pytest.fixture(scope="module")
def sprites(tmp_path_factory) -> Path:
    from playworld.data.synthetic import make_sprites_dataset

    return make_sprites_dataset(tmp_path_factory.mktemp("data") / "sprites", episodes=8, length=12, size=32)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, sprites) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    torchrun("ddp", out, sprites)
    return out


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory, sprites) -> Path:
    out = tmp_path_factory.mktemp("fsdp")
    torchrun("fsdp", out, sprites)
    return out


def test_ddp_matches_one_process_with_the_same_global_batch(ddp_run, tmp_path):
    torch.set_num_threads(1)
    regressor_trainer(tmp_path / "single").fit()
    one, two = read_losses(tmp_path / "single"), read_losses(ddp_run / "reg")
    assert sorted(one) == sorted(two) == list(range(1, 21))
    diff = max(abs(one[s] - two[s]) for s in one)
    assert diff < 1e-5, f"max per-step loss difference {diff}"
    assert sum(two[s] for s in range(16, 21)) < sum(two[s] for s in range(1, 6)) / 3  # and it learns


def test_ddp_ranks_share_init_but_not_randomness_and_stay_identical(ddp_run):
    a, b = read(ddp_run, "probe", 0), read(ddp_run, "probe", 1)
    assert a["init"] == b["init"]
    assert a["rand"] != b["rand"]  # per-rank seeding: masks/noise differ between ranks
    for name in ("reg-final", "nan-final", "tok-final"):  # VQ restarts included
        assert read(ddp_run, name, 0) == read(ddp_run, name, 1), name


def test_ddp_only_rank0_writes(ddp_run):
    assert len(list((ddp_run / "reg" / "tb").iterdir())) == 1
    assert [p.name for p in list_checkpoints(ddp_run / "reg")] == ["step-00000010", "step-00000020"]
    state = json.loads((list_checkpoints(ddp_run / "reg")[-1] / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and set(state["rng_ranks"]) == {"1"}  # rank 1's RNG is saved too
    assert sorted(read_losses(ddp_run / "reg")) == list(range(1, 21))  # one line per step: rank 0 only


def test_ddp_nan_on_one_rank_skips_the_step_everywhere(ddp_run):
    losses = read_losses(ddp_run / "nan")
    assert losses[3] is None and all(v is not None for s, v in losses.items() if s != 3)
    assert read(ddp_run, "refused", 0) is True and read(ddp_run, "refused", 1) is True


@pytest.fixture(scope="module")
def tokenizer_single(tmp_path_factory, sprites) -> dict[int, float]:
    out = tmp_path_factory.mktemp("single-tokenizer")
    torch.set_num_threads(1)
    tokenizer_trainer(out, sprites, restarts=False).fit()
    return read_losses(out)


def assert_close(one: dict, two: dict, tol: float) -> None:
    assert sorted(one) == sorted(two)
    rel = max(abs(one[s] - two[s]) / abs(one[s]) for s in one)
    assert rel < tol, f"max relative per-step loss difference {rel:.2e}"


def test_ddp_ranks_logging_different_keys_neither_hang_nor_mix_them_up(ddp_run):
    recs = [json.loads(line) for line in (ddp_run / "keys" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if "loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert all(r["only_rank1"] == 5.0 for r in train)  # averaged over the ranks that logged it: rank 1 alone


def test_ddp_tokenizer_matches_one_process(ddp_run, tokenizer_single):
    # Without VQ restarts (which seed codes from each rank's half of the batch, so the
    # codebooks legitimately differ from one process's), the curves agree to float rounding.
    assert_close(tokenizer_single, read_losses(ddp_run / "tok-norestart"), 1e-4)
    with_restarts = read_losses(ddp_run / "tok")
    assert with_restarts[10] < with_restarts[1]


def test_fsdp_shards_and_matches_one_process(fsdp_run, ddp_run, tokenizer_single):
    info0, info1 = read(fsdp_run, "sharded", 0), read(fsdp_run, "sharded", 1)
    assert info0["dtensor"] and info1["dtensor"]
    assert info0["local_rows"] + info1["local_rows"] == info0["rows"]
    assert_close(tokenizer_single, read_losses(fsdp_run / "norestart"), 1e-4)
    assert_close(read_losses(ddp_run / "tok"), read_losses(fsdp_run / "full"), 1e-4)  # with restarts


def test_fsdp_resume_is_exact_and_checkpoints_load_in_one_process(fsdp_run, sprites, tmp_path):
    from safetensors.torch import load_file

    from playworld.world.tokenizer import VideoTokenizer

    full, cut = fsdp_run / "full", fsdp_run / "cut"
    assert read_losses(full) == read_losses(cut)
    a, b = load_file(str(full / "model.safetensors")), load_file(str(cut / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    VideoTokenizer.from_pretrained(full)  # the final model is an ordinary folder
    VideoTokenizer.from_pretrained(list_checkpoints(full)[-1] / "model")


def test_batch_size_must_divide_over_ranks(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(PlayworldError, match="divisible"):
        regressor_trainer(tmp_path)  # batch 8 over 3 processes


@pytest.mark.slow
@pytest.mark.timeout(2400)  # six commands x 2 processes: ~5 min alone, far longer on a busy machine
def test_every_train_command_runs_under_torchrun(sprites, tmp_path):
    """Every `playworld train ...` command (tokenizer, lam, dynamics, world, latent-policy, vla) under
    torchrun (2 processes, gloo); the dynamics with --strategy fsdp. A few steps each: it runs,
    writes one model, and loads."""
    from playworld.world.dynamics import DynamicsModel
    from playworld.world.world import World

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    common = ["--data", str(sprites), "--batch-size", "4", "--warmup-steps", "1", "--eval-every", "2",
              "--eval-batches", "1", "--sample-every", "3", "--num-workers", "0", "--no-progress"]

    def train(*args: str) -> None:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "playworld.cli", "train", *args]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-5000:]

    train("tokenizer", "--out", str(tmp_path / "tok"), "--steps", "3", *common)
    train("lam", "--out", str(tmp_path / "lam"), "--steps", "3", "--clip-len", "3", *common)
    train("dynamics", "--out", str(tmp_path / "dyn"), "--steps", "3", "--clip-len", "3", "--strategy", "fsdp",
          "--tokenizer", str(tmp_path / "tok"), "--lam", str(tmp_path / "lam"), *common)
    DynamicsModel.from_pretrained(tmp_path / "dyn")
    assert list((tmp_path / "dyn" / "samples").iterdir())  # FSDP: every rank sampled, rank 0 wrote
    train("world", "--data", str(sprites), "--out", str(tmp_path / "world"), "--tokenizer-steps", "2",
          "--lam-steps", "2", "--dynamics-steps", "2", "--batch-size", "4")
    World.from_pretrained(tmp_path / "world")
    # The policies share the loop: a latent-action policy on the same video and LAM, and a tiny VLA.
    train("latent-policy", "--data", str(sprites), "--lam", str(tmp_path / "lam"), "--labels", "20",
          "--lam-clip-len", "3", "--preset", "tiny", "--out", str(tmp_path / "lp"), "--steps", "3",
          "--batch-size", "4", "--no-progress")
    assert json.loads((tmp_path / "lp" / "latent_policy.json").read_text())["labels"] == 20
    from playworld.data.tabletop import record_tabletop
    from playworld.policy.vla_policy import VLAPolicy

    demos = record_tabletop(tmp_path / "demos", episodes=2, tasks=("pick",), workers=1, size=64, progress=False).path
    train("vla", "--data", str(demos), "--out", str(tmp_path / "vla"), "--image-size", "32", "--steps", "3",
          "--batch-size", "4", "--warmup-steps", "1", "--eval-every", "0", "--no-progress")
    VLAPolicy.from_pretrained(tmp_path / "vla")
