"""Procedural multi-domain scenes with exact ground truth for all seven tasks, from a seed.

Three domains mirror the label sets of the real training sets (DESIGN.md section 2):

- ``indoor`` (Hypersim stand-in): a room with furniture-like boxes, spheres and cylinders;
- ``driving`` (Virtual KITTI 2 stand-in): road, buildings, poles with traffic lights and signs, trees,
  moving vehicles and sky;
- ``flying`` (FlyingThings3D stand-in): textured objects with independent motions before a textured room.

Every sample is rendered by the analytic ray caster in :mod:`.raycast`: depth, normals, class ids and
albedo come from the surfaces, shading is Lambertian (directional light plus ambient), and the image is
``albedo * shading`` tone-mapped with gamma 1/2.2 plus mild sensor noise. Frame 2 follows camera
ego-motion and per-object rigid motion; optical flow and scene flow follow every frame-1 surface point
through its motion, and a point is valid only when it lands inside frame 2 and is the first surface hit
along its frame-2 ray (exact occlusion test).

Scene flow is the point's frame-2 camera coordinates minus its frame-1 camera coordinates (OpenCV axes),
so ``project(X1 + scene_flow)`` in frame 2 equals the pixel plus the optical flow.

Determinism and splits: sample ``i`` of ``ProceduralSource(domain, size, length, seed)`` depends only on
``(seed, domain, i)``, so ranks and workers can draw disjoint indices. :func:`procedural_split` fixes the
seeds of the ``train``, ``val`` and ``test`` splits; evaluation uses the same function. Continuous video
of one scene (demo, streaming evaluation) is :mod:`.clip`, built on :func:`render_image` and
:func:`label_frame`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import StableMTLError
from .sample import Label, Sample
from ..tasks import IGNORE_ID, TaskName
from .dataset import Corpus, SampleSource, TaskMixture, official_mixture, select_tasks
from .raycast import (
    Camera,
    Hits,
    Pose,
    Primitive,
    Shape,
    cast_grid,
    first_hit_depth,
    gather_columns,
    rotation,
    scatter_columns,
)
from .textures import CLASS_ID, Checker, Facade, Road, RoomShell, SmoothNoise, Stripes, TrafficLightHead
from ..records import KeyEnum

__all__ = [
    "Domain",
    "Split",
    "DOMAIN_TASKS",
    "AVAILABLE_TASKS",
    "SPLIT_SEEDS",
    "Scene",
    "Rendering",
    "build_scene",
    "render_scene",
    "render_image",
    "label_frame",
    "labels_of",
    "ProceduralSource",
    "procedural_split",
    "srgb_encode",
    "srgb_decode",
    "procedural_mixture",
    "parse_domain",
    "parse_split",
]

GAMMA = 2.2
NOISE_SIGMA = 1.5 / 255.0  # sensor noise on the tone-mapped image


class Domain(KeyEnum):
    """Procedural scene families; each mirrors one real training set's label set."""

    INDOOR = "indoor"
    DRIVING = "driving"
    FLYING = "flying"


class Split(KeyEnum):
    """Held-out splits of procedural data, told apart by their seeds (:data:`SPLIT_SEEDS`)."""

    TRAIN = "train"
    VAL = "val"
    TEST = "test"


# Official label set of each domain, in canonical task order.
DOMAIN_TASKS: dict[Domain, tuple[str, ...]] = {
    Domain.INDOOR: ("normal", "depth", "albedo", "shading"),
    Domain.DRIVING: ("normal", "depth", "semantic", "optical_flow", "scene_flow"),
    Domain.FLYING: ("optical_flow", "scene_flow"),
}
# Tasks the generator can label exactly in each domain (semantic needs the driving classes).
AVAILABLE_TASKS: dict[Domain, tuple[str, ...]] = {
    Domain.INDOOR: ("normal", "depth", "optical_flow", "scene_flow", "albedo", "shading"),
    Domain.DRIVING: ("normal", "depth", "semantic", "optical_flow", "scene_flow", "albedo", "shading"),
    Domain.FLYING: ("normal", "depth", "optical_flow", "scene_flow", "albedo", "shading"),
}
SPLIT_SEEDS: dict[Split, int] = {Split.TRAIN: 0, Split.VAL: 1_000_000_007, Split.TEST: 2_000_000_011}
_DOMAIN_CODE = {Domain.INDOOR: 11, Domain.DRIVING: 23, Domain.FLYING: 37}
_FOCAL_RATIO = {Domain.INDOOR: 0.866, Domain.DRIVING: 0.75, Domain.FLYING: 1.0}  # focal / width


def parse_domain(domain: str | Domain) -> Domain:
    try:
        return Domain(str(domain).strip().lower())
    except ValueError:
        raise StableMTLError(
            f"unknown procedural domain `{domain}`: valid domains are {', '.join(d.value for d in Domain)}"
        ) from None


def parse_split(split: str | Split) -> Split:
    try:
        return Split(str(split).strip().lower())
    except ValueError:
        raise StableMTLError(f"unknown split `{split}`: valid splits are train, val, test") from None


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    """Linear [0, 1] -> display values in [0, 1] (gamma 1/2.2, the tone map of the generated frames)."""
    return np.power(np.clip(linear, 0.0, 1.0), np.asarray(1.0 / GAMMA, dtype=np.asarray(linear).dtype))


def srgb_decode(display: np.ndarray) -> np.ndarray:
    """Inverse of :func:`srgb_encode`."""
    return np.power(np.clip(display, 0.0, 1.0), GAMMA)


@dataclass
class Scene:
    """A generated scene: primitives, two camera poses, light and sky.

    Attributes:
        prims: surfaces with frame-1 poses and frame-1 -> frame-2 motions.
        cam1, cam2: cameras of frame 1 and frame 2 (same intrinsics).
        light: world-frame unit vector towards the directional light.
        ambient: ambient share of the shading in [0, 1).
        sky_zenith, sky_horizon: linear RGB of the sky gradient seen on missed rays (None: black).
    """

    prims: list[Primitive]
    cam1: Camera
    cam2: Camera
    light: np.ndarray
    ambient: float
    sky_zenith: np.ndarray | None
    sky_horizon: np.ndarray | None


@dataclass
class Rendering:
    """Everything a scene yields, in the :class:`~stablemtl_edge.data.sample.Sample` units.

    ``linear1`` is the linear image ``albedo * shading`` (sky colour on misses) before tone mapping and
    noise; ``prim1`` holds the primitive index per pixel (-1 on misses), useful to find smooth surfaces.
    """

    frame1: np.ndarray
    frame2: np.ndarray | None
    linear1: np.ndarray
    depth: np.ndarray
    normal: np.ndarray
    semantic: np.ndarray
    albedo: np.ndarray
    shading: np.ndarray
    hit: np.ndarray
    prim1: np.ndarray
    optical_flow: np.ndarray | None
    scene_flow: np.ndarray | None
    flow_valid: np.ndarray | None
    intrinsics: np.ndarray


# --------------------------------------------------------------------------------------------------
# scene builders


def _colour(rng: np.random.Generator, base: Sequence[float], spread: float) -> np.ndarray:
    # minimum/maximum: what np.clip computes, without its dispatch cost (~60 colours a driving scene)
    return np.minimum(np.maximum(np.asarray(base, dtype=np.float64) + rng.uniform(-spread, spread, 3), 0.02), 0.95)


def _freq(rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v) * rng.uniform(lo, hi)


def _random_texture(rng: np.random.Generator, class_id: int = IGNORE_ID):
    c1 = rng.uniform(0.05, 0.9, 3)
    c2 = rng.uniform(0.05, 0.9, 3)
    kind = rng.integers(3)
    if kind == 0:
        return SmoothNoise(c1, c2, _freq(rng, 1.0, 5.0), _freq(rng, 1.0, 5.0), class_id)
    if kind == 1:
        return Stripes(c1, c2, _freq(rng, 2.0, 8.0), float(rng.uniform(1.0, 3.0)), class_id)
    return Checker(c1, c2, float(rng.uniform(0.2, 0.6)), class_id)


def _small_motion(rng: np.random.Generator, centre: np.ndarray, shift: float, angle: float) -> Pose:
    """Rigid motion rotating about ``centre`` by up to ``angle`` rad and shifting by up to ``shift`` m."""
    rot = rotation(*rng.uniform(-angle, angle, 3))
    t = rng.uniform(-shift, shift, 3)
    return Pose(rot, centre + t - rot @ centre)


def _build_indoor(rng: np.random.Generator, K: np.ndarray, H: int, W: int) -> Scene:
    hx, hy, hz = rng.uniform(2.0, 3.5), rng.uniform(1.25, 1.5), rng.uniform(2.5, 4.5)
    room_c = np.array([0.0, -hy, 0.0])  # floor at y = 0, ceiling at y = -2 hy
    wall = _colour(rng, rng.choice([[0.85, 0.82, 0.75], [0.7, 0.78, 0.85], [0.85, 0.75, 0.7]]), 0.08)
    shell = RoomShell(
        floor1=_colour(rng, [0.55, 0.38, 0.22], 0.1),
        floor2=_colour(rng, [0.4, 0.26, 0.15], 0.08),
        wall=wall,
        ceiling=_colour(rng, [0.9, 0.9, 0.88], 0.05),
        plank=float(rng.uniform(0.12, 0.3)),
    )
    prims = [Primitive(Shape.BOX, np.array([hx, hy, hz]), Pose(np.eye(3), room_c), shell, inside=True)]
    cam_pos = np.array([rng.uniform(-0.5, 0.5) * hx, -rng.uniform(1.2, 1.7), -hz + rng.uniform(0.3, 0.8)])
    cam_rot = rotation(rng.uniform(-0.35, 0.35), rng.uniform(-0.35, -0.05), rng.uniform(-0.03, 0.03))
    for _ in range(rng.integers(3, 8)):
        x, z = rng.uniform(-hx + 0.4, hx - 0.4), rng.uniform(cam_pos[2] + 1.2, hz - 0.4)
        kind = rng.choice(["box", "box", "sphere", "cylinder"])
        yaw = rng.uniform(-np.pi, np.pi)
        if kind == "box":
            size = np.array([rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.9), rng.uniform(0.2, 0.6)])
            centre = np.array([x, -size[1], z])
            tex = (Stripes(_colour(rng, [0.5, 0.35, 0.2], 0.15), _colour(rng, [0.4, 0.28, 0.16], 0.1),
                           _freq(rng, 6.0, 14.0), 1.5) if rng.random() < 0.5 else _random_texture(rng))
            prims.append(Primitive(Shape.BOX, size, Pose(rotation(yaw), centre), tex))
        elif kind == "sphere":
            r = rng.uniform(0.12, 0.45)
            prims.append(Primitive(Shape.SPHERE, np.array([r]), Pose(np.eye(3), np.array([x, -r, z])),
                                   _random_texture(rng)))
        else:
            r, hh = rng.uniform(0.1, 0.35), rng.uniform(0.2, 0.7)
            prims.append(Primitive(Shape.CYLINDER, np.array([r, hh]), Pose(rotation(yaw), np.array([x, -hh, z])),
                                   _random_texture(rng)))
    cam1 = Camera(K, Pose(cam_rot, cam_pos), H, W)
    ego = _small_motion(rng, cam_pos, 0.08, 0.03)
    cam2 = Camera(K, cam1.pose.then(ego), H, W)
    light = np.array([rng.uniform(-0.6, 0.6), -1.0, rng.uniform(-0.6, 0.6)])
    return Scene(prims, cam1, cam2, light / np.linalg.norm(light), float(rng.uniform(0.25, 0.4)), None, None)


# Palettes as arrays: rng.choice converts a list on every call (the draws are the same either way).
_FACADE_COLOURS = np.array([[0.7, 0.62, 0.5], [0.55, 0.55, 0.55], [0.6, 0.35, 0.28], [0.8, 0.78, 0.72]])
_PAINTS = np.array([[0.7, 0.05, 0.05], [0.05, 0.1, 0.4], [0.85, 0.85, 0.85], [0.08, 0.08, 0.08], [0.5, 0.5, 0.55],
                    [0.2, 0.35, 0.2]])


def _build_driving(rng: np.random.Generator, K: np.ndarray, H: int, W: int) -> Scene:
    half_w = rng.uniform(3.5, 7.0)
    sidewalk = rng.uniform(1.5, 3.0)
    road = Road(half_w, sidewalk, _colour(rng, [0.28, 0.28, 0.3], 0.06), _colour(rng, [0.6, 0.58, 0.55], 0.08),
                _colour(rng, [0.35, 0.42, 0.2], 0.08), float(rng.uniform(-0.5, 0.5)))
    prims = [Primitive(Shape.PLANE, np.array([np.inf, np.inf]), Pose.identity(), road)]
    cam_h = rng.uniform(1.4, 1.8)
    cam_pos = np.array([rng.uniform(-0.4, 0.4) * half_w, -cam_h, 0.0])
    cam_rot = rotation(rng.uniform(-0.08, 0.08), rng.uniform(-0.06, 0.02), rng.uniform(-0.02, 0.02))
    edge = half_w + sidewalk
    for side in (-1.0, 1.0):
        z = rng.uniform(-5.0, 5.0)
        while z < 80.0:
            length = rng.uniform(10.0, 30.0)
            if rng.random() < 0.8:
                depth = rng.uniform(6.0, 12.0)
                height = rng.uniform(5.0, 25.0)
                set_back = rng.uniform(0.0, 3.0)
                centre = np.array([side * (edge + set_back + depth / 2), -height / 2, z + length / 2])
                wall = _colour(rng, rng.choice(_FACADE_COLOURS), 0.08)
                facade = Facade(wall, _colour(rng, [0.2, 0.27, 0.35], 0.06), float(rng.uniform(2.0, 3.5)))
                prims.append(Primitive(Shape.BOX, np.array([depth / 2, height / 2, length / 2]),
                                       Pose(np.eye(3), centre), facade))
            elif rng.random() < 0.8:  # a gap with trees
                for _ in range(rng.integers(1, 3)):
                    _add_tree(rng, prims, np.array([side * rng.uniform(edge + 1, edge + 8), 0.0,
                                                    z + rng.uniform(0, length)]))
            z += length + rng.uniform(0.0, 6.0)
        for _ in range(rng.integers(0, 4)):
            _add_tree(rng, prims, np.array([side * rng.uniform(half_w + 0.6, edge - 0.4), 0.0, rng.uniform(4, 70)]))
        for _ in range(rng.integers(1, 3)):
            _add_pole(rng, prims, np.array([side * (half_w + 0.4), 0.0, rng.uniform(6, 60)]), side)
    vehicles = []
    for _ in range(rng.integers(1, 6)):
        lane_x = rng.uniform(-half_w + 1.2, half_w - 1.2)
        z = rng.uniform(6.0, 60.0)
        if abs(lane_x - cam_pos[0]) < 1.5 and z < 9.0:
            continue
        if any(abs(lane_x - vx) < 2.2 and abs(z - vz) < 5.5 for vx, vz in vehicles):
            continue
        vehicles.append((lane_x, z))
        _add_vehicle(rng, prims, lane_x, z)
    cam1 = Camera(K, Pose(cam_rot, cam_pos), H, W)
    forward = rng.uniform(0.3, 1.5)
    ego_rot = rotation(rng.uniform(-0.03, 0.03), rng.uniform(-0.005, 0.005), 0.0)
    ego = Pose(ego_rot, cam_pos + np.array([rng.uniform(-0.05, 0.05), 0.0, forward]) - ego_rot @ cam_pos)
    cam2 = Camera(K, cam1.pose.then(ego), H, W)
    az, el = rng.uniform(-np.pi, np.pi), rng.uniform(0.35, 1.1)
    light = np.array([np.cos(el) * np.sin(az), -np.sin(el), np.cos(el) * np.cos(az)])
    zenith = _colour(rng, [0.25, 0.45, 0.85], 0.08)
    horizon = _colour(rng, [0.75, 0.82, 0.9], 0.06)
    return Scene(prims, cam1, cam2, light, float(rng.uniform(0.3, 0.45)), zenith, horizon)


def _add_tree(rng: np.random.Generator, prims: list[Primitive], base: np.ndarray) -> None:
    veg = CLASS_ID["vegetation"]
    trunk_h = rng.uniform(1.5, 3.5)
    r_trunk = rng.uniform(0.12, 0.25)
    bark = SmoothNoise(_colour(rng, [0.3, 0.22, 0.14], 0.05), _colour(rng, [0.2, 0.14, 0.08], 0.04),
                       np.array([0.0, 7.0, 0.0]), np.array([9.0, 0.0, 9.0]), veg)
    prims.append(Primitive(Shape.CYLINDER, np.array([r_trunk, trunk_h / 2]),
                           Pose(np.eye(3), base + np.array([0.0, -trunk_h / 2, 0.0])), bark))
    crown_r = rng.uniform(1.0, 2.8)
    leaves = SmoothNoise(_colour(rng, [0.2, 0.4, 0.1], 0.07), _colour(rng, [0.08, 0.22, 0.05], 0.04),
                         _freq(rng, 4.0, 9.0), _freq(rng, 4.0, 9.0), veg)
    prims.append(Primitive(Shape.SPHERE, np.array([crown_r]),
                           Pose(np.eye(3), base + np.array([0.0, -trunk_h - 0.7 * crown_r, 0.0])), leaves))


def _add_pole(rng: np.random.Generator, prims: list[Primitive], base: np.ndarray, side: float) -> None:
    height = rng.uniform(3.5, 6.5)
    metal = SmoothNoise(_colour(rng, [0.55, 0.55, 0.55], 0.1), _colour(rng, [0.45, 0.45, 0.47], 0.08),
                        np.array([0.0, 3.0, 0.0]), np.array([0.0, 1.0, 5.0]), CLASS_ID["pole"])
    prims.append(Primitive(Shape.CYLINDER, np.array([rng.uniform(0.06, 0.12), height / 2]),
                           Pose(np.eye(3), base + np.array([0.0, -height / 2, 0.0])), metal))
    top = base + np.array([0.0, -height, 0.0])
    if rng.random() < 0.5:
        hh = rng.uniform(0.35, 0.5)
        head = TrafficLightHead(_colour(rng, [0.12, 0.12, 0.1], 0.04), hh)
        prims.append(Primitive(Shape.BOX, np.array([0.16, hh, 0.14]),
                               Pose(np.eye(3), top + np.array([0.0, -hh * 0.2, -0.2])), head))
    else:
        colours = [[0.8, 0.1, 0.1], [0.1, 0.25, 0.7], [0.9, 0.8, 0.1], [0.9, 0.9, 0.9]]
        face = np.asarray(colours[rng.integers(len(colours))], dtype=np.float64)
        rim = np.array([0.9, 0.9, 0.9]) if face[0] < 0.85 or face[2] > 0.5 else np.array([0.8, 0.1, 0.1])
        sign = SmoothNoise(face, rim, np.array([9.0, 0.0, 0.0]), np.array([0.0, 9.0, 0.0]), CLASS_ID["traffic sign"])
        r = rng.uniform(0.3, 0.45)
        # A disc: a thin cylinder whose axis (local y) points along the road (world z).
        prims.append(Primitive(Shape.CYLINDER, np.array([r, 0.03]),
                               Pose(rotation(0.0, np.pi / 2, 0.0), top + np.array([-side * 0.1, -0.3, -0.1])), sign))


def _add_vehicle(rng: np.random.Generator, prims: list[Primitive], x: float, z: float) -> None:
    veh = CLASS_ID["vehicle"]
    paint = rng.choice(_PAINTS)
    body_tex = SmoothNoise(_colour(rng, paint, 0.05), _colour(rng, paint, 0.08), _freq(rng, 0.5, 2.0),
                           _freq(rng, 0.5, 2.0), veh)
    glass = SmoothNoise(_colour(rng, [0.1, 0.12, 0.15], 0.03), _colour(rng, [0.2, 0.25, 0.3], 0.05),
                        _freq(rng, 1.0, 3.0), _freq(rng, 1.0, 3.0), veh)
    half = np.array([rng.uniform(0.8, 1.0), rng.uniform(0.35, 0.5), rng.uniform(1.9, 2.4)])
    yaw = rng.uniform(-0.1, 0.1)
    body_c = np.array([x, -0.3 - half[1], z])
    cabin_half = np.array([half[0] * 0.85, rng.uniform(0.3, 0.4), half[2] * rng.uniform(0.45, 0.6)])
    cabin_c = body_c + rotation(yaw) @ np.array([0.0, -half[1] - cabin_half[1], -0.1 * half[2]])
    speed = rng.uniform(0.0, 2.0) * (1.0 if rng.random() < 0.7 else 0.0)
    turn = rotation(rng.uniform(-0.02, 0.02))
    shift = rotation(yaw) @ np.array([0.0, 0.0, speed])
    motion = Pose(turn, body_c + shift - turn @ body_c)
    prims.append(Primitive(Shape.BOX, half, Pose(rotation(yaw), body_c), body_tex, motion))
    prims.append(Primitive(Shape.BOX, cabin_half, Pose(rotation(yaw), cabin_c), glass, motion))
    tyre = SmoothNoise(np.array([0.05, 0.05, 0.05]), np.array([0.15, 0.15, 0.15]),
                       np.array([0.0, 20.0, 0.0]), np.array([0.0, 0.0, 20.0]), veh)
    for sz in (-0.65, 0.65):  # one cylinder per axle: its two caps are the wheels
        axle_c = body_c + rotation(yaw) @ np.array([0.0, half[1], sz * half[2]])
        prims.append(Primitive(Shape.CYLINDER, np.array([0.3, half[0] * 0.98]),
                               Pose(rotation(yaw) @ rotation(0.0, 0.0, np.pi / 2), axle_c), tyre, motion))


def _build_flying(rng: np.random.Generator, K: np.ndarray, H: int, W: int) -> Scene:
    half = rng.uniform(25.0, 40.0, 3)
    back = _random_texture(rng)
    back = (Checker(back.c1, back.c2, float(rng.uniform(1.5, 4.0))) if isinstance(back, Checker) else
            SmoothNoise(rng.uniform(0.05, 0.9, 3), rng.uniform(0.05, 0.9, 3), _freq(rng, 0.1, 0.6),
                        _freq(rng, 0.1, 0.6)))
    prims = [Primitive(Shape.BOX, half, Pose(rotation(*rng.uniform(-0.3, 0.3, 3)), np.zeros(3)), back, inside=True)]
    cam_pos = np.zeros(3)
    cam_rot = rotation(*rng.uniform(-0.2, 0.2, 3))
    fx = K[0, 0]
    for _ in range(rng.integers(5, 12)):
        z = rng.uniform(3.0, 15.0)
        x = rng.uniform(-0.5, 0.5) * W / fx * z
        y = rng.uniform(-0.5, 0.5) * H / fx * z
        centre = cam_rot @ np.array([x, y, z])
        kind = rng.choice([Shape.BOX, Shape.SPHERE, Shape.CYLINDER])
        scale = rng.uniform(0.3, 1.5) * z / 8.0
        if kind is Shape.BOX:
            size = rng.uniform(0.4, 1.0, 3) * scale
        elif kind is Shape.SPHERE:
            size = np.array([rng.uniform(0.5, 1.0) * scale])
        else:
            size = np.array([rng.uniform(0.3, 0.7), rng.uniform(0.4, 1.0)]) * scale
        motion = _small_motion(rng, centre, 0.05 * z, 0.12)
        prims.append(Primitive(kind, size, Pose(rotation(*rng.uniform(-np.pi, np.pi, 3)), centre),
                               _random_texture(rng), motion))
    cam1 = Camera(K, Pose(cam_rot, cam_pos), H, W)
    cam2 = Camera(K, cam1.pose.then(_small_motion(rng, cam_pos, 0.3, 0.03)), H, W)
    light = rng.normal(size=3)
    light[1] = -abs(light[1])
    return Scene(prims, cam1, cam2, light / np.linalg.norm(light), float(rng.uniform(0.3, 0.5)), None, None)


_BUILDERS = {Domain.INDOOR: _build_indoor, Domain.DRIVING: _build_driving, Domain.FLYING: _build_flying}


def build_scene(domain: str | Domain, height: int, width: int, rng: np.random.Generator) -> Scene:
    """Draw a random scene of ``domain`` for an image of ``height`` x ``width`` pixels."""
    domain = parse_domain(domain)
    K = Camera.intrinsics(height, width, _FOCAL_RATIO[domain])
    return _BUILDERS[domain](rng, K, height, width)


# --------------------------------------------------------------------------------------------------
# rendering


def _shade(scene: Scene, normal: np.ndarray, hit: np.ndarray) -> np.ndarray:
    lambert = np.clip(np.tensordot(scene.light, normal, axes=1), 0.0, None)
    return np.where(hit, scene.ambient + (1.0 - scene.ambient) * lambert, 0.0)


def _sky(scene: Scene, rays: np.ndarray) -> np.ndarray:
    """Sky colour ``(3, ...)`` for world ray directions ``(3, ...)``: zenith to horizon gradient."""
    up = np.sqrt(np.clip(-rays[1] / np.sqrt((rays * rays).sum(axis=0)), 0.0, 1.0))
    shape = (3,) + (1,) * (rays.ndim - 1)
    return scene.sky_horizon.reshape(shape) + (scene.sky_zenith - scene.sky_horizon).reshape(shape) * up


def _linear_image(scene: Scene, hits: Hits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear image ``(H, W, 3)``, shading ``(H, W)`` and hit mask."""
    hit = hits.prim >= 0
    shading = _shade(scene, hits.normal, hit)
    linear = hits.albedo * shading  # zero on misses (no albedo, no shading) ...
    miss = ~hit
    if scene.sky_zenith is not None and miss.any():
        where = np.flatnonzero(miss)  # ... where the sky shows when there is one
        scatter_columns(linear.reshape(3, -1), where, _sky(scene, gather_columns(hits.rays.reshape(3, -1), where)))
    return np.moveaxis(linear, 0, -1), shading, hit


def _to_uint8(linear: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Tone map, add sensor noise and quantise; in place on one float32 buffer (same values as
    ``srgb_encode`` and out-of-place arithmetic, fewer large temporaries)."""
    display = linear.astype(np.float32)
    np.clip(display, 0.0, 1.0, out=display)
    np.power(display, np.float32(1.0 / GAMMA), out=display)
    if noise > 0:
        jitter = rng.standard_normal(display.shape, dtype=np.float32)
        jitter *= np.float32(noise)
        display += jitter
    display *= np.float32(255.0)
    np.rint(display, out=display)
    np.clip(display, 0, 255, out=display)
    return display.astype(np.uint8)


def render_scene(scene: Scene, rng: np.random.Generator, with_frame2: bool = True,
                 noise: float = NOISE_SIGMA) -> Rendering:
    """Render frame 1 (and frame 2 with exact flows when ``with_frame2``) with all labels."""
    h1 = cast_grid(scene.cam1, scene.prims, 0)
    frame1, linear1, shading, hit = render_image(scene, h1, rng, noise)
    if not with_frame2:
        return label_frame(scene, h1, frame1, linear1, shading, hit, None)
    h2 = cast_grid(scene.cam2, scene.prims, 1)
    frame2 = render_image(scene, h2, rng, noise)[0]
    return label_frame(scene, h1, frame1, linear1, shading, hit, frame2, frame2_boxes=h2.boxes)


def render_image(scene: Scene, hits: Hits, rng: np.random.Generator,
                 noise: float = NOISE_SIGMA) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The uint8 frame of cast ``hits`` (noise drawn from ``rng``), its linear image, shading and hit mask."""
    linear, shading, hit = _linear_image(scene, hits)
    return _to_uint8(linear, rng, noise), linear, shading, hit


def label_frame(scene: Scene, h1: Hits, frame1: np.ndarray, linear1: np.ndarray, shading: np.ndarray,
                hit: np.ndarray, frame2: np.ndarray | None, frame2_boxes: list | None = None) -> Rendering:
    """All labels of frame 1 from its cast ``h1``; flows to ``scene.cam2`` when ``frame2`` is given.

    ``frame2_boxes`` are the ``boxes`` of frame 2's cast (``scene.cam2``, frame 1) when the caller has them.
    """
    cam1 = scene.cam1
    normal_cam = np.moveaxis(np.tensordot(cam1.pose.rot.T, h1.normal, axes=1), 0, -1)  # world -> camera 1
    normal_gl = normal_cam * np.array([1.0, -1.0, -1.0])  # OpenCV -> OpenGL axes
    semantic = h1.semantic.copy()
    semantic[~hit] = CLASS_ID["sky"] if scene.sky_zenith is not None else IGNORE_ID
    flow = sflow = fvalid = None
    if frame2 is not None:
        flow, sflow, fvalid = _flows(scene, h1, hit, frame2_boxes)
    return Rendering(
        frame1=frame1,
        frame2=frame2,
        linear1=linear1.astype(np.float32),
        depth=np.where(hit, h1.depth, np.inf).astype(np.float32),
        normal=np.where(hit[..., None], normal_gl, 0.0).astype(np.float32),
        semantic=semantic,
        albedo=np.where(hit[..., None], np.moveaxis(h1.albedo, 0, -1), 0.0).astype(np.float32),
        shading=shading.astype(np.float32),
        hit=hit,
        prim1=h1.prim,
        optical_flow=flow,
        scene_flow=sflow,
        flow_valid=fvalid,
        intrinsics=cam1.K.astype(np.float32),
    )


def _flows(scene: Scene, h1: Hits, hit: np.ndarray, boxes2: list | None = None):
    """Optical flow ``(H, W, 2)``, scene flow ``(H, W, 3)`` and their validity for frame-1 hits."""
    cam1, cam2 = scene.cam1, scene.cam2
    H, W = hit.shape
    flow = np.zeros((2, H * W))
    sflow = np.zeros((3, H * W))
    valid = np.zeros(H * W, dtype=bool)
    idx = np.flatnonzero(hit)
    if idx.size:
        X1 = gather_columns(h1.point.reshape(3, -1), idx)
        X2 = X1.copy()
        moving = np.array([not p.is_static for p in scene.prims])
        if moving.any():
            owner = h1.prim.ravel()[idx]
            # Only the pixels of moving primitives are sorted by owner (the static scene is most of the image).
            on_moving = np.flatnonzero(moving[owner])
            order = on_moving[np.argsort(owner[on_moving], kind="stable")]
            starts = np.searchsorted(owner[order], np.arange(len(scene.prims) + 1))
            for k in np.flatnonzero(moving):
                sel = order[starts[k] : starts[k + 1]]
                if sel.size:
                    scatter_columns(X2, sel, scene.prims[k].moved(gather_columns(X1, sel)))
        P1 = cam1.pose.rot.T @ (X1 - cam1.pose.pos[:, None])
        P2 = cam2.pose.rot.T @ (X2 - cam2.pose.pos[:, None])
        K = cam2.K
        with np.errstate(divide="ignore", invalid="ignore"):
            u2 = K[0, 0] * P2[0] / P2[2] + K[0, 2]
            v2 = K[1, 1] * P2[1] / P2[2] + K[1, 2]
        inside = (P2[2] > 0.05) & (u2 >= 0) & (u2 <= W - 1) & (v2 >= 0) & (v2 <= H - 1)
        sub = np.flatnonzero(inside)
        if sub.size:
            first = first_hit_depth(cam2, scene.prims, 1, gather_columns(P2, sub), boxes2)
            z = P2[2, sub]
            vis = sub[first >= z * (1.0 - 1e-4) - 1e-5]
            keep = idx[vis]
            v1, u1 = np.divmod(keep, W)
            flow[0, keep] = u2[vis] - u1
            flow[1, keep] = v2[vis] - v1
            scatter_columns(sflow, keep, gather_columns(P2, vis) - gather_columns(P1, vis))
            valid[keep] = True
    return (np.moveaxis(flow.reshape(2, H, W), 0, -1).astype(np.float32),
            np.moveaxis(sflow.reshape(3, H, W), 0, -1).astype(np.float32), valid.reshape(H, W))


# --------------------------------------------------------------------------------------------------
# the source


def labels_of(r: Rendering, tasks: Sequence[str]) -> dict[str, Label]:
    """The :class:`Sample` labels of ``tasks`` from a rendering (each with its own validity mask)."""
    labels: dict[str, Label] = {}
    for key in tasks:
        if key == "depth":
            labels[key] = Label(r.depth, r.hit.copy())
        elif key == "normal":
            labels[key] = Label(r.normal, r.hit.copy())
        elif key == "semantic":
            labels[key] = Label(r.semantic, r.semantic != IGNORE_ID)
        elif key == "albedo":
            labels[key] = Label(r.albedo, r.hit.copy())
        elif key == "shading":
            labels[key] = Label(r.shading, r.hit.copy())
        elif key == "optical_flow":
            labels[key] = Label(r.optical_flow, r.flow_valid.copy())
        elif key == "scene_flow":
            labels[key] = Label(r.scene_flow, r.flow_valid.copy())
    return labels


class ProceduralSource(SampleSource):
    """Endless-looking, deterministic procedural data of one domain.

    Args:
        domain: ``indoor``, ``driving`` or ``flying``.
        size: image ``(height, width)`` in pixels, each >= 8.
        length: number of distinct samples (indices ``0 .. length-1``).
        seed: base seed; sample ``i`` depends only on ``(seed, domain, i)``.
        tasks: tasks to label; default the domain's official set (:data:`DOMAIN_TASKS`), any subset of
            :data:`AVAILABLE_TASKS` allowed.
        noise: standard deviation of the sensor noise on the [0, 1] display values (0 disables it).
    """

    def __init__(self, domain: str | Domain, size: tuple[int, int] = (128, 160), length: int = 10_000,
                 seed: int = 0, tasks: Sequence[str | TaskName] | None = None, noise: float = NOISE_SIGMA) -> None:
        self._domain = parse_domain(domain)
        height, width = (int(s) for s in size)
        if height < 8 or width < 8:
            raise StableMTLError(f"procedural image size must be at least 8x8 pixels, got {height}x{width}")
        if length < 1:
            raise StableMTLError(f"procedural source length must be >= 1, got {length}")
        self.size = (height, width)
        self.length = int(length)
        self.seed = int(seed)
        self.noise = float(noise)
        self._tasks = (DOMAIN_TASKS[self._domain] if tasks is None else
                       select_tasks(tasks, AVAILABLE_TASKS[self._domain], f"the `{self._domain}` domain"))

    @property
    def domain(self) -> str:
        return self._domain.value

    @property
    def tasks(self) -> tuple[str, ...]:
        return self._tasks

    def __len__(self) -> int:
        return self.length

    def rng(self, index: int) -> np.random.Generator:
        """The generator behind sample ``index`` (independent streams for every index and seed)."""
        return np.random.default_rng([self.seed & 0xFFFFFFFF, self.seed >> 32, _DOMAIN_CODE[self._domain], index])

    def render(self, index: int) -> Rendering:
        """Full rendering of sample ``index``, including maps the :class:`Sample` does not carry."""
        index = self._check_index(index)
        rng = self.rng(index)
        scene = build_scene(self._domain, *self.size, rng)
        two = any(k in ("optical_flow", "scene_flow") for k in self._tasks)
        return render_scene(scene, rng, with_frame2=two, noise=self.noise)

    def __getitem__(self, index: int) -> Sample:
        r = self.render(index)
        return Sample(
            frame1=r.frame1,
            frame2=r.frame2,
            labels=labels_of(r, self._tasks),
            domain=self.domain,
            name=f"procedural:{self.domain}:seed={self.seed}:{int(index)}",
            intrinsics=r.intrinsics,
        )


def procedural_split(split: str | Split, domain: str | Domain, size: tuple[int, int] = (128, 160),
                     length: int = 10_000, tasks: Sequence[str | TaskName] | None = None) -> ProceduralSource:
    """The procedural source of a named split; train, val and test never share a scene.

    The split's seed is :data:`SPLIT_SEEDS` ``[split]``; evaluation on procedural data must use this
    function so that held-out numbers never see training scenes.
    """
    return ProceduralSource(domain, size=size, length=length, seed=SPLIT_SEEDS[parse_split(split)], tasks=tasks)


def procedural_mixture(split: str | Split = Split.TRAIN, size: tuple[int, int] = (128, 160),
                       length: int = 10_000, tasks: Sequence[str | TaskName] | None = None) -> TaskMixture:
    """The official per-task mix with each corpus replaced by its procedural stand-in of ``split``.

    Hypersim -> ``indoor``, Virtual KITTI 2 -> ``driving``, FlyingThings3D -> ``flying``; each source
    labels its domain's official task set, so the probabilities are exactly those of :data:`OFFICIAL_MIX`.
    """
    sources = {c: procedural_split(split, c.procedural_domain, size=size, length=length) for c in Corpus}
    return official_mixture(sources, tasks)
