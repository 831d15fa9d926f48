"""The exported components as frozen specs: torch wrapper, graph I/O, dtypes and dynamic axes.

Each :class:`ComponentSpec` is the single source of the names, dtypes and shapes that the exporter passes
to ``torch.onnx.export``, that the manifest records and that the runtime feeds, so the three can never
disagree. The wrappers put everything the runtime should not redo into the graph: the encoder takes the
camera's uint8 RGB NHWC frame and normalises it in-graph; the UNets select their task embedding from a
constant table by ``task_id``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..config import UNET_DOWNSAMPLE, VAE_DOWNSAMPLE, ModelPreset
from ..errors import StableMTLError
from ..artifact.manifest import (
    NUM_FEATURES,
    Component,
    FeatureSpec,
    Mode,
    ShapeProfile,
    TensorSpec,
    aux_feature_name,
    feature_name,
)
from ..model.stablemtl import StableMTL
from ..model.unet import ATTENTION_LAYERS
from ..tasks import NUM_TASKS

__all__ = [
    "ComponentSpec",
    "EncoderGraph",
    "UNetGraph",
    "MainStreamGraph",
    "DecoderGraph",
    "TinyDecoderGraph",
    "component_specs",
    "feature_specs",
    "check_resolution",
]

PIXEL_STEP = VAE_DOWNSAMPLE * UNET_DOWNSAMPLE  # 64: a frame side must be a multiple of this


# -- torch wrappers: the exact computation each graph holds --------------------------------------------------
class EncoderGraph(nn.Module):
    """uint8 RGB ``[B, H, W, 3]`` -> latent ``[B, 4, H/8, W/8]`` (posterior mean x 0.18215)."""

    def __init__(self, model: StableMTL) -> None:
        super().__init__()
        self.vae = model.vae

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1.0
        return self.vae.encode(x)


class UNetGraph(nn.Module):
    """Single-stream / auxiliary UNet: ``(sample, task_id) -> latent [, feat_00 .. feat_15]``."""

    def __init__(self, model: StableMTL, with_features: bool) -> None:
        super().__init__()
        self.unet = model.unet
        self.with_features = with_features

    def forward(self, sample: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if not self.with_features:
            return self.unet(sample, task_id)
        latent, features = self.unet(sample, task_id, return_features=True)
        return (latent, *features)


class MainStreamGraph(nn.Module):
    """Multi-stream main UNet: ``(sample, task_id, aux_feat_00 .. aux_feat_15) -> latent``.

    The auxiliary features come once per frame, ``(1, 7, N, C)``, and are broadcast to the batch's main rows
    here, in the graph: the caller never holds k copies (1.7 GB of buffers at k = 7, 384x512, sd2).
    """

    def __init__(self, model: StableMTL) -> None:
        super().__init__()
        if model.main is None:
            raise StableMTLError("this checkpoint is single-stream: export it with `--mode single`")
        self.main = model.main

    def forward(self, sample: torch.Tensor, task_id: torch.Tensor, *aux_features: torch.Tensor) -> torch.Tensor:
        rows = sample.shape[0]
        return self.main(sample, task_id, [a.expand(rows, -1, -1, -1) for a in aux_features])


class DecoderGraph(nn.Module):
    """latent ``[B, 4, h, w]`` -> image ``[B, 3, 8h, 8w]`` clipped to [-1, 1]."""

    def __init__(self, model: StableMTL) -> None:
        super().__init__()
        self.vae = model.vae

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent)


class TinyDecoderGraph(nn.Module):
    """The distilled decoder with the decoder's I/O: latent ``[B, 4, h, w]`` -> image ``[B, 3, 8h, 8w]``."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(latent)


# -- specs ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ComponentSpec:
    """Everything the exporter, the verifier and the manifest need to know about one graph.

    Attributes:
        component: which graph.
        factory: builds the torch wrapper from the model.
        inputs / outputs: graph I/O in order; symbolic dimensions are names (``"batch"``), the rest ints.
        example: builds example inputs (``batch`` rows, random but valid) in the order of ``inputs``.
    """

    component: Component
    factory: Callable[[StableMTL], nn.Module]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    example: Callable[[int, torch.Generator], tuple[torch.Tensor, ...]]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``torch.onnx.export``'s ``dynamic_axes``: every symbolic dimension by name."""
        axes: dict[str, dict[int, str]] = {}
        for t in (*self.inputs, *self.outputs):
            dims = {i: d for i, d in enumerate(t.shape) if isinstance(d, str)}
            if dims:
                axes[t.name] = dims
        return axes


def check_resolution(height: int, width: int) -> None:
    """Refuse frame sizes the UNet cannot take (latent not divisible by its 8x down-sampling)."""
    if height <= 0 or width <= 0 or height % PIXEL_STEP or width % PIXEL_STEP:
        lo_h, lo_w = max(PIXEL_STEP, height // PIXEL_STEP * PIXEL_STEP), max(PIXEL_STEP, width // PIXEL_STEP * PIXEL_STEP)
        raise StableMTLError(
            f"resolution {height}x{width} is not a multiple of {PIXEL_STEP} pixels (VAE 8x times UNet 8x "
            f"down-sampling); use e.g. {lo_h}x{lo_w} (the runtime letterboxes camera frames to it)"
        )


def feature_specs(preset: ModelPreset) -> tuple[FeatureSpec, ...]:
    """The 16 feature taps of the preset in the official task-attention order."""
    return tuple(
        FeatureSpec(index=i, layer=layer, channels=c, downsample=d)
        for i, (layer, c, d) in enumerate(zip(ATTENTION_LAYERS, preset.attention_channels, preset.attention_downsample))
    )


def component_specs(
    preset: ModelPreset, mode: Mode, profile: ShapeProfile, tiny_decoder: nn.Module | None = None
) -> dict[Component, ComponentSpec]:
    """The specs of every component a ``mode`` export holds, for this preset and shape profile, plus the
    distilled decoder when one is given."""
    check_resolution(profile.height, profile.width)
    if profile.dynamic_hw:
        for hw in (profile.min_hw, profile.max_hw):
            check_resolution(*hw)  # type: ignore[misc]
    dyn = profile.dynamic_hw
    H, W = ("height", "width") if dyn else (profile.height, profile.width)
    lh, lw = ("latent_height", "latent_width") if dyn else profile.latent_hw
    opt_lh, opt_lw = profile.latent_hw
    c = preset.vae["latent_channels"]
    unet_in = preset.unet["in_channels"]
    feats = feature_specs(preset)

    def tokens(f: FeatureSpec) -> int | str:
        return f"tokens_{f.index:02d}" if dyn else f.tokens(profile.latent_hw)

    f32, i64, u8 = "float32", "int64", "uint8"
    latent = TensorSpec("latent", f32, ("batch", c, lh, lw))
    sample = TensorSpec("sample", f32, ("batch", unet_in, lh, lw))
    task_id = TensorSpec("task_id", i64, ("batch",))
    feat_out = tuple(TensorSpec(feature_name(f.index), f32, ("batch", tokens(f), f.channels)) for f in feats)
    aux_in = tuple(  # once per frame: broadcast to the batch in the graph
        TensorSpec(aux_feature_name(f.index), f32, (1, NUM_TASKS, tokens(f), f.channels)) for f in feats
    )

    def ex_image(b: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
        return (torch.randint(0, 256, (b, profile.height, profile.width, 3), generator=g, dtype=torch.uint8),)

    def ex_sample(b: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        s = torch.randn(b, unet_in, opt_lh, opt_lw, generator=g)
        s[:, 2 * c :] = 0.0  # the third slot is always zeros
        return s, torch.arange(b, dtype=torch.long) % NUM_TASKS

    def ex_main(b: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
        aux = tuple(torch.randn(1, NUM_TASKS, f.tokens((opt_lh, opt_lw)), f.channels, generator=g) for f in feats)
        return (*ex_sample(b, g), *aux)

    def ex_latent(b: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
        return (torch.randn(b, c, opt_lh, opt_lw, generator=g),)

    specs = {
        Component.ENCODER: ComponentSpec(
            Component.ENCODER, EncoderGraph, (TensorSpec("image", u8, ("batch", H, W, 3)),), (latent,), ex_image
        ),
        Component.UNET: ComponentSpec(
            Component.UNET,
            lambda m: UNetGraph(m, with_features=mode is Mode.MULTI),
            (sample, task_id),
            (latent, *feat_out) if mode is Mode.MULTI else (latent,),
            ex_sample,
        ),
        Component.UNET_MAIN: ComponentSpec(
            Component.UNET_MAIN, MainStreamGraph, (sample, task_id, *aux_in), (latent,), ex_main
        ),
        Component.DECODER: ComponentSpec(
            Component.DECODER,
            DecoderGraph,
            (latent,),
            (TensorSpec("image", f32, ("batch", 3, H, W)),),
            ex_latent,
        ),
    }
    if tiny_decoder is not None:
        decoder = specs[Component.DECODER]
        specs[Component.TINY_DECODER] = ComponentSpec(
            Component.TINY_DECODER, lambda _: TinyDecoderGraph(tiny_decoder), decoder.inputs, decoder.outputs,
            ex_latent,
        )
    assert len(feats) == NUM_FEATURES
    return {k: specs[k] for k in (*mode.components, Component.TINY_DECODER) if k in specs}
