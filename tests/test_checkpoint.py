"""Checkpoints you can trust: whatever bytes a file holds, loading it (and averaging it) either gives
a usable model or one `LstmMtError`, never another exception and never code run from the file.

A small self-contained checkpoint (SentencePiece trained on a synthetic corpus, a model of a few
thousand weights) is mutated, truncated, type-damaged and laced with pickled calls by Hypothesis.

The last section tests a training run's checkpoint files: step files, rotation, last/best links
and the resume lookup.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lstm_mt.average import average_checkpoints
from lstm_mt.checkpoint import (
    BEST,
    CHECKPOINT_DIR,
    CHECKSUM_KEY,
    LAST,
    best_checkpoint,
    checkpoint_path,
    content_digest,
    find_resume_checkpoint,
    link_or_copy,
    load_checkpoint,
    save_checkpoint,
    save_step_checkpoint,
    step_checkpoints,
)
from lstm_mt.errors import LstmMtError
from lstm_mt.model import ModelConfig, build_model
from lstm_mt.tokenizer import SubwordConfig, train_or_load_tokenizer
from lstm_mt.translate import Translator

SMALL = ModelConfig(emb_size=8, encoder_hidden=8, decoder_hidden=8, attentional_size=8, attention_hidden=8, dropout=0.0)
RUN = {"code": False}  # set by `_ran_code` if an unpickler ever calls it
FAST = settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)


def _ran_code() -> None:
    RUN["code"] = True


class _Payload:
    """Pickles as a call of `_ran_code`: what a hostile checkpoint would carry."""

    def __reduce__(self):
        return (_ran_code, ())


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("checkpoint")
    words = ["haus", "katze", "hund", "baum", "auto", "maus", "licht", "wasser"]
    sentences = [" ".join(words[(i * k) % len(words)] for k in range(1, 6)) for i in range(200)]
    tokenizer = train_or_load_tokenizer(SubwordConfig(vocab_size=24), sentences, sentences, folder / "spm")
    torch.manual_seed(0)
    model = build_model(SMALL, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
    payload = {
        "model": model.state_dict(),
        "config": {"model": dataclasses.asdict(SMALL), "data": {}, "train": {}},
        "tokenizer": tokenizer.to_bytes_dict(),
        "vocab_sizes": {"src": tokenizer.src_vocab_size, "tgt": tokenizer.tgt_vocab_size},
        "step": 7,
        "epoch": 1,
    }
    return save_checkpoint(payload, folder / "good.pt")


def _use(path: Path, good: Path) -> None:
    """Load ``path`` as every command does: a translator, and an average with a good checkpoint."""
    Translator.from_checkpoint(path)
    average_checkpoints([good, path])


def _outcome(path: Path, good: Path) -> str:
    try:
        _use(path, good)
    except LstmMtError as error:
        assert "\n" not in str(error) and str(path) in str(error), str(error)
        return "refused"
    return "loaded"


def _tensor_data_offsets(data: bytes) -> list[tuple[int, int]]:
    """(start, size) of every tensor's bytes inside a torch.save zip archive."""
    found = []
    for info in zipfile.ZipFile(io.BytesIO(data)).infolist():
        if "/data/" in info.filename and info.file_size:
            name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
            found.append((info.header_offset + 30 + name_length + extra_length, info.file_size))
    return found


# --- known cases ----------------------------------------------------------------------------------


def test_good_checkpoint_loads_translates_and_verifies_its_checksum(good):
    payload = load_checkpoint(good)
    assert payload[CHECKSUM_KEY] == content_digest(payload)
    assert Translator.from_checkpoint(good).translate(["haus katze"], beam_size=2)


def test_one_flipped_byte_inside_any_tensor_is_refused(good, tmp_path):
    data = good.read_bytes()
    offsets = _tensor_data_offsets(data)
    assert len(offsets) >= 10
    for start, size in offsets:
        damaged = bytearray(data)
        damaged[start + size // 2] ^= 0x01
        path = tmp_path / "flipped.pt"
        path.write_bytes(bytes(damaged))
        with pytest.raises(LstmMtError, match="does not match its SHA-256 checksum"):
            load_checkpoint(path)


def test_non_finite_weights_are_refused_even_with_a_valid_checksum(good, tmp_path):
    payload = load_checkpoint(good)
    for bad in (float("nan"), float("inf")):
        model = {name: torch.full_like(t, bad) if t.is_floating_point() else t for name, t in payload["model"].items()}
        path = save_checkpoint({**payload, "model": model}, tmp_path / "nan.pt")
        with pytest.raises(LstmMtError, match="NaN or infinite"):
            load_checkpoint(path)


def test_checkpoint_without_checksum_loads_with_a_warning(good, tmp_path, caplog):
    payload = load_checkpoint(good)
    del payload[CHECKSUM_KEY]
    torch.save(payload, tmp_path / "old.pt")
    with caplog.at_level("WARNING"):
        Translator.from_checkpoint(tmp_path / "old.pt")
    assert "no content checksum" in caplog.text


def test_code_carrying_checkpoint_is_refused_without_hinting_at_the_unsafe_load(good, tmp_path):
    torch.save({**load_checkpoint(good), "extra": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(LstmMtError) as error:
        load_checkpoint(tmp_path / "evil.pt")
    message = str(error.value)
    assert "not plain data" in message and "weights_only" not in message and "likely succeed" not in message
    assert not RUN["code"]


@pytest.mark.parametrize(
    "key, value, named",
    [
        ("config", "a string", "field config"),
        ("model", torch.zeros(3), "field model"),
        ("model", {"w": "not a tensor"}, "field model"),
        ("tokenizer", {"joint": "text"}, "field tokenizer"),
        ("vocab_sizes", {"src": "8"}, "field vocab_sizes"),
        ("step", -1, "field step"),
    ],
)
def test_fields_of_the_wrong_type_are_one_line_errors_in_translate_and_average(good, tmp_path, key, value, named):
    path = save_checkpoint({**load_checkpoint(good), key: value}, tmp_path / "typed.pt")
    for use in (Translator.from_checkpoint, lambda p: average_checkpoints([good, p])):
        with pytest.raises(LstmMtError, match=named):
            use(path)


def test_average_refuses_other_shapes_and_vocabularies(good, tmp_path):
    payload = load_checkpoint(good)
    wider = build_model(dataclasses.replace(SMALL, encoder_hidden=12), 24, 24).state_dict()
    save_checkpoint({**payload, "model": wider}, tmp_path / "wider.pt")
    with pytest.raises(LstmMtError, match="shape|model weights differ"):
        average_checkpoints([good, tmp_path / "wider.pt"])
    save_checkpoint({**payload, "vocab_sizes": {"src": 25, "tgt": 24}}, tmp_path / "vocab.pt")
    with pytest.raises(LstmMtError, match="vocab_sizes differs"):
        average_checkpoints([good, tmp_path / "vocab.pt"])


# --- properties ------------------------------------------------------------------------------------


@settings(FAST, max_examples=1500)
@given(data=st.binary(max_size=2048))
def test_random_bytes_are_refused(good, tmp_path_factory, data):
    path = tmp_path_factory.getbasetemp() / "random.pt"
    path.write_bytes(data)
    assert _outcome(path, good) == "refused"


@settings(FAST, max_examples=1000)
@given(st.data())
def test_mutated_and_truncated_files_load_a_valid_model_or_are_refused(good, tmp_path_factory, data):
    original = good.read_bytes()
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        position = data.draw(st.integers(0, len(mutated) - 1), label="position")
        mutated[position] = data.draw(st.integers(0, 255), label="byte")
    if data.draw(st.booleans(), label="truncate"):
        mutated = mutated[: data.draw(st.integers(0, len(mutated) - 1), label="length")]
    path = tmp_path_factory.getbasetemp() / "mutated.pt"
    path.write_bytes(bytes(mutated))
    outcome = _outcome(path, good)
    if outcome == "loaded":  # only a change the content never sees (zip metadata) may load
        assert load_checkpoint(path)[CHECKSUM_KEY] == load_checkpoint(good)[CHECKSUM_KEY]


PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
) | st.builds(lambda n: torch.zeros(n), st.integers(0, 3))


@settings(FAST, max_examples=60)
@given(
    key=st.sampled_from(["model", "config", "tokenizer", "vocab_sizes", "step", "epoch", "format"]),
    inner=st.booleans(),
    value=PLAIN,
    with_checksum=st.booleans(),
    hostile=st.booleans(),
)
def test_type_damaged_and_hostile_checkpoints_never_escape_as_raw_errors_or_run_code(
    good, tmp_path_factory, key, inner, value, with_checksum, hostile
):
    payload = load_checkpoint(good)
    if inner and isinstance(payload.get(key), dict) and payload[key]:
        payload[key] = {**payload[key], next(iter(payload[key])): value}  # damage one entry inside
    else:
        payload[key] = value
    if hostile:
        payload["config"] = {**payload["config"], "train": {"x": _Payload()}} if inner else _Payload()
    path = tmp_path_factory.getbasetemp() / "damaged.pt"
    if with_checksum and not hostile:
        save_checkpoint(payload, path)
    else:
        payload.pop(CHECKSUM_KEY, None)
        torch.save(payload, path)
    outcome = _outcome(path, good)
    assert not RUN["code"]
    assert outcome == "refused" or not hostile


# --- a training run's checkpoint files -------------------------------------------------------


def step_payload(step: int) -> dict:
    return {
        "model": {"w": torch.full((2,), float(step))},
        "config": {},
        "tokenizer": {"joint": b"x"},
        "vocab_sizes": {"src": 5, "tgt": 5},
        "step": step,
    }


def saved_step(path: Path) -> int:
    return int(load_checkpoint(path)["step"])


def test_step_files_rotate_and_last_and_best_follow(tmp_path):
    for step in (1, 2, 3, 4, 10):
        save_step_checkpoint(step_payload(step), tmp_path, step, keep_last=2, best=step == 2)
    folder = tmp_path / CHECKPOINT_DIR
    assert step_checkpoints(folder) == [checkpoint_path(tmp_path, 4), checkpoint_path(tmp_path, 10)], "numeric order"
    assert sorted(p.name for p in folder.iterdir()) == [BEST, LAST, "step_10.pt", "step_4.pt"]
    assert saved_step(folder / LAST) == 10 and saved_step(folder / BEST) == 2, "best.pt outlives its step file"
    assert os.path.samefile(folder / LAST, folder / "step_10.pt")
    assert best_checkpoint(tmp_path) == folder / BEST and best_checkpoint(tmp_path / "elsewhere") is None


def test_resume_lookup(tmp_path, caplog):
    assert find_resume_checkpoint(None, tmp_path) is None
    assert find_resume_checkpoint("some/file.pt", tmp_path) == Path("some/file.pt")
    with caplog.at_level("INFO"):
        assert find_resume_checkpoint("auto", tmp_path) is None
    assert "starting from scratch" in caplog.text
    folder = tmp_path / CHECKPOINT_DIR
    folder.mkdir()
    save_checkpoint(step_payload(3), folder / LAST)
    assert find_resume_checkpoint("auto", tmp_path) == folder / LAST
    for step in (9, 10):
        save_checkpoint(step_payload(step), checkpoint_path(tmp_path, step))
    assert find_resume_checkpoint("auto", tmp_path) == checkpoint_path(tmp_path, 10), "the newest step, not last.pt"


def test_link_or_copy_copies_where_links_are_impossible(tmp_path, monkeypatch):
    source = save_checkpoint(step_payload(5), tmp_path / "step_5.pt")
    (tmp_path / "last.pt").write_bytes(b"an older checkpoint")

    def no_links(*args):
        raise OSError("links not supported")

    monkeypatch.setattr(os, "link", no_links)
    link_or_copy(source, tmp_path / "last.pt")
    assert (tmp_path / "last.pt").read_bytes() == source.read_bytes()
    assert not os.path.samefile(source, tmp_path / "last.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "step_5.pt"]
