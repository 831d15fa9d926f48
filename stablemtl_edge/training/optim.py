"""The StableMTL optimiser: Adam, linear warm-up, exponential decay towards a floor, gradient clipping.

DESIGN.md section 2: lr 1e-4, 100 warm-up steps, then the rate decays exponentially to 0.01x of its
peak at a fixed horizon (25k steps officially) and stays there; gradients are clipped to norm 5.0. The
horizon is part of the configuration, not derived from ``--steps``, so extending a run or resuming it
never changes the rates of steps already taken.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..errors import StableMTLError

__all__ = ["OptimConfig", "lr_factor", "build_optimizer", "build_scheduler"]


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser settings.

    Attributes:
        lr: peak learning rate.
        warmup: linear warm-up steps (the rate of step ``s < warmup`` is ``lr * (s + 1) / warmup``).
        decay_horizon: step at which the decay (starting after the warm-up) reaches ``final_ratio``.
        final_ratio: floor of the decay, relative to ``lr``.
        clip: max gradient norm (0 disables clipping).
        betas, eps, weight_decay: Adam's.
    """

    lr: float = 1e-4
    warmup: int = 100
    decay_horizon: int = 25_000
    final_ratio: float = 0.01
    clip: float = 5.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.warmup < 0 or self.decay_horizon < 1 or not 0 < self.final_ratio <= 1 or self.clip < 0:
            raise StableMTLError(
                f"invalid optimiser settings {self}: need lr > 0, warmup >= 0, decay horizon >= 1, "
                "0 < final ratio <= 1, clip >= 0"
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d


def lr_factor(step: int, config: OptimConfig) -> float:
    """Multiplier of ``config.lr`` at optimizer step ``step`` (0-based)."""
    warm = min(1.0, (step + 1) / config.warmup) if config.warmup else 1.0
    span = max(config.decay_horizon - config.warmup, 1)
    progress = min(max(step - config.warmup, 0), span) / span
    return warm * config.final_ratio**progress


def build_optimizer(params: Iterable[torch.nn.Parameter], config: OptimConfig) -> torch.optim.Adam:
    params = [p for p in params if p.requires_grad]
    if not params:
        raise StableMTLError("nothing to train: every parameter of the selected stage is frozen")
    return torch.optim.Adam(params, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
