"""Fuzzed inputs: whatever a user (or a browser) throws at playworld, the answer is a clear
PlayworldError (or a skip with a warning), never another exception, a hang or a half-written file.

- videos: random bytes, truncated and bit-flipped files fed to ``ingest``;
- datasets: malformed ``meta.json`` for ``load_dataset`` (and the clip reader behind it);
- configs: wrong types, NaN/inf, zeros and negatives for every model config and TrainConfig
  (an accepted config must also build its model: checked on the meta device, no memory used);
- prompts: images of every PIL mode, sizes 1x1 / 1x5000 / 5000x1 / over the pixel limit,
  image files of every format, damaged files and arbitrary arrays for ``load_prompt``;
- the play server: random and malformed WebSocket messages; every one gets an answer (an
  error for the bad ones) and the session goes on.

Hypothesis runs derandomized with bounded examples so CI stays fast and stable; set
``PLAYWORLD_FUZZ_SCALE=20`` (examples x 20, fresh random seeds) to fuzz for real.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from playworld.errors import PlayworldError

SCALE = int(os.environ.get("PLAYWORLD_FUZZ_SCALE", "1"))


def fuzz(examples: int, deadline_ms: int | None = 30_000):  # generous: CI machines are shared
    return settings(
        max_examples=examples * SCALE,
        deadline=deadline_ms,
        derandomize=SCALE == 1,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# Values of every JSON type, nested a little: what a malformed file or message may hold.
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Python values a config field might be given (from code, JSON or a typo'd flag).
wild_values = st.one_of(
    json_scalars,
    st.sampled_from([0, -1, 1, 2, 3, 7, 2**31, -(2**40), 0.0, -0.5, 0.5, 1e-300, 1e300,
                     float("nan"), float("inf"), -float("inf"), "", "auto", "fsdp", "bf16", "cuda:x",
                     (), (0, 0), (1, 1), (64, 64), (-8, 8), (3, 5, 7), [16, 16], [True, 2], None]),
    st.lists(st.integers(-3, 70), max_size=3),
    st.tuples(st.integers(-3, 70), st.integers(-3, 70)),
)


# ---------------------------------------------------------------------------------------------
# Videos for ingest
# ---------------------------------------------------------------------------------------------


def _write_mp4(path: Path, n: int = 12) -> Path:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 48, 32, "yuv420p"
        for i in range(n):
            img = np.full((32, 48, 3), 8 * i, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _write_gif(path: Path, n: int = 8) -> Path:
    frames = [Image.fromarray(np.full((24, 24, 3), 20 * i, np.uint8)) for i in range(n)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("videos")
    return {".mp4": _write_mp4(d / "a.mp4").read_bytes(), ".gif": _write_gif(d / "a.gif").read_bytes()}


def _ingest(files: dict[str, bytes]):
    """Ingest ``files`` (name -> bytes); returns the dataset or the PlayworldError raised."""
    from playworld.data.format import load_dataset
    from playworld.data.ingest import ingest_videos

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        for name, data in files.items():
            (tmp / "in" / name).write_bytes(data)
        out = tmp / "out" / "ds"
        try:
            ingest_videos([tmp / "in"], out, fps=10, size=16, progress=False)
        except PlayworldError as e:
            assert not out.exists(), "a failed ingest left a dataset folder"
            leftovers = list((tmp / "out").iterdir()) if (tmp / "out").exists() else []
            assert not leftovers, f"a failed ingest left {leftovers}"
            return e
        ds = load_dataset(out)  # whatever was written is a complete, readable dataset
        assert ds.num_frames == sum(ds.episode_frames(i).shape[0] for i in range(ds.num_episodes))
        return ds


@fuzz(25)
@given(data=st.binary(max_size=3000), ext=st.sampled_from([".mp4", ".webm", ".gif", ".avi", ".mkv", ".mov"]))
def test_random_bytes_as_a_video_are_a_clear_error(data, ext):
    result = _ingest({"clip" + ext: data})
    assert isinstance(result, PlayworldError) and "could be used" in str(result)


@fuzz(30)
@given(
    kind=st.sampled_from([".mp4", ".gif"]),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), max_size=6),
    with_good=st.booleans(),
)
def test_truncated_or_damaged_videos_are_skipped_or_refused(videos, kind, cut, flips, with_good):
    data = bytearray(videos[kind][: int(len(videos[kind]) * cut)])
    for where, xor in flips:
        if data:
            data[min(len(data) - 1, int(where * len(data)))] ^= xor
    files = {"damaged" + kind: bytes(data)}
    if with_good:
        files["good.mp4"] = videos[".mp4"]
    result = _ingest(files)
    if with_good:  # the damaged one may be skipped, the good one must get through
        assert not isinstance(result, PlayworldError), result
        assert any("good.mp4" in e["source"] for e in result.episodes)


def test_random_bytes_as_images_in_an_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    files = {f"frame{i}.png": rng.integers(0, 256, 200, dtype=np.uint8).tobytes() for i in range(4)}
    assert isinstance(_ingest(files), PlayworldError)
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), (9, 99, 199)).save(buf, format="PNG")
    files.update({"frame5.png": buf.getvalue(), "frame6.png": buf.getvalue()})
    ds = _ingest(files)  # bad images are skipped, the good ones become an episode
    assert not isinstance(ds, PlayworldError) and ds.num_frames == 2


# ---------------------------------------------------------------------------------------------
# meta.json for load_dataset
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from playworld.data.synthetic import make_sprites_dataset

    return make_sprites_dataset(tmp_path_factory.mktemp("ds") / "sprites", episodes=3, length=6, size=16)


def _load_with_meta(dataset: Path, meta_bytes: bytes) -> None:
    """load_dataset + a clip read on a copy of ``dataset`` with ``meta_bytes`` as meta.json."""
    from playworld.data.clips import ClipDataset
    from playworld.data.format import load_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        shutil.copytree(dataset, root)
        (root / "meta.json").write_bytes(meta_bytes)
        try:
            ds = load_dataset(root)
            clips = ClipDataset(ds, 2, split="all")
            item = clips[len(clips) - 1]
            assert item["frames"].shape[1:] == (*ds.frame_size, 3)
        except PlayworldError:
            pass


def _set_path(obj, path: list, value):
    """A copy of JSON ``obj`` with the value at ``path`` (keys / indices, taken modulo) replaced."""
    if not path or not isinstance(obj, (dict, list)) or not obj:
        return value
    obj = json.loads(json.dumps(obj))
    keys = sorted(obj) if isinstance(obj, dict) else list(range(len(obj)))
    k = keys[path[0] % len(keys)]
    obj[k] = _set_path(obj[k], path[1:], value)
    return obj


@fuzz(60)
@given(path=st.lists(st.integers(0, 50), min_size=1, max_size=4), value=json_values, delete=st.booleans())
def test_malformed_meta_json_is_a_clear_error(dataset, path, value, delete):
    meta = json.loads((dataset / "meta.json").read_text())
    if delete:  # drop a key somewhere instead of replacing its value
        value = _DELETE
    bad = _set_path(meta, path, value)
    bad = _strip_deleted(bad)
    _load_with_meta(dataset, json.dumps(bad).encode())


_DELETE = "\x00delete\x00"


def _strip_deleted(obj):
    if isinstance(obj, dict):
        return {k: _strip_deleted(v) for k, v in obj.items() if v != _DELETE}
    if isinstance(obj, list):
        return [_strip_deleted(v) for v in obj if v != _DELETE]
    return obj


@fuzz(20)
@given(data=st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())))
def test_meta_json_of_random_bytes_or_json_is_a_clear_error(dataset, data):
    _load_with_meta(dataset, data)


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["shards"][0].update(file="../../../../etc/passwd"),
        lambda m: m["shards"][0].update(file="/dev/zero"),
        lambda m: m["episodes"][0].update(start=-5),
        lambda m: m["episodes"][0].update(length=10**9),
        lambda m: m["shards"][0].update(start=10**12),
        lambda m: m.update(frame_size=[0, 0]),
        lambda m: m.update(frame_size=[16]),
        lambda m: m.update(num_frames=-1),
        lambda m: m.update(fps=float("nan")),
        lambda m: m.update(action_dtype="object"),
    ],
)
def test_hand_picked_meta_json_damage(dataset, edit):
    meta = json.loads((dataset / "meta.json").read_text())
    edit(meta)
    _load_with_meta(dataset, json.dumps(meta).encode())


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------


def _model_configs():
    from playworld.world.dynamics import DynamicsConfig, DynamicsModel
    from playworld.world.latent_actions import LatentActionConfig, LatentActionModel
    from playworld.world.tokenizer import VideoTokenizer, VideoTokenizerConfig

    return [(VideoTokenizerConfig, VideoTokenizer), (LatentActionConfig, LatentActionModel),
            (DynamicsConfig, DynamicsModel)]


def _check_config(cls, model_cls, overrides: dict) -> None:
    try:
        cfg = cls(**overrides)
    except PlayworldError:
        return
    if model_cls is not None:
        # Accepted means usable: the model builds (on the meta device: shapes only, no memory).
        # (Huge but valid sizes, e.g. depth 2**40, would only take forever to build.)
        numbers = [v for v in dataclasses.astuple(cfg) if isinstance(v, (int, float))]
        if max(numbers, default=0) <= 4096 and math.prod(getattr(cfg, "image_size", (1, 1))) <= 2**16:
            with torch.device("meta"):
                model_cls(cfg)
    else:
        cfg.steps  # noqa: B018 - TrainConfig: nothing to build


@pytest.mark.parametrize("which", range(4), ids=["tokenizer", "lam", "dynamics", "train"])
@fuzz(60)
@given(data=st.data())
def test_invalid_config_values_are_playworld_errors(which, data):
    from playworld.train.loop import TrainConfig

    cls, model_cls = [*_model_configs(), (TrainConfig, None)][which]
    names = [f.name for f in dataclasses.fields(cls)]
    overrides = data.draw(st.dictionaries(st.sampled_from(names), wild_values, min_size=1, max_size=3))
    _check_config(cls, model_cls, overrides)


@pytest.mark.parametrize("which", range(3), ids=["tokenizer", "lam", "dynamics"])
@fuzz(25)
@given(d=st.dictionaries(st.text(max_size=12), json_values, max_size=5) | json_values)
def test_config_json_contents_are_playworld_errors(which, d):
    cls, _ = _model_configs()[which]
    try:
        cls.from_dict(d)
    except PlayworldError:
        pass


# ---------------------------------------------------------------------------------------------
# World prompts
# ---------------------------------------------------------------------------------------------

PIL_MODES = ["1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F", "LA", "PA", "RGBX",
             "RGBa", "La", "I;16", "I;16L", "I;16B"]
SIZES = [(1, 1), (1, 5000), (5000, 1), (3, 7), (333, 97)]


def _image(mode: str, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    if mode in ("I;16", "I;16L", "I;16B"):
        return Image.frombytes(mode, size, rng.integers(0, 2**16, size[0] * size[1], dtype=np.uint16).tobytes())
    if mode == "P":
        return rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    if mode == "PA":
        return rgb.convert("P").convert("PA")
    return rgb.convert(mode)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("mode", PIL_MODES)
def test_prompt_images_of_every_mode_and_size(mode, size):
    from playworld.world.prompt import load_prompt

    frames = load_prompt(_image(mode, size), (32, 48))
    assert frames.dtype == np.uint8 and frames.shape == (1, 32, 48, 3)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM", "ICO", "TGA"])
def test_prompt_files_of_every_format_intact_and_damaged(fmt, tmp_path):
    from playworld.world.prompt import load_prompt

    saved = 0
    for mode in PIL_MODES:
        path = tmp_path / f"{mode.replace(';', '_')}.{fmt.lower()}"
        try:
            _image(mode, (40, 30)).save(path, format=fmt)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # PIL cannot write this mode in this format: not our input
        saved += 1
        assert load_prompt(path, (16, 16)).shape == (1, 16, 16, 3)
        data = path.read_bytes()
        for cut in (0, 1, len(data) // 3, len(data) - 1):
            path.write_bytes(data[:cut])
            try:
                assert load_prompt(path, (16, 16)).shape == (1, 16, 16, 3)  # some formats decode a prefix
            except PlayworldError:
                pass
    assert saved


def test_prompt_over_the_pixel_limit_and_decompression_bombs_are_refused(tmp_path):
    from playworld.world.prompt import MAX_PROMPT_PIXELS, load_prompt

    with pytest.raises(PlayworldError, match="pixels"):
        load_prompt(Image.new("1", (MAX_PROMPT_PIXELS // 5000 + 1, 5000)), (16, 16))
    # A 40-byte PNG that claims to be 100000 x 100000: refused from its header, nothing decoded.
    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, format="PNG")
    png = bytearray(buf.getvalue())
    ihdr = struct.pack(">II", 100_000, 100_000) + bytes(png[24:29])
    png[16:29] = ihdr
    png[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    (tmp_path / "bomb.png").write_bytes(bytes(png))
    with pytest.raises(PlayworldError):
        load_prompt(tmp_path / "bomb.png", (16, 16))
    with pytest.raises(PlayworldError):
        load_prompt(tmp_path / "missing.png", (16, 16))
    (tmp_path / "noise.png").write_bytes(os.urandom(500))
    with pytest.raises(PlayworldError):
        load_prompt(tmp_path / "noise.png", (16, 16))


@fuzz(60)
@given(
    shape=st.lists(st.integers(0, 6), min_size=0, max_size=5),
    dtype=st.sampled_from(["uint8", "int8", "uint16", "int32", "int64", "float16", "float32", "float64", "bool"]),
    special=st.sampled_from([None, np.nan, np.inf, -np.inf, -1e30, 1e30]),
)
def test_prompt_arrays_of_any_shape_dtype_and_value(shape, dtype, special):
    from playworld.world.prompt import load_prompt

    rng = np.random.default_rng(len(shape))
    arr = (rng.standard_normal(shape) * 300).astype(dtype)
    if special is not None and arr.size and np.dtype(dtype).kind == "f":
        arr.flat[0] = special
    try:
        frames = load_prompt(arr, (8, 12))
    except PlayworldError:
        return
    assert frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[1:] == (8, 12, 3) and len(frames) >= 1


# ---------------------------------------------------------------------------------------------
# The play server's WebSocket
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def play_client(tmp_path_factory):
    from fake_world import FakeWorld, write_sample_prompts
    from fastapi.testclient import TestClient

    from playworld.serve.app import create_app

    prompts = tmp_path_factory.mktemp("prompts")
    write_sample_prompts(prompts)
    with TestClient(create_app(FakeWorld(prompts_dir=prompts, step_s=0.0), fps_cap=0)) as client:
        yield client


TYPES = ["step", "reset", "record", "settings", "ping", "hello", "STEP", "", None, 3]
FIELDS = ["action", "prompt", "seed", "on", "maskgit_steps", "type"]
tricky_strings = st.sampled_from([
    "sample:0", "sample:2", "sample:3", "sample:-1", "sample:²", "sample:٣", "sample:" + "9" * 5000, "sample:",
    "upload:", "upload:nope", "blank", "../../etc/passwd", "sample:0\x00", "\ud800", "",
])
field_values = st.one_of(wild_values, tricky_strings, st.integers(min_value=-(2**80), max_value=2**80))
messages = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(TYPES)},
                          optional={f: field_values for f in FIELDS if f != "type"}).map(lambda m: ("text", json.dumps(m))),
    json_values.map(lambda v: ("text", json.dumps(v))),
    st.text(max_size=80).map(lambda s: ("text", s)),
    st.binary(max_size=64).map(lambda b: ("bytes", b)),
    st.sampled_from([
        ("text", "[" * 20000 + "]" * 20000),  # nesting deeper than the JSON parser's recursion
        ("text", '{"type": "step", "action": ' + "9" * 5000 + "}"),  # an integer too long to parse
        ("text", '{"type": "step", "action": 1e400}'),
        ("text", '{"type": "step", "action": NaN}'),
        ("text", " " * 70000),  # over the size limit
        ("text", '{"type": "ping"' * 3),
    ]),
)


def _open(ws) -> None:
    assert ws.receive_json()["type"] == "hello"
    assert ws.receive_json()["type"] == "reset"
    assert isinstance(ws.receive_bytes(), bytes)


def _answers_until_marker(ws) -> list:
    """Everything the server sends before its answer to a marker message (an unknown type,
    answered by an error naming it: a barrier that no fuzzed message can imitate)."""
    from playworld.serve.app import FRAME_HEADER

    marker = f"marker-{os.urandom(6).hex()}"
    ws.send_text(json.dumps({"type": marker}))
    got = []
    while True:
        m = ws.receive()
        assert m["type"] == "websocket.send", f"the server ended the session: {m}"
        if m.get("bytes") is not None:
            seq, h, w, _ = FRAME_HEADER.unpack(m["bytes"][: FRAME_HEADER.size])
            assert len(m["bytes"]) == FRAME_HEADER.size + h * w * 3
            got.append("frame")
            continue
        msg = json.loads(m["text"])
        if msg.get("request") == marker:
            return got
        got.append(msg)


@pytest.mark.timeout(180)  # a session the server dropped would block receive() forever
@fuzz(40, deadline_ms=None)
@given(batch=st.lists(messages, min_size=1, max_size=6))
def test_random_websocket_messages_get_answers_and_the_session_survives(play_client, batch):
    with play_client.websocket_connect("/ws") as ws:
        _open(ws)
        for kind, payload in batch:
            ws.send_text(payload) if kind == "text" else ws.send_bytes(payload)
            for answer in _answers_until_marker(ws):
                if answer == "frame":
                    continue
                assert answer["type"] in ("error", "reset", "recording", "settings", "pong"), answer
                assert "internal error" not in answer.get("message", ""), answer
        ws.send_text(json.dumps({"type": "reset", "prompt": "sample:0"}))
        ws.send_text(json.dumps({"type": "step", "action": 1}))
        assert "frame" in _answers_until_marker(ws)  # still playable


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "payload",
    [
        "[" * 20000 + "]" * 20000,  # found: RecursionError escaped the handler and ended the session
        json.dumps({"type": "reset", "prompt": "sample:²"}),  # found: "²".isdigit() but int("²") fails
        json.dumps({"type": "reset", "prompt": "sample:" + "9" * 5000}),  # found: int() digit limit
        '{"type": "step", "action": ' + "9" * 5000 + "}",
        json.dumps({"type": "step", "action": 2**80}),
        json.dumps({"type": "reset", "seed": -(2**80)}),
        json.dumps({"type": "settings", "maskgit_steps": 10**30}),
    ],
    ids=["deep-nesting", "superscript-digit", "long-digits", "long-int", "big-action", "big-seed", "big-steps"],
)
def test_known_bad_websocket_messages_are_answered_with_errors(play_client, payload):
    with play_client.websocket_connect("/ws") as ws:
        _open(ws)
        ws.send_text(payload)
        answers = _answers_until_marker(ws)
        assert len(answers) == 1 and answers[0]["type"] == "error", answers
        assert "internal error" not in answers[0]["message"]
        ws.send_text(json.dumps({"type": "step", "action": 1}))
        assert _answers_until_marker(ws) == ["frame"]
