"""Task-gradient isolation: which task, which dataset and which samples every micro-batch of every rank holds.

DESIGN.md section 2: every micro-batch holds one task from one dataset; all micro-batches of a
gradient-accumulation window share the task; the task rotates round-robin once per optimizer step in the
official order; the dataset of a micro-batch is drawn with the task's fixed probabilities; every rank
follows the same task schedule with different samples.

The schedule is a pure function of ``(seed, step, micro-batch)``: a *global* micro-batch of
``micro_batch * world_size`` draws (one dataset, its indices, an augmentation seed per sample) is made
from a generator seeded with exactly those numbers, and rank ``r`` takes slice ``r``. Consequences:

- ranks agree on task and dataset without communicating;
- a 2-process run and a 1-process run with the same global micro-batch see the same samples, so their
  weights agree up to float noise;
- the only state is the step counter, so resume is exact (:meth:`state_dict`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import StableMTLError
from ..data.sample import Sample
from ..tasks import get_task
from ..data.dataset import SampleSource, TaskMixture

__all__ = ["TRAINING_ORDER", "MicroBatch", "TaskSampler"]

# The official round-robin order of the tasks, one per optimizer step.
TRAINING_ORDER: tuple[str, ...] = ("albedo", "shading", "depth", "normal", "semantic", "optical_flow", "scene_flow")


@dataclass(frozen=True)
class MicroBatch:
    """What one rank loads for one micro-batch.

    Attributes:
        step: optimizer step (0-based) the micro-batch belongs to.
        micro: position in the accumulation window.
        task: task key shared by every rank and micro-batch of the step.
        source: the dataset drawn for this micro-batch (the same on every rank).
        indices: this rank's sample indices in ``source``.
        seeds: one augmentation seed per index (a function of the global draw, not of the rank).
    """

    step: int
    micro: int
    task: str
    source: SampleSource
    indices: tuple[int, ...]
    seeds: tuple[int, ...]

    def load(self) -> list[Sample]:
        return [self.source[i] for i in self.indices]


class TaskSampler:
    """Deterministic task-isolating schedule over a :class:`TaskMixture`.

    Args:
        mixture: per-task sources and probabilities.
        micro_batch: samples per micro-batch on one rank.
        accumulation: micro-batches per optimizer step.
        world_size: number of ranks.
        rank: this rank.
        seed: run seed; every draw derives from ``(seed, step, micro)``.
        tasks: tasks to train (default: every task the mixture serves), kept in :data:`TRAINING_ORDER`.
    """

    def __init__(
        self,
        mixture: TaskMixture,
        micro_batch: int,
        accumulation: int = 1,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        tasks: Sequence[str] | None = None,
    ) -> None:
        if micro_batch < 1 or accumulation < 1:
            raise StableMTLError(f"micro-batch and accumulation must be >= 1, got {micro_batch} and {accumulation}")
        if not 0 <= rank < world_size:
            raise StableMTLError(f"rank {rank} is outside a world of {world_size} process(es)")
        served = set(mixture.tasks)
        wanted = served if tasks is None else {get_task(t).key for t in tasks}
        missing = sorted(wanted - served, key=lambda k: get_task(k).index)
        if missing:
            raise StableMTLError(
                f"no training source labels {', '.join(missing)}: the data serve {', '.join(mixture.tasks)}; "
                "add a source for it or drop it from --tasks"
            )
        self.mixture = mixture
        self.tasks = tuple(t for t in TRAINING_ORDER if t in wanted)
        self.micro_batch = int(micro_batch)
        self.accumulation = int(accumulation)
        self.world_size = int(world_size)
        self.rank = int(rank)
        self.seed = int(seed)
        self.step = 0

    def task_at(self, step: int) -> str:
        return self.tasks[step % len(self.tasks)]

    def micro_batch_at(self, step: int, micro: int) -> MicroBatch:
        """This rank's share of micro-batch ``micro`` of optimizer step ``step``."""
        task = self.task_at(step)
        rng = np.random.default_rng([self.seed, step, micro])
        entries = self.mixture.entries(task)
        k = 0 if len(entries) == 1 else int(rng.choice(len(entries), p=[e.probability for e in entries]))
        source = entries[k].source
        total = self.micro_batch * self.world_size
        indices = rng.integers(len(source), size=total)
        seeds = rng.integers(2**62, size=total)
        mine = slice(self.rank * self.micro_batch, (self.rank + 1) * self.micro_batch)
        return MicroBatch(step, micro, task, source, tuple(int(i) for i in indices[mine]), tuple(int(s) for s in seeds[mine]))

    def next_window(self) -> list[MicroBatch]:
        """The micro-batches of the current optimizer step; advances the schedule by one step."""
        window = [self.micro_batch_at(self.step, m) for m in range(self.accumulation)]
        self.step += 1
        return window

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "seed": self.seed, "tasks": list(self.tasks),
                "micro_batch": self.micro_batch, "accumulation": self.accumulation, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the position; the schedule-defining settings must match the checkpoint's."""
        for key in ("seed", "tasks", "micro_batch", "accumulation", "world_size"):
            have = list(self.tasks) if key == "tasks" else getattr(self, key)
            if state.get(key) != have:
                raise StableMTLError(
                    f"cannot resume: the checkpoint's sampler has {key} = {state.get(key)}, this run has {have}; "
                    "resume with the same seed, tasks, batch, accumulation and number of processes"
                )
        self.step = int(state["step"])
