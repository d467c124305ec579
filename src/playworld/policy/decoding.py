"""Decoding for the VLA: constrained action tokens, free-text answers, plan-then-act.

RT-2: "when asked for a robot action, decoding is restricted to valid action tokens; vision-
language questions keep the full vocabulary". Text (answers, plans) is decoded greedily.

- :func:`decode_actions` - exactly ``action_dim`` tokens, each masked to the 256 action tokens
  (logit masking: every other token gets -inf). The fast path computes only the 256 action
  logits (``hidden @ action_embed.T``), which is the same numbers as masking the full logits
  and skips the 49k-row output matrix on every step.
- :func:`decode_actions_from_draft` - greedy :func:`decode_actions` that first checks a draft
  (the previous step's action) read in the prefix pass, keeping the draft tokens greedy
  decoding would write: fewer one-token forward passes, the same actions.
- :func:`decode_latent_actions` - the same for a LAPA-pretrained model: ``latent_action_len``
  tokens, each masked to the K latent-action tokens.
- :func:`decode_actions_unconstrained` - the ablation: any token may come out; the result is
  rejected (:class:`ActionDecodeError`) unless it is exactly ``action_dim`` action tokens.
- :func:`generate_text` - full-vocabulary greedy text until ``<eos>`` (or a stop string).
- :func:`decode_plan_and_actions` - "Plan: ... Action:" in words (action tokens banned there),
  then the constrained action tokens.
- :func:`decode_plan_and_actions_from_draft` - the same, greedy, checking the last step's plan
  and action as a draft: a plan that does not change costs about what a held plan does.
- :func:`decode_actions_after_plan` - a given plan read in (not decoded) on the cache, then the
  constrained action tokens (``VLAPolicy`` reads a held plan in its prefix pass instead, with
  ``VLA.prefill(..., then_ids=plan)``: the same numbers in one pass).

All functions continue from a prefix run with ``model.prefill`` (last hidden state + KV cache).

Action tokens are taken greedily (``temperature=0``, the policy's default) or sampled from the
model's distribution (``temperature > 0``, restricted to action tokens either way). Greedy is
the right default for control: a sampled token is drawn at every one of an episode's ~40
steps, so a small probability of a wrong terminate (or gripper) bin adds up - measured on
held-out demonstrations, T=1 sampling gives a spurious terminate somewhere in 56-79% of
episodes, greedy in none (docs/vla.md). Sampling was only needed while the scripted expert
had timed waits (the same observation labelled "stay" and then "go on"), where greedy
decoding stays for ever; the expert has none now (docs/tabletop.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from playworld.errors import PlayworldError
from playworld.policy.action_tokenizer import ActionDecodeError
from playworld.policy.vla import ACTION_MARKER, VLA


def mask_logits(logits: Tensor, allowed: Tensor) -> Tensor:
    """Logits (..., V) with every token outside ``allowed`` (bool (V,)) set to -inf."""
    return logits.masked_fill(~allowed, float("-inf"))


def action_token_mask(model: VLA) -> Tensor:
    """Bool (V,): True for the action tokens."""
    return model.bin_of >= 0


def pick(logits: Tensor, temperature: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """Argmax (temperature 0) or a sample from softmax(logits / temperature): (B, V) -> (B,)."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def _check_finite(logits: Tensor) -> None:
    if not torch.isfinite(logits).any(dim=-1).all() or torch.isnan(logits).any():
        raise ActionDecodeError("the model produced NaN logits; no action could be decoded.")


@torch.no_grad()
def decode_actions(
    model: VLA,
    hidden: Tensor,
    cache: Any,
    restrict_head: bool = True,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Any]:
    """Constrained decoding of ``action_dim`` action tokens (greedy, or sampled with ``temperature``).

    Args:
        hidden: last hidden state of the prefix (B, D); cache: its KV cache.
        restrict_head: compute the 256 action logits only (fast); False masks the full logits.
        temperature, generator: 0 = greedy; > 0 samples (from ``generator`` if given).
    Returns:
        bins (B, action_dim) int64 in [0, num_bins), token ids (B, action_dim), the cache.
    """
    return _decode_constrained(
        model, hidden, cache, model.config.action_dim, model.action_logits, model.action_ids, model.bin_of,
        restrict_head, temperature, generator,
    )


@torch.no_grad()
def decode_actions_from_draft(model: VLA, hidden: Tensor, cache: Any, draft_ids: Tensor) -> tuple[Tensor, Tensor, Any, int]:
    """Greedy constrained decoding that checks a draft of the action (speculative decoding with
    a free draft, e.g. the previous step's action): the draft's tokens were read in the prefix
    pass (``model.prefill(..., then_ids=[..., draft], last=k + 1)``), so that one pass gives the
    greedy token at every draft position. Draft tokens are kept up to the first one greedy
    decoding would not write; that position gets the greedy token; then the draft's remaining
    tokens are checked again after it, in one pass, and so on. Each pass writes at least one
    token, so there are at most as many passes as plain decoding has steps, and each kept draft
    token saves one. The result is greedy decoding's, up to the rounding of many-row passes
    against one-row steps.

    Args:
        hidden: (1, k + 1, D) hidden states of the last prompt position and the k draft tokens.
        cache: the KV cache holding them all; draft tokens greedy decoding would not write are
            dropped from it.
        draft_ids: (1, k) action token ids, the draft of the first k of the action's tokens, 0 < k < action_dim.
    Returns:
        bins (1, action_dim), token ids (1, action_dim), the cache, the number of draft tokens kept.
    """
    k, n = draft_ids.shape[1], model.config.action_dim
    if hidden.shape[0] != 1 or hidden.shape[1] != k + 1 or not 0 < k < n:
        raise ValueError(f"a draft of 1..{n - 1} tokens for one sequence, with k + 1 hidden states; got {tuple(hidden.shape)}, k={k}")
    draft = model.bin_of[draft_ids[0]]  # (k,) the draft's bins, by position
    bins: list[Tensor] = []
    kept_total = done = 0  # draft tokens kept; tokens written
    while True:
        logits = model.action_logits(hidden[0]).float()  # (k + 1, 256): positions done .. done + k
        _check_finite(logits)
        greedy = logits.argmax(-1)  # greedy bin at each position, given the draft tokens before it
        miss = (greedy[:k] != draft[done : done + k]).nonzero()
        kept = int(miss[0]) if len(miss) else k
        model.drop_last(cache, k - kept, actions=k - kept)  # the draft tokens after the first miss were never written
        bins.append(greedy[: kept + 1])  # the kept draft tokens, then greedy decoding's own token
        kept_total += kept
        done += kept + 1
        if done >= n:
            break
        # check the rest of the draft after the token just written (none left: a plain step)
        k = min(len(draft), n - 1) - done if done < len(draft) else 0
        feed = torch.cat([bins[-1][-1:], draft[done : done + k]])  # (1 + k,) bins
        hidden, cache = model.extend(model.action_ids[feed][None], cache, last=k + 1)
    out = torch.cat(bins)[None, :n]  # (1, action_dim)
    return out, model.action_ids[out], cache, kept_total


def latent_token_mask(model: VLA) -> Tensor:
    """Bool (V,): True for the latent-action tokens (LAPA)."""
    return model.latent_of >= 0


@torch.no_grad()
def decode_latent_actions(
    model: VLA,
    hidden: Tensor,
    cache: Any,
    restrict_head: bool = True,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Any]:
    """Constrained decoding of ``latent_action_len`` latent-action tokens (a LAPA-pretrained VLA):
    every token is one of the model's K latent tokens, never a word or an action token.

    Returns codes (B, latent_action_len) int64 in [0, K), token ids (B, latent_action_len), the cache.
    """
    if not model.config.num_latent_actions:
        raise PlayworldError("this VLA has no latent-action tokens; it was not trained with --latent-lam.")
    return _decode_constrained(
        model, hidden, cache, model.config.latent_action_len, model.latent_logits, model.latent_ids,
        model.latent_of, restrict_head, temperature, generator,
    )


def _decode_constrained(model: VLA, hidden: Tensor, cache: Any, count: int, head, token_ids: Tensor,
                        index_of: Tensor, restrict_head: bool, temperature: float,
                        generator: torch.Generator | None) -> tuple[Tensor, Tensor, Any]:
    """``count`` tokens from one token set: ``head`` gives its logits (..., n) in index order,
    ``token_ids`` (n,) index -> token id, ``index_of`` (V,) token id -> index (-1 outside)."""
    allowed = index_of >= 0
    index, ids = [], []
    for i in range(count):
        if restrict_head:
            logits = head(hidden).float()  # (B, n), index order
            _check_finite(logits)
            b = pick(logits, temperature, generator)  # (B,)
            tok = token_ids[b]
        else:
            logits = mask_logits(model.logits(hidden, getattr(cache, "image_hidden", None)).float(), allowed)  # (B, V)
            _check_finite(logits)
            tok = pick(logits, temperature, generator)
            b = index_of[tok]
        index.append(b)
        ids.append(tok)
        if i < count - 1:  # the last token needs no forward pass: nothing comes after it
            hidden, cache = model.extend(tok[:, None], cache)
    return torch.stack(index, 1), torch.stack(ids, 1), cache


@torch.no_grad()
def generate_text(
    model: VLA,
    hidden: Tensor,
    cache: Any,
    max_new_tokens: int,
    stop: str | None = None,
    banned: Tensor | None = None,
    written: Sequence[int] = (),
) -> tuple[list[int], bool, Tensor, Any]:
    """Greedy full-vocabulary generation for one sequence (B = 1).

    Stops at ``<eos>`` or when the decoded text ends with ``stop`` (case-insensitive).
    ``written``: tokens of this text already in the cache (kept from a draft); they count
    towards ``max_new_tokens`` and the stop text, and lead the returned ids.
    Returns (new token ids without <eos>, whether it stopped, last hidden state, cache).
    """
    if hidden.shape[0] != 1:
        raise ValueError("generate_text decodes one sequence at a time")
    eos = model.tokenizer.eos_id
    out: list[int] = list(written)
    for _ in range(max_new_tokens - len(out)):
        logits = model.logits(hidden, getattr(cache, "image_hidden", None)).float()  # (1, V)
        if banned is not None:
            logits = logits.masked_fill(banned, float("-inf"))
        _check_finite(logits)
        tok = int(logits.argmax(-1))
        if tok == eos:
            return out, True, hidden, cache
        out.append(tok)
        hidden, cache = model.extend(torch.tensor([[tok]], device=hidden.device), cache)
        if stop is not None and model.tokenizer.decode(out).strip().lower().endswith(stop.lower()):
            return out, True, hidden, cache
    return out, False, hidden, cache


@torch.no_grad()
def decode_actions_unconstrained(model: VLA, hidden: Tensor, cache: Any) -> tuple[Tensor, Tensor, Any]:
    """``action_dim`` greedy tokens from the full vocabulary; raises :class:`ActionDecodeError`
    unless every one is an action token (RT-2's output constraint, switched off)."""
    ids = []
    for i in range(model.config.action_dim):
        logits = model.logits(hidden, getattr(cache, "image_hidden", None)).float()  # (B, V)
        _check_finite(logits)
        tok = logits.argmax(-1)
        ids.append(tok)
        if i < model.config.action_dim - 1:
            hidden, cache = model.extend(tok[:, None], cache)
    ids_t = torch.stack(ids, 1)  # (B, action_dim)
    bins = model.bin_of[ids_t]
    if (bins < 0).any():
        text = model.tokenizer.decode([int(t) for t in ids_t[0] if model.bin_of[t] < 0])
        raise ActionDecodeError(f"the unconstrained model wrote non-action tokens ({text!r}) where an action was due.")
    return bins, ids_t, cache


def _fits(model: VLA, cache: Any, n: int) -> bool:
    """Whether ``n`` more tokens and the ``action_dim`` action tokens fit after what ``cache`` holds."""
    used = cache.get_seq_length() if hasattr(cache, "get_seq_length") else 0
    return used + n + model.config.action_dim <= model.lm.max_len


@torch.no_grad()
def decode_plan_and_actions(
    model: VLA, hidden: Tensor, cache: Any, temperature: float = 0.0, generator: torch.Generator | None = None,
    finish_plan: bool = True,
) -> tuple[str, Tensor, Any, bool]:
    """"Plan: <words>. Action:" (free text; action tokens and <eos> banned), then constrained actions.

    A plan that has not reached "Action:" within ``max_answer_tokens`` is cut there: with
    ``finish_plan`` the decoder writes ". Action:" for it (as every training plan ends) and the
    actions follow what was written (a plan that wanders on after naming the object and its cell
    still carries them); without, :class:`ActionDecodeError` is raised.

    Returns (the plan in words, bins (1, action_dim), cache, whether the plan was cut)."""
    ids, stopped, hidden, cache = generate_text(
        model, hidden, cache, model.config.max_answer_tokens, stop=ACTION_MARKER, banned=_plan_banned(model),
    )
    plan, hidden, cache, cut = _end_plan(model, ids, stopped, hidden, cache, finish_plan)
    bins, _, cache = decode_actions(model, hidden, cache, temperature=temperature, generator=generator)
    return plan, bins, cache, cut


def _plan_banned(model: VLA) -> Tensor:
    """Bool (V,): the tokens a plan may not contain (action and latent tokens, and <eos>: the
    grammar is that a plan ends with "Action:")."""
    banned = action_token_mask(model) | latent_token_mask(model)
    banned[model.tokenizer.eos_id] = True
    return banned


def _end_plan(model: VLA, ids: list[int], stopped: bool, hidden: Tensor, cache: Any, finish_plan: bool) -> tuple[str, Tensor, Any, bool]:
    """A written plan's ids -> (the plan in words, hidden state and cache after "Action:", cut)."""
    text = model.tokenizer.decode(ids).strip()
    cut = not stopped or not text.lower().endswith(ACTION_MARKER.lower())
    if cut:
        marker = model.encode_text(f". {ACTION_MARKER}")
        if not finish_plan or not _fits(model, cache, len(marker)):
            raise ActionDecodeError(f"the plan did not end with {ACTION_MARKER!r} within {len(ids)} tokens: {text!r}.")
        hidden, cache = model.extend(torch.tensor([marker], device=hidden.device), cache)
        text = f"{text}. {ACTION_MARKER}"
    plan = text[: -len(ACTION_MARKER)].strip()
    if plan.lower().startswith("plan:"):
        plan = plan[5:].strip()
    return plan.rstrip(". "), hidden, cache, cut


@torch.no_grad()
def decode_plan_and_actions_from_draft(
    model: VLA, hidden: Tensor, cache: Any, plan_draft: Tensor, action_draft: Tensor,
) -> tuple[str, Tensor, Any, bool, int]:
    """Greedy :func:`decode_plan_and_actions` that checks a draft of the plan and of the action
    (the last step's): the drafts were read in the prefix pass (``model.prefill(..., then_ids=
    [plan_draft, action_draft], last=P + k + 1)``), so that pass gives the greedy token at every
    draft position. The plan's draft tokens are kept up to the first one greedy decoding would
    not write; that position gets greedy decoding's token and the rest of the plan draft (as if
    one token had been replaced: "x 10 y 12" -> "x 11 y 12") is checked again after it, in one
    pass, and so on. A plan that ends where its draft did is followed by the action draft's
    positions, checked as in :func:`decode_actions_from_draft`; otherwise the action draft is
    read in again after the plan. RT-2's mode - a new plan every step - then costs little more
    than a held plan while the plan changes little. The result is greedy decoding's (the same
    stop text and token budget), up to the rounding of many-row passes.

    Args:
        hidden: (1, P + k + 1, D) hidden states of the last prompt position and the draft tokens.
        plan_draft: (1, P) token ids of " Plan: <words>. Action:"; action_draft: (1, k) action ids.
    Returns:
        (the plan in words, bins (1, action_dim), cache, whether the plan was cut, draft tokens kept).
    """
    p, k = plan_draft.shape[1], action_draft.shape[1]
    if hidden.shape[0] != 1 or hidden.shape[1] != p + k + 1:
        raise ValueError(f"expected hidden states (1, {p + k + 1}, D) for the drafts, got {tuple(hidden.shape)}")
    banned, budget, stop = _plan_banned(model), model.config.max_answer_tokens, ACTION_MARKER.lower()
    written: list[int] = []  # the plan's tokens so far (greedy decoding's)
    draft, rows, kept = plan_draft[0].tolist(), hidden, 0  # rows[0, i] predicts the token after written + draft[:i]
    fed = k  # action draft tokens read in after the plan draft in this pass
    while True:
        n = len(draft)
        logits = model.logits(rows[0, : n + 1], getattr(cache, "image_hidden", None)).float()  # (n + 1, V)
        logits = logits.masked_fill(banned, float("-inf"))
        _check_finite(logits)
        greedy = logits.argmax(-1).tolist()
        m = 0  # draft tokens of this pass confirmed (they are in the cache and greedy decoding writes them)
        while True:
            g = greedy[m]
            written.append(g)
            in_cache = m < n and g == draft[m]
            m += in_cache
            ended = model.tokenizer.decode(written).strip().lower().endswith(stop)
            if ended or len(written) >= budget or not in_cache:
                break
        kept += m
        if ended and in_cache and m == n:  # ended where the draft did: the action draft's rows follow
            plan, _, _, _ = _end_plan(model, written, True, rows[:, n - 1], cache, True)
            bins, _, cache, kept_actions = decode_actions_from_draft(model, rows[:, n:], cache, action_draft)
            return plan, bins, cache, False, kept + kept_actions
        model.drop_last(cache, n - m + fed, actions=fed)  # unconfirmed plan draft tokens and the action draft
        if ended or len(written) >= budget:
            if in_cache:
                h = rows[:, m]  # after g, which the cache holds
            else:
                h, cache = model.extend(torch.tensor([[g]], device=rows.device), cache)
            break
        draft = draft[m + 1 : m + 1 + budget - len(written)]  # the rest, as if token m had been replaced
        fed = k if draft else 0  # no plan draft left: a plain one-token step
        feed = torch.cat([torch.tensor([g] + draft, device=rows.device), action_draft[0, :fed]])[None]
        rows, cache = model.extend(feed, cache, last=feed.shape[1])
    plan, h, cache, cut = _end_plan(model, written, ended, h, cache, True)
    drafted, cache = model.extend(action_draft, cache, last=k)  # (1, k, D): the action draft after the plan
    bins, _, cache, kept_actions = decode_actions_from_draft(model, torch.cat([h[:, None], drafted], dim=1), cache, action_draft)
    return plan, bins, cache, cut, kept + kept_actions


@torch.no_grad()
def decode_actions_after_plan(
    model: VLA, hidden: Tensor, cache: Any, plan: str, temperature: float = 0.0, generator: torch.Generator | None = None,
) -> tuple[Tensor, Any]:
    """The model reads " Plan: <plan>. Action:" (its training form; the plan is given, e.g. the
    one it wrote at an episode's first step) and writes the constrained action tokens after it.

    Returns (bins (1, action_dim), cache)."""
    ids = model.plan_ids(plan)
    if not _fits(model, cache, len(ids)):
        raise ActionDecodeError(f"the plan {plan!r} does not fit in the model's sequence length.")
    hidden, cache = model.extend(torch.tensor([ids], device=hidden.device), cache)
    bins, _, cache = decode_actions(model, hidden, cache, temperature=temperature, generator=generator)
    return bins, cache
