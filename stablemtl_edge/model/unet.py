"""The task-conditioned single-step UNet: SD2's ``UNet2DConditionModel`` with 12 input channels.

The stock diffusers UNet is used as shipped. What StableMTL adds lives around it:

- a constant table of the seven task embeddings (padded to a common length, with the attention mask that
  makes the padding invisible), selected per batch row by task id, so no text encoder runs after import;
- the fixed timestep 999;
- attention processors on the 16 self-attention paths that either record the branch output (the
  auxiliary stream's features) or add the task-attention branch (the main stream, see
  :mod:`.task_attention`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn

from ..config import TIMESTEP, ModelPreset
from ..errors import StableMTLError
from ..tasks import NUM_TASKS

__all__ = [
    "ATTENTION_LAYERS",
    "NUM_FEATURES",
    "StreamContext",
    "FeatureTapProcessor",
    "TaskUNet",
    "build_unet",
    "widen_conv_in",
]

# The 16 transformer layers in the official task-attention index order (down -> mid -> up).
# diffusers' own processor iteration order is down -> up -> mid and must not be used.
ATTENTION_LAYERS: tuple[str, ...] = (
    "down_blocks.0.attentions.0",
    "down_blocks.0.attentions.1",
    "down_blocks.1.attentions.0",
    "down_blocks.1.attentions.1",
    "down_blocks.2.attentions.0",
    "down_blocks.2.attentions.1",
    "mid_block.attentions.0",
    "up_blocks.1.attentions.0",
    "up_blocks.1.attentions.1",
    "up_blocks.1.attentions.2",
    "up_blocks.2.attentions.0",
    "up_blocks.2.attentions.1",
    "up_blocks.2.attentions.2",
    "up_blocks.3.attentions.0",
    "up_blocks.3.attentions.1",
    "up_blocks.3.attentions.2",
)
NUM_FEATURES = len(ATTENTION_LAYERS)


def self_attention_path(layer: str) -> str:
    return f"{layer}.transformer_blocks.0.attn1"


@dataclass
class StreamContext:
    """Per-forward state shared by the processors of one UNet (set by the owner before each call).

    Attributes:
        record: when True, feature taps store the self-attention branch output in ``features``.
        features: the 16 recorded tensors, each ``[B, N_l, C_l]``.
        aux_features: main stream only: 16 tensors ``[B, T, N_l, C_l]``, the auxiliary stream's features
            of all T = 7 tasks (canonical order) for each row.
        task_ids: main stream only: ``[B]`` int64 main task of each row.
        task_attention: main stream only: False switches the task-attention branch off (diagnosis: the
            main stream then runs as its own UNet, with no auxiliary features).
    """

    record: bool = False
    features: list[torch.Tensor | None] = field(default_factory=lambda: [None] * NUM_FEATURES)
    aux_features: list[torch.Tensor] | None = None
    task_ids: torch.Tensor | None = None
    task_attention: bool = True


class FeatureTapProcessor:
    """Standard scaled-dot-product self-attention that also records its output (after ``to_out``)."""

    def __init__(self, index: int, context: StreamContext) -> None:
        self.index = index
        self.context = context
        self.base = AttnProcessor2_0()

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        out = self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb)  # [B, N, C]
        if self.context.record:
            self.context.features[self.index] = out
        return out


def build_unet(preset: ModelPreset) -> UNet2DConditionModel:
    """A randomly initialised UNet of the preset's architecture (12 input channels)."""
    return UNet2DConditionModel(**dict(preset.unet))


@torch.no_grad()
def widen_conv_in(weight_4ch: torch.Tensor, copies: int = 3) -> torch.Tensor:
    """Tile a pretrained 4-channel ``conv_in`` kernel to 12 channels and divide by 3.

    With the same latent in every slot the widened layer gives the pretrained response, which is why
    StableMTL starts from it.
    """
    if weight_4ch.ndim != 4:
        raise StableMTLError(f"conv_in weight must be 4-D, got shape {tuple(weight_4ch.shape)}")
    return weight_4ch.repeat(1, copies, 1, 1) / copies


class TaskUNet(nn.Module):
    """UNet + constant task-embedding table; one forward = one single-step latent regression per row.

    Args:
        unet: the diffusers UNet (12 input channels).
        task_embeddings: ``[7, L, D]`` embeddings in canonical task order, zero-padded to a common L.
        task_lengths: ``[7]`` number of real tokens of each embedding.
    """

    def __init__(self, unet: UNet2DConditionModel, task_embeddings: torch.Tensor, task_lengths: torch.Tensor) -> None:
        super().__init__()
        if task_embeddings.ndim != 3 or task_embeddings.shape[0] != NUM_TASKS:
            raise StableMTLError(f"task embeddings must be [7, L, D], got {tuple(task_embeddings.shape)}")
        if task_embeddings.shape[2] != unet.config.cross_attention_dim:
            raise StableMTLError(
                f"task embeddings have width {task_embeddings.shape[2]}, the UNet expects "
                f"{unet.config.cross_attention_dim}"
            )
        self.unet = unet
        lengths = task_lengths.to(torch.long)
        positions = torch.arange(task_embeddings.shape[1])
        self.register_buffer("task_embeddings", task_embeddings.float().clone())
        self.register_buffer("task_lengths", lengths.clone())
        self.register_buffer("task_mask", (positions[None, :] < lengths[:, None]).float(), persistent=False)
        self.register_buffer("timestep", torch.tensor(float(TIMESTEP)), persistent=False)
        self.context = StreamContext()

    # -- processors -----------------------------------------------------------------------------------
    def self_attention(self, index: int) -> Attention:
        return self.unet.get_submodule(self_attention_path(ATTENTION_LAYERS[index]))

    def install_feature_taps(self) -> None:
        """Make the 16 self-attention paths record their outputs (the auxiliary stream's features)."""
        for i in range(NUM_FEATURES):
            self.self_attention(i).set_processor(FeatureTapProcessor(i, self.context))

    # -- forward -------------------------------------------------------------------------------------------
    def conditioning(self, task_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded embeddings ``[B, L, D]`` and their mask ``[B, L]`` for each row's task."""
        return self.task_embeddings[task_ids], self.task_mask[task_ids]

    def forward(
        self, sample: torch.Tensor, task_ids: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Predict the clean target latent.

        Args:
            sample: ``[B, 12, h, w]`` = ``[z(frame1), z(frame2 or frame1), zeros(4)]``.
            task_ids: ``[B]`` int64 canonical task indices (rows may differ).
            return_features: also return the 16 self-attention branch outputs ``[B, N_l, C_l]``
                (needs :meth:`install_feature_taps`).
        """
        embeddings, mask = self.conditioning(task_ids)  # [B, L, D], [B, L]
        self.context.record = return_features
        try:
            latent = self.unet(
                sample,
                self.timestep,
                encoder_hidden_states=embeddings,
                encoder_attention_mask=mask,
                return_dict=False,
            )[0]
            if not return_features:
                return latent
            features = list(self.context.features)
            if any(f is None for f in features):
                raise RuntimeError("feature taps are not installed: call install_feature_taps() first")
            return latent, features
        finally:
            self.context.record = False
            self.context.features = [None] * NUM_FEATURES
