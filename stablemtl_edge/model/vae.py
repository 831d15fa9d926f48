"""The latent codec: SD2's ``AutoencoderKL`` used deterministically (posterior mean x 0.18215)."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL
from torch import nn

from ..config import LATENT_SCALE, ModelPreset

__all__ = ["LatentVAE", "build_vae"]


def build_vae(preset: ModelPreset) -> AutoencoderKL:
    return AutoencoderKL(**dict(preset.vae))


class LatentVAE(nn.Module):
    """Encode images in [-1, 1] to scaled latents and back; no sampling anywhere."""

    def __init__(self, vae: AutoencoderKL, scale: float = LATENT_SCALE) -> None:
        super().__init__()
        self.vae = vae
        self.scale = scale

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` in [-1, 1] -> ``[B, 4, H/8, W/8]`` posterior mean x scale."""
        return self.vae.encode(images).latent_dist.mean * self.scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """``[B, 4, h, w]`` -> ``[B, 3, 8h, 8w]`` images, clipped to [-1, 1]."""
        return self.vae.decode(latents / self.scale).sample.clamp(-1.0, 1.0)
