"""The allocator setting the data tools use: freed sample-sized arrays are reused, not faulted back in."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stablemtl_edge.data.allocator import retain_freed_memory

CHURN = """
import resource, sys
import numpy as np
from stablemtl_edge.data.allocator import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else None
def churn():  # a sample's worth of arrays of 0.25-2 MB, allocated, written and freed together
    arrays = [np.ones(32_768 * (1 + i % 8)) for i in range(24)]
    del arrays
churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(30):
    churn()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_retaining_freed_memory_stops_the_page_faults_of_repeated_samples():
    applied, with_retain = _faults("retain")
    _, default = _faults("default")
    assert applied == "True"
    assert default > 10_000  # glibc's defaults give every freed block back and fault it in again
    assert with_retain < default / 20


def test_retaining_is_harmless_to_call_twice():
    first = retain_freed_memory()
    assert retain_freed_memory() == first
