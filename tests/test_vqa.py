"""The generated vision-language questions (the co-fine-tuning stand-in for web data): answers
come from the scene's ground truth."""

from __future__ import annotations

import re

import numpy as np

from playworld.envs.tabletop.tasks import SPAWN_X, SPAWN_Y
from playworld.policy.vqa import (
    LOCATE_CELL,
    Scene,
    SceneObject,
    locate_answer,
    located_points,
    plan_text,
    sample_questions,
    scene_questions,
)

SCENE = Scene(
    objects=(
        SceneObject("red", "cube", (0.40, 0.10)),
        SceneObject("blue", "can", (0.50, -0.11)),
        SceneObject("green", "cube", (0.60, 0.00)),
        SceneObject("green", "cube", (0.38, -0.18)),  # a second green cube: "the green cube" is ambiguous
    ),
    tray=("yellow", (0.46, 0.03)),
)


def _answers(kind: str, scene: Scene = SCENE, spatial: bool = True) -> dict[str, str]:
    return {qa.question: qa.answer for qa in scene_questions(scene, spatial).get(kind, [])}


def test_where_is_answers_the_objects_cell_in_the_robots_frame():
    where = _answers("locate")
    # x from the spawn area's edge nearest the robot, y from its right, in 2 cm cells
    assert where["where is the red cube?"] == f"x {round((0.40 - SPAWN_X[0]) / LOCATE_CELL)} y {round((0.10 - SPAWN_Y[0]) / LOCATE_CELL)}"
    assert where["where is the red cube?"] == "x 2 y 16"
    assert where["where is the blue can?"] == "x 7 y 5"
    assert "where is the green cube?" not in where  # two green cubes: no unambiguous answer
    assert where["where is the tray?"] == "x 5 y 12"
    # cells are clipped to the spawn area, whose corners are cell 0 and the last cell
    assert locate_answer((SPAWN_X[0] - 0.05, SPAWN_Y[1] + 0.05)) == "x 0 y 21"
    assert locate_answer((SPAWN_X[1], SPAWN_Y[0])) == "x 13 y 0"
    # moving an object by one cell moves the answer by one
    assert locate_answer((0.40 + LOCATE_CELL, 0.10)) == "x 3 y 16"


def test_located_plans_say_where_each_named_thing_stands():
    from playworld.envs.tabletop import get_suite

    for family in ("pick", "push", "put_in_tray", "put_next_to", "stack"):
        for spec in get_suite("seen", [family]).episodes(4, seed=5):
            plain, located = plan_text(spec), plan_text(spec, locate="table")
            assert located_points(plain) == [] and located != plain
            # removing the cells gives back the plain plan
            assert re.sub(r" at x \d+ y \d+", "", located) == plain
            points = located_points(located)
            target = spec.objects[spec.goal.target].xy
            # the first cell is the object to move, to within half a 2 cm cell on each axis
            assert np.abs(np.subtract(points[0], target)).max() <= LOCATE_CELL / 2 + 1e-9
            if family == "put_in_tray":
                assert np.abs(np.subtract(points[1], spec.tray.xy)).max() <= LOCATE_CELL / 2 + 1e-9
            if family in ("put_next_to", "stack"):
                ref = spec.objects[spec.goal.reference].xy
                assert len(points) == 2 and np.abs(np.subtract(points[1], ref)).max() <= LOCATE_CELL / 2 + 1e-9
            # image cells: the token of the 8 x 8 grid that shows the object, 7.5 cm of table per side
            in_image = plan_text(spec, locate="image")
            assert re.sub(r" at cell[a-h][a-h]", "", in_image) == plain
            assert np.linalg.norm(np.subtract(located_points(in_image)[0], target)) < 0.06
    assert located_points("pick up the red cube") == []
    assert located_points(f"pick up the red cube at {locate_answer((0.40, 0.10))}") == [
        (SPAWN_X[0] + 2 * LOCATE_CELL, SPAWN_Y[0] + 16 * LOCATE_CELL)
    ]


def test_position_questions_only_where_the_layout_is_known():
    assert _answers("locate", spatial=False) == {} and _answers("spatial", spatial=False) == {}
    assert _answers("count", spatial=False) == _answers("count")


def test_scene_answers_follow_the_ground_truth():
    assert _answers("count")["how many cubes are there?"] == "3"
    assert _answers("count")["how many objects are on the table?"] == "4"
    assert _answers("tray")["what colour is the tray?"] == "yellow"
    side = _answers("spatial")
    assert side["is the red cube left or right of the blue can?"] == "left"  # +y is the robot's left
    assert side["is the blue can left or right of the red cube?"] == "right"
    assert side["what colour is the can right of the tray?"] == "blue"


def test_sampled_questions_are_distinct_and_reproducible():
    a = sample_questions(SCENE, np.random.default_rng(3), n=5)
    b = sample_questions(SCENE, np.random.default_rng(3), n=5)
    assert a == b and len(set(a)) == 5
    every = {qa for qas in scene_questions(SCENE).values() for qa in qas}
    assert set(a) <= every


def test_image_cells_are_where_the_camera_shows_the_object():
    from playworld.envs.tabletop import Tabletop
    from playworld.envs.tabletop.scene import SHAPES, Camera, unproject
    from playworld.policy.vqa import image_cell

    spec = {
        "suite": "seen", "family": "pick", "instruction": "pick up the red cube",
        "objects": [{"shape": "cube", "color": "red", "xy": [0.62, 0.17], "yaw": 0.0}],
        "goal": {"kind": "lift", "target": 0, "reference": None, "region": None},
        "tray": None, "markers": [], "seed": 0,
    }
    env = Tabletop(image_size=128)
    try:
        h = SHAPES["cube"].half_height
        for row, col in ((2, 2), (5, 6), (4, 3)):  # the middles of three tokens of the 8 x 8 grid
            xy = tuple(float(v) for v in unproject(Camera(), ((col + 0.5) / 8, (row + 0.5) / 8), h))
            assert image_cell(xy, h, 8) == (row, col)
            spec["objects"][0]["xy"] = list(xy)
            obs, _ = env.reset(options={"episode": spec})
            img = obs["image"].astype(int)
            red = (img[..., 0] > 150) & (img[..., 1] < 90) & (img[..., 2] < 90)
            rows, cols = np.nonzero(red)
            assert len(rows) > 10, "the red cube should be visible"
            # the rendered cube is where the projection says, to within 2 of its 16 px token
            assert np.abs([cols.mean() - (col + 0.5) * 16, rows.mean() - (row + 0.5) * 16]).max() < 2.0
    finally:
        env.close()


def test_the_lexicon_names_objects_with_synonyms_the_robot_data_never_uses():
    from playworld.envs.tabletop.tasks import COLOR_SYNONYMS, PARAPHRASE_TEMPLATES, SHAPE_SYNONYMS, get_suite
    from playworld.policy.train_vla import Episode, training_texts
    from playworld.policy.vqa import scene_from_spec

    assert "lexicon" not in scene_questions(SCENE)
    lexicon = {qa.question: qa.answer for qa in scene_questions(SCENE, lexicon=True)["lexicon"]}
    assert lexicon["which object is the crimson block?"] == "red cube"
    assert lexicon["which object is the blue tin?"] == "blue can"
    assert "which object is the red cube?" not in lexicon  # only other names for it
    assert not any("emerald" in q or "lime" in q for q in lexicon)  # two green cubes: ambiguous
    # sampling reaches the lexicon only when asked to
    kinds = {qa.kind for s in range(200) for qa in sample_questions(SCENE, np.random.default_rng(s), 2, lexicon=True)}
    assert "lexicon" in kinds
    assert not {qa.kind for s in range(200) for qa in sample_questions(SCENE, np.random.default_rng(s), 2)} & {"lexicon"}

    # the training texts: synonyms only with the lexicon, and the held-out verb phrasings never
    specs = get_suite("seen").episodes(30, seed=0)
    eps = [Episode(np.zeros((1, 8, 8, 3), np.uint8), None, None, s.instruction, s) for s in specs]
    synonyms = {w for ws in (*COLOR_SYNONYMS.values(), *SHAPE_SYNONYMS.values()) for w in ws}
    plain = set(" ".join(training_texts(eps)).split())
    wide = set(" ".join(training_texts(eps, vqa={"lexicon": True})).replace("?", " ").split())
    assert not plain & synonyms
    present = {w for s in specs for o in scene_from_spec(s).objects for w in (*COLOR_SYNONYMS.get(o.color, ()),
                                                                              *SHAPE_SYNONYMS.get(o.shape, ()))}
    assert present and present <= wide
    held_out_verbs = {"grab", "raise", "shove", "slide", "tidy", "belongs", "beside", "balance"}
    assert all(v in " ".join(t for ts in PARAPHRASE_TEMPLATES.values() for t in ts) for v in held_out_verbs)
    assert not wide & held_out_verbs
    assert not wide & {"leftmost", "rightmost"}  # the suite's spatial references


def test_pointing_questions_name_the_image_token_that_shows_each_object():
    from playworld.envs.tabletop.scene import SHAPES
    from playworld.policy.vqa import image_cell, image_cell_word

    assert "point" not in scene_questions(SCENE) and "point" not in scene_questions(SCENE, spatial=False, grid=8)
    point = {qa.question: qa.answer for qa in scene_questions(SCENE, grid=8)["point"]}
    assert point["which image cell shows the red cube?"] == image_cell_word(*image_cell((0.40, 0.10), SHAPES["cube"].half_height, 8))
    assert "which image cell shows the green cube?" not in point  # two of them
    assert re.fullmatch(r"cell[a-h][a-h]", point["which image cell shows the blue can?"])


def test_web_scenes_show_every_object_and_are_not_the_suites_episodes():
    from playworld.envs.tabletop.tasks import (
        ALL_COMBOS,
        HELD_OUT,
        NEW_DISTRACTORS,
        get_suite,
        web_scene_specs,
    )

    specs = web_scene_specs(300, seed=0)
    assert specs == web_scene_specs(300, seed=0) and specs[:10] == web_scene_specs(10, seed=0)
    shown = {(o.color, o.shape) for s in specs for o in s.objects}
    assert shown <= set(ALL_COMBOS) and set(HELD_OUT) <= shown and len(shown & set(NEW_DISTRACTORS)) >= 10
    assert all(s.suite == "web" and 3 <= len(s.objects) <= 4 for s in specs)
    layouts = {tuple(o.xy for o in s.objects) for s in specs}
    for suite in ("seen", "unseen-objects"):  # no evaluation layout is among them
        assert not layouts & {tuple(o.xy for o in s.objects) for s in get_suite(suite).episodes(300, seed=1)}


def test_referring_expressions_name_the_extreme_object_of_its_shape():
    from playworld.envs.tabletop.tasks import get_suite
    from playworld.policy.train_vla import Episode, training_texts
    from playworld.policy.vqa import spatial_references

    assert not {"refer", "refer_plan"} & set(scene_questions(SCENE, lexicon=True, grid=8))  # only when asked
    by_kind = scene_questions(SCENE, grid=8, refer=True)
    refer = {qa.question: qa.answer for qa in by_kind["refer"]}
    # three cubes: the red one (y 0.10) is leftmost by 0.10 m, the one at x 0.60 furthest by 0.20 m
    assert refer["which object is the leftmost block?"] == "red cube"
    assert refer["which object is the cube furthest from you?"] == "green cube"
    assert refer["which object is the cube on the far right?"] == "green cube"  # y -0.18
    assert refer["which image cell shows the leftmost cube?"] == scene_questions(SCENE, grid=8)["point"][0].answer
    # a unique extreme by less than the margin names nothing: x 0.38 vs 0.40 is 2 cm
    assert not any("closest" in expr for expr, _ in spatial_references(SCENE))
    assert not any("can" in q or "tin" in q for q in refer)  # one can: nothing to tell apart
    plans = {qa.question: qa.answer for qa in by_kind["refer_plan"]}
    assert plans["what is the plan to pick up the leftmost box?"] == "pick up the red cube"
    assert plans["what is the plan to lift the scarlet block?"] == "pick up the red cube"
    assert plans["what is the plan to put the azure tin in the tray?"] == "pick up the blue can, then put it in the tray"
    assert not any("emerald" in q for q in plans)  # two green cubes: a synonym of "green cube" is ambiguous
    # without positions (a later frame), no spatial references, synonym plans still
    moved = scene_questions(SCENE, spatial=False, refer=True)
    assert "refer" not in moved and not any("leftmost" in qa.question for qa in moved["refer_plan"])

    # the unseen-instructions suite's verb phrasings stay out of the training texts
    specs = get_suite("seen").episodes(30, seed=0)
    eps = [Episode(np.zeros((1, 8, 8, 3), np.uint8), None, None, s.instruction, s) for s in specs]
    words = set(" ".join(training_texts(eps, vqa={"lexicon": True, "refer": True})).split())
    assert {"leftmost", "rightmost", "closest", "furthest"} <= words
    assert not words & {"grab", "raise", "hold", "shove", "slide", "drop", "tidy", "belongs", "balance", "beside"}
