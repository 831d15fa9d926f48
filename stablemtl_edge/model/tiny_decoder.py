"""A distilled task decoder: latents -> task image at a tenth of the VAE decoder's FLOPs or less.

The full SD2-style decoder (GroupNorm ResNets, a mid-block attention, 128-512 channels up to full
resolution) is most of a frame's compute once the UNet runs once per task (issue 17). Task maps are far
simpler than photos, so a plain conv + ReLU stack trained to copy the model's own decoder on its own
predicted latents (:mod:`stablemtl_edge.training.distill`) replaces it. No convolution runs at full
resolution: three conv stages at 1/8, 1/4 and 1/2 of the image, two nearest x2 up-samplings between them
and a sub-pixel (pixel-shuffle) x2 head into the image, which keeps the cost well under the budget. Only
ONNX opset-17 operators are used (Conv, Relu, Add, Resize nearest, DepthToSpace, Clip), with no reduction
that could overflow in fp16 (no GroupNorm, no softmax).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..atomic import atomic_path, atomic_write_text
from ..config import LATENT_SCALE, ModelPreset, get_preset
from ..errors import StableMTLError

__all__ = ["TinyDecoder", "TinyDecoderConfig", "decoder_flops", "full_decoder_flops", "save_tiny_decoder",
           "load_tiny_decoder", "read_tiny_decoder_record", "FLOP_BUDGET", "WEIGHTS_NAME", "CONFIG_NAME"]

log = logging.getLogger(__name__)
FLOP_BUDGET = 0.10  # tiny / full decoder FLOPs, at any size (both scale with pixels)
LATENT_CHANNELS = 4
STAGES = 3  # at h, 2h and 4h; the head's pixel shuffle makes the third x2 (VAE_DOWNSAMPLE = 2**3)
_SHUFFLE = 2
# Widths tried by `for_preset`, as a fraction of the full decoder's stage widths, widest first.
_WIDTH_LADDER = (1.0, 0.75, 0.5, 0.375, 0.25, 0.1875, 0.125)
_BLOCKS = (2, 2, 1)  # residual blocks per stage: depth is cheap at low resolution, dear at the top


@dataclass(frozen=True)
class TinyDecoderConfig:
    """Architecture of a :class:`TinyDecoder`; stage 0 runs at latent resolution, stage 2 at half the image's.

    Attributes:
        channels: width of each of the 3 stages.
        blocks: residual blocks (two 3x3 convs each) per stage.
    """

    channels: tuple[int, ...] = (32, 32, 24)
    blocks: tuple[int, ...] = _BLOCKS

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        if len(self.channels) != STAGES or len(self.blocks) != STAGES:
            raise StableMTLError(
                f"tiny decoder: `channels` and `blocks` need {STAGES} entries (one per stage), "
                f"got {len(self.channels)} and {len(self.blocks)}"
            )
        if min(self.channels) < 1 or min(self.blocks) < 0:
            raise StableMTLError(
                f"tiny decoder: channels must be >= 1 and blocks >= 0, got {self.channels}, {self.blocks}")

    def to_dict(self) -> dict[str, Any]:
        return {"channels": list(self.channels), "blocks": list(self.blocks)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TinyDecoderConfig:
        try:
            return cls(channels=tuple(d["channels"]), blocks=tuple(d["blocks"]))
        except (KeyError, TypeError, ValueError) as e:
            raise StableMTLError(f"tiny decoder config {dict(d)!r} is not valid ({type(e).__name__}: {e})") from None

    @classmethod
    def for_preset(cls, preset: str | ModelPreset, budget: float = FLOP_BUDGET) -> TinyDecoderConfig:
        """The widest config, in widths proportional to the preset's decoder, within ``budget`` of its FLOPs.

        FLOPs are counted on the meta device (no memory, no compute), so even ``sd2`` costs nothing. A
        decoder too small for any ladder step to fit (the ``tiny`` unit-test preset: 18 MFLOP per 64x64)
        gets the narrowest step, with a warning giving its ratio.
        """
        preset = get_preset(preset)
        full = full_decoder_flops(preset, (8, 8))
        widths = tuple(reversed(preset.vae["block_out_channels"]))[:STAGES]  # decoder order: deepest first
        for fraction in _WIDTH_LADDER:
            config = cls(channels=tuple(max(8, int(round(c * fraction / 8)) * 8) for c in widths))
            with torch.device("meta"):
                ratio = decoder_flops(TinyDecoder(config), (8, 8)) / full
            if ratio <= budget:
                return config
        log.warning("preset `%s`: the narrowest tiny decoder costs %.2f of the full decoder's FLOPs (budget %.2f)",
                    preset.name, ratio, budget)
        return config


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class _Block(nn.Module):
    """conv-ReLU-conv plus the input, then ReLU (no normalisation: nothing to overflow in fp16)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv(channels, channels)
        self.conv2 = _conv(channels, channels)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.conv2(self.act(self.conv1(x))))


class TinyDecoder(nn.Module):
    """Scaled latents ``[B, 4, h, w]`` (as the UNet predicts them) -> images ``[B, 3, 8h, 8w]`` in [-1, 1].

    The same contract as :meth:`stablemtl_edge.model.vae.LatentVAE.decode`, so either one decodes a
    prediction. Distillation trains the unclamped output: a clamp has no gradient where the student
    overshoots, so a pixel pushed past -1 or 1 would never come back.
    """

    def __init__(self, config: TinyDecoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or TinyDecoderConfig()
        ch, blocks = self.config.channels, self.config.blocks
        layers: list[nn.Module] = [_conv(LATENT_CHANNELS, ch[0]), nn.ReLU()]
        for i in range(STAGES):
            layers += [_Block(ch[i]) for _ in range(blocks[i])]
            if i + 1 < STAGES:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), _conv(ch[i], ch[i + 1]), nn.ReLU()]
        layers += [_conv(ch[-1], 3 * _SHUFFLE**2), nn.PixelShuffle(_SHUFFLE)]
        self.layers = nn.Sequential(*layers)

    def forward(self, latents: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """``[B, 4, h, w]`` -> ``[B, 3, 8h, 8w]``; ``clamp=False`` gives the raw output distillation trains."""
        if latents.ndim != 4 or latents.shape[1] != LATENT_CHANNELS:
            raise StableMTLError(
                f"tiny decoder: latents must be [B, {LATENT_CHANNELS}, h, w], got {tuple(latents.shape)}")
        out = self.layers(latents)
        return out.clamp(-1.0, 1.0) if clamp else out

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Alias of ``forward``, named like ``LatentVAE.decode``."""
        return self(latents)


def decoder_flops(module: nn.Module, latent_hw: tuple[int, int]) -> int:
    """FLOPs (a multiply-add counts 2) of one ``[1, 4, h, w]`` decode by ``module`` (``decode`` or call).

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products, the
    same operators for the VAE decoder and the tiny one); works on the meta device.
    """
    from torch.utils.flop_counter import FlopCounterMode

    param = next(module.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    latents = torch.zeros(1, LATENT_CHANNELS, *latent_hw, device=device, dtype=dtype)
    run = getattr(module, "decode", module)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        run(latents)
    return int(counter.get_total_flops())


def full_decoder_flops(preset: str | ModelPreset, latent_hw: tuple[int, int]) -> int:
    """FLOPs of the preset's full VAE decoder at ``latent_hw``, counted on the meta device."""
    from .vae import LatentVAE, build_vae

    with torch.device("meta"):
        vae = LatentVAE(build_vae(get_preset(preset)), LATENT_SCALE)
    return decoder_flops(vae, latent_hw)



# -- files ---------------------------------------------------------------------------------------------------
WEIGHTS_NAME = "tiny_decoder.safetensors"
CONFIG_NAME = "tiny_decoder.json"
CLASS_NAME = "TinyDecoder"


def save_tiny_decoder(decoder: TinyDecoder, directory: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``tiny_decoder.safetensors`` then ``tiny_decoder.json`` into ``directory``, each atomically.

    The JSON (config, class, package version and ``extra``: the teacher's identity, steps, loss) is
    written last, so a reader that finds it finds the weights it describes.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in decoder.state_dict().items()}
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "class": CLASS_NAME})
    record = {"_class_name": CLASS_NAME, "_package_version": __version__, "config": decoder.config.to_dict(),
              **(dict(extra) if extra else {})}
    atomic_write_text(directory / CONFIG_NAME, json.dumps(record, indent=2) + "\n")
    return directory


def read_tiny_decoder_record(directory: str | Path) -> dict[str, Any]:
    """``tiny_decoder.json`` of ``directory``, checked to describe a :class:`TinyDecoder`."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise StableMTLError(f"`{path}` is missing: `{directory}` holds no distilled decoder "
                             "(write one with `stablemtl-train distill-decoder`)")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StableMTLError(f"`{path}` is not valid JSON ({type(e).__name__}); the file is damaged") from None
    if not isinstance(record, dict) or record.get("_class_name") != CLASS_NAME or "config" not in record:
        raise StableMTLError(f"`{path}` does not describe a {CLASS_NAME}")
    return record


def load_tiny_decoder(directory: str | Path, device: str | torch.device = "cpu") -> TinyDecoder:
    """The mirror of :func:`save_tiny_decoder`: rebuild from the JSON, load the weights strictly."""
    from .weight_files import load_state_dict_checked, read_safetensors

    record = read_tiny_decoder_record(directory)
    decoder = TinyDecoder(TinyDecoderConfig.from_dict(record["config"]))
    weights = Path(directory) / WEIGHTS_NAME
    load_state_dict_checked(decoder, read_safetensors(weights, device), str(weights))
    return decoder.to(device).eval()
