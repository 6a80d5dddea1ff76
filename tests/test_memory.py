"""lstm_mt.memory against allocations of a known size: the readings must move by about that much."""

from __future__ import annotations

import pytest
import torch

from lstm_mt import memory

MIB_FLOATS = 2**20 // 4


@pytest.mark.skipif(not memory.peak_resettable(), reason="needs Linux's /proc/self/clear_refs")
def test_resident_set_and_its_peak_follow_a_written_tensor():
    """100 MiB written raise the resident set and its peak by about that; after freeing it and a reset the peak
    starts from the lower resident set again."""
    before = memory.resident_mib()
    assert before is not None and before > 0
    block = torch.ones(100 * MIB_FLOATS)  # written, so resident
    during = memory.resident_mib()
    assert during is not None and during - before > 90, (before, during)
    del block
    assert memory.reset_peak_resident()
    peak, now = memory.peak_resident_mib(), memory.resident_mib()
    assert peak is not None and now is not None
    assert peak < during - 50, (
        before,
        during,
        peak,
        now,
    )  # the 100 MiB block's pages went back with it (a large block is mmapped)
    assert peak >= now


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
