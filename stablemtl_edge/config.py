"""Model presets: the official ``sd2`` architecture and small ones for CPU tests and the bundled model.

A preset is nothing more than the keyword arguments of the model classes (diffusers'
constructor-is-config): ``unet`` for ``diffusers.UNet2DConditionModel``, ``vae`` for
``diffusers.AutoencoderKL``, plus the few StableMTL-specific numbers. All presets share the SD2 topology
(4 levels, 2 layers per block, 16 transformer blocks, 8x VAE) so every code path is exercised by the
small ones. torch-free: the runtime and the manifest read presets too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .errors import StableMTLError
from .records import JsonRecord

__all__ = ["ModelPreset", "PRESETS", "get_preset", "LATENT_SCALE", "TIMESTEP", "VAE_DOWNSAMPLE", "UNET_DOWNSAMPLE"]

LATENT_SCALE = 0.18215  # hard-coded in the official code, not read from the VAE config
TIMESTEP = 999  # the single fixed timestep of the one-step regressor
VAE_DOWNSAMPLE = 8
UNET_DOWNSAMPLE = 8  # the UNet halves the latent 3 times
# Token lengths of the CLIP embeddings of the seven prompts (with BOS/EOS), canonical task order.
PROMPT_TOKEN_LENGTHS = (3, 3, 4, 4, 4, 5, 3)
MAX_PROMPT_TOKENS = max(PROMPT_TOKEN_LENGTHS)


def _unet(channels: tuple[int, ...], heads: tuple[int, ...], cross_dim: int, groups: int) -> dict[str, Any]:
    return {
        "sample_size": 64,
        "in_channels": 12,
        "out_channels": 4,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        "block_out_channels": channels,
        "layers_per_block": 2,
        # diffusers' historical name: for SD2 this is the number of heads per level (64-dim heads).
        "attention_head_dim": heads,
        "cross_attention_dim": cross_dim,
        "use_linear_projection": True,
        "norm_num_groups": groups,
        "norm_eps": 1e-5,
        "act_fn": "silu",
        "upcast_attention": False,
    }


def _vae(channels: tuple[int, ...], layers: int, groups: int) -> dict[str, Any]:
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "block_out_channels": channels,
        "layers_per_block": layers,
        "latent_channels": 4,
        "norm_num_groups": groups,
        "act_fn": "silu",
        "sample_size": 256,
    }


@dataclass(frozen=True)
class ModelPreset(JsonRecord):
    """Architecture of one model size.

    Attributes:
        name: preset key.
        unet: ``UNet2DConditionModel`` keyword arguments (12 input channels).
        vae: ``AutoencoderKL`` keyword arguments (8x down-sampling, 4 latent channels).
        text_embed_dim: width of the task embeddings (= the UNet's cross-attention dim).
        task_q_hidden: hidden width of the task-attention query MLP (640 in the official model).
        task_heads: heads of the per-pixel task attention (4 in the official release).
        resolution: default processing resolution ``(H, W)``, a multiple of 64 (VAE x UNet down-sampling).
        pretrained_vae: True when the VAE comes from a pretrained checkpoint (SD2), False when it is
            trained by our ``vae`` stage.
    """

    name: str
    unet: Mapping[str, Any]
    vae: Mapping[str, Any]
    text_embed_dim: int
    task_q_hidden: int
    task_heads: int = 4
    resolution: tuple[int, int] = (128, 192)
    pretrained_vae: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "unet", MappingProxyType(dict(self.unet)))
        object.__setattr__(self, "vae", MappingProxyType(dict(self.vae)))
        if self.unet["cross_attention_dim"] != self.text_embed_dim:
            raise StableMTLError(f"preset `{self.name}`: cross_attention_dim must equal text_embed_dim")
        for c in self.unet["block_out_channels"]:
            if c % self.task_heads:
                raise StableMTLError(f"preset `{self.name}`: channels {c} not divisible by {self.task_heads} heads")
        h, w = self.resolution
        step = VAE_DOWNSAMPLE * UNET_DOWNSAMPLE
        if h % step or w % step:
            raise StableMTLError(f"preset `{self.name}`: resolution {h}x{w} is not a multiple of {step}")

    @property
    def attention_channels(self) -> tuple[int, ...]:
        """Channels C of the 16 transformer blocks in the official task-attention index order."""
        ch = tuple(self.unet["block_out_channels"])
        return (ch[0],) * 2 + (ch[1],) * 2 + (ch[2],) * 2 + (ch[3],) + (ch[2],) * 3 + (ch[1],) * 3 + (ch[0],) * 3

    @property
    def attention_downsample(self) -> tuple[int, ...]:
        """Latent down-sampling factor of each of the 16 transformer blocks (1, 2 or 4, then 8 in the middle)."""
        return (1, 1, 2, 2, 4, 4, 8, 4, 4, 4, 2, 2, 2, 1, 1, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unet": {k: list(v) if isinstance(v, tuple) else v for k, v in self.unet.items()},
            "vae": {k: list(v) if isinstance(v, tuple) else v for k, v in self.vae.items()},
            "text_embed_dim": self.text_embed_dim,
            "task_q_hidden": self.task_q_hidden,
            "task_heads": self.task_heads,
            "resolution": list(self.resolution),
            "pretrained_vae": self.pretrained_vae,
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelPreset:
        def tuples(m: Mapping[str, Any]) -> dict[str, Any]:
            return {k: tuple(v) if isinstance(v, list) else v for k, v in m.items()}

        return cls(
            name=d["name"],
            unet=tuples(d["unet"]),
            vae=tuples(d["vae"]),
            text_embed_dim=int(d["text_embed_dim"]),
            task_q_hidden=int(d["task_q_hidden"]),
            task_heads=int(d.get("task_heads", 4)),
            resolution=tuple(d.get("resolution", (128, 192))),
            pretrained_vae=bool(d.get("pretrained_vae", False)),
            description=str(d.get("description", "")),
        )


PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        ModelPreset(
            name="sd2",
            unet=_unet((320, 640, 1280, 1280), (5, 10, 20, 20), 1024, 32),
            vae={**_vae((128, 256, 512, 512), 2, 32), "sample_size": 768},
            text_embed_dim=1024,
            task_q_hidden=640,
            resolution=(384, 512),
            pretrained_vae=True,
            description="the official StableMTL architecture (SD2 UNet, SD2 VAE)",
        ),
        ModelPreset(
            name="small",
            unet=_unet((32, 64, 96, 96), (2, 4, 6, 6), 64, 16),
            vae=_vae((32, 48, 64, 64), 1, 16),
            text_embed_dim=64,
            task_q_hidden=64,
            resolution=(128, 192),
            description="the bundled demo model: SD2 topology, CPU-sized",
        ),
        ModelPreset(
            name="tiny",
            unet=_unet((32, 32, 64, 64), (2, 2, 4, 4), 32, 8),
            vae=_vae((16, 16, 32, 32), 1, 8),
            text_embed_dim=32,
            task_q_hidden=32,
            resolution=(64, 128),
            description="for unit tests: SD2 topology, a few channels",
        ),
    )
}


def get_preset(name: str | ModelPreset) -> ModelPreset:
    """Return a preset by name; an unknown name lists the valid ones."""
    if isinstance(name, ModelPreset):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise StableMTLError(f"unknown model preset `{name}`: choose from {', '.join(PRESETS)}") from None
