"""The three Genie models: causality, cached == full decoding, learning, save/load, validation."""

from __future__ import annotations

import pytest
import torch

from playworld.errors import PlayworldError
from playworld.nn.st_transformer import KVCache
from playworld.world.dynamics import DynamicsConfig, DynamicsModel
from playworld.world.latent_actions import LatentActionConfig, LatentActionModel
from playworld.world.tokenizer import VideoTokenizer, VideoTokenizerConfig

TOK = dict(
    image_size=(16, 16),
    patch_size=4,
    enc_dim=32,
    enc_depth=1,
    dec_dim=32,
    dec_depth=1,
    head_dim=8,
    num_codes=64,
    code_dim=8,
)
LAM = dict(
    image_size=(16, 16), patch_size=4, dim=32, enc_depth=1, dec_depth=1, head_dim=8, num_actions=8, code_dim=8
)
DYN = dict(num_codes=16, token_grid=(4, 4), num_actions=4, dim=32, depth=2, head_dim=8)


def squares(B: int = 2, T: int = 5, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Video ``(B, T, 3, size, size)`` of a coloured 4x4 square on a shaded background, moved
    2 pixels per step by one of 4 actions; returns (video, actions (B, T-1))."""
    g = torch.Generator().manual_seed(seed)
    moves = torch.tensor([[0, -2], [0, 2], [-2, 0], [2, 0]])
    actions = torch.randint(0, 4, (B, T - 1), generator=g)
    pos = torch.randint(0, size - 4, (B, 2), generator=g)
    colour = torch.rand(B, 3, generator=g) * 0.5 + 0.5
    ramp = torch.linspace(0, 0.3, size)
    background = (
        torch.rand(B, 3, 1, 1, generator=g) * 0.2 + ramp[None, None, :, None] * ramp[None, None, None, :]
    )
    video = background[:, None].repeat(1, T, 1, 1, 1)
    for t in range(T):
        for b in range(B):
            y, x = pos[b].tolist()
            video[b, t, :, y : y + 4, x : x + 4] = colour[b][:, None, None]
        if t < T - 1:
            pos = (pos + moves[actions[:, t]]).clamp(0, size - 4)
    return video, actions


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def train(model, batch, steps: int, lr: float = 3e-3, track: str | None = None) -> list[float]:
    """``steps`` AdamW steps on one batch; returns the loss (or the ``track`` log) per step."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        loss, logs = model.training_step(*batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(logs[track] if track else loss.item())
    return losses


def first_vs_last(losses: list[float], k: int = 10) -> float:
    return (sum(losses[:k]) / k) / (sum(losses[-k:]) / k)


# ---------------------------------------------------------------------------------------------
# Video tokenizer
# ---------------------------------------------------------------------------------------------


def tokenizer(**kw) -> VideoTokenizer:
    torch.manual_seed(0)
    return VideoTokenizer(VideoTokenizerConfig(**{**TOK, **kw})).eval()


def test_tokenizer_shapes_and_ranges():
    tok, (video, _) = tokenizer(), squares()
    tokens = tok.encode(video)
    assert tokens.shape == (2, 5, 4, 4) and tokens.dtype == torch.long
    assert tokens.min() >= 0 and tokens.max() < 64
    frames = tok.decode(tokens)
    assert frames.shape == video.shape and frames.min() >= 0 and frames.max() <= 1
    with pytest.raises(PlayworldError, match="video must be"):
        tok.encode(torch.rand(2, 5, 3, 32, 32))


def test_tokenizer_is_temporally_causal():
    tok, (video, _) = tokenizer(), squares()
    perturbed = video.clone()
    perturbed[:, 3] = torch.rand_like(perturbed[:, 3])
    a, b = tok.encode(video), tok.encode(perturbed)
    assert torch.equal(a[:, :3], b[:, :3])
    ra, rb = tok(video)[0], tok(perturbed)[0]
    torch.testing.assert_close(ra[:, :3], rb[:, :3], rtol=0, atol=0)
    # decode: changing the tokens of frame 3 leaves frames 0..2 alone
    b = a.clone()
    b[:, 3] = (b[:, 3] + 1) % 64
    da, db = tok.decode(a), tok.decode(b)
    torch.testing.assert_close(da[:, :3], db[:, :3], rtol=0, atol=0)
    assert (da[:, 3] - db[:, 3]).abs().amax() > 0


def test_tokenizer_cached_decode_and_encode_match_full():
    tok, (video, _) = tokenizer(max_frames=3), squares(T=6)  # window < T: the cache slides
    tokens = tok.encode(video)
    cache = KVCache()
    frames = torch.cat([tok.decode(tokens[:, t : t + 1], cache) for t in range(6)], dim=1)
    torch.testing.assert_close(frames, tok.decode(tokens), atol=1e-5, rtol=1e-4)
    cache = KVCache()
    inc = torch.cat([tok.encode(video[:, t : t + 1], cache) for t in range(6)], dim=1)
    assert (inc == tokens).float().mean() > 0.99  # argmin ties may flip on rounding


def test_tokenizer_spatial_only_tokens_depend_on_their_frame_only():
    tok, (video, _) = tokenizer(spatial_only=True), squares()
    perturbed = video.clone()
    perturbed[:, 0] = torch.rand_like(perturbed[:, 0])
    assert torch.equal(tok.encode(video)[:, 1:], tok.encode(perturbed)[:, 1:])


def test_tokenizer_overfits_a_batch():
    tok, (video, _) = tokenizer(), squares(B=2, T=4)
    losses = train(tok, (video,), steps=250, lr=1e-3)
    assert first_vs_last(losses) > 5, losses[::25]
    _, logs = tok.training_step(video)
    assert logs["psnr"] > 22 and logs["codebook_usage"] > 4


# ---------------------------------------------------------------------------------------------
# Latent action model
# ---------------------------------------------------------------------------------------------


def lam(**kw) -> LatentActionModel:
    torch.manual_seed(0)
    return LatentActionModel(LatentActionConfig(**{**LAM, **kw})).eval()


def test_lam_infers_one_action_per_transition_causally():
    model, (video, _) = lam(), squares(B=2, T=5)
    actions = model.infer_actions(video)
    assert actions.shape == (2, 4) and actions.dtype == torch.long
    assert actions.min() >= 0 and actions.max() < model.num_actions == 8
    perturbed = video.clone()
    perturbed[:, 3] = torch.rand_like(perturbed[:, 3])
    # a_0 (0->1) and a_1 (1->2) only see frames <= 2; so do the predictions of frames 1 and 2.
    z, z2 = model.encode_latents(video), model.encode_latents(perturbed)
    torch.testing.assert_close(z[:, :2], z2[:, :2], rtol=0, atol=0)
    assert (z[:, 2] - z2[:, 2]).abs().amax() > 0
    p, p2 = model(video)[0], model(perturbed)[0]
    torch.testing.assert_close(p[:, :2], p2[:, :2], rtol=0, atol=0)


def test_lam_overfits_a_batch():
    model = lam()
    video = torch.rand(2, 4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    mse = train(model, (video,), steps=150, track="recon_mse")  # the loss adds (negative) entropy terms
    assert first_vs_last(mse) > 5, mse[::15]


def test_lam_keeps_its_codebook_in_use():
    """Genie pitfall: LAM codebook collapse. Fresh clips each step, as in real training."""
    model = lam(dim=64, head_dim=16, dead_code_steps=20)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    usage = []
    for step in range(120):
        video, _ = squares(B=8, T=4, seed=step)
        loss, logs = model.training_step(video)
        opt.zero_grad()
        loss.backward()
        opt.step()
        usage.append(logs["codebook_usage"])
    assert min(usage[-20:]) >= 5 and sum(usage[-20:]) / 20 >= 6, usage[-20:]
    model.eval()
    held_out = model.infer_actions(squares(B=32, T=4, seed=999)[0])
    assert held_out.unique().numel() >= 6


# ---------------------------------------------------------------------------------------------
# Dynamics model
# ---------------------------------------------------------------------------------------------


def dynamics(**kw) -> DynamicsModel:
    torch.manual_seed(0)
    return DynamicsModel(DynamicsConfig(**{**DYN, **kw})).eval()


def random_tokens(B=2, T=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 16, (B, T, 4, 4), generator=g), torch.randint(0, 4, (B, T - 1), generator=g)


@pytest.mark.parametrize("conditioning", ["additive", "token"])
def test_dynamics_is_temporally_causal(conditioning):
    model, (tokens, actions) = dynamics(action_conditioning=conditioning), random_tokens()
    logits = model(tokens, actions)
    assert logits.shape == (2, 5, 4, 4, 16)
    t2, a2 = tokens.clone(), actions.clone()
    t2[:, 3] = (t2[:, 3] + 1) % 16  # perturb frame 3 ...
    a2[:, 2] = (a2[:, 2] + 1) % 4  # ... and the action leading into it
    logits2 = model(t2, a2)
    torch.testing.assert_close(logits2[:, :3], logits[:, :3], rtol=0, atol=0)
    assert (logits2[:, 3] - logits[:, 3]).abs().amax() > 0
    a3 = actions.clone()
    a3[:, 2] = (a3[:, 2] + 1) % 4  # the action alone changes the prediction of the next frame
    assert (model(tokens, a3)[:, 3] - logits[:, 3]).abs().amax() > 1e-4


@pytest.mark.parametrize("conditioning", ["additive", "token"])
def test_dynamics_cached_step_matches_full_forward(conditioning):
    model, (tokens, actions) = dynamics(action_conditioning=conditioning, max_frames=3), random_tokens(T=6)
    mask = torch.zeros(2, 6, 4, 4, dtype=torch.bool)
    mask[:, 5, :2] = True  # partially masked last frame, as mid-way through MaskGIT
    full = model(tokens, actions, mask)[:, 5]  # (B, h, w, V)
    state = model.start(tokens[:, :1])
    for t in range(1, 5):  # feed frames one by one: the 3-frame window slides
        model.frame_features(tokens[:, t : t + 1].flatten(2), actions[:, t - 1 : t], state.cache)
    ids = tokens[:, 5].masked_fill(mask[:, 5], model.mask_id).flatten(1)[:, None]  # (B, 1, N)
    inc = model.frame_logits(ids, actions[:, 4:5], state.cache, commit=False)[:, 0]
    torch.testing.assert_close(inc, full.flatten(1, 2), atol=1e-5, rtol=1e-4)


def test_dynamics_step_calls_the_model_exactly_steps_times():
    model, (tokens, _) = dynamics(), random_tokens()
    calls = []
    real = model.frame_logits
    model.frame_logits = lambda *a, **k: calls.append(1) or real(*a, **k)
    state = model.start(tokens[:, :1])
    for steps in (1, 4, 25):
        calls.clear()
        out = state.step(torch.tensor([0, 3]), steps=steps, temperature=2.0)
        assert len(calls) == steps
        assert out.shape == (2, 4, 4) and out.min() >= 0 and out.max() < 16
    assert state.frames == 4 and state.cache.length == 4


def test_dynamics_rollout_beyond_the_window_and_forks():
    model, (tokens, _) = dynamics(max_frames=3), random_tokens()
    state = model.start(tokens[:, :2], torch.tensor([[1], [2]]))
    g = torch.Generator().manual_seed(0)
    for i in range(6):
        state.step(i % 4, steps=2, generator=g)
    assert state.cache.k[0].shape[2] == 2  # memory stays at window - 1 past frames
    fork = state.clone()
    a = state.step(1, steps=3, temperature=0.0)
    b = fork.step(1, steps=3, temperature=0.0)
    assert torch.equal(a, b) and state.frames == fork.frames == 9


def test_generate_next_equals_state_step():
    model, (tokens, actions) = dynamics(), random_tokens()
    acts = torch.cat([actions, torch.tensor([[1], [2]])], dim=1)  # (B, T): the last leads to the new frame
    out = model.generate_next(tokens, acts, steps=4, temperature=0.0)
    state = model.start(tokens, actions)
    assert torch.equal(out, state.step(acts[:, -1], steps=4, temperature=0.0))
    with pytest.raises(PlayworldError, match="one action per context frame"):
        model.generate_next(tokens, actions, steps=4)
    with pytest.raises(PlayworldError, match="action must be in"):
        state.step(7)


@pytest.mark.parametrize("conditioning", ["additive", "token"])
def test_dynamics_overfits_a_batch(conditioning):
    model, batch = dynamics(action_conditioning=conditioning), random_tokens(B=2, T=4)
    losses = train(model, batch, steps=120)
    assert first_vs_last(losses) > 5, losses[::20]


def test_dynamics_training_needs_actions():
    model, (tokens, _) = dynamics(), random_tokens()
    with pytest.raises(PlayworldError, match="latent action model"):
        model.training_step(tokens)


# ---------------------------------------------------------------------------------------------
# All three: save/load, bf16, validation, presets
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["tokenizer", "lam", "dynamics"])
def test_save_load_round_trip_is_exact(tmp_path, which):
    if which == "tokenizer":
        model, (video, _) = tokenizer(), squares()
        train(model, (video,), steps=2)
        run = lambda m: m.decode(m.encode(video))  # noqa: E731
    elif which == "lam":
        model, (video, _) = lam(), squares(B=4)
        train(model, (video,), steps=2)
        run = lambda m: m(video)[0]  # noqa: E731
    else:
        model, (tokens, actions) = dynamics(), random_tokens()
        train(model, (tokens, actions), steps=2)
        run = lambda m: m(tokens, actions)  # noqa: E731
    model.eval()
    model.save_pretrained(tmp_path / which)
    loaded = type(model).from_pretrained(tmp_path / which).eval()
    assert loaded.config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    assert torch.equal(run(model), run(loaded))


def test_loading_a_wrong_or_broken_folder_is_a_clear_error(tmp_path):
    from safetensors.torch import load_file, save_file

    from playworld.nn.pretrained import WEIGHTS_NAME, load_weights

    folder = tokenizer().save_pretrained(tmp_path / "tok")
    with pytest.raises(PlayworldError, match="holds a 'video_tokenizer' model, not a 'latent_action_model'"):
        LatentActionModel.from_pretrained(folder)
    with pytest.raises(PlayworldError, match="not a folder"):
        VideoTokenizer.from_pretrained(tmp_path / "nowhere")
    weights = folder / WEIGHTS_NAME
    state = load_file(str(weights))
    for name, broken, match in [
        ("extra key", {**state, "extra": torch.zeros(1)}, r"unexpected \['extra'\]"),
        (
            "missing key",
            {k: v for k, v in state.items() if k != "to_code.bias"},
            r"missing \['to_code.bias'\]",
        ),
        ("wrong shape", {**state, "to_code.bias": torch.zeros(3)}, r"wrong shapes \['to_code.bias \(3,\)"),
    ]:
        save_file(broken, str(weights))
        with pytest.raises(PlayworldError, match=match):
            VideoTokenizer.from_pretrained(folder)
        if name == "missing key":  # unless the caller allows it
            load_weights(tokenizer(), folder, allow_missing=lambda k: k == "to_code.bias")
    weights.write_bytes(b"not safetensors")
    with pytest.raises(PlayworldError, match="corrupt or truncated"):
        VideoTokenizer.from_pretrained(folder)
    weights.unlink()
    with pytest.raises(PlayworldError, match="has no model.safetensors"):
        VideoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("which", ["tokenizer", "lam", "dynamics"])
def test_training_step_under_bf16_autocast(which):
    if which == "tokenizer":
        model, batch = tokenizer(), (squares()[0],)
    elif which == "lam":
        model, batch = lam(), (squares(B=4)[0],)
    else:
        model, batch = dynamics(), random_tokens()
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, logs = model.training_step(*batch)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(isinstance(v, float) for v in logs.values())
    loss.backward()


@pytest.mark.parametrize(
    "cls, kw, match",
    [
        (VideoTokenizerConfig, dict(image_size=(64, 64), patch_size=5), "does not divide image_size"),
        (VideoTokenizerConfig, dict(enc_dim=100, head_dim=32), "does not divide enc_dim"),
        (VideoTokenizerConfig, dict(num_codes=0), "num_codes must be >= 1"),
        (LatentActionConfig, dict(image_size=(64, 48), patch_size=32), "does not divide image_size"),
        (LatentActionConfig, dict(num_actions=1), "num_actions must be >= 2"),
        (LatentActionConfig, dict(dim=100, head_dim=32), "divide dim"),
        (DynamicsConfig, dict(action_conditioning="concat"), "action_conditioning must be"),
        (DynamicsConfig, dict(mask_ratio_low=0.8, mask_ratio_high=0.5), "mask ratios"),
        (DynamicsConfig, dict(schedule="zigzag"), "unknown schedule"),
    ],
)
def test_configs_reject_impossible_settings(cls, kw, match):
    with pytest.raises(PlayworldError, match=match):
        cls(**kw)


@pytest.mark.parametrize("cls", [VideoTokenizerConfig, LatentActionConfig, DynamicsConfig])
def test_presets_exist_and_are_valid(cls):
    for name in ("tiny", "small", "base"):
        cfg = cls.preset(name)
        assert cfg.to_dict()["model_type"] == cls.model_type
        assert cls.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(PlayworldError, match="unknown preset"):
        cls.preset("huge")
    assert VideoTokenizerConfig.preset("tiny").token_grid == (16, 16)
