"""Tests for lstm_mt.runlog: metrics.jsonl written, read back, cut back on resume; TensorBoard scalars."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lstm_mt.errors import LstmMtError
from lstm_mt.runlog import CurvePoint, MetricsLog, best_bleu_by, read_records, valid_curve

ROOT = Path(__file__).resolve().parents[1]

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


def _run_with_validations(folder: Path, points: list[tuple[float, float]]) -> Path:
    """A run folder whose metrics.jsonl has a validation per (minutes, bleu), plus records without minutes."""
    folder.mkdir()
    lines = [{"kind": "valid", "step": 1, "bleu": 99.0}]  # an old record without minutes is left out
    for step, (minutes, bleu) in enumerate(points, start=2):
        lines += [{"kind": "train", "step": step, "loss": 1.0}, {"kind": "valid", "step": step, "epoch": step / 2}]
        lines[-1].update(bleu=bleu, minutes=minutes)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def test_valid_curve_and_the_best_bleu_reached_by_a_time(tmp_path):
    run = _run_with_validations(tmp_path / "run", [(2.0, 10.0), (4.5, 14.0), (7.0, 13.5)])
    curve = valid_curve(run)
    assert curve == [CurvePoint(2.0, 1.0, 10.0), CurvePoint(4.5, 1.5, 14.0), CurvePoint(7.0, 2.0, 13.5)]
    assert [best_bleu_by(curve, minutes) for minutes in (1, 2, 5, 10)] == [None, 10.0, 14.0, 14.0]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.jsonl").write_text('{"kind": "valid", "step": 1, "bleu": 3.0}\n')
    with pytest.raises(LstmMtError, match=r"metrics\.jsonl: no validation with BLEU and minutes"):
        valid_curve(empty)
    with pytest.raises(LstmMtError, match=r"not found; is .* a training run folder"):
        valid_curve(tmp_path / "nothing")


def test_plot_quality_script_prints_the_table_and_draws_the_curves(tmp_path):
    pytest.importorskip("matplotlib")
    first = _run_with_validations(tmp_path / "a", [(2.0, 10.0), (4.5, 14.0), (7.0, 13.5)])
    second = _run_with_validations(tmp_path / "b", [(3.0, 12.0)])
    command = [sys.executable, str(ROOT / "scripts" / "plot_quality.py"), str(first), f"seed 2={second}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([*command, "--output", str(tmp_path / "q.png")], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:5] == [
        "| minutes | a | seed 2 |",
        "|---:|---:|---:|",
        "| 5 | 14.00 | 12.00 |",
        "| 10 | 14.00 | 12.00 |",
        "| last | 13.50 (7.0 min, epoch 2.0) | 12.00 (3.0 min, epoch 1.0) |",
    ]
    assert (tmp_path / "q.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    broken = subprocess.run([*command[:2], str(tmp_path / "missing")], capture_output=True, text=True, env=env)
    assert broken.returncode == 2 and broken.stderr.startswith("error: ") and len(broken.stderr.splitlines()) == 1
