"""`stablemtl-train`: YAML config plus flags, one-line errors, and a tiny vae-stage run end to end."""

from __future__ import annotations

import json

import pytest

from stablemtl_edge.model.checkpoint import load_pretrained
from stablemtl_edge.tasks import TASK_NAMES
from stablemtl_edge.training.cli import main


def test_yaml_config_with_flag_override_runs_a_tiny_vae_stage(tmp_path, capsys):
    cfg = tmp_path / "vae.yaml"
    cfg.write_text("stage: vae\npreset: tiny\nsteps: 5\nbatch: 1\nresolution: 64x128\ncrop: 64x64\n"
                   "data: procedural\nprocedural_length: 8\nval_per_source: 1\nno_progress: true\n")
    out = tmp_path / "run"
    assert main(["--config", str(cfg), "--steps", "2", "--output", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["steps"] == 2 and config["stage"] == "vae" and config["crop"] == [64, 64]  # the flag won
    record = json.loads((out / "validation.jsonl").read_text().splitlines()[-1])
    assert set(record["psnr"]) >= {"rgb", "depth", "normal", "semantic", "albedo", "shading"}
    assert load_pretrained(out / "model").preset.name == "tiny"
    assert "trained `vae` for 2 steps" in capsys.readouterr().out


def test_user_mistakes_are_one_line_errors(tmp_path, capsys):
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("stepz: 3\n")
    cases = [
        (["--config", str(bad_key), "--output", str(tmp_path / "a")], "unknown key `stepz`"),
        (["--stage", "single", "--output", str(tmp_path / "b")], "--init-from"),
        (["--data", "imagenet=/x", "--output", str(tmp_path / "c")], "--data `imagenet=/x` not understood"),
        (["--stage", "vae", "--preset", "nope", "--output", str(tmp_path / "d")], "unknown model preset"),
        (["evaluate", "--model", str(tmp_path / "missing")], "does not exist"),
    ]
    for argv, message in cases:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_distill_decoder_runs_end_to_end_on_the_tiny_model(tiny_checkpoint, tmp_path, capsys):
    import torch

    threads = torch.get_num_threads()  # --threads 1 (fast on shared cores) is set process-wide: put it back
    try:
        _distill_decoder_cli(tiny_checkpoint, tmp_path, capsys)
    finally:
        torch.set_num_threads(threads)


def _distill_decoder_cli(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "tiny"
    argv = ["distill-decoder", "--model", str(tiny_checkpoint), "--out", str(out), "--steps", "3", "--batch-size", "1",
            "--size", "64x64", "--checkpoint-every", "2", "--threads", "1", "--gate-frames", "3", "--gate-max-frames",
            "3", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "distilled the decoder" in printed and "decoder gate: " in printed
    gate = json.loads((out / "decoder_gate.json").read_text())  # the gate judged every task of the model
    assert {v["task"] for v in gate["verdicts"]} == set(TASK_NAMES) and (out / "decoder_gate.md").is_file()
    record = json.loads((out / "tiny_decoder.json").read_text())
    assert record["steps"] == 3 and record["size"] == [64, 64] and (out / "tiny_decoder.safetensors").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000002", "step-0000003"]
    assert main(argv[:-1] + ["--steps", "4", "--resume", "--no-progress"]) == 0  # continues at step 3
    assert [json.loads(line)["step"] for line in (out / "distill.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert main(argv) == 1 and "pass --resume" in capsys.readouterr().err
    for flag, value in (("--steps", "0"), ("--lr", "-1"), ("--size", "64"), ("--batch-size", "0")):
        with pytest.raises(SystemExit) as exit_info:  # argparse's own one-line refusal, before any work
            main(["distill-decoder", "--model", str(tiny_checkpoint), "--out", str(tmp_path / "x"), flag, value])
        assert exit_info.value.code == 2
