"""The multi-stream model: a frozen auxiliary UNet whose features feed the main UNet's task attention.

The auxiliary stream depends only on (image, task), so for one frame its passes are computed once and
shared by every requested main task: ``7 + k`` UNet rows for ``k >= 2`` tasks (``6 + 1`` for one task),
instead of the official ``7k``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelPreset
from ..tasks import NUM_TASKS
from .task_attention import TaskAttention, TaskAttentionProcessor
from .unet import NUM_FEATURES, TaskUNet

__all__ = ["MainStreamUNet", "auxiliary_tasks"]


def auxiliary_tasks(main_task_ids: list[int]) -> list[int]:
    """Auxiliary passes needed for these main tasks: all 7 when 2+ tasks, the other 6 for one task."""
    wanted = set(range(NUM_TASKS))
    if len(set(main_task_ids)) == 1:
        wanted -= set(main_task_ids)
    return sorted(wanted)


class MainStreamUNet(nn.Module):
    """The trainable main stream: a :class:`TaskUNet` with task attention in its 16 transformer blocks.

    ``task_attention[i]`` belongs to block ``i`` in the official index order
    (:data:`.unet.ATTENTION_LAYERS`).
    """

    def __init__(self, unet: TaskUNet, preset: ModelPreset) -> None:
        super().__init__()
        self.unet = unet
        self.task_attention = nn.ModuleList(
            TaskAttention(c, preset.task_q_hidden, preset.task_heads) for c in preset.attention_channels
        )
        for i, module in enumerate(self.task_attention):
            unet.self_attention(i).set_processor(TaskAttentionProcessor(i, module, unet.context))

    def forward(
        self,
        sample: torch.Tensor,
        task_ids: torch.Tensor,
        aux_features: list[torch.Tensor] | None,
        task_attention: bool = True,
    ) -> torch.Tensor:
        """Predict the clean latent of each row's main task.

        Args:
            sample: ``[B, 12, h, w]`` the main task's input (as for the auxiliary pass of that task).
            task_ids: ``[B]`` int64 main task per row.
            aux_features: 16 tensors ``[B, 7, N_l, C_l]``: each row's auxiliary features of all tasks in
                canonical order (the row's own slot is ignored); unused (may be None) without task attention.
            task_attention: False runs the main stream without its task-attention branch, to tell an import
                or training fault in the branch from one in the UNet it sits in.
        """
        if task_attention and (aux_features is None or len(aux_features) != NUM_FEATURES):
            got = "none" if aux_features is None else len(aux_features)
            raise ValueError(f"expected {NUM_FEATURES} auxiliary feature tensors, got {got}")
        ctx = self.unet.context
        ctx.aux_features, ctx.task_ids = (list(aux_features) if task_attention else None), task_ids
        ctx.task_attention = task_attention
        try:
            return self.unet(sample, task_ids)
        finally:
            ctx.aux_features, ctx.task_ids, ctx.task_attention = None, None, True


def stack_features(per_task: dict[int, list[torch.Tensor]], like: list[torch.Tensor]) -> list[torch.Tensor]:
    """Arrange auxiliary outputs by layer as ``[B, 7, N_l, C_l]``; tasks not computed are zeros.

    Args:
        per_task: task id -> its 16 feature tensors ``[B, N_l, C_l]``.
        like: any 16 tensors of the right shapes (used for the zero slots).
    """
    out = []
    for layer in range(NUM_FEATURES):
        slots = [
            per_task[t][layer] if t in per_task else torch.zeros_like(like[layer]) for t in range(NUM_TASKS)
        ]
        out.append(torch.stack(slots, dim=1))
    return out
