"""Checkpoints: our own format (config JSON + safetensors) and the importer for the official release.

Our format is a directory with ``config.json`` (class name, package version, preset, stream layout) and
``model.safetensors`` (the full ``StableMTL`` state dict, task embeddings included); ``save_pretrained``
and ``load_pretrained`` are mirror images and writes are atomic.

The official release (see ``shared/official-checkpoint.md``) is imported offline from
``single_stream_unet.pth`` (the single-stream UNet, also the multi-stream auxiliary stream), the
multi-stream directory or archive (the main stream + task attention), and a diffusers-format
stable-diffusion-2 directory (VAE, text encoder, tokenizer). ``.pth``/``.bin`` files are only ever read
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import logging
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..atomic import atomic_directory
from ..config import ModelPreset, get_preset
from ..errors import MissingDependencyError, StableMTLError
from ..tasks import TASK_NAMES
from .embeddings import clip_task_embeddings
from .stablemtl import StableMTL
from .unet import ATTENTION_LAYERS, TaskUNet, build_unet, self_attention_path
from .vae import LatentVAE

__all__ = ["save_pretrained", "load_pretrained", "import_official", "BUNDLED_MODELS", "bundled_model_dir"]

log = logging.getLogger(__name__)
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CLASS_NAME = "StableMTL"
BUNDLED_MODELS = ("demo",)
OFFICIAL_TASK_KEYS = 22 * len(TASK_NAMES) + 2  # per layer: 22 per task + to_out_task weight and bias


def bundled_model_dir(name: str) -> Path:
    return Path(__file__).resolve().parent.parent / "weights" / name


# -- our format -------------------------------------------------------------------------------------------
def save_pretrained(model: StableMTL, directory: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` atomically (the directory appears complete or not at all)."""
    from safetensors.torch import save_file

    config = {
        "_class_name": CLASS_NAME,
        "_package_version": __version__,
        "preset": model.preset.to_dict(),
        "multi_stream": model.multi_stream,
        **(dict(extra) if extra else {}),
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_directory(directory) as tmp:
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
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = resolve_checkpoint(path)
    config = read_config(directory)
    preset = ModelPreset.from_dict(config["preset"])
    model = StableMTL.from_preset(preset, multi_stream=bool(config.get("multi_stream")))
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise StableMTLError(f"`{weights}` is missing; the checkpoint is incomplete")
    try:
        state = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError) as e:
        raise StableMTLError(f"`{weights}` could not be read ({e}); the file is truncated or corrupt") from None
    load_state_dict_checked(model, state, str(weights))
    model.source = {"checkpoint": str(directory), **{k: v for k, v in config.items() if not k.startswith("_")}}
    return model.to(device).eval()


def load_state_dict_checked(module: torch.nn.Module, state: Mapping[str, torch.Tensor], origin: str) -> None:
    """Strict load whose errors name the first offending key, its shapes and the file."""
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
    module.load_state_dict({k: state[k].to(expected[k].dtype) for k in expected}, strict=True)


# -- the official release ---------------------------------------------------------------------------------
def read_torch_file(path: Path) -> dict[str, torch.Tensor]:
    """Load a ``.pth``/``.bin`` state dict safely (``weights_only``), unwrap and strip prefixes."""
    if not path.is_file():
        raise StableMTLError(f"`{path}` does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise StableMTLError(
            f"`{path}` could not be read as a PyTorch state dict ({type(e).__name__}); it may be truncated "
            "or not a weights-only file"
        ) from None
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise StableMTLError(f"`{path}` does not hold a state dict of tensors (top level: {type(obj).__name__})")
    state = dict(obj)
    for prefix in ("module.", "unet."):
        if state and all(k.startswith(prefix) for k in state):
            log.info("stripping prefix `%s` from %s", prefix, path)
            state = {k[len(prefix) :]: v for k, v in state.items()}
    dtypes = sorted({str(v.dtype) for v in state.values()})
    log.info("%s: %d tensors, dtypes %s", path, len(state), ", ".join(dtypes))
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def split_task_attention(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Separate the 686 base UNet keys from the task-attention keys, renamed to ``task_attention.<i>.*``."""
    base, task = {}, {}
    prefixes = {self_attention_path(layer) + ".": i for i, layer in enumerate(ATTENTION_LAYERS)}
    for key, value in state.items():
        for prefix, index in prefixes.items():
            suffix = key[len(prefix) :] if key.startswith(prefix) else ""
            if suffix.startswith(("task_", "to_out_task")):
                task[f"task_attention.{index}.{suffix}"] = value
                break
        else:
            base[key] = value
    return base, task


def _check_conv_in(state: Mapping[str, torch.Tensor], origin: Path) -> None:
    w = state.get("conv_in.weight")
    if w is None or w.ndim != 4 or w.shape[1] != 12:
        shape = None if w is None else tuple(w.shape)
        raise StableMTLError(f"`{origin}`: conv_in.weight must have 12 input channels, got {shape}")


def _multi_stream_files(path: Path, scratch: Path) -> tuple[Path, Path | None]:
    """The main-stream ``.bin`` and the optional ``config.yaml`` from a directory or ``.tar.gz``."""
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        try:
            with tarfile.open(path) as tar:
                tar.extractall(scratch, filter="data")
        except (tarfile.TarError, OSError, EOFError) as e:
            raise StableMTLError(f"`{path}` could not be extracted ({e}); the archive is truncated or corrupt") from None
        path = scratch
    if not path.is_dir():
        raise StableMTLError(f"multi-stream checkpoint `{path}` is neither a directory nor a .tar.gz archive")
    bins = sorted(path.rglob("checkpoint/latest/unet/diffusion_pytorch_model.bin"))
    if not bins:
        raise StableMTLError(f"`{path}` has no checkpoint/latest/unet/diffusion_pytorch_model.bin")
    yamls = sorted(path.rglob("config.yaml"))
    return bins[0], (yamls[0] if yamls else None)


def _check_training_config(path: Path, n_layers: int) -> None:
    try:
        import yaml
    except ImportError:
        raise MissingDependencyError("pyyaml", "export", "reading config.yaml") from None
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise StableMTLError(f"`{path}` is not valid YAML ({e})") from None
    tasks = cfg.get("tasks") or cfg.get("task_list")
    if tasks is not None and set(tasks) != set(TASK_NAMES):
        raise StableMTLError(f"`{path}` lists tasks {sorted(tasks)}, expected {sorted(TASK_NAMES)}")
    n_attns = cfg.get("n_attns")
    if n_attns is not None and int(n_attns) != n_layers:
        raise StableMTLError(f"`{path}`: n_attns = {n_attns}, expected {n_layers}")
    log.info("%s: tasks %s, n_attns %s", path, tasks, n_attns)


def import_official(
    single_stream: str | Path,
    sd2_dir: str | Path,
    multi_stream: str | Path | None = None,
    preset: str | ModelPreset = "sd2",
    progress: Callable[[str], None] = log.info,
) -> StableMTL:
    """Build a :class:`StableMTL` from the official release, fully offline.

    Args:
        single_stream: ``single_stream_unet.pth`` (plain state dict, 686 keys for sd2).
        sd2_dir: diffusers-format stable-diffusion-2 directory (``vae/``, ``text_encoder/``, ``tokenizer/``).
        multi_stream: ``multi_stream/`` directory or ``multi_stream.tar.gz`` (main stream + task attention);
            None imports a single-stream model.
        preset: the architecture the files must match (``sd2`` for the release).
        progress: receives one line per check, for the command-line log.
    """
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        raise MissingDependencyError("diffusers", "export", "importing the official checkpoint") from None
    preset = get_preset(preset)
    single_stream, sd2_dir = Path(single_stream), Path(sd2_dir)
    if not (sd2_dir / "vae").is_dir():
        raise StableMTLError(f"`{sd2_dir / 'vae'}` is missing: pass a diffusers-format stable-diffusion-2 directory")

    progress(f"reading {single_stream}")
    state = read_torch_file(single_stream)
    _check_conv_in(state, single_stream)
    base, extra = split_task_attention(state)
    if extra:
        raise StableMTLError(f"`{single_stream}` holds task-attention keys: it is not the single-stream UNet")
    expected_unet = build_unet(preset)
    progress(f"{single_stream}: {len(state)} tensors (the {preset.name} UNet has {len(expected_unet.state_dict())})")

    progress("computing the seven task embeddings with the SD2 text encoder")
    table, lengths = clip_task_embeddings(sd2_dir)
    progress(f"task embedding lengths {lengths.tolist()} (official: 3, 3, 4, 4, 4, 5, 3)")

    vae = AutoencoderKL.from_pretrained(sd2_dir / "vae", local_files_only=True).float()
    for key in ("block_out_channels", "latent_channels", "layers_per_block"):
        have, want = tuple(vae.config[key]) if key == "block_out_channels" else vae.config[key], preset.vae[key]
        if have != (tuple(want) if isinstance(want, (list, tuple)) else want):
            raise StableMTLError(f"`{sd2_dir / 'vae'}`: {key} = {have}, preset `{preset.name}` expects {want}")

    unet = TaskUNet(expected_unet, table, lengths)
    load_state_dict_checked(unet.unet, base, str(single_stream))
    model = StableMTL(preset, LatentVAE(vae), unet)

    if multi_stream is not None:
        with tempfile.TemporaryDirectory() as scratch:
            weights, yaml_path = _multi_stream_files(Path(multi_stream), Path(scratch))
            progress(f"reading {weights}")
            if yaml_path is not None:
                _check_training_config(yaml_path, len(ATTENTION_LAYERS))
            main_state = read_torch_file(weights)
        _check_conv_in(main_state, weights)
        main_base, task = split_task_attention(main_state)
        progress(f"{weights}: {len(main_base)} base + {len(task)} task-attention tensors")
        main = model.add_main_stream()
        load_state_dict_checked(main.unet.unet, main_base, str(weights))
        load_state_dict_checked(main.task_attention, {k.split(".", 1)[1]: v for k, v in task.items()}, str(weights))
        if all(float(m.to_out_task.weight.detach().abs().max()) == 0 for m in main.task_attention):
            log.warning("%s: every to_out_task is zero: this multi-stream model equals single-stream", weights)
            progress("warning: to_out_task is all zero (the multi-stream file behaves as single-stream)")
    model.source = {
        "official": True,
        "single_stream": str(single_stream),
        "multi_stream": str(multi_stream) if multi_stream else None,
        "sd2": str(sd2_dir),
    }
    return model.eval()
