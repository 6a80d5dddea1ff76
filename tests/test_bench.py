"""`lstm-mt bench` runs end to end and prints its tables (timings are never asserted)."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lstm_mt import bench
from lstm_mt.data import MIRROR_ENV
from lstm_mt.lstm import cuda_graphs, native, onednn, triton_step

REPO = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get(MIRROR_ENV) or REPO.parent / "shared" / "data")


def test_quick_bench_prints_ratios_and_cpu_peak_memory(monkeypatch, capsys):
    monkeypatch.setattr(
        bench, "HEADLINE", bench.Shape(hidden=16, layers=1, bidirectional=True, length=5, batch=4, input=8)
    )
    bench.main(["--quick", "--repeats", "2"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| H=16")]
    assert len(rows) == 3  # full sequences, gate recording, decoder steps
    assert all(re.search(r"\d+\.\d\d×", row) for row in rows)
    variant_rows = [
        line for line in out.splitlines() if line.startswith("| ") and line.split("|")[1].strip() in bench.VARIANTS
    ]
    assert [row.split("|")[1].strip() for row in variant_rows] == list(bench.VARIANTS)  # one row per variant
    assert all(len(re.findall(r"\d+\.\d\d×", row)) >= 2 for row in variant_rows)  # train and inference ratios
    assert len(re.findall(r"\d+\.\d\d×", variant_rows[-1])) == 3  # layer norm: also against the PyTorch loop
    decoder_rows = [line for line in out.splitlines() if line.startswith("| fp32 |")]
    assert len(decoder_rows) == 1 and len(re.findall(r"\d+\.\d\d×", decoder_rows[0])) == 2  # train, inference
    if sys.platform.startswith("linux"):
        peaks = rows[0].rstrip(" |").split("|")[-2:]
        assert all(re.fullmatch(r"\s*\d+\s*", cell) for cell in peaks), rows[0]  # measured, not n/a; sizes: next test


def test_the_decoder_tables_two_decoders_compute_the_same():
    """The teacher-forced decoder with torch.nn.LSTMCell cells is a copy of ours: same outputs and attention."""
    ref, ours, batch_inputs = bench.decoder_pair(batch=3, steps=4, device=torch.device("cpu"))
    tgt_in, encoder_out = batch_inputs()
    with torch.no_grad():
        for got, want in zip(ours.eval()(tgt_in, encoder_out), ref.eval()(tgt_in, encoder_out)):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert all(isinstance(cell, torch.nn.LSTMCell) for cell in ref.cells.layers)


def test_the_variants_table_times_graphed_variants_also_without_graphs(monkeypatch, capsys):
    """Where graphs run (CPU with the stand-in for a CUDA graph here), each variant row has its times without
    graphs beside the graphed ones, for training and inference, and the variants ran through graphs."""
    from test_cuda_graphs import ReplayedOnCpu

    monkeypatch.setattr(cuda_graphs, "DEVICE_TYPES", {"cpu"})
    monkeypatch.setattr(cuda_graphs, "CapturedGraph", ReplayedOnCpu)
    monkeypatch.setattr(onednn, "usable", lambda weight: False)  # float32 inference reaches graphs, as on CUDA
    shape = bench.Shape(hidden=16, layers=1, bidirectional=False, length=5, batch=4, input=8)
    bench.print_variants(shape, torch.device("cpu"), repeats=2)
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("| variant"))
    assert header.count("no graphs") == 2
    rows = [line for line in lines if line.startswith("| ") and line.split("|")[1].strip() in bench.VARIANTS]
    assert len(rows) == len(bench.VARIANTS)
    assert all(row.count("|") == header.count("|") for row in rows)
    kinds = {key[0] for key in cuda_graphs.graph_cache().graphs}
    assert {"variant forward", "variant backward"} <= kinds


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_cpu_peak_memory_grows_with_the_batch():
    """Peaks of a training step, torch and ours, are at least what the step must hold, and grow with the batch."""
    small_shape = bench.Shape(hidden=64, layers=1, bidirectional=False, length=20, batch=8, input=32)
    large_shape = dataclasses.replace(small_shape, batch=512)
    small = bench.peak_cpu_memory_mb(small_shape)
    large = bench.peak_cpu_memory_mb(large_shape)
    assert small is not None and large is not None
    # The step holds its float32 output [T, B, H] (2.5 MB) from the forward pass to its end; the weight
    # gradients it frees and allocates again (0.1 MB) are all that could offset it.
    output_mb = large_shape.length * large_shape.batch * large_shape.hidden * 4 / 2**20
    assert min(large) >= output_mb, (large, output_mb)
    assert large[0] > small[0] and large[1] > small[1]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="Triton's interpreter is off (CUDA present)")
def test_where_the_triton_kernel_runs_the_tables_also_time_ours_without_it(monkeypatch, capsys):
    """The CUDA layout, on CPU through Triton's interpreter: a no-Triton column after each ratio, both precisions."""
    monkeypatch.setattr(native, "_library", lambda: None)
    monkeypatch.setattr(bench, "HEADLINE", bench.Shape(hidden=8, layers=1, bidirectional=False, length=3, batch=2))
    monkeypatch.setattr(bench, "peak_cpu_memory_mb", lambda shape: None)
    with triton_step.only_on("cpu"):
        bench.main(["--quick", "--repeats", "1", "--precision", "fp32,bf16"])
    out = capsys.readouterr().out
    assert out.count("ratio | ours, no Triton") == 8  # train and inference columns of 4 tables
    rows = [line for line in out.splitlines() if line.startswith("| H=8") and line.count("|") > 6]
    assert len(rows) == 4  # sequences and decoder steps, fp32 and bf16
    assert all(len(re.findall(r"\d+\.\d\d×", row)) == 2 and row.count("|") >= 9 for row in rows)


@pytest.mark.skipif(not (MIRROR / "multi30k" / "raw").is_dir(), reason=f"no data mirror at {MIRROR}")
def test_bench_train_ends_promptly_on_sigterm(tmp_path):
    """scripts/bench_train.py has nothing to save: SIGTERM during its updates ends it at once."""
    scratch = tmp_path / "tmp"  # its run folder appears here once the job is being set up
    scratch.mkdir()
    command = [
        sys.executable,
        str(REPO / "scripts" / "bench_train.py"),
        "--steps",
        "100000",
        "--threads",
        "1",
        "model=small",
        f"data.mirror={MIRROR}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.spm.vocab_size=500",
        "data.spm.max_sentences=5000",
        "train.max_tokens=512",
    ]
    env = {**os.environ, "TMPDIR": str(scratch)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while not any(scratch.iterdir()):
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == -signal.SIGTERM
    finally:
        process.kill()
