"""Tests for lstm_mt.data.prepare (and the batches of lstm_mt.data.dataset): Multi30k prepared end to end, the
empty-line and length filters on a toy custom corpus, and bad data through `lstm-mt train`."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import pytest
import torch
from conftest import MIRROR, custom_config

from lstm_mt.data import MIRROR_ENV, DataConfig, prepare_data, textio
from lstm_mt.errors import LstmMtError
from lstm_mt.tokenizer import SubwordConfig

pytestmark = pytest.mark.usefixtures("offline")  # no test here may use the network or $LSTM_MT_DATA_MIRROR


@pytest.fixture(scope="module")
def multi30k_prepared(tmp_path_factory):
    """Multi30k de-en with an 8k joint SentencePiece model, prepared once; records opened files."""
    if not (MIRROR / "multi30k" / "raw").is_dir():
        pytest.skip(f"no data mirror at {MIRROR}")
    cfg = DataConfig(
        name="multi30k",
        src="de",
        tgt="en",
        mirror=str(MIRROR),
        cache_dir=str(tmp_path_factory.mktemp("cache")),
        spm=SubwordConfig(model_type="unigram", vocab_size=8000, joint=True),
    )
    opened: list[str] = []
    real_read_bytes = textio.read_bytes
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(MIRROR_ENV, raising=False)
        mp.setattr(textio, "read_bytes", lambda path: (opened.append(str(path)), real_read_bytes(path))[1])
        start = time.perf_counter()
        prepared = prepare_data(cfg)
        seconds = time.perf_counter() - start
    return prepared, seconds, opened


def test_prepare_multi30k_end_to_end(multi30k_prepared):
    prepared, seconds, opened = multi30k_prepared
    assert seconds < 60
    report = prepared.filter_report
    assert report.total == 29000 and report.empty == 0
    assert report.kept == len(prepared.train) == 29000 - report.too_long - report.bad_ratio
    assert report.kept > 28900
    assert len(prepared.valid) == 1014 and prepared.valid.tgt_lines[0].startswith("A group of men")
    assert prepared.test_splits == ["test_2016_flickr", "test_2017_flickr"]
    assert sorted(Path(p).name for p in opened) == ["train.de.gz", "train.en.gz", "val.de.gz", "val.en.gz"]
    tok = prepared.tokenizer
    assert tok.joint and tok.src_vocab_size == tok.tgt_vocab_size == 8000
    assert prepared.files["spm"] == tok.model_files and Path(tok.model_files[0]).is_file()
    record = prepared.record()
    assert record["filter"]["kept"] == report.kept and record["config"]["spm"]["vocab_size"] == 8000
    longest = max(max(len(s), len(t)) for s, t in zip(prepared.train.src_ids, prepared.train.tgt_ids))
    assert longest <= 100


def test_sentencepiece_round_trips_every_val_line(multi30k_prepared):
    prepared = multi30k_prepared[0]
    tok, valid = prepared.tokenizer, prepared.valid
    for line, ids in zip(valid.src_lines, valid.src_ids):
        assert tok.decode_src(ids) == tok.normalize_src(line)
    for line, ids in zip(valid.tgt_lines, valid.tgt_ids):
        assert tok.decode_tgt(ids) == tok.normalize_tgt(line)
    assert sum(tok.decode_tgt(ids) != line for line, ids in zip(valid.tgt_lines, valid.tgt_ids)) < 5


def test_prepared_batches_hold_the_right_examples(multi30k_prepared):
    prepared = multi30k_prepared[0]
    batches = prepared.train_batches(max_tokens=3000, seed=4)
    assert len(batches) > 0
    batch = next(iter(batches))
    assert len(batch) * max(batch.src.shape[1], batch.tgt_in.shape[1]) <= 3000
    for row, i in enumerate(batch.indices):
        assert batch.src[row, : batch.src_lengths[row]].tolist() == prepared.train.src_ids[i] + [3]
    state = batches.state_dict()
    assert state["position"] == 1
    valid = list(prepared.valid_batches(max_tokens=3000))
    assert sorted(i for b in valid for i in b.indices) == list(range(1014))
    first = valid[0]
    assert prepared.tokenizer.decode_tgt(first.tgt_out[0]) == prepared.tokenizer.normalize_tgt(
        prepared.valid.tgt_lines[first.indices[0]]
    )


def test_sampled_segmentation_resegments_each_training_batch_and_resumes_exactly(multi30k_prepared):
    prepared = multi30k_prepared[0]
    spm = dataclasses.replace(prepared.config.spm, sample_alpha=0.2)
    sampled = dataclasses.replace(prepared, config=dataclasses.replace(prepared.config, spm=spm))
    tok, train = prepared.tokenizer, prepared.train
    plain = [b.indices for b, _ in zip(prepared.train_batches(max_tokens=3000, seed=4), range(3))]
    run = sampled.train_batches(max_tokens=3000, seed=4)
    batches = iter(run)
    first = [next(batches) for _ in range(3)]
    state = run.state_dict()
    later = [next(batches) for _ in range(2)]
    assert [b.indices for b in first] == plain, "the same examples, only their pieces change"
    rows = changed = 0
    for batch in first:
        for row, i in enumerate(batch.indices):
            src = batch.src[row, : batch.src_lengths[row]].tolist()
            assert src[-1] == tok.eos_id and tok.decode_src(src) == tok.normalize_src(train.src_lines[i])
            assert tok.decode_tgt(batch.tgt_out[row]) == tok.normalize_tgt(train.tgt_lines[i])
            rows, changed = rows + 1, changed + (src[:-1] != train.src_ids[i])
    assert changed > rows / 2
    resumed = sampled.train_batches(max_tokens=3000, seed=4)
    resumed.load_state_dict(state)
    again = [b for b, _ in zip(resumed, range(2))]
    for a, b in zip(later, again):
        assert torch.equal(a.src, b.src) and torch.equal(a.tgt_in, b.tgt_in) and torch.equal(a.tgt_out, b.tgt_out)


def test_prepare_counts_and_skips_empty_training_lines_and_filters_train_only(tmp_path, caplog):
    words = "the a cat dog sits runs on under red big small mat house tree".split()
    src, tgt = [], []
    for i in range(300):
        sentence = " ".join(words[(i * k) % len(words)] for k in range(1, 2 + i % 6))
        src.append(sentence)
        tgt.append(" ".join(reversed(sentence.split())))
    src[4], tgt[11] = "", "   "  # file lines 5 and 12
    src[20] = " ".join(["dog"] * 80)  # too long for max_len=40
    tgt[30] = " ".join(["cat"] * 30)  # source has 2 words: too high a length ratio
    src[30] = "a cat"
    valid_src = ["a dog", "", " ".join(["dog"] * 80)]
    cfg = custom_config(
        tmp_path,
        ("\n".join(src).encode() + b"\n", "\n".join(tgt).encode() + b"\n"),
        ("\n".join(valid_src).encode() + b"\n", b"dog a\ncat the\n\n"),
        max_len=40,
        spm=SubwordConfig(vocab_size=30),
    )
    with caplog.at_level(logging.WARNING):
        prepared = prepare_data(cfg)
    report = prepared.filter_report
    assert (report.total, report.empty, report.too_long, report.bad_ratio, report.kept) == (300, 2, 1, 1, 296)
    assert report.empty_examples[0].startswith(f"{tmp_path}/train.src:5")
    assert report.empty_examples[1].startswith(f"{tmp_path}/train.src:12")
    assert "skipped 2 empty line(s) in training data" in caplog.text
    assert {5, 12, 21, 31}.isdisjoint(prepared.train.line_numbers) and len(prepared.train.line_numbers) == 296
    assert prepared.valid.src_lines == valid_src, "valid keeps empty and long lines"
    assert len(prepared.valid.src_ids[2]) > 40


@pytest.mark.parametrize("train", [(b"", b""), (b"\n  \n\n", b"a\n\nb\n"), (b"x\n\n", b"  \ny\n")])
def test_training_files_without_a_full_pair_name_the_files_and_the_reason(tmp_path, train):
    """Empty or all-blank training data stops before SentencePiece, whose own message gives no reason."""
    cfg = custom_config(tmp_path, train, (b"a\n", b"b\n"), spm=SubwordConfig(vocab_size=30))
    with pytest.raises(LstmMtError) as error:
        prepare_data(cfg)
    message = str(error.value)
    assert f"{tmp_path}/train.src" in message and "no training pair with text on both sides" in message
    assert "SentencePiece training failed" not in message


@pytest.mark.parametrize("problem", ["invalid UTF-8", "line count", "missing file"])
def test_bad_input_through_the_cli_is_one_error_line_without_traceback(tmp_path, problem):
    """What a user sees from `lstm-mt train` on bad data: one line naming the file, exit 2."""
    import subprocess
    import sys

    good_src, good_tgt = tmp_path / "train.de", tmp_path / "train.en"
    good_src.write_text("ein Hund\nzwei Katzen\n", encoding="utf-8")
    good_tgt.write_text("a dog\ntwo cats\n", encoding="utf-8")
    bad = tmp_path / "bad.de"
    if problem == "invalid UTF-8":
        bad.write_bytes(b"ein Hund\nzwei \xff Katzen\n")
        expected = f"{bad}:2: invalid UTF-8"
    elif problem == "line count":
        bad.write_text("ein Hund\n", encoding="utf-8")
        expected = str(bad)
    else:
        expected = str(bad)
    overrides = [
        "data=custom",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"data.custom.train.src={bad}",
        f"data.custom.train.tgt={good_tgt}",
        f"data.custom.valid.src={good_src}",
        f"data.custom.valid.tgt={good_tgt}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "train.quiet=true",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "lstm_mt", "train", *overrides], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and expected in error_lines[0], result.stderr
    assert "Traceback" not in result.stderr
