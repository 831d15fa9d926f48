"""Decoder distillation: train a :class:`TinyDecoder` to copy the model's own VAE decoder, without labels.

The teacher is ``StableMTL.decode``; the inputs are the latents the model itself predicts for every task
(in its own mode: multi-stream models in ``multi``) on frames from the procedural generator, an image
folder, a video or a ROS 2 bag, so a user distills on the footage of their own camera. Besides L1 on the
image, the loss weighs what each task's decode reads (:mod:`stablemtl_edge.tasks` codecs): the channel
mean for depth and shading, the unit vector for normals, the nearest palette colour for semantics and the
two normalised channels of optical flow.

Runs go through ``accelerate`` as training does (one CPU, one GPU or several processes). Checkpoints
``<output>/checkpoints/step-NNNNNNN/`` hold the student, the optimizer, the step and the RNG state and are
built under a temporary name, so ``resume`` continues from the newest complete one; frames are a pure
function of their index, so a resumed run ends with the weights of an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import __version__
from ..artifact.digest import file_sha256
from ..atomic import atomic_directory, atomic_write_text, remove_own_directory
from ..calibration.gate import GateOptions
from ..config import UNET_DOWNSAMPLE, VAE_DOWNSAMPLE
from ..errors import StableMTLError
from ..model.checkpoint import WEIGHTS_NAME as MODEL_WEIGHTS, load_pretrained, resolve_checkpoint
from ..model.stablemtl import StableMTL
from ..model.tiny_decoder import TinyDecoder, TinyDecoderConfig, save_tiny_decoder
from ..model.weight_files import load_state_dict_checked, read_safetensors, read_torch_file
from ..tasks import PALETTE, TASKS, TaskName, TaskSpec
from .trainer import Precision

__all__ = ["DistillConfig", "Distiller", "FramePairs", "distill_decoder", "distill_loss", "evaluate_decoder",
           "PROCEDURAL", "CHECKPOINT_DIR", "LOG_NAME"]

log = logging.getLogger(__name__)
PROCEDURAL = "procedural"
CHECKPOINT_DIR = "checkpoints"
LOG_NAME = "distill.jsonl"
_STEP_PREFIX = "step-"
_CHECKPOINT_KIND = "distill-checkpoint"
_WARMUP_FRACTION = 0.05  # of the steps, with a linearly rising learning rate
_FINAL_LR_RATIO = 0.1  # cosine decay of the learning rate down to this fraction at the last step
_PALETTE_TEMPERATURE = 0.1  # softmax temperature over squared palette distances ([-1, 1] units)
_STEP = VAE_DOWNSAMPLE * UNET_DOWNSAMPLE


@dataclass(frozen=True)
class DistillConfig:
    """One distillation run (saved with every checkpoint; a resume must match it).

    Attributes:
        model: the teacher: a checkpoint directory or a bundled name (``demo``).
        output: run directory: checkpoints, ``distill.jsonl``, ``tiny_decoder.{safetensors,json}``.
        steps: optimizer steps.
        batch: frame pairs per step per process (each gives one latent per task: 7 decodes).
        lr: peak learning rate (Adam), reached after a warm-up of 5% of the steps, then cosine-decayed to a
            tenth at the last step.
        source: ``procedural``, or an image folder, a video file or a ROS 2 bag (looped).
        size: processing size ``(H, W)``, multiples of 64 (None: the model preset's resolution).
        seed: seeds the student's initialisation.
        checkpoint_every: steps between checkpoints (the last step is always checkpointed).
        keep_checkpoints: most recent checkpoints kept.
        decoder: the student's architecture (None: :meth:`TinyDecoderConfig.for_preset`).
        precision: mixed precision of the student (the teacher always runs in fp32).
        progress: tqdm bar on stderr.
        pairs: distinct frame pairs, cycled; the teacher's latents and decodes of each are computed once and
            kept (fp16 images), so after the first pass a step costs only the student (the teacher is most of
            a step: a 7-task multi-stream prediction and seven full decodes per pair). None: every step
            takes new pairs and runs the teacher.
    """

    model: str
    output: Path
    steps: int = 2000
    batch: int = 2
    lr: float = 1e-3
    source: str = PROCEDURAL
    size: tuple[int, int] | None = None
    seed: int = 0
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    decoder: TinyDecoderConfig | None = None
    precision: Precision = Precision.AUTO
    progress: bool = True
    pairs: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "output", Path(self.output))
        object.__setattr__(self, "model", str(self.model))
        object.__setattr__(self, "precision", Precision(str(self.precision)))
        for name in ("steps", "batch", "checkpoint_every", "keep_checkpoints"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise StableMTLError(f"--{name.replace('_', '-')} must be a whole number >= 1, got {value}")
        if self.pairs is not None and (not isinstance(self.pairs, int) or self.pairs < self.batch):
            raise StableMTLError(f"--pairs must be a whole number >= --batch-size ({self.batch}), got {self.pairs}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise StableMTLError(f"--lr must be a finite number > 0, got {self.lr}")
        if self.size is not None:
            h, w = (int(s) for s in self.size)
            if h < 1 or w < 1 or h % _STEP or w % _STEP:
                raise StableMTLError(f"--size {h}x{w} must be multiples of {_STEP} pixels (e.g. 128x192)")
            object.__setattr__(self, "size", (h, w))
        if self.source != PROCEDURAL and not Path(self.source).exists():
            raise StableMTLError(
                f"--source `{self.source}` does not exist: pass `{PROCEDURAL}`, an image folder, a video file or a bag"
            )

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "output": str(self.output), "steps": self.steps, "batch": self.batch,
                "lr": self.lr, "source": self.source, "size": list(self.size) if self.size else None,
                "seed": self.seed, "checkpoint_every": self.checkpoint_every,
                "keep_checkpoints": self.keep_checkpoints,
                "decoder": self.decoder.to_dict() if self.decoder else None, "precision": self.precision.value,
                "pairs": self.pairs}


# -- frames ------------------------------------------------------------------------------------------------
class FramePairs:
    """Pairs ``(frame t, frame t+1)`` of uint8 RGB at ``size``, addressed by a running index.

    Procedural pair ``i`` is scene ``i // 3`` of domain ``i % 3`` (indoor, driving, flying) of ``split``: a
    pure function of ``i``. A recorded source is looped and letterboxed to ``size`` as the runtime does;
    its pair ``i`` is frames ``i`` and ``i + 1`` (at the loop's seam, the last frame and the first), read
    forward (an earlier index re-opens the source).
    """

    def __init__(self, source: str, size: tuple[int, int], split: str = "train") -> None:
        self.spec = str(source)
        self.size = (int(size[0]), int(size[1]))
        self._scenes = None
        self._stream = None
        if self.spec == PROCEDURAL:
            from ..data.procedural import Domain, procedural_split

            # optical flow in the task list makes every scene render its second frame
            self._scenes = [procedural_split(split, d, size=self.size, tasks=("optical_flow",)) for d in Domain]
        self._next = 0
        self._last: np.ndarray | None = None

    def _open(self) -> None:
        from ..runtime.sources import open_source

        self.close()
        stream = open_source(self.spec, loop=True)
        if stream.live:
            raise StableMTLError(
                f"--source `{self.spec}` is a live camera: distillation needs recorded frames it can read again "
                "on --resume (record a video, a folder or a bag first)"
            )
        self._stream = stream.open()
        self._next = 0
        self._last = self._read()

    def _read(self) -> np.ndarray:
        from ..runtime.preprocess import Letterbox

        frame = self._stream.read()
        if frame is None:
            raise StableMTLError(f"--source `{self.spec}` delivered no readable frame")
        return Letterbox.fit(frame.image.shape[:2], self.size).apply(frame.image)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self._scenes is not None:
            source = self._scenes[index % len(self._scenes)]
            r = source.render((index // len(self._scenes)) % len(source))
            return r.frame1, r.frame2
        if self._stream is None or index < self._next:
            self._open()
        while self._next < index:
            self._last = self._read()
            self._next += 1
        first, self._last = self._last, self._read()
        self._next += 1
        return first, self._last

    def take(self, indices: Iterable[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self[i] for i in indices]

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


# -- the loss ----------------------------------------------------------------------------------------------
def _channel_mean(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Depth and shading decode the mean of the three channels."""
    return (student.mean(dim=1) - teacher.mean(dim=1)).abs().mean()


def _unit_vector(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Normals decode the direction of the pixel's vector: 1 - cosine."""
    return (1.0 - F.cosine_similarity(student, teacher, dim=1, eps=1e-6)).mean()


def _palette_logits(images: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W]`` -> ``[N, 8, H, W]``: minus squared distance to each palette colour, over the temperature."""
    palette = torch.as_tensor(PALETTE, dtype=images.dtype, device=images.device) / 127.5 - 1.0  # [8, 3]
    d = ((images[:, None] - palette[None, :, :, None, None]) ** 2).sum(dim=2)
    return -d / _PALETTE_TEMPERATURE


def _palette(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Semantics decode the nearest palette colour: KL between the two soft class assignments (0 when equal)."""
    s = F.log_softmax(_palette_logits(student), dim=1)
    t = F.log_softmax(_palette_logits(teacher), dim=1)
    return F.kl_div(s, t, log_target=True, reduction="none").sum(dim=1).mean()


def _flow_channels(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Optical flow decodes channels 0 and 1 (u, v normalised); channel 2 is a copy of u nobody reads."""
    return (student[:, :2] - teacher[:, :2]).abs().mean()


TASK_TERMS = {
    TaskName.DEPTH: _channel_mean,
    TaskName.SHADING: _channel_mean,
    TaskName.NORMAL: _unit_vector,
    TaskName.SEMANTIC: _palette,
    TaskName.OPTICAL_FLOW: _flow_channels,
}


def distill_loss(student: torch.Tensor, teacher: torch.Tensor,
                 tasks: list[TaskSpec]) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 on the image plus, for each task with a term of its own, that term on its rows (weight 1 each).

    Args:
        student: the student's unclamped images ``[N, 3, H, W]``.
        teacher: the full decoder's images ``[N, 3, H, W]`` in [-1, 1].
        tasks: the task of each row.

    Returns:
        The total, and every part as a float (``image`` and one per task key) for the log.
    """
    student = student.float()
    total = (student - teacher).abs().mean()
    parts = {"image": float(total.detach())}
    for name, term in TASK_TERMS.items():
        rows = [i for i, t in enumerate(tasks) if t.name is name]
        if rows:
            value = term(student[rows], teacher[rows])
            parts[name.value] = float(value.detach())
            total = total + value
    return total, parts


# -- the run -----------------------------------------------------------------------------------------------
def teacher_identity(model: StableMTL) -> dict[str, Any]:
    """What the student was distilled from: checkpoint, preset, stream layout and the weights' SHA-256."""
    ident: dict[str, Any] = {"checkpoint": model.source.get("checkpoint"), "preset": model.preset.name,
                             "multi_stream": model.multi_stream}
    weights = Path(str(ident["checkpoint"])) / MODEL_WEIGHTS if ident["checkpoint"] else None
    if weights is not None and weights.is_file():
        ident["weights_sha256"] = file_sha256(weights)  # what export compares before packing the student
    return ident


def _model_mode(model: StableMTL) -> str:
    return "multi" if model.multi_stream else "single"


def teacher_batch(model: StableMTL, pairs: list[tuple[np.ndarray, np.ndarray]],
                  ) -> tuple[torch.Tensor, torch.Tensor, list[TaskSpec]]:
    """Latents of every task for each pair (in the model's mode) and their full decodes.

    Returns:
        latents ``[7P, 4, h, w]``, images ``[7P, 3, H, W]`` and the task of each row.
    """
    latents, tasks = [], []
    with torch.no_grad():
        for frame1, frame2 in pairs:
            specs, z = model.predict_latents(frame1, frame2, tasks=None, mode=_model_mode(model))  # [7, 4, h, w]
            latents.append(z)
            tasks += list(specs)
        z = torch.cat(latents)
        return z, model.decode(z), tasks


def checkpoint_dirs(output: Path) -> list[Path]:
    root = output / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(_STEP_PREFIX) and p.name[5:].isdigit())


def learning_rate(config: DistillConfig, step: int) -> float:
    """Linear warm-up over the first 5% of the steps, then cosine down to ``lr / 10`` at the last step.

    A pure function of the step, so a resumed run needs no scheduler state. The warm-up matters for wide
    students: one full-rate Adam step from the initialisation threw the sd2 student's output far out of
    [-1, 1] (loss 3.9 -> 30.5 in the CPU smoke run).
    """
    ramp = min(1.0, (step + 1) / max(1, round(_WARMUP_FRACTION * config.steps)))
    progress = step / max(config.steps - 1, 1)
    return config.lr * ramp * (_FINAL_LR_RATIO + (1 - _FINAL_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress)))


class Distiller:
    """One distillation run. Use :func:`distill_decoder` unless you need the pieces.

    Args:
        config: the run.
        accelerator: an ``accelerate.Accelerator`` (built from ``config.precision`` when None).
    """

    def __init__(self, config: DistillConfig, accelerator: Any = None) -> None:
        from accelerate import Accelerator

        self.config = config
        resolve_checkpoint(config.model)  # a missing model is one line before anything is built
        cuda = torch.cuda.is_available()
        self.accelerator = accelerator or Accelerator(mixed_precision=config.precision.resolve(cuda), cpu=not cuda)
        acc = self.accelerator
        self.teacher = load_pretrained(config.model, acc.device)
        self.teacher.requires_grad_(False)
        self.size = config.size or tuple(self.teacher.preset.resolution)
        self.decoder_config = config.decoder or TinyDecoderConfig.for_preset(self.teacher.preset)
        torch.manual_seed(config.seed)
        self.student = TinyDecoder(self.decoder_config).to(acc.device)
        optimizer = torch.optim.Adam(self.student.parameters(), lr=config.lr)
        self.module, self.optimizer = acc.prepare(self.student, optimizer)
        self.frames = FramePairs(config.source, self.size)
        self._teacher_cache: dict[int, tuple[torch.Tensor, torch.Tensor, list[TaskSpec]]] = {}

    @property
    def output(self) -> Path:
        return self.config.output

    def pair_indices(self, step: int) -> range:
        """This process's frame pairs of ``step`` (processes take disjoint, interleaved slices)."""
        acc, b = self.accelerator, self.config.batch
        first = (step * acc.num_processes + acc.process_index) * b
        return range(first, first + b)

    def teacher_outputs(self, indices: Iterable[int]) -> tuple[torch.Tensor, torch.Tensor, list[TaskSpec]]:
        """The teacher's latents, decodes and tasks for these pairs; with ``pairs``, each computed once.

        The cache is a pure function of the pair index, so a resumed run sees the same targets.
        """
        if self.config.pairs is None:
            return teacher_batch(self.teacher, self.frames.take(indices))
        parts = []
        for i in (i % self.config.pairs for i in indices):
            if i not in self._teacher_cache:
                z, images, tasks = teacher_batch(self.teacher, self.frames.take([i]))
                self._teacher_cache[i] = (z, images.half(), tasks)
            parts.append(self._teacher_cache[i])
        return (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]).float(),
                [t for p in parts for t in p[2]])

    # -- checkpoints ---------------------------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed by this run."""
        c = self.config
        return {"model": c.model, "batch": c.batch, "source": c.source, "size": list(self.size),
                "decoder": self.decoder_config.to_dict(), "processes": self.accelerator.num_processes,
                "pairs": c.pairs}

    def save_checkpoint(self, step: int, loss: float) -> Path:
        from safetensors.torch import save_file

        acc = self.accelerator
        final = self.output / CHECKPOINT_DIR / f"{_STEP_PREFIX}{step:07d}"
        if acc.is_main_process:
            with atomic_directory(final, kind=_CHECKPOINT_KIND, overwrite=True) as tmp:
                state = {k: v.detach().cpu().contiguous() for k, v in self.student.state_dict().items()}
                save_file(state, str(tmp / "student.safetensors"))
                opt = {"optimizer": self.optimizer.state_dict()}
                if acc.scaler is not None:  # fp16 loss scaling: resumed at the scale it had reached
                    opt["scaler"] = acc.scaler.state_dict()
                torch.save(opt, tmp / "optimizer.pt")
                torch.save({"torch": torch.get_rng_state()}, tmp / "rng.pt")
                meta = {"step": step, "loss": loss, "run": self._identity(), "version": __version__}
                (tmp / "state.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            for old in checkpoint_dirs(self.output)[: -self.config.keep_checkpoints]:
                remove_own_directory(old)  # only what carries our marker: never a user's folder
        acc.wait_for_everyone()
        return final

    def _read_checkpoint(self, directory: Path) -> dict[str, Any]:
        meta_file = directory / "state.json"
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise StableMTLError(f"`{meta_file}` is missing or not JSON ({type(e).__name__})") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("step"), int) or "run" not in meta:
            raise StableMTLError(f"`{meta_file}` is not a distillation record")
        weights = read_safetensors(directory / "student.safetensors", self.accelerator.device)
        opt = read_torch_file(directory / "optimizer.pt", self.accelerator.device)
        rng = read_torch_file(directory / "rng.pt")
        if not isinstance(opt, dict) or not isinstance(opt.get("optimizer"), dict):
            raise StableMTLError(f"`{directory / 'optimizer.pt'}` does not hold an optimizer state")
        if not isinstance(rng, dict) or not isinstance(rng.get("torch"), torch.Tensor):
            raise StableMTLError(f"`{directory / 'rng.pt'}` does not hold the RNG state")
        return {"meta": meta, "weights": weights, "optimizer": opt, "rng": rng["torch"]}

    def resume(self) -> tuple[int, float]:
        """Restore the newest readable checkpoint (damaged newer ones are named in a warning and kept)."""
        candidates = checkpoint_dirs(self.output)[::-1]
        if not candidates:
            raise StableMTLError(f"--resume: `{self.output}` has no checkpoint to resume from; drop --resume to start")
        for directory in candidates:
            try:
                state = self._read_checkpoint(directory)
            except StableMTLError as e:
                log.warning("--resume: skipping checkpoint %s: %s (nothing was deleted)", directory.name, e)
                continue
            if state["meta"]["run"] != self._identity():
                differs = sorted(k for k, v in self._identity().items() if state["meta"]["run"].get(k) != v)
                raise StableMTLError(
                    f"--resume: `{directory}` belongs to a run with other settings ({', '.join(differs)}): "
                    "resume with the settings the run was started with, or choose a new --out"
                )
            load_state_dict_checked(self.student, state["weights"], str(directory / "student.safetensors"))
            self.optimizer.load_state_dict(state["optimizer"]["optimizer"])
            if self.accelerator.scaler is not None and "scaler" in state["optimizer"]:
                self.accelerator.scaler.load_state_dict(state["optimizer"]["scaler"])
            torch.set_rng_state(state["rng"])
            return int(state["meta"]["step"]), float(state["meta"]["loss"])
        raise StableMTLError(f"--resume: no readable checkpoint under `{self.output / CHECKPOINT_DIR}` "
                             "(each is named above): start over with a new --out (nothing was deleted)")

    def _log(self, record: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            with open(self.output / LOG_NAME, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def _truncate_log(self, step: int) -> None:
        """Drop the records of steps after ``step``: a resumed run logs them again."""
        path = self.output / LOG_NAME
        if self.accelerator.is_main_process and path.is_file():
            keep = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln and json.loads(ln)["step"] <= step]
            atomic_write_text(path, "".join(ln + "\n" for ln in keep))

    # -- the loop ----------------------------------------------------------------------------------------------
    def step(self, step: int) -> tuple[float, dict[str, float]]:
        """One optimizer step on this process's pairs; returns the loss (mean over processes) and its parts."""
        acc = self.accelerator
        latents, target, tasks = self.teacher_outputs(self.pair_indices(step))
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.config, step)
        self.student.train()
        with acc.autocast():
            raw = self.module(latents, clamp=False)  # through the (DDP) wrapper, so gradients synchronise
            loss, parts = distill_loss(raw, target, tasks)
        acc.backward(loss)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        value = loss.detach()
        if acc.num_processes > 1:
            value = acc.reduce(value, "mean")
        return float(value), parts

    def run(self, resume: bool = False, gate: GateOptions | None = None) -> Path:
        """Distill to ``config.steps``, write the student, judge it (``gate``: the decoder gate's frames; None:
        no gate) and return the output directory."""
        acc, cfg = self.accelerator, self.config
        if acc.is_main_process:
            self.output.mkdir(parents=True, exist_ok=True)
        acc.wait_for_everyone()
        start, loss = 0, float("nan")
        if resume:
            start, loss = self.resume()
            self._truncate_log(start)
            log.info("resumed at step %d", start)
        elif (existing := checkpoint_dirs(self.output)):
            raise StableMTLError(
                f"`{self.output}` already holds distillation checkpoints (latest {existing[-1].name}): pass --resume "
                "to continue, or choose a new --out"
            )
        bar = None
        if cfg.progress and acc.is_main_process:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=start, desc="distill decoder", unit="step", dynamic_ncols=True)
        t0 = time.perf_counter()
        try:
            for step in range(start, cfg.steps):
                loss, parts = self.step(step)
                done = step + 1
                rate = (done - start) / max(time.perf_counter() - t0, 1e-9)
                self._log({"step": done, "loss": loss, **{f"loss_{k}": v for k, v in parts.items()},
                           "lr": learning_rate(cfg, step), "steps_per_s": rate})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}")
                elif acc.is_main_process and (done % max(cfg.steps // 20, 1) == 0 or done == cfg.steps):
                    log.info("distill step %d/%d loss %.4f %.2f it/s", done, cfg.steps, loss, rate)
                if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                    self.save_checkpoint(done, loss)
        finally:
            if bar is not None:
                bar.close()
            self.frames.close()
        if acc.is_main_process:
            save_tiny_decoder(self.student, self.output, extra={
                "teacher": teacher_identity(self.teacher), "mode": _model_mode(self.teacher),
                "steps": cfg.steps, "final_loss": loss, "size": list(self.size), "source": cfg.source,
                "seed": cfg.seed, "batch": cfg.batch, "processes": acc.num_processes})
            if gate is not None:
                from .decoder_gate import decoder_gate

                report = decoder_gate(self.teacher, self.student, self.size, gate, progress=cfg.progress)
                report.write(self.output)
                log.info("%s", report.summary())
        acc.wait_for_everyone()
        return self.output


def distill_decoder(config: DistillConfig, resume: bool = False, accelerator: Any = None,
                    gate: GateOptions | None = None) -> Path:
    """Distill the model's decoder; the output directory then holds ``tiny_decoder.{safetensors,json}`` and,
    with ``gate``, the accuracy gate's ``decoder_gate.{json,md}``."""
    return Distiller(config, accelerator).run(resume, gate)


# -- evaluation --------------------------------------------------------------------------------------------
def _depth_abs_rel(tiny: np.ndarray, full: np.ndarray) -> float:
    """AbsRel of the tiny decode's relative depth against the full one's, over pixels where it is >= 0.01."""
    valid = full >= 0.01
    return float(np.mean(np.abs(tiny[valid] - full[valid]) / full[valid])) if valid.any() else float("nan")


def _task_disagreement(spec: TaskSpec, tiny: np.ndarray, full: np.ndarray) -> dict[str, float]:
    """The task-level difference of two decodes, in the task's own terms (``tiny``/``full``: codec outputs)."""
    from ..eval.flow_metrics import end_point_error
    from ..eval.normal_metrics import angular_error_deg

    if spec.name is TaskName.DEPTH:
        return {"abs_rel": _depth_abs_rel(tiny, full)}
    if spec.name is TaskName.NORMAL:
        return {"angle_deg": float(angular_error_deg(tiny, full).mean())}
    if spec.name is TaskName.SEMANTIC:
        return {"pixel_agreement": float((tiny == full).mean())}
    if spec.name is TaskName.OPTICAL_FLOW:  # normalised units: the pixel scale is fitted against ground truth
        return {"epe_normalised": float(end_point_error(tiny, full).mean())}
    return {"mae": float(np.abs(tiny - full).mean())}


@torch.no_grad()
def evaluate_decoder(model: StableMTL, student: TinyDecoder,
                     frames: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict[str, dict[str, float]]:
    """Per task: the decoded image's mean abs error, tiny vs full, and the disagreement of the task decodes.

    Args:
        model: the teacher (its own mode: multi-stream models in ``multi``).
        student: the distilled decoder.
        frames: pairs ``(frame1, frame2)`` of uint8 RGB at a multiple of 64 pixels.

    Returns:
        ``{task key: {"image_mae": ..., <metric>: ...}}``, averaged over frames; metrics are
        ``abs_rel`` (depth), ``angle_deg`` (normal), ``pixel_agreement`` (semantic), ``epe_normalised``
        (optical flow) and ``mae`` in the decoded units for the others.
    """
    student = student.to(model.device).eval()
    sums: dict[str, dict[str, float]] = {}
    count = 0
    for frame1, frame2 in frames:
        latents, full, tasks = teacher_batch(model, [(frame1, frame2)])
        full = full.permute(0, 2, 3, 1).float().cpu().numpy()  # [7, H, W, 3]
        tiny = student(latents).permute(0, 2, 3, 1).float().cpu().numpy()
        for spec, a, b in zip(tasks, tiny, full):
            row = {"image_mae": float(np.abs(a - b).mean()),
                   **_task_disagreement(spec, spec.codec.decode(a), spec.codec.decode(b))}
            acc = sums.setdefault(spec.key, {})
            for k, v in row.items():
                acc[k] = acc.get(k, 0.0) + v
        count += 1
    if count == 0:
        raise StableMTLError("evaluate_decoder: no frames given")
    return {t.key: {k: v / count for k, v in sums[t.key].items()} for t in TASKS if t.key in sums}
