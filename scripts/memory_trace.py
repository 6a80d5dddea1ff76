"""Train as `lstm-mt train` does and write where memory stands after every update and validation.

    LSTM_MT_DATA_MIRROR=../shared/data .venv/bin/python scripts/memory_trace.py --out mem.tsv -- \\
        +experiment=multi30k_de_en train.num_threads=2 train.max_steps=135

Everything after ``--`` is `lstm-mt train`'s command line. Each row of the tab-separated
``--out`` file: seconds since start, the update (or ``valid``), the batch's source and target
shape, then in MiB the resident set, its peak so far, and glibc's heap: in use, free but kept,
mmapped. Memory *in use* that keeps rising between updates is something held (a cache); a
resident set that rises while memory in use stays flat is the allocator keeping freed memory.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import IO, Any

from lstm_mt import memory, train

COLUMNS = ("seconds", "update", "source", "target", "rss", "peak_rss", "heap_in_use", "heap_free", "mmapped")


def readings() -> list[str]:
    """The memory columns of a row, each in MiB ('-' where this system does not report it)."""
    heap = memory.heap()
    values = [memory.resident_mib(), memory.peak_resident_mib()]
    values += [heap.in_use, heap.free, heap.mmapped] if heap else [None] * 3
    return ["-" if value is None else f"{value:.0f}" for value in values]


def trace(out: IO[str]) -> None:
    """Wrap `Trainer.update` and `Trainer.validate_and_save` so that each writes a row to ``out`` when done."""
    start = time.perf_counter()
    update, validate_and_save = train.Trainer.update, train.Trainer.validate_and_save

    def write(*fields: str) -> None:
        out.write("\t".join((f"{time.perf_counter() - start:.1f}", *fields, *readings())) + "\n")
        out.flush()

    def traced_update(self: train.Trainer, group: list[Any]) -> train.UpdateStats:
        stats = update(self, group)
        shape = "x".join(map(str, group[0].src.shape)), "x".join(map(str, group[0].tgt_in.shape))
        write(str(self.progress.step + 1), *shape)
        return stats

    def traced_validate_and_save(self: train.Trainer) -> None:
        validate_and_save(self)
        write("valid", "-", "-")

    train.Trainer.update = traced_update  # type: ignore[method-assign]
    train.Trainer.validate_and_save = traced_validate_and_save  # type: ignore[method-assign]


def main(argv: list[str]) -> int | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the tab-separated trace to write")
    parser.add_argument("overrides", nargs="*", help="`lstm-mt train` arguments (after --)")
    args = parser.parse_args(argv)
    with open(args.out, "w", encoding="utf-8") as out:
        out.write("\t".join(COLUMNS) + "\n")
        trace(out)
        return train.main(args.overrides)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
