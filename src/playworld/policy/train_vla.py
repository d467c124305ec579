"""``playworld train vla``: fine-tune (or co-fine-tune) an RT-2-style VLA on tabletop demonstrations.

Data: a LeRobot folder recorded by ``playworld record tabletop``. Every frame of every episode is
a robot example (image, instruction -> the expert's action as 8 tokens). With
``--robot-fraction f < 1`` the dataset also holds ``(1 - f) / f`` VQA examples per robot example,
asked about the same episodes' frames and answered from the simulator state saved with each
episode (``playworld/spec``; see :mod:`playworld.policy.vqa`), so a shuffled batch is on average a
fraction ``f`` robot data - RT-2's co-fine-tuning (robot data was ~50-66% of its mix).
``--robot-fraction 1`` is plain fine-tuning.

The action tokenizer (q01/q99 normalisation, 256 bins) comes from the dataset's
``meta/stats.json`` and is saved with the model.

LAPA (:mod:`playworld.policy.lapa`): ``--latent-lam LAM`` pretrains on video without reading its
actions - the LAM labels every transition and each frame's answer is the latent codes of the
next ``--latent-horizon`` transitions, as latent-action tokens. ``--init VLA_DIR`` starts any
run from a trained VLA's weights (fine-tuning the LAPA model on a few labelled episodes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
import tyro
from torch.utils.data import Dataset

from playworld.envs.tabletop.tasks import EpisodeSpec
from playworld.errors import PlayworldError
from playworld.policy.action_tokenizer import ActionTokenizer
from playworld.policy.vla import (
    ACTION_TOKENIZER_NAME,
    ROBOT_PROMPT_HEAD,
    VLA,
    VLAConfig,
    robot_prompt,
    vqa_prompt,
)
from playworld.policy.vqa import (
    image_cell_word,
    plan_question,
    plan_text,
    sample_questions,
    scene_from_spec,
    scene_questions,
)
from playworld.train.loop import TrainConfig, Trainer
from playworld.utils import atomic_write_bytes, atomic_write_json, get_logger, seed_everything

log = get_logger("train.vla")

TrainSettings = Annotated[TrainConfig, tyro.conf.OmitArgPrefixes]

#: Share of VQA examples that ask for the plan of the episode's instruction (the rest are
#: questions about the scene).
PLAN_QUESTION_SHARE = 0.15
#: Share of VQA examples drawn from the VQA-only scenes (``--vqa-scenes``) when there are any.
SCENE_QUESTION_SHARE = 0.5


@dataclass
class Episode:
    """One demonstration, held in memory: frames already at the model's image size."""

    frames: np.ndarray  # uint8 (T, S, S, 3)
    bins: np.ndarray | None  # int64 (T, 8): the expert's actions as bins (None: actions not read)
    states: np.ndarray  # float32 (T, 8): the robot's proprioceptive state
    instruction: str
    spec: dict[str, Any] | None  # the EpisodeSpec as a dict (playworld recordings)
    latent: np.ndarray | None = None  # int64 (T-1,): the LAM's code of each transition t -> t+1 (LAPA)
    wrist: np.ndarray | None = None  # uint8 (T, W, W, 3): the wrist camera (VLAConfig.wrist_size)


def _resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 (T, H, W, 3) -> uint8 (T, size, size, 3), antialiased bilinear (unchanged if already so)."""
    if frames.shape[1:3] == (size, size):
        return frames
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # (T, 3, H, W)
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def load_episodes(data: Path, image_size: int, action_tokenizer: ActionTokenizer | None = None,
                  episodes: list[int] | None = None, actions: bool = True,
                  wrist_size: int = 0) -> tuple[list[Episode], ActionTokenizer | None, dict | None]:
    """Read a LeRobot tabletop folder into memory (frames resized to ``image_size``; with
    ``wrist_size`` also the wrist camera's, resized to ``wrist_size``).

    Returns (episodes, the action tokenizer from the data's stats, the state's stats or None).
    ``actions=False`` (LAPA pretraining) never reads the actions: the folder may have none, the
    episodes' ``bins`` and the tokenizer are None."""
    import json

    from playworld.data.lerobot import load_lerobot

    ds = load_lerobot(data)
    wrist_ds = None
    if wrist_size:
        if "observation.images.wrist" not in ds.camera_keys:
            raise PlayworldError(
                f"{data} has no wrist camera (cameras: {', '.join(ds.camera_keys)}); record it with "
                "`playworld record tabletop --wrist-size 64`, or train without --wrist-size."
            )
        wrist_ds = load_lerobot(data, camera="wrist")
    tok = None
    if actions:
        if not ds.has_actions or ds.stats is None or "action" not in ds.stats:
            raise PlayworldError(f"{data} has no actions or no meta/stats.json; record it with `playworld record tabletop`.")
        tok = action_tokenizer or ActionTokenizer.from_stats(ds.stats, names=ds.action_names)
    out = []
    for i in episodes if episodes is not None else range(ds.num_episodes):
        ep = ds.episode(i)
        frames = _resize_frames(ep["frames"], image_size)
        wrist = None
        if wrist_ds is not None:
            wrist = _resize_frames(wrist_ds.episode(i)["frames"], wrist_size)
            wrist_ds.close()
        raw_spec = ds.episodes[i].get("playworld/spec")
        states = ep["state"] if ep["state"] is not None else np.zeros((len(frames), 0), np.float32)
        bins = tok.encode(ep["actions"]) if tok is not None else None
        out.append(Episode(frames, bins, states, ep["task"], json.loads(raw_spec) if raw_spec else None, wrist=wrist))
        ds.close()  # one decoded episode in memory at a time
    return out, tok, (ds.stats or {}).get("observation.state")


TRAINING_EPISODES_NAME = "train_episodes.json"


def episode_key(spec: dict | str) -> str:
    """One episode's identity: the SHA-256 of its whole spec (suite, seed, instruction, objects and
    their positions, goal) as canonical JSON. The same seed in another suite or task list is another
    episode; the same key is the same layout and instruction. A string is taken as that canonical
    JSON (how train_episodes.json files written before the hash stored their keys)."""
    text = spec if isinstance(spec, str) else json.dumps(spec, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def write_training_episodes(out: Path, data: Path, episodes: list[Episode]) -> None:
    """``OUT/train_episodes.json``: the key of every episode trained on (:func:`episode_key`), so
    that ``playworld eval vla`` can refuse to score a policy on layouts it was trained on."""
    keys = sorted({episode_key(e.spec) for e in episodes if e.spec is not None})
    atomic_write_json(out / TRAINING_EPISODES_NAME, {"data": str(data), "key": "sha256 of the spec's canonical JSON",
                                                     "episodes": keys})


def training_episode_keys(policy: Path, data: Path | None = None) -> set[str] | None:
    """The :func:`episode_key` of every episode a policy was trained on: from ``data`` (every
    episode of that recording, a conservative superset) when given, else the policy's
    ``train_episodes.json``, else the data named in its ``command.json`` if that folder exists;
    None when unknown."""
    from playworld.data.lerobot import load_lerobot
    from playworld.utils import last_command_options

    policy = Path(policy)
    if data is None:
        path = policy / TRAINING_EPISODES_NAME
        if path.exists():
            stored = json.loads(path.read_text())
            # files written before the hash hold the canonical JSON itself
            return {k if "key" in stored else episode_key(k) for k in stored["episodes"]}
        named = (last_command_options(policy) or {}).get("data")
        data = Path(named) if named and Path(named).exists() else None
    if data is None:
        return None
    keys = set()
    for row in load_lerobot(data).episodes:
        raw = row.get("playworld/spec")
        if raw:
            keys.add(episode_key(json.loads(raw)))
    return keys


def check_instruction_noise(p: float, tiny: bool) -> None:
    """``--instruction-noise`` must be a probability below 0.5, and needs the tiny backbone's
    word tokenizer (the only one with an ``<unk>`` word)."""
    if not 0 <= p < 0.5:
        raise PlayworldError(f"--instruction-noise must be in [0, 0.5), got {p}.")
    if p and not tiny:
        raise PlayworldError("--instruction-noise writes <unk> words, which only the tiny backbone's word tokenizer has.")


class VLADataset(Dataset):
    """Robot frames, then VQA examples about the same episodes (see the module docstring).

    Item ``i < n_robot`` is robot frame ``i``; item ``i >= n_robot`` is a VQA example drawn with
    a generator seeded by ``(seed, i)``, so the dataset is fixed and training can resume exactly.
    Questions about positions are asked on an episode's first frame only (where the saved
    layout is exact); questions about colours, shapes and counts on any frame.

    ``target="latent"`` (LAPA pretraining): a robot example's answer is the latent codes of the
    ``latent_action_len`` transitions after its frame (frames too close to the episode's end to
    have them are left out), written as latent-action tokens; the actions are never read. With
    ``plan`` the plan comes first, as for actions: it is made from the episode's instruction and
    its first frame's layout (the simulator state), not from its actions.
    """

    def __init__(self, model: VLA, episodes: list[Episode], robot_fraction: float = 1.0,
                 plan: bool = False, seed: int = 0, target: Literal["action", "latent"] = "action",
                 vqa_scenes: list[Episode] | None = None, instruction_noise: float = 0.0):
        if not 0 < robot_fraction <= 1:
            raise PlayworldError(f"--robot-fraction must be in (0, 1], got {robot_fraction}.")
        if not episodes:
            raise PlayworldError("no episodes to train on.")
        check_instruction_noise(instruction_noise, model.kind == "tiny")
        if target == "latent" and any(e.latent is None for e in episodes):
            raise PlayworldError("latent (LAPA) examples need every episode's latent labels.")
        if model.config.wrist_size and any(e.wrist is None for e in episodes):
            raise PlayworldError("this VLA reads the wrist camera: load the episodes with wrist_size (--wrist-size).")
        if target == "action" and any(e.bins is None for e in episodes):
            raise PlayworldError("robot examples need the episodes' actions (load them with actions=True).")
        needs_spec = robot_fraction < 1 or plan
        if needs_spec and any(e.spec is None for e in episodes):
            raise PlayworldError(
                "VQA co-fine-tuning and --plan need each episode's simulator state (playworld/spec), which "
                "this dataset lacks; record it with `playworld record tabletop` or use --robot-fraction 1."
            )
        self.model, self.episodes, self.plan, self.seed, self.target = model, episodes, plan, seed, target
        self.instruction_noise = instruction_noise
        # tokens of the prompt templates that --instruction-noise leaves alone: (robot head, VQA head, tail)
        self._template_lens = tuple(len(model.encode_text(t)) for t in (ROBOT_PROMPT_HEAD, "Q:", "? A:"))
        self.vqa_scenes = list(vqa_scenes or [])
        if any(e.spec is None for e in self.vqa_scenes):
            raise PlayworldError("VQA-only scenes need their simulator state (spec).")
        self.vqa_options = vqa_options(model)
        if target == "latent":
            h = model.config.latent_action_len
            self.robot_index = [(e, t) for e, ep in enumerate(episodes) for t in range(len(ep.latent) - h + 1)]
        else:
            self.robot_index = [(e, t) for e, ep in enumerate(episodes) for t in range(len(ep.bins))]
        self.n_robot = len(self.robot_index)
        self.n_vqa = int(round(self.n_robot * (1 - robot_fraction) / robot_fraction))

    def __len__(self) -> int:
        return self.n_robot + self.n_vqa

    def example(self, i: int) -> tuple[int, int, str, list[int]]:
        """(episode, frame, prompt, answer ids) of item ``i``."""
        if i < self.n_robot:
            e, t = self.robot_index[i]
            ep = self.episodes[e]
            plan = plan_text(ep.spec, self.model.config.plan_locate, self.model.image_grid) if self.plan else None
            if self.target == "latent":
                codes = ep.latent[t : t + self.model.config.latent_action_len]
                return e, t, robot_prompt(ep.instruction), self.model.latent_target_ids(codes, plan)
            return e, t, robot_prompt(ep.instruction), self.model.action_target_ids(ep.bins[t], plan)
        rng = np.random.default_rng([self.seed, i])
        e = int(rng.integers(len(self.episodes)))
        if self.vqa_scenes and rng.random() < SCENE_QUESTION_SHARE:  # a VQA-only scene: its one frame
            j = int(rng.integers(len(self.vqa_scenes)))
            qa = sample_questions(scene_from_spec(self.vqa_scenes[j].spec), rng, 1, **self.vqa_options)[0]
            return len(self.episodes) + j, 0, vqa_prompt(qa.question), self.model.answer_target_ids(qa.answer)
        ep = self.episodes[e]
        if rng.random() < PLAN_QUESTION_SHARE:
            qa = plan_question(ep.spec)
            t = int(rng.integers(len(ep.frames)))
        else:
            t = 0 if rng.random() < 0.5 else int(rng.integers(len(ep.frames)))
            qa = sample_questions(scene_from_spec(ep.spec), rng, 1, spatial=t == 0, **self.vqa_options)[0]
        return e, t, vqa_prompt(qa.question), self.model.answer_target_ids(qa.answer)

    def noisy_prompt_ids(self, i: int, prompt: str, answer_len: int) -> list[int]:
        """The prompt's ids with word noise on its instruction or question (``instruction_noise``
        p; word dropout, Iyyer et al. 2015, plus EDA's random insertion, Wei & Zou 2019): each word
        becomes ``<unk>`` with probability p, and an ``<unk>`` is inserted before each word with
        probability p / 2, so that words the model never saw do not throw it off.
        The template's own words ("Q: what action should the robot take to", "? A:") stay. The
        draw is seeded by ``(seed, i)``, so an item is the same on every pass (exact resume)."""
        ids = self.model.encode_text(prompt)
        p = self.instruction_noise
        robot_head, vqa_head, tail = self._template_lens
        head = robot_head if prompt.startswith(ROBOT_PROMPT_HEAD) else vqa_head
        rng = np.random.default_rng([self.seed, i, 7])
        unk = self.model.tokenizer.unk_id
        words, inserted = [], 0
        for w in ids[head : len(ids) - tail]:
            if rng.random() < p / 2:
                words.append(unk)
                inserted += 1
            words.append(unk if rng.random() < p else w)
        if len(ids) + inserted + answer_len > self.model.config.max_text_len:  # no room: replacements only
            words = [unk if rng.random() < p else w for w in ids[head : len(ids) - tail]]
        return ids[:head] + words + ids[len(ids) - tail :]

    def __getitem__(self, i: int) -> dict[str, Any]:
        e, t, prompt, answer = self.example(int(i))
        prompt_ids = self.noisy_prompt_ids(int(i), prompt, len(answer)) if self.instruction_noise else None
        input_ids, labels = self.model.make_example(prompt, answer, prompt_ids)
        ep = self.episodes[e] if e < len(self.episodes) else self.vqa_scenes[e - len(self.episodes)]
        item = {
            "image": torch.from_numpy(ep.frames[t]),  # uint8 (S, S, 3)
            "state": torch.from_numpy(ep.states[t]),  # float32 (8,)
            "input_ids": input_ids,  # (L,)
            "labels": labels,  # (L,)
        }
        if self.model.config.wrist_size:
            item["wrist"] = torch.from_numpy(ep.wrist[t])  # uint8 (W, W, 3)
        return item


def asks_point(plan_locate: str, vqa_scenes: int) -> bool:
    """Whether the VQA asks "which image cell shows ...?": ``plan_locate="image"`` models
    co-fine-tuned with VQA-only scenes."""
    return plan_locate == "image" and vqa_scenes > 0


def vqa_options_from(fields: dict[str, Any], grid: int) -> dict[str, Any]:
    """The keyword arguments of ``vqa.sample_questions`` / ``scene_questions`` for the VQA a VLA
    with these config ``fields`` (``VLAConfig`` names; a missing one takes its default) is
    co-fine-tuned with: the lexicon, the pointing questions (:func:`asks_point`) over a ``grid`` x
    ``grid`` token grid, and the referring expressions. Written once for a built model
    (:func:`vqa_options`) and for one being configured (:func:`build_model`, LAPA's ``--init``)."""
    defaults = {f.name: f.default for f in dataclasses.fields(VLAConfig)}

    def get(name: str) -> Any:
        return fields.get(name, defaults[name])

    return {"lexicon": get("vqa_lexicon"), "grid": grid if asks_point(get("plan_locate"), get("vqa_scenes")) else 0,
            "refer": get("vqa_refer")}


def vqa_options(model: VLA) -> dict[str, Any]:
    """:func:`vqa_options_from` for a built model."""
    return vqa_options_from(dataclasses.asdict(model.config), model.image_grid)


def render_scenes(specs: list[EpisodeSpec], camera_size: int, image_size: int, wrist_camera_size: int = 0,
                  wrist_size: int = 0, progress: bool = True) -> list[Episode]:
    """The first frame of each scene (the robot at home) as a one-frame :class:`Episode` without
    actions: the fixed camera rendered at ``camera_size`` and resized to ``image_size`` as a
    recording would be, the wrist camera likewise (``wrist_size`` 0: none). For VQA only."""
    from tqdm.auto import tqdm

    from playworld.envs.tabletop import Tabletop

    env = Tabletop(image_size=camera_size, wrist_size=wrist_camera_size if wrist_size else 0, max_steps=1)
    out = []
    try:
        for spec in tqdm(specs, desc="render VQA scenes", disable=not progress, leave=False):
            obs, _ = env.reset(options={"episode": spec})
            wrist = _resize_frames(obs["wrist_image"][None], wrist_size) if wrist_size else None
            out.append(Episode(_resize_frames(obs["image"][None], image_size), None, obs["state"][None].astype(np.float32),
                               spec.instruction, spec.to_dict(), wrist=wrist))
    finally:
        env.close()
    return out


def scenes_from_file_or_render(specs: list[EpisodeSpec], camera_size: int, image_size: int, wrist_camera_size: int,
                               wrist_size: int, path: Path | None, progress: bool = True) -> list[Episode]:
    """:func:`render_scenes`, or the same scenes read from ``path`` (an .npz this function wrote):
    read when it exists and holds these ``specs`` at these sizes (else a clear error), otherwise
    rendered and written there atomically. ``path`` None: always rendered."""
    sizes = {"camera_size": camera_size, "image_size": image_size, "wrist_camera_size": wrist_camera_size,
             "wrist_size": wrist_size}
    want_specs = json.loads(json.dumps([s.to_dict() for s in specs]))
    if path is not None and Path(path).exists():
        try:
            with np.load(path) as z:
                meta = json.loads(str(z["meta"]))
                images, states = z["image"], z["state"]
                wrists = z["wrist"] if wrist_size else None
        except (OSError, ValueError, KeyError) as e:
            raise PlayworldError(f"{path} is not a VQA scenes file written by `playworld train vla --vqa-scenes-file` ({e}); "
                                 "delete it to render the scenes again.") from None
        if meta.get("sizes") != sizes or meta.get("specs") != want_specs:
            got = "other image sizes" if meta.get("sizes") != sizes else f"other scenes ({len(meta.get('specs', []))} specs)"
            raise PlayworldError(
                f"{path} holds {got} than this run asks for ({len(specs)} scenes, seed from --seed, sizes {sizes}); "
                "point --vqa-scenes-file at a new file or delete this one to render them again."
            )
        log.info("read %d VQA scenes from %s", len(specs), path)
        return [Episode(images[i : i + 1], None, states[i : i + 1], s.instruction, s.to_dict(),
                        wrist=wrists[i : i + 1] if wrists is not None else None) for i, s in enumerate(specs)]
    scenes = render_scenes(specs, camera_size, image_size, wrist_camera_size, wrist_size, progress=progress)
    if path is not None:
        arrays = {"image": np.concatenate([e.frames for e in scenes]), "state": np.concatenate([e.states for e in scenes]),
                  "meta": np.array(json.dumps({"sizes": sizes, "specs": want_specs}))}
        if wrist_size:
            arrays["wrist"] = np.concatenate([e.wrist for e in scenes])
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(path, buf.getvalue())
        log.info("wrote %d rendered VQA scenes to %s", len(scenes), path)
    return scenes


def training_texts(episodes: list[Episode], plan_locate: str = "", grid: int = 8,
                   vqa: dict[str, Any] | None = None) -> list[str]:
    """Every prompt and answer a dataset of these episodes can produce (vocabulary, lengths);
    ``plan_locate``: plans that say where things are (``VLAConfig.plan_locate``; ``"image"``:
    also every cell word of a ``grid`` x ``grid`` token grid, used in a plan or not); ``vqa``: the
    VQA's options (:func:`vqa_options_from`; None: the plain scene questions)."""
    texts = [" ".join(image_cell_word(r, c) for r in range(grid) for c in range(grid))] if plan_locate == "image" else []
    for ep in episodes:
        texts.append(robot_prompt(ep.instruction))
        if ep.spec is not None:
            texts.append(f" Plan: {plan_text(ep.spec, plan_locate, grid)}. Action:")
            qa = plan_question(ep.spec)
            texts.append(f"{vqa_prompt(qa.question)} {qa.answer}")
            for qas in scene_questions(scene_from_spec(ep.spec), **(vqa or {})).values():
                texts += [f"{vqa_prompt(q.question)} {q.answer}" for q in qas]
    return texts


def max_example_tokens(model: VLA, episodes: list[Episode], plan: bool) -> int:
    """Length in tokens of the longest example the data can make (a robot answer: the plan if
    any, then the action tokens, or the latent tokens if they are more, so that a LAPA model has
    room for both)."""
    longest = 0
    cfg = model.config
    tokens = max(cfg.action_dim, cfg.latent_action_len if cfg.num_latent_actions else 0)
    for ep in episodes:
        p = len(model.encode_text(robot_prompt(ep.instruction)))
        plan_len = len(model.plan_ids(plan_text(ep.spec, cfg.plan_locate, model.image_grid))) if plan and ep.spec else 0
        longest = max(longest, p + plan_len + tokens)
        if ep.spec is not None:
            by_kind = scene_questions(scene_from_spec(ep.spec), **vqa_options(model))
            qas = [q for qs in by_kind.values() for q in qs] + [plan_question(ep.spec)]
            for q in qas:
                longest = max(longest, len(model.encode_text(vqa_prompt(q.question))) + len(model.answer_target_ids(q.answer)))
    return longest


def build_model(backbone: str, episodes: list[Episode], tokenizer: ActionTokenizer | None, plan: bool,
                **overrides) -> VLA:
    """A fresh VLA for this data: tiny gets a vocabulary from the data's text; the text length
    limit fits the longest example."""
    from playworld.policy.backbones import WordTokenizer

    preset = "tiny" if backbone == "tiny" else "pretrained"
    fields = {"action_tokenizer": tokenizer.to_dict() if tokenizer is not None else {}, "plan": plan, **overrides}
    if preset == "pretrained":
        fields["backbone"] = backbone
    if backbone == "tiny":
        grid = fields.get("image_size", 64) // fields.get("tiny_patch", 8)
        texts = training_texts(episodes, fields.get("plan_locate", ""), grid, vqa_options_from(fields, grid))
        fields["vocab"] = tuple(WordTokenizer.build(texts).vocab)
    config = VLAConfig.preset(preset, **fields)
    model = VLA(config)
    need = max_example_tokens(model, episodes, plan)
    if need > config.max_text_len:
        config.max_text_len = need
    longest = model.num_prefix_tokens + config.max_text_len + config.max_answer_tokens
    if backbone == "tiny" and longest > config.max_seq_len:  # rebuild with room for longer sequences
        config.max_seq_len = longest
        model = VLA(config)
    return model


@dataclass
class TrainVLA:
    """Train an RT-2-style VLA (vision-language-action model) on tabletop demonstrations, co-fine-tuned with VQA."""

    data: Path
    """LeRobot dataset folder from `playworld record tabletop`."""
    out: Path
    """Output folder: the model (config.json, model.safetensors, action_tokenizer.json), checkpoints, TensorBoard."""
    backbone: str = "tiny"
    """tiny (from scratch, CPU minutes) | pretrained (EfficientNet-lite0 + SmolLM2-135M, LoRA) | path to a local Hugging Face causal-LM folder."""
    robot_fraction: float = 0.5
    """Share of robot examples in the data mix; the rest is VQA about the same scenes (1 = plain fine-tuning)."""
    plan: bool = False
    """Train to write "Plan: <words>. Action: <tokens>" (RT-2's chain of thought)."""
    plan_locate: Literal["", "table", "image"] = ""
    """The plan also says where each thing it names is (a grounded chain of thought, ECoT-style); implies --plan. table: its 2 cm cell in the robot's frame ("at x 7 y 12"); image: the fixed camera's image token showing it ("at cellcf"), a word tied to that token's position (Hugging Face backbones: EfficientNet features at stride 16, one taken-over token per cell word); empty: no."""
    cell_pointer: bool = False
    """With --plan-locate image: the cell words' logits point at the image tokens (a pointer over the fixed camera's tokens) instead of coming from fixed output embeddings."""
    vqa_lexicon: bool = False
    """Co-fine-tuning's VQA also names objects with colour/shape synonyms the robot demos never use ("which object is the scarlet box?" -> red cube): web-like breadth of vocabulary, so that words seen only in VQA can reach the actions; needs --robot-fraction < 1."""
    vqa_refer: bool = False
    """Co-fine-tuning's VQA also asks about referring expressions: which object a spatial reference means ("which object is the leftmost block?" -> red cube; "which image cell shows ...?" too with --vqa-scenes and --plan-locate image) and plans for the robot data's own phrasings with the object named by a spatial reference or synonyms ("what is the plan to pick up the crimson block?" -> "pick up the red cube"); never in robot demos; needs --robot-fraction < 1."""
    vqa_scenes: int = 0
    """Also co-fine-tune on N generated VQA-only scenes showing every colour and shape the simulator has (held-out objects too: the stand-in for web images, which show far more than the robot data); rendered at start, about 20 ms each; with --plan-locate image their VQA also asks "which image cell shows the ...?". Needs --robot-fraction < 1; 0 = none."""
    vqa_scenes_file: Path | None = None
    """With --vqa-scenes: an .npz of the rendered scenes. Read if it exists (it must hold the same scene specs and image sizes), else rendered and written there: render once, then train where PyBullet is not installed (e.g. a GPU machine on a Python without its wheel)."""
    point_loss: float = 0.0
    """With --plan-locate image: weight of an auxiliary pointing loss (the hidden state writing a cell word must point at that image token); 0 = off."""
    episodes: int = 0
    """Use only the first N episodes (0 = all)."""
    val_fraction: float = 0.1
    """Episodes held out for validation (none when there are fewer than 10 episodes)."""
    image_size: int = 0
    """Image side fed to the vision encoder (0 = the backbone's default: 64 tiny, 128 pretrained)."""
    tiny_patch: int = 0
    """tiny backbone: pixels per image token side, 8 or 16 (with --image-size 128: 8 x 8 tokens that see the objects at twice the resolution of 64 px); 0 = 8, or the --init checkpoint's."""
    tiny_vision: str = ""
    """tiny backbone's vision encoder: conv (trained from scratch) | efficientnet (the frozen ImageNet EfficientNet-lite0 up to stride 16: pretrained features, 16 px per token, implies --tiny-patch 16; use with --image-size 128); empty = conv, or the --init checkpoint's."""
    lora_rank: int = 16
    """LoRA rank for pretrained backbones (0 = full fine-tuning)."""
    from_scratch: bool = False
    """Pretrained backbones: same architecture, random weights, everything trained (RT-2's from-scratch ablation)."""
    state: bool = True
    """Also give the model the robot's proprioceptive state (one prefix token); --no-state = image-only RT-2."""
    prefix_lm: bool = False
    """tiny backbone: image, state and prompt tokens attend to each other both ways, so the image features can depend on the instruction (a prefix LM, as RT-2's PaLI-X encoder reads image and text together); default: a causal decoder, or the --init checkpoint's."""
    wrist_size: int = 0
    """Also read the data's wrist (palm) camera (recorded with `playworld record tabletop --wrist-size`), resized to N x N px, as more image tokens (tiny: multiple of the token size, e.g. 64 -> 4 x 4 tokens with --tiny-vision efficientnet); 0 = the fixed camera only (RT-2), or the --init checkpoint's."""
    state_fourier: int = -1
    """Fourier frequency bands per state value fed to the state MLP (0 = the raw value, to which a small MLP barely reacts at the centimetre scale; docs/vla.md); -1 = 6 for a new model, or the --init checkpoint's."""
    resume: bool = False
    """Continue the run in --out from its latest valid checkpoint."""
    threads: int = 0
    """torch CPU threads (0: torch's default, one per core). On a CPU shared with other jobs use 1: two threads there spin-wait (measured 13x slower per step, docs/vla.md)."""
    latent_lam: Path | None = None
    """LAPA pretraining: a latent action model (`playworld train lam` on video of this frame size) labels every transition of --data and the VLA learns to write those latent actions as tokens; the data's actions are never read (it may have none)."""
    latent_horizon: int = 4
    """LAPA: latent tokens per answer = the LAM's codes of the next N transitions (LAPA's latent spans frame t to t+H; our LAM labels one step)."""
    latent_clip_len: int = 6
    """LAPA: frames per labelling window (the clip length the LAM was trained on; `playworld train lam` default 6)."""
    num_latent_actions: int = 0
    """LAPA: latent-action tokens the VLA writes; must equal the LAM's codebook (0: take the LAM's)."""
    latent_shuffle: bool = False
    """LAPA control: permute the LAM's codes across all transitions before pretraining, so the latent tokens keep their frequencies but carry no information about the video (what is left of LAPA's gain then comes from the rest of pretraining, e.g. the plans)."""
    latent_camera: str | None = None
    """LAPA: the camera whose video the LAM reads (a LAM trained with `playworld train lam --camera wrist`); default the data's first. The tabletop's wrist camera shows the arm's own motion (docs/bridge.md)."""
    action_slots: bool = False
    """Add a learned embedding of each action token's dimension (0 = terminate ... 7 = gripper) to its input, so the next dimension is known from the tokens, not from absolute positions (robust to plans and prompts of unseen lengths; docs/vla.md). Set when a model is built; --init keeps the checkpoint's."""
    instruction_noise: float = 0.0
    """tiny backbone: word noise on training instructions and questions, probability p per word: the word becomes <unk>, and an <unk> is inserted before it with probability p / 2 (word dropout + random insertion), so that unknown words at test time ("could you ...") do not derail the model; 0 = off, try 0.15."""
    init: Path | None = None
    """Start from the weights of a trained VLA (e.g. a LAPA-pretrained one, then fine-tune on labelled actions); its backbone and vocabulary are kept, a checkpoint of another backbone or vocabulary is refused."""
    train: TrainSettings = field(
        default_factory=lambda: TrainConfig(
            steps=3000, batch_size=32, lr=1e-3, warmup_steps=100, num_workers=0, eval_every=500, sample_every=0,
            ckpt_every=500,
        )
    )
    """Optimisation settings (pretrained backbones: try --lr 3e-4 --batch-size 8)."""

    def __post_init__(self) -> None:
        if self.tiny_patch not in (0, 8, 16):
            raise PlayworldError(f"--tiny-patch must be 8 or 16 (0: the default), got {self.tiny_patch}.")
        if not -1 <= self.state_fourier <= 12:
            raise PlayworldError(f"--state-fourier must be in [0, 12] (-1: the default), got {self.state_fourier}.")
        if self.tiny_vision not in ("", "conv", "efficientnet"):
            raise PlayworldError(f"--tiny-vision must be conv or efficientnet, got {self.tiny_vision!r}.")
        if self.prefix_lm and self.backbone != "tiny":
            raise PlayworldError(f"--prefix-lm is for the tiny backbone; --backbone {self.backbone} keeps its LM's causal attention.")
        if self.tiny_vision and self.backbone != "tiny":
            raise PlayworldError(f"--tiny-vision is for the tiny backbone; --backbone {self.backbone} always uses EfficientNet-lite0.")
        if not 0 < self.robot_fraction <= 1:
            raise PlayworldError(f"--robot-fraction must be in (0, 1], got {self.robot_fraction}.")
        if self.episodes < 0 or not 0 <= self.val_fraction < 1:
            raise PlayworldError("--episodes must be >= 0 and --val-fraction in [0, 1).")
        if self.threads < 0:
            raise PlayworldError(f"--threads must be >= 0, got {self.threads}.")
        if self.wrist_size < 0:
            raise PlayworldError(f"--wrist-size must be >= 0 (0: no wrist camera), got {self.wrist_size}.")
        if self.latent_horizon < 1 or self.latent_clip_len < 2 or self.num_latent_actions == 1:
            raise PlayworldError(
                "--latent-horizon must be >= 1, --latent-clip-len >= 2 (an action needs two frames) and "
                "--num-latent-actions 0 (the LAM's) or >= 2."
            )
        if self.plan_locate:
            self.plan = True
        if self.vqa_scenes < 0:
            raise PlayworldError(f"--vqa-scenes must be >= 0, got {self.vqa_scenes}.")
        check_instruction_noise(self.instruction_noise, self.backbone == "tiny")
        if self.vqa_scenes_file is not None and not self.vqa_scenes:
            raise PlayworldError("--vqa-scenes-file stores the --vqa-scenes scenes; give --vqa-scenes N too.")
        if self.vqa_scenes and self.robot_fraction == 1:
            raise PlayworldError("--vqa-scenes adds VQA examples, but --robot-fraction 1 trains on no VQA; use e.g. --robot-fraction 0.7.")
        for flag, on in (("--vqa-lexicon", self.vqa_lexicon), ("--vqa-refer", self.vqa_refer)):
            if on and self.robot_fraction == 1:
                raise PlayworldError(f"{flag} adds VQA questions, but --robot-fraction 1 trains on no VQA; use e.g. --robot-fraction 0.7.")
        if self.action_slots and self.init is not None:
            raise PlayworldError("--action-slots is chosen when a model is built; --init keeps its checkpoint's setting.")
        if self.latent_camera is not None and self.latent_lam is None:
            raise PlayworldError("--latent-camera picks the video the LAM reads; it needs --latent-lam.")
        if self.latent_shuffle and self.latent_lam is None:
            raise PlayworldError("--latent-shuffle permutes the LAM's latent labels; it needs --latent-lam.")

    def run(self) -> Path:
        from playworld.data.lerobot import load_lerobot

        if self.threads:
            torch.set_num_threads(self.threads)
        seed_everything(self.train.seed)
        ds = load_lerobot(self.data)
        n = ds.num_episodes if self.episodes == 0 else min(self.episodes, ds.num_episodes)
        n_val = int(round(n * self.val_fraction)) if n >= 10 else 0
        val_idx = sorted(np.random.default_rng(self.train.seed).permutation(n)[:n_val].tolist())
        train_idx = sorted(set(range(n)) - set(val_idx))
        latent = self.latent_lam is not None
        init_config = None
        if self.init is not None:  # read once: its image size and latent tokens are this run's defaults
            from playworld.nn.pretrained import read_model_config
            from playworld.policy.vla import VLAConfig

            init_config = read_model_config(self.init, VLAConfig, kind="VLA")
        size = self.image_size or (init_config.image_size if init_config else 64 if self.backbone == "tiny" else 128)
        wrist = self.wrist_size or (init_config.wrist_size if init_config else 0)
        train_eps, tokenizer, state_stats = load_episodes(self.data, size, episodes=train_idx, actions=not latent,
                                                          wrist_size=wrist)
        val_eps = load_episodes(self.data, size, tokenizer, val_idx, actions=not latent,
                                wrist_size=wrist)[0] if val_idx else []
        overrides: dict[str, Any] = {"image_size": size, "use_state": self.state, "wrist_size": wrist}
        if self.state_fourier >= 0 or init_config is None:
            overrides["state_fourier"] = self.state_fourier if self.state_fourier >= 0 else 6
        if ds.frame_size[0] == ds.frame_size[1]:
            overrides["camera_size"] = int(ds.frame_size[0])
        if wrist:
            overrides["wrist_camera_size"] = int(load_lerobot(self.data, camera="wrist").frame_size[0])
        if self.prefix_lm or self.init is None:
            overrides["prefix_lm"] = self.prefix_lm
        overrides["plan_locate"] = self.plan_locate
        if self.plan_locate == "image" and self.backbone != "tiny" and self.init is None:
            overrides.update(vision_stride=16, image_grid=size // 16)  # one token (and cell word) per 16 px
        overrides["point_loss"] = self.point_loss
        overrides["cell_pointer"] = self.cell_pointer
        if self.vqa_lexicon or self.init is None:
            overrides["vqa_lexicon"] = self.vqa_lexicon
        if self.vqa_refer or self.init is None:
            overrides["vqa_refer"] = self.vqa_refer
        overrides["vqa_scenes"] = self.vqa_scenes
        if self.init is None:
            overrides["action_slots"] = self.action_slots
        scenes: list[Episode] = []
        if self.vqa_scenes:
            from playworld.envs.tabletop.tasks import web_scene_specs

            wrist_camera = overrides.get("wrist_camera_size", 0)
            scenes = scenes_from_file_or_render(
                web_scene_specs(self.vqa_scenes, self.train.seed), int(ds.frame_size[0]), size, wrist_camera, wrist,
                self.vqa_scenes_file, progress=self.train.progress,
            )
        if self.backbone == "tiny" and (self.tiny_vision or self.init is None):
            overrides["tiny_vision"] = self.tiny_vision or "conv"
        if self.backbone == "tiny" and (self.tiny_patch or self.init is None):
            overrides["tiny_patch"] = self.tiny_patch or (16 if self.tiny_vision == "efficientnet" else 8)
        if tokenizer is not None:
            overrides["action_tokenizer"] = tokenizer.to_dict()
        if self.state:
            if not state_stats or "q01" not in state_stats:
                raise PlayworldError(f"{self.data} has no observation.state statistics; train with --no-state.")
            overrides.update(state_q01=tuple(state_stats["q01"]), state_q99=tuple(state_stats["q99"]))
        if latent:
            expect = self.num_latent_actions or (init_config.num_latent_actions if init_config else 0)
            labels = self._latent_labels(train_eps, train_idx, val_eps, val_idx, expect or None)
            overrides.update(num_latent_actions=labels["num_latent_actions"], latent_action_len=self.latent_horizon)
        if self.init is not None:
            from playworld.policy.lapa import init_from_checkpoint

            model = init_from_checkpoint(self.init, self.backbone, train_eps + val_eps + scenes, overrides, self.plan)
        else:
            if self.backbone != "tiny":
                overrides.update(lora_rank=0 if self.from_scratch else self.lora_rank,
                                 pretrained_weights=not self.from_scratch)
            model = build_model(self.backbone, train_eps + val_eps + scenes, tokenizer, self.plan, **overrides)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log.info(
            "VLA %s: %.1fM parameters (%.2fM trained), %d prefix tokens, %d train / %d val episodes, robot fraction %.2f",
            self.backbone, model.num_parameters() / 1e6, trainable / 1e6, model.num_prefix_tokens,
            len(train_eps), len(val_eps), self.robot_fraction,
        )
        target = "latent" if latent else "action"
        train = VLADataset(model, train_eps, self.robot_fraction, self.plan, seed=self.train.seed, target=target,
                           vqa_scenes=scenes, instruction_noise=self.instruction_noise)
        if latent:
            from playworld.policy.lapa import check_enough_latent_examples

            check_enough_latent_examples(train.n_robot, self.latent_horizon, self.data)
        val = VLADataset(model, val_eps, self.robot_fraction, self.plan, seed=self.train.seed + 1, target=target) if val_eps else None
        trainer = Trainer(
            model, self.train, self.out, train,
            batch_fn=lambda b: (b["image"], b["input_ids"], b["labels"], b["state"] if self.state else None,
                                b.get("wrist")),
            val_data=val, name="vla",
        )
        out = trainer.fit(resume=self.resume)
        write_training_episodes(out, self.data, train_eps)
        if latent:
            log.info("LAPA-pretrained VLA in %s; fine-tune it on labelled episodes: playworld train vla --data DATA "
                     "--episodes M --init %s --out OUT", out, out)
            return out
        tokenizer.save(out / ACTION_TOKENIZER_NAME)
        log.info("trained VLA in %s; evaluate it: playworld eval vla --policy %s --suite seen", out, out)
        return out

    def _latent_labels(self, train_eps: list[Episode], train_idx: list[int], val_eps: list[Episode],
                       val_idx: list[int], expect: int | None) -> dict[str, Any]:
        """Label every transition of the loaded episodes with the LAM (saved to OUT/latent_labels.*).

        ``expect``: the codebook size the LAM must have (--num-latent-actions, or the latent tokens of
        the --init checkpoint when continuing LAPA pretraining); None = take the LAM's."""
        from playworld.policy.lapa import attach_latent_labels, label_episodes, shuffle_latent_labels
        from playworld.utils import atomic_write_json

        labels, summary = label_episodes(self.latent_lam, self.data, train_idx + val_idx, self.latent_clip_len, expect,
                                        self.latent_camera)
        if self.latent_shuffle:
            labels = shuffle_latent_labels(labels, self.train.seed)
            summary["shuffled"] = True
            if "nmi_latent_motion" in summary:  # the LAM's codes', not the shuffled labels'
                summary["lam_nmi_latent_motion"] = summary.pop("nmi_latent_motion")
            log.info("--latent-shuffle: the latent codes are permuted across all transitions (the control)")
        attach_latent_labels(train_eps, labels, train_idx)
        attach_latent_labels(val_eps, labels, val_idx)
        self.out.mkdir(parents=True, exist_ok=True)
        eps = sorted(labels)
        np.savez(self.out / "latent_labels.npz", episode=np.concatenate([np.full(len(labels[e]), e) for e in eps]),
                 t=np.concatenate([np.arange(len(labels[e])) for e in eps]),
                 latent=np.concatenate([labels[e] for e in eps]))
        atomic_write_json(self.out / "latent_labels.json", {**summary, "latent_horizon": self.latent_horizon,
                                                            "clip_len": self.latent_clip_len})
        log.info("latent labels: %s", {k: v for k, v in summary.items() if k != "lam"})
        return summary


def train_vla(data: Path, out: Path, **kwargs: Any) -> Path:
    """Python entry point: ``train_vla(data, out, backbone="tiny", train=TrainConfig(...))``."""
    fields = {f.name for f in dataclasses.fields(TrainVLA)}
    unknown = set(kwargs) - fields
    if unknown:
        raise PlayworldError(f"unknown train_vla argument(s) {sorted(unknown)}; valid: {sorted(fields)}.")
    return TrainVLA(data=Path(data), out=Path(out), **kwargs).run()
