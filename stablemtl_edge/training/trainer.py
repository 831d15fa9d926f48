"""The training loop, scaled out through ``accelerate``: one CPU, one GPU, several GPUs or nodes, same command.

Launch with ``stablemtl-train ...`` on one process, or ``accelerate launch -m stablemtl_edge.training.cli
...`` / ``torchrun --nproc_per_node N -m stablemtl_edge.training.cli ...`` on several; ``accelerate``
reads the launcher's environment, picks the backend (NCCL on GPUs, gloo on CPUs), wraps the trainable
module in DDP and handles mixed precision (fp16 with loss scaling or bf16 where the device has them).

One optimizer step = one task (:mod:`.sampler`) over ``accumulation`` micro-batches of ``batch`` samples
per process; gradients are synchronised only on the last micro-batch of the window.

Checkpoints (``<output>/checkpoints/step-NNNNNNN/``) hold the full model state (safetensors), the
optimizer, scheduler and loss-scaler states, every rank's RNG states and the sampler position. They are
built under a temporary name and renamed when complete, so a crash never leaves a half checkpoint that
``--resume`` would pick. Everything random is either a pure function of ``(seed, step, micro-batch,
sample)`` or restored from these RNG states, so an interrupted and resumed run ends with exactly the
weights of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import StableMTLError
from ..model.checkpoint import save_pretrained
from ..model.weight_files import load_state_dict_checked, read_safetensors, read_torch_file
from ..model.stablemtl import StableMTL
from ..tasks import parse_tasks
from .batch import collate, prepare_sample
from ..data.augment import Augmentation
from .optim import OptimConfig, build_optimizer, build_scheduler
from .sampler import TaskSampler
from .sources import DataConfig, build_sources
from .stages import Stage, initial_model, parse_stage, program_for
from .validate import evaluate_model, main_metrics, take_samples, vae_psnr
from ..records import KeyEnum

__all__ = ["Precision", "TrainConfig", "Trainer", "train", "latest_checkpoint", "MODEL_DIR", "CHECKPOINT_DIR"]

log = logging.getLogger(__name__)
MODEL_DIR = "model"
CHECKPOINT_DIR = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d{7})$")
DEFAULT_VAE_CROP = (64, 64)


class DamagedCheckpoint(StableMTLError):
    """A checkpoint file is missing, truncated or not what it should be (``--resume`` falls back past it)."""


class Precision(KeyEnum):
    """Mixed precision: ``auto`` = bf16 on GPUs that support it, else fp16 on GPUs, none on CPUs."""

    AUTO = "auto"
    NO = "no"
    FP16 = "fp16"
    BF16 = "bf16"

    def resolve(self, cuda: bool) -> str:
        if self is not Precision.AUTO:
            return self.value
        if not cuda:
            return "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run (saved with every checkpoint).

    Attributes:
        stage: ``vae``, ``single`` or ``multi``.
        output: run directory (checkpoints, logs, final ``model/``).
        preset: model preset for a fresh ``vae`` run (later stages take the preset of ``init_from``).
        init_from: the previous stage's model directory (required by ``single`` and ``multi``).
        steps: total optimizer steps.
        batch: samples per micro-batch per process.
        accumulation: micro-batches per optimizer step.
        seed: seeds the model initialisation and every draw of the sampler and augmentation.
        tasks: tasks to train (None: every task the data serve).
        data: training sources.
        optim: optimiser settings.
        resolution: training resolution ``(H, W)`` (None: the preset's).
        crop: random crop ``(H, W)`` taken from the resolution (None: no crop; ``vae`` default 64x64).
        augment: the recipe's flips and colour jitter.
        checkpoint_every: steps between checkpoints (the last step is always checkpointed).
        keep_checkpoints: most recent checkpoints kept on disk.
        validate_every: steps between validations (0: only after the last step).
        val_per_source: validation samples per validation source.
        precision: mixed precision.
        progress: tqdm bar on stderr (main process).
    """

    stage: Stage
    output: Path
    preset: str = "small"
    init_from: str | None = None
    steps: int = 1000
    batch: int = 8
    accumulation: int = 1
    seed: int = 0
    tasks: tuple[str, ...] | None = None
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    resolution: tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    augment: bool = True
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    validate_every: int = 0
    val_per_source: int = 8
    precision: Precision = Precision.AUTO
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage", parse_stage(self.stage))
        object.__setattr__(self, "output", Path(self.output))
        object.__setattr__(self, "precision", Precision(str(self.precision)))
        if self.tasks is not None:
            object.__setattr__(self, "tasks", tuple(t.key for t in parse_tasks(self.tasks)))
        for name in ("steps", "batch", "accumulation", "checkpoint_every", "keep_checkpoints", "val_per_source"):
            if int(getattr(self, name)) < 1:
                raise StableMTLError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.validate_every < 0:
            raise StableMTLError(f"--validate-every must be >= 0, got {self.validate_every}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(stage=self.stage.value, output=str(self.output), precision=self.precision.value,
                 data=self.data.to_dict(), optim=self.optim.to_dict(),
                 tasks=list(self.tasks) if self.tasks else None,
                 resolution=list(self.resolution) if self.resolution else None,
                 crop=list(self.crop) if self.crop else None)
        return d


def checkpoint_dirs(output: Path) -> list[Path]:
    root = output / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)), key=lambda p: p.name)


def latest_checkpoint(output: str | os.PathLike) -> Path | None:
    """The most recent complete checkpoint of a run, or None."""
    dirs = [p for p in checkpoint_dirs(Path(output)) if (p / "trainer.json").is_file()]
    return dirs[-1] if dirs else None


class Trainer:
    """One training run of one stage. Use :func:`train` unless you need the pieces.

    Args:
        config: the run.
        accelerator: an ``accelerate.Accelerator`` (built from ``config.precision`` when None).
    """

    def __init__(self, config: TrainConfig, accelerator: Any = None) -> None:
        from accelerate import Accelerator

        self.config = config
        cuda = torch.cuda.is_available()
        self.accelerator = accelerator or Accelerator(mixed_precision=config.precision.resolve(cuda), cpu=not cuda)
        acc = self.accelerator
        # New parameters (a fresh model, or stage 2's task attention on a loaded one) come from the seed alone.
        torch.manual_seed(config.seed)
        self.model: StableMTL = initial_model(config.stage, config.preset, config.init_from, config.seed)
        self.program = program_for(config.stage, self.model)
        self.model.to(acc.device)
        self.resolution = tuple(config.resolution or self.model.preset.resolution)
        crop = config.crop or (DEFAULT_VAE_CROP if config.stage is Stage.VAE else self.resolution)
        if crop[0] > self.resolution[0] or crop[1] > self.resolution[1] or crop[0] % 64 or crop[1] % 64:
            raise StableMTLError(
                f"crop {crop[0]}x{crop[1]} must be multiples of 64 no larger than the resolution "
                f"{self.resolution[0]}x{self.resolution[1]}"
            )
        if self.resolution[0] % 64 or self.resolution[1] % 64:
            raise StableMTLError(f"resolution {self.resolution} must be multiples of 64 pixels")
        self.crop = tuple(crop)
        mixture, self.val_sources = build_sources(config.data, self.resolution, config.tasks)
        self.sampler = TaskSampler(mixture, config.batch, config.accumulation, acc.num_processes,
                                   acc.process_index, config.seed, config.tasks)
        self.augmentation = Augmentation() if config.augment else None
        optimizer = build_optimizer(self.program.trainable.parameters(), config.optim)
        self.scheduler = build_scheduler(optimizer, config.optim)
        self.module, self.optimizer = acc.prepare(self.program.trainable, optimizer)
        torch.manual_seed(config.seed * 1009 + acc.process_index)
        self._val_samples: list | None = None

    # -- paths and logs --------------------------------------------------------------------------------
    @property
    def output(self) -> Path:
        return self.config.output

    def _log_line(self, name: str, record: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            with open(self.output / name, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def _truncate_log(self, name: str, step: int) -> None:
        """Drop records of steps after ``step`` (they are redone after a resume)."""
        path = self.output / name
        if not self.accelerator.is_main_process or not path.is_file():
            return
        keep = [line for line in path.read_text(encoding="utf-8").splitlines() if line and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")

    # -- checkpoints -----------------------------------------------------------------------------------
    def save_checkpoint(self, step: int) -> Path:
        """Write ``checkpoints/step-NNNNNNN`` atomically (all ranks must call this)."""
        from safetensors.torch import save_file

        acc = self.accelerator
        root = self.output / CHECKPOINT_DIR
        final = root / f"step-{step:07d}"
        tmp = root / f".step-{step:07d}.tmp"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state(acc.device)
        torch.save(rng, tmp / f"rng-{acc.process_index}.pt")
        if acc.is_main_process:
            state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
            save_file(state, str(tmp / "model.safetensors"))
            opt = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
            if acc.scaler is not None:
                opt["scaler"] = acc.scaler.state_dict()
            torch.save(opt, tmp / "optimizer.pt")
            meta = {"step": step, "sampler": self.sampler.state_dict(), "config": self.config.to_dict(),
                    "world_size": acc.num_processes, "version": __version__}
            (tmp / "trainer.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        acc.wait_for_everyone()
        if acc.is_main_process:
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            for old in checkpoint_dirs(self.output)[: -self.config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    def read_checkpoint(self, directory: Path) -> dict[str, Any]:
        """Read and check every file of a checkpoint before anything is restored.

        Raises:
            DamagedCheckpoint: a file is missing, truncated, not what it should be, or pickles code.
            StableMTLError: an intact checkpoint of another run (stage, processes).
        """
        acc = self.accelerator
        meta_file = directory / "trainer.json"
        if not meta_file.is_file():
            raise DamagedCheckpoint(f"`{meta_file}` is missing (the checkpoint is incomplete)")
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DamagedCheckpoint(f"`{meta_file}` is not valid JSON ({type(e).__name__})") from None
        missing = [k for k in ("step", "sampler", "config", "world_size") if not isinstance(meta, dict) or k not in meta]
        if missing or not isinstance(meta["step"], int) or not isinstance(meta["config"], dict):
            raise DamagedCheckpoint(f"`{meta_file}` is not a trainer record (missing or bad: {', '.join(missing) or 'step'})")
        if meta["config"].get("stage") != self.config.stage.value:
            raise StableMTLError(f"`{directory}` is a `{meta['config'].get('stage')}` checkpoint, this run is `{self.config.stage}`")
        if meta["world_size"] != acc.num_processes:
            raise StableMTLError(
                f"`{directory}` was written by {meta['world_size']} process(es), this run has {acc.num_processes}: "
                "resume with the same number of processes (the sample schedule depends on it)"
            )
        try:
            weights = read_safetensors(directory / "model.safetensors", acc.device)
            opt = read_torch_file(directory / "optimizer.pt", acc.device)
            rng_file = directory / f"rng-{acc.process_index}.pt"
            rng = read_torch_file(rng_file)
        except StableMTLError as e:
            raise DamagedCheckpoint(str(e)) from None
        if not isinstance(opt, dict) or not all(isinstance(opt.get(k), dict) for k in ("optimizer", "scheduler")):
            raise DamagedCheckpoint(f"`{directory / 'optimizer.pt'}` does not hold the optimizer and scheduler states")
        if not isinstance(rng, dict) or not isinstance(rng.get("torch"), torch.Tensor):
            raise DamagedCheckpoint(f"`{rng_file}` does not hold the RNG states")
        return {"meta": meta, "weights": weights, "optimizer": opt, "rng": rng, "directory": directory}

    def restore(self, state: dict[str, Any]) -> int:
        """Restore weights, optimizer, scheduler, scaler, RNG and sampler from :meth:`read_checkpoint`."""
        acc, directory = self.accelerator, state["directory"]
        load_state_dict_checked(self.model, state["weights"], str(directory / "model.safetensors"))
        opt = state["optimizer"]
        try:
            self.optimizer.load_state_dict(opt["optimizer"])
            self.scheduler.load_state_dict(opt["scheduler"])
            if acc.scaler is not None and "scaler" in opt:
                acc.scaler.load_state_dict(opt["scaler"])
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise StableMTLError(
                f"`{directory / 'optimizer.pt'}` does not fit this run's optimizer ({type(e).__name__}); "
                "resume with the settings the run was started with"
            ) from None
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["rng"]["cuda"], acc.device)
        self.sampler.load_state_dict(state["meta"]["sampler"])
        return int(state["meta"]["step"])

    def load_checkpoint(self, directory: Path) -> int:
        """Read, check and restore one checkpoint; return the step reached."""
        return self.restore(self.read_checkpoint(directory))

    def resume_from_latest_good(self) -> tuple[Path, int]:
        """Restore the newest readable checkpoint; each damaged newer one is named in a warning and kept.

        All processes try the same candidates in the same order and agree on each before restoring.
        """
        acc = self.accelerator
        candidates = checkpoint_dirs(self.output)[::-1]
        if not candidates:
            raise StableMTLError(f"--resume: `{self.output}` has no checkpoint to resume from; drop --resume to start")
        for i, directory in enumerate(candidates):
            try:
                state, problem = self.read_checkpoint(directory), None
            except DamagedCheckpoint as e:
                state, problem = None, str(e)
            if acc.num_processes > 1:
                ok = acc.reduce(torch.tensor(float(problem is None), device=acc.device), "sum")
                if int(ok) != acc.num_processes and problem is None:
                    state, problem = None, f"`{directory}` is damaged on another process"
            if problem is None:
                return directory, self.restore(state)
            if i + 1 == len(candidates):
                raise StableMTLError(
                    f"--resume: {problem}; no earlier checkpoint to fall back to: restore the file, or start over "
                    f"with a new --output (nothing was deleted)"
                )
            log.warning("--resume: skipping checkpoint %s: %s; trying %s (nothing was deleted)",
                        directory.name, problem, candidates[i + 1].name)
        raise AssertionError("unreachable")

    # -- validation ------------------------------------------------------------------------------------
    def validate(self, step: int) -> dict[str, Any] | None:
        """Main process: metrics on the validation samples, appended to ``validation.jsonl``."""
        acc = self.accelerator
        record = None
        if acc.is_main_process and self.val_sources:
            if self._val_samples is None:
                self._val_samples = take_samples(self.val_sources, self.config.val_per_source)
            record = {"step": step, "stage": self.config.stage.value}
            was_training = self.model.training
            self.model.eval()
            try:
                if self.config.stage is Stage.VAE:
                    record["psnr"] = vae_psnr(self.model, self._val_samples)
                else:
                    modes = ("single", "multi") if self.config.stage is Stage.MULTI else ("single",)
                    for mode in modes:
                        result = evaluate_model(self.model, self._val_samples, mode, self.config.tasks)
                        record[mode] = main_metrics(result)
            finally:
                self.model.train(was_training)
            self._log_line("validation.jsonl", record)
        acc.wait_for_everyone()
        return record

    # -- the loop ----------------------------------------------------------------------------------------
    def micro_batches(self) -> Iterator[list]:
        """Prepared samples of every micro-batch of the next window."""
        for mb in self.sampler.next_window():
            samples = [prepare_sample(s, mb.task, self.resolution, self.crop, self.augmentation, seed)
                       for s, seed in zip(mb.load(), mb.seeds)]
            yield collate(samples, mb.task, other_labels=self.config.stage is Stage.VAE)

    def run(self, resume: bool = False) -> Path:
        """Train to ``config.steps`` and write ``<output>/model``; returns its path.

        Args:
            resume: continue from the latest checkpoint in the output directory.
        """
        acc, cfg = self.accelerator, self.config
        if acc.is_main_process:
            self.output.mkdir(parents=True, exist_ok=True)
        acc.wait_for_everyone()
        start = 0
        if resume:
            latest, start = self.resume_from_latest_good()
            self._truncate_log("train.jsonl", start)
            self._truncate_log("validation.jsonl", start)
            log.info("resumed from %s at step %d", latest, start)
        elif (latest := (checkpoint_dirs(self.output) or [None])[-1]) is not None:
            raise StableMTLError(
                f"`{self.output}` already holds checkpoints (latest {latest.name}): pass --resume to continue, "
                "or choose a new --output"
            )
        if acc.is_main_process and start == 0:
            (self.output / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
        bar = None
        if cfg.progress and acc.is_main_process:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=start, desc=f"train {cfg.stage}", unit="step", dynamic_ncols=True)
        params = [p for p in self.program.trainable.parameters() if p.requires_grad]
        t0 = time.perf_counter()
        for step in range(start, cfg.steps):
            self.program.train_mode()
            task = self.sampler.task_at(step)
            windows = list(self.micro_batches())
            total = torch.zeros((), device=acc.device)
            for m, batch in enumerate(windows):
                sync = m == len(windows) - 1
                ctx = contextlib.nullcontext() if sync else acc.no_sync(self.module)
                with ctx:
                    with acc.autocast():
                        loss = self.program.loss(self.module, batch) / len(windows)
                    acc.backward(loss)
                total += loss.detach()
            grad_norm = float(acc.clip_grad_norm_(params, cfg.optim.clip)) if cfg.optim.clip > 0 else float("nan")
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            mean_loss = float(acc.reduce(total, "mean")) if acc.num_processes > 1 else float(total)
            done = step + 1
            self._log_line("train.jsonl", {"step": done, "task": task, "loss": mean_loss, "grad_norm": grad_norm,
                                           "lr": self.scheduler.get_last_lr()[0], "time": time.perf_counter() - t0})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(task=task, loss=f"{mean_loss:.4f}")
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                self.save_checkpoint(done)
            if (cfg.validate_every and done % cfg.validate_every == 0) or done == cfg.steps:
                record = self.validate(done)
                if bar is not None and record is not None:
                    bar.write(f"step {done}: " + json.dumps({k: v for k, v in record.items() if k not in ("step", "stage")}))
        if bar is not None:
            bar.close()
        model_dir = self.output / MODEL_DIR
        if acc.is_main_process:
            save_pretrained(self.model, model_dir, overwrite=True, extra={"training": {
                "stage": cfg.stage.value, "steps": cfg.steps, "seed": cfg.seed, "init_from": cfg.init_from,
                "processes": acc.num_processes, "global_batch": cfg.batch * cfg.accumulation * acc.num_processes}})
        acc.wait_for_everyone()
        return model_dir


def train(config: TrainConfig, resume: bool = False, accelerator: Any = None) -> Path:
    """Run one stage; ``resume`` continues from the latest checkpoint in ``config.output``."""
    return Trainer(config, accelerator).run(resume)
