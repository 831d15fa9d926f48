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

from ..config import PROMPT_TOKEN_LENGTHS, ModelPreset
from ..errors import MissingDependencyError, StableMTLError
from ..tasks import TASKS

__all__ = ["pad_embeddings", "pseudo_task_embeddings", "clip_task_embeddings"]


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
    attention mask; the last hidden state is kept in fp32.
    """
    try:
        from transformers import CLIPTextModel, CLIPTokenizer
    except ImportError:
        raise MissingDependencyError("transformers", "export", "computing the task embeddings") from None
    sd2_dir = Path(sd2_dir)
    for sub in ("tokenizer", "text_encoder"):
        if not (sd2_dir / sub).is_dir():
            raise StableMTLError(f"`{sd2_dir / sub}` is missing: pass a diffusers-format stable-diffusion-2 directory")
    tokenizer = CLIPTokenizer.from_pretrained(sd2_dir / "tokenizer", local_files_only=True)
    encoder = CLIPTextModel.from_pretrained(sd2_dir / "text_encoder", local_files_only=True).float().eval()
    embeddings = []
    for task in TASKS:
        ids = tokenizer(task.prompt, padding="longest", return_tensors="pt").input_ids
        embeddings.append(encoder(ids).last_hidden_state[0].float())
    return pad_embeddings(embeddings)
