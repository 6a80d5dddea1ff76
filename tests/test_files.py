"""Tests for lstm_mt.files: atomic writes, and that every writer gives its files a plain open()'s mode."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from lstm_mt.checkpoint import save_checkpoint
from lstm_mt.data import sources
from lstm_mt.errors import LstmMtError
from lstm_mt.files import atomic_path, atomic_write, write_bytes_atomic, write_text_atomic
from lstm_mt.lstm import native
from lstm_mt.tokenizer import SubwordConfig, train_or_load_tokenizer
from lstm_mt.translate import write_output

C_COMPILER = next((name for name in ("cc", "gcc", "clang") if shutil.which(name)), None)


@pytest.fixture(params=[0o022, 0o027, 0o077])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run the test under this umask (restored afterwards)."""
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def plain_open_mode(folder: Path) -> int:
    """The permission bits ``open(path, "w")`` gives a new file here and now."""
    probe = folder / "plain-open-probe"
    with open(probe, "w"):
        pass
    mode = probe.stat().st_mode & 0o777
    probe.unlink()
    return mode


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_replaces_the_file_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "deep" / "folder" / "out.bin"
    assert write_bytes_atomic(target, b"old\n") == target
    with pytest.raises(RuntimeError, match="in the middle"), atomic_write(target) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("failed in the middle")
    assert target.read_bytes() == b"old\n", "a failed write leaves the old file"
    assert leftovers(target.parent) == []
    write_text_atomic(target, "neu: Grüße\r\nzwei\n")
    assert target.read_bytes() == "neu: Grüße\r\nzwei\n".encode(), "UTF-8, line ends as given"
    assert leftovers(target.parent) == []


def test_atomic_write_works_in_a_hidden_file_beside_the_target(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_write(target) as handle:
        handle.write(b"x")
        handle.flush()
        temporary = Path(handle.name)
        assert temporary.parent == tmp_path and temporary.name.startswith(".out.txt.")
        assert not target.exists(), "the target appears only at the end"
    assert not temporary.exists() and target.read_bytes() == b"x"


def test_unwritable_folder_is_one_line_naming_the_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(LstmMtError, match=f"^{blocker}/out.txt: cannot write"):
        write_text_atomic(blocker / "out.txt", "x")


def test_atomic_write_gives_new_files_the_mode_of_a_plain_open(tmp_path, umask):
    expected = plain_open_mode(tmp_path)
    assert expected == 0o666 & ~umask
    assert mode(write_text_atomic(tmp_path / "a.txt", "a")) == expected


def test_checkpoints_translations_and_tokenizer_models_get_a_plain_open_mode(tmp_path, umask, toy_pairs):
    expected = plain_open_mode(tmp_path)
    checkpoint = save_checkpoint({"model": {"w": torch.zeros(2)}}, tmp_path / "ckpt" / "step_1.pt")
    output = tmp_path / "out" / "test.en"
    write_output(["a line", "another"], str(output))
    train_or_load_tokenizer(SubwordConfig(vocab_size=30), *toy_pairs, tmp_path / "cache")
    models = sorted((tmp_path / "cache" / "spm").glob("*/*"))
    assert [p.name for p in models] == ["joint.model", "settings.json"]
    assert output.read_text() == "a line\nanother\n"
    for path in (checkpoint, output, *models):
        assert mode(path) == expected, path


def test_downloads_get_a_plain_open_mode(tmp_path, umask, monkeypatch):
    body = b"line one\nline two\n"
    monkeypatch.setattr(sources, "fetch_url", lambda url, out: out.write(body))
    dest = sources.download("https://example.org/x.txt", tmp_path / "x.txt", hashlib.sha256(body).hexdigest())
    assert dest.read_bytes() == body
    assert mode(dest) == plain_open_mode(tmp_path)
    assert leftovers(tmp_path) == []


def test_atomic_path_renames_what_a_program_wrote_and_removes_it_on_failure(tmp_path):
    target = tmp_path / "lib.so"
    with pytest.raises(RuntimeError, match="build failed"), atomic_path(target) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("build failed")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_path(target) as temporary:
        assert temporary.parent == tmp_path and temporary.name.startswith(".lib.so.") and temporary.exists()
        assert mode(temporary) == plain_open_mode(tmp_path), "a fresh file with open()'s mode, not mkstemp's 0o600"
        temporary.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and [p.name for p in tmp_path.iterdir()] == ["lib.so"]


@pytest.mark.skipif(C_COMPILER is None, reason="no C compiler")
def test_compiled_kernel_gets_the_mode_of_a_plain_compiler_output(tmp_path, umask, monkeypatch):
    source = tmp_path / "probe.c"
    source.write_text("int probe(void) { return 0; }\n")
    reference = tmp_path / "probe.so"
    subprocess.run([C_COMPILER, "-shared", "-fPIC", str(source), "-o", str(reference)], check=True)
    monkeypatch.setenv("LSTM_MT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(C_COMPILER))
    monkeypatch.delenv("LSTM_MT_NATIVE", raising=False)
    native._library.cache_clear()
    try:
        assert native.available()
    finally:
        native._library.cache_clear()  # the next user loads the real cache's kernel again
    built = list((tmp_path / "cache" / "kernels").iterdir())
    assert len(built) == 1 and mode(built[0]) == mode(reference) == 0o777 & ~umask
