"""The generated vision-language questions (the co-fine-tuning stand-in for web data): answers
come from the scene's ground truth."""

from __future__ import annotations

import numpy as np

from playworld.envs.tabletop.tasks import SPAWN_X, SPAWN_Y
from playworld.policy.vqa import (
    LOCATE_CELL,
    Scene,
    SceneObject,
    locate_answer,
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
