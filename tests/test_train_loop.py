"""The shared training loop: learning, exact resume, corrupt-checkpoint fallback, NaN handling."""

from __future__ import annotations

import dataclasses
import json
from typing import ClassVar

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Dataset

from playworld.errors import PlayworldError
from playworld.nn.pretrained import ModelConfig, PretrainedModel
from playworld.train.loop import ResumableSampler, TrainConfig, Trainer, list_checkpoints


@dataclasses.dataclass
class ToyConfig(ModelConfig):
    model_type: ClassVar[str] = "toy"
    dim: int = 16
    """Width."""


class Toy(PretrainedModel):
    config_class = ToyConfig

    def __init__(self, config: ToyConfig):
        super().__init__(config)
        self.net = nn.Sequential(nn.Linear(config.dim, 32), nn.GELU(), nn.Linear(32, config.dim))
        self.poison = False

    def training_step(self, x):
        noise = torch.randn_like(x) * 0.01  # uses the global RNG: resume must restore it
        loss = (self.net(x + noise) - x).pow(2).mean()
        if self.poison:
            loss = loss * float("nan")
        return loss, {"mse": float(loss.detach())}


class Vectors(Dataset):
    def __init__(self, n=64, dim=16):
        self.x = torch.randn(n, dim, generator=torch.Generator().manual_seed(1))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i]}


def make(tmp_path, steps=30, **kw):
    torch.manual_seed(0)
    cfg = TrainConfig(steps=steps, batch_size=4, lr=1e-2, warmup_steps=2, ckpt_every=10, eval_every=0,
                      num_workers=0, progress=False, **kw)
    return Trainer(Toy(ToyConfig()), cfg, tmp_path, Vectors(), batch_fn=lambda b: (b["x"],), val_data=Vectors(8))


def test_loss_falls_and_final_model_loads(tmp_path):
    t = make(tmp_path / "run", steps=200)
    first = t.model.training_step(Vectors().x)[0].item()
    t.fit()
    loaded = Toy.from_pretrained(tmp_path / "run")
    last = loaded.training_step(Vectors().x)[0].item()
    assert last < first / 5
    assert json.loads((tmp_path / "run" / "train_summary.json").read_text())["step"] == 200


def test_resume_is_exact(tmp_path):
    make(tmp_path / "full").fit()

    class Crash(Exception):
        pass

    t = make(tmp_path / "cut")
    fn = t.batch_fn
    calls = {"n": 0}

    def crashing(b):
        calls["n"] += 1
        if calls["n"] == 16:  # after the step-10 checkpoint, before step 20
            raise Crash
        return fn(b)

    t.batch_fn = crashing
    with pytest.raises(Crash):
        t.fit()
    assert [p.name for p in list_checkpoints(tmp_path / "cut")] == ["step-00000010"]
    with pytest.raises(PlayworldError, match="--resume"):
        make(tmp_path / "cut").fit()  # refuses to overwrite a run silently
    make(tmp_path / "cut").fit(resume=True)
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_corrupt_checkpoint_falls_back_to_previous(tmp_path):
    make(tmp_path / "run", steps=20).fit()
    ckpts = list_checkpoints(tmp_path / "run")
    assert len(ckpts) == 2
    with open(ckpts[-1] / "optimizer.safetensors", "r+b") as f:
        f.seek(100)
        f.write(b"garbage!")
    t = make(tmp_path / "run", steps=20)
    with pytest.warns(UserWarning, match="corrupt"):
        assert t.load_latest_checkpoint()
    assert t.step == 10


def test_repeated_nan_stops_with_clear_error(tmp_path):
    t = make(tmp_path / "run", steps=30, max_nan_skips=3)
    t.model.poison = True
    with pytest.raises(PlayworldError, match="diverged"), pytest.warns(UserWarning, match="non-finite"):
        t.fit()


def test_sampler_resumes_mid_epoch_and_shards_ranks():
    full = ResumableSampler(10, seed=3)
    it = iter(full)
    stream = [next(it) for _ in range(25)]
    it2 = iter(ResumableSampler(10, seed=3, start=13))
    assert [next(it2) for _ in range(12)] == stream[13:]
    assert sorted(stream[:10]) == list(range(10))
    r0 = ResumableSampler(10, seed=3, rank=0, world=2)
    r1 = ResumableSampler(10, seed=3, rank=1, world=2)
    a, b = iter(r0), iter(r1)
    first = [next(a) for _ in range(5)] + [next(b) for _ in range(5)]
    assert sorted(first) == list(range(10))


def test_invalid_train_config_is_rejected():
    with pytest.raises(PlayworldError, match="--steps"):
        TrainConfig(steps=0)
