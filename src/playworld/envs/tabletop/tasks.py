"""Task families, instruction templates and the generalisation suites of the tabletop.

An episode is fully described by an :class:`EpisodeSpec`: the objects (shape, colour, pose),
the tray and glyph markers, the goal (what must be true in the simulator for success) and the
instruction that asks for it. A :class:`Suite` turns an integer seed into an ``EpisodeSpec``,
so ``suite.episodes(50, seed=0)`` is a fixed, reproducible list of episodes.

Task families (the goal kind each one checks in brackets):

- ``pick``          pick up X                          [lift: X held 5 cm above the table]
- ``push``          push/move X to a side or corner    [region: X rests inside a table region]
- ``put_in_tray``   put X in the tray                  [tray: X rests inside the tray]
- ``put_next_to``   put X next to Y                    [next_to: X rests on the table beside Y]
- ``stack``         stack X on Y                       [stack: X rests on top of Y]
- ``put_on_symbol`` put X on the glyph marker "3"      [marker: X rests on the marker]

Suites (see docs/tabletop.md): ``seen`` (the training distribution), ``unseen-objects``,
``unseen-instructions``, ``symbols``, ``reasoning``. Only ``seen`` is meant for training;
the others hold something out that a policy must generalise to, as in RT-2's evaluations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from playworld.envs.tabletop.scene import COLORS, MARKER_HALF, SHAPES, TRAY_INNER_HALF, TRAY_WALL
from playworld.errors import PlayworldError

FAMILIES = ("pick", "push", "put_in_tray", "put_next_to", "stack", "put_on_symbol")
GOAL_KIND = {
    "pick": "lift",
    "push": "region",
    "put_in_tray": "tray",
    "put_next_to": "next_to",
    "stack": "stack",
    "put_on_symbol": "marker",
}

#: Where objects are spawned (x range, y range), metres in the robot's frame.
SPAWN_X = (0.36, 0.62)
SPAWN_Y = (-0.21, 0.21)

#: Table regions for ``push``: name -> (x_min, x_max, y_min, y_max). Left is +y (robot's left).
REGIONS: dict[str, tuple[float, float, float, float]] = {
    "left side": (0.25, 0.75, 0.20, 0.40),
    "right side": (0.25, 0.75, -0.40, -0.20),
    "far side": (0.64, 0.80, -0.40, 0.40),
    "near side": (0.20, 0.34, -0.40, 0.40),
    "far left corner": (0.60, 0.80, 0.17, 0.40),
    "far right corner": (0.60, 0.80, -0.40, -0.17),
    "near left corner": (0.20, 0.38, 0.17, 0.40),
    "near right corner": (0.20, 0.38, -0.40, -0.17),
}

SEEN_COLORS = ("red", "green", "blue", "yellow", "purple", "orange")
SEEN_SHAPES = ("cube", "can", "ball", "plate")
#: (colour, shape) combinations never shown in ``seen``; the targets of ``unseen-objects``.
HELD_OUT = (
    ("green", "cube"),
    ("purple", "cube"),
    ("blue", "can"),
    ("orange", "can"),
    ("red", "ball"),
    ("yellow", "ball"),
)
SEEN_COMBOS = tuple((c, s) for s in SEEN_SHAPES for c in SEEN_COLORS if (c, s) not in HELD_OUT)
#: Distractors that exist only in ``unseen-objects``: new colours and a new shape.
NEW_DISTRACTORS = tuple((c, s) for c in ("pink", "cyan") for s in SEEN_SHAPES + ("bar",)) + tuple(
    (c, "bar") for c in SEEN_COLORS
)

#: Characters an instruction may contain (the env's Text observation space).
INSTRUCTION_CHARSET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,.'?!-"
INSTRUCTION_MAX_LEN = 160

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


# -- episode description -----------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectSpec:
    """One movable object."""

    shape: str
    color: str
    xy: tuple[float, float]
    yaw: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class TraySpec:
    color: str
    xy: tuple[float, float]


@dataclass(frozen=True)
class MarkerSpec:
    """A square sticker on the table with a digit or capital letter printed on it."""

    glyph: str
    xy: tuple[float, float]


@dataclass(frozen=True)
class Goal:
    """What must hold in the simulator for the episode to count as solved."""

    kind: str
    """One of ``lift, region, tray, next_to, stack, marker``."""
    target: int
    """Index of the object to move."""
    reference: int | None = None
    """Object index (``next_to``, ``stack``) or marker index (``marker``)."""
    region: str | None = None
    """A key of :data:`REGIONS` (``region``)."""


@dataclass(frozen=True)
class EpisodeSpec:
    """Everything needed to build and judge one episode."""

    suite: str
    family: str
    instruction: str
    objects: tuple[ObjectSpec, ...]
    goal: Goal
    tray: TraySpec | None = None
    markers: tuple[MarkerSpec, ...] = ()
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EpisodeSpec:
        return cls(
            suite=d["suite"],
            family=d["family"],
            instruction=d["instruction"],
            objects=tuple(
                ObjectSpec(o["shape"], o["color"], tuple(o["xy"]), o.get("yaw", 0.0)) for o in d["objects"]
            ),
            goal=Goal(**d["goal"]),
            tray=TraySpec(d["tray"]["color"], tuple(d["tray"]["xy"])) if d.get("tray") else None,
            markers=tuple(MarkerSpec(m["glyph"], tuple(m["xy"])) for m in d.get("markers", ())),
            seed=int(d.get("seed", 0)),
        )


# -- geometry helpers --------------------------------------------------------------------------


def region_goal_point(region: str, xy: Sequence[float]) -> tuple[float, float]:
    """Where to put an object starting at ``xy`` so it lands well inside ``region``."""
    x, y = float(xy[0]), float(xy[1])
    inside_x = float(np.clip(x, SPAWN_X[0], SPAWN_X[1]))
    inside_y = float(np.clip(y, SPAWN_Y[0] + 0.03, SPAWN_Y[1] - 0.03))
    points = {
        "left side": (inside_x, 0.27),
        "right side": (inside_x, -0.27),
        "far side": (0.69, inside_y),
        "near side": (0.285, inside_y),
        "far left corner": (0.67, 0.24),
        "far right corner": (0.67, -0.24),
        "near left corner": (0.31, 0.25),
        "near right corner": (0.31, -0.25),
    }
    return points[region]


def in_region(region: str, xy: Sequence[float], margin: float = 0.0) -> bool:
    x0, x1, y0, y1 = REGIONS[region]
    return x0 + margin <= xy[0] <= x1 - margin and y0 + margin <= xy[1] <= y1 - margin


def _footprint(shape: str) -> float:
    return SHAPES[shape].radius


TRAY_RADIUS = TRAY_INNER_HALF + TRAY_WALL + 0.01
MARKER_RADIUS = MARKER_HALF * math.sqrt(2)


def _seg_point_dist(a: np.ndarray, b: np.ndarray, p: np.ndarray) -> float:
    ab = b - a
    t = float(np.clip(np.dot(p - a, ab) / max(np.dot(ab, ab), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(a + t * ab - p))


@dataclass
class _Layout:
    """Rejection sampler for non-overlapping positions inside the spawn area."""

    rng: np.random.Generator
    circles: list[tuple[np.ndarray, float]] = field(default_factory=list)
    clearance: float = 0.045  # room for the open gripper's fingers between two objects

    def free(self, xy: np.ndarray, radius: float, clearance: float | None = None) -> bool:
        c = self.clearance if clearance is None else clearance
        return all(np.linalg.norm(xy - p) >= radius + r + c for p, r in self.circles)

    def place(
        self, radius: float, ok=None, clearance: float | None = None, tries: int = 300
    ) -> np.ndarray | None:
        for _ in range(tries):
            xy = np.array(
                [self.rng.uniform(SPAWN_X[0], SPAWN_X[1]), self.rng.uniform(SPAWN_Y[0], SPAWN_Y[1])]
            )
            if self.free(xy, radius, clearance) and (ok is None or ok(xy)):
                self.circles.append((xy, radius))
                return xy
        return None


# -- instructions ------------------------------------------------------------------------------

TRAIN_TEMPLATES = {
    "pick": ("pick up the {t}", "lift the {t}"),
    "push": ("push the {t} to the {region}", "move the {t} to the {region}"),
    "put_in_tray": ("put the {t} in the tray", "place the {t} in the tray"),
    "put_next_to": ("put the {t} next to the {r}", "place the {t} next to the {r}"),
    "stack": ("stack the {t} on the {r}", "put the {t} on top of the {r}"),
    "put_on_symbol": ("put the {t} on the {m}", "move the {t} to the {m}"),
}

#: Paraphrases for ``unseen-instructions``: no verb phrase here occurs in TRAIN_TEMPLATES.
PARAPHRASE_TEMPLATES = {
    "pick": ("grab the {t} and raise it", "take hold of the {t} and hold it up", "could you raise the {t}?"),
    "push": ("shove the {t} over to the {region}", "slide the {t} toward the {region}"),
    "put_in_tray": (
        "drop the {t} into the tray",
        "tidy the {t} away into the tray",
        "the {t} belongs in the tray",
    ),
    "put_next_to": ("set the {t} down beside the {r}", "bring the {t} over close to the {r}"),
    "stack": ("place the {t} onto the {r}", "balance the {t} on top of the {r}"),
}
COLOR_SYNONYMS = {
    "red": ("crimson", "scarlet"),
    "green": ("emerald", "lime"),
    "blue": ("azure", "navy"),
    "yellow": ("golden", "lemon"),
    "purple": ("violet", "lilac"),
    "orange": ("tangerine", "amber"),
}
SHAPE_SYNONYMS = {
    "cube": ("block", "box"),
    "can": ("cylinder", "tin"),
    "ball": ("sphere", "orb"),
    "plate": ("dish", "saucer"),
}
REGION_SYNONYMS = {
    "left side": ("left edge", "left-hand side"),
    "right side": ("right edge", "right-hand side"),
    "far side": ("back of the table", "edge away from you"),
    "near side": ("edge closest to you", "front of the table"),
    "far left corner": ("back left corner",),
    "far right corner": ("back right corner",),
    "near left corner": ("front left corner",),
    "near right corner": ("front right corner",),
}


def _marker_phrase(glyph: str) -> str:
    return f"number {glyph}" if glyph.isdigit() else f"letter {glyph}"


# -- suites ------------------------------------------------------------------------------------

SUITE_FAMILIES = {
    "seen": ("pick", "push", "put_in_tray", "put_next_to", "stack"),
    "unseen-objects": ("pick", "push", "put_in_tray", "put_next_to", "stack"),
    "unseen-instructions": ("pick", "push", "put_in_tray", "put_next_to", "stack"),
    "symbols": ("put_on_symbol",),
    "reasoning": ("pick", "put_in_tray", "put_on_symbol"),
}
SUITES = tuple(SUITE_FAMILIES)

SUITE_DESCRIPTIONS = {
    "seen": "the training distribution: seen colour/shape combinations, training phrasings",
    "unseen-objects": "held-out colour/shape combinations as targets, new distractor colours and shapes",
    "unseen-instructions": "paraphrases, colour/shape synonyms and spatial references never used in training",
    "symbols": "move objects onto digits/letters printed on the table",
    "reasoning": "indirect goals: same colour as the tray, arithmetic on zone numbers, the object that can roll",
}


class _Retry(Exception):
    """A layout that could not be completed; sample again with the next sub-seed."""


class Suite:
    """A named, seeded distribution of tabletop episodes."""

    def __init__(self, name: str, families: Sequence[str] | None = None):
        if name not in SUITE_FAMILIES:
            raise PlayworldError(f"unknown tabletop suite {name!r}; valid suites: {', '.join(SUITES)}.")
        allowed = SUITE_FAMILIES[name]
        families = tuple(families) if families else allowed
        bad = [f for f in families if f not in allowed]
        if bad:
            known = "" if all(f in FAMILIES for f in bad) else f" (task families: {', '.join(FAMILIES)})"
            raise PlayworldError(
                f"task {', '.join(map(repr, bad))} is not in suite {name!r}; its tasks are: {', '.join(allowed)}{known}."
            )
        self.name = name
        self.families = families

    def __repr__(self) -> str:
        return f"Suite({self.name!r}, families={self.families})"

    def episodes(self, n: int, seed: int = 0) -> list[EpisodeSpec]:
        """The first ``n`` episodes of this suite's list for ``seed`` (prefix-stable)."""
        return [self.sample(episode_seed(seed, i)) for i in range(n)]

    def sample(self, seed: int) -> EpisodeSpec:
        """The episode for an integer seed (deterministic)."""
        # The family is drawn apart from the layout, so families whose layouts are harder to
        # fit (and get retried) are not under-represented.
        family = _choice(np.random.default_rng([seed, 0xFA]), self.families)
        for attempt in range(100):
            rng = np.random.default_rng([seed, attempt])
            try:
                return _GENERATORS[self.name](rng, seed, family)
            except _Retry:
                continue
        raise RuntimeError(
            f"could not lay out an episode for suite {self.name} seed {seed}"
        )  # pragma: no cover


def episode_seed(seed: int, index: int) -> int:
    """The seed of episode ``index`` in the list for ``seed`` (a 31-bit hash of both)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0] >> 1)


def get_suite(name: str, families: Sequence[str] | None = None) -> Suite:
    """The suite called ``name`` (optionally restricted to some task families)."""
    return Suite(name, families)


# -- generators --------------------------------------------------------------------------------


def _choice(rng: np.random.Generator, seq: Sequence):
    return seq[int(rng.integers(len(seq)))]


def _eligible(family: str, role: str, shape: str) -> bool:
    """Can an object of ``shape`` play ``role`` ("target" or "reference") in ``family``?"""
    s = SHAPES[shape]
    if role == "reference":
        return s.supports if family == "stack" else True
    if family == "push":
        return s.pushable or s.graspable
    if family == "stack":
        return s.graspable and s.supports  # balls roll off whatever they are put on
    return s.graspable


def _layout_objects(
    rng: np.random.Generator,
    lay: _Layout,
    combos: list[tuple[str, str]],
    first_ok=None,
    essential: int = 2,
) -> list[ObjectSpec]:
    """Place ``combos`` in order; the first ``essential`` ones (target, reference) must fit."""
    objects = []
    for i, (color, shape) in enumerate(combos):
        xy = lay.place(_footprint(shape), ok=first_ok if i == 0 else None)
        if xy is None:
            if i < essential:
                raise _Retry
            continue  # drop a distractor that does not fit
        yaw = float(rng.uniform(-math.pi / 4, math.pi / 4)) if SHAPES[shape].kind == "box" else 0.0
        objects.append(
            ObjectSpec(shape, color, (round(float(xy[0]), 4), round(float(xy[1]), 4)), round(yaw, 4))
        )
    return objects


def _pick_combos(
    rng: np.random.Generator,
    family: str,
    target_pool,
    distractor_pool,
    n_distractors: int,
    reference_pool=None,
) -> list[tuple[str, str]]:
    """[target, (reference,) distractors...] as (colour, shape), all different combinations."""
    targets = [c for c in target_pool if _eligible(family, "target", c[1])]
    chosen = [_choice(rng, targets)]
    if family in ("put_next_to", "stack"):
        refs = [
            c
            for c in (reference_pool or distractor_pool)
            if _eligible(family, "reference", c[1]) and c not in chosen
        ]
        chosen.append(_choice(rng, refs))
    pool = [c for c in distractor_pool if c not in chosen]
    for j in rng.permutation(len(pool))[:n_distractors]:
        chosen.append(pool[int(j)])
    return chosen


def _standard_goal(family: str, region: str | None) -> Goal:
    """Target is object 0, reference (if any) object 1."""
    if family == "pick":
        return Goal("lift", 0)
    if family == "push":
        return Goal("region", 0, region=region)
    if family == "put_in_tray":
        return Goal("tray", 0)
    if family == "put_next_to":
        return Goal("next_to", 0, reference=1)
    if family == "stack":
        return Goal("stack", 0, reference=1)
    raise ValueError(family)


def _push_ok(region: str, lay: _Layout):
    """Target start: outside the region, with a clear straight path to its goal point."""

    def ok(xy: np.ndarray) -> bool:
        if in_region(region, xy, margin=-0.04):
            return False
        goal = np.array(region_goal_point(region, xy))
        # the pusher needs room behind the object, too
        start = xy - 0.07 * (goal - xy) / max(np.linalg.norm(goal - xy), 1e-9)
        return all(_seg_point_dist(start, goal, p) >= r + 0.04 for p, r in lay.circles)

    return ok


def _place_tray(rng: np.random.Generator, lay: _Layout, color: str) -> TraySpec:
    xy = lay.place(TRAY_RADIUS, clearance=0.05)
    if xy is None:
        raise _Retry
    return TraySpec(color, (round(float(xy[0]), 4), round(float(xy[1]), 4)))


def _standard(rng: np.random.Generator, family: str, target_pool, distractor_pool, reference_pool=None):
    """Layout + goal shared by seen / unseen-objects / unseen-instructions."""
    n_distractors = int(rng.integers(2, 4))
    combos = _pick_combos(rng, family, target_pool, distractor_pool, n_distractors, reference_pool)
    lay = _Layout(rng)
    tray = None
    if family == "put_in_tray" or rng.random() < 0.4:
        tray = _place_tray(rng, lay, _choice(rng, SEEN_COLORS))
    region = _choice(rng, tuple(REGIONS)) if family == "push" else None
    first_ok = _push_ok(region, lay) if family == "push" else None
    if family == "put_next_to":
        # start the target well away from the reference so the task is not already solved
        objects = _layout_objects(rng, lay, combos[:1])
        ref = lay.place(
            _footprint(combos[1][1]), ok=lambda xy: np.linalg.norm(xy - np.array(objects[0].xy)) > 0.2
        )
        if ref is None:
            raise _Retry
        objects.append(
            ObjectSpec(combos[1][1], combos[1][0], (round(float(ref[0]), 4), round(float(ref[1]), 4)))
        )
        objects += _layout_objects(rng, lay, combos[2:], essential=0)
    else:
        objects = _layout_objects(rng, lay, combos, first_ok)
    return objects, _standard_goal(family, region), tray


def _train_instruction(rng, family: str, objects: list[ObjectSpec], goal: Goal, markers=()) -> str:
    templates = TRAIN_TEMPLATES[family]
    if family == "push" and not SHAPES[objects[goal.target].shape].pushable:
        templates = templates[1:]  # "move", not "push": the expert carries it
    template = _choice(rng, templates)
    ref = objects[goal.reference].name if goal.kind in ("next_to", "stack") else ""
    mark = _marker_phrase(markers[goal.reference].glyph) if goal.kind == "marker" else ""
    return template.format(t=objects[goal.target].name, r=ref, region=goal.region or "", m=mark)


def _gen_seen(rng: np.random.Generator, seed: int, family: str) -> EpisodeSpec:
    objects, goal, tray = _standard(rng, family, SEEN_COMBOS, SEEN_COMBOS)
    instruction = _train_instruction(rng, family, objects, goal)
    return EpisodeSpec("seen", family, instruction, tuple(objects), goal, tray, (), seed)


def _gen_unseen_objects(rng: np.random.Generator, seed: int, family: str) -> EpisodeSpec:
    distractors = list(SEEN_COMBOS + HELD_OUT + NEW_DISTRACTORS)
    # the reference of next_to / stack is held out half of the time, too
    reference_pool = list(HELD_OUT) if rng.random() < 0.5 else list(SEEN_COMBOS)
    objects, goal, tray = _standard(rng, family, HELD_OUT, distractors, reference_pool)
    instruction = _train_instruction(rng, family, objects, goal)
    return EpisodeSpec("unseen-objects", family, instruction, tuple(objects), goal, tray, (), seed)


#: The unseen-instructions suite's spatial references: (phrase, key); the object with the largest
#: key among those of its shape is the one the phrase means ("the leftmost block"). "You" is the robot.
SPATIAL_REFERENCES = (
    ("{n} furthest from you", lambda o: o.xy[0]),
    ("{n} closest to you", lambda o: -o.xy[0]),
    ("leftmost {n}", lambda o: o.xy[1]),
    ("rightmost {n}", lambda o: -o.xy[1]),
)
#: A spatial reference needs its object to be the extreme of its shape by this margin (metres).
REFERENCE_MARGIN = 0.06


def _spatial_reference(rng, objects: list[ObjectSpec], target: int) -> str | None:
    """'cube furthest from you' (as in "the cube furthest from you") when the target is the
    unique extreme of its shape, by a clear margin."""
    shape = objects[target].shape
    same = [i for i, o in enumerate(objects) if o.shape == shape]
    if len(same) < 2:
        return None
    noun = _choice(rng, (shape,) + SHAPE_SYNONYMS.get(shape, ()))
    options = []
    for phrase, key in SPATIAL_REFERENCES:
        vals = sorted((key(objects[i]), i) for i in same)
        if vals[-1][1] == target and vals[-1][0] - vals[-2][0] > REFERENCE_MARGIN:
            options.append(phrase.format(n=noun))
    return _choice(rng, options) if options else None


def _gen_unseen_instructions(rng: np.random.Generator, seed: int, family: str) -> EpisodeSpec:
    use_spatial = family in ("pick", "push", "put_in_tray") and rng.random() < 0.4
    if use_spatial:
        # a second object of the target's shape makes "the cube closest to you" meaningful
        shape_rng = np.random.default_rng([seed, 7])
        for _ in range(20):
            objects, goal, tray = _standard(rng, family, SEEN_COMBOS, SEEN_COMBOS)
            shape = objects[0].shape
            twins = [
                c
                for c in SEEN_COMBOS
                if c[1] == shape
                and c[0] != objects[0].color
                and all(o.color != c[0] or o.shape != shape for o in objects)
            ]
            lay = _Layout(shape_rng)
            lay.circles = [(np.array(o.xy), _footprint(o.shape)) for o in objects]
            if tray is not None:
                lay.circles.append((np.array(tray.xy), TRAY_RADIUS))
            if twins:
                color, _ = _choice(rng, twins)
                xy = lay.place(_footprint(shape))
                if xy is not None:
                    objects.append(ObjectSpec(shape, color, (round(float(xy[0]), 4), round(float(xy[1]), 4))))
            desc = _spatial_reference(rng, objects, 0)
            if desc is not None:
                break
        else:
            raise _Retry
    else:
        objects, goal, tray = _standard(rng, family, SEEN_COMBOS, SEEN_COMBOS)

    def describe(o: ObjectSpec) -> str:
        return f"{_choice(rng, COLOR_SYNONYMS[o.color])} {_choice(rng, SHAPE_SYNONYMS[o.shape])}"

    t = desc if use_spatial else describe(objects[0])
    r = describe(objects[goal.reference]) if goal.reference is not None else ""
    region = _choice(rng, REGION_SYNONYMS[goal.region]) if goal.region else ""
    instruction = _choice(rng, PARAPHRASE_TEMPLATES[family]).format(t=t, r=r, region=region)
    if instruction.startswith("the "):
        instruction = instruction[0].upper() + instruction[1:]
    return EpisodeSpec("unseen-instructions", family, instruction, tuple(objects), goal, tray, (), seed)


def _place_markers(rng, lay: _Layout, glyphs: Sequence[str]) -> tuple[MarkerSpec, ...]:
    markers = []
    for g in glyphs:
        xy = lay.place(MARKER_RADIUS, clearance=0.03)
        if xy is None:
            raise _Retry
        markers.append(MarkerSpec(g, (round(float(xy[0]), 4), round(float(xy[1]), 4))))
    return tuple(markers)


def _symbol_scene(rng, glyphs: Sequence[str], n_distractors: int, target_pool=SEEN_COMBOS, tray_color=None):
    """Markers first (they need the most room), then a graspable target and distractors."""
    lay = _Layout(rng)
    tray = _place_tray(rng, lay, tray_color) if tray_color else None
    markers = _place_markers(rng, lay, glyphs)
    combos = _pick_combos(rng, "put_on_symbol", target_pool, SEEN_COMBOS, n_distractors)
    objects = _layout_objects(rng, lay, combos)
    return objects, markers, tray


def _gen_symbols(rng: np.random.Generator, seed: int, family: str) -> EpisodeSpec:
    pool = list("123456789") if rng.random() < 0.5 else list("ABCDEFGHJKLMNPRSTUVXYZ")
    glyphs = [pool[int(i)] for i in rng.permutation(len(pool))[: int(rng.integers(3, 5))]]
    objects, markers, _ = _symbol_scene(rng, glyphs, int(rng.integers(1, 3)))
    goal = Goal("marker", 0, reference=int(rng.integers(len(markers))))
    instruction = _train_instruction(rng, "put_on_symbol", objects, goal, markers)
    return EpisodeSpec("symbols", "put_on_symbol", instruction, tuple(objects), goal, None, markers, seed)


def _gen_reasoning(rng: np.random.Generator, seed: int, family: str) -> EpisodeSpec:
    if family == "put_on_symbol":
        return _reasoning_symbol(rng, seed)
    if family == "pick":
        # "the block that is the same colour as the tray": exactly one object has that colour
        combos = _pick_combos(rng, "pick", SEEN_COMBOS, SEEN_COMBOS, 3)
        target_color = combos[0][0]
        combos = combos[:1] + [c for c in combos[1:] if c[0] != target_color]
        lay = _Layout(rng)
        tray = _place_tray(rng, lay, target_color)
        objects = _layout_objects(rng, lay, combos)
        noun = "block" if objects[0].shape == "cube" else "object"
        instruction = _choice(
            rng,
            (
                f"pick up the {noun} that is the same colour as the tray",
                f"lift the {noun} whose colour matches the tray",
            ),
        )
        return EpisodeSpec("reasoning", "pick", instruction, tuple(objects), Goal("lift", 0), tray, (), seed)
    # put_in_tray: "the object that can roll" is the only ball on the table
    balls = [c for c in SEEN_COMBOS if c[1] == "ball"]
    others = [c for c in SEEN_COMBOS if c[1] != "ball"]
    combos = [_choice(rng, balls)] + [
        others[int(i)] for i in rng.permutation(len(others))[: int(rng.integers(2, 4))]
    ]
    lay = _Layout(rng)
    tray = _place_tray(rng, lay, _choice(rng, SEEN_COLORS))
    objects = _layout_objects(rng, lay, combos)
    instruction = _choice(
        rng,
        ("put the object that can roll in the tray", "place the thing that would roll away into the tray"),
    )
    return EpisodeSpec(
        "reasoning", "put_in_tray", instruction, tuple(objects), Goal("tray", 0), tray, (), seed
    )


def _reasoning_symbol(rng: np.random.Generator, seed: int) -> EpisodeSpec:
    if rng.random() < 0.7:
        answer = int(rng.integers(1, 10))
        op = _choice(rng, ("plus", "minus", "times"))
        if op == "plus":
            a = int(rng.integers(0, answer + 1))
            b = answer - a
        elif op == "minus":
            b = int(rng.integers(0, 10 - answer))
            a = answer + b
        else:
            pairs = [(a, answer // a) for a in range(1, 10) if answer % a == 0]
            a, b = _choice(rng, pairs)
        others = [str(d) for d in range(1, 10) if d != answer]
        glyphs = [str(answer)] + [
            others[int(i)] for i in rng.permutation(len(others))[: int(rng.integers(2, 4))]
        ]
        zone = f"the zone numbered {NUMBER_WORDS[a]} {op} {NUMBER_WORDS[b]}"
    else:
        letters = "ABCDEFGHJKLMNPRSTUVWXY"
        k = int(rng.integers(0, len(letters) - 1))
        before, answer_glyph = letters[k], letters[k + 1]
        others = [c for c in letters if c not in (before, answer_glyph)]
        # the letter before is on the table too, so reading the glyph alone is not enough
        glyphs = [answer_glyph, before] + [
            others[int(i)] for i in rng.permutation(len(others))[: int(rng.integers(1, 3))]
        ]
        zone = f"the letter that comes after {before}"
    order = rng.permutation(len(glyphs))
    shuffled = [glyphs[int(i)] for i in order]
    objects, markers, _ = _symbol_scene(rng, shuffled, int(rng.integers(1, 3)))
    goal = Goal("marker", 0, reference=int(np.argmax(order == 0)))
    verb = _choice(rng, ("move the {t} to {z}", "put the {t} on {z}"))
    instruction = verb.format(t=objects[0].name, z=zone)
    return EpisodeSpec("reasoning", "put_on_symbol", instruction, tuple(objects), goal, None, markers, seed)


#: Every colour/shape combination the suites can show: the pool of :func:`web_scene_specs`.
ALL_COMBOS = SEEN_COMBOS + HELD_OUT + NEW_DISTRACTORS


def web_scene_specs(n: int, seed: int = 0) -> list[EpisodeSpec]:
    """``n`` scenes for vision-language data only, never for robot demonstrations or
    evaluation: 3-4 objects drawn from every colour and shape the simulator shows
    (:data:`ALL_COMBOS`: the held-out combinations and new distractors too), 40% with a tray.
    They stand in for RT-2's web images, which show far more objects than its robot data
    (``playworld train vla --vqa-scenes``). Suite name "web"; the instruction is a plain "pick
    up the ..." for the first object (never executed). Seeds are salted apart from the suites'."""
    out = []
    for i in range(n):
        sub = episode_seed(seed + 0x57EB, i)
        for attempt in range(100):
            rng = np.random.default_rng([sub, attempt])
            try:
                objects, goal, tray = _standard(rng, "pick", ALL_COMBOS, ALL_COMBOS)
            except _Retry:
                continue
            out.append(EpisodeSpec("web", "pick", f"pick up the {objects[0].name}", tuple(objects), goal, tray, (), sub))
            break
        else:  # pragma: no cover
            raise RuntimeError(f"could not lay out web scene {i} for seed {seed}")
    return out


_GENERATORS = {
    "seen": _gen_seen,
    "unseen-objects": _gen_unseen_objects,
    "unseen-instructions": _gen_unseen_instructions,
    "symbols": _gen_symbols,
    "reasoning": _gen_reasoning,
}

assert set(COLORS) >= set(SEEN_COLORS)
