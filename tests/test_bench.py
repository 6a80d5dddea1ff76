"""`lstm-mt bench` runs end to end and prints its tables (timings are never asserted)."""

from __future__ import annotations

import re
import sys

import pytest

from lstm_mt import bench


def test_quick_bench_prints_ratios_and_cpu_peak_memory(monkeypatch, capsys):
    monkeypatch.setattr(
        bench, "HEADLINE", bench.Shape(hidden=16, layers=1, bidirectional=True, length=5, batch=4, input=8)
    )
    bench.main(["--quick", "--repeats", "2"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| H=16")]
    assert len(rows) == 3  # full sequences, gate recording, decoder steps
    assert all(re.search(r"\d+\.\d\d×", row) for row in rows)
    if sys.platform.startswith("linux"):
        peaks = rows[0].rstrip(" |").split("|")[-2:]
        assert all(float(cell) >= 0 for cell in peaks), rows[0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_cpu_peak_memory_grows_with_the_batch():
    small = bench.peak_cpu_memory_mb(
        bench.Shape(hidden=64, layers=1, bidirectional=False, length=20, batch=8, input=32)
    )
    large = bench.peak_cpu_memory_mb(
        bench.Shape(hidden=64, layers=1, bidirectional=False, length=20, batch=512, input=32)
    )
    assert small is not None and large is not None
    assert large[0] > small[0] and large[1] > small[1]
