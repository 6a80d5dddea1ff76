"""Tests for lstm_mt.data.corpus: the two sides of a parallel corpus must have as many lines."""

from __future__ import annotations

import pytest
from conftest import fake_multi30k

from lstm_mt.data import DataConfig, load_split
from lstm_mt.errors import LstmMtError

pytestmark = pytest.mark.usefixtures("offline")  # no test here may use the network or $LSTM_MT_DATA_MIRROR


def test_line_count_mismatch_names_both_files(tmp_path):
    mirror = fake_multi30k(tmp_path, {"val.de": b"a\nb\nc\n", "val.en": b"a\nb\n"})
    raw = mirror / "multi30k" / "raw"
    with pytest.raises(LstmMtError) as err:
        load_split(DataConfig(src="de", tgt="en", mirror=str(mirror)), "val")
    assert str(err.value).startswith(f"{raw}/val.de.gz has 3 lines but {raw}/val.en.gz has 2;")
