"""What is on the table and how it is drawn: colours, shapes, the robot, tray, glyph markers, camera.

Everything here is geometry and PyBullet bookkeeping; *which* objects go where, and what the
robot is asked to do, is decided in :mod:`playworld.envs.tabletop.tasks`.

World frame: the Panda's base sits at the origin on the table top (``z = 0``) and faces +x.
"Left" is +y and "far from the robot" is +x, both from the robot's point of view; the camera
is placed so that image-left is the robot's left and image-up is away from the robot.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# -- catalogue ---------------------------------------------------------------------------------

#: Object colours (RGB in [0, 1]). ``pink`` and ``cyan`` appear only as new distractors in the
#: ``unseen-objects`` suite.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.12, 0.10),
    "green": (0.15, 0.68, 0.22),
    "blue": (0.12, 0.30, 0.92),
    "yellow": (0.96, 0.84, 0.10),
    "purple": (0.55, 0.22, 0.78),
    "orange": (1.00, 0.50, 0.05),
    "pink": (1.00, 0.55, 0.75),
    "cyan": (0.10, 0.85, 0.88),
}


@dataclass(frozen=True)
class Shape:
    """One kind of object. Lengths in metres."""

    kind: str
    """PyBullet primitive: ``box``, ``cylinder`` or ``sphere``."""
    size: tuple[float, ...]
    """Box half extents (x, y, z); cylinder (radius, height); sphere (radius,)."""
    mass: float
    graspable: bool
    """The Panda gripper (8 cm opening) can pick it up."""
    supports: bool
    """Something can be stacked on it (a flat top)."""
    pushable: bool
    """The push expert can slide it reliably (balls roll away, cans tip over); ``push`` tasks
    on graspable objects that are not pushable are solved by carrying them."""

    @property
    def half_height(self) -> float:
        """Height of the centre above the table when the object rests on it."""
        if self.kind == "box":
            return self.size[2]
        if self.kind == "cylinder":
            return self.size[1] / 2
        return self.size[0]

    @property
    def radius(self) -> float:
        """Radius of the footprint circle (for placing objects apart)."""
        if self.kind == "box":
            return math.hypot(self.size[0], self.size[1])
        return self.size[0]

    @property
    def grasp_height(self) -> float:
        """Height of the gripper's grasp point above the table when grasping this object."""
        # Tall objects are held near the top so the fingertips stay clear of the table.
        return max(0.5 * self.half_height, 2 * self.half_height - 0.025)


SHAPES: dict[str, Shape] = {
    "cube": Shape("box", (0.02, 0.02, 0.02), 0.08, graspable=True, supports=True, pushable=True),
    # a can tips over when the (tapered) fingers push it: it is carried instead
    "can": Shape("cylinder", (0.021, 0.07), 0.08, graspable=True, supports=True, pushable=False),
    "ball": Shape("sphere", (0.022,), 0.05, graspable=True, supports=False, pushable=False),
    "plate": Shape("cylinder", (0.05, 0.012), 0.12, graspable=False, supports=True, pushable=True),
    # new distractor shape, only in the unseen-objects suite
    "bar": Shape("box", (0.045, 0.014, 0.014), 0.06, graspable=False, supports=False, pushable=False),
}

TABLE_COLOR = (0.78, 0.70, 0.58)
ROBOT_COLOR = (0.92, 0.92, 0.94)
HAND_COLOR = (0.25, 0.25, 0.28)

#: Tray: inner half size, wall thickness and height (metres).
TRAY_INNER_HALF = 0.075
TRAY_WALL = 0.01
TRAY_HEIGHT = 0.03
TRAY_FLOOR = 0.006

#: Glyph markers: square stickers on the table with a digit or letter on them.
MARKER_HALF = 0.04

#: Panda joint indices (see franka_panda/panda.urdf in pybullet_data).
ARM_JOINTS = tuple(range(7))
FINGER_JOINTS = (9, 10)
FINGER_LINKS = (9, 10)
EE_LINK = 11  # panda_grasptarget: the point midway between the fingertips
ARM_FORCES = (87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0)
FINGER_OPEN = 0.04  # per finger, metres
# Gentle fingers: 2 x 15 N with friction 0.9 holds a 80 g object many times over, and a firm
# squeeze on a slightly rotated cube would store energy that flings it away on release.
FINGER_FORCE = 15.0
FINGER_SPEED = 0.25  # m/s
ARM_REST = (0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.785)

#: Gripper pointing straight down with yaw 0: the orientation every episode starts from and
#: the reference for the rotation part of the state.
HOME_ORN = (1.0, 0.0, 0.0, 0.0)  # quaternion (x, y, z, w) = 180 degrees about x
HOME_POS = (0.3, 0.0, 0.3)  # near the robot, so the hand hides little of the table at the start


# -- PyBullet process plumbing ------------------------------------------------------------------


@contextlib.contextmanager
def quiet_output() -> Iterator[None]:
    """Silence C-level stdout and stderr: PyBullet prints its build time on import and
    ``argv[0]=`` on connect, once per process - noise in every recording worker."""
    streams = []
    for stream in (sys.stdout, sys.stderr):
        try:
            streams.append(stream.fileno())
            stream.flush()
        except (AttributeError, OSError, ValueError):  # captured / replaced: leave it alone
            pass
    saved = [os.dup(fd) for fd in streams]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in streams:
            os.dup2(devnull, fd)
        yield
    finally:
        _flush_c_stdio()  # C's stdio buffers would otherwise reach the real streams later
        for fd, old in zip(streams, saved, strict=True):
            os.dup2(old, fd)
            os.close(old)
        os.close(devnull)


def _flush_c_stdio() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # no libc symbols (unusual platforms): keep the noise
        pass


def connect():
    """A new headless PyBullet client (``BulletClient`` in DIRECT mode)."""
    with quiet_output():
        import pybullet
        from pybullet_utils.bullet_client import BulletClient

        return BulletClient(connection_mode=pybullet.DIRECT)


# -- robot -------------------------------------------------------------------------------------

_tmp_dir: Path | None = None


def _scratch_dir() -> Path:
    """A per-process temporary folder for generated URDF/textures, removed at exit."""
    global _tmp_dir
    if _tmp_dir is None:
        _tmp_dir = Path(tempfile.mkdtemp(prefix="playworld-tabletop-"))
        atexit.register(shutil.rmtree, _tmp_dir, True)
    return _tmp_dir


def panda_urdf() -> str:
    """Path to a Panda URDF whose *visual* meshes are its (much coarser) collision meshes.

    The stock visual meshes have ~10x the triangles and make TinyRenderer ~7x slower; the
    collision hulls read fine at 128 px.
    """
    path = _scratch_dir() / "panda_fast.urdf"
    if not path.exists():
        import pybullet_data

        root = Path(pybullet_data.getDataPath()) / "franka_panda"
        text = (root / "panda.urdf").read_text()
        text = text.replace("package://meshes/visual/", "package://meshes/collision/")
        text = text.replace("package://meshes/", f"{root}/meshes/")
        path.write_text(text)
    return str(path)


def load_robot(pb) -> int:
    """Load the Panda (fixed base at the origin), colour it, and return its body id."""
    robot = pb.loadURDF(panda_urdf(), useFixedBase=True, flags=pb.URDF_ENABLE_CACHED_GRAPHICS_SHAPES)
    for link in range(-1, pb.getNumJoints(robot)):
        color = HAND_COLOR if link >= 8 else ROBOT_COLOR
        pb.changeVisualShape(robot, link, rgbaColor=(*color, 1.0))
    for link in FINGER_LINKS:
        # No friction anchors (the URDF asks for them): an anchor remembered from the grasp
        # turns a finger brushing the object on the way up into a kick that flings it away.
        pb.changeDynamics(robot, link, lateralFriction=1.5, spinningFriction=0.1, frictionAnchor=False)
    return robot


# -- static scene ------------------------------------------------------------------------------


def add_table(pb) -> int:
    """A large box whose top face is the plane z = 0.

    It is not drawn: it fills the whole camera view, so :func:`render` paints every pixel
    that nothing else covers in the table's colour instead. TinyRenderer's cost grows with the
    pixels a shape covers, and drawing the table made each frame ~2.5x slower.
    """
    half = (0.55, 0.6, 0.05)
    center = (0.35, 0.0, -half[2])
    col = pb.createCollisionShape(pb.GEOM_BOX, halfExtents=half)
    table = pb.createMultiBody(0, col, -1, basePosition=center)
    # PyBullet draws the collision shape of a body without a visual one; alpha 0 skips it
    pb.changeVisualShape(table, -1, rgbaColor=(0, 0, 0, 0))
    pb.changeDynamics(table, -1, lateralFriction=0.5)
    return table


def add_object(pb, shape_name: str, color: str, xy: tuple[float, float], yaw: float) -> int:
    """Create one object resting on the table; returns its body id."""
    shape = SHAPES[shape_name]
    rgba = (*COLORS[color], 1.0)
    if shape.kind == "box":
        col = pb.createCollisionShape(pb.GEOM_BOX, halfExtents=shape.size)
        vis = pb.createVisualShape(pb.GEOM_BOX, halfExtents=shape.size, rgbaColor=rgba)
    elif shape.kind == "cylinder":
        r, h = shape.size
        col = pb.createCollisionShape(pb.GEOM_CYLINDER, radius=r, height=h)
        vertices, indices, normals = cylinder_mesh(r, h)
        vis = pb.createVisualShape(
            pb.GEOM_MESH, vertices=vertices, indices=indices, normals=normals, rgbaColor=rgba
        )
    else:
        col = pb.createCollisionShape(pb.GEOM_SPHERE, radius=shape.size[0])
        vis = pb.createVisualShape(pb.GEOM_SPHERE, radius=shape.size[0], rgbaColor=rgba)
    orn = pb.getQuaternionFromEuler((0.0, 0.0, yaw))
    body = pb.createMultiBody(
        shape.mass, col, vis, basePosition=(xy[0], xy[1], shape.half_height), baseOrientation=orn
    )
    # Friction with the table (0.6 x 0.5) is low enough that a pushed cube slides instead of
    # tipping over; torsional friction with the fingers stops a held object from pivoting
    # between them; rolling friction makes balls rubbery, so a ball let go of stays put.
    pb.changeDynamics(
        body,
        -1,
        lateralFriction=0.6,
        spinningFriction=0.05,
        rollingFriction=0.03 if shape.kind == "sphere" else 0.002,
        linearDamping=0.2,
        angularDamping=0.2,
    )
    return body


def cylinder_mesh(radius: float, height: float, segments: int = 24):
    """Vertices, triangle indices and normals of a closed cylinder centred on the origin.

    PyBullet's own cylinder shares vertices between the caps and the side, so its caps are
    shaded like domes (a plate looked like a ball); here the caps are flat and the side round.
    """
    angles = np.linspace(0, 2 * math.pi, segments, endpoint=False)
    ring = [(radius * math.cos(a), radius * math.sin(a)) for a in angles]
    vertices, normals, indices = [], [], []
    for z, nz in ((h := height / 2, 1.0), (-h, -1.0)):  # caps: a centre and a ring, facing out
        c = len(vertices)
        vertices.append((0.0, 0.0, z))
        vertices += [(x, y, z) for x, y in ring]
        normals += [(0.0, 0.0, nz)] * (segments + 1)
        for i in range(segments):
            a, b = c + 1 + i, c + 1 + (i + 1) % segments
            indices += [c, a, b] if nz > 0 else [c, b, a]
    s = len(vertices)  # side: top and bottom rings again, with outward normals
    for x, y in ring:
        vertices += [(x, y, h), (x, y, -h)]
        normals += [(x / radius, y / radius, 0.0)] * 2
    for i in range(segments):
        t0, b0 = s + 2 * i, s + 2 * i + 1
        t1, b1 = s + 2 * ((i + 1) % segments), s + 2 * ((i + 1) % segments) + 1
        indices += [t0, b0, b1, t0, b1, t1]
    return vertices, indices, normals


def add_tray(pb, color: str, xy: tuple[float, float]) -> int:
    """A fixed, open-topped square tray: a floor and four walls, one rigid body."""
    inner, wall, height, floor = TRAY_INNER_HALF, TRAY_WALL, TRAY_HEIGHT, TRAY_FLOOR
    outer = inner + wall
    halves = [
        (outer, outer, floor / 2),
        (wall / 2, outer, height / 2),
        (wall / 2, outer, height / 2),
        (inner, wall / 2, height / 2),
        (inner, wall / 2, height / 2),
    ]
    offsets = [
        (0, 0, floor / 2),
        (inner + wall / 2, 0, height / 2),
        (-inner - wall / 2, 0, height / 2),
        (0, inner + wall / 2, height / 2),
        (0, -inner - wall / 2, height / 2),
    ]
    rgba = (*COLORS[color], 1.0)
    col = pb.createCollisionShapeArray([pb.GEOM_BOX] * 5, halfExtents=halves, collisionFramePositions=offsets)
    vis = pb.createVisualShapeArray(
        [pb.GEOM_BOX] * 5, halfExtents=halves, visualFramePositions=offsets, rgbaColors=[rgba] * 5
    )
    body = pb.createMultiBody(0, col, vis, basePosition=(xy[0], xy[1], 0.0))
    pb.changeVisualShape(body, -1, rgbaColor=rgba)
    return body


def glyph_texture_path(glyph: str, size: int = 64) -> str:
    """A PNG of ``glyph`` (black on white) in the scratch folder, drawn once per process."""
    path = _scratch_dir() / f"glyph_{ord(glyph)}.png"
    if not path.exists():
        from PIL import Image, ImageDraw, ImageFont

        img = Image.new("RGB", (size, size), (250, 250, 245))
        draw = ImageDraw.Draw(img)
        font = ImageFont.load_default(size=int(size * 0.8))
        draw.text((size / 2, size / 2), glyph, fill=(10, 10, 10), font=font, anchor="mm")
        draw.rectangle((1, 1, size - 2, size - 2), outline=(10, 10, 10), width=2)
        img.save(path)
    return str(path)


def add_marker(pb, glyph: str, xy: tuple[float, float]) -> int:
    """A flat square sticker with ``glyph`` printed on it (visual only: objects slide over it)."""
    h = MARKER_HALF
    # A textured quad whose UVs put the glyph's top towards +x and its left towards +y, so it
    # reads upright in the camera image (TinyRenderer's v axis points up the texture).
    vertices = [(-h, -h, 0.0), (h, -h, 0.0), (h, h, 0.0), (-h, h, 0.0)]
    uvs = [(1.0, 0.0), (1.0, 1.0), (0.0, 1.0), (0.0, 0.0)]
    vis = pb.createVisualShape(
        pb.GEOM_MESH,
        vertices=vertices,
        indices=[0, 1, 2, 0, 2, 3],
        uvs=uvs,
        normals=[(0, 0, 1)] * 4,
    )
    body = pb.createMultiBody(0, -1, vis, basePosition=(xy[0], xy[1], 0.0008))
    tex = pb.loadTexture(glyph_texture_path(glyph))
    pb.changeVisualShape(body, -1, textureUniqueId=tex, rgbaColor=(1, 1, 1, 1))
    return body


# -- camera ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Camera:
    """A fixed pinhole camera above the far edge of the table, looking down at the workspace.

    It is mounted "upside down" (image-up is +x, away from the robot), so the image reads like
    the robot's own view: the robot at the bottom, the robot's left on the image's left, and
    nothing of the arm between the camera and the objects except the hand.
    """

    # High and narrow: the arm, reaching towards the camera, hides less of the table than
    # from a closer, wider camera. Frames the table from x = 0.2 to 0.8 m, y = +-0.35 m.
    eye: tuple[float, float, float] = (0.78, 0.0, 1.6)
    target: tuple[float, float, float] = (0.49, 0.0, 0.0)
    up: tuple[float, float, float] = (1.0, 0.0, 0.0)
    fov_deg: float = 25.0
    near: float = 0.05
    far: float = 3.0


@dataclass(frozen=True)
class WristCamera:
    """A pinhole camera in the palm of the hand, looking out between the fingers.

    It moves and turns with the gripper: the fingers stay at the image's left and right edges
    and an object the gripper is centred above sits in the middle of the image. A fixed
    overhead camera sees a 4 cm object as a few pixels and cannot tell the hand's height from
    its position; this view makes "am I above it yet?" a local question (the role of the wrist
    cameras of ALOHA, Octo and most real-robot datasets; RT-2's robots had none).
    """

    back: float = 0.09
    """Metres from the grasp point (between the fingertips) back up the gripper's axis."""
    fov_deg: float = 75.0
    near: float = 0.01
    far: float = 2.0


def _view_projection(camera: Camera) -> np.ndarray:
    """The fixed camera's 4x4 projection @ view matrix (square images), row-major."""
    import pybullet

    view = np.array(pybullet.computeViewMatrix(camera.eye, camera.target, camera.up)).reshape(4, 4).T
    proj = np.array(pybullet.computeProjectionMatrixFOV(camera.fov_deg, 1.0, camera.near, camera.far)).reshape(4, 4).T
    return proj @ view


def project(camera: Camera, xyz) -> np.ndarray:
    """World points (..., 3) -> where the fixed camera's (square) image shows them, (..., 2) as
    (column, row) fractions of the image side in [0, 1] (0, 0: the top-left corner)."""
    p = np.asarray(xyz, dtype=np.float64)
    clip = np.concatenate([p, np.ones(p.shape[:-1] + (1,))], axis=-1) @ _view_projection(camera).T
    ndc = clip[..., :2] / clip[..., 3:]
    return np.stack([(ndc[..., 0] + 1) / 2, (1 - ndc[..., 1]) / 2], axis=-1)


def unproject(camera: Camera, uv, z: float) -> np.ndarray:
    """Inverse of :func:`project` onto the horizontal plane at height ``z``: image fractions
    (..., 2) -> world (x, y) (..., 2)."""
    uv = np.asarray(uv, dtype=np.float64)
    ndc = np.stack([2 * uv[..., 0] - 1, 1 - 2 * uv[..., 1]], axis=-1)
    inv = np.linalg.inv(_view_projection(camera))
    ends = []
    for depth in (-1.0, 1.0):  # the near and far planes
        q = np.concatenate([ndc, np.full(ndc.shape[:-1] + (1,), depth), np.ones(ndc.shape[:-1] + (1,))], -1) @ inv.T
        ends.append(q[..., :3] / q[..., 3:])
    t = (z - ends[0][..., 2]) / (ends[1][..., 2] - ends[0][..., 2])
    return ends[0][..., :2] + t[..., None] * (ends[1][..., :2] - ends[0][..., :2])


def render(pb, camera: Camera, width: int, height: int) -> np.ndarray:
    """RGB uint8 (height, width, 3) of the fixed camera with TinyRenderer (CPU; no shadows).

    Pixels where nothing was drawn show the table top (see :func:`add_table`).
    """
    view = pb.computeViewMatrix(camera.eye, camera.target, camera.up)
    proj = pb.computeProjectionMatrixFOV(camera.fov_deg, width / height, camera.near, camera.far)
    return _draw(pb, view, proj, width, height)


def render_wrist(pb, camera: WristCamera, grasp_pos, grasp_orn, size: int) -> np.ndarray:
    """RGB uint8 (size, size, 3) of the palm camera of a gripper whose grasp point is at
    ``grasp_pos`` with orientation ``grasp_orn`` (quaternion x, y, z, w; its z axis runs along
    the fingers, its x axis from finger to finger)."""
    rot = np.array(pb.getMatrixFromQuaternion(list(grasp_orn)), dtype=np.float64).reshape(3, 3)
    along, across = rot[:, 2], rot[:, 0]
    eye = np.asarray(grasp_pos, dtype=np.float64) - camera.back * along
    view = pb.computeViewMatrix(eye.tolist(), (eye + along).tolist(), across.tolist())
    proj = pb.computeProjectionMatrixFOV(camera.fov_deg, 1.0, camera.near, camera.far)
    return _draw(pb, view, proj, size, size)


def _draw(pb, view, proj, width: int, height: int) -> np.ndarray:
    _, _, rgba, depth, _ = pb.getCameraImage(
        width,
        height,
        view,
        proj,
        renderer=pb.ER_TINY_RENDERER,
        shadow=0,
        lightDirection=(0.4, 0.2, 1.0),
        lightAmbientCoeff=0.6,
        lightDiffuseCoeff=0.5,
        lightSpecularCoeff=0.05,
        flags=pb.ER_NO_SEGMENTATION_MASK,
    )
    rgb = np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[..., :3].copy()
    empty = np.asarray(depth, dtype=np.float32).reshape(height, width) > 0.9999  # cleared depth
    rgb[empty] = _TABLE_RGB
    return rgb


_TABLE_RGB = np.round(np.array(TABLE_COLOR) * 255).astype(np.uint8)
