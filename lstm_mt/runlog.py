"""A training run's log: ``metrics.jsonl`` (one JSON record per line) and, optionally, TensorBoard.

`MetricsLog` writes it during training (rank 0); `read_records` reads it back, for a resumed
run and for the recipes (`lstm_mt.recipe` compares runs and reports how one ended), and
`valid_curve` turns it into val BLEU against training minutes. Records look like
``{"kind": "train" | "valid" | "end", "step": N, ...}``; valid records carry ``minutes``, the
wall-clock training time so far (resumed sessions included).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lstm_mt.errors import LstmMtError
from lstm_mt.files import write_text_atomic

__all__ = ["METRICS_FILE", "CurvePoint", "MetricsLog", "best_bleu_by", "read_records", "valid_curve"]

METRICS_FILE = "metrics.jsonl"  # in the run folder


class MetricsLog:
    """Appends records to ``metrics.jsonl`` (and TensorBoard); does nothing when ``path`` is None."""

    def __init__(self, path: Path | None, tensorboard_dir: Path | None = None) -> None:
        self.path = path
        self.writer = _tensorboard_writer(tensorboard_dir) if path is not None and tensorboard_dir else None

    def write(self, record: dict[str, Any]) -> None:
        """One JSON line; numeric fields also become TensorBoard scalars ``<kind>/<field>``."""
        if self.path is None:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(_line(record))
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
                    self.writer.add_scalar(f"{record['kind']}/{key}", value, record["step"])
            self.writer.flush()

    def forget_after(self, step: int) -> None:
        """Drop records past ``step``: a resumed run repeats those updates and logs them again."""
        records = read_records(self.path) if self.path is not None else None
        if self.path is None or records is None:
            return
        kept = [record for record in records if record.get("step", 0) <= step]
        if len(kept) != len(records):
            write_text_atomic(self.path, "".join(_line(record) for record in kept))

    def close(self) -> None:
        """Close the TensorBoard writer, if any."""
        if self.writer is not None:
            self.writer.close()


def read_records(path: Path) -> list[dict[str, Any]] | None:
    """The records of a ``metrics.jsonl`` in order, or None without the file; a broken line is an `LstmMtError`."""
    if not path.is_file():
        return None
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise LstmMtError(f"{path}:{number}: not a JSON record ({error.msg})") from None
    return records


@dataclass(frozen=True)
class CurvePoint:
    """One validation of a run: training minutes so far, epoch, and val BLEU."""

    minutes: float
    epoch: float
    bleu: float


def valid_curve(run_dir: Path) -> list[CurvePoint]:
    """Val BLEU against training minutes from ``run_dir/metrics.jsonl``, in training order.

    `LstmMtError` naming the file when it is missing or has no validation with ``minutes``
    (logs written before valid records carried them).
    """
    path = run_dir / METRICS_FILE
    records = read_records(path)
    if records is None:
        raise LstmMtError(f"{path}: not found; is {run_dir} a training run folder?")
    curve = [
        CurvePoint(record["minutes"], record.get("epoch", 0.0), record["bleu"])
        for record in records
        if record.get("kind") == "valid" and "minutes" in record and "bleu" in record
    ]
    if not curve:
        raise LstmMtError(f"{path}: no validation with BLEU and minutes in it")
    return curve


def best_bleu_by(curve: list[CurvePoint], minutes: float) -> float | None:
    """The best val BLEU a run had reached after ``minutes`` of training (None: no validation yet)."""
    reached = [point.bleu for point in curve if point.minutes <= minutes]
    return max(reached) if reached else None


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


def _tensorboard_writer(folder: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise LstmMtError(
            "train.tensorboard=true needs the tensorboard package: pip install tensorboard "
            "(or set train.tensorboard=false)"
        ) from None
    return SummaryWriter(log_dir=str(folder))
