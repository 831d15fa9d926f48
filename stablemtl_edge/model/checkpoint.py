"""Our own checkpoint format: config JSON + safetensors (the official release is read by ``official.py``).

A checkpoint is a directory with ``config.json`` (class name, package version, preset, stream layout) and
``model.safetensors`` (the full ``StableMTL`` state dict, task embeddings included); ``save_pretrained``
and ``load_pretrained`` are mirror images and writes are atomic.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..atomic import atomic_directory
from ..config import ModelPreset
from ..errors import StableMTLError
from .stablemtl import StableMTL
from .weight_files import load_state_dict_checked, read_safetensors

__all__ = ["save_pretrained", "load_pretrained", "BUNDLED_MODELS", "bundled_model_dir"]

log = logging.getLogger(__name__)
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CLASS_NAME = "StableMTL"
BUNDLED_MODELS = ("demo",)


def bundled_model_dir(name: str) -> Path:
    return Path(__file__).resolve().parent.parent / "weights" / name


# -- our format -------------------------------------------------------------------------------------------
def save_pretrained(
    model: StableMTL, directory: str | Path, extra: Mapping[str, Any] | None = None, overwrite: bool = False
) -> Path:
    """Write ``config.json`` + ``model.safetensors`` atomically (the directory appears complete or not at all).

    An existing checkpoint of ours at ``directory`` is replaced only with ``overwrite``; anything else there
    is refused (:func:`stablemtl_edge.atomic.atomic_directory`).
    """
    from safetensors.torch import save_file

    config = {
        "_class_name": CLASS_NAME,
        "_package_version": __version__,
        "preset": model.preset.to_dict(),
        "multi_stream": model.multi_stream,
        **(dict(extra) if extra else {}),
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_directory(directory, kind="checkpoint", overwrite=overwrite) as tmp:
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "class": CLASS_NAME})
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return Path(directory)


def read_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise StableMTLError(f"`{path}` is missing: `{directory}` is not a stablemtl-edge checkpoint")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise StableMTLError(f"`{path}` is not valid JSON ({e}); the checkpoint is damaged") from None
    if config.get("_class_name") != CLASS_NAME:
        raise StableMTLError(f"`{path}` describes `{config.get('_class_name')}`, not a {CLASS_NAME} checkpoint")
    return config


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or the name of a bundled model (``demo``)."""
    if str(path) in BUNDLED_MODELS:
        directory = bundled_model_dir(str(path))
        if not (directory / CONFIG_NAME).is_file():
            raise StableMTLError(
                f"the bundled `{path}` model is not in this install ({directory}); reinstall stablemtl-edge "
                "or pass a checkpoint directory"
            )
        return directory
    directory = Path(path)
    if not directory.exists():
        raise StableMTLError(
            f"checkpoint `{path}` does not exist: pass a checkpoint directory or one of {', '.join(BUNDLED_MODELS)}"
        )
    if not directory.is_dir():
        raise StableMTLError(
            f"`{path}` is a file: pass a checkpoint directory (official .pth files go through `import_official`)"
        )
    return directory


def load_pretrained(path: str | Path = "demo", device: str | torch.device = "cpu") -> StableMTL:
    """Rebuild the model from ``config.json`` and load ``model.safetensors`` strictly."""
    directory = resolve_checkpoint(path)
    config = read_config(directory)
    preset = ModelPreset.from_dict(config["preset"])
    weights = directory / WEIGHTS_NAME
    state = read_safetensors(weights, device)
    conditioning = [state.get(f"unet.{k}") for k in ("task_embeddings", "task_lengths")]
    if any(t is None for t in conditioning):
        raise StableMTLError(f"`{weights}` lacks the task embeddings (`unet.task_embeddings`, `unet.task_lengths`)")
    model = StableMTL.skeleton(preset, *conditioning, multi_stream=bool(config.get("multi_stream")))
    load_state_dict_checked(model, state, str(weights), assign=True)  # the file's tensors become the weights
    del state
    model.source = {"checkpoint": str(directory), **{k: v for k, v in config.items() if not k.startswith("_")}}
    return model.to(device).eval()

