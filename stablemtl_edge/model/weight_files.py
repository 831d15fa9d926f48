"""Weight files read safely, each failure one line naming the file.

Safetensors, and ``.pth``/``.bin`` through ``torch.load(weights_only=True)`` only (a pickled program is
refused unrun); diffusers/transformers model folders are read with these too, so a ``.bin`` SD2 folder
goes through the same safe path as a safetensors one.
"""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import StableMTLError

__all__ = ["read_safetensors", "read_torch_file", "read_folder_weights", "load_state_dict_checked"]


def read_safetensors(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A safetensors file, or one line naming it when it is missing, truncated or not safetensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise StableMTLError(f"`{path}` is missing; the checkpoint is incomplete")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise StableMTLError(f"`{path}` could not be read ({e}); the file is truncated or corrupt") from None


def read_torch_file(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers only, a pickled program is refused unrun.

    Every failure (missing, truncated, not a torch file, a payload that needs arbitrary globals) is one
    line naming the file.
    """
    if not path.is_file():
        raise StableMTLError(f"`{path}` does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated, foreign or unsafe files
        unsafe = "weights_only" in str(e) or isinstance(e, pickle.UnpicklingError)
        reason = "it holds objects other than tensors (refused unread)" if unsafe else "it is truncated or not torch"
        raise StableMTLError(f"`{path}` could not be read safely ({type(e).__name__}): {reason}") from None


def read_folder_weights(folder: Path, *stems: str) -> tuple[Path, dict[str, torch.Tensor]]:
    """The weights of a diffusers/transformers folder: ``<stem>.safetensors``, else ``<stem>.bin`` (or fp16)."""
    names = [f"{s}{variant}.{ext}" for variant in ("", ".fp16") for ext in ("safetensors", "bin") for s in stems]
    for name in names:
        path = folder / name
        if path.is_file():
            state = read_safetensors(path) if name.endswith(".safetensors") else read_torch_file(path)
            if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise StableMTLError(f"`{path}` does not hold a state dict of tensors")
            return path, {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    if any(folder.glob("*.index.json")):
        raise StableMTLError(f"`{folder}` holds sharded weights: merge them into one `{stems[0]}.safetensors` first")
    raise StableMTLError(f"`{folder}` has none of {', '.join(names)}")


def load_state_dict_checked(
    module: torch.nn.Module, state: Mapping[str, torch.Tensor], origin: str, assign: bool = False
) -> None:
    """Strict load whose errors name the first offending key, its shapes and the file.

    ``assign`` makes the file's tensors the module's parameters instead of copying them in, so a module
    built on the ``meta`` device (shapes, no storage) is filled without a second copy of its weights.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        raise StableMTLError(f"`{origin}` lacks {len(missing)} expected key(s), first `{missing[0]}`")
    if unexpected:
        raise StableMTLError(f"`{origin}` has {len(unexpected)} unexpected key(s), first `{unexpected[0]}`")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise StableMTLError(
                f"`{origin}`: key `{k}` has shape {tuple(state[k].shape)}, the model expects {tuple(v.shape)}"
            )
    module.load_state_dict({k: state[k].to(expected[k].dtype) for k in expected}, strict=True, assign=assign)
    if assign:
        unfilled = [n for n, t in itertools.chain(module.named_parameters(), module.named_buffers()) if t.is_meta]
        if unfilled:  # a tensor outside the state dict (non-persistent) was left without storage
            raise StableMTLError(f"`{origin}` leaves `{unfilled[0]}` of {type(module).__name__} without values")

