"""A scripted expert that solves every tabletop task family from privileged simulator state.

The expert never looks at the image or the words: it reads the episode's goal and the object
poses from the simulator, plans a short list of phases (move above, descend, close, lift,
carry, lower, release, retreat - or, for ``push``, get behind the object and shove it), and
turns each phase's waypoint into RT-2 actions: a delta towards the waypoint, clipped to a
speed limit, plus the gripper command. When the plan is finished it emits ``terminate = 1``.

Deltas are taken relative to the controller's end-effector *target* (``env.target_pos``), so
the target lands exactly on each waypoint; phases end when the *real* end-effector arrives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from playworld.envs.tabletop import scene
from playworld.envs.tabletop.env import WORKSPACE, Tabletop, quat_inv, quat_mul
from playworld.envs.tabletop.tasks import (
    SPAWN_X,
    SPAWN_Y,
    TRAY_RADIUS,
    EpisodeSpec,
    in_region,
    region_goal_point,
)

CARRY_Z = 0.17  # grasp-point height while carrying (clears cans, tray walls and stacks)
FAST = 0.04  # metres per step in free space
SLOW = 0.02  # metres per step near objects
PUSH_STEP = 0.02
PUSH_Z = 0.014  # grasp-point height while pushing: fingertips ~3 mm above the table
NEXT_TO_GAP = 0.03  # space left between an object put "next to" another and that other
# Timed waits (steps spent in a phase that only waits). Each is as short as the physics allows,
# so that every action is a function of what the policy sees: a wait of N > 1 steps shows the
# same observation N times with "stay" and then once with "go on", which no policy that reads
# one observation can imitate with greedy decoding (it stays for ever). The fingers close or
# open in one 10 Hz step (0.08 -> 0.042 m), and objects come to rest while being lowered at
# 2 cm a step, so nothing needs a longer wait (measured on 60 seen episodes: 60/60 with the
# old waits of 3/2/3/2 steps and without them; docs/tabletop.md).
CLOSE_STEPS = 1  # close the fingers, then lift on the next step
RELEASE_STEPS = 1  # open the fingers, then retreat on the next step
SETTLE_STEPS = 0  # wait after lowering, before opening (0: no settle phase)
PICK_HOLD_STEPS = 0  # `pick`: hold the object up before terminating (0: terminate at the top)
YAW_NOISE_PER_METRE = 5.0  # DART noise on dyaw (rad) per metre of noise on dx/dy/dz: 1 cm -> 0.05 rad
MAX_REAIMS = 4  # times the push expert may lift off and come at the object from a new side
WS_LOW = np.array([w[0] for w in WORKSPACE])
WS_HIGH = np.array([w[1] for w in WORKSPACE])


@dataclass
class _Phase:
    name: str
    gripper: float
    speed: float = FAST
    tol: float = 0.012
    hold: int = 0  # for timed phases: number of steps to stay
    max_steps: int = 40


def _wrap(a: float, period: float) -> float:
    """``a`` wrapped into [-period/2, period/2)."""
    return (a + period / 2) % period - period / 2


class ScriptedExpert:
    """Solves ``env.episode`` with inverse-kinematics waypoints; call :meth:`act` once per step."""

    def __init__(self, env: Tabletop):
        self.env = env.unwrapped if hasattr(env, "unwrapped") else env
        self.phases: list[_Phase] = []

    # -- planning --------------------------------------------------------------------------------

    def reset(self) -> None:
        """Plan for the episode the env was just reset to."""
        env = self.env
        ep: EpisodeSpec = env.episode
        self.kind = ep.goal.kind
        self.i = ep.goal.target
        self.shape = scene.SHAPES[ep.objects[self.i].shape]
        self.k = 0  # current phase
        self.t = 0  # steps spent in it
        self.grasp_offset = 0.0
        self.push_dir = np.zeros(2)
        self.fixed = np.zeros(3)
        self.yaw_goal = self._target_yaw()
        if self.kind == "region" and self.shape.pushable:
            self._plan_push()
        else:
            self._plan_pick_place()

    def _plan_pick_place(self) -> None:
        obj_pos, obj_orn = self.env.object_pose(self.i)
        if self.shape.kind == "box":
            # squeeze across a pair of faces: finger axis parallel to a face normal
            obj_yaw = self.env.pb.getEulerFromQuaternion(obj_orn.tolist())[2]
            self.yaw_goal += _wrap(obj_yaw - self.env.finger_axis_yaw(), math.pi / 2)
        self.grasp_z = self.shape.grasp_height
        self.phases = [
            _Phase("above", gripper=0.0, tol=0.015),
            _Phase("descend", gripper=0.0, speed=SLOW, tol=0.006),
            _Phase("close", gripper=1.0, hold=CLOSE_STEPS),
            _Phase("lift", gripper=1.0, tol=0.02),
        ]
        if self.kind == "lift":
            self.phases += [_Phase("hold", gripper=1.0, hold=PICK_HOLD_STEPS)] if PICK_HOLD_STEPS else []
        else:
            self.goal_xy = self._place_xy()
            self.phases += [
                _Phase("carry", gripper=1.0, tol=0.012),
                _Phase("lower", gripper=1.0, speed=SLOW, tol=0.008),
                *([_Phase("settle", gripper=1.0, hold=SETTLE_STEPS)] if SETTLE_STEPS else []),
                _Phase("release", gripper=0.0, hold=RELEASE_STEPS),
                _Phase("retreat", gripper=0.0, speed=SLOW, tol=0.02),
            ]

    def _plan_push(self) -> None:
        obj_pos, _ = self.env.object_pose(self.i)
        self.goal_xy = np.array(region_goal_point(self.env.episode.goal.region, obj_pos[:2]))
        self._behind_phase = _Phase("behind", gripper=1.0, tol=0.015)
        self.phases = [
            self._behind_phase,
            _Phase("down", gripper=1.0, speed=SLOW, tol=0.008),
            _Phase("push", gripper=1.0, speed=PUSH_STEP, max_steps=40),
            _Phase("retreat", gripper=1.0, tol=0.02),
        ]
        self.reaims = 0
        self._aim_push()

    def _aim_push(self) -> None:
        """Push direction from the object to the goal; fingers side by side across it."""
        obj_pos, _ = self.env.object_pose(self.i)
        d = self.goal_xy - obj_pos[:2]
        self.push_dir = d / max(np.linalg.norm(d), 1e-9)
        across = math.atan2(self.push_dir[1], self.push_dir[0]) + math.pi / 2
        self.yaw_goal = self._target_yaw() + _wrap(across - self.env.finger_axis_yaw(), math.pi)

    def _target_yaw(self) -> float:
        rel = quat_mul(self.env.target_orn, quat_inv(scene.HOME_ORN))
        return self.env.pb.getEulerFromQuaternion(rel.tolist())[2]

    def _place_xy(self) -> np.ndarray:
        env, ep = self.env, self.env.episode
        g = ep.goal
        if g.kind == "tray":
            return np.array(ep.tray.xy)
        if g.kind == "marker":
            return np.array(ep.markers[g.reference].xy)
        if g.kind == "stack":
            return env.object_pose(g.reference)[0][:2]
        if g.kind == "region":  # objects too round to push are carried there
            return np.array(region_goal_point(g.region, env.object_pose(self.i)[0][:2]))
        if g.kind == "next_to":
            return self._free_spot_next_to(g.reference)
        raise ValueError(g.kind)

    def _free_spot_next_to(self, ref: int) -> np.ndarray:
        """The free spot beside the reference that is closest to where the target is now."""
        env, ep = self.env, self.env.episode
        ref_pos = env.object_pose(ref)[0][:2]
        here = env.object_pose(self.i)[0][:2]
        r_t, r_ref = self.shape.radius, scene.SHAPES[ep.objects[ref].shape].radius
        obstacles = [
            (env.object_pose(j)[0][:2], scene.SHAPES[o.shape].radius)
            for j, o in enumerate(ep.objects)
            if j not in (ref, self.i)
        ]
        if ep.tray is not None:
            obstacles.append((np.array(ep.tray.xy), TRAY_RADIUS))
        best, best_d = None, math.inf
        for a in np.linspace(0, 2 * math.pi, 24, endpoint=False):
            p = ref_pos + (r_t + r_ref + NEXT_TO_GAP) * np.array([math.cos(a), math.sin(a)])
            if not (
                SPAWN_X[0] - 0.04 <= p[0] <= SPAWN_X[1] + 0.04
                and SPAWN_Y[0] - 0.04 <= p[1] <= SPAWN_Y[1] + 0.04
            ):
                continue
            if any(np.linalg.norm(p - q) < r_t + r + 0.025 for q, r in obstacles):
                continue
            d = np.linalg.norm(p - here)
            if d < best_d:
                best, best_d = p, d
        if best is None:  # crowded: the side facing the target, obstacles or not
            best = ref_pos + (r_t + r_ref + NEXT_TO_GAP) * (here - ref_pos) / max(
                np.linalg.norm(here - ref_pos), 1e-9
            )
        return best

    # -- acting ----------------------------------------------------------------------------------

    def act(self) -> np.ndarray:
        """The next 8-d action (RT-2 order: terminate, dx, dy, dz, droll, dpitch, dyaw, gripper)."""
        env = self.env
        if self.k >= len(self.phases):
            return np.array([1.0, 0, 0, 0, 0, 0, 0, self.phases[-1].gripper], np.float32)
        phase = self.phases[self.k]
        if self.t == 0:
            self._enter(phase.name)
        waypoint = np.clip(self._waypoint(phase.name), WS_LOW, WS_HIGH)
        ee, _ = env.ee_pose()

        # phase bookkeeping first, so the step that reaches a waypoint already heads for the next
        self.t += 1
        if phase.hold:
            done = self.t > phase.hold
        elif phase.name == "push":
            obj = env.object_pose(self.i)[0][:2]
            done = (
                in_region(env.episode.goal.region, obj, margin=0.03)
                or np.linalg.norm(obj - self.goal_xy) < 0.015
            )
            if not done and self._needs_reaim(obj, ee[:2]):
                self._aim_push()
                self.k, self.t = self.phases.index(self._behind_phase), 0
                return self.act()
        else:
            done = np.linalg.norm(waypoint - ee) < phase.tol and abs(self._yaw_error()) < 0.05
        if done or self.t > phase.max_steps:
            if phase.name == "lift":
                # how far the object hangs below the grasp point decides how low to lower it later
                self.grasp_offset = env.object_pose(self.i)[0][2] - ee[2]
            self.k += 1
            self.t = 0
            return self.act()

        delta = waypoint - env.target_pos
        n = np.linalg.norm(delta)
        if n > phase.speed:
            delta *= phase.speed / n
        dyaw = float(np.clip(self._yaw_error(), -0.2, 0.2))
        return np.array([0.0, *delta, 0.0, 0.0, dyaw, phase.gripper], np.float32)

    def _yaw_error(self) -> float:
        return _wrap(self.yaw_goal - self._target_yaw(), 2 * math.pi)

    def _enter(self, name: str) -> None:
        """Fix the waypoint of phases that hold or leave from wherever they start."""
        target = self.env.target_pos
        if name in ("close", "settle", "release"):
            self.fixed = target.copy()  # stay put; do not chase an object the fingers nudge
        elif name in ("lift", "hold"):
            self.fixed = np.array([target[0], target[1], CARRY_Z])
            if name == "lift" and self.kind == "next_to":
                # turn now (turning on the move swings a held ball) so the fingers will open
                # sideways to the reference when letting go, not into it
                ref = self.env.object_pose(self.env.episode.goal.reference)[0][:2]
                side = self.goal_xy - ref
                across = math.atan2(side[1], side[0]) + math.pi / 2
                self.yaw_goal = self._target_yaw() + _wrap(across - self.env.finger_axis_yaw(), math.pi)
        elif name == "retreat":
            back = -0.03 * self.push_dir if self.kind == "region" and self.shape.pushable else np.zeros(2)
            self.fixed = np.array([target[0] + back[0], target[1] + back[1], max(target[2] + 0.08, 0.13)])

    def _waypoint(self, name: str) -> np.ndarray:
        env = self.env
        obj = env.object_pose(self.i)[0]
        if name in ("close", "release", "lift", "hold", "settle", "retreat"):
            return self.fixed
        if name == "above":
            return np.array([obj[0], obj[1], max(2 * self.shape.half_height + 0.08, 0.14)])
        if name == "descend":
            return np.array([obj[0], obj[1], self.grasp_z])
        if name == "carry":
            if self.kind == "stack":  # follow the base if it got nudged
                self.goal_xy = env.object_pose(env.episode.goal.reference)[0][:2]
            return np.array([*self.goal_xy, CARRY_Z])
        if name == "lower":
            return np.array([*self.goal_xy, self._place_z()])
        if name == "behind":
            return np.array([*self._behind(obj), 0.10])
        if name == "down":
            return np.array([*self._behind(obj), PUSH_Z])
        if name == "push":
            # straight along push_dir, sliding sideways to keep the object's centre on the line
            d = self.push_dir
            across = np.array([-d[1], d[0]])
            lateral = float(np.dot(obj[:2] - env.ee_pose()[0][:2], across))
            step = d * PUSH_STEP + across * np.clip(lateral, -0.01, 0.01)
            return np.array([*(env.target_pos[:2] + step), PUSH_Z])
        raise ValueError(name)

    def _needs_reaim(self, obj: np.ndarray, ee: np.ndarray) -> bool:
        """The object drifted off the push line or the goal is no longer straight ahead."""
        if self.reaims >= MAX_REAIMS:
            return False
        to_goal = self.goal_xy - obj
        if np.linalg.norm(to_goal) < 0.04:
            return False
        off_course = np.dot(to_goal / np.linalg.norm(to_goal), self.push_dir) < math.cos(math.radians(25))
        d = self.push_dir
        slipping = abs(float(np.dot(obj - ee, np.array([-d[1], d[0]])))) > 0.025
        if off_course or slipping:
            self.reaims += 1
            return True
        return False

    def _behind(self, obj: np.ndarray) -> np.ndarray:
        return obj[:2] - self.push_dir * (self.shape.radius + 0.04)

    def _place_z(self) -> float:
        """Grasp-point height that holds the object's bottom 1 cm above where it goes."""
        ep = self.env.episode
        g = ep.goal
        if g.kind == "tray":
            floor = scene.TRAY_FLOOR
        elif g.kind == "stack":
            ref = scene.SHAPES[ep.objects[g.reference].shape]
            floor = self.env.object_pose(g.reference)[0][2] + ref.half_height
        else:
            floor = 0.0
        return floor + self.shape.half_height + 0.01 - self.grasp_offset


def run_expert_episode(
    env: Tabletop,
    *,
    seed: int | None = None,
    episode: EpisodeSpec | None = None,
    record: bool = True,
    action_noise: float = 0.0,
    noise_seed: int | list[int] | None = None,
    noise_prob: float = 1.0,
) -> dict[str, Any]:
    """Run the scripted expert for one episode.

    Returns ``frames`` uint8 (T, H, W, 3), ``wrist_frames`` uint8 (T, W, W, 3) (None without a
    wrist camera), ``states`` float32 (T, 8), ``actions`` float32 (T, 8)
    (row t: the observation and the action taken after it; the last action has terminate = 1),
    ``instruction``, ``success`` (judged when the episode ended), ``steps`` and ``episode``
    (the :class:`EpisodeSpec` as a dict). With ``record=False`` frames/states are not kept.

    ``action_noise > 0`` records DART-style recovery data (Laskey et al. 2017): on a random
    share ``noise_prob`` of the steps the env executes the expert's action with Gaussian noise
    (std ``action_noise`` metres on dx, dy, dz and ``action_noise * YAW_NOISE_PER_METRE`` rad on
    dyaw, drawn from ``noise_seed``; the clean steps in between let the expert's phases, which
    wait for the hand to reach a waypoint within millimetres, still finish), while
    ``actions`` keeps the *clean* expert action for each observation. The expert plans every
    step from the simulator state, so the labels show how to get back on track from the
    perturbed states a learned policy will also drift into. ``executed_actions`` holds what was
    sent to the env. Terminate and gripper are never perturbed.
    """
    if action_noise < 0 or not 0 <= noise_prob <= 1:
        raise ValueError(f"action_noise must be >= 0 and noise_prob in [0, 1], got {action_noise}, {noise_prob}")
    base = env.unwrapped if hasattr(env, "unwrapped") else env
    options = {"episode": episode} if episode is not None else None
    obs, info = env.reset(seed=seed, options=options)
    expert = ScriptedExpert(base)
    expert.reset()
    rng = np.random.default_rng(noise_seed)
    frames, wrist, states, actions, executed = [], [], [], [], []
    success = info["success"]
    while True:
        action = expert.act()
        if record:
            frames.append(obs["image"])
            if "wrist_image" in obs:
                wrist.append(obs["wrist_image"])
            states.append(obs["state"])
        actions.append(action)
        sent = action
        if action_noise > 0 and action[0] <= 0.5 and rng.random() < noise_prob:
            sent = action.copy()
            sent[1:4] += rng.normal(0.0, action_noise, 3)
            sent[6] += rng.normal(0.0, action_noise * YAW_NOISE_PER_METRE)
            sent = np.clip(sent, base.action_space.low, base.action_space.high).astype(np.float32)
        executed.append(sent)
        obs, _, terminated, truncated, info = env.step(sent)
        success = info["success"]
        if terminated or truncated:
            break
    h, w = base.config.image_size, base.config.wrist_size
    return {
        "frames": np.stack(frames) if frames else np.zeros((0, h, h, 3), np.uint8),
        "wrist_frames": np.stack(wrist) if wrist else (np.zeros((0, w, w, 3), np.uint8) if w else None),
        "states": np.stack(states) if states else np.zeros((0, 8), np.float32),
        "actions": np.stack(actions).astype(np.float32),
        "executed_actions": np.stack(executed).astype(np.float32),
        "instruction": info["instruction"],
        "success": bool(success),
        "steps": len(actions),
        "episode": base.episode.to_dict(),
    }
