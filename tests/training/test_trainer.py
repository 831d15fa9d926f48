"""The trainer end to end on the tiny preset: exact resume, data-parallel equivalence, stage hand-over."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.model.checkpoint import load_pretrained, save_pretrained
from stablemtl_edge.model.stablemtl import StableMTL
from stablemtl_edge.training.cli import main as cli_main
from stablemtl_edge.training.optim import OptimConfig
from stablemtl_edge.training.sources import DataConfig
from stablemtl_edge.training.trainer import TrainConfig, latest_checkpoint, train

SIZE = (64, 128)
DATA = DataConfig(procedural=True, procedural_length=40, validate=False)


@pytest.fixture(scope="module")
def start_model(tmp_path_factory) -> Path:
    """A tiny single-stream model: stands in for the output of the `vae` stage."""
    path = tmp_path_factory.mktemp("start") / "model"
    save_pretrained(StableMTL.from_preset("tiny", seed=1), path)
    return path


def _config(output: Path, init: Path, stage: str = "multi", steps: int = 5, **kw) -> TrainConfig:
    return TrainConfig(stage=stage, output=output, init_from=str(init), steps=steps, batch=2, accumulation=2,
                       seed=3, data=DATA, resolution=SIZE, progress=False, checkpoint_every=2,
                       optim=OptimConfig(lr=1e-3, warmup=2, decay_horizon=10), **kw)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


def test_interrupted_and_resumed_run_ends_with_identical_weights(tmp_path, start_model):
    # Stage 2 uses the torch RNG (task masking, p = 0.4): the RNG state must come back too.
    full = tmp_path / "full"
    train(_config(full, start_model))
    cut = tmp_path / "cut"
    train(_config(cut, start_model, steps=3))  # checkpoints at steps 2 and 3
    # A crash after step 3 before its checkpoint was written: only step 2 survives.
    shutil.rmtree(cut / "checkpoints" / "step-0000003")
    shutil.rmtree(cut / "model")
    assert latest_checkpoint(cut).name == "step-0000002"
    train(_config(cut, start_model), resume=True)
    a, b = _weights(full), _weights(cut)
    assert a.keys() == b.keys()
    changed = [k for k in a if not torch.equal(a[k], b[k])]
    assert not changed, f"{len(changed)} tensors differ, first {changed[0]}"
    # the task attention did train (the comparison is not between two untouched copies)
    assert float(a["main.task_attention.0.to_out_task.weight"].abs().max()) > 0
    steps = [json.loads(line)["step"] for line in (cut / "train.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]  # the redone step 3 is logged once


def test_refuses_to_overwrite_or_resume_wrongly(tmp_path, start_model):
    run = tmp_path / "run"
    train(_config(run, start_model, stage="single", steps=1))
    with pytest.raises(StableMTLError, match="already holds checkpoints"):
        train(_config(run, start_model, stage="single", steps=2))
    with pytest.raises(StableMTLError, match="seed"):
        train(replace(_config(run, start_model, stage="single", steps=2), seed=4), resume=True)
    with pytest.raises(StableMTLError, match="no checkpoint"):
        train(_config(tmp_path / "empty", start_model, stage="single"), resume=True)
    with pytest.raises(StableMTLError, match="--init-from"):
        TrainConfig(stage="single", output=tmp_path / "x")  # the config is fine ...
        train(TrainConfig(stage="single", output=tmp_path / "x", data=DATA, progress=False))  # ... the run is not


def _cli_args(output: Path, init: Path, batch: int) -> list[str]:
    return ["--stage", "single", "--init-from", str(init), "--output", str(output), "--steps", "3",
            "--batch", str(batch), "--seed", "5", "--data", "procedural", "--procedural-length", "40",
            "--resolution", "64x128", "--lr", "1e-3", "--warmup", "1", "--decay-horizon", "10",
            "--no-validation", "--no-progress", "--threads", "1"]


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path, start_model):
    one = tmp_path / "one"
    assert cli_main(_cli_args(one, start_model, batch=4)) == 0
    two = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "stablemtl_edge.training.cli", *_cli_args(two, start_model, batch=2)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((latest_checkpoint(two) / "trainer.json").read_text())
    assert meta["world_size"] == 2
    # The per-step losses and gradient norms agree: the ranks' gradients were averaged, not kept apart.
    logs = [[json.loads(line) for line in (run / "train.jsonl").read_text().splitlines()] for run in (one, two)]
    for x, y in zip(*logs):
        assert x["task"] == y["task"]
        assert abs(x["loss"] - y["loss"]) <= 1e-4 * abs(x["loss"])
        assert abs(x["grad_norm"] - y["grad_norm"]) <= 1e-4 * x["grad_norm"]
    # Weights agree up to float noise. Adam's first steps are ~lr * sign(g), so the few elements whose
    # gradient is ~0 can flip sign with summation order: bound the share of those, and the mean difference.
    a, b = _weights(one), _weights(two)
    start = load_pretrained(start_model).state_dict()
    keys = [k for k in a if k.startswith("unet.unet.")]
    wa, wb, w0 = (torch.cat([w[k].flatten() for k in keys]) for w in (a, b, start))
    moved = float((wa - w0).abs().mean())
    diff = (wa - wb).abs()
    assert moved > 1e-4  # the weights did change ...
    assert float(diff.mean()) < 1e-3 * moved, f"mean difference {float(diff.mean())} vs mean update {moved}"
    assert float((diff > 1e-5).float().mean()) < 1e-3  # ... identically, but for rounding


# -- damaged checkpoints on --resume -----------------------------------------------------------------------
class _Payload:
    """Pickles to a call that creates ``marker``: a weights-only load must refuse it without running it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _pickle_payload(path: Path) -> None:
    torch.save({"optimizer": _Payload(path.parent / "PWNED"), "torch": _Payload(path.parent / "PWNED")}, path)


DAMAGE = {
    "truncated optimizer.pt": ("optimizer.pt", _truncate),
    "garbage trainer.json": ("trainer.json", lambda p: p.write_bytes(b"\x00{not json")),
    "bad model.safetensors": ("model.safetensors", lambda p: p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}garbage")),
    "pickle payload in optimizer.pt": ("optimizer.pt", _pickle_payload),
    "pickle payload in rng-0.pt": ("rng-0.pt", _pickle_payload),
    "missing trainer.json": ("trainer.json", Path.unlink),
}


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory, start_model) -> Path:
    """A finished 2-step run with checkpoints at steps 1 and 2."""
    run = tmp_path_factory.mktemp("two") / "run"
    train(replace(_config(run, start_model, stage="single", steps=2), checkpoint_every=1))
    return run


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_only_checkpoint_is_one_line_naming_the_file(tmp_path, start_model, two_checkpoints, case):
    name, damage = DAMAGE[case]
    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    shutil.rmtree(run / "checkpoints" / "step-0000001")
    damage(run / "checkpoints" / "step-0000002" / name)
    with pytest.raises(StableMTLError) as info:
        train(_config(run, start_model, stage="single", steps=3), resume=True)
    message = str(info.value)
    assert name in message and "\n" not in message and "new --output" in message
    assert not (run / "checkpoints" / "PWNED").exists() and not (run / "checkpoints" / "step-0000002" / "PWNED").exists()
    assert (run / "checkpoints" / "step-0000002").is_dir()  # nothing was deleted


@pytest.mark.parametrize("case", ["missing trainer.json", "truncated optimizer.pt"])
def test_resume_says_which_checkpoint_it_skips_and_uses_the_previous_good_one(
    tmp_path, start_model, two_checkpoints, case, caplog
):
    name, damage = DAMAGE[case]
    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    shutil.rmtree(run / "model")
    damage(run / "checkpoints" / "step-0000002" / name)
    with caplog.at_level("WARNING", logger="stablemtl_edge.training.trainer"):
        train(_config(run, start_model, stage="single", steps=2), resume=True)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("step-0000002" in w and name in w and "step-0000001" in w for w in warnings), warnings
    steps = [json.loads(line)["step"] for line in (run / "train.jsonl").read_text().splitlines()]
    assert steps == [1, 2]  # step 2 was redone from step 1
    a, b = _weights(two_checkpoints), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)  # and ends exactly where the undamaged run ended
