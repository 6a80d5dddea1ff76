"""Tests for lstm_mt.runtime: precision names checked against the device."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from lstm_mt import runtime
from lstm_mt.errors import LstmMtError
from lstm_mt.runtime import select_precision


def test_fp16_needs_cuda_and_auto_is_full_precision_on_cpu():
    with pytest.raises(LstmMtError, match="train.precision=fp16 needs a CUDA device"):
        select_precision("fp16", torch.device("cpu"))
    assert select_precision("auto", torch.device("cpu")).dtype is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="resident memory from /proc/self/status (Linux)")
def test_release_free_heap_returns_freed_heap_pages_to_the_system():
    """Every other 64 KiB tensor of 192 MiB freed leaves holes in the heap that stay resident; trimming gives
    them back (where glibc's malloc_trim exists: else it says so and nothing changes)."""
    tensors = [torch.ones(16 * 1024) for _ in range(3072)]  # 64 KiB each, from the heap (below the mmap threshold)
    del tensors[::2]
    before = _resident_kib()
    if not runtime.release_free_heap():
        pytest.skip("no malloc_trim here (not glibc), or nothing to release")
    assert before - _resident_kib() > 48 * 1024  # most of the 96 MiB of holes
    assert all(float(t[0]) == 1.0 for t in tensors)  # the live tensors are untouched


def _resident_kib() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])
