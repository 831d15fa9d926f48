"""The importer for the official StableMTL release (see ``shared/official-checkpoint.md``), fully offline.

It reads ``single_stream_unet.pth`` (the single-stream UNet, also the multi-stream auxiliary stream), the
multi-stream directory or archive (the main stream + task attention, and ``config.yaml`` as released) and
a diffusers-format stable-diffusion-2 directory (VAE, text encoder, tokenizer). ``.pth``/``.bin`` files are
only ever read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import importlib.util
import logging
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..config import ModelPreset, get_preset
from ..errors import MissingDependencyError, StableMTLError
from ..tasks import TASK_NAMES
from .embeddings import clip_task_embeddings, load_task_embeddings
from .stablemtl import StableMTL
from .unet import ATTENTION_LAYERS, self_attention_path
from .weight_files import load_state_dict_checked, read_folder_weights
from .weight_files import read_torch_file as read_weights_only

__all__ = ["import_official", "read_torch_file", "split_task_attention"]

log = logging.getLogger(__name__)


def read_torch_file(path: Path) -> dict[str, torch.Tensor]:
    """Load a ``.pth``/``.bin`` state dict safely (``weights_only``), unwrap and strip prefixes."""
    obj = read_weights_only(path)
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise StableMTLError(f"`{path}` does not hold a state dict of tensors (top level: {type(obj).__name__})")
    state = dict(obj)
    del obj
    for prefix in ("module.", "unet."):
        if state and all(k.startswith(prefix) for k in state):
            log.info("stripping prefix `%s` from %s", prefix, path)
            state = {k[len(prefix) :]: v for k, v in state.items()}
    dtypes = sorted({str(v.dtype) for v in state.values()})
    log.info("%s: %d tensors, dtypes %s", path, len(state), ", ".join(dtypes))
    for key, value in state.items():  # in place: a half-precision file never sits in memory twice
        if value.is_floating_point():
            state[key] = value.float()
    return state


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


def _training_config(path: Path) -> Mapping[str, Any]:
    """``config.yaml`` as released: the task list and head count live under ``trainer``."""
    try:
        import yaml
    except ImportError:
        raise MissingDependencyError("pyyaml", "export", "reading config.yaml") from None
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise StableMTLError(f"`{path}` is not valid YAML ({type(e).__name__})") from None
    trainer = cfg.get("trainer") if isinstance(cfg, Mapping) else None
    if not isinstance(trainer, Mapping):
        raise StableMTLError(f"`{path}`: no `trainer` mapping; the release keeps `trainer.output_types` and "
                             "`trainer.n_attns` there")
    return trainer


def _check_training_config(path: Path, trainer: Mapping[str, Any], heads: int) -> None:
    """The release's task order decides the task ids and ``n_attns`` is the task-attention head count."""
    tasks = trainer.get("output_types")
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise StableMTLError(f"`{path}`: `trainer.output_types` must be the list of task names, got {tasks!r}")
    keys = [t.strip().lower().replace("-", "_") for t in tasks]
    if keys != list(TASK_NAMES):
        raise StableMTLError(f"`{path}`: `trainer.output_types` is {keys}, the weights are laid out for "
                             f"{list(TASK_NAMES)} in this order")
    n_attns = trainer.get("n_attns")
    if isinstance(n_attns, bool) or not isinstance(n_attns, int) or n_attns != heads:
        raise StableMTLError(f"`{path}`: `trainer.n_attns` (task-attention heads) is {n_attns!r}, the model "
                             f"has {heads}")
    log.info("%s: trainer.output_types %s, trainer.n_attns %d", path, keys, n_attns)


def _load_unet(
    unet: torch.nn.Module, path: Path, preset: ModelPreset, progress: Callable[[str], None], main_stream: bool
) -> dict[str, torch.Tensor]:
    """Fill a skeleton UNet with one file's tensors (no second copy); returns the file's task-attention keys.

    The state dict goes out of scope on return, so importing holds each file once.
    """
    progress(f"reading {path}")
    state = read_torch_file(path)
    _check_conv_in(state, path)
    base, task = split_task_attention(state)
    del state
    if task and not main_stream:
        raise StableMTLError(f"`{path}` holds task-attention keys: it is not the single-stream UNet")
    what = f"{len(base)} base + {len(task)} task-attention tensors" if main_stream else f"{len(base)} tensors"
    progress(f"{path}: {what} (the {preset.name} UNet has {len(unet.state_dict())})")
    load_state_dict_checked(unet, base, str(path), assign=True)
    return task


def _load_vae(vae: torch.nn.Module, sd2_dir: Path, preset: ModelPreset) -> None:
    """Fill the skeleton VAE from a diffusers folder whose architecture matches the preset."""
    from diffusers import AutoencoderKL

    try:
        vae_config = AutoencoderKL.load_config(sd2_dir / "vae", local_files_only=True)
    except (OSError, ValueError) as e:
        raise StableMTLError(f"`{sd2_dir / 'vae' / 'config.json'}` could not be read ({e})") from None
    for key in ("block_out_channels", "latent_channels", "layers_per_block"):
        have, want = vae_config.get(key), preset.vae[key]
        norm = (lambda v: tuple(v) if isinstance(v, (list, tuple)) else v)
        if norm(have) != norm(want):
            raise StableMTLError(f"`{sd2_dir / 'vae'}`: {key} = {have}, preset `{preset.name}` expects {want}")
    vae_file, vae_state = read_folder_weights(sd2_dir / "vae", "diffusion_pytorch_model")
    load_state_dict_checked(vae, vae_state, str(vae_file), assign=True)


def import_official(
    single_stream: str | Path,
    sd2_dir: str | Path,
    multi_stream: str | Path | None = None,
    preset: str | ModelPreset = "sd2",
    progress: Callable[[str], None] = log.info,
    embeddings: str | Path | None = None,
) -> StableMTL:
    """Build a :class:`StableMTL` from the official release, fully offline.

    Args:
        single_stream: ``single_stream_unet.pth`` (plain state dict, 686 keys for sd2).
        sd2_dir: diffusers-format stable-diffusion-2 directory (``vae/``, ``text_encoder/``, ``tokenizer/``).
        multi_stream: ``multi_stream/`` directory or ``multi_stream.tar.gz`` (main stream + task attention);
            None imports a single-stream model.
        preset: the architecture the files must match (``sd2`` for the release).
        progress: receives one line per check, for the command-line log.
        embeddings: precomputed task embeddings (safetensors keyed by task name, see
            :func:`.embeddings.save_task_embeddings`) used instead of the SD2 text encoder.
    """
    if importlib.util.find_spec("diffusers") is None:  # the VAE and the UNets are diffusers modules
        raise MissingDependencyError("diffusers", "export", "importing the official checkpoint")
    preset = get_preset(preset)
    single_stream, sd2_dir = Path(single_stream), Path(sd2_dir)
    if not (sd2_dir / "vae").is_dir():
        raise StableMTLError(f"`{sd2_dir / 'vae'}` is missing: pass a diffusers-format stable-diffusion-2 directory")

    # The text encoder (the largest transient) comes and goes before any UNet weights are read.
    if embeddings is not None:
        progress(f"reading the task embeddings from {embeddings}")
        table, lengths = load_task_embeddings(embeddings, preset.text_embed_dim)
    else:
        progress("computing the seven task embeddings with the SD2 text encoder")
        table, lengths = clip_task_embeddings(sd2_dir)
    progress(f"task embedding lengths {lengths.tolist()} (official: 3, 3, 4, 4, 4, 5, 3)")

    model = StableMTL.skeleton(preset, table, lengths, multi_stream=multi_stream is not None)
    _load_vae(model.vae.vae, sd2_dir, preset)
    _load_unet(model.unet.unet, single_stream, preset, progress, main_stream=False)

    if multi_stream is not None:
        main = model.main
        with tempfile.TemporaryDirectory() as scratch:
            weights, yaml_path = _multi_stream_files(Path(multi_stream), Path(scratch))
            trainer = _training_config(yaml_path) if yaml_path is not None else None
            task = _load_unet(main.unet.unet, weights, preset, progress, main_stream=True)
        if trainer is not None:
            _check_training_config(Path(multi_stream) / yaml_path.name, trainer, main.task_attention[0].heads)
        else:
            progress(f"warning: `{multi_stream}` has no config.yaml: task order and head count are unchecked")
        attention = {k.split(".", 1)[1]: v for k, v in task.items()}
        del task
        load_state_dict_checked(main.task_attention, attention, str(weights), assign=True)
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
