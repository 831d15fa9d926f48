"""Sensitivity-guided mixed precision: which blocks of a failing int8 component to keep in floating point.

When a component's int8 graph fails the accuracy gate, discarding all of it wastes the blocks that
quantize well. Instead:

1. the layers are grouped into **blocks** by node name (``down_blocks.1/attentions.0``, ``mid_block/resnets.1``,
   ``layers.7``: :func:`block_of`), the unit a user would name with ``--exclude``;
2. each block's **sensitivity** is measured leave-one-out: the int8 graph with only that block put back in
   floating point, run on recorded calibration feeds, against the fp32 graph's outputs. The proxy is the
   relative L2 error of the component's outputs (:class:`OutputError`). Leave-one-out (rather than one
   block in int8 at a time) measures what the search will actually do, keep a block in float with every
   other block in int8, so interactions between blocks are part of the number; and the component's own
   output (rather than the task metrics) is cheap, needs no labels, and is what every downstream task
   reads. It is only a ranking: the real gate re-judges every candidate;
3. the calibrator keeps the most sensitive blocks in float one at a time, in that order, until the gate
   passes or a cap on tries is reached (``calibrate.py``), so the result is the fewest blocks along the
   ranking.

Putting a block back in float is graph surgery on the written QDQ graph (:func:`keep_in_float`): its
layers read the activation before its QuantizeLinear and the fp32 weight of the pre-processed graph the
quantizer started from, and the Q/DQ nodes nobody reads any more are dropped. The ranges of every other
layer stay exactly those that were calibrated, so no calibration is repeated.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime

from .exclusions import QUANTIZED_OP_TYPES
from .quantize import save_graph

__all__ = ["BlockSensitivity", "OutputError", "block_of", "blocks_of", "keep_in_float", "rank_blocks"]

_IN_MEMORY_LIMIT = 1 << 30  # graphs above this go to onnxruntime through a file, not serialized bytes
_LEVEL = re.compile(r"^(?:\w+\.\d+|\w*_block)$")  # an indexed module (resnets.0) or a named block (mid_block)


def block_of(node_name: str) -> str:
    """The block a layer belongs to: its name up to the second module level, or up to its only one.

    ``/unet/unet/down_blocks.1/attentions.0/transformer_blocks.0/attn1/to_q/MatMul`` ->
    ``/unet/unet/down_blocks.1/attentions.0``; ``/decoder/mid_block/resnets.1/conv2/Conv`` ->
    ``/decoder/mid_block/resnets.1``; ``/decoder/layers/layers.7/conv1/Conv`` -> ``/decoder/layers/layers.7``;
    a layer outside any block (``/encoder/conv_in/Conv``) is its own block (``/encoder/conv_in``).
    """
    parts = node_name.split("/")
    levels = [i for i, p in enumerate(parts[:-1]) if _LEVEL.match(p)]
    end = levels[1] if len(levels) > 1 else levels[0] if levels else len(parts) - 2
    return "/".join(parts[: end + 1])


def blocks_of(layers: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Block -> its layers, in graph order of the first layer of each block."""
    out: dict[str, list[str]] = {}
    for name in layers:
        out.setdefault(block_of(name), []).append(name)
    return {b: tuple(v) for b, v in out.items()}


def keep_in_float(qdq: onnx.ModelProto, float_model: onnx.ModelProto, layers: Iterable[str]) -> onnx.ModelProto:
    """A copy of the QDQ graph ``qdq`` in which ``layers`` compute in floating point again.

    Args:
        qdq: the written int8 QDQ graph.
        float_model: the fp32 graph it was quantized from (after pre-processing: same node names).
        layers: names of quantized layers to put back in float.

    Raises:
        ValueError: a name that is not a layer of both graphs (a bug of the caller).
    """
    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    nodes = {n.name: n for n in model.graph.node}
    float_nodes = {n.name: n for n in float_model.graph.node}
    producer = {o: n for n in model.graph.node for o in n.output}
    float_inits = {i.name: i for i in float_model.graph.initializer}
    have = {i.name for i in model.graph.initializer}
    for name in layers:
        node, ref = nodes.get(name), float_nodes.get(name)
        if node is None or ref is None or node.op_type not in QUANTIZED_OP_TYPES:
            raise ValueError(f"`{name}` is not a Conv/MatMul/Gemm layer of both graphs")
        for k, tensor in enumerate(node.input):
            dq = producer.get(tensor)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[k] = q.input[0]  # the activation as it was before Q/DQ
                continue
            original = ref.input[k]  # a weight: the fp32 initializer the quantizer replaced
            if original not in float_inits:
                raise ValueError(f"`{name}`: input {k} of the fp32 graph ({original}) is not a constant")
            if original not in have:
                model.graph.initializer.append(float_inits[original])
                have.add(original)
            node.input[k] = original
    _drop_unread(model)
    return model


def _drop_unread(model: onnx.ModelProto) -> None:
    """Remove Q/DQ nodes whose outputs nobody reads, then initializers nobody reads."""
    outputs = {o.name for o in model.graph.output}
    while True:
        read = {i for n in model.graph.node for i in n.input} | outputs
        dead = [n for n in model.graph.node
                if n.op_type in ("QuantizeLinear", "DequantizeLinear") and not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            model.graph.node.remove(n)
    read = {i for n in model.graph.node for i in n.input} | outputs
    for init in [i for i in model.graph.initializer if i.name not in read]:
        model.graph.initializer.remove(init)


class OutputError:
    """The proxy: relative L2 error of a graph's outputs against the fp32 graph's, on recorded feeds.

    Args:
        float_model: the fp32 graph (its outputs on ``feeds`` are computed once).
        feeds: recorded inputs of the component.
        threads: onnxruntime intra-op threads.
    """

    def __init__(self, float_model: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]],
                 threads: int | None = None) -> None:
        self.feeds = [dict(f) for f in feeds]
        self.threads = threads
        self.reference = self._run(float_model)

    def _run(self, model: onnx.ModelProto) -> list[list[np.ndarray]]:
        options = onnxruntime.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        with tempfile.TemporaryDirectory(prefix=".proxy-") as scratch:
            if model.ByteSize() < _IN_MEMORY_LIMIT:
                source: bytes | str = model.SerializeToString()
            else:  # past protobuf's 2 GB: through a file with external data
                source = str(Path(scratch) / "model.onnx")
                save_graph(model, Path(source))
            session = onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        names = {i.name for i in session.get_inputs()}
        return [[np.asarray(y, np.float64) for y in session.run(None, {k: v for k, v in f.items() if k in names})]
                for f in self.feeds]

    def __call__(self, model: onnx.ModelProto) -> float:
        """Mean over feeds and outputs of ``||y - y_fp32|| / ||y_fp32||``."""
        errors = []
        for got, want in zip(self._run(model), self.reference):
            for y, r in zip(got, want):
                errors.append(float(np.linalg.norm(y - r) / max(float(np.linalg.norm(r)), 1e-12)))
        return float(np.mean(errors)) if errors else 0.0


@dataclass(frozen=True)
class BlockSensitivity:
    """One block's leave-one-out measurement.

    Attributes:
        block: the block name.
        layers: its quantized layers.
        error: the proxy with this block in float and every other block in int8.
        gain: the all-int8 proxy minus ``error`` (what keeping this block in float buys).
    """

    block: str
    layers: tuple[str, ...]
    error: float
    gain: float

    def to_dict(self) -> dict[str, object]:
        return {"block": self.block, "layers": len(self.layers), "error": self.error, "gain": self.gain}


def rank_blocks(qdq: onnx.ModelProto, float_model: onnx.ModelProto, quantized: Sequence[str],
                proxy: OutputError) -> tuple[float, list[BlockSensitivity]]:
    """The all-int8 proxy, and every block of ``quantized`` layers, most sensitive (largest gain) first."""
    base = proxy(qdq)
    out = []
    for block, layers in blocks_of(quantized).items():
        error = proxy(keep_in_float(qdq, float_model, layers))
        out.append(BlockSensitivity(block, layers, error, base - error))
    out.sort(key=lambda s: -s.gain)
    return base, out
