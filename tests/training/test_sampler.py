"""Task-gradient isolation: one task per step in the official order, one dataset per micro-batch,
ranks share the schedule with different samples, and the position resumes exactly."""

from __future__ import annotations

import numpy as np
import pytest

from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.data.dataset import Corpus, official_mixture
from stablemtl_edge.data.procedural import ProceduralSource
from stablemtl_edge.training.sampler import TRAINING_ORDER, TaskSampler


@pytest.fixture(scope="module")
def mixture():
    # Nothing is rendered: the sampler only draws sources and indices.
    sources = {c: ProceduralSource(c.procedural_domain, (64, 64), length=1000, seed=5) for c in Corpus}
    return official_mixture(sources)


def test_tasks_rotate_round_robin_in_the_official_order(mixture):
    s = TaskSampler(mixture, micro_batch=2, accumulation=3)
    windows = [s.next_window() for _ in range(15)]
    assert [w[0].task for w in windows] == [TRAINING_ORDER[i % 7] for i in range(15)]
    for w in windows:
        assert len(w) == 3
        assert len({mb.task for mb in w}) == 1  # the whole accumulation window shares the task
        for mb in w:
            assert mb.source.labels(mb.task)  # one dataset per micro-batch, labelling the task
            assert len(mb.indices) == 2


def test_source_probabilities_follow_the_official_mix(mixture):
    s = TaskSampler(mixture, micro_batch=1, accumulation=1)
    domains = [s.micro_batch_at(step, 0).source.domain for step in range(2, 7 * 600, 7)]  # depth steps
    share = np.mean([d == "indoor" for d in domains])
    assert 0.85 < share < 0.95  # depth: 0.9 Hypersim (indoor) / 0.1 vKITTI (driving)
    flows = {s.micro_batch_at(step, 0).source.domain for step in range(5, 7 * 60, 7)}
    assert flows == {"driving", "flying"}


def test_ranks_share_the_schedule_with_different_samples_and_match_one_process(mixture):
    ranks = [TaskSampler(mixture, micro_batch=3, accumulation=2, world_size=2, rank=r, seed=7) for r in (0, 1)]
    single = TaskSampler(mixture, micro_batch=6, accumulation=2, world_size=1, rank=0, seed=7)
    for _ in range(10):
        w0, w1, ws = (x.next_window() for x in (*ranks, single))
        for a, b, c in zip(w0, w1, ws):
            assert a.task == b.task == c.task
            assert a.source is b.source is c.source
            assert a.indices != b.indices
            assert a.indices + b.indices == c.indices  # the 2-rank global batch is the 1-process batch
            assert a.seeds + b.seeds == c.seeds


def test_state_dict_resumes_exactly(mixture):
    a = TaskSampler(mixture, micro_batch=2, accumulation=2, seed=3)
    for _ in range(5):
        a.next_window()
    b = TaskSampler(mixture, micro_batch=2, accumulation=2, seed=3)
    b.load_state_dict(a.state_dict())
    for _ in range(4):
        wa, wb = a.next_window(), b.next_window()
        assert [(m.task, m.source.domain, m.indices, m.seeds) for m in wa] == [
            (m.task, m.source.domain, m.indices, m.seeds) for m in wb
        ]
    other = TaskSampler(mixture, micro_batch=2, accumulation=2, seed=4)
    with pytest.raises(StableMTLError, match="seed"):
        other.load_state_dict(a.state_dict())


def test_task_subset_and_unserved_task(mixture):
    s = TaskSampler(mixture, micro_batch=1, tasks=["normal", "depth"])
    assert s.tasks == ("depth", "normal")
    flying_only = official_mixture({Corpus.FLYINGTHINGS3D: ProceduralSource("flying", (64, 64), 10)})
    with pytest.raises(StableMTLError, match="no training source labels semantic"):
        TaskSampler(flying_only, micro_batch=1, tasks=["semantic"])
