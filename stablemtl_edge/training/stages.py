"""The three training stages: what is trained, what is frozen, and the loss of one micro-batch.

- ``vae`` (small presets only, which have no pretrained VAE): the ``AutoencoderKL`` learns to reconstruct
  RGB frames *and* the encoded task images, so every task image has a latent. Task isolation is a UNet
  matter: the VAE sees the images of every task each loaded sample labels (normal and semantic maps are
  colourful where RGB, depth and shading are mostly grey; seeing them only one step in seven left an
  early VAE unable to reproduce their chroma). Loss: L1 + MSE in pixels
  plus a small KL term that keeps the posterior mean (the latent we use) bounded.
- ``single`` (stage 1): the task UNet regresses the target latent from the frame latents; the VAE is frozen.
- ``multi`` (stage 2): a frozen copy of the stage-1 UNet (the auxiliary stream) provides the features of
  the six other tasks; the main stream starts from the same weights with zero-initialised task attention
  and trains with the 0.4 masking regulariser (active in ``train()`` mode, :mod:`..model.task_attention`).

Each stage is a :class:`StageProgram`; the trainer owns devices, precision and data-parallel wrapping,
and calls ``program.loss(wrapped_module, batch)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import torch
from torch import nn

from ..errors import StableMTLError
from ..model.checkpoint import load_pretrained
from ..model.multistream import auxiliary_tasks, stack_features
from ..model.stablemtl import StableMTL, frames_to_tensor, unet_input
from ..tasks import TASKS
from .batch import TaskBatch
from .loss import latent_valid_mask, masked_latent_mse
from ..records import KeyEnum

__all__ = ["Stage", "StageProgram", "VAEProgram", "SingleProgram", "MultiProgram", "program_for", "KL_WEIGHT"]

KL_WEIGHT = 1e-6  # the SD VAE recipe's KL weight: enough to keep latents bounded, no blur


class Stage(KeyEnum):
    """Training stages, in recipe order."""

    VAE = "vae"
    SINGLE = "single"
    MULTI = "multi"


def parse_stage(stage: str | Stage) -> Stage:
    try:
        return Stage(str(stage).strip().lower())
    except ValueError:
        raise StableMTLError(f"unknown stage `{stage}`: choose from vae, single, multi") from None


class VAEReconstruction(nn.Module):
    """The trainable part of the ``vae`` stage: image -> (reconstruction, posterior mean, log-variance)."""

    def __init__(self, model: StableMTL) -> None:
        super().__init__()
        self.vae = model.vae.vae

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        posterior = self.vae.encode(images).latent_dist
        return self.vae.decode(posterior.mean).sample, posterior.mean, posterior.logvar


class StageProgram(ABC):
    """One stage: builds its model, names its trainable module and computes the loss of a micro-batch."""

    stage: Stage

    def __init__(self, model: StableMTL) -> None:
        self.model = model
        model.requires_grad_(False)
        self.trainable = self.build_trainable(model)
        self.trainable.requires_grad_(True)

    @abstractmethod
    def build_trainable(self, model: StableMTL) -> nn.Module:
        """The module whose parameters the optimiser updates (and that data parallelism wraps)."""

    @abstractmethod
    def loss(self, module: nn.Module, batch: TaskBatch) -> torch.Tensor:
        """Scalar loss of one micro-batch; ``module`` is the (possibly wrapped) trainable module."""

    def train_mode(self) -> None:
        """Frozen parts in eval mode, the trainable part in train mode."""
        self.model.eval()
        self.trainable.train()

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.vae.encode(images.to(self.model.device))

    def frame_latents(self, batch: TaskBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
        z1 = self.encode(frames_to_tensor(batch.frame1))
        z2 = None if batch.frame2 is None else self.encode(frames_to_tensor(batch.frame2))
        return z1, z2


class VAEProgram(StageProgram):
    stage = Stage.VAE

    def build_trainable(self, model: StableMTL) -> nn.Module:
        if model.preset.pretrained_vae:
            raise StableMTLError(
                f"preset `{model.preset.name}` uses the pretrained SD2 VAE: the `vae` stage is for small presets; "
                "start at `--stage single`"
            )
        return VAEReconstruction(model)

    def loss(self, module: nn.Module, batch: TaskBatch) -> torch.Tensor:
        device = self.model.device
        parts = [frames_to_tensor(batch.frame1), batch.target] + ([batch.others] if batch.others is not None else [])
        images = torch.cat(parts).to(device)
        recon, mean, logvar = module(images)
        recon = recon.float()
        pixel = (recon - images).abs().mean() + ((recon - images) ** 2).mean()
        kl = 0.5 * (mean.float() ** 2 + logvar.float().exp() - 1.0 - logvar.float()).flatten(1).sum(1).mean()
        return pixel + KL_WEIGHT * kl


class SingleProgram(StageProgram):
    stage = Stage.SINGLE

    def build_trainable(self, model: StableMTL) -> nn.Module:
        return model.unet

    def loss(self, module: nn.Module, batch: TaskBatch) -> torch.Tensor:
        z1, z2 = self.frame_latents(batch)
        target = self.encode(batch.target)
        ids = torch.full((len(batch),), batch.task.index, dtype=torch.long, device=z1.device)
        pred = module(unet_input(z1, z2), ids)
        return masked_latent_mse(pred, target, latent_valid_mask(batch.valid.to(z1.device)))


class MultiProgram(StageProgram):
    stage = Stage.MULTI

    def build_trainable(self, model: StableMTL) -> nn.Module:
        if model.main is None:
            model.add_main_stream()
            model.main.to(model.device)
        return model.main

    @torch.no_grad()
    def auxiliary_features(self, z1: torch.Tensor, z2: torch.Tensor | None, main_task: int) -> list[torch.Tensor]:
        """The frozen stream's 16 features of the six auxiliary tasks, stacked ``[B, 7, N, C]``.

        Flow tasks use frame 2 when the sample has one and frame 1 twice otherwise (single-frame data),
        exactly as the predictor does.
        """
        aux = auxiliary_tasks([main_task])
        b = z1.shape[0]
        samples = torch.cat([unet_input(z1, z2 if TASKS[a].frames == 2 else None) for a in aux])
        ids = torch.tensor(aux, device=z1.device).repeat_interleave(b)
        _, feats = self.model.unet(samples, ids, return_features=True)
        per_task = {a: [f[i * b : (i + 1) * b] for f in feats] for i, a in enumerate(aux)}
        return stack_features(per_task, [f[:b] for f in feats])

    def loss(self, module: nn.Module, batch: TaskBatch) -> torch.Tensor:
        z1, z2 = self.frame_latents(batch)
        target = self.encode(batch.target)
        task = batch.task.index
        feats = self.auxiliary_features(z1, z2, task)
        ids = torch.full((len(batch),), task, dtype=torch.long, device=z1.device)
        pred = module(unet_input(z1, z2 if batch.task.frames == 2 else None), ids, feats)
        return masked_latent_mse(pred, target, latent_valid_mask(batch.valid.to(z1.device)))


_PROGRAMS: dict[Stage, type[StageProgram]] = {Stage.VAE: VAEProgram, Stage.SINGLE: SingleProgram, Stage.MULTI: MultiProgram}


def initial_model(stage: Stage, preset: str, init_from: str | Path | None, seed: int) -> StableMTL:
    """The model a stage starts from: a fresh one for ``vae`` (or a checkpoint to continue), else ``init_from``.

    ``single`` needs a model with a trained VAE (the ``vae`` stage's output, or an imported official
    checkpoint); ``multi`` needs the stage-1 model (or a multi-stream model to continue).
    """
    if init_from is None:
        if stage is not Stage.VAE:
            raise StableMTLError(
                f"stage `{stage}` starts from the previous stage's model: pass --init-from <checkpoint dir> "
                "(the `model/` directory of the previous run, or an imported official checkpoint)"
            )
        return StableMTL.from_preset(preset, seed=seed)
    model = load_pretrained(init_from)
    if stage is Stage.SINGLE and model.multi_stream:
        raise StableMTLError(
            f"`{init_from}` is a multi-stream model: stage `single` trains the single-stream UNet, start it from "
            "the `vae` stage's model (or continue this one with --stage multi)"
        )
    return model


def program_for(stage: Stage | str, model: StableMTL) -> StageProgram:
    return _PROGRAMS[parse_stage(stage)](model)
