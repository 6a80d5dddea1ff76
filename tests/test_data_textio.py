"""Tests for lstm_mt.data.textio: exact lines, and errors that name the file and line (bad UTF-8, missing, corrupt gzip)."""

from __future__ import annotations

import re

import pytest
from conftest import fake_multi30k

from lstm_mt.data import DataConfig, load_split, textio
from lstm_mt.errors import LstmMtError

pytestmark = pytest.mark.usefixtures("offline")  # no test here may use the network or $LSTM_MT_DATA_MIRROR


def test_invalid_utf8_names_file_and_line(tmp_path):
    mirror = fake_multi30k(tmp_path, {"val.de": b"gut\nauch gut\nkaputt \xff hier\n", "val.en": b"a\nb\nc\n"})
    with pytest.raises(LstmMtError) as err:
        load_split(DataConfig(src="de", tgt="en", mirror=str(mirror)), "val")
    expected = f"{mirror}/multi30k/raw/val.de.gz:3: invalid UTF-8 (byte 0xff at column 8)"
    assert str(err.value) == expected


def test_missing_and_corrupt_files(tmp_path):
    (tmp_path / "broken.gz").write_bytes(b"\x1f\x8b" + b"not really gzip")
    with pytest.raises(LstmMtError, match=f"^{re.escape(str(tmp_path))}/absent\\.de: no such file$"):
        textio.read_lines(tmp_path / "absent.de")
    with pytest.raises(LstmMtError, match=f"^{re.escape(str(tmp_path))}/broken\\.gz: corrupt gzip file"):
        textio.read_lines(tmp_path / "broken.gz")


def test_lines_split_only_on_newline(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("\ufeffone\r\ntwo\u2028still two\x0cand\r\n\nfour".encode())
    assert textio.read_lines(path) == ["one", "two\u2028still two\x0cand", "", "four"]
