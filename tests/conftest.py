"""Shared test configuration."""

import os

# Keep torch and onnxruntime from oversubscribing the 2 CPU cores that CI has.
os.environ.setdefault("OMP_NUM_THREADS", "2")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


def _make_tiny_checkpoint(directory: Path) -> Path:
    """A random tiny multi-stream model whose task attention is active (so multi-stream != single)."""
    from stablemtl_edge.model.checkpoint import save_pretrained
    from tests.tiny_model import tiny_with_active_task_attention

    save_pretrained(tiny_with_active_task_attention(), directory)
    return directory


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """Checkpoint directory of a random tiny multi-stream model (non-zero task-attention outputs)."""
    return _make_tiny_checkpoint(tmp_path_factory.mktemp("tiny_checkpoint") / "model")


@pytest.fixture(scope="session")
def tiny_artifacts(tiny_checkpoint, tmp_path_factory) -> Path:
    """``tiny_checkpoint`` exported multi-stream, fp32 + fp16, at the tiny preset's 64x128 (verified)."""
    from stablemtl_edge.export.artifacts import ExportRequest, export_artifacts
    from stablemtl_edge.artifact.manifest import Mode, Precision

    out = tmp_path_factory.mktemp("tiny_artifacts") / "artifact"
    export_artifacts(
        ExportRequest(str(tiny_checkpoint), out, Mode.MULTI, (Precision.FP32, Precision.FP16))
    )
    return out
