"""FLOPs per batch row of each exported component, counted on the torch modules that are exported.

The count is what ``torch.utils.flop_counter.FlopCounterMode`` sees (convolutions, matrix products and
attention; a multiply-add counts 2) during one forward of the component's own export wrapper
(:attr:`ComponentSpec.factory`) on a one-row example at the export size. Attention runs on PyTorch's
math kernel while counting: the fused CPU kernel that ``scaled_dot_product_attention`` picks otherwise is
invisible to the counter (its two matrix products would be missing). Elementwise work (normalisation,
activations, the in-graph broadcast of the auxiliary features) is not counted: it is the part of a graph
that cannot run at a GEMM's rate anyway. The manifest keeps the figure so ``stablemtl-bench`` can put the
achieved FLOP/s of each component next to the machine's measured peak without torch.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ..artifact.manifest import Component
from ..model.stablemtl import StableMTL
from .components import ComponentSpec

__all__ = ["count_flops", "flops_per_row"]


def count_flops(model: StableMTL, spec: ComponentSpec, rows: int = 1) -> int:
    """FLOPs of one forward of ``spec``'s export wrapper over ``rows`` batch rows (example inputs)."""
    module = spec.factory(model).eval()
    args = spec.example(rows, torch.Generator().manual_seed(0))
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        module(*args)
    return int(counter.get_total_flops())


def flops_per_row(model: StableMTL, specs: Mapping[Component, ComponentSpec]) -> dict[Component, int]:
    """Component -> FLOPs of one batch row (every graph of the contract treats its rows independently)."""
    return {c: count_flops(model, spec) for c, spec in specs.items()}
