"""``VLAPolicy``: a trained VLA driving the robot in closed loop, one action per observation.

::

    policy = VLAPolicy.from_pretrained("runs/vla")
    obs, info = env.reset(seed=0)
    policy.reset()
    while True:
        action = policy.select_action(obs, info["instruction"])   # float32 (8,)
        obs, reward, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break

Each step runs the image prefix + prompt through the model once (the prompt's token ids are
cached per instruction) and then decodes only the 8 action tokens, one token per forward pass
on the KV cache of that prefix, constrained to action tokens. Weights run in bf16 by default.
With ``fast=True`` (default) a LoRA model's adapters are merged into its base weights once, and
the one-token decode steps take the lean path of
:class:`~playworld.policy.backbones.HFLanguageModel` (ATen's matrix-vector kernel, no HF
per-call machinery); ``fast=False`` keeps the reference path (same actions, a test checks it).

Bad input is refused with the reason (empty or too long instruction, an image that is not
(H, W, 3)); an image of another size is resized. If no valid action can be decoded (NaN logits,
an unconstrained model writing words, a plan that never reaches "Action:"), the policy sends a
safe no-op - stay put, keep the gripper as it is - and logs it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from playworld.errors import PlayworldError
from playworld.policy.action_tokenizer import ActionDecodeError, ActionTokenizer
from playworld.policy.decoding import (
    decode_actions,
    decode_actions_from_draft,
    decode_actions_unconstrained,
    decode_plan_and_actions,
    decode_plan_and_actions_from_draft,
    generate_text,
)
from playworld.policy.vla import VLA, check_action_tokenizer, robot_prompt, vqa_prompt
from playworld.utils import get_logger

log = get_logger("policy.vla")

DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32}


class VLAPolicy:
    """Closed-loop RT-2 policy around a :class:`~playworld.policy.vla.VLA`.

    Args:
        model: a trained VLA (its config carries the action tokenizer).
        dtype: "bfloat16" (default) or "float32" for the weights at inference.
        device: "cpu" or "cuda".
        constrained: restrict action decoding to action tokens (RT-2); False is the ablation.
        temperature: 0 = greedy action tokens (default); > 0 samples them from the learned
            distribution (see :mod:`playworld.policy.decoding` for why greedy is the default).
        seed: seed of the sampling generator (re-seeded by ``reset(seed)``).
        fast: merge LoRA into the base weights (the policy owns the model from here on: it is
            cast to ``dtype`` and, merged, can no longer be trained or saved as LoRA) and use
            the lean one-token decode step. False = the reference path, for comparisons.
        hold_plan: plan models only: write the plan at an episode's first step and keep it, read
            in, for the rest of the episode (training plans describe the episode's start at every
            step); False (RT-2) writes a new plan at every step.
        int8_decode: Llama-family backbones (SmolLM2) on the CPU in bf16 with ``fast``: the
            one-token decode steps read int8 copies of the decoder's weights (one scale per output
            row), about twice as fast since those steps are bound by memory; the prefix pass stays
            bf16. An approximation: an action token can differ from the bf16 model's where two bins
            are nearly tied (``benchmarks/vla_control_rate.py`` reports how often).
        draft_actions: greedy decoding (``temperature`` 0, constrained, ``fast``) reads the
            previous step's action tokens in the prefix pass as a draft and keeps those greedy
            decoding would write (speculative decoding with a free draft: consecutive actions
            share most tokens), saving a forward pass per kept token. The same actions, up to
            the rounding of a many-row pass against one-row steps. A model that writes a new plan
            every step drafts with its last plan too. Not used at an episode's first step.
        drop_unknown_words: tiny backbone only: leave the words the model's vocabulary lacks out of
            prompts instead of reading them as ``<unk>`` (a word never seen in training carries
            nothing a from-scratch model can use; "grab the red cube and raise it" is read as "the
            red cube it").
    """

    def __init__(
        self,
        model: VLA,
        dtype: str = "bfloat16",
        device: str = "cpu",
        constrained: bool = True,
        temperature: float = 0.0,
        seed: int = 0,
        fast: bool = True,
        hold_plan: bool = False,
        drop_unknown_words: bool = False,
        int8_decode: bool = False,
        draft_actions: bool = True,
    ):
        if not temperature >= 0:
            raise PlayworldError(f"temperature must be >= 0, got {temperature}.")
        if dtype not in DTYPES:
            raise PlayworldError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}.")
        lm = model.lm
        if fast and hasattr(lm, "merge_lora") and lm.merge_lora():  # before the cast: merged in fp32
            log.info("LoRA merged into the base weights for inference")
        if hasattr(lm, "fast_decode"):
            lm.fast_decode = fast
        self.fast = fast
        self.hold_plan = hold_plan
        if drop_unknown_words and model.kind != "tiny":
            raise PlayworldError("drop_unknown_words is for the tiny backbone's word vocabulary; subword tokenizers have no unknown words.")
        self.drop_unknown_words = drop_unknown_words
        self.model = model.eval().to(device=device, dtype=DTYPES[dtype])
        if fast and hasattr(lm, "fuse_projections"):
            lm.fuse_projections()  # after the cast, which makes new weight tensors
        self.int8_decode = int8_decode
        self.draft_actions = draft_actions
        self.draft_tokens = [0, 0]  # draft tokens kept, proposed (over the policy's life)
        if int8_decode:
            if not (fast and DTYPES[dtype] == torch.bfloat16 and torch.device(device).type == "cpu"):
                raise PlayworldError("int8_decode runs on the CPU with dtype 'bfloat16' and fast=True.")
            n = lm.quantize_decode_int8() if hasattr(lm, "quantize_decode_int8") else 0
            if not n:
                raise PlayworldError(
                    f"int8_decode is for Llama-family Hugging Face backbones (SmolLM2) on a torch with the "
                    f"weight-only int8 kernel; this VLA's backbone is {model.config.backbone!r}."
                )
            log.info("int8 weight copies for the decode steps of %d decoder layers", n)
        self.device = torch.device(device)
        self.dtype = dtype
        self.constrained = constrained
        self.temperature = float(temperature)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.action_tokenizer: ActionTokenizer = model.config.get_action_tokenizer()
        self._prompt_ids: dict[str, torch.Tensor] = {}
        self._plan_cache: tuple = (None, None)  # (plan, its token ids)
        self._warned_resize = False
        self.step_seconds: list[float] = []
        self.num_fallbacks = 0
        self.num_cut_plans = 0  # plans that ran out of tokens before "Action:" (finished by the decoder)
        self.reset()

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        dtype: str = "bfloat16",
        device: str = "cpu",
        constrained: bool = True,
        action_tokenizer: ActionTokenizer | None = None,
        temperature: float = 0.0,
        seed: int = 0,
        fast: bool = True,
        hold_plan: bool = False,
        drop_unknown_words: bool = False,
        int8_decode: bool = False,
        draft_actions: bool = True,
    ) -> VLAPolicy:
        """Load a folder written by ``playworld train vla``. With ``action_tokenizer`` (e.g. the
        one of the data you will run on), a model trained with another one is rejected."""
        model = VLA.from_pretrained(path)
        if action_tokenizer is not None:
            check_action_tokenizer(model.config, action_tokenizer, "the given action tokenizer")
        return cls(
            model, dtype=dtype, device=device, constrained=constrained, temperature=temperature, seed=seed, fast=fast,
            hold_plan=hold_plan, drop_unknown_words=drop_unknown_words, int8_decode=int8_decode,
            draft_actions=draft_actions,
        )

    # -- episode state -----------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode (forget the last action and plan; re-seed sampling if ``seed``)."""
        if seed is not None:
            self.generator.manual_seed(seed)
        self.last_gripper = 0.0
        self.last_action_text = ""
        self.last_plan: str | None = None
        self.held_plan: str | None = None  # with hold_plan: the plan of this episode's first step
        self._last_ids: torch.Tensor | None = None  # (1, action_dim) token ids of the last action

    @property
    def control_hz(self) -> float:
        """Actions per second of the policy alone (mean over the steps so far)."""
        return 1.0 / float(np.mean(self.step_seconds)) if self.step_seconds else float("nan")

    def noop(self) -> np.ndarray:
        """The safe action: do not terminate, do not move, keep the gripper as it is."""
        a = np.zeros(self.action_tokenizer.dim, np.float32)
        a[-1] = self.last_gripper
        return a

    # -- input checks ------------------------------------------------------------------------------

    def prepare_image(self, observation) -> torch.Tensor:
        """An observation (dict with "image", or the image) -> uint8 (1, H, W, 3) on the device."""
        image = observation.get("image") if isinstance(observation, dict) else observation
        if image is None:
            raise PlayworldError("the observation has no 'image'; pass the env's observation dict or an (H, W, 3) image.")
        return self._image_tensor(image, self.model.config.image_size, "image", "(128, 128, 3)")

    def prepare_wrist(self, observation) -> torch.Tensor | None:
        """The wrist camera's image (1, W, W, 3) when the model reads it (``wrist_size``), else None."""
        w = self.model.config.wrist_size
        if not w:
            return None
        image = observation.get("wrist_image") if isinstance(observation, dict) else None
        if image is None:
            raise PlayworldError(
                "this VLA reads the wrist camera too: pass the env's observation dict with 'wrist_image' "
                f"(make the Tabletop with wrist_size={w})."
            )
        return self._image_tensor(image, w, "wrist_image", f"({w}, {w}, 3)")

    def _image_tensor(self, image, s: int, what: str, env_shape: str) -> torch.Tensor:
        arr = image.detach().cpu().numpy() if torch.is_tensor(image) else np.asarray(image)
        if arr.ndim != 3 or arr.shape[-1] != 3 or min(arr.shape[:2]) < 16:
            raise PlayworldError(
                f"the observation {what} must be RGB shaped (H, W, 3) with H, W >= 16 (the model sees "
                f"({s}, {s}, 3) after resizing; the tabletop gives {env_shape}); got shape {arr.shape}."
            )
        if arr.dtype != np.uint8:
            if not np.issubdtype(arr.dtype, np.floating) or not np.all(np.isfinite(arr)):
                raise PlayworldError(f"the observation {what} must be uint8 or float in [0, 1], got {arr.dtype}.")
            arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        if arr.shape[:2] != (s, s) and not self._warned_resize:
            log.info("observation %s is %dx%d; the model resizes it to %dx%d", what, arr.shape[0], arr.shape[1], s, s)
            self._warned_resize = True
        return torch.from_numpy(np.ascontiguousarray(arr))[None].to(self.device)

    def prepare_state(self, observation) -> torch.Tensor | None:
        """The robot state (1, S) when the model reads it (``use_state``), else None."""
        cfg = self.model.config
        if not cfg.use_state:
            return None
        state = observation.get("state") if isinstance(observation, dict) else None
        if state is None:
            raise PlayworldError(
                "this VLA reads the robot state: pass the env's observation dict (with 'image' and 'state')."
            )
        arr = np.asarray(state, dtype=np.float32).reshape(-1)
        if arr.shape != (len(cfg.state_q01),) or not np.all(np.isfinite(arr)):
            raise PlayworldError(f"the observation state must be {len(cfg.state_q01)} finite numbers, got shape {np.shape(state)}.")
        return torch.from_numpy(arr)[None].to(self.device)

    def prompt_ids(self, prompt: str) -> torch.Tensor:
        """Token ids (1, L) of a prompt, cached (the instruction is the same for a whole episode)."""
        ids = self._prompt_ids.get(prompt)
        if ids is None:
            words = self.model.encode_text(prompt)
            if self.drop_unknown_words:
                words = [w for w in words if w != self.model.tokenizer.unk_id]
            ids = torch.tensor([words], dtype=torch.long, device=self.device)
            n = self.model.num_prefix_tokens + ids.shape[1] + self.model.config.max_answer_tokens
            if n > self.model.lm.max_len:
                raise PlayworldError(
                    f"the prompt is {ids.shape[1]} tokens; with the image that is longer than the model's "
                    f"{self.model.lm.max_len}-token context. Shorten the instruction."
                )
            if len(self._prompt_ids) > 256:
                self._prompt_ids.clear()
            self._prompt_ids[prompt] = ids
        return ids

    def _draft(self, prompt: torch.Tensor) -> torch.Tensor | None:
        """The last action's first ``action_dim - 1`` token ids (1, action_dim - 1) as a draft of
        this one, when drafting applies (greedy, constrained, fast, not an episode's first step,
        room in the context after ``prompt``; a plan's room is checked with the plan)."""
        if not (self.draft_actions and self.fast and self.constrained and self.temperature == 0) or self._last_ids is None:
            return None
        m = self.model
        if m.num_prefix_tokens + prompt.shape[1] + m.config.action_dim > m.lm.max_len:
            return None
        return self._last_ids[:, :-1]

    def _plan_ids(self, plan: str, prompt: torch.Tensor) -> torch.Tensor | None:
        """Token ids (1, P) of " Plan: <plan>. Action:" (cached for the last plan asked), or None
        when they and the action do not fit in the model's context after ``prompt``."""
        if self._plan_cache[0] != plan:
            self._plan_cache = (plan, torch.tensor([self.model.plan_ids(plan)], dtype=torch.long, device=self.device))
        ids, m = self._plan_cache[1], self.model
        fits = m.num_prefix_tokens + prompt.shape[1] + ids.shape[1] + m.config.action_dim <= m.lm.max_len
        return ids if fits else None

    def _plan_draft(self, prompt: torch.Tensor) -> torch.Tensor | None:
        """The last step's plan (1, P), a draft of this step's; None at an episode's first step or
        when it does not fit."""
        return None if self.last_plan is None else self._plan_ids(self.last_plan, prompt)

    def _held_plan_ids(self, prompt: torch.Tensor) -> torch.Tensor:
        """Token ids (1, P) of the held plan, read in after the prompt."""
        ids = self._plan_ids(self.held_plan, prompt)
        if ids is None:
            raise ActionDecodeError(f"the plan {self.held_plan!r} does not fit in the model's sequence length.")
        return ids

    def check_instruction(self, instruction) -> str:
        if not isinstance(instruction, str):
            raise PlayworldError(f"the instruction must be a string, got {type(instruction).__name__}.")
        text = instruction.strip()
        if not text.rstrip("?.! "):
            raise PlayworldError("the instruction is empty; say what the robot should do, e.g. 'pick up the red cube'.")
        limit = self.model.config.max_instruction_chars
        if len(text) > limit:
            raise PlayworldError(f"the instruction is {len(text)} characters long; the limit is {limit}.")
        return text

    # -- acting and answering ----------------------------------------------------------------------

    @torch.inference_mode()
    def select_action(self, observation, instruction: str | None = None) -> np.ndarray:
        """The next action, float32 (8,) in RT-2's order (terminate, dx, dy, dz, droll, dpitch, dyaw, gripper).

        ``instruction`` defaults to ``observation["instruction"]``."""
        if instruction is None and isinstance(observation, dict):
            instruction = observation.get("instruction")
        if instruction is None:
            raise PlayworldError("no instruction: pass one, or an observation dict with 'instruction'.")
        prompt = self.prompt_ids(robot_prompt(self.check_instruction(instruction)))
        image, state, wrist = self.prepare_image(observation), self.prepare_state(observation), self.prepare_wrist(observation)
        start = time.perf_counter()
        try:
            cfg = self.model.config
            holding = cfg.plan and self.hold_plan and self.held_plan is not None
            writing = cfg.plan and not holding  # a new plan this step
            # what is read in with the prompt, in the one prefix pass: a held plan; drafts of the
            # action and (when a new plan is written) of the plan, from the last step
            draft = self._draft(prompt)
            plan_draft = self._plan_draft(prompt) if writing and draft is not None else None
            if writing and plan_draft is None:
                draft = None
            if holding:
                self.last_plan = self.held_plan
            read = [t for t in (self._held_plan_ids(prompt) if holding else None, plan_draft, draft) if t is not None]
            drafted = sum(t.shape[1] for t in (plan_draft, draft) if t is not None)  # the draft positions' states too
            hidden, cache = self.model.prefill(
                image, prompt, state, wrist, torch.cat(read, dim=1) if read else None, drafted + 1 if drafted else 0
            )  # (1, D) or (1, drafted + 1, D), KV cache of the prefix
            if plan_draft is not None:
                self.last_plan, bins, _, cut, kept = decode_plan_and_actions_from_draft(
                    self.model, hidden, cache, plan_draft, draft
                )
                self.num_cut_plans += cut
                self.draft_tokens[0] += kept
                self.draft_tokens[1] += plan_draft.shape[1] + draft.shape[1]
            elif draft is not None:
                bins, _, _, kept = decode_actions_from_draft(self.model, hidden, cache, draft)
                self.draft_tokens[0] += kept
                self.draft_tokens[1] += draft.shape[1]
            elif holding:  # the held plan was read in: its actions, constrained as the plan models always are
                bins, _, _ = decode_actions(self.model, hidden, cache, temperature=self.temperature, generator=self.generator)
            elif writing:
                self.last_plan, bins, _, cut = decode_plan_and_actions(
                    self.model, hidden, cache, self.temperature, self.generator
                )
                self.num_cut_plans += cut
                if self.hold_plan:
                    self.held_plan = self.last_plan
            elif self.constrained:
                bins, _, _ = decode_actions(
                    self.model, hidden, cache, temperature=self.temperature, generator=self.generator
                )
            else:
                bins, _, _ = decode_actions_unconstrained(self.model, hidden, cache)
            self._last_ids = self.model.action_ids[bins]  # (1, action_dim): the next step's draft
            b = bins[0].cpu().numpy()
            action = self.action_tokenizer.decode(b)
            self.last_action_text = self.action_tokenizer.to_text(b)
        except ActionDecodeError as e:
            self.num_fallbacks += 1
            self._last_ids = None
            log.warning("no valid action decoded (%s); sending a safe no-op instead", e)
            action = self.noop()
            self.last_action_text = "no-op"
        self.step_seconds.append(time.perf_counter() - start)
        self.last_gripper = float(action[-1])
        return action

    @torch.inference_mode()
    def answer(self, observation, question: str, max_new_tokens: int | None = None) -> str:
        """Answer a question about the image in words (full vocabulary, greedy)."""
        if not isinstance(question, str) or not question.strip():
            raise PlayworldError("the question is empty.")
        image, state, wrist = self.prepare_image(observation), self.prepare_state(observation), self.prepare_wrist(observation)
        hidden, cache = self.model.prefill(image, self.prompt_ids(vqa_prompt(question)), state, wrist)
        n = max_new_tokens or self.model.config.max_answer_tokens
        try:
            ids, _, _, _ = generate_text(self.model, hidden, cache, n)
        except ActionDecodeError:
            return ""
        return self.model.tokenizer.decode(ids).strip()
