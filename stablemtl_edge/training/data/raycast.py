"""A small vectorised ray caster: planes, boxes, spheres and cylinders seen by a pinhole camera.

It exists so the procedural scenes have *exact* geometry: depth, normals and the correspondences that give
optical and scene flow are computed from the same analytic surfaces, never estimated from images.

Conventions: world and camera frames use OpenCV axes (x right, y down, z forward). Camera rays are
``K^-1 [u, v, 1]`` with z = 1, so the ray parameter of a hit *is* its planar depth. Pixel centres are at
integer coordinates. numpy only.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Shape",
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
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
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

    # -- intersection in local coordinates ------------------------------------------------------------
    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Ray parameter of the first hit beyond NEAR (inf on a miss).

        Args:
            o: local ray origin ``(3,)``.
            d: local ray directions ``(3, N)`` (rows x, y, z: contiguous rows keep numpy fast).
        """
        # Python floats for the scalars keep float32 ray arithmetic in float32 (numpy's weak scalars).
        o = tuple(float(x) for x in o)
        size = tuple(float(x) for x in self.size)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if self.shape is Shape.SPHERE:
                return _hit_sphere(o, d, size[0])
            if self.shape is Shape.BOX:
                return _hit_box(o, d, size, self.inside)
            if self.shape is Shape.CYLINDER:
                return _hit_cylinder(o, d, size[0], size[1])
            return _hit_plane(o, d, size[0], size[1])

    def local_normal(self, p: np.ndarray) -> np.ndarray:
        """Outward (or, for an inside box, inward) unit normal at local surface points ``p`` (3, N)."""
        s = np.asarray(self.size, dtype=np.float64)
        n = np.zeros_like(p)
        if self.shape is Shape.SPHERE:
            n = p / np.sqrt((p * p).sum(axis=0))
        elif self.shape is Shape.BOX:
            # The face is the axis where the point is relatively farthest out (ties: x before y before z).
            rel = np.abs(p) / s[:, None]
            x_or_y = rel[0] >= rel[1]
            z = rel[2] > np.maximum(rel[0], rel[1])
            sign = -np.sign(p) if self.inside else np.sign(p)
            zero = np.zeros((), dtype=p.dtype)
            n[0] = np.where(x_or_y & ~z, sign[0], zero)
            n[1] = np.where(~x_or_y & ~z, sign[1], zero)
            n[2] = np.where(z, sign[2], zero)
        elif self.shape is Shape.CYLINDER:
            radial = np.sqrt(p[0] * p[0] + p[2] * p[2])  # np.hypot is a slow scalar loop; no overflow here
            cap = np.abs(p[1]) / s[1] > radial / s[0]
            n[0] = np.where(cap, 0.0, p[0] / np.maximum(radial, 1e-12))
            n[2] = np.where(cap, 0.0, p[2] / np.maximum(radial, 1e-12))
            n[1] = np.where(cap, np.sign(p[1]), 0.0)
        else:
            n[1] = -1.0
        return n


def _hit_sphere(o, d, r):
    dx, dy, dz = d
    a = dx * dx + dy * dy + dz * dz
    b = o[0] * dx + o[1] * dy + o[2] * dz
    c = o[0] ** 2 + o[1] ** 2 + o[2] ** 2 - r * r
    disc = b * b - a * c
    sq = np.sqrt(np.maximum(disc, 0.0))
    t = (-b - sq) / a
    if c < 0:  # origin inside: the exit point is the hit
        t = (-b + sq) / a
    return np.where((disc >= 0) & (t > NEAR), t, np.inf)


def _hit_box(o, d, h, inside):
    tmin = tmax = None
    for axis in range(3):
        inv = 1.0 / d[axis]
        ta = (-h[axis] - o[axis]) * inv
        tb = (h[axis] - o[axis]) * inv
        lo, hi = np.fmin(ta, tb), np.fmax(ta, tb)
        tmin = lo if tmin is None else np.fmax(tmin, lo)
        tmax = hi if tmax is None else np.fmin(tmax, hi)
    ok = tmax >= np.maximum(tmin, NEAR)
    t = tmax if inside else np.where(tmin > NEAR, tmin, tmax)
    return np.where(ok, t, np.inf)


def _hit_cylinder(o, d, r, hh):
    """Capped cylinder along local y. From outside, a ray enters through the side (near root) or
    through the one cap that faces the origin, so only those are tested."""
    dx, dy, dz = d
    a = dx * dx + dz * dz
    b = o[0] * dx + o[2] * dz
    c = o[0] ** 2 + o[2] ** 2 - r * r
    disc = b * b - a * c
    sq = np.sqrt(np.maximum(disc, 0.0))
    roots = ((-b - sq) / a,) if c > 0 else ((-b - sq) / a, (-b + sq) / a)
    best = np.full(dx.shape, np.inf, dtype=d.dtype)
    for t in roots:
        y = o[1] + t * dy
        best = np.where((disc >= 0) & (t > NEAR) & (np.abs(y) <= hh) & (t < best), t, best)
    caps = (hh,) if o[1] > hh else (-hh,) if o[1] < -hh else ((-hh, hh) if c <= 0 else ())
    for cap in caps:
        t = (cap - o[1]) / dy
        x = o[0] + t * dx
        z = o[2] + t * dz
        best = np.where((t > NEAR) & (x * x + z * z <= r * r) & (t < best), t, best)
    return best


def _hit_plane(o, d, hx, hz):
    t = -o[1] / d[1]
    ok = t > NEAR
    if np.isfinite(hx):
        ok &= np.abs(o[0] + t * d[0]) <= hx
    if np.isfinite(hz):
        ok &= np.abs(o[2] + t * d[2]) <= hz
    return np.where(ok, t, np.inf)


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
    for k in range(len(prims)):
        if not bounded[k]:
            out.append((0, H, 0, W, -np.inf))
        elif zmax[k] <= NEAR:
            out.append(None)
        elif zmin[k] <= 0.05:
            out.append((0, H, 0, W, float(zmin[k])))
        elif c0[k] >= c1[k] or r0[k] >= r1[k]:
            out.append(None)
        else:
            out.append((int(r0[k]), int(r1[k]), int(c0[k]), int(c1[k]), float(zmin[k])))
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
    """

    depth: np.ndarray
    prim: np.ndarray
    normal: np.ndarray
    albedo: np.ndarray
    semantic: np.ndarray
    point: np.ndarray
    rays: np.ndarray


def cast_grid(cam: Camera, prims: Sequence[Primitive], frame: int) -> Hits:
    """Cast one ray per pixel of ``cam`` against the primitives posed at ``frame`` (0 or 1).

    Planes of shape ``(3, H, W)`` (not ``(H, W, 3)``) keep every numpy operation on contiguous rows.
    """
    H, W = cam.height, cam.width
    # Rays and hit distances in float32 (twice as fast; 1e-7 relative is far below a pixel); hit points
    # and everything derived from them in float64.
    rays = (cam.pose.rot.astype(np.float32) @ cam.rays()).reshape(3, H, W)  # world directions, camera z = 1
    origin = cam.pose.pos
    best = np.full((H, W), np.inf, dtype=np.float32)
    owner = np.full((H, W), -1, dtype=np.int16)
    poses = [p.pose_at(frame) for p in prims]
    boxes = pixel_boxes(prims, frame, cam)
    drawn: list[int] = []  # primitives that won pixels when drawn (later ones may still cover them)
    # Near to far, so that a primitive wholly behind what is already drawn is skipped after one test.
    for k in sorted((k for k, b in enumerate(boxes) if b is not None), key=lambda k: boxes[k][4]):
        prim, pose = prims[k], poses[k]
        r0, r1, c0, c1, zmin = boxes[k]
        region = best[r0:r1, c0:c1]
        if region.max() < zmin:
            continue
        sub = rays[:, r0:r1, c0:c1].reshape(3, -1)
        t = prim.intersect(pose.rot.T @ (origin - pose.pos), pose.rot.T.astype(np.float32) @ sub)
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
    for k in sorted(drawn):
        prim, pose = prims[k], poses[k]
        # A primitive owns pixels only inside its rectangle: look for them there, not in the whole frame.
        r0, r1, c0, c1, _ = boxes[k]
        idx = pixel[r0:r1, c0:c1][owner[r0:r1, c0:c1] == k]  # row-major, ascending
        if idx.size == 0:
            continue
        p_local = pose.rot.T @ (gather_columns(point, idx) - pose.pos[:, None])
        n_local = prim.local_normal(p_local)
        n_world = pose.rot @ n_local
        r = gather_columns(flat_rays, idx)
        facing = n_world[0] * r[0] + n_world[1] * r[1] + n_world[2] * r[2] > 0
        scatter_columns(normal, idx, np.where(facing, -n_world, n_world))
        a, s = prim.texture(p_local, n_local)
        scatter_columns(albedo, idx, a)
        semantic[idx] = s
    return Hits(best, owner, normal.reshape(3, H, W), albedo.reshape(3, H, W), semantic.reshape(H, W),
                point.reshape(3, H, W), rays)


def first_hit_depth(cam: Camera, prims: Sequence[Primitive], frame: int, pts_cam: np.ndarray) -> np.ndarray:
    """Depth of the first surface along the rays from ``cam`` through camera-frame points ``(3, N)``.

    Used for exact occlusion tests: a point is visible when nothing is hit before its own depth.
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
    for prim, box in zip(prims, pixel_boxes(prims, frame, cam)):
        if box is None:
            continue
        pose = prim.pose_at(frame)
        o_local = pose.rot.T @ (origin - pose.pos)
        r0, r1, c0, c1, zmin = box
        lo, hi = np.searchsorted(rows, [r0 - 1, r1], side="left")
        if hi <= lo:
            continue
        # Only points behind the primitive's nearest depth, inside its rectangle, can be hidden by it.
        near = (zs[lo:hi] > zmin) & (cols[lo:hi] >= c0 - 1) & (cols[lo:hi] <= c1)
        if prim.shape is Shape.PLANE:
            # ... and for a plane, only points on the other side of it from the camera.
            up = pose.rot[:, 1] @ dirs[:, lo:hi]  # plane normal (local y) along each ray, per unit depth
            near &= (o_local[1] + zs[lo:hi] * up) * o_local[1] < 0
        elif prim.inside and np.all(np.abs(o_local) < prim.half_extents):
            # ... and for a room seen from inside, only points outside it: the segment between two inside
            # points never crosses the walls (convexity).
            d_local = pose.rot.T @ dirs[:, lo:hi]
            outside = np.zeros(hi - lo, dtype=bool)
            for axis in range(3):
                outside |= np.abs(o_local[axis] + zs[lo:hi] * d_local[axis]) > prim.half_extents[axis] * (1 - 1e-6)
            near &= outside
        sel = np.flatnonzero(near) + lo
        if sel.size == 0:
            continue
        t = prim.intersect(o_local, pose.rot.T.astype(np.float32) @ gather_columns(dirs, sel))
        best[sel] = np.minimum(best[sel], t)
    out = np.empty_like(best)
    out[order] = best
    return out
