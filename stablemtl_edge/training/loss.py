"""The single StableMTL loss: MSE in latent space over valid latent cells only.

A latent cell summarises the 8x8 pixels under it, so it is valid only when every one of them is: the
invalid mask is max-pooled by the VAE factor. No per-task weights and no pixel-space term (DESIGN.md
section 2).

The loss of a batch is the mean over its samples of each sample's mean over its own valid cells. That
makes a batch split across ranks (each averaging its own samples, DDP averaging the ranks) give exactly
the loss of the whole batch on one process.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import VAE_DOWNSAMPLE

__all__ = ["latent_valid_mask", "masked_latent_mse"]


def latent_valid_mask(valid: torch.Tensor, factor: int = VAE_DOWNSAMPLE) -> torch.Tensor:
    """Pixel validity ``[B, H, W]`` bool -> latent validity ``[B, 1, H/f, W/f]`` bool.

    Raises:
        ValueError: H or W is not a multiple of ``factor``.
    """
    if valid.ndim != 3 or valid.shape[1] % factor or valid.shape[2] % factor:
        raise ValueError(f"valid must be [B, H, W] with H, W multiples of {factor}, got {tuple(valid.shape)}")
    invalid = (~valid.bool()).float()[:, None]
    return F.max_pool2d(invalid, kernel_size=factor, stride=factor) == 0


def masked_latent_mse(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over samples of the MSE over each sample's valid latent cells (all channels).

    Args:
        pred, target: ``[B, C, h, w]`` latents.
        valid: ``[B, 1, h, w]`` bool latent validity (:func:`latent_valid_mask`).

    Returns:
        A scalar; a sample with no valid cell contributes 0 (and no gradient).
    """
    mask = valid.to(pred.dtype).expand_as(pred)
    err = (pred.float() - target.float()) ** 2 * mask.float()
    cells = mask.float().flatten(1).sum(dim=1)
    per_sample = err.flatten(1).sum(dim=1) / cells.clamp_min(1.0)
    return per_sample.mean()
