"""``Tabletop``: a language-conditioned Franka Panda tabletop in PyBullet, with RT-2's action space.

Observation (a dict):

- ``image``        uint8 (S, S, 3) RGB from a fixed camera (TinyRenderer, default S = 128)
- ``state``        float32 (8,) = end-effector x, y, z (m), roll, pitch, yaw (rad, relative to
                   the gripper pointing straight down), gripper opening (m, 0..0.08), last
                   gripper command (0 open .. 1 closed)
- ``instruction``  the task in words, e.g. "put the red cube in the tray" (also ``info``)
- ``wrist_image``  uint8 (W, W, 3) from a camera in the palm of the hand, looking between the
                   fingers (only with ``wrist_size = W > 0``; see :class:`scene.WristCamera`)

Action: float32 (8,) in RT-2's order (:data:`ACTION_NAMES`)::

    [terminate, dx, dy, dz, droll, dpitch, dyaw, gripper]

``terminate`` > 0.5 ends the episode; ``dx, dy, dz`` move the end-effector target (metres,
robot frame, at most 5 cm a step); ``droll, dpitch, dyaw`` rotate it about the world axes
(radians, at most 0.25 a step); ``gripper`` is the commanded closedness (0 open, 1 closed).
Out-of-bounds actions are clipped (with a one-time warning); NaN/inf raise ``ValueError``.

Control runs at ``control_hz`` (10 Hz): each step moves an end-effector target, solves
inverse kinematics once and runs ``physics_hz / control_hz`` physics substeps with the arm
under joint position control, so the arm is a real dynamic body that pushes and grasps.

Reward is 1.0 on every step on which the task is solved (judged from the simulator's state,
see :meth:`Tabletop.is_success`), else 0.0. ``terminated`` when the policy says terminate or
(``terminate_on_success``) the task is solved; ``truncated`` after ``max_steps``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from playworld.envs.tabletop import scene
from playworld.envs.tabletop.tasks import (
    FAMILIES,
    INSTRUCTION_CHARSET,
    INSTRUCTION_MAX_LEN,
    SUITES,
    EpisodeSpec,
    get_suite,
    in_region,
)
from playworld.errors import PlayworldError

ACTION_NAMES = ("terminate", "dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
ACTION_LOW = np.array([0.0, -0.05, -0.05, -0.05, -0.25, -0.25, -0.25, 0.0], dtype=np.float32)
ACTION_HIGH = np.array([1.0, 0.05, 0.05, 0.05, 0.25, 0.25, 0.25, 1.0], dtype=np.float32)
STATE_NAMES = ("x", "y", "z", "roll", "pitch", "yaw", "gripper_width", "gripper_command")
STATE_LOW = np.array([-1.0, -1.0, -1.0, -np.pi, -np.pi, -np.pi, 0.0, 0.0], dtype=np.float32)
STATE_HIGH = np.array([1.0, 1.0, 1.0, np.pi, np.pi, np.pi, 0.1, 1.0], dtype=np.float32)

#: Where the end-effector target may go (x, y, z ranges, metres). The lower z bound keeps the
#: fingertips (1.1 cm below the grasp point) just above the table.
WORKSPACE = ((0.22, 0.80), (-0.40, 0.40), (0.012, 0.45))
#: The target never runs further than this ahead of the real end-effector (no wind-up when
#: the arm is blocked, e.g. pressing on an object).
TARGET_LEASH = 0.06
MAX_TILT = 0.5  # rad; roll/pitch of the gripper away from pointing down
#: Constraint-solver iterations per physics step: the main cost of a step (20 is ~2x faster
#: than PyBullet's default 50 and still holds grasped objects firmly).
SOLVER_ITERATIONS = 20


@dataclass
class TabletopConfig:
    """Settings of the tabletop environment."""

    suite: str = "seen"
    """Which episode distribution ``reset`` samples from: seen, unseen-objects,
    unseen-instructions, symbols, reasoning."""
    tasks: tuple[str, ...] = ()
    """Restrict to these task families (pick, push, put_in_tray, put_next_to, stack,
    put_on_symbol); empty = all of the suite's."""
    image_size: int = 128
    """Side of the square RGB observation in pixels."""
    wrist_size: int = 0
    """Side of the square image of the wrist (palm) camera, observation ``wrist_image``; 0 = no
    wrist camera (RT-2's setting: one fixed camera)."""
    render_images: bool = True
    """Render the camera every step; False returns black images (fast, for expert tests)."""
    control_hz: float = 10.0
    """Actions per simulated second (RT-2 ran at 1-5 Hz on real robots)."""
    physics_hz: float = 240.0
    """Physics steps per simulated second; must be a multiple of ``control_hz``."""
    max_steps: int = 120
    """Episode length limit in control steps (then ``truncated``)."""
    terminate_on_success: bool = True
    """End the episode as soon as the task is solved. Recorders turn this off so the expert
    finishes its motion and emits the terminate action itself."""

    def __post_init__(self):
        if self.suite not in SUITES:
            raise PlayworldError(f"unknown tabletop suite {self.suite!r}; valid suites: {', '.join(SUITES)}.")
        self.tasks = tuple(self.tasks)
        bad = [t for t in self.tasks if t not in FAMILIES]
        if bad:
            raise PlayworldError(f"unknown tabletop task {bad[0]!r}; valid tasks: {', '.join(FAMILIES)}.")
        if not 16 <= self.image_size <= 1024 or self.image_size % 2:
            raise PlayworldError(
                f"image_size must be an even number of pixels in [16, 1024], got {self.image_size}."
            )
        if self.wrist_size and (not 16 <= self.wrist_size <= 1024 or self.wrist_size % 2):
            raise PlayworldError(
                f"wrist_size must be 0 (no wrist camera) or an even number of pixels in [16, 1024], got {self.wrist_size}."
            )
        if self.control_hz <= 0 or self.physics_hz <= 0:
            raise PlayworldError("control_hz and physics_hz must be positive.")
        ratio = self.physics_hz / self.control_hz
        if abs(ratio - round(ratio)) > 1e-6 or ratio < 1:
            raise PlayworldError(
                f"physics_hz ({self.physics_hz}) must be a whole multiple of control_hz ({self.control_hz})."
            )
        if self.max_steps < 1:
            raise PlayworldError(f"max_steps must be >= 1, got {self.max_steps}.")

    @property
    def substeps(self) -> int:
        return int(round(self.physics_hz / self.control_hz))


# -- quaternions (x, y, z, w), as PyBullet uses them --------------------------------------------


def quat_mul(a, b) -> np.ndarray:
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ]
    )


def quat_inv(q) -> np.ndarray:
    return np.array([-q[0], -q[1], -q[2], q[3]])


class Tabletop(gym.Env):
    """A Panda arm, objects, a tray and glyph markers on a table; one language instruction per episode.

    ``reset(seed=s)`` samples an episode from the configured suite; ``reset(options={"episode":
    spec})`` plays a given :class:`~playworld.envs.tabletop.tasks.EpisodeSpec` (or its dict).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, config: TabletopConfig | None = None, render_mode: str | None = None, **overrides):
        cfg = config or TabletopConfig()
        if overrides:
            cfg = replace(cfg, **overrides)
        if render_mode not in (None, "rgb_array"):
            raise PlayworldError(f"render_mode must be None or 'rgb_array', got {render_mode!r}.")
        self.config = cfg
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": cfg.control_hz}
        self.suite = get_suite(cfg.suite, cfg.tasks or None)
        self.camera = scene.Camera()
        self.wrist_camera = scene.WristCamera()

        s = cfg.image_size
        self.action_space = spaces.Box(ACTION_LOW, ACTION_HIGH, dtype=np.float32)
        self.observation_space = spaces.Dict(
            {
                "image": spaces.Box(0, 255, (s, s, 3), dtype=np.uint8),
                "state": spaces.Box(STATE_LOW, STATE_HIGH, dtype=np.float32),
                "instruction": spaces.Text(INSTRUCTION_MAX_LEN, charset=INSTRUCTION_CHARSET),
            }
        )
        if cfg.wrist_size:
            w = cfg.wrist_size
            self.observation_space["wrist_image"] = spaces.Box(0, 255, (w, w, 3), dtype=np.uint8)

        self.pb = scene.connect()
        import pybullet

        self._p = pybullet
        self.episode: EpisodeSpec | None = None
        self.robot = -1
        self.object_ids: list[int] = []
        self.tray_id: int | None = None
        self._home_q: list[float] | None = None
        self._warned_clip = False
        self._steps = 0
        self.target_pos = np.array(scene.HOME_POS)
        self.target_orn = np.array(scene.HOME_ORN)
        self.gripper_cmd = 0.0

    # -- gymnasium API ---------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        episode = options.get("episode")
        if episode is None:
            episode = self.suite.sample(int(self.np_random.integers(2**31 - 1)))
        elif isinstance(episode, dict):
            episode = EpisodeSpec.from_dict(episode)
        self.episode = episode
        self._build(episode)
        self._steps = 0
        return self._obs(), self._info(self.is_success())

    def step(self, action):
        if self.episode is None:
            raise RuntimeError("call reset() before step()")
        a = self._check_action(action)
        self._apply_control(a)
        for _ in range(self.config.substeps):
            self.pb.stepSimulation()
        self._steps += 1
        success = self.is_success()
        terminated = bool(a[0] > 0.5) or (self.config.terminate_on_success and success)
        truncated = not terminated and self._steps >= self.config.max_steps
        return self._obs(), float(success), terminated, truncated, self._info(success)

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return scene.render(self.pb, self.camera, self.config.image_size, self.config.image_size)

    def close(self):
        if getattr(self, "pb", None) is not None:
            try:
                self.pb.disconnect()
            except self._p.error:
                pass
            self.pb = None

    # -- scene -----------------------------------------------------------------------------------

    def _build(self, ep: EpisodeSpec) -> None:
        pb = self.pb
        # Rebuilding from scratch (not moving bodies around) makes reset(seed) bit-reproducible.
        pb.resetSimulation()
        pb.setPhysicsEngineParameter(
            fixedTimeStep=1.0 / self.config.physics_hz,
            numSolverIterations=SOLVER_ITERATIONS,
            deterministicOverlappingPairs=1,
        )
        pb.setGravity(0, 0, -9.81)
        scene.add_table(pb)
        self.robot = scene.load_robot(pb)
        if self._home_q is None:
            self._home_q = self._solve_home()
        for j, q in zip(scene.ARM_JOINTS, self._home_q, strict=True):
            pb.resetJointState(self.robot, j, q)
        for j in scene.FINGER_JOINTS:
            pb.resetJointState(self.robot, j, scene.FINGER_OPEN)
        self.tray_id = scene.add_tray(pb, ep.tray.color, ep.tray.xy) if ep.tray else None
        for m in ep.markers:
            scene.add_marker(pb, m.glyph, m.xy)
        self.object_ids = [scene.add_object(pb, o.shape, o.color, o.xy, o.yaw) for o in ep.objects]
        self.target_pos = np.array(scene.HOME_POS)
        self.target_orn = np.array(scene.HOME_ORN)
        self.gripper_cmd = 0.0
        self._command_joints(self._home_q)
        for _ in range(self.config.substeps):  # let objects settle on the table
            pb.stepSimulation()

    def _solve_home(self) -> list[float]:
        """Joint angles with the gripper at HOME_POS pointing down (iterated IK, done once)."""
        pb = self.pb
        for j, q in zip(scene.ARM_JOINTS, scene.ARM_REST, strict=True):
            pb.resetJointState(self.robot, j, q)
        q = list(scene.ARM_REST)
        for _ in range(30):
            q = list(self._ik(scene.HOME_POS, scene.HOME_ORN))[:7]
            for j, qj in zip(scene.ARM_JOINTS, q, strict=True):
                pb.resetJointState(self.robot, j, qj)
        return q

    def _ik(self, pos, orn):
        if not hasattr(self, "_limits"):
            info = [self.pb.getJointInfo(self.robot, j) for j in (*scene.ARM_JOINTS, *scene.FINGER_JOINTS)]
            lower = [i[8] for i in info]
            upper = [i[9] for i in info]
            self._limits = (
                lower,
                upper,
                [u - lo for lo, u in zip(lower, upper, strict=True)],
                [*scene.ARM_REST, 0.04, 0.04],
            )
        lower, upper, ranges, rest = self._limits
        return self.pb.calculateInverseKinematics(
            self.robot,
            scene.EE_LINK,
            list(pos),
            list(orn),
            lowerLimits=lower,
            upperLimits=upper,
            jointRanges=ranges,
            restPoses=rest,
            maxNumIterations=30,
            residualThreshold=1e-4,
        )

    def _command_joints(self, q) -> None:
        self.pb.setJointMotorControlArray(
            self.robot,
            scene.ARM_JOINTS,
            self._p.POSITION_CONTROL,
            targetPositions=list(q)[:7],
            forces=scene.ARM_FORCES,
            positionGains=[0.2] * 7,
        )
        finger = scene.FINGER_OPEN * (1.0 - self.gripper_cmd)
        for j in scene.FINGER_JOINTS:
            self.pb.setJointMotorControl2(
                self.robot,
                j,
                self._p.POSITION_CONTROL,
                targetPosition=finger,
                force=scene.FINGER_FORCE,
                maxVelocity=scene.FINGER_SPEED,
            )

    # -- control ---------------------------------------------------------------------------------

    def _check_action(self, action) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (8,):
            raise ValueError(f"action must have 8 numbers {ACTION_NAMES}, got shape {np.shape(action)}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action contains NaN or inf: {a.tolist()}")
        clipped = np.clip(a, ACTION_LOW, ACTION_HIGH)
        if not self._warned_clip and np.any(np.abs(clipped - a) > 1e-6):
            self._warned_clip = True
            warnings.warn(
                f"Tabletop action {np.round(a, 4).tolist()} is outside the action space "
                f"[{ACTION_LOW.tolist()}, {ACTION_HIGH.tolist()}]; clipping (warned once per env).",
                stacklevel=3,
            )
        return clipped

    def _apply_control(self, a: np.ndarray) -> None:
        ee_pos, _ = self.ee_pose()
        pos = self.target_pos + a[1:4]
        pos = np.clip(pos, [w[0] for w in WORKSPACE], [w[1] for w in WORKSPACE])
        offset = pos - ee_pos
        dist = np.linalg.norm(offset)
        if dist > TARGET_LEASH:
            pos = ee_pos + offset * (TARGET_LEASH / dist)
        self.target_pos = pos

        orn = quat_mul(self._p.getQuaternionFromEuler(a[4:7].tolist()), self.target_orn)
        roll, pitch, yaw = self._p.getEulerFromQuaternion(quat_mul(orn, quat_inv(scene.HOME_ORN)).tolist())
        roll, pitch = np.clip([roll, pitch], -MAX_TILT, MAX_TILT)
        rel = self._p.getQuaternionFromEuler([float(roll), float(pitch), yaw])
        self.target_orn = quat_mul(rel, scene.HOME_ORN)
        self.gripper_cmd = float(a[7])
        self._command_joints(self._ik(self.target_pos, self.target_orn))

    # -- reading the simulator ---------------------------------------------------------------------

    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """End-effector (grasp point) position and orientation quaternion (x, y, z, w)."""
        st = self.pb.getLinkState(self.robot, scene.EE_LINK, computeForwardKinematics=True)
        return np.array(st[4]), np.array(st[5])

    def gripper_width(self) -> float:
        return float(sum(self.pb.getJointState(self.robot, j)[0] for j in scene.FINGER_JOINTS))

    def finger_axis_yaw(self) -> float:
        """World yaw of the line between the fingers (the direction the gripper squeezes)."""
        a = np.array(self.pb.getLinkState(self.robot, scene.FINGER_LINKS[0])[4])
        b = np.array(self.pb.getLinkState(self.robot, scene.FINGER_LINKS[1])[4])
        d = b - a
        return math.atan2(d[1], d[0])

    def object_pose(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        pos, orn = self.pb.getBasePositionAndOrientation(self.object_ids[i])
        return np.array(pos), np.array(orn)

    def is_grasped(self, i: int) -> bool:
        """Object ``i`` touches either finger."""
        body = self.object_ids[i]
        return any(
            self.pb.getContactPoints(bodyA=body, bodyB=self.robot, linkIndexB=link)
            for link in scene.FINGER_LINKS
        )

    def _resting(self, i: int, floor: float = 0.0, tol: float = 0.012) -> bool:
        """Object ``i`` lies on a surface at height ``floor`` (not held up, not stacked)."""
        pos, _ = self.object_pose(i)
        shape = scene.SHAPES[self.episode.objects[i].shape]
        return pos[2] - shape.half_height - floor < tol

    def is_success(self) -> bool:
        """Whether the episode's goal holds in the simulator right now."""
        ep = self.episode
        g = ep.goal
        i = g.target
        pos, _ = self.object_pose(i)
        shape = scene.SHAPES[ep.objects[i].shape]
        if g.kind == "lift":
            return pos[2] - shape.half_height > 0.05 and self.is_grasped(i)
        if self.is_grasped(i):
            return False  # every other goal needs the object let go of
        if g.kind == "region":
            return in_region(g.region, pos[:2]) and self._resting(i)
        if g.kind == "tray":
            if ep.tray is None:
                return False
            d = np.abs(pos[:2] - np.array(ep.tray.xy))
            return bool(np.all(d <= scene.TRAY_INNER_HALF)) and self._resting(
                i, floor=scene.TRAY_FLOOR, tol=0.02
            )
        if g.kind == "next_to":
            ref_pos, _ = self.object_pose(g.reference)
            gap = (
                np.linalg.norm(pos[:2] - ref_pos[:2])
                - shape.radius
                - scene.SHAPES[ep.objects[g.reference].shape].radius
            )
            return gap <= 0.06 and np.linalg.norm(pos[:2] - ref_pos[:2]) > 0.03 and self._resting(i)
        if g.kind == "stack":
            ref = scene.SHAPES[ep.objects[g.reference].shape]
            ref_pos, _ = self.object_pose(g.reference)
            top = ref_pos[2] + ref.half_height
            on_top = pos[2] - shape.half_height > top - 0.01
            centred = (
                np.linalg.norm(pos[:2] - ref_pos[:2]) < (ref.size[0] if ref.kind != "sphere" else 0.0) + 0.01
            )
            touching = bool(
                self.pb.getContactPoints(bodyA=self.object_ids[i], bodyB=self.object_ids[g.reference])
            )
            return on_top and centred and touching
        if g.kind == "marker":
            m = ep.markers[g.reference]
            return np.linalg.norm(pos[:2] - np.array(m.xy)) <= scene.MARKER_HALF and self._resting(i)
        raise ValueError(f"unknown goal kind {g.kind!r}")

    def state(self) -> np.ndarray:
        pos, orn = self.ee_pose()
        rpy = self._p.getEulerFromQuaternion(quat_mul(orn, quat_inv(scene.HOME_ORN)).tolist())
        state = np.array([*pos, *rpy, self.gripper_width(), self.gripper_cmd], dtype=np.float32)
        return np.clip(state, STATE_LOW, STATE_HIGH)  # fingers overshoot their limits by ~1e-5

    def _obs(self) -> dict[str, Any]:
        s = self.config.image_size
        if self.config.render_images:
            image = scene.render(self.pb, self.camera, s, s)
        else:
            image = np.zeros((s, s, 3), np.uint8)
        obs = {"image": image, "state": self.state(), "instruction": self.episode.instruction}
        if w := self.config.wrist_size:
            if self.config.render_images:
                obs["wrist_image"] = scene.render_wrist(self.pb, self.wrist_camera, *self.ee_pose(), w)
            else:
                obs["wrist_image"] = np.zeros((w, w, 3), np.uint8)
        return obs

    def _info(self, success: bool) -> dict[str, Any]:
        ep = self.episode
        return {
            "instruction": ep.instruction,
            "success": bool(success),
            "task": ep.family,
            "suite": ep.suite,
            "episode_seed": ep.seed,
            "steps": self._steps,
        }
