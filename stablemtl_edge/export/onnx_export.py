"""torch -> ONNX for one component: exporter choice, opset, dynamic axes and external data.

The TorchScript exporter (opset 17) is the default: it is what NVIDIA's diffusion demo and ModelOpt use
for UNets, and its graphs parse into strongly-typed TensorRT networks. The dynamo exporter stays
selectable; it needs opset 18 or newer (opset 17 graphs from it are rejected by onnxruntime).

Graphs larger than protobuf's 2 GB limit are written with their weights in one external data file beside
them (``<component>.onnx.data``), as ONNX and TensorRT expect.
"""

from __future__ import annotations

import contextlib
import inspect
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from ..errors import StableMTLError
from ..artifact.layout import PROTOBUF_LIMIT, external_data_name
from ..model.stablemtl import StableMTL
from .components import ComponentSpec
from ..records import KeyEnum

__all__ = ["Exporter", "ExportOptions", "export_component"]

EXPORT_BATCH = 2  # example batch: > 1 so no exporter specialises the batch dimension


class Exporter(KeyEnum):
    """Which ``torch.onnx.export`` path builds the graph."""

    TORCHSCRIPT = "torchscript"
    DYNAMO = "dynamo"

    @property
    def default_opset(self) -> int:
        return 17 if self is Exporter.TORCHSCRIPT else 18

    @property
    def min_opset(self) -> int:
        return 17 if self is Exporter.TORCHSCRIPT else 18


@dataclass(frozen=True)
class ExportOptions:
    """How graphs are produced; part of the artifact's reuse fingerprint."""

    exporter: Exporter = Exporter.TORCHSCRIPT
    opset: int = 17

    def __post_init__(self) -> None:
        object.__setattr__(self, "exporter", Exporter.parse(self.exporter, "exporter"))
        if self.opset < self.exporter.min_opset or self.opset > 20:
            raise StableMTLError(
                f"opset {self.opset} does not work with the {self.exporter.value} exporter: use "
                f"{self.exporter.min_opset}..20 (default {self.exporter.default_opset})"
            )

    @classmethod
    def for_exporter(cls, exporter: Exporter | str, opset: int | None = None) -> ExportOptions:
        exporter = Exporter.parse(exporter, "exporter")
        return cls(exporter, exporter.default_opset if opset is None else opset)


@contextlib.contextmanager
def _layer_norm_with_traced_shape(opset: int) -> Iterator[None]:
    """Let the TorchScript exporter take ``F.layer_norm`` whose ``normalized_shape`` was read from a tensor.

    The task attention normalises over ``feats.shape[-1]``; tracing turns that size into a graph value,
    which the stock symbolic refuses. ONNX's LayerNormalization needs only the axis, i.e. the length of
    the list, and the (static) channel sizes for a missing scale/bias come from the traced input type.
    """
    from torch.onnx import symbolic_helper

    def layer_norm(g, input, normalized_shape, weight, bias, eps, cudnn_enable):  # noqa: ANN001, ANN202
        if symbolic_helper._is_packed_list(normalized_shape):
            dims = symbolic_helper._unpack_list(normalized_shape)
        else:
            dims = list(symbolic_helper._get_const(normalized_shape, "is", "normalized_shape"))
        sizes = symbolic_helper._get_tensor_sizes(input) or []
        shape = sizes[len(sizes) - len(dims) :] if sizes else [None]

        def filled(value: float):  # noqa: ANN202
            if all(isinstance(s, int) for s in shape):
                return g.op("Constant", value_t=torch.full(shape, value, dtype=torch.float32))
            tail = g.op("Shape", input, start_i=-len(dims))  # sizes unknown to the tracer: read at run time
            return g.op("ConstantOfShape", tail, value_t=torch.tensor([value], dtype=torch.float32))

        weight = filled(1.0) if symbolic_helper._is_none(weight) else weight
        bias = filled(0.0) if symbolic_helper._is_none(bias) else bias
        eps = symbolic_helper._get_const(eps, "f", "eps")
        return g.op("LayerNormalization", input, weight, bias, epsilon_f=eps, axis_i=-len(dims))

    torch.onnx.register_custom_op_symbolic("aten::layer_norm", layer_norm, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::layer_norm", opset)


def _dynamic_shapes(module: torch.nn.Module, spec: ComponentSpec) -> tuple[object, ...]:
    """torch.export's form of the symbolic dimensions, structured like ``forward``'s parameters.

    A ``*args`` parameter (the main stream's 16 auxiliary features) takes one tuple for all its inputs.
    """
    dynamic = torch.export.Dim.DYNAMIC
    per_input = [{i: dynamic for i, d in enumerate(t.shape) if isinstance(d, str)} for t in spec.inputs]
    params = list(inspect.signature(module.forward).parameters.values())
    fixed = [p for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    if len(fixed) == len(params):
        return tuple(per_input)
    return (*per_input[: len(fixed)], tuple(per_input[len(fixed) :]))


def _torch_export(module: torch.nn.Module, spec: ComponentSpec, args: tuple[torch.Tensor, ...], path: Path,
                  options: ExportOptions) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter; failures still raise
        if options.exporter is Exporter.TORCHSCRIPT:
            with _layer_norm_with_traced_shape(options.opset):
                torch.onnx.export(
                    module,
                    args,
                    str(path),
                    input_names=spec.input_names,
                    output_names=spec.output_names,
                    dynamic_axes=spec.dynamic_axes(),
                    opset_version=options.opset,
                    do_constant_folding=True,
                    dynamo=False,
                )
        else:
            program = torch.onnx.export(
                module,
                args,
                input_names=spec.input_names,
                output_names=spec.output_names,
                dynamic_shapes=_dynamic_shapes(module, spec),
                opset_version=options.opset,
                dynamo=True,
                external_data=True,
                optimize=True,
                verbose=False,
            )
            program.save(str(path), external_data=True)


def export_component(model: StableMTL, spec: ComponentSpec, path: Path, options: ExportOptions) -> str | None:
    """Export ``spec`` of ``model`` to ``path``; return the external data file name, or None when inline.

    The exporter writes into a scratch directory first (the exporters may scatter one file per weight);
    the result is re-saved as one self-contained file, or one ONNX file plus one data file above 2 GB.
    """
    module = spec.factory(model).eval()
    gen = torch.Generator().manual_seed(0)
    args = spec.example(EXPORT_BATCH, gen)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"export-{spec.component.value}-", dir=path.parent) as scratch:
        raw = Path(scratch) / path.name
        with torch.no_grad():
            _torch_export(module, spec, args, raw, options)
        graph = onnx.load(str(raw), load_external_data=True)
        _apply_spec_io(graph, spec)
        size = sum(len(t.raw_data) for t in graph.graph.initializer)
        if size + (64 << 20) < PROTOBUF_LIMIT:
            onnx.save_model(graph, str(path))
            data = None
        else:
            data = external_data_name(path.name)
            onnx.save_model(
                graph, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data,
                size_threshold=1024,
            )
        del graph
    onnx.checker.check_model(str(path))
    return data


def _apply_spec_io(graph: onnx.ModelProto, spec: ComponentSpec) -> None:
    """Check the graph's I/O names against the spec and give its dimensions the spec's names.

    Both exporters honour the names (a mismatch is our bug); the dynamo exporter invents its own symbols
    (``s0``...), which are replaced by the manifest's (``batch``, ``height``...) so every tool sees the same.
    """
    got_in = [i.name for i in graph.graph.input]
    got_out = [o.name for o in graph.graph.output]
    if got_in != spec.input_names or got_out != spec.output_names:
        raise RuntimeError(
            f"{spec.component.value}: exported I/O {got_in} -> {got_out} differs from {spec.input_names} -> "
            f"{spec.output_names}"
        )
    for value, tensor in zip((*graph.graph.input, *graph.graph.output), (*spec.inputs, *spec.outputs)):
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(tensor.shape):
            raise RuntimeError(f"{spec.component.value}: `{tensor.name}` has rank {len(dims)}, expected {len(tensor.shape)}")
        for dim, want in zip(dims, tensor.shape):
            if isinstance(want, str):
                dim.dim_param = want
            else:
                dim.dim_value = want
