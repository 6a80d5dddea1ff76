"""Tests for lstm_mt.runlog: metrics.jsonl written, read back, cut back on resume; TensorBoard scalars."""

from __future__ import annotations

import sys

import pytest

from lstm_mt.errors import LstmMtError
from lstm_mt.runlog import MetricsLog, read_records

RECORDS = [
    {"kind": "train", "step": 1, "loss": 2.5, "lr": 1e-3},
    {"kind": "valid", "step": 2, "bleu": 12.25, "note": "Grüße"},
    {"kind": "train", "step": 3, "loss": 1.75, "lr": 5e-4},
]


def test_records_are_json_lines_in_order(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for record in RECORDS:
        log.write(record)
    log.close()
    assert read_records(tmp_path / "metrics.jsonl") == RECORDS
    assert len((tmp_path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()) == 3
    assert read_records(tmp_path / "none.jsonl") is None


def test_forget_after_keeps_the_records_up_to_a_step(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for record in RECORDS:
        log.write(record)
    log.forget_after(2)
    assert read_records(tmp_path / "metrics.jsonl") == RECORDS[:2]
    log.write(RECORDS[2])
    assert read_records(tmp_path / "metrics.jsonl") == RECORDS


def test_without_a_path_nothing_is_written(tmp_path):
    log = MetricsLog(None, tmp_path / "tb")
    log.write(RECORDS[0])
    log.forget_after(0)
    assert list(tmp_path.iterdir()) == []


def test_a_broken_line_names_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "step": 1}\n\n{"kind": "val\n', encoding="utf-8")
    with pytest.raises(LstmMtError, match=rf"^{path}:3: not a JSON record"):
        read_records(path)


def test_tensorboard_gets_the_numeric_fields(tmp_path):
    pytest.importorskip("tensorboard")
    log = MetricsLog(tmp_path / "metrics.jsonl", tmp_path / "tb")
    log.write({"kind": "valid", "step": 7, "loss": 2.5, "bleu_signature": "nrefs:1"})
    log.close()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_a_missing_tensorboard_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(LstmMtError, match="^train.tensorboard=true needs the tensorboard package"):
        MetricsLog(tmp_path / "metrics.jsonl", tmp_path / "tb")
