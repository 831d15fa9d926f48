"""The seven task embeddings: the only task signal the UNet receives.

For the official model they are the SD2 CLIP text encoder's last hidden state of each prompt, tokenised
alone with no padding, computed once at import. Small presets have no pretrained text encoder: they use
fixed pseudo-random embeddings with the same token lengths, seeded from the prompt, so the padding/mask
path is exercised exactly as with CLIP.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ..atomic import atomic_path
from ..config import MAX_PROMPT_TOKENS, PROMPT_TOKEN_LENGTHS, ModelPreset
from ..errors import MissingDependencyError, StableMTLError
from ..tasks import TASKS
from .weight_files import load_state_dict_checked, read_folder_weights, read_safetensors

__all__ = [
    "pad_embeddings", "pseudo_task_embeddings", "clip_task_embeddings", "save_task_embeddings", "load_task_embeddings",
]
EMBEDDINGS_FORMAT = "stablemtl-task-embeddings"


def pad_embeddings(embeddings: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad ``[L_t, D]`` embeddings to ``[7, L_max, D]``; return it with the lengths ``[7]``."""
    lengths = torch.tensor([e.shape[0] for e in embeddings], dtype=torch.long)
    table = torch.zeros(len(embeddings), int(lengths.max()), embeddings[0].shape[1])
    for i, e in enumerate(embeddings):
        table[i, : e.shape[0]] = e
    return table, lengths


def pseudo_task_embeddings(preset: ModelPreset) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic unit-variance embeddings for presets without a pretrained text encoder."""
    embeddings = []
    for task, length in zip(TASKS, PROMPT_TOKEN_LENGTHS):
        seed = int.from_bytes(hashlib.sha256(task.prompt.encode()).digest()[:8], "little")
        g = torch.Generator().manual_seed(seed)
        embeddings.append(torch.randn(length, preset.text_embed_dim, generator=g))
    return pad_embeddings(embeddings)


@torch.no_grad()
def clip_task_embeddings(sd2_dir: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Official embeddings from a diffusers-format stable-diffusion-2 directory (offline).

    Each prompt is tokenised alone with ``padding="longest"`` (so: no padding) and encoded without an
    attention mask; the last hidden state is kept in fp32. The encoder's weights (safetensors or ``.bin``)
    go through the weights-only readers, never through a pickle that can run code.
    """
    try:
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    except ImportError:
        raise MissingDependencyError("transformers", "export", "computing the task embeddings") from None
    sd2_dir = Path(sd2_dir)
    for sub in ("tokenizer", "text_encoder"):
        if not (sd2_dir / sub).is_dir():
            raise StableMTLError(
                f"`{sd2_dir / sub}` is missing: pass a diffusers-format stable-diffusion-2 directory, or "
                "precomputed task embeddings (`--embeddings FILE`)"
            )
    folder = sd2_dir / "text_encoder"
    try:
        tokenizer = CLIPTokenizer.from_pretrained(sd2_dir / "tokenizer", local_files_only=True)
        config = CLIPTextConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as e:
        raise StableMTLError(f"`{sd2_dir}`: the tokenizer or text-encoder config could not be read ({e})") from None
    weights, state = read_folder_weights(folder, "model", "pytorch_model")
    state.pop("text_model.embeddings.position_ids", None)  # a buffer older transformers saved
    encoder = CLIPTextModel(config).float().eval()
    load_state_dict_checked(encoder, state, str(weights))
    embeddings = []
    for task in TASKS:
        ids = tokenizer(task.prompt, padding="longest", return_tensors="pt").input_ids
        embeddings.append(encoder(ids).last_hidden_state[0].float())
    return pad_embeddings(embeddings)


def save_task_embeddings(path: str | Path, table: torch.Tensor, lengths: torch.Tensor, source: str = "") -> Path:
    """Write the seven embeddings as safetensors keyed by task name (``[L_t, D]`` fp32 each), atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {t.key: table[t.index, : int(lengths[t.index])].contiguous().float() for t in TASKS}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": EMBEDDINGS_FORMAT, "source": source})
    return path


def load_task_embeddings(path: str | Path, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Precomputed embeddings (see :func:`save_task_embeddings`), in place of the text encoder."""
    path = Path(path)
    state = read_safetensors(path)
    names = [t.key for t in TASKS]
    if sorted(state) != sorted(names):
        raise StableMTLError(f"`{path}` must hold one tensor per task, keyed {names}; it holds {sorted(state)}")
    embeddings = []
    for name in names:
        e = state[name]
        if e.ndim == 3 and e.shape[0] == 1:
            e = e[0]
        if e.ndim != 2 or e.shape[1] != width or not 1 <= e.shape[0] <= MAX_PROMPT_TOKENS or not e.is_floating_point():
            raise StableMTLError(
                f"`{path}`: `{name}` has shape {tuple(e.shape)} {e.dtype}, expected float (L, {width}) "
                f"with 1 <= L <= {MAX_PROMPT_TOKENS} (the prompt's tokens, no padding)"
            )
        if not bool(torch.isfinite(e).all()):
            raise StableMTLError(f"`{path}`: `{name}` holds NaN or infinite values")
        embeddings.append(e.float())
    return pad_embeddings(embeddings)
