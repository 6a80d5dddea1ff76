"""Tests for lstm_mt.data.splits on custom corpora: the splits offered, and loading each by name."""

from __future__ import annotations

import re

import pytest
from conftest import custom_config

from lstm_mt.data import DataConfig, FilePair, available_splits, load_split, resolve_test_splits
from lstm_mt.errors import LstmMtError

pytestmark = pytest.mark.usefixtures("offline")  # no test here may use the network or $LSTM_MT_DATA_MIRROR


def test_custom_corpus_plain_gz_and_several_test_sets(tmp_path):
    cfg = custom_config(tmp_path, (b"a\nb\n", b"A\nB\n"), (b"c\n", b"C\n"))
    assert available_splits(cfg) == ["train", "valid", "t1", "t2"]
    assert resolve_test_splits(cfg) == ["t1", "t2"]
    assert load_split(cfg, "train").tgt_lines == ["A", "B"]
    assert load_split(cfg, "valid").src_lines == ["c"]
    assert load_split(cfg, "t2").tgt_lines == ["r", "s"]
    with pytest.raises(LstmMtError, match="custom data has no split 't3'"):
        load_split(cfg, "t3")


def test_custom_paths_must_be_set_and_exist(tmp_path):
    cfg = DataConfig(name="custom")
    with pytest.raises(LstmMtError, match=r"^data\.custom\.train\.src is not set"):
        load_split(cfg, "train")
    cfg.custom.train = FilePair(str(tmp_path / "train.de"), str(tmp_path / "train.en"))
    with pytest.raises(LstmMtError, match=f"^{re.escape(str(tmp_path))}/train\\.de: no such file$"):
        load_split(cfg, "train")
