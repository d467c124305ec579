"""Vision-language questions about tabletop scenes, answered from the simulator's state.

RT-2 co-fine-tunes on robot demonstrations *and* web vision-language data, so the model keeps
its ability to look and answer. Our "web data" is generated: every question below is asked
about a real camera frame and answered from the simulator's ground truth (object colours,
shapes and positions, the tray, the glyph markers), e.g.

    what colour is the cube left of the tray?          -> red
    how many balls are there?                           -> 2
    is the blue can left or right of the green plate?   -> left
    where is the green cube?                            -> x 7 y 12
    what is the plan to put the object that can roll in the tray?
                                                        -> pick up the red ball, then put it in the tray

"Where" answers give the object's cell on a 2 cm grid over the area objects spawn in (``x``
counted from the side nearest the robot, ``y`` from the robot's right), in the robot's own
frame, the frame of its state and actions: the grounding RT-2's web data (referring
expressions, detection) gave PaLI-X and PaLM-E, in the form our actions need.

Plans follow the scripted expert's task decomposition (pick, then place; or push) and name the
object the instruction means, so they also teach the chain-of-thought variant (``--plan``).

"Left" is the robot's left (+y), which is the image's left; "closest to the robot" is the
smallest x. Position questions need positions that match the image: a :class:`Scene` built
from an episode spec is exact for the episode's first frame; :func:`scene_from_env` reads the
simulator now.

The lexicon (``lexicon=True``, ``--vqa-lexicon``) widens the "web data" the way real web text is
wider than robot data: it names objects with colour and shape synonyms the robot
demonstrations never use ("which object is the scarlet box?" -> red cube), so that words known
only from vision-language data can reach the actions (RT-2's transfer, in miniature). The verb
paraphrases of the ``unseen-instructions`` suite and its spatial references ("the leftmost
block", "the cube closest to you") are in no training text (single words such as "closest" are).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from playworld.envs.tabletop.scene import SHAPES
from playworld.envs.tabletop.tasks import (
    COLOR_SYNONYMS,
    NUMBER_WORDS,
    REFERENCE_MARGIN,
    SHAPE_SYNONYMS,
    SPATIAL_REFERENCES,
    SPAWN_X,
    SPAWN_Y,
    TRAIN_TEMPLATES,
    EpisodeSpec,
)

#: Objects closer than this (metres) along an axis are not called left/right of each other.
SIDE_MARGIN = 0.04
#: Cell size (metres) of the grid "where is ...?" answers use.
LOCATE_CELL = 0.02


def locate_answer(xy: tuple[float, float]) -> str:
    """The answer to "where is <object>?": its 2 cm cell, "x <i> y <j>", from the spawn area's
    corner nearest the robot and to its right (x 0.36 m, y -0.21 m): i in 0..13, j in 0..21."""
    i = int(np.clip(round((xy[0] - SPAWN_X[0]) / LOCATE_CELL), 0, round((SPAWN_X[1] - SPAWN_X[0]) / LOCATE_CELL)))
    j = int(np.clip(round((xy[1] - SPAWN_Y[0]) / LOCATE_CELL), 0, round((SPAWN_Y[1] - SPAWN_Y[0]) / LOCATE_CELL)))
    return f"x {i} y {j}"


@dataclass(frozen=True)
class SceneObject:
    color: str
    shape: str
    xy: tuple[float, float]

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """What is on the table: objects, an optional tray (colour, xy) and glyph markers (glyph, xy)."""

    objects: tuple[SceneObject, ...]
    tray: tuple[str, tuple[float, float]] | None = None
    markers: tuple[tuple[str, tuple[float, float]], ...] = ()


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    kind: str


def scene_from_spec(spec: EpisodeSpec | dict) -> Scene:
    """The scene at the start of an episode (exact for its first frame)."""
    if isinstance(spec, dict):
        spec = EpisodeSpec.from_dict(spec)
    objects = tuple(SceneObject(o.color, o.shape, tuple(o.xy)) for o in spec.objects)
    tray = (spec.tray.color, tuple(spec.tray.xy)) if spec.tray else None
    return Scene(objects, tray, tuple((m.glyph, tuple(m.xy)) for m in spec.markers))


def scene_from_env(env) -> Scene:
    """The scene as the simulator has it now (objects may have moved since reset)."""
    base = env.unwrapped if hasattr(env, "unwrapped") else env
    ep = base.episode
    objects = tuple(
        SceneObject(o.color, o.shape, tuple(float(v) for v in base.object_pose(i)[0][:2]))
        for i, o in enumerate(ep.objects)
    )
    tray = (ep.tray.color, tuple(ep.tray.xy)) if ep.tray else None
    return Scene(objects, tray, tuple((m.glyph, tuple(m.xy)) for m in ep.markers))


# -- plans (the expert's task decomposition, in words) ------------------------------------------


def _marker_words(glyph: str) -> str:
    return f"the number {glyph}" if glyph.isdigit() else f"the letter {glyph}"


#: How a plan may say where things are (``VLAConfig.plan_locate``): not at all, as a 2 cm cell
#: of the table in the robot's frame ("x 7 y 12"), or as the fixed camera's image token ("cellcf").
PLAN_LOCATE = ("", "table", "image")
#: Row and column letters of image cells: "cellcf" is row c (3rd from the top), column f.
CELL_LETTERS = "abcdefghijklmnop"


def image_cell_word(row: int, col: int) -> str:
    """One word for the image token at (row, col) of the fixed camera's token grid ("cellcf")."""
    return f"cell{CELL_LETTERS[row]}{CELL_LETTERS[col]}"


def image_cell(xy: tuple[float, float], z: float, grid: int) -> tuple[int, int]:
    """(row, col) of the token, on a ``grid`` x ``grid`` token grid of the fixed camera's image,
    that shows the point (x, y, z) of the table."""
    from playworld.envs.tabletop.scene import Camera, project

    u, v = project(Camera(), (xy[0], xy[1], z))
    return int(np.clip(v * grid, 0, grid - 1)), int(np.clip(u * grid, 0, grid - 1))


def cell_word_of(xy: tuple[float, float], shape: str | None, grid: int) -> str:
    """The cell word of the image token that shows a ``shape`` object (its middle height) or, with
    ``shape`` None, a point on the table at ``xy``, on a ``grid`` x ``grid`` token grid."""
    return image_cell_word(*image_cell(xy, SHAPES[shape].half_height if shape else 0.0, grid))


def plan_text(spec: EpisodeSpec | dict, locate: str = "", grid: int = 8) -> str:
    """The plan the scripted expert follows, naming objects plainly: "pick up the red cube, then
    put it in the tray" (RT-2's chain of thought: "Plan: pick rxbar chocolate").

    ``locate`` (:data:`PLAN_LOCATE`): every object, tray and marker the plan names is followed by
    where it stands at the episode's start (a grounded chain of thought, as in ECoT's embodied
    reasoning: the model first says where the named object is, then acts on what it said):

    - ``"table"``: as a "where is ...?" answer, "pick up the red cube at x 7 y 12, then put it
      in the tray at x 3 y 15";
    - ``"image"``: as the word of the image token showing it on a ``grid`` x ``grid`` token grid
      of the fixed camera, "pick up the red cube at cellcf" (the tiny VLA ties these words'
      embeddings to its image tokens' positions, so saying where is pointing; docs/vla.md)."""
    if locate not in PLAN_LOCATE:
        raise ValueError(f"locate must be one of {PLAN_LOCATE}, got {locate!r}")
    if isinstance(spec, dict):
        spec = EpisodeSpec.from_dict(spec)

    def at(xy, shape: str | None = None) -> str:
        if locate == "table":
            return f" at {locate_answer(xy)}"
        if locate == "image":
            return f" at {cell_word_of(xy, shape, grid)}"
        return ""

    g = spec.goal
    target = spec.objects[g.target]
    pick = f"pick up the {target.name}{at(target.xy, target.shape)}"
    if g.kind == "lift":
        return pick
    if g.kind == "region":
        if SHAPES[target.shape].pushable:
            return f"push the {target.name}{at(target.xy, target.shape)} to the {g.region}"
        return f"{pick}, then put it on the {g.region}"
    if g.kind == "tray":
        return f"{pick}, then put it in the tray{at(spec.tray.xy) if spec.tray else ''}"
    if g.kind in ("next_to", "stack"):
        ref = spec.objects[g.reference]
        where = "next to" if g.kind == "next_to" else "on"
        return f"{pick}, then put it {where} the {ref.name}{at(ref.xy, ref.shape)}"
    if g.kind == "marker":
        marker = spec.markers[g.reference]
        return f"{pick}, then put it on {_marker_words(marker.glyph)}{at(marker.xy)}"
    raise ValueError(f"unknown goal kind {g.kind!r}")


_LOCATE = re.compile(r"\bx (\d+) y (\d+)\b")
_IMAGE_CELL = re.compile(rf"\bcell([{CELL_LETTERS}])([{CELL_LETTERS}])\b")


def located_points(text: str, grid: int = 8, z: float = 0.02) -> list[tuple[float, float]]:
    """The table positions (m, robot frame) that the places in ``text`` stand for, in order: the
    centres of "x <i> y <j>" cells (:func:`locate_answer`; "pick up the red cube at x 7 y 12" ->
    [(0.50, 0.03)]) and of image cells ("cellcf" on a ``grid`` x ``grid`` token grid, where its
    centre's line of sight meets the plane at height ``z``)."""
    from playworld.envs.tabletop.scene import Camera, unproject

    points = []
    for m in re.finditer(f"{_LOCATE.pattern}|{_IMAGE_CELL.pattern}", text):  # in the order they come
        if m.group(1) is not None:
            points.append((SPAWN_X[0] + int(m.group(1)) * LOCATE_CELL, SPAWN_Y[0] + int(m.group(2)) * LOCATE_CELL))
        else:
            row, col = CELL_LETTERS.index(m.group(3)), CELL_LETTERS.index(m.group(4))
            x, y = unproject(Camera(), ((col + 0.5) / grid, (row + 0.5) / grid), z)
            points.append((float(x), float(y)))
    return points


def strip_instruction(instruction: str) -> str:
    """An instruction as it sits inside a question: no trailing punctuation, no outer spaces."""
    return instruction.strip().rstrip("?.! ").strip()


def plan_question(spec: EpisodeSpec | dict) -> QA:
    if isinstance(spec, dict):
        spec = EpisodeSpec.from_dict(spec)
    return QA(f"what is the plan to {strip_instruction(spec.instruction)}?", plan_text(spec), "plan")


# -- questions about a scene ---------------------------------------------------------------------


def _plural(shape: str) -> str:
    return shape + "s"


#: Another phrasing of each of the suite's spatial references (:data:`tasks.SPATIAL_REFERENCES`).
_OTHER_PHRASING = {
    "{n} furthest from you": "{n} furthest from the robot",
    "{n} closest to you": "{n} closest to the robot",
    "leftmost {n}": "{n} on the far left",
    "rightmost {n}": "{n} on the far right",
}
#: Spatial referring expressions of ``refer=True``: the suite's own, each followed by another
#: phrasing of it, as (phrase, key).
REFER_PHRASES = tuple(
    pair for phrase, key in SPATIAL_REFERENCES for pair in ((phrase, key), (_OTHER_PHRASING[phrase], key))
)


def spatial_references(scene: Scene) -> list[tuple[str, SceneObject]]:
    """("leftmost block", red cube), ...: every spatial referring expression that means exactly one
    object of the scene: the extreme of its shape along a direction (:data:`REFER_PHRASES`), by
    :data:`tasks.REFERENCE_MARGIN`, named by its shape or a shape synonym."""
    out = []
    for shape in sorted({o.shape for o in scene.objects}):
        same = [o for o in scene.objects if o.shape == shape]
        if len(same) < 2:
            continue
        for phrase, key in REFER_PHRASES:
            ranked = sorted(same, key=key)
            if key(ranked[-1]) - key(ranked[-2]) > REFERENCE_MARGIN:
                out += [(phrase.format(n=n), ranked[-1]) for n in (shape, *SHAPE_SYNONYMS.get(shape, ()))]
    return out


def synonym_references(scene: Scene) -> list[tuple[str, SceneObject]]:
    """("crimson block", red cube), ...: every object whose name is unique in the scene, named with
    colour and shape synonyms (the lexicon's names)."""
    out = []
    for o in scene.objects:
        if sum(p.name == o.name for p in scene.objects) != 1:
            continue
        for color in (o.color, *COLOR_SYNONYMS.get(o.color, ())):
            for shape in (o.shape, *SHAPE_SYNONYMS.get(o.shape, ())):
                if (color, shape) != (o.color, o.shape):
                    out.append((f"{color} {shape}", o))
    return out


def _refer_plans(scene: Scene, refs: list[tuple[str, SceneObject]]) -> list[QA]:
    """"what is the plan to pick up the leftmost block?" -> "pick up the red cube": the robot data's
    own phrasings (:data:`tasks.TRAIN_TEMPLATES`), about graspable objects named by reference."""
    out = []
    for expr, o in refs:
        if not SHAPES[o.shape].graspable:
            continue
        for verb in TRAIN_TEMPLATES["pick"]:
            out.append(QA(f"what is the plan to {verb.format(t=expr)}?", f"pick up the {o.name}", "refer_plan"))
        if scene.tray is not None:
            for verb in TRAIN_TEMPLATES["put_in_tray"]:
                out.append(QA(f"what is the plan to {verb.format(t=expr)}?",
                              f"pick up the {o.name}, then put it in the tray", "refer_plan"))
    return out


def scene_questions(scene: Scene, spatial: bool = True, lexicon: bool = False, grid: int = 0,
                    refer: bool = False) -> dict[str, list[QA]]:
    """Every question this scene answers unambiguously, grouped by kind.

    ``spatial=False`` leaves out questions about where objects are (for frames in which objects
    may have moved since the scene was read). ``lexicon=True`` adds the kind "lexicon": which
    object a name made of colour/shape synonyms means ("which object is the crimson block?" ->
    red cube), for every object whose name is unique in the scene. ``grid`` > 0 adds the kind
    "point" (with ``spatial``): which image token of a ``grid`` x ``grid`` token grid of the fixed
    camera shows each uniquely named object ("which image cell shows the red cube?" -> cellcf),
    the question a ``plan_locate="image"`` model's plans answer. ``refer=True`` adds referring
    expressions: the kind "refer" (with ``spatial``), which object a spatial reference means
    ("which object is the leftmost block?" -> red cube; with ``grid``, also "which image cell shows
    the leftmost block?"), and the kind "refer_plan", plans for the robot data's own phrasings
    with the object named by a spatial reference or by synonyms ("what is the plan to pick up the
    crimson block?" -> "pick up the red cube")."""
    objs = scene.objects
    by_kind: dict[str, list[QA]] = {}

    def add(kind: str, q: str, a: str) -> None:
        by_kind.setdefault(kind, []).append(QA(q, a, kind))

    shapes = Counter(o.shape for o in objs)
    colors = Counter(o.color for o in objs)
    for o in objs:
        if shapes[o.shape] == 1:
            add("color", f"what colour is the {o.shape}?", o.color)
        if colors[o.color] == 1:
            add("shape", f"what shape is the {o.color} object?", o.shape)
    for shape in sorted(set(SHAPES) - {"bar"}):
        add("count", f"how many {_plural(shape)} are there?", str(shapes.get(shape, 0)))
    add("count", "how many objects are on the table?", str(len(objs)))
    present = {(o.color, o.shape) for o in objs}
    for o in objs:
        add("exists", f"is there a {o.name} on the table?", "yes")
    for color in sorted({o.color for o in objs}):
        for shape in sorted(shapes):
            if (color, shape) not in present:
                add("exists", f"is there a {color} {shape} on the table?", "no")
    if scene.tray is not None:
        add("tray", "what colour is the tray?", scene.tray[0])
    unique = [o for o in objs if sum(p.name == o.name for p in objs) == 1]  # "the <name>" means one object
    if lexicon:
        for expr, o in synonym_references(scene):
            add("lexicon", f"which object is the {expr}?", o.name)
    if scene.markers:
        glyphs = sorted(g for g, _ in scene.markers)
        add("symbols", "which symbols are on the table?", " ".join(glyphs).lower())
        add("count", "how many markers are on the table?", str(len(glyphs)))
    spatial_refs = spatial_references(scene) if refer and spatial else []
    if refer:
        for qa in _refer_plans(scene, synonym_references(scene) + spatial_refs):
            by_kind.setdefault(qa.kind, []).append(qa)
    if not spatial:
        return by_kind
    if refer:
        for expr, o in spatial_refs:
            add("refer", f"which object is the {expr}?", o.name)
            if grid:
                add("refer", f"which image cell shows the {expr}?", cell_word_of(o.xy, o.shape, grid))

    # where things are: left (+y) / right of the tray, of each other, closest to the robot
    if scene.tray is not None:
        ty = scene.tray[1][1]
        for side, sign in (("left", 1), ("right", -1)):
            for shape in sorted(shapes):
                on_side = [o for o in objs if o.shape == shape and sign * (o.xy[1] - ty) > SIDE_MARGIN]
                if len(on_side) == 1:
                    add("spatial", f"what colour is the {shape} {side} of the tray?", on_side[0].color)
    for o in unique:
        add("locate", f"where is the {o.name}?", locate_answer(o.xy))
        if grid:
            add("point", f"which image cell shows the {o.name}?", cell_word_of(o.xy, o.shape, grid))
    if scene.tray is not None:
        add("locate", "where is the tray?", locate_answer(scene.tray[1]))
    for a in unique:
        for b in unique:
            dy = a.xy[1] - b.xy[1]
            if a is not b and abs(dy) > SIDE_MARGIN:
                add("spatial", f"is the {a.name} left or right of the {b.name}?", "left" if dy > 0 else "right")
    if len(objs) >= 2:
        xs = sorted((o.xy[0], o.name) for o in objs)
        if xs[1][0] - xs[0][0] > SIDE_MARGIN and sum(o.name == xs[0][1] for o in objs) == 1:
            add("spatial", "which object is closest to the robot?", xs[0][1])
        if xs[-1][0] - xs[-2][0] > SIDE_MARGIN and sum(o.name == xs[-1][1] for o in objs) == 1:
            add("spatial", "which object is furthest from the robot?", xs[-1][1])
    if scene.markers:
        for o in unique:
            d = sorted((float(np.hypot(o.xy[0] - m[0], o.xy[1] - m[1])), g) for g, m in scene.markers)
            if len(d) == 1 or d[1][0] - d[0][0] > SIDE_MARGIN:
                add("spatial", f"which symbol is closest to the {o.name}?", d[0][1].lower())
    return by_kind


def sample_questions(scene: Scene, rng: np.random.Generator, n: int = 1, spatial: bool = True,
                     lexicon: bool = False, grid: int = 0, refer: bool = False) -> list[QA]:
    """``n`` questions (distinct when possible): a kind chosen uniformly, then a question of it,
    so frequent kinds (existence) do not crowd out rare ones (spatial)."""
    by_kind = scene_questions(scene, spatial, lexicon, grid, refer)
    kinds = sorted(by_kind)
    out: list[QA] = []
    for _ in range(max(n * 4, n)):
        kind = kinds[int(rng.integers(len(kinds)))]
        qa = by_kind[kind][int(rng.integers(len(by_kind[kind])))]
        if qa not in out:
            out.append(qa)
        if len(out) == n:
            break
    return out


def normalize_answer(text: str) -> str:
    """Lower-case words only, "the"/"a" dropped, number words as digits: "The Red cube." -> "red cube"."""
    words = re.findall(r"[a-z]+|\d+", text.lower())
    words = [str(NUMBER_WORDS.index(w)) if w in NUMBER_WORDS else w for w in words]
    return " ".join(w for w in words if w not in ("the", "a", "an"))


def answers_match(predicted: str, truth: str) -> bool:
    return normalize_answer(predicted) == normalize_answer(truth)


def tabletop_corpus(episodes_per_suite: int = 200, seed: int = 0) -> list[str]:
    """Every kind of text the VLA reads or writes on the tabletop, for all suites: prompts,
    instructions, questions, answers and plans (deterministic for a seed; no simulator needed)."""
    from playworld.envs.tabletop.tasks import SUITES, get_suite
    from playworld.policy.vla import robot_prompt, vqa_prompt

    texts = []
    for name in SUITES:
        for spec in get_suite(name).episodes(episodes_per_suite, seed=seed):
            texts += [robot_prompt(spec.instruction), f" Plan: {plan_text(spec)}. Action:"]
            for qas in scene_questions(scene_from_spec(spec)).values():
                texts += [vqa_prompt(qa.question) + " " + qa.answer for qa in qas]
            qa = plan_question(spec)
            texts.append(vqa_prompt(qa.question) + " " + qa.answer)
    return texts
