"""The common source interface: task mixture with the official probabilities, bad-sample skipping, bench."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.data.sample import Label, Sample
from stablemtl_edge.data import (
    OFFICIAL_MIX,
    Corpus,
    ProceduralSource,
    SampleSource,
    SkipBadSamples,
    TaskMixture,
    official_mixture,
    procedural_mixture,
)
from stablemtl_edge.data.bench import main as bench_main

SIZE = (16, 24)


class Flaky(SampleSource):
    """A real source whose listed indices fail the way a corrupt file does."""

    def __init__(self, n: int, bad: set[int]) -> None:
        self.n, self.bad_idx = n, bad

    @property
    def domain(self) -> str:
        return "flaky"

    @property
    def tasks(self) -> tuple[str, ...]:
        return ("depth",)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Sample:
        i = self._check_index(index)
        if i in self.bad_idx:
            raise StableMTLError(f"corrupt file `/data/{i}.png`")
        return Sample(np.zeros((2, 2, 3), np.uint8), None, {"depth": Label(np.ones((2, 2)), np.ones((2, 2), bool))},
                      "flaky", name=str(i))


def test_procedural_mixture_follows_official_probabilities():
    mix = procedural_mixture("train", SIZE, length=50)
    assert mix.tasks == ("normal", "depth", "semantic", "optical_flow", "scene_flow", "albedo", "shading")
    rng = np.random.default_rng(0)
    for task, expected in OFFICIAL_MIX.items():
        picks = [mix.pick(task, rng)[0].domain for _ in range(2000)]
        for corpus, p in expected:
            share = picks.count(corpus.procedural_domain) / len(picks)
            assert abs(share - p) < 0.04, (task, corpus, share)
    s = mix.draw("optical_flow", rng)
    assert s.frame2 is not None and "optical_flow" in s.labels


def test_official_mixture_renormalises_missing_corpora_and_refuses_unserved_tasks():
    flying = ProceduralSource("flying", SIZE, 5)
    mix = official_mixture({Corpus.FLYINGTHINGS3D: flying})
    assert mix.tasks == ("optical_flow", "scene_flow")
    assert [e.probability for e in mix.entries("scene_flow")] == [1.0]
    with pytest.raises(StableMTLError, match="task `depth` needs a hypersim or vkitti2 source"):
        official_mixture({Corpus.FLYINGTHINGS3D: flying}, tasks=["depth"])
    with pytest.raises(StableMTLError, match="no training source labels `albedo`"):
        mix.pick("albedo", np.random.default_rng(0))
    with pytest.raises(StableMTLError, match="does not label `depth`"):
        TaskMixture({"depth": [(flying, 1.0)]})


def test_ranks_draw_reproducibly_from_their_own_generators():
    mix = procedural_mixture("val", SIZE, length=1000)
    a = [mix.pick("depth", np.random.default_rng([7, rank]))[1] for rank in (0, 1)]
    b = [mix.pick("depth", np.random.default_rng([7, rank]))[1] for rank in (0, 1)]
    assert a == b and a[0] != a[1]


def test_skip_bad_samples_counts_and_gives_up_on_broken_data():
    src = SkipBadSamples(Flaky(6, {2, 3}), max_consecutive=4)
    names = [src[i].name for i in range(6)]
    assert names == ["0", "1", "4", "4", "4", "5"]
    assert src.skipped == 3 and set(src.bad) == {2, 3} and "/data/2.png" in src.bad[2]
    dead = SkipBadSamples(Flaky(10, set(range(10))), max_consecutive=3)
    with pytest.raises(StableMTLError, match="3 consecutive bad samples in flaky.*`/data/2.png`"):
        dead[0]
    with pytest.raises(IndexError):
        src[6]


def test_bench_command_prints_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--size", "16x24", "--count", "2", "--repeat", "1", "--warmup", "0", "--domains", "indoor,flying",
            "--json", str(out), "--quiet", "--no-pin"]
    assert bench_main(argv) == 0
    report = json.loads(out.read_text())
    assert [r["domain"] for r in report["results"]] == ["indoor", "flying"]
    assert report["results"][0]["pairs_per_s"] > 0 and report["size"] == [16, 24]
    assert "pairs/s" in capsys.readouterr().out
    assert bench_main(["--size", "big", "--json", str(out)]) == 1
    assert "error: --size must read HxW" in capsys.readouterr().err
