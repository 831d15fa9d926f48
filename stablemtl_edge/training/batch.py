"""From samples to the tensors of one task's micro-batch: fit to the training size, augment, encode, stack.

Every sample of a micro-batch goes through the same steps, each driven by that sample's own seed from
the sampler (so ranks, resumes and re-runs agree): resize so the training resolution is covered, take a
random crop of the crop size, apply the recipe's augmentation, and turn the task's label into its
3-channel image through the task codec.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..errors import StableMTLError
from ..data.sample import Label, Sample
from ..tasks import TaskSpec, get_task
from ..data.augment import Augmentation, resize_sample

__all__ = ["TaskBatch", "crop_sample", "prepare_sample", "collate"]


@dataclass
class TaskBatch:
    """One task's micro-batch.

    Attributes:
        task: the task every row is labelled for.
        frame1: uint8 ``[B, H, W, 3]``.
        frame2: uint8 ``[B, H, W, 3]``, or None for single-frame tasks.
        target: float ``[B, 3, H, W]``, the task images in [-1, 1].
        valid: bool ``[B, H, W]``.
        others: float ``[M, 3, H, W]``: the images of every *other* task the samples label (for the ``vae``
            stage, which learns every image type from every sample it loads), or None.
    """

    task: TaskSpec
    frame1: torch.Tensor
    frame2: torch.Tensor | None
    target: torch.Tensor
    valid: torch.Tensor
    others: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.frame1.shape[0])


def crop_sample(sample: Sample, top: int, left: int, height: int, width: int) -> Sample:
    """Cut a window out of frames and labels; the principal point follows."""
    H, W = sample.frame1.shape[:2]
    if top < 0 or left < 0 or top + height > H or left + width > W:
        raise StableMTLError(f"crop {height}x{width} at ({top}, {left}) does not fit a {H}x{W} sample")
    win = (slice(top, top + height), slice(left, left + width))
    labels = {k: Label(np.ascontiguousarray(v.value[win]), np.ascontiguousarray(v.valid[win])) for k, v in sample.labels.items()}
    K = sample.intrinsics
    if K is not None:
        K = np.array(K, dtype=np.float64, copy=True)
        K[0, 2] -= left
        K[1, 2] -= top
    f2 = None if sample.frame2 is None else np.ascontiguousarray(sample.frame2[win])
    return replace(sample, frame1=np.ascontiguousarray(sample.frame1[win]), frame2=f2, labels=labels, intrinsics=K)


def prepare_sample(
    sample: Sample,
    task: str | TaskSpec,
    resolution: tuple[int, int],
    crop: tuple[int, int],
    augmentation: Augmentation | None,
    seed: int,
) -> Sample:
    """Resize to cover ``resolution`` (keeping the aspect ratio), crop ``crop`` at random, augment."""
    rng = np.random.default_rng(seed)
    H, W = sample.frame1.shape[:2]
    rh, rw = resolution
    if (H, W) != (rh, rw):
        scale = max(rh / H, rw / W)
        sample = resize_sample(sample, (max(rh, round(H * scale)), max(rw, round(W * scale))))
        H, W = sample.frame1.shape[:2]
    ch, cw = crop
    if (ch, cw) != (H, W):
        sample = crop_sample(sample, int(rng.integers(H - ch + 1)), int(rng.integers(W - cw + 1)), ch, cw)
    if augmentation is not None:
        sample = augmentation(sample, get_task(task).key, rng)
    return sample


def collate(samples: Sequence[Sample], task: str | TaskSpec, other_labels: bool = False) -> TaskBatch:
    """Stack prepared samples of one task; the label becomes its codec image.

    Args:
        samples: prepared samples, all labelling ``task``.
        task: the micro-batch's task.
        other_labels: also encode every other label of the samples into :attr:`TaskBatch.others`.
    """
    spec = get_task(task)
    if not samples:
        raise StableMTLError("cannot collate an empty micro-batch")
    images, valids = zip(*(s.encode(spec) for s in samples))
    frame2 = None
    if spec.frames == 2:
        missing = [s.name for s in samples if s.frame2 is None]
        if missing:
            raise StableMTLError(f"`{spec.key}` needs a second frame, `{missing[0]}` has none")
        frame2 = torch.from_numpy(np.stack([s.frame2 for s in samples]))
    others = None
    if other_labels:
        extra = [s.encode(k)[0] for s in samples for k in s.labels if k != spec.key]
        if extra:
            others = torch.from_numpy(np.stack(extra)).permute(0, 3, 1, 2).contiguous().float()
    return TaskBatch(
        others=others,
        task=spec,
        frame1=torch.from_numpy(np.stack([s.frame1 for s in samples])),
        frame2=frame2,
        target=torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous().float(),
        valid=torch.from_numpy(np.stack(valids)),
    )
