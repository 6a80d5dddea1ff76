"""End-to-end training throughput: target tokens per second and peak memory of the real loop.

Builds the `lstm-mt train` job from the same Hydra configs (base model on Multi30k by
default), runs a few warm-up updates and then a fixed number of timed updates through
`Trainer.update` (batching, forward, label-smoothed loss, backward, clipping, Adam), and
prints one table row per precision. The same batches are timed for every precision, so
rows of one run compare directly. Memory is the process's peak RSS since the job was set up
on CPU (Linux: reset through /proc/self/clear_refs), or CUDA's max allocated.

    .venv/bin/python scripts/bench_train.py                            # base, CPU, 2 threads, fp32
    .venv/bin/python scripts/bench_train.py --precision fp32,bf16      # bf16 autocast next to fp32
    .venv/bin/python scripts/bench_train.py --device cuda --precision bf16,fp16,fp32
    .venv/bin/python scripts/bench_train.py model=small train.max_tokens=2048   # any config overrides
    .venv/bin/python scripts/bench_train.py --decode                   # then greedy/beam-5 decoding speed
    .venv/bin/python scripts/bench_train.py --profile 2 --precision bf16 +experiment=multi30k_de_en
    .venv/bin/python scripts/bench_train.py --steps 60 --with-validation 200 --precision bf16 +experiment=multi30k_de_en

``--decode`` also runs ``scripts/bench_decode.py`` (sentences/second on Multi30k
test_2016_flickr, greedy and beam 5) with the same thread count and device.

``--profile N`` profiles N more updates after the timed ones with torch.profiler and prints
where their time went, by category (`lstm_mt.profiling`: products, point-wise LSTM, casts,
output layer, backward bookkeeping, optimizer, data, ...), then the largest operations.

``--flops`` then runs the timed updates' batches once more under torch.utils.flop_counter (with
PyTorch's own products standing in for oneDNN's, whose FLOPs it cannot see) and reports the
matrix products' GFLOP/s of the timed run: the rate to hold against the product rate a CPU
reaches alone (``python ../shared/notes/scripts/bf16_probe.py``).

``--with-validation N`` then validates on the first N valid sentences (0: all) and saves a
checkpoint, as a run does after an epoch, and reports the peak RSS of the whole run, not
only of the updates (``peak RSS +valid``), and where the heap stands at the end (glibc).

Data come from ``data.mirror`` or $LSTM_MT_DATA_MIRROR (else the download cache); the first
run trains the 8k SentencePiece model (cached under ``data/``).
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from lstm_mt import memory, profiling
from lstm_mt.config import TrainJobConfig, register_configs
from lstm_mt.configuring import typed_config
from lstm_mt.hydra_app import CONFIG_DIR
from lstm_mt.lstm import onednn
from lstm_mt.runtime import Distributed, StopSignals, select_device
from lstm_mt.train import Trainer, first_examples, update_groups


@dataclass
class Row:
    """One timed run."""

    precision: str
    updates: int
    tokens: float
    seconds: float
    peak_mib: float
    peak_with_validation_mib: float | None = None
    profile: profiling.Breakdown | None = None
    product_flops: float | None = None  # of the timed updates' matrix products (--flops)

    def cells(self) -> list[str]:
        return [
            self.precision,
            str(self.updates),
            f"{self.tokens:.0f}",
            f"{self.seconds:.1f}",
            f"{self.tokens / self.seconds:.0f}",
            f"{self.seconds / self.updates:.2f}",
            f"{self.peak_mib:.0f}",
            "-" if self.peak_with_validation_mib is None else f"{self.peak_with_validation_mib:.0f}",
            "-" if self.product_flops is None else f"{self.product_flops / self.seconds / 1e9:.0f}",
        ]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed updates (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed updates first (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    parser.add_argument("--precision", default="fp32", help="comma-separated: fp32, bf16, fp16 (default fp32)")
    parser.add_argument("--decode", action="store_true", help="also time decoding (scripts/bench_decode.py)")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="profile N more updates by category")
    parser.add_argument("--flops", action="store_true", help="count the timed updates' product FLOPs: GFLOP/s")
    parser.add_argument(
        "--with-validation",
        type=int,
        default=None,
        metavar="N",
        help="then validate on the first N valid sentences (0: all) and save, for the peak RSS of a whole run",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (model=base unless another model= is given)")
    return parser.parse_args(argv)


def compose_job(overrides: list[str]):
    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return typed_config(TrainJobConfig, compose("train", overrides=overrides), "config")


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        memory.reset_peak_resident()


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = memory.peak_resident_mib()
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(args: argparse.Namespace, precision: str, overrides: list[str]) -> tuple[Row, Trainer]:
    """Warm up, then time ``args.steps`` updates of a fresh job in ``precision`` (then profile, validate)."""
    job = compose_job(
        [*overrides, f"train.precision={precision}", f"device={args.device}", f"train.num_threads={args.threads}"]
    )
    device = select_device(job.device)
    with tempfile.TemporaryDirectory() as run_dir:
        # StopSignals not entered: a benchmark has nothing to save, so SIGTERM/SIGINT end it at once
        trainer = Trainer(job, Path(run_dir), Distributed(), device, StopSignals())
        groups = update_groups(trainer.batches, job.train.accumulate)
        reset_peak_memory(device)
        for _ in range(args.warmup):
            trainer.update(next(groups))
        sync(device)
        timed = [next(groups) for _ in range(args.steps)]
        tokens, start = 0.0, time.perf_counter()
        for group in timed:
            tokens += trainer.update(group).tokens
        sync(device)
        seconds = time.perf_counter() - start
        row = Row(precision, args.steps, tokens, seconds, peak_memory_mib(device))
        if args.flops:
            row.product_flops = product_flops(trainer, timed)
        if args.profile:
            row.profile = profile_updates(trainer, groups, args.profile, device)
        if args.with_validation is not None:
            validate_and_save(trainer, args.with_validation)
            row.peak_with_validation_mib = peak_memory_mib(device)
    return row, trainer


def product_flops(trainer: Trainer, groups: list) -> float:
    """FLOPs of the matrix products of one update per group (forward and backward), counted by
    torch.utils.flop_counter with PyTorch's products standing in for oneDNN's (the same arithmetic)."""
    with onednn.off(), profiling.product_flop_counter() as counter:
        for group in groups:
            trainer.update(group)
    return float(counter.get_total_flops())


def profile_updates(trainer: Trainer, groups, updates: int, device: torch.device) -> profiling.Breakdown:
    """Run ``updates`` more updates under torch.profiler (CPU activity) and sort their time into categories."""
    from torch.profiler import ProfilerActivity, profile, record_function

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(updates):
            with record_function(profiling.DATA):
                group = next(groups)
            trainer.update(group)
        sync(device)
        wall = time.perf_counter() - start
    return profiling.breakdown(prof.events(), wall, updates)


def validate_and_save(trainer: Trainer, sentences: int) -> None:
    """What a run does after an epoch: validate (on the first ``sentences`` valid sentences, 0: all) and save."""
    if sentences:
        trainer.data = dataclasses.replace(trainer.data, valid=first_examples(trainer.data.valid, sentences))
    trainer.validate_and_save()


def heap_summary() -> str:
    """glibc's view of the heap (mallinfo2): bytes in use, bytes free but kept, bytes in mmapped chunks."""
    heap = memory.heap()
    if heap is None:
        return "heap: mallinfo2 unavailable (not glibc >= 2.33)"
    return (
        f"heap (glibc): {heap.in_use:.0f} MiB in use, {heap.free:.0f} MiB free but kept, "
        f"{heap.mmapped:.0f} MiB in {heap.mmapped_chunks} mmapped chunks"
    )


def print_table(rows: list[Row], device: torch.device) -> None:
    memory = "peak CUDA alloc MiB" if device.type == "cuda" else "peak RSS MiB"
    header = ["precision", "updates", "tgt tokens", "seconds", "tgt tok/s", "s/update", memory, f"{memory} +valid"]
    header.append("product GFLOP/s")
    print(profiling.format_table(header, [row.cells() for row in rows]))


def print_profile(row: Row) -> None:
    profile = row.profile
    assert profile is not None
    print(
        f"\nprofile, {row.precision}: {profile.updates} update(s), {1e3 * profile.wall / profile.updates:.0f} ms "
        "each under the profiler (self CPU time of each operation, by what it is and where it ran)"
    )
    print(profiling.format_table(["category", "ms/update", "share", "what"], profile.rows()))
    print(
        profiling.format_table(
            ["largest operations", "category", "ms/update"],
            [[name, category, f"{1e3 * spent / profile.updates:.0f}"] for name, category, spent in profile.top_ops],
        )
    )


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    overrides = (
        args.overrides if any(o.startswith("model=") for o in args.overrides) else ["model=base", *args.overrides]
    )
    rows, trainer = [], None
    for precision in args.precision.split(","):
        row, trainer = bench(args, precision, overrides)
        rows.append(row)
    assert trainer is not None
    device = trainer.device
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{cpu_name()}, {args.threads} threads"
    print(f"\n$ python scripts/bench_train.py {' '.join(argv)}")
    print(
        f"{' '.join(overrides)}: {trainer.module.num_parameters() / 1e6:.1f}M parameters, "
        f"vocab {trainer.data.tokenizer.tgt_vocab_size}, max_tokens {trainer.cfg.max_tokens}, "
        f"{args.warmup} warm-up + {args.steps} timed updates; {where}; torch {torch.__version__}"
    )
    print_table(rows, device)
    for row in rows:
        if row.profile is not None:
            print_profile(row)
    if device.type == "cpu":
        print(f"\nafter the last run: RSS {memory.resident_mib() or 0:.0f} MiB; {heap_summary()}")
    if args.decode:
        decode_bench = Path(__file__).with_name("bench_decode.py")
        subprocess.run(
            [sys.executable, str(decode_bench), "--threads", str(args.threads), "--device", args.device], check=True
        )


if __name__ == "__main__":
    main(sys.argv[1:])
