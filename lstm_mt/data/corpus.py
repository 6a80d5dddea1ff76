"""A parallel corpus held in memory: aligned source and target lines plus where they came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lstm_mt.data.textio import read_lines
from lstm_mt.errors import LstmMtError


@dataclass
class ParallelCorpus:
    """Aligned raw sentences of one split; ``line_numbers[i]`` is the 1-based file line of pair i.

    ``line_numbers`` lets reports name the exact file line of a pair even after pairs were
    split off or skipped (None means pair i is on line i + 1).
    """

    name: str
    src_lines: list[str]
    tgt_lines: list[str]
    src_path: str
    tgt_path: str
    line_numbers: list[int] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if len(self.src_lines) != len(self.tgt_lines):
            raise LstmMtError(
                f"{self.src_path} has {len(self.src_lines)} lines but {self.tgt_path} has "
                f"{len(self.tgt_lines)}; source and target files must be line-parallel"
            )

    def __len__(self) -> int:
        return len(self.src_lines)

    def line_number(self, i: int) -> int:
        """1-based line in the source file(s) of pair ``i``."""
        return self.line_numbers[i] if self.line_numbers is not None else i + 1

    def where(self, i: int) -> str:
        """'file:line' of pair ``i`` for messages (both files when they differ)."""
        line = self.line_number(i)
        if self.src_path == self.tgt_path:
            return f"{self.src_path}:{line}"
        return f"{self.src_path}:{line} / {Path(self.tgt_path).name}:{line}"


def read_parallel(name: str, src_path: str | Path, tgt_path: str | Path) -> ParallelCorpus:
    """Read two line-parallel files (plain or .gz); a line-count mismatch is an error naming both."""
    return ParallelCorpus(
        name=name,
        src_lines=read_lines(src_path),
        tgt_lines=read_lines(tgt_path),
        src_path=str(src_path),
        tgt_path=str(tgt_path),
    )
