"""Continuous procedural video clips: one scene, a smoothly moving camera, moving objects, exact labels.

A clip is what the demo montage and the streaming evaluation of the runtime need: consecutive frames of
*one* scene, unlike :class:`~.procedural.ProceduralSource` whose samples are independent pairs. The scene
is drawn by the same builders as the pairs (:func:`~.procedural.build_scene`); the camera then follows a
smooth path (constant velocity plus slow sinusoidal sway and pan, per domain) and every moving object
repeats its rigid per-frame motion (vehicles drive along gentle arcs, flying objects tumble).

Frame alignment (what a caller must know to compare against a runtime):

- ``clip[t]`` is a :class:`~stablemtl_edge.data.sample.Sample` with ``frame1`` = image ``t`` and ``frame2`` =
  image ``t + 1`` (so ``clip[t].frame2`` *is* ``clip[t + 1].frame1``, byte for byte); a clip of ``frames``
  samples therefore shows ``frames + 1`` images (:meth:`ProceduralClip.image`).
- Every label of ``clip[t]`` lives on the pixels of image ``t``: depth, normals, classes, albedo and
  shading of image ``t``; optical and scene flow *forward* from image ``t`` to image ``t + 1``, with the
  validity of the pair renderer (the point stays in frame and is not occluded in image ``t + 1``).
- A streaming runtime that estimates flow between images ``t - 1`` and ``t`` when image ``t`` arrives is
  compared with ``clip[t - 1]``'s flow labels, on the pixels of image ``t - 1``.

Determinism: everything depends only on ``(seed, domain, size, frames)`` (the image noise of frame ``t``
on ``(seed, domain, t)``), and random access gives the same samples as iteration. numpy only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import StableMTLError
from .sample import Sample
from ..tasks import TaskName
from .dataset import SampleSource, select_tasks
from .procedural import (
    _DOMAIN_CODE,
    AVAILABLE_TASKS,
    NOISE_SIGMA,
    Domain,
    Rendering,
    Scene,
    build_scene,
    label_frame,
    labels_of,
    parse_domain,
    render_image,
)
from .raycast import Camera, Hits, Pose, Primitive, cast_grid, rotation

__all__ = ["ProceduralClip", "procedural_clip", "CameraPath"]

_CLIP_TAG = 0x636C6970  # "clip": the first seed word keeps clip streams apart from ProceduralSource's
_SCALES = (1.0, 0.5, 0.25, 0.125, 0.0)  # path amplitudes tried until the camera hits nothing
_CLEARANCE = 0.3  # metres kept between the camera centre and any object's bounding box


@dataclass(frozen=True)
class CameraPath:
    """Smooth camera trajectory: ``pose(t)`` for continuous frame time ``t`` (camera -> world).

    The centre moves with constant ``velocity`` (m/frame) plus a sinusoidal sway along ``sway_axis``;
    the orientation pans (yaw about world y) and nods (pitch) sinusoidally. All offsets are zero at
    ``t = 0`` and are multiplied by ``scale`` (shrunk when the full path would hit an object).
    """

    start: Pose
    velocity: np.ndarray
    sway_axis: np.ndarray
    sway: float  # amplitude, m
    sway_period: float  # frames
    yaw: float  # amplitude, rad
    pitch: float
    turn_period: float  # frames
    phase: np.ndarray  # (3,) phases of sway, yaw, pitch
    scale: float = 1.0

    def pose(self, t: float) -> Pose:
        wave = np.sin(2 * np.pi * t / np.array([self.sway_period, self.turn_period, self.turn_period]) + self.phase)
        off = self.scale * (wave - np.sin(self.phase))  # (3,) sway, yaw, pitch offsets, zero at t = 0
        pos = self.start.pos + self.scale * self.velocity * t + off[0] * self.sway * self.sway_axis
        return Pose(rotation(off[1] * self.yaw, off[2] * self.pitch) @ self.start.rot, pos)

    def scaled(self, scale: float) -> CameraPath:
        return CameraPath(self.start, self.velocity, self.sway_axis, self.sway, self.sway_period, self.yaw,
                          self.pitch, self.turn_period, self.phase, scale)


def _horizontal(v: np.ndarray) -> np.ndarray:
    h = np.array([v[0], 0.0, v[2]])
    return h / np.linalg.norm(h)


def _draw_path(domain: Domain, start: Pose, rng: np.random.Generator) -> CameraPath:
    """Per-domain motion: a car driving down its road, a person walking in a room, a drifting camera."""
    forward, right = start.rot[:, 2], start.rot[:, 0]
    phase = rng.uniform(-np.pi, np.pi, 3)
    if domain is Domain.DRIVING:
        return CameraPath(start, np.array([0.0, 0.0, rng.uniform(0.4, 1.0)]), np.array([1.0, 0.0, 0.0]),
                          float(rng.uniform(0.0, 0.5)), float(rng.uniform(40, 90)), float(rng.uniform(0.01, 0.05)),
                          0.005, float(rng.uniform(40, 90)), phase)
    if domain is Domain.INDOOR:
        return CameraPath(start, _horizontal(forward) * rng.uniform(0.0, 0.02), _horizontal(right),
                          float(rng.uniform(0.1, 0.4)), float(rng.uniform(30, 70)), float(rng.uniform(0.08, 0.25)),
                          float(rng.uniform(0.0, 0.05)), float(rng.uniform(30, 70)), phase)
    direction = rng.normal(size=3)
    sway_axis = rng.normal(size=3)
    return CameraPath(start, direction / np.linalg.norm(direction) * rng.uniform(0.03, 0.15),
                      sway_axis / np.linalg.norm(sway_axis), float(rng.uniform(0.0, 0.5)), float(rng.uniform(30, 70)),
                      float(rng.uniform(0.02, 0.1)), float(rng.uniform(0.0, 0.05)), float(rng.uniform(30, 70)), phase)


def _collisions(prims: Sequence[Primitive], poses: Sequence[Sequence[Pose]], centres: np.ndarray) -> set[int]:
    """Primitives whose bounding box (grown by the clearance) contains a camera centre at its frame, and
    rooms the camera leaves."""
    hit: set[int] = set()
    for k, prim in enumerate(prims):
        half = prim.half_extents
        if not np.isfinite(half).all():
            continue  # the unbounded ground plane: the paths never change the camera height much
        local = np.stack([poses[t][k].inverse_apply(c) for t, c in enumerate(centres)])  # (T, 3)
        if prim.inside:
            if (np.abs(local) > half - _CLEARANCE).any():
                hit.add(k)
        elif (np.abs(local) < half + _CLEARANCE).all(axis=1).any():
            hit.add(k)
    return hit


class ProceduralClip(SampleSource):
    """A deterministic procedural video clip of ``frames`` consecutive labelled samples (see module doc).

    Args:
        domain: ``indoor``, ``driving`` or ``flying``.
        size: image ``(height, width)`` in pixels, each >= 8.
        frames: number of samples; ``frames + 1`` images are shown.
        seed: the clip's seed.
        tasks: tasks to label; default every task the domain can label (:data:`AVAILABLE_TASKS`).
        noise: standard deviation of the sensor noise on the [0, 1] display values (0 disables it).

    Attributes:
        poses: camera poses (camera -> world) of the ``frames + 1`` images.
        intrinsics: 3x3 pinhole matrix shared by all frames.
    """

    def __init__(self, domain: str | Domain, size: tuple[int, int] = (128, 160), frames: int = 16, seed: int = 0,
                 tasks: Sequence[str | TaskName] | None = None, noise: float = NOISE_SIGMA) -> None:
        self._domain = parse_domain(domain)
        height, width = (int(s) for s in size)
        if height < 8 or width < 8:
            raise StableMTLError(f"procedural image size must be at least 8x8 pixels, got {height}x{width}")
        if int(frames) < 1:
            raise StableMTLError(f"a procedural clip needs frames >= 1, got {frames}")
        self.size = (height, width)
        self.frames = int(frames)
        self.seed = int(seed)
        self.noise = float(noise)
        self._tasks = select_tasks(tasks, AVAILABLE_TASKS[self._domain], f"the `{self._domain}` domain")
        self._key = [_CLIP_TAG, self.seed & 0xFFFFFFFF, self.seed >> 32, _DOMAIN_CODE[self._domain]]
        rng = np.random.default_rng(self._key)
        base = build_scene(self._domain, height, width, rng)  # its pair ego-motion (cam2) is not used
        self._base = base
        path = _draw_path(self._domain, base.cam1.pose, rng)
        self._prims, self._prim_poses, self.path = self._fit(base.prims, path)
        self.poses = tuple(self.path.pose(t) for t in range(self.frames + 1))
        self.intrinsics = base.cam1.K.astype(np.float32)
        self._next: tuple[int, Hits, tuple] | None = None  # the last "image t + 1", reused by sample t + 1

    def _fit(self, prims: list[Primitive], path: CameraPath):
        """Shrink the path until it hits no static object, and drop moving objects that would run into the
        camera (with every part sharing their motion, e.g. a whole vehicle)."""
        steps = range(self.frames + 1)
        poses = [[p.pose for p in prims]]
        for _ in steps[1:]:
            poses.append([pose if p.motion is None else pose.then(p.motion) for p, pose in zip(prims, poses[-1])])
        for scale in _SCALES:
            trial = path.scaled(scale)
            centres = np.stack([trial.pose(t).pos for t in steps])
            hit = _collisions(prims, poses, centres)
            if all(prims[k].motion is not None for k in hit):
                gone = {id(prims[k].motion) for k in hit}
                keep = [k for k, p in enumerate(prims) if p.motion is None or id(p.motion) not in gone]
                return [prims[k] for k in keep], [[row[k] for k in keep] for row in poses], trial
        raise StableMTLError(f"procedural clip seed {self.seed}: the camera's start lies inside an object; "
                             "choose another seed")

    @property
    def domain(self) -> str:
        return self._domain.value

    @property
    def tasks(self) -> tuple[str, ...]:
        return self._tasks

    def __len__(self) -> int:
        return self.frames

    def _scene(self, t: int) -> Scene:
        """The scene between images ``t`` and ``t + 1``: objects posed at ``t``, moving on to ``t + 1``."""
        H, W = self.size
        prims = [Primitive(p.shape, p.size, self._prim_poses[t][k], p.texture, p.motion, p.inside)
                 for k, p in enumerate(self._prims)]
        b = self._base
        K = b.cam1.K
        nxt = self.poses[t + 1] if t < self.frames else self.path.pose(t + 1)
        return Scene(prims, Camera(K, self.poses[t], H, W), Camera(K, nxt, H, W), b.light,
                     b.ambient, b.sky_zenith, b.sky_horizon)

    def _image(self, t: int, scene: Scene) -> tuple[Hits, tuple]:
        if self._next is not None and self._next[0] == t:
            return self._next[1], self._next[2]
        hits = cast_grid(scene.cam1, scene.prims, 0)
        rng = np.random.default_rng(self._key + [1, t])
        return hits, render_image(scene, hits, rng, self.noise)

    def image(self, t: int) -> np.ndarray:
        """Image ``t`` (uint8 RGB ``(H, W, 3)``) for ``t`` in ``0 .. frames``."""
        t = self._check_index(t, self.frames + 1)
        return self._image(t, self._scene(t))[1][0]

    def render(self, t: int) -> Rendering:
        """Full rendering of sample ``t`` (image ``t`` with all maps, flows to image ``t + 1``)."""
        t = self._check_index(t)
        scene = self._scene(t)
        hits, (frame1, linear1, shading, hit) = self._image(t, scene)
        nxt_scene = self._scene(t + 1)
        nxt = self._image(t + 1, nxt_scene)
        self._next = (t + 1, *nxt)
        return label_frame(scene, hits, frame1, linear1, shading, hit, nxt[1][0])

    def __getitem__(self, t: int) -> Sample:
        t = self._check_index(t)
        r = self.render(t)
        return Sample(frame1=r.frame1, frame2=r.frame2, labels=labels_of(r, self._tasks), domain=self.domain,
                      name=f"procedural-clip:{self.domain}:seed={self.seed}:{t}", intrinsics=r.intrinsics)

    def __iter__(self) -> Iterator[Sample]:
        for t in range(self.frames):
            yield self[t]

    def __repr__(self) -> str:
        return f"ProceduralClip(domain={self.domain!r}, size={self.size}, frames={self.frames}, seed={self.seed})"


def procedural_clip(domain: str | Domain, size: tuple[int, int] = (128, 160), frames: int = 16, seed: int = 0,
                    tasks: Sequence[str | TaskName] | None = None, noise: float = NOISE_SIGMA) -> ProceduralClip:
    """A continuous clip of one procedural scene: ``frames`` labelled samples, rendered on access.

    ``clip[t].frame2`` is ``clip[t + 1].frame1``; every label of ``clip[t]`` lies on image ``t``'s pixels
    and its flows point to image ``t + 1`` (see the module doc for aligning a streaming flow estimate).
    """
    return ProceduralClip(domain, size=size, frames=frames, seed=seed, tasks=tasks, noise=noise)
