"""1-to-N task attention: the main stream's per-pixel attention over the auxiliary streams' features.

In each of the 16 transformer blocks, after the main stream's self-attention output ``S`` and before the
residual add, the branch adds ``to_out_task(attn)`` where, for the row's main task ``m``:

- ``Q = MLP_q[m](LN_q[m](S))`` with ``MLP_q = Linear C->H->H->H->C`` and GELU (H = 640 officially);
- ``K_a = MLP_k[a](LN_k[a](F_a))``, ``V_a`` likewise (``MLP = C->C/2->C``, GELU) for each auxiliary task a;
- attention is per pixel over the auxiliary tokens (4 heads of C/4, scaled dot product, no spatial mixing);
- the row's own task is never an auxiliary: its token is masked out, so the softmax runs over the other 6.

Parameters are kept per task (``ModuleDict`` keyed by task name, as in the official checkpoint); the
forward gathers them per row, so one batch may mix main tasks and the graph exports to plain MatMul/Gather.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn

from ..tasks import NUM_TASKS, TASK_NAMES
from .unet import StreamContext

__all__ = ["TaskAttention", "TaskAttentionProcessor", "MASK_PROBABILITY"]

MASK_PROBABILITY = 0.4
LAYER_NORM_EPS = 1e-5


class KeyValueMLP(nn.Module):
    """``fc1 (C -> C/2) -> GELU -> fc2 (C/2 -> C)``; names match the official ``task_to_k.<t>.fc1``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, channels // 2)
        self.fc2 = nn.Linear(channels // 2, channels)


class QueryMLP(nn.Module):
    """``Linear, GELU, Linear, GELU, Linear, GELU, Linear``; names match the official ``task_to_q.<t>.net``."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, channels),
        )


def _stack(modules: nn.ModuleDict, attr: str) -> torch.Tensor:
    """Stack one parameter of every task's module in canonical task order: ``[7, ...]``."""
    return torch.stack([modules[t].get_parameter(attr) for t in TASK_NAMES])


class TaskAttention(nn.Module):
    """The task-attention branch of one transformer block (channels C).

    Args:
        channels: C of the block.
        q_hidden: hidden width of the query MLP.
        heads: attention heads (4 in the official release).
    """

    def __init__(self, channels: int, q_hidden: int, heads: int = 4) -> None:
        super().__init__()
        self.channels = channels
        self.heads = heads
        self.task_to_q = nn.ModuleDict({t: QueryMLP(channels, q_hidden) for t in TASK_NAMES})
        self.task_to_k = nn.ModuleDict({t: KeyValueMLP(channels) for t in TASK_NAMES})
        self.task_to_v = nn.ModuleDict({t: KeyValueMLP(channels) for t in TASK_NAMES})
        self.task_norm_q = nn.ModuleDict({t: nn.LayerNorm(channels, eps=LAYER_NORM_EPS) for t in TASK_NAMES})
        self.task_norm_k = nn.ModuleDict({t: nn.LayerNorm(channels, eps=LAYER_NORM_EPS) for t in TASK_NAMES})
        self.task_norm_v = nn.ModuleDict({t: nn.LayerNorm(channels, eps=LAYER_NORM_EPS) for t in TASK_NAMES})
        self.to_out_task = nn.Linear(channels, channels)
        nn.init.zeros_(self.to_out_task.weight)  # the stage-2 model starts equal to stage 1
        nn.init.zeros_(self.to_out_task.bias)
        self.last_attention: torch.Tensor | None = None  # [T] mean attention weights of the last forward

    # Query side: one MLP per row, chosen by the row's main task.
    def _query(self, s: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(s, (self.channels,), eps=LAYER_NORM_EPS)  # [B, N, C]
        x = x * _stack(self.task_norm_q, "weight")[task_ids][:, None] + _stack(self.task_norm_q, "bias")[task_ids][:, None]
        for i, layer in enumerate((0, 2, 4, 6)):
            w = _stack(self.task_to_q, f"net.{layer}.weight")[task_ids]  # [B, out, in]
            b = _stack(self.task_to_q, f"net.{layer}.bias")[task_ids]  # [B, out]
            x = torch.baddbmm(b[:, None, :], x, w.transpose(1, 2))
            if i < 3:
                x = F.gelu(x)
        return x  # [B, N, C]

    # Key/value side: every auxiliary task a has its own MLP, applied to its own features.
    def _key_value(self, feats: torch.Tensor, norms: nn.ModuleDict, mlps: nn.ModuleDict) -> torch.Tensor:
        t, bn, c = feats.shape  # [T, B*N, C]
        x = F.layer_norm(feats, (c,), eps=LAYER_NORM_EPS)
        x = x * _stack(norms, "weight")[:, None, :] + _stack(norms, "bias")[:, None, :]
        x = torch.baddbmm(_stack(mlps, "fc1.bias")[:, None, :], x, _stack(mlps, "fc1.weight").transpose(1, 2))
        x = F.gelu(x)
        return torch.baddbmm(_stack(mlps, "fc2.bias")[:, None, :], x, _stack(mlps, "fc2.weight").transpose(1, 2))

    def forward(
        self,
        s: torch.Tensor,
        aux_features: torch.Tensor,
        task_ids: torch.Tensor,
        drop_task: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return ``S + to_out_task(attention)``.

        Args:
            s: ``[B, N, C]`` the main stream's self-attention output.
            aux_features: ``[B, T, N, C]`` the auxiliary stream's outputs at this layer for all T = 7 tasks
                (the slot of each row's own task is ignored and may hold anything).
            task_ids: ``[B]`` int64 main task of each row.
            drop_task: optional ``[B, T]`` bool, auxiliary tokens to mask out in addition (training).
        """
        b, n, c = s.shape
        d = c // self.heads
        q = self._query(s, task_ids).reshape(b * n, self.heads, 1, d)
        feats = aux_features.permute(1, 0, 2, 3).reshape(NUM_TASKS, b * n, c)  # [T, B*N, C]
        k = self._key_value(feats, self.task_norm_k, self.task_to_k)
        v = self._key_value(feats, self.task_norm_v, self.task_to_v)
        k = k.reshape(NUM_TASKS, b * n, self.heads, d).permute(1, 2, 0, 3)  # [B*N, heads, T, d]
        v = v.reshape(NUM_TASKS, b * n, self.heads, d).permute(1, 2, 0, 3)

        blocked = F.one_hot(task_ids, NUM_TASKS).bool()  # [B, T]: a task never attends to itself
        if drop_task is not None:
            blocked = blocked | drop_task
        blocked = blocked[:, None, None, None, :].expand(b, n, 1, 1, NUM_TASKS).reshape(b * n, 1, 1, NUM_TASKS)

        scores = torch.matmul(q, k.transpose(-1, -2)) * (d**-0.5)  # [B*N, heads, 1, T]
        weights = scores.masked_fill(blocked, float("-inf")).softmax(dim=-1)
        if self.training:
            self.last_attention = weights.detach().mean(dim=(0, 1, 2))
        out = torch.matmul(weights, v).reshape(b, n, c)  # heads concatenated
        return s + self.to_out_task(out)


class TaskAttentionProcessor:
    """Self-attention of the main stream followed by the task-attention branch of its block.

    In training, with probability 0.4 per block one auxiliary task is masked out, drawn in proportion to
    its mean attention weight in an unmasked pass (the official regulariser against relying on one stream).
    """

    def __init__(self, index: int, module: TaskAttention, context: StreamContext) -> None:
        self.index = index
        self.module = module
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
        s = self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb)  # [B, N, C]
        ctx = self.context
        if not ctx.task_attention:
            return s
        if ctx.aux_features is None or ctx.task_ids is None:
            raise RuntimeError("the main stream needs auxiliary features and task ids in its context")
        feats = ctx.aux_features[self.index]
        drop = None
        if self.module.training and torch.rand(()) < MASK_PROBABILITY:
            drop = self._draw_masked_task(s, feats, ctx.task_ids)
        return self.module(s, feats, ctx.task_ids, drop)

    @torch.no_grad()
    def _draw_masked_task(self, s: torch.Tensor, feats: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        self.module(s, feats, task_ids)  # fills last_attention with the unmasked mean weights
        probs = self.module.last_attention.clamp_min(0)  # [T], own tasks already 0
        if float(probs.sum()) <= 0:
            probs = torch.ones_like(probs)
        choice = torch.multinomial(probs / probs.sum(), 1)
        drop = torch.zeros(task_ids.shape[0], NUM_TASKS, dtype=torch.bool, device=s.device)
        drop[:, choice] = True
        return drop
