"""Procedural solid textures for the generated scenes: albedo and class ids from local coordinates.

Every texture is called with local hit points ``p`` and local normals ``n`` as ``(3, N)`` arrays (rows
x, y, z) and returns albedo ``(3, N)`` in [0, 1] and class ids ``(N,)`` uint8.

Textures are functions of the hit point in the object's own frame, so they move with the object and
frame 2 shows the same surface pattern as frame 1 (what makes the flow ground truth checkable by warping).
They are also what makes the labels learnable from RGB: each class has a typical colour and pattern
(asphalt with lane marks, facades with windows, foliage), varied per object. numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..tasks import CLASS_NAMES, IGNORE_ID

__all__ = [
    "texture_runs",
    "SmoothNoise",
    "Stripes",
    "Checker",
    "Road",
    "Facade",
    "RoomShell",
    "TrafficLightHead",
]

CLASS_ID = {name: i for i, name in enumerate(CLASS_NAMES)}


_TWO_PI = 2.0 * np.pi


def _reduce(x: np.ndarray) -> np.ndarray:
    """Angles ``x`` (float64) brought into [-pi, pi] in float64, then handed over as float32.

    numpy's float64 sin/cos/tanh are scalar loops here (~50 ns a value) while the float32 ones are
    vectorised (~15x faster). Reducing in float64 first keeps the float32 evaluation accurate to ~2e-7
    absolute however large the phase, i.e. float32 noise on an albedo in [0, 1].
    """
    return (x - _TWO_PI * np.rint(x * (1.0 / _TWO_PI))).astype(np.float32)


def _sin(x: np.ndarray) -> np.ndarray:
    return np.sin(_reduce(x))


def _cos(x: np.ndarray) -> np.ndarray:
    return np.cos(_reduce(x))


def _mix(c1: np.ndarray, c2: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Blend per-column colours ``(3, N)`` (or ``(3, 1)``) by ``t``."""
    return np.clip(c1 + (c2 - c1) * t, 0.0, 1.0)


def _ids(p: np.ndarray, class_id: int) -> np.ndarray:
    return np.full(p.shape[1], class_id, dtype=np.uint8)


def _dot(k: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-column dot products of frequency vectors ``(3, N)`` (or one, ``(3, 1)``) with points ``(3, N)``.

    Both forms round like a scalar loop x, y, z (numpy's matrix-vector product does for 3 terms), so a
    primitive's texture does not depend on whether it was evaluated alone or in a batch.
    """
    if k.shape[1] == 1:
        return k[:, 0] @ p
    return k[0] * p[0] + k[1] * p[1] + k[2] * p[2]


class _Params:
    """Texture parameters of consecutive column runs (run j textured by ``textures[j]``), as columns."""

    def __init__(self, textures: Sequence, counts: np.ndarray) -> None:
        self.textures = textures
        self.counts = np.asarray(counts)

    def __call__(self, name: str, dtype=np.float64) -> np.ndarray:  # noqa: ANN001
        """``(k, N)`` for vector parameters and ``(N,)`` for scalars; for one run a ``(k, 1)`` column or a
        0-d value that broadcasts."""
        if len(self.textures) == 1:
            value = np.asarray(getattr(self.textures[0], name), dtype=dtype)
            return value[:, None] if value.ndim == 1 else value
        values = np.array([getattr(t, name) for t in self.textures], dtype=dtype)
        return np.repeat(values.T, self.counts, axis=-1)

    def ids(self, name: str = "class_id") -> np.ndarray:
        if len(self.textures) == 1:
            return np.full(int(self.counts[0]), getattr(self.textures[0], name), dtype=np.uint8)
        return np.repeat(np.array([getattr(t, name) for t in self.textures], dtype=np.uint8), self.counts)


def texture_runs(textures: Sequence, p: np.ndarray, n: np.ndarray,
                 counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Albedo ``(3, N)`` and class ids ``(N,)`` of textures of one type over consecutive column runs.

    Types with a vectorised ``runs`` method evaluate all runs in one pass (same values as one by one);
    the others are called run by run.
    """
    runs = getattr(type(textures[0]), "runs", None)
    if runs is not None:
        return runs(textures, p, n, counts)
    ends = np.cumsum(counts).tolist()
    parts = [tex(p[:, a:b], n[:, a:b]) for tex, a, b in zip(textures, [0, *ends[:-1]], ends)]
    return np.concatenate([a for a, _ in parts], axis=1), np.concatenate([i for _, i in parts])


class _Batched:
    """Textures whose ``runs`` classmethod is their definition; a single call is a one-run batch."""

    def __call__(self, p: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.runs([self], p, n, np.array([p.shape[1]]))


@dataclass(frozen=True)
class SmoothNoise(_Batched):
    """Two colours blended by a product of two oriented sinusoids (low frequency, band-limited)."""

    c1: np.ndarray
    c2: np.ndarray
    k1: np.ndarray  # (3,) spatial frequency vector, rad/m
    k2: np.ndarray
    class_id: int = IGNORE_ID

    @classmethod
    def runs(cls, textures, p, n, counts):  # noqa: ANN001, ANN206
        q = _Params(textures, counts)
        t = 0.5 + 0.5 * _sin(_dot(q("k1"), p)) * _cos(_dot(q("k2"), p))
        return _mix(q("c1"), q("c2"), t), q.ids()


@dataclass(frozen=True)
class Stripes(_Batched):
    """Soft stripes along one direction (wood, fabric, painted bands)."""

    c1: np.ndarray
    c2: np.ndarray
    k: np.ndarray
    sharpness: float = 2.0
    class_id: int = IGNORE_ID

    @classmethod
    def runs(cls, textures, p, n, counts):  # noqa: ANN001, ANN206
        q = _Params(textures, counts)
        t = 0.5 + 0.5 * np.tanh(q("sharpness", np.float32) * _sin(_dot(q("k"), p)))
        return _mix(q("c1"), q("c2"), t), q.ids()


@dataclass(frozen=True)
class Checker(_Batched):
    """3-D checkerboard of cell size ``cell`` metres."""

    c1: np.ndarray
    c2: np.ndarray
    cell: float
    class_id: int = IGNORE_ID

    @classmethod
    def runs(cls, textures, p, n, counts):  # noqa: ANN001, ANN206
        q = _Params(textures, counts)
        cells = np.floor(p / q("cell")).astype(np.int64)
        parity = (cells[0] + cells[1] + cells[2]) & 1
        return _mix(q("c1"), q("c2"), parity.astype(np.float64)), q.ids()


@dataclass(frozen=True)
class Road:
    """Ground plane: asphalt road |x| < half_width with lane marks, then sidewalk, then terrain.

    Only the asphalt is class ``road``; sidewalk and terrain are not among the 8 classes (ignore).
    """

    half_width: float
    sidewalk: float
    asphalt: np.ndarray
    kerb: np.ndarray
    terrain: np.ndarray
    lane_offset: float

    def __call__(self, p, n):
        x, z = p[0], p[2]
        ax = np.abs(x)
        grain = 0.5 + 0.5 * _sin(1.7 * x + 0.9 * z) * _cos(0.6 * x - 1.3 * z)
        out = self.asphalt[:, None] * (0.85 + 0.3 * grain)
        dash = np.abs(x - self.lane_offset) < 0.08
        dash[dash] = np.mod(z[dash], 6.0) < 3.0  # the (slow) float modulo only where a mark can be
        edge = np.abs(ax - (self.half_width - 0.25)) < 0.08
        out = np.where(dash | edge, 0.85, out)
        walk = (ax >= self.half_width) & (ax < self.half_width + self.sidewalk)
        tiles = (np.floor(z / 0.6).astype(np.int64) + np.floor(x / 0.6).astype(np.int64)) & 1
        out = np.where(walk, self.kerb[:, None] * (0.9 + 0.12 * tiles), out)
        far = ax >= self.half_width + self.sidewalk
        out = np.where(far, self.terrain[:, None] * (0.75 + 0.5 * grain), out)
        ids = np.where(ax < self.half_width, CLASS_ID["road"], IGNORE_ID).astype(np.uint8)
        return np.clip(out, 0.0, 1.0), ids


@dataclass(frozen=True)
class Facade(_Batched):
    """Building wall with a grid of darker, bluish windows."""

    wall: np.ndarray
    window: np.ndarray
    spacing: float
    class_id: int = CLASS_ID["building"]

    @classmethod
    def runs(cls, textures, p, n, counts):  # noqa: ANN001, ANN206
        q = _Params(textures, counts)
        spacing = q("spacing")
        # Horizontal coordinate along the face: x on faces normal to z, z on faces normal to x.
        along = np.where(np.abs(n[0]) > 0.5, p[2], p[0])
        # x - floor(x) is bit-identical to np.mod(x, 1.0) and several times faster.
        fx = along / spacing
        fx -= np.floor(fx)
        fy = p[1] / (1.3 * spacing)
        fy -= np.floor(fy)
        win = (fx > 0.25) & (fx < 0.75) & (fy > 0.3) & (fy < 0.8) & (np.abs(n[1]) < 0.5)
        out = np.where(win, q("window"), q("wall"))
        return out, q.ids()


@dataclass(frozen=True)
class RoomShell:
    """Inside of a room box: wooden floor (stripes), plain ceiling, painted walls with soft noise."""

    floor1: np.ndarray
    floor2: np.ndarray
    wall: np.ndarray
    ceiling: np.ndarray
    plank: float

    def __call__(self, p, n):
        floor = n[1] < -0.5  # inward normal of the bottom face points up (-y)
        ceil = n[1] > 0.5
        t = 0.5 + 0.5 * np.tanh(np.float32(3.0) * _sin(p[0] * np.pi / self.plank))
        planks = _mix(self.floor1[:, None], self.floor2[:, None], t * (0.8 + 0.2 * _sin(p[2] * 1.7)))
        w = 0.93 + 0.07 * _sin(p[0] * 2.1 + p[1] * 1.3) * _cos(p[2] * 1.9)
        walls = np.clip(self.wall[:, None] * w, 0, 1)
        out = np.where(floor, planks, np.where(ceil, self.ceiling[:, None], walls))
        return out, _ids(p, IGNORE_ID)


@dataclass(frozen=True)
class TrafficLightHead:
    """Dark housing (local y vertical) with red, amber and green lamps on the face towards -z."""

    housing: np.ndarray
    half_height: float

    def __call__(self, p, n):
        out = np.repeat(self.housing[:, None], p.shape[1], axis=1)
        lamps = np.array([[0.9, 0.1, 0.05], [0.95, 0.65, 0.05], [0.1, 0.85, 0.2]])
        face = n[2] < -0.5
        for i, colour in enumerate(lamps):
            cy = (i - 1) * self.half_height * 0.62
            r = np.hypot(p[0], p[1] - cy)
            out = np.where(face & (r < self.half_height * 0.22), colour[:, None], out)
        return out, _ids(p, CLASS_ID["traffic light"])
