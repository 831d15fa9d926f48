"""A small vectorised ray caster: planes, boxes, spheres and cylinders seen by a pinhole camera.

It exists so the procedural scenes have *exact* geometry: depth, normals and the correspondences that give
optical and scene flow are computed from the same analytic surfaces, never estimated from images.

Conventions: world and camera frames use OpenCV axes (x right, y down, z forward). Camera rays are
``K^-1 [u, v, 1]`` with z = 1, so the ray parameter of a hit *is* its planar depth. Pixel centres are at
integer coordinates. numpy only.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .textures import texture_runs

__all__ = [
    "Shape",
    "intersect_runs",
    "normal_runs",
    "Pose",
    "Camera",
    "Primitive",
    "Hits",
    "cast_grid",
    "first_hit_depth",
    "rotation",
    "gather_columns",
    "scatter_columns",
    "pixel_boxes",
]

NEAR = 1e-3  # hits closer than this along a ray (z = 1 scale) are ignored
_INF = np.float32(np.inf)


class Shape(enum.Enum):
    """Analytic surfaces, each defined in its local frame (see :class:`Primitive`)."""

    PLANE = "plane"  # y = 0, normal -y (up), half extents (hx, hz), inf for unbounded
    BOX = "box"  # axis-aligned, half extents (hx, hy, hz)
    SPHERE = "sphere"  # radius r at the origin
    CYLINDER = "cylinder"  # axis y, (radius, half height), capped


def rotation(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Rotation matrix from angles in radians: yaw about y, then pitch about x, then roll about z."""
    cy, sy = np.cos(yaw), np.sin(yaw)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    if pitch == 0 and roll == 0 and sy != 0:
        return ry  # what the products with two identities give, bit for bit (no -0.0 entry to lose)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return ry @ rx @ rz


@dataclass(frozen=True)
class Pose:
    """Rigid transform local -> world: ``x_world = rot @ x_local + pos``."""

    rot: np.ndarray
    pos: np.ndarray

    @staticmethod
    def identity() -> Pose:
        return Pose(np.eye(3), np.zeros(3))

    def then(self, other: Pose) -> Pose:
        """Apply ``self`` first, then ``other`` (``other ∘ self``)."""
        return Pose(other.rot @ self.rot, other.rot @ self.pos + other.pos)

    def inverse_apply(self, pts: np.ndarray) -> np.ndarray:
        """World points ``(..., 3)`` -> local frame."""
        return (pts - self.pos) @ self.rot

    @functools.cached_property
    def inverse_rot32(self) -> np.ndarray:
        """``rot.T`` in float32: rotates the float32 world ray directions into the local frame."""
        return self.rot.T.astype(np.float32)


@dataclass(frozen=True)
class Camera:
    """Pinhole camera: intrinsics plus pose (camera -> world)."""

    K: np.ndarray
    pose: Pose
    height: int
    width: int

    @staticmethod
    def intrinsics(height: int, width: int, focal_ratio: float) -> np.ndarray:
        """Square pixels, focal = ``focal_ratio * width``, principal point at the image centre."""
        f = focal_ratio * width
        return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])

    def rays(self) -> np.ndarray:
        """Camera-frame ray directions ``(3, H*W)`` (row-major pixels) with z = 1."""
        return _grid_rays(self.height, self.width, self.K)

    def world_to_camera(self, pts: np.ndarray) -> np.ndarray:
        """World points ``(..., 3)`` -> camera frame (OpenCV axes)."""
        return self.pose.inverse_apply(pts)


_RAY_CACHE: dict[tuple, np.ndarray] = {}
_PIXEL_CACHE: dict[tuple[int, int], np.ndarray] = {}


def _pixel_index(height: int, width: int) -> np.ndarray:
    """Row-major flat pixel indices ``(H, W)`` (read-only, cached per size)."""
    index = _PIXEL_CACHE.get((height, width))
    if index is None:
        index = np.arange(height * width).reshape(height, width)
        index.setflags(write=False)
        if len(_PIXEL_CACHE) > 16:
            _PIXEL_CACHE.clear()
        _PIXEL_CACHE[(height, width)] = index
    return index


def _grid_rays(height: int, width: int, K: np.ndarray) -> np.ndarray:
    key = (height, width, *np.asarray(K, dtype=np.float64).ravel().tolist())
    rays = _RAY_CACHE.get(key)
    if rays is None:
        u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
        rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)]).reshape(3, -1)
        rays = rays.astype(np.float32)
        rays.setflags(write=False)
        if len(_RAY_CACHE) > 16:
            _RAY_CACHE.clear()
        _RAY_CACHE[key] = rays
    return rays


# A texture maps local hit points and local normals (3, N) to albedo (3, N) in [0, 1] and class ids (N,).
Texture = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class Primitive:
    """One surface of a scene.

    Attributes:
        shape: which analytic surface.
        size: shape parameters in metres (see :class:`Shape`).
        pose: local -> world pose in frame 1.
        texture: albedo and class ids from local coordinates, so textures move with the object.
        motion: rigid world-frame motion from frame 1 to frame 2; None for static objects.
        inside: for a box, the camera sees its inner faces (a room); hits take the exit point.
    """

    shape: Shape
    size: np.ndarray
    pose: Pose
    texture: Texture
    motion: Pose | None = None
    inside: bool = False

    def __post_init__(self) -> None:
        self.size_floats = tuple(np.asarray(self.size, dtype=np.float64).tolist())
        self.is_static = self.motion is None
        self._pose2 = self.pose if self.motion is None else self.pose.then(self.motion)
        self.half_extents = self._half_extents()

    def moved(self, pts: np.ndarray) -> np.ndarray:
        """Frame-2 positions of world points ``(3, N)`` on this primitive in frame 1."""
        if self.motion is None:
            return pts
        return self.motion.rot @ pts + self.motion.pos[:, None]

    def pose_at(self, frame: int) -> Pose:
        return self.pose if frame == 0 else self._pose2

    def _half_extents(self) -> np.ndarray:
        """Half extents of the local axis-aligned bounding box (inf for an unbounded plane)."""
        s = np.asarray(self.size, dtype=np.float64)
        if self.shape is Shape.SPHERE:
            return np.full(3, s[0])
        if self.shape is Shape.BOX:
            return s.copy()
        if self.shape is Shape.CYLINDER:
            return np.array([s[0], s[1], s[0]])
        return np.array([s[0], 0.0, s[1]])

    @property
    def kind(self) -> tuple[Shape, bool]:
        """What decides the intersection and normal formulas: primitives of one kind are cast together."""
        return self.shape, self.inside

    # -- intersection in local coordinates ------------------------------------------------------------
    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Ray parameter of the first hit beyond NEAR (inf on a miss).

        Args:
            o: local ray origin ``(3,)``.
            d: local ray directions ``(3, N)`` (rows x, y, z: contiguous rows keep numpy fast).
        """
        return intersect_runs([self], np.asarray(o, dtype=np.float64)[None], d, [d.shape[1]])

    def local_normal(self, p: np.ndarray) -> np.ndarray:
        """Outward (or, for an inside box, inward) unit normal at local surface points ``p`` (3, N)."""
        return normal_runs([self], p, [p.shape[1]])


# -- many primitives at once -------------------------------------------------------------------------------
# The functions below take primitives of one kind and their rays (or surface points) as consecutive column
# runs, run j belonging to primitive j. Per-primitive constants are Python floats computed as the scalar
# formulas always were; for one primitive they enter the array arithmetic as they are, for several they are
# rounded to float32 (what numpy does with a Python float next to a float32 array) and repeated per column.
# Either way a primitive's result is bit for bit the same alone or in a batch: batching only saves numpy's
# per-call overhead, which dominates for the small pixel rectangles of most primitives.


def _expander(counts: Sequence[int], dtype: type = np.float32) -> Callable[[list], object]:
    """Per-primitive values -> per-column operands (the value itself for a single primitive)."""
    if len(counts) == 1:
        return lambda values: values[0]

    def expand(values: list) -> np.ndarray:
        arr = np.array(values)
        return np.repeat(arr.astype(dtype) if arr.dtype == np.float64 else arr, counts)

    return expand


def intersect_runs(prims: Sequence[Primitive], o: np.ndarray, d: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """First-hit ray parameters ``(N,)`` of primitives of one kind.

    Args:
        prims: ``M`` primitives sharing :attr:`Primitive.kind`.
        o: local ray origins ``(M, 3)`` (float64), one per primitive.
        d: local ray directions ``(3, N)`` float32, ``counts[j]`` consecutive columns per primitive.
        counts: ``(M,)`` column counts summing to ``N``.
    """
    shape, inside = prims[0].kind
    col = _expander(counts)
    origins = o.tolist()
    sizes = [p.size_floats for p in prims]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if shape is Shape.SPHERE:
            return _hit_sphere(origins, d, [s[0] for s in sizes], col)
        if shape is Shape.BOX:
            return _hit_box(origins, d, sizes, inside, col)
        if shape is Shape.CYLINDER:
            return _hit_cylinder(origins, d, [s[0] for s in sizes], [s[1] for s in sizes], col)
        return _hit_plane(origins, d, sizes, col)


def _hit_sphere(o, d, r, col):
    dx, dy, dz = d
    c = [x ** 2 + y ** 2 + z ** 2 - rr * rr for (x, y, z), rr in zip(o, r)]
    a = dx * dx + dy * dy + dz * dz
    b = col([x for x, _, _ in o]) * dx + col([y for _, y, _ in o]) * dy + col([z for _, _, z in o]) * dz
    disc = b * b - a * col(c)
    sq = np.sqrt(np.maximum(disc, 0.0))
    inside = [ci < 0 for ci in c]  # origin inside: the exit point is the hit
    t = (-b + sq) / a if all(inside) else (-b - sq) / a
    if any(inside) and not all(inside):
        t = np.where(col(inside), (-b + sq) / a, t)
    return np.where((disc >= 0) & (t > NEAR), t, np.inf)


def _hit_box(o, d, h, inside, col):
    tmin = tmax = None
    for axis in range(3):
        inv = 1.0 / d[axis]
        ta = col([-hh[axis] - oo[axis] for oo, hh in zip(o, h)]) * inv
        tb = col([hh[axis] - oo[axis] for oo, hh in zip(o, h)]) * inv
        lo, hi = np.fmin(ta, tb), np.fmax(ta, tb)
        tmin = lo if tmin is None else np.fmax(tmin, lo)
        tmax = hi if tmax is None else np.fmin(tmax, hi)
    ok = tmax >= np.maximum(tmin, NEAR)
    t = tmax if inside else np.where(tmin > NEAR, tmin, tmax)
    return np.where(ok, t, np.inf)


def _hit_cylinder(o, d, r, hh, col):
    """Capped cylinder along local y. From outside, a ray enters through the side (near root) or
    through the one cap that faces the origin, so only those are tested."""
    dx, dy, dz = d
    c = [x ** 2 + z ** 2 - rr * rr for (x, _, z), rr in zip(o, r)]
    a = dx * dx + dz * dz
    b = col([x for x, _, _ in o]) * dx + col([z for _, _, z in o]) * dz
    disc = b * b - a * col(c)
    sq = np.sqrt(np.maximum(disc, 0.0))
    best = np.full(dx.shape, np.inf, dtype=d.dtype)
    through = [ci <= 0 for ci in c]  # the origin is inside the infinite cylinder: the far root can count
    roots = [((-b - sq) / a, [True] * len(o))]
    if any(through):
        roots.append(((-b + sq) / a, through))
    y0, half = col([y for _, y, _ in o]), col(hh)
    for t, allowed in roots:
        y = y0 + t * dy
        ok = (disc >= 0) & (t > NEAR) & (np.abs(y) <= half) & (t < best)
        best = np.where(ok if all(allowed) else ok & col(allowed), t, best)
    # Caps: the one facing an origin above or below; both (-hh, then hh) from inside the cylinder.
    first = [(h if y > h else -h) for (_, y, _), h in zip(o, hh)]
    level = [-h <= y <= h for (_, y, _), h in zip(o, hh)]
    passes = [(first, [not lv or th for lv, th in zip(level, through)]),
              (list(hh), [lv and th for lv, th in zip(level, through)])]
    x0, z0, r2 = col([x for x, _, _ in o]), col([z for _, _, z in o]), col([rr * rr for rr in r])
    for cap, used in passes:
        if not any(used):
            continue
        t = col([cp - y for cp, (_, y, _) in zip(cap, o)]) / dy
        x = x0 + t * dx
        z = z0 + t * dz
        ok = (t > NEAR) & (x * x + z * z <= r2) & (t < best)
        best = np.where(ok if all(used) else ok & col(used), t, best)
    return best


def _hit_plane(o, d, size, col):
    t = col([-y for _, y, _ in o]) / d[1]
    ok = t > NEAR
    for axis, k in ((0, 0), (2, 1)):
        halves = [s[k] for s in size]
        bounded = [math.isfinite(h) for h in halves]
        if any(bounded):
            inside = np.abs(col([oo[axis] for oo in o]) + t * d[axis]) <= col(halves)
            ok &= inside if all(bounded) else inside | col([not b for b in bounded])
    return np.where(ok, t, np.inf)


def normal_runs(prims: Sequence[Primitive], p: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """Local unit normals ``(3, N)`` at surface points ``p`` (float64), runs as in :func:`intersect_runs`."""
    shape, inside = prims[0].kind
    if shape is Shape.SPHERE:
        return p / np.sqrt((p * p).sum(axis=0))
    col = _expander(counts, np.float64)
    sizes = [q.size_floats for q in prims]
    n = np.zeros_like(p)
    if shape is Shape.BOX:
        # The face is the axis where the point is relatively farthest out (ties: x before y before z).
        scale = (np.array(sizes[0])[:, None] if len(prims) == 1
                 else np.stack([col([s[axis] for s in sizes]) for axis in range(3)]))
        rel = np.abs(p) / scale
        x_or_y = rel[0] >= rel[1]
        z = rel[2] > np.maximum(rel[0], rel[1])
        sign = -np.sign(p) if inside else np.sign(p)
        zero = np.zeros((), dtype=p.dtype)
        n[0] = np.where(x_or_y & ~z, sign[0], zero)
        n[1] = np.where(~x_or_y & ~z, sign[1], zero)
        n[2] = np.where(z, sign[2], zero)
    elif shape is Shape.CYLINDER:
        radial = np.sqrt(p[0] * p[0] + p[2] * p[2])  # np.hypot is a slow scalar loop; no overflow here
        cap = np.abs(p[1]) / col([s[1] for s in sizes]) > radial / col([s[0] for s in sizes])
        n[0] = np.where(cap, 0.0, p[0] / np.maximum(radial, 1e-12))
        n[2] = np.where(cap, 0.0, p[2] / np.maximum(radial, 1e-12))
        n[1] = np.where(cap, np.sign(p[1]), 0.0)
    else:
        n[1] = -1.0
    return n


def gather_columns(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Columns ``idx`` of a ``(C, N)`` array (``np.take`` is several times faster than ``a[:, idx]``)."""
    return np.take(a, idx, axis=1)


def scatter_columns(dst: np.ndarray, idx: np.ndarray, src: np.ndarray) -> None:
    """``dst[:, idx] = src`` row by row (1-D scatters are much faster than the 2-D one)."""
    for row in range(dst.shape[0]):
        dst[row][idx] = src[row]


Box = tuple[int, int, int, int, float]


_CORNERS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)


def pixel_boxes(prims: Sequence[Primitive], frame: int, cam: Camera) -> list[Box | None]:
    """Per primitive, a conservative pixel rectangle ``(r0, r1, c0, c1)`` covering it in ``cam`` and a
    lower bound of its camera depth (for occlusion culling); None when it is off screen.

    Computed for all primitives at once from the 8 corners of their local bounding boxes: a convex
    solid in front of the camera projects inside the projected corners' bounding rectangle.
    """
    if not prims:
        return []
    H, W, K = cam.height, cam.width, cam.K
    half = np.stack([p.half_extents for p in prims])  # (M, 3), inf for unbounded planes
    bounded = np.isfinite(half).all(axis=1)
    half = np.where(np.isfinite(half), half, 0.0)
    rots = np.stack([p.pose_at(frame).rot for p in prims])
    pos = np.stack([p.pose_at(frame).pos for p in prims])
    world = np.einsum("mij,mkj->mki", rots, _CORNERS[None] * half[:, None, :]) + pos[:, None, :]
    c = cam.world_to_camera(world)  # (M, 8, 3) camera frame
    z = c[..., 2]
    zmin, zmax = z.min(axis=1), z.max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        us = K[0, 0] * c[..., 0] / z + K[0, 2]
        vs = K[1, 1] * c[..., 1] / z + K[1, 2]
    c0 = np.clip(np.floor(us.min(axis=1)), 0, W)
    c1 = np.clip(np.ceil(us.max(axis=1)) + 1, 0, W)
    r0 = np.clip(np.floor(vs.min(axis=1)), 0, H)
    r1 = np.clip(np.ceil(vs.max(axis=1)) + 1, 0, H)
    out: list[Box | None] = []
    # Python lists: indexing numpy arrays element by element costs more than the arithmetic above.
    for b, lo, hi, a0, a1, b0, b1 in zip(bounded.tolist(), zmin.tolist(), zmax.tolist(), r0.tolist(), r1.tolist(),
                                         c0.tolist(), c1.tolist()):
        if not b:
            out.append((0, H, 0, W, -np.inf))
        elif hi <= NEAR:
            out.append(None)
        elif lo <= 0.05:
            out.append((0, H, 0, W, lo))
        elif b0 >= b1 or a0 >= a1:
            out.append(None)
        else:
            out.append((int(a0), int(a1), int(b0), int(b1), lo))
    return out


@dataclass
class Hits:
    """Per-pixel result of casting a camera's rays.

    Attributes:
        depth: ``(H, W)`` planar depth in metres (inf on misses).
        prim: ``(H, W)`` index of the primitive hit, -1 on misses.
        normal: world-frame unit normals facing the camera, ``(3, H, W)``.
        albedo: ``(3, H, W)`` in [0, 1].
        semantic: ``(H, W)`` class ids (uint8, 255 where the texture or a miss says ignore).
        point: world-frame hit points ``(3, H, W)``.
        rays: world-frame ray directions ``(3, H, W)`` (camera z = 1).
        boxes: the :func:`pixel_boxes` the cast used (reusable for occlusion queries from the same view).
    """

    depth: np.ndarray
    prim: np.ndarray
    normal: np.ndarray
    albedo: np.ndarray
    semantic: np.ndarray
    point: np.ndarray
    rays: np.ndarray
    boxes: list[Box | None]


# Primitives covering at most this many pixels are cast, shaded and textured together with the others of
# their kind: for them numpy's per-call overhead outweighs the arithmetic. Larger ones go one by one on
# contiguous arrays, where batching's extra gathers would cost more than the calls it saves.
BATCH_PIXELS = 8192


def _by_kind(prims: Sequence[Primitive], ks: Sequence[int]) -> list[list[int]]:
    """Indices ``ks`` grouped by primitive kind (first-seen order), each group in its given order."""
    groups: dict[tuple[Shape, bool], list[int]] = {}
    for k in ks:
        groups.setdefault(prims[k].kind, []).append(k)
    return list(groups.values())


def _runs(counts: Sequence[int]) -> list[slice]:
    ends = np.cumsum(counts).tolist()
    return [slice(a, b) for a, b in zip([0, *ends[:-1]], ends)]


def _batches(prims: Sequence[Primitive], ks: Sequence[int], sizes: Sequence[int]) -> list[list[int]]:
    """``ks`` split into batches: each large primitive alone, the small ones grouped by kind."""
    large = [[k] for k, n in zip(ks, sizes) if n > BATCH_PIXELS]
    return large + _by_kind(prims, [k for k, n in zip(ks, sizes) if n <= BATCH_PIXELS])


def _local_origin(pose: Pose, origin: np.ndarray) -> np.ndarray:
    return pose.rot.T @ (origin - pose.pos)


def _local_dirs(pose: Pose, world: np.ndarray) -> np.ndarray:
    return pose.inverse_rot32 @ world


def _cast(prims: Sequence[Primitive], poses: Sequence[Pose], origin: np.ndarray, batch: Sequence[int],
          dirs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Ray parameters of each primitive of ``batch`` along its world directions ``dirs[i]`` ``(3, n_i)``."""
    counts = [d.shape[1] for d in dirs]
    local = [_local_dirs(poses[k], d) for k, d in zip(batch, dirs)]
    o = np.stack([_local_origin(poses[k], origin) for k in batch])
    t = intersect_runs([prims[k] for k in batch], o, local[0] if len(local) == 1 else np.concatenate(local, axis=1),
                       np.array(counts))
    return [t] if len(batch) == 1 else [t[run] for run in _runs(counts)]


def cast_grid(cam: Camera, prims: Sequence[Primitive], frame: int,
              boxes: Sequence[Box | None] | None = None) -> Hits:
    """Cast one ray per pixel of ``cam`` against the primitives posed at ``frame`` (0 or 1).

    ``boxes`` are :func:`pixel_boxes` of the same primitives, frame and camera when the caller has them.
    Planes of shape ``(3, H, W)`` (not ``(H, W, 3)``) keep every numpy operation on contiguous rows.
    """
    H, W = cam.height, cam.width
    # Rays and hit distances in float32 (twice as fast; 1e-7 relative is far below a pixel); hit points
    # and everything derived from them in float64.
    rays = (cam.pose.rot.astype(np.float32) @ cam.rays()).reshape(3, H, W)  # world directions, camera z = 1
    origin = cam.pose.pos
    poses = [p.pose_at(frame) for p in prims]
    boxes = pixel_boxes(prims, frame, cam) if boxes is None else boxes
    live = [k for k, b in enumerate(boxes) if b is not None]
    small = [k for k in live if (boxes[k][1] - boxes[k][0]) * (boxes[k][3] - boxes[k][2]) <= BATCH_PIXELS]
    hits_of: dict[int, np.ndarray] = {}  # ray parameters over each small primitive's pixel rectangle
    for batch in _by_kind(prims, small):
        dirs = [rays[:, r0:r1, c0:c1].reshape(3, -1) for r0, r1, c0, c1, _ in (boxes[k] for k in batch)]
        hits_of.update(zip(batch, _cast(prims, poses, origin, batch, dirs)))
    best = np.full((H, W), np.inf, dtype=np.float32)
    owner = np.full((H, W), -1, dtype=np.int16)
    drawn: list[int] = []  # primitives that won pixels when drawn (later ones may still cover them)
    # Near to far: a large primitive wholly behind what is already drawn is skipped after one test, and of
    # two surfaces at exactly the same depth the one drawn first keeps the pixel.
    for k in sorted(live, key=lambda k: boxes[k][4]):
        r0, r1, c0, c1, zmin = boxes[k]
        region = best[r0:r1, c0:c1]
        if k in hits_of:
            t = hits_of[k]
        elif region.max() < zmin:
            continue
        else:
            t = _cast(prims, poses, origin, [k], [rays[:, r0:r1, c0:c1].reshape(3, -1)])[0]
        t = t.reshape(r1 - r0, c1 - c0)
        closer = t < region
        if closer.any():
            np.copyto(region, t, where=closer)
            np.copyto(owner[r0:r1, c0:c1], k, where=closer)
            drawn.append(k)
    flat_rays = rays.reshape(3, -1)
    point = origin[:, None] + best.reshape(1, -1).astype(np.float64) * flat_rays
    normal = np.zeros((3, H * W))
    albedo = np.zeros((3, H * W))
    semantic = np.full(H * W, 255, dtype=np.uint8)
    pixel = _pixel_index(H, W)
    owned = {}
    for k in drawn:
        # A primitive owns pixels only inside its rectangle: look for them there, not in the whole frame.
        r0, r1, c0, c1, _ = boxes[k]
        idx = pixel[r0:r1, c0:c1][owner[r0:r1, c0:c1] == k]  # row-major, ascending
        if idx.size:
            owned[k] = idx
    # Small primitives of one kind in one batch, ordered by texture type so each type is one call.
    ks = sorted(owned, key=lambda k: (type(prims[k].texture).__name__, k))
    for batch in _batches(prims, ks, [owned[k].size for k in ks]):
        idx = owned[batch[0]] if len(batch) == 1 else np.concatenate([owned[k] for k in batch])
        n_world, colour, ids = _surface(prims, poses, batch, [owned[k].size for k in batch],
                                        gather_columns(point, idx), gather_columns(flat_rays, idx))
        scatter_columns(normal, idx, n_world)
        scatter_columns(albedo, idx, colour)
        semantic[idx] = ids
    return Hits(best, owner, normal.reshape(3, H, W), albedo.reshape(3, H, W), semantic.reshape(H, W),
                point.reshape(3, H, W), rays, list(boxes))


def _surface(prims: Sequence[Primitive], poses: Sequence[Pose], batch: Sequence[int], counts: Sequence[int],
             point: np.ndarray, rays: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World normals facing the ``rays``, albedo and class ids at world points ``(3, N)`` on the primitives
    of ``batch`` (one kind), ``counts[i]`` consecutive columns each."""
    # Rotations stay one BLAS product per primitive on a contiguous run: a per-column product would round
    # differently (no fused multiply-add) and change the samples.
    p_local = np.empty_like(point)
    n_world = np.empty_like(point)
    members = [prims[k] for k in batch]
    runs = _runs(counts)
    for k, run in zip(batch, runs):
        p_local[:, run] = poses[k].rot.T @ (point[:, run] - poses[k].pos[:, None])
    n_local = normal_runs(members, p_local, counts)
    for k, run in zip(batch, runs):
        n_world[:, run] = poses[k].rot @ np.ascontiguousarray(n_local[:, run])
    facing = n_world[0] * rays[0] + n_world[1] * rays[1] + n_world[2] * rays[2] > 0
    colour, ids = _texture(members, p_local, n_local, counts)
    return np.where(facing, -n_world, n_world), colour, ids


def _texture(members: Sequence[Primitive], p: np.ndarray, n: np.ndarray,
             counts: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Albedo and ids over consecutive runs; runs of one texture type share one :func:`texture_runs` call."""
    if len(members) == 1:
        return members[0].texture(p, n)
    colour = np.empty_like(p)
    ids = np.empty(p.shape[1], dtype=np.uint8)
    ends = np.cumsum(counts).tolist()
    start = 0
    for i in range(len(members)):
        if i + 1 == len(members) or type(members[i + 1].texture) is not type(members[start].texture):
            span = slice(ends[start - 1] if start else 0, ends[i])
            colour[:, span], ids[span] = texture_runs([m.texture for m in members[start : i + 1]], p[:, span],
                                                      n[:, span], np.asarray(counts[start : i + 1]))
            start = i + 1
    return colour, ids


def first_hit_depth(cam: Camera, prims: Sequence[Primitive], frame: int, pts_cam: np.ndarray,
                    boxes: Sequence[Box | None] | None = None) -> np.ndarray:
    """Depth of the first surface along the rays from ``cam`` through camera-frame points ``(3, N)``.

    Used for exact occlusion tests: a point is visible when nothing is hit before its own depth.
    ``boxes`` as in :func:`cast_grid` (:attr:`Hits.boxes` of a cast from the same view).
    """
    z = pts_cam[2]
    # Sort the points by image row once, so each primitive only looks at the rows its rectangle spans.
    # The rectangles have integer bounds, so sorting by floor(v) selects exactly the same points as sorting
    # by v, and a stable sort of small integers is a radix sort (several times faster than a float sort).
    v = cam.K[1, 1] * pts_cam[1] / z + cam.K[1, 2]
    row = np.floor(np.clip(v, -2.0, cam.height + 1.0)).astype(np.int16)
    order = np.argsort(row, kind="stable")
    rows = row[order]
    pts = gather_columns(pts_cam, order)
    zs = pts[2]
    cols = cam.K[0, 0] * pts[0] / zs + cam.K[0, 2]
    dirs = (cam.pose.rot @ (pts / zs)).astype(np.float32)  # (3, N) world directions with camera z = 1
    best = np.full(len(z), np.inf, dtype=np.float32)
    origin = cam.pose.pos
    poses = [p.pose_at(frame) for p in prims]
    boxes = pixel_boxes(prims, frame, cam) if boxes is None else boxes
    live = [k for k, box in enumerate(boxes) if box is not None]
    # The rows of each rectangle, for all primitives in one search.
    spans = np.searchsorted(rows, np.array([(boxes[k][0] - 1, boxes[k][1]) for k in live], dtype=rows.dtype)
                            .reshape(-1, 2), side="left").tolist()
    candidates: dict[int, np.ndarray] = {}
    for k, (lo, hi) in zip(live, spans):
        if hi <= lo:
            continue
        prim, pose = prims[k], poses[k]
        _, _, c0, c1, zmin = boxes[k]
        # Only points behind the primitive's nearest depth, inside its rectangle, can be hidden by it.
        near = (zs[lo:hi] > zmin) & (cols[lo:hi] >= c0 - 1) & (cols[lo:hi] <= c1)
        if prim.shape is Shape.PLANE:
            # ... and for a plane, only points on the other side of it from the camera.
            o_local = _local_origin(pose, origin)
            up = pose.rot[:, 1] @ dirs[:, lo:hi]  # plane normal (local y) along each ray, per unit depth
            near &= (o_local[1] + zs[lo:hi] * up) * o_local[1] < 0
        elif prim.inside and np.all(np.abs(_local_origin(pose, origin)) < prim.half_extents):
            # ... and for a room seen from inside, only points outside it: the segment between two inside
            # points never crosses the walls (convexity).
            o_local = _local_origin(pose, origin)
            d_local = pose.rot.T @ dirs[:, lo:hi]
            outside = np.zeros(hi - lo, dtype=bool)
            for axis in range(3):
                outside |= np.abs(o_local[axis] + zs[lo:hi] * d_local[axis]) > prim.half_extents[axis] * (1 - 1e-6)
            near &= outside
        sel = np.flatnonzero(near) + lo
        if sel.size:
            candidates[k] = sel
    ks = list(candidates)
    for batch in _batches(prims, ks, [candidates[k].size for k in ks]):
        sels = [candidates[k] for k in batch]
        ts = _cast(prims, poses, origin, batch, [gather_columns(dirs, sel) for sel in sels])
        if len(batch) == 1:
            best[sels[0]] = np.minimum(best[sels[0]], ts[0])
        else:
            np.minimum.at(best, np.concatenate(sels), np.concatenate(ts))
    out = np.empty_like(best)
    out[order] = best
    return out

