"""Which layers stay in floating point: the default exclusion list and the user's overrides.

The defaults follow the spirit of NVIDIA's int8 recipe for diffusion UNets (TensorRT diffusion demo /
ModelOpt): quantize the bulk of the convolutions and linear layers, keep in high precision the layers
whose error reaches every output or that have no well-behaved weight:

- ``conv_in`` and ``conv_out``: the first layer sees the raw latents, the last writes the prediction;
- the time-embedding path (``time_proj``, ``time_embedding``, every ``time_emb_proj``): a constant
  timestep here, but its error is broadcast into every residual block;
- the task-embedding path: the cross-attention keys and values (``attn2/to_k``, ``attn2/to_v``) read the
  constant CLIP embedding of the task, the only task signal of the model;
- normalisation layers (GroupNorm exported as InstanceNormalization, LayerNormalization);
- attention score and attention-weighted value matrix products, i.e. every MatMul of two activations
  (this also covers the task-attention MLPs whose weights are selected per row by ``task_id``: run-time
  gathered weights get no per-channel scales), and every Softmax, the task-attention softmax included;
- MatMuls with a batched (3-D) constant weight, the task-attention key/value MLPs stacked over the seven
  tasks (``[7, C, C/2]``): int8 GEMM kernels take per-channel scales on 2-D weights only (onnxruntime's
  CPU kernel rejects the graph), and these small MLPs cost little in floating point.

The VAE graphs (``encoder``, ``decoder`` and the distilled ``tiny_decoder``) follow ModelOpt's practice for
diffusion pipelines, which excludes ``conv_in``/``conv_out``/``conv_shortcut`` and the normalisation by
name and leaves the VAE's attention softmax in high precision. On top of the shared rules above (norms,
softmax, activation x activation MatMuls, ``conv_in``/``conv_out``), two VAE-only rules:

- ``vae_boundary``: the first and the last layer of the graph by structure (no Conv/MatMul/Gemm before,
  or none after): they read the image or latent and write the latent or image every task decodes; this
  catches ``quant_conv``/``post_quant_conv`` and the distilled decoder, whose layers have no such names;
- ``vae_shortcut``: the 1x1 ``conv_shortcut`` of residual blocks that change width, as ModelOpt does.

Rules match our exported graphs' node names (TorchScript exporter: ``/unet/unet/conv_in/Conv``,
``/main/unet/unet/down_blocks.0/.../attn2/to_k/MatMul``) with shell-style globs, by op type, or by
structure. Users add patterns (``--exclude``), and force layers back to int8 by rule key or pattern
(``--quantize conv_out``); a pattern that matches nothing is an error, never silently ignored.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import onnx

from ..errors import StableMTLError

__all__ = ["ExclusionRule", "DEFAULT_RULES", "QUANTIZED_OP_TYPES", "VAE_COMPONENTS", "Exclusions", "resolve_exclusions",
           "unmatched_patterns"]

#: Layers that get Q/DQ on their inputs: TensorRT runs exactly these in int8 when their inputs are
#: quantized; everything between them stays in floating point.
QUANTIZED_OP_TYPES = ("Conv", "MatMul", "Gemm")
#: The VAE graphs, which get the VAE-only rules.
VAE_COMPONENTS = ("encoder", "decoder", "tiny_decoder")


@dataclass(frozen=True)
class GraphIndex:
    """What the rules look at: node names, op types and which tensors are constants."""

    nodes: tuple[onnx.NodeProto, ...]
    constants: frozenset[str]
    ranks: Mapping[str, int]  # constant name -> rank (initializers and Constant nodes)
    boundary: frozenset[str] = frozenset()  # layers with no other layer upstream, or none downstream

    @classmethod
    def of(cls, model: onnx.ModelProto) -> GraphIndex:
        ranks = {i.name: len(i.dims) for i in model.graph.initializer}
        for n in model.graph.node:
            if n.op_type == "Constant":
                value = next((a.t for a in n.attribute if a.name == "value"), None)
                ranks[n.output[0]] = len(value.dims) if value is not None else 0
        nodes = tuple(model.graph.node)
        return cls(nodes, frozenset(ranks), ranks, _boundary_layers(nodes))

    def names(self) -> list[str]:
        return [n.name for n in self.nodes]


@dataclass(frozen=True)
class ExclusionRule:
    """One reason to keep layers in floating point.

    Attributes:
        key: short name used on the command line (``--quantize KEY`` drops the rule).
        why: one line for reports.
        patterns: node-name globs.
        op_types: op types matched whatever their name.
        predicate: structural match (node, graph) -> bool.
    """

    key: str
    why: str
    patterns: tuple[str, ...] = ()
    op_types: tuple[str, ...] = ()
    predicate: Callable[[onnx.NodeProto, GraphIndex], bool] | None = field(default=None, compare=False)
    components: tuple[str, ...] = ()  # the components it applies to; empty: every component

    def applies_to(self, component: str) -> bool:
        return not self.components or component in self.components

    def matches(self, node: onnx.NodeProto, graph: GraphIndex) -> bool:
        if node.op_type in self.op_types:
            return True
        if any(fnmatch.fnmatchcase(node.name, p) for p in self.patterns):
            return True
        return self.predicate is not None and self.predicate(node, graph)


def _boundary_layers(nodes: Sequence[onnx.NodeProto]) -> frozenset[str]:
    """The layers (:data:`QUANTIZED_OP_TYPES`) that no other layer feeds, and those that feed no other layer.

    Two passes over the (topologically ordered) graph: whether a tensor depends on some layer's output,
    and whether some layer depends on a tensor.
    """
    after_layer: set[str] = set()  # tensors computed from some layer's output
    first = set()
    for n in nodes:
        upstream = any(i in after_layer for i in n.input)
        if n.op_type in QUANTIZED_OP_TYPES and not upstream:
            first.add(n.name)
        if upstream or n.op_type in QUANTIZED_OP_TYPES:
            after_layer.update(n.output)
    before_layer: set[str] = set()  # tensors some layer reads, directly or through other nodes
    last = set()
    for n in reversed(nodes):
        downstream = any(o in before_layer for o in n.output)
        if n.op_type in QUANTIZED_OP_TYPES and not downstream:
            last.add(n.name)
        if downstream or n.op_type in QUANTIZED_OP_TYPES:
            before_layer.update(n.input)
    return frozenset(first | last)


def _activation_matmul(node: onnx.NodeProto, graph: GraphIndex) -> bool:
    return node.op_type == "MatMul" and not any(i in graph.constants for i in node.input[:2])


def _batched_weight_matmul(node: onnx.NodeProto, graph: GraphIndex) -> bool:
    return node.op_type == "MatMul" and len(node.input) > 1 and graph.ranks.get(node.input[1], 2) > 2


DEFAULT_RULES: tuple[ExclusionRule, ...] = (
    ExclusionRule("conv_in", "first convolution (reads the raw 12-channel latents)", ("*/conv_in/*",)),
    ExclusionRule("conv_out", "last convolution (writes the predicted latent)", ("*/conv_out/*",)),
    ExclusionRule(
        "time_embedding", "time-embedding path (sinusoid, MLP and its per-block projections)",
        ("*/time_proj/*", "*/time_embedding/*", "*/time_emb_proj/*"),
    ),
    ExclusionRule(
        "task_embedding", "task-embedding path: cross-attention keys/values of the constant CLIP task embedding",
        ("*/attn2/to_k/*", "*/attn2/to_v/*"),
    ),
    ExclusionRule(
        "normalization", "normalisation layers (GroupNorm as InstanceNormalization, LayerNorm)",
        op_types=("InstanceNormalization", "LayerNormalization", "GroupNormalization", "BatchNormalization"),
    ),
    ExclusionRule(
        "attention_matmul",
        "MatMuls of two activations: attention scores, attention x values, task-selected MLP weights",
        predicate=_activation_matmul,
    ),
    ExclusionRule(
        "batched_weight_matmul", "MatMuls with a batched 3-D weight (task-attention key/value MLPs stacked over tasks)",
        predicate=_batched_weight_matmul,
    ),
    ExclusionRule("vae_boundary", "first and last layer of a VAE graph (image/latent in and out)",
                  predicate=lambda node, graph: node.name in graph.boundary, components=VAE_COMPONENTS),
    ExclusionRule("vae_shortcut", "1x1 conv_shortcut of VAE residual blocks that change width (ModelOpt's list)",
                  ("*/conv_shortcut/*",), components=VAE_COMPONENTS),
    ExclusionRule("task_attention_softmax", "the task-attention softmax over auxiliary streams",
                  ("*/task_attention*/Softmax*",)),
    ExclusionRule("softmax", "attention softmax", op_types=("Softmax",)),
)
_RULES_BY_KEY = {r.key: r for r in DEFAULT_RULES}


@dataclass(frozen=True)
class Exclusions:
    """The resolved exclusion of one graph.

    Attributes:
        excluded: node name -> key of the rule (or ``exclude:<pattern>``) that excluded it, graph order
            (normalisation and softmax nodes included: they are named so no later option quantizes them).
        candidates: names of nodes of :data:`QUANTIZED_OP_TYPES` that are not excluded (to be quantized).
        excluded_layers: the excluded nodes of :data:`QUANTIZED_OP_TYPES` (layers int8 would otherwise take).
        rules: keys of the rules applied.
    """

    excluded: dict[str, str]
    candidates: tuple[str, ...]
    excluded_layers: tuple[str, ...]
    rules: tuple[str, ...]

    def counts(self) -> dict[str, int]:
        """Rule -> number of nodes it excluded."""
        out: dict[str, int] = {}
        for rule in self.excluded.values():
            out[rule] = out.get(rule, 0) + 1
        return out


def _check_pattern(pattern: str, names: Sequence[str], what: str, component: str,
                   require_match: bool = True) -> list[str]:
    hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    if not hits and require_match:
        example = next((n for n in names if "conv" in n.lower()), names[0] if names else "")
        raise StableMTLError(
            f"{what} pattern `{pattern}` matches no node of `{component}`: give a node name or a shell glob "
            f"over node names (e.g. `*/conv_in/*`, names look like `{example}`) or a rule key "
            f"({', '.join(_RULES_BY_KEY)})"
        )
    return hits


def resolve_exclusions(
    model: onnx.ModelProto,
    component: str,
    exclude: Iterable[str] = (),
    quantize: Iterable[str] = (),
    defaults: bool = True,
    require_match: bool = True,
) -> Exclusions:
    """Resolve the default rules and the user's overrides against the real node names of a graph.

    Args:
        model: the fp32 graph to be quantized.
        component: its name, for messages.
        exclude: extra node names or globs to keep in floating point.
        quantize: rule keys to drop, or node names / globs to force into int8 despite a default rule.
        defaults: apply :data:`DEFAULT_RULES` (those that apply to ``component``).
        require_match: a pattern that matches no node of this graph is an error (with several components,
            the caller checks instead that each pattern matches some graph: :func:`unmatched_patterns`).

    Raises:
        StableMTLError: a pattern or rule key that matches nothing.
    """
    graph = GraphIndex.of(model)
    names = graph.names()
    rules = [r for r in DEFAULT_RULES if r.applies_to(component)] if defaults else []
    forced: set[str] = set()
    for item in quantize:
        if item in _RULES_BY_KEY:
            rules = [r for r in rules if r.key != item]
        else:
            forced.update(_check_pattern(item, names, "--quantize", component, require_match))
    excluded: dict[str, str] = {}
    for node in graph.nodes:
        for rule in rules:
            if rule.matches(node, graph):
                excluded[node.name] = rule.key
                break
    for pattern in exclude:
        for name in _check_pattern(pattern, names, "--exclude", component, require_match):
            excluded.setdefault(name, f"exclude:{pattern}")
    for name in forced:
        excluded.pop(name, None)
    order = {n: i for i, n in enumerate(names)}
    excluded = dict(sorted(excluded.items(), key=lambda kv: order[kv[0]]))
    layers = [n.name for n in graph.nodes if n.op_type in QUANTIZED_OP_TYPES]
    candidates = tuple(n for n in layers if n not in excluded)
    excluded_layers = tuple(n for n in layers if n in excluded)
    return Exclusions(excluded, candidates, excluded_layers, tuple(r.key for r in rules))


def unmatched_patterns(patterns: Iterable[str], graphs: Mapping[str, onnx.ModelProto]) -> list[str]:
    """The patterns (rule keys aside) that match no node of any of ``graphs`` (component -> graph)."""
    names = [n.name for g in graphs.values() for n in g.graph.node]
    return [p for p in patterns if p not in _RULES_BY_KEY and not any(fnmatch.fnmatchcase(n, p) for n in names)]
