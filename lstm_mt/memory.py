"""The process's memory as Linux and glibc report it: the resident set, its peak, and the heap.

Benchmarks and memory probes read these (`lstm-mt bench`, ``scripts/bench_train.py``,
``scripts/memory_trace.py``). Where a reading does not exist (not Linux, not glibc ≥ 2.33) the
functions say so with None or False instead of raising.

- `resident_mib` / `peak_resident_mib`: ``VmRSS`` / ``VmHWM`` of /proc/self/status;
- `reset_peak_resident`: start ``VmHWM`` afresh from the current resident set (`peak_resettable`: can it);
- `heap`: glibc's main heap (mallinfo2): what is in use, what is free but kept, what is mmapped.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import NamedTuple

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")  # writing 5 resets the peak resident set (VmHWM)
MIB = 2**20


def _status_mib(field: str) -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def resident_mib() -> float | None:
    """The resident set now (MiB), None where /proc/self/status is missing."""
    return _status_mib("VmRSS")


def peak_resident_mib() -> float | None:
    """The highest resident set since the process began or since `reset_peak_resident` (MiB)."""
    return _status_mib("VmHWM")


def peak_resettable() -> bool:
    """Whether `reset_peak_resident` can work here (Linux's /proc/self/clear_refs)."""
    return _CLEAR_REFS.exists()


def reset_peak_resident() -> bool:
    """Make the peak resident set start again from now; False where the kernel does not offer it."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


class HeapInfo(NamedTuple):
    """glibc's main heap in MiB: allocated and in use, free but kept by the allocator, in mmapped chunks."""

    in_use: float
    free: float
    mmapped: float
    mmapped_chunks: int


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
        + ("keepcost",)
    ]


@cache
def _mallinfo2() -> Callable[[], _MallInfo2] | None:
    """glibc's mallinfo2, looked up once; None where the C library has none (not glibc, or older than 2.33)."""
    try:
        function = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    function.restype = _MallInfo2
    return function


def heap() -> HeapInfo | None:
    """glibc's mallinfo2 now, None where the C library has none (not glibc, or older than 2.33)."""
    mallinfo2 = _mallinfo2()
    if mallinfo2 is None:
        return None
    info = mallinfo2()
    return HeapInfo(info.uordblks / MIB, info.fordblks / MIB, info.hblkhd / MIB, info.hblks)
