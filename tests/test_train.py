"""Tests for `lstm-mt train` (lstm_mt.train): real short runs on a slice of Multi30k (a tiny model, a
500-piece vocabulary, 300 training pairs): overrides reach the trainer, validation loss goes down, a killed
run resumes to bitwise-identical parameters, broken checkpoints give one-line errors, and two torchrun ranks
stay in sync. Config, loss, schedule and runtime have their own test files."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import MIRROR, REPO, compose_train, needs_mirror, run_train_cli, train_cli

from lstm_mt.checkpoint import load_checkpoint
from lstm_mt.config import TrainJobConfig
from lstm_mt.configuring import typed_config
from lstm_mt.data import prepare_data
from lstm_mt.errors import LstmMtError
from lstm_mt.model import ModelConfig, build_model
from lstm_mt.runlog import valid_curve
from lstm_mt.runtime import Distributed, StopSignals
from lstm_mt.train import Trainer, parameter_digest, train

TORCHRUN = Path(sys.executable).with_name("torchrun")


# A model small enough for a few seconds per epoch of 300 pairs on one thread.
TINY_MODEL = [
    "model.emb_size=64",
    "model.encoder_hidden=64",
    "model.decoder_hidden=128",
    "model.attentional_size=64",
    "model.attention_hidden=64",
]


TINY_TRAIN = [
    "train.max_train_examples=300",
    "train.max_tokens=1024",
    "train.lr=3e-3",
    "train.num_threads=1",
    "train.quiet=true",
    "train.log_every=5",
    "train.early_stop_metric=loss",
    "seed=3",
]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> list[str]:
    """Real Multi30k from the mirror, a 500-piece vocabulary, one SentencePiece cache per session."""
    cache = tmp_path_factory.mktemp("cache")
    return [
        f"data.mirror={MIRROR}",
        f"data.cache_dir={cache}",
        "data.spm.vocab_size=500",
        "data.spm.max_sentences=5000",
    ]


@pytest.fixture(scope="session")
def tiny(tiny_data) -> list[str]:
    """Overrides for a tiny run on real Multi30k."""
    return [*tiny_data, *TINY_MODEL, *TINY_TRAIN]


def records(run_dir: Path, kind: str) -> list[dict]:
    """The ``kind`` records of a run; valid records without their wall-clock ``minutes``, which no rerun repeats."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    chosen = [r for r in map(json.loads, lines) if r["kind"] == kind]
    return [{k: v for k, v in r.items() if k != "minutes"} for r in chosen] if kind == "valid" else chosen


def final_model(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


@needs_mirror
def test_overrides_reach_the_model_optimizer_and_batches(tmp_path, tiny_data):
    cfg = compose_train(
        *tiny_data,
        "train.max_train_examples=300",
        "model=base",
        "model.decoder_layers=1",
        "train.optimizer=adamw",
        "train.lr=5e-4",
        "train.max_tokens=2000",
        "data.src=en",
        "data.tgt=de",
        "device=cpu",
    )
    trainer = Trainer(
        typed_config(TrainJobConfig, cfg, "config"), tmp_path, Distributed(), torch.device("cpu"), StopSignals()
    )
    model = trainer.module
    assert model.encoder.embedding.embedding_dim == 256
    assert (model.encoder.rnn.hidden_size, model.encoder.rnn.num_layers) == (256, 2)
    assert (model.decoder.cells.hidden_size, model.decoder.cells.num_layers) == (512, 1)
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)
    assert trainer.batches.state_dict()["max_tokens"] == 2000
    assert trainer.data.valid.src_lines[0] == "A group of men are loading cotton onto a truck"
    assert len(trainer.data.train) == 300


RUN = ["train.max_epochs=3", "train.save_every=2", "train.keep_last=2"]  # about 10 updates per epoch


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, tiny) -> Path:
    """Three epochs in this process, never interrupted."""
    run_dir = tmp_path_factory.mktemp("reference")
    result = train(compose_train(*tiny, *RUN), run_dir)
    assert (result.epoch, result.stop_reason) == (3, "max_epochs") and result.step >= 24
    return run_dir


@needs_mirror
def test_short_training_lowers_validation_loss_and_writes_its_run_folder(reference_run):
    valid = records(reference_run, "valid")
    per_epoch = valid[0]["step"]
    assert [r["step"] for r in valid] == [per_epoch, 2 * per_epoch, 3 * per_epoch]
    assert valid[-1]["loss"] < valid[0]["loss"] - 0.2, valid  # 0.37 on the CI machine kind
    assert valid[0]["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    curve = valid_curve(reference_run)  # the valid records carry the training minutes so far
    assert [point.bleu for point in curve] == [r["bleu"] for r in valid]
    assert 0 < curve[0].minutes <= curve[1].minutes <= curve[2].minutes
    train_steps = [r["step"] for r in records(reference_run, "train")]
    last = 3 * per_epoch  # every log_every=5 updates, and the rest of the window when the run ends
    assert train_steps == list(range(5, last + 1, 5)) + ([last] if last % 5 else [])
    assert all(r["tokens_per_s"] > 0 and r["lr"] == pytest.approx(3e-3) for r in records(reference_run, "train"))

    folder = reference_run / "checkpoints"
    saved = sorted(set(range(2, 3 * per_epoch + 1, 2)) | {r["step"] for r in valid})  # save_every=2, validations
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "last.pt", *(f"step_{n}.pt" for n in saved[-2:])]
    last = load_checkpoint(folder / "last.pt")
    assert (last["step"], last["epoch"], last["sampler"]["epoch"], last["sampler"]["position"]) == (
        3 * per_epoch,
        3,
        3,
        0,
    )
    assert last["best"]["best"] == min(r["loss"] for r in valid)
    files = last["data"]["files"]
    assert sorted(files) == ["spm", "train", "val"], "only the train and valid splits are read"
    assert [Path(f).name for f in files["train"] + files["val"]] == [
        "train.de.gz",
        "train.en.gz",
        "val.de.gz",
        "val.en.gz",
    ]
    rebuilt = build_model(
        ModelConfig(**last["config"]["model"]), last["vocab_sizes"]["src"], last["vocab_sizes"]["tgt"]
    )
    rebuilt.load_state_dict(last["model"])
    assert parameter_digest(rebuilt) == records(reference_run, "end")[0]["parameter_sha256"][0]


@needs_mirror
@pytest.mark.slow
def test_ctrl_c_during_validation_stops_within_a_batch_and_the_resumed_run_validates_first(
    tmp_path, tiny, reference_run, monkeypatch
):
    """SIGINT while the second validation (end of epoch 2) runs: the validation stops after the batch
    in hand, a checkpoint marks it pending, and the resumed run validates first, ending bitwise equal
    to the run that was never stopped."""
    import lstm_mt.train as train_module

    searched = []
    real_search = train_module.greedy_search

    def search_then_press_ctrl_c(*args, **kwargs):
        searched.append(1)
        result = real_search(*args, **kwargs)
        if len(searched) == batches_per_validation + 1:  # the first batch of the second validation
            os.kill(os.getpid(), signal.SIGINT)
        return result

    job = compose_train(*tiny, *RUN)
    typed = typed_config(TrainJobConfig, job, "config")
    batches_per_validation = len(prepare_data(typed.data).valid_batches(typed.train.max_tokens))
    assert batches_per_validation >= 3, "the test needs a validation of several batches"
    monkeypatch.setattr(train_module, "greedy_search", search_then_press_ctrl_c)
    with pytest.raises(SystemExit) as stopped:
        train(job, tmp_path)
    assert stopped.value.code == 128 + signal.SIGINT
    assert len(searched) == batches_per_validation + 1, "validation stopped after the batch in hand"
    newest = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert newest["validation_pending"] and newest["validated_at"] < newest["step"]

    monkeypatch.setattr(train_module, "greedy_search", real_search)
    train(compose_train(*tiny, *RUN, "train.resume=auto"), tmp_path)
    ours, reference = final_model(tmp_path), final_model(reference_run)
    assert all(torch.equal(ours[name], reference[name]) for name in reference)
    assert records(tmp_path, "valid") == records(reference_run, "valid")


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(
                f"training ended (status {process.returncode}) before {path} appeared:\n"
                f"{process.stderr.read() if process.stderr else ''}"
            )
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{path} did not appear within {timeout}s")
        time.sleep(0.02)


@needs_mirror
@pytest.mark.slow
@pytest.mark.parametrize(
    "stop_signal, after_step", [(signal.SIGKILL, 14), (signal.SIGTERM, 4)], ids=["SIGKILL", "SIGTERM"]
)
def test_stopped_run_resumes_to_bitwise_identical_parameters(tmp_path, tiny, reference_run, stop_signal, after_step):
    run_dir = tmp_path / "run"
    args = [*tiny, *RUN, f"hydra.run.dir={run_dir}"]
    process = subprocess.Popen(train_cli(*args), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(run_dir / "checkpoints" / f"step_{after_step}.pt", process)
    process.send_signal(stop_signal)
    status = process.wait(timeout=60)
    assert status == (-signal.SIGKILL if stop_signal == signal.SIGKILL else 128 + signal.SIGTERM)
    newest = max(run_dir.glob("checkpoints/step_*.pt"), key=lambda path: int(path.stem[5:]))
    stopped_at = load_checkpoint(newest)["step"]
    assert after_step <= stopped_at < records(reference_run, "end")[0]["step"]

    resumed = run_train_cli(*args, "train.resume=auto")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {newest} at step {stopped_at}" in resumed.stdout

    ours, reference = final_model(run_dir), final_model(reference_run)
    assert ours.keys() == reference.keys()
    assert all(torch.equal(ours[name], reference[name]) for name in reference)
    assert records(run_dir, "valid") == records(reference_run, "valid")
    train_steps = [r["step"] for r in records(run_dir, "train")]
    assert train_steps == sorted(set(train_steps)), "records past the checkpoint must not be repeated"


@needs_mirror
def test_resuming_with_another_model_is_refused(tmp_path, tiny, reference_run):
    cfg = compose_train(
        *tiny, "model.emb_size=32", "model.attentional_size=32", f"train.resume={reference_run}/checkpoints/last.pt"
    )
    with pytest.raises(LstmMtError, match=r"cannot resume with a different model: model.emb_size=64 there, 32 here"):
        train(cfg, tmp_path)


class RunsCode:
    """Pickles to a call of os.system: a checkpoint must never run it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@needs_mirror
@pytest.mark.parametrize("damage", ["truncated", "code"])
def test_broken_checkpoint_is_a_one_line_error(tmp_path, tiny, reference_run, damage):
    broken, marker = tmp_path / "broken.pt", tmp_path / "code-ran"
    if damage == "truncated":
        data = (reference_run / "checkpoints" / "last.pt").read_bytes()
        broken.write_bytes(data[: len(data) // 2])
    else:
        torch.save({"format": "lstm-mt/1", "model": RunsCode(marker)}, broken)
    result = run_train_cli(*tiny, f"train.resume={broken}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    expected = {"truncated": "not a complete torch.save zip archive", "code": "holds Python objects that are not plain"}
    assert result.stderr.startswith(f"error: {broken}: {expected[damage]}")
    assert "weights_only" not in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not marker.exists()


@needs_mirror
def test_bf16_autocast_on_cpu_trains(tmp_path, tiny):
    cfg = compose_train(*tiny, "train.precision=bf16", "train.max_steps=3", "train.valid_every=3")
    result = train(cfg, tmp_path)
    valid = records(tmp_path, "valid")
    assert result.step == 3 and len(valid) == 1 and valid[0]["loss"] < 6.5


@needs_mirror
@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-5), ("bf16", 1e-3)])
def test_fused_loss_trains_like_the_full_logits(tmp_path, tiny, precision, tolerance):
    """train.fused_loss (chunked generator + loss) against the full logits: the same losses to rounding
    over 4 updates and a validation (measured: fp32 within 2e-7, bf16 within 3e-5 relative)."""
    runs = {}
    for fused in ("true", "false"):
        overrides = [f"train.fused_loss={fused}", f"train.precision={precision}", "train.log_every=1"]
        cfg = compose_train(*tiny, *overrides, "train.max_steps=4", "train.valid_every=4")
        (tmp_path / fused).mkdir()
        train(cfg, tmp_path / fused)
        runs[fused] = records(tmp_path / fused, "train") + records(tmp_path / fused, "valid")
    assert len(runs["true"]) == 5
    for ours, reference in zip(runs["true"], runs["false"]):
        assert ours["loss"] == pytest.approx(reference["loss"], rel=tolerance)


@needs_mirror
def test_progress_bar_ends_at_max_steps_not_at_the_end_of_the_epoch(tmp_path, tiny, capfd):
    result = train(compose_train(*tiny, "train.quiet=false", "train.max_steps=3"), tmp_path)
    assert result.step == 3
    bar = capfd.readouterr().err
    totals = {int(total) for total in re.findall(r"\b\d+/(\d+) \[", bar)}
    assert totals == {3}, bar[-500:]


@needs_mirror
def test_time_budget_stops_before_the_next_update_then_validates_saves_and_counts_resumed_sessions(tmp_path, tiny):
    first = train(compose_train(*tiny, "train.max_steps=2"), tmp_path)
    spent = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["seconds"]
    assert first.step == 2 and spent > 0
    resumed = train(compose_train(*tiny, "train.max_steps=20", "train.max_minutes=1e-6", "train.resume=auto"), tmp_path)
    assert (resumed.step, resumed.stop_reason) == (2, "max_minutes")
    end = records(tmp_path, "end")[-1]
    assert end["reason"] == "max_minutes" and end["minutes"] >= round(spent / 60, 2), "earlier sessions count"
    (tmp_path / "fresh").mkdir()
    fresh = train(compose_train(*tiny, "train.max_minutes=1e-6"), tmp_path / "fresh")
    assert (fresh.step, fresh.stop_reason) == (0, "max_minutes")
    assert [r["step"] for r in records(tmp_path / "fresh", "valid")] == [0], "a stopped run still validates"
    assert (tmp_path / "fresh" / "checkpoints" / "best.pt").is_file()


@needs_mirror
@pytest.mark.slow
def test_torchrun_two_ranks_end_with_identical_parameters(tmp_path, tiny):
    run_dir = tmp_path / "ddp"
    command = [
        str(TORCHRUN),
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "lstm_mt",
        "train",
        *tiny,
        "train.max_steps=6",
        "train.accumulate=2",
        "train.max_tokens=600",
        f"hydra.run.dir={run_dir}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    (end,) = records(run_dir, "end")
    assert end["step"] == 6 and len(end["parameter_sha256"]) == 2 and end["ranks_in_sync"]
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert checkpoint["world_size"] == 2 and len(checkpoint["rng"]) == 2
    assert not torch.equal(checkpoint["rng"][0]["torch"], checkpoint["rng"][1]["torch"]), "dropout differs per rank"


# --- non-finite updates -------------------------------------------------------------------------


def _poison_update(monkeypatch, update: int) -> None:
    """Make the training loss of update number ``update`` NaN (one batch per update here)."""
    from lstm_mt.loss import TeacherForcedLoss

    original = TeacherForcedLoss.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == update:
            return type(result)(result.loss * float("nan"), result.nll * float("nan"))
        return result

    monkeypatch.setattr(TeacherForcedLoss, "forward", poisoned)


@needs_mirror
def test_a_nan_loss_stops_the_run_and_nothing_non_finite_is_saved(tmp_path, tiny, monkeypatch):
    _poison_update(monkeypatch, 3)
    with pytest.raises(LstmMtError, match=r"^update 3: the loss or gradient became NaN.*train.nonfinite=skip"):
        train(compose_train(*tiny, "train.max_steps=6", "train.valid_every=2"), tmp_path)
    saved = sorted((tmp_path / "checkpoints").glob("*.pt"))
    assert [p.name for p in saved] == ["best.pt", "last.pt", "step_2.pt"]  # the validation before it
    for path in saved:
        load_checkpoint(path)  # finite: loads


@needs_mirror
def test_with_nonfinite_skip_the_bad_update_is_skipped_and_counted(tmp_path, tiny, monkeypatch):
    _poison_update(monkeypatch, 3)
    result = train(compose_train(*tiny, "train.max_steps=6", "train.nonfinite=skip", "train.log_every=3"), tmp_path)
    assert result.step == 6
    assert records(tmp_path, "train")[-1]["skipped_updates"] == 1
    assert all(torch.isfinite(t).all() for t in final_model(tmp_path).values() if t.is_floating_point())


def test_a_nan_validation_is_never_a_new_best():
    from lstm_mt.optim import MetricTracker

    for metric in ("loss", "bleu"):
        tracker = MetricTracker(metric)
        assert not tracker.observe(float("nan")) and tracker.best is None
        assert tracker.observe(1.0) and not tracker.observe(float("nan")) and tracker.best == 1.0


@needs_mirror
def test_memory_trace_writes_a_row_per_update_and_validation(tmp_path, tiny):
    """scripts/memory_trace.py trains as `lstm-mt train` does (the same metrics file) and adds its own rows:
    one per update, in order, with the batch's shapes, and one per validation, the peak never below the RSS."""
    trace, run_dir = tmp_path / "mem.tsv", tmp_path / "run"
    overrides = [*tiny, "train.max_steps=3", "train.valid_every=2", f"hydra.run.dir={run_dir}"]
    command = [sys.executable, str(REPO / "scripts" / "memory_trace.py"), "--out", str(trace), "--", *overrides]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    header, *rows = [line.split("\t") for line in trace.read_text().splitlines()]
    assert header[:4] == ["seconds", "update", "source", "target"] and len(header) == 9
    assert [row[1] for row in rows] == ["1", "2", "valid", "3", "valid"]
    assert len(records(run_dir, "valid")) == 2
    for row in rows:
        assert len(row) == 9
        if row[1] != "valid":
            batch, length = map(int, row[2].split("x"))
            assert batch >= 1 and length >= 1 and batch * length <= 1024  # train.max_tokens
        rss, peak = float(row[4]), float(row[5])
        assert 0 < rss <= peak
