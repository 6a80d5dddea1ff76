"""lstm_mt.memory against allocations of a known size: the readings must move by about that much."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lstm_mt import memory

MIB_FLOATS = 2**20 // 4
ROOT = Path(__file__).resolve().parents[1]


WRITTEN_BLOCK = """
import json, torch
from lstm_mt import memory
before = memory.resident_mib()
block = torch.ones(100 * 2**20 // 4)  # written, so resident
during = memory.resident_mib()
del block
reset = memory.reset_peak_resident()
print(json.dumps([before, during, reset, memory.peak_resident_mib(), memory.resident_mib()]))
"""


@pytest.mark.skipif(not memory.peak_resettable(), reason="needs Linux's /proc/self/clear_refs")
def test_resident_set_and_its_peak_follow_a_written_tensor():
    """100 MiB written raise the resident set and its peak by about that; after freeing it and a reset the peak
    starts from the lower resident set again. In a process of its own: no other test's threads free or touch
    memory meanwhile (in the test process they did, about once in 75 runs)."""
    result = subprocess.run(
        [sys.executable, "-c", WRITTEN_BLOCK], capture_output=True, text=True, timeout=120, check=True, cwd=ROOT
    )
    before, during, reset, peak, now = readings = json.loads(result.stdout.splitlines()[-1])
    assert before > 0 and during - before > 90, readings
    assert reset and peak >= now, readings
    assert peak < during - 50, readings  # the 100 MiB block's pages went back with it (a large block is mmapped)


@pytest.mark.skipif(memory.heap() is None, reason="needs glibc's mallinfo2")
def test_heap_counts_what_is_allocated_and_what_is_freed():
    """Allocations of 64 KiB (on glibc's heap) show up as memory in use, and after freeing them as no longer in use."""
    start = memory.heap()
    blocks = [torch.ones(MIB_FLOATS // 16) for _ in range(640)]  # 40 MiB in 64 KiB pieces
    held = memory.heap()
    del blocks
    freed = memory.heap()
    assert start is not None and held is not None and freed is not None
    allocated = (held.in_use + held.mmapped) - (start.in_use + start.mmapped)
    assert 38 < allocated < 60, (start, held)
    assert (held.in_use + held.mmapped) - (freed.in_use + freed.mmapped) > 38, (held, freed)
