"""Tests for lstm_mt.data.multi30k on the real mirror: published line counts, directions, test splits, checksums, tokenized references."""

from __future__ import annotations

import gzip
import hashlib

import pytest
from conftest import MIRROR, needs_mirror

from lstm_mt.data import (
    DataConfig,
    available_splits,
    load_split,
    load_tokenized_reference,
    multi30k,
    resolve_test_splits,
    sources,
)
from lstm_mt.errors import LstmMtError

pytestmark = pytest.mark.usefixtures("offline")  # no test here may use the network or $LSTM_MT_DATA_MIRROR


PUBLISHED = {"train": 29000, "val": 1014, "test_2016_flickr": 1000, "test_2017_flickr": 1000}


@needs_mirror
@pytest.mark.parametrize("src,tgt", [("en", "de"), ("en", "fr"), ("en", "cs")])
def test_multi30k_splits_have_published_line_counts(src, tgt):
    cfg = DataConfig(src=src, tgt=tgt, mirror=str(MIRROR))
    expected = [s for s in PUBLISHED if not (tgt == "cs" and s == "test_2017_flickr")]
    assert available_splits(cfg) == expected
    for split in expected:
        corpus = load_split(cfg, split)
        assert len(corpus.src_lines) == len(corpus.tgt_lines) == PUBLISHED[split], split
        assert corpus.src_path.endswith(f"{split}.{src}.gz") and corpus.tgt_path.endswith(f"{split}.{tgt}.gz")


@needs_mirror
def test_direction_picks_the_sides():
    de_en = load_split(DataConfig(src="de", tgt="en", mirror=str(MIRROR)), "val")
    en_de = load_split(DataConfig(src="en", tgt="de", mirror=str(MIRROR)), "val")
    assert de_en.src_lines[0] == "Eine Gruppe von Männern lädt Baumwolle auf einen Lastwagen"
    assert de_en.tgt_lines[0] == "A group of men are loading cotton onto a truck"
    assert en_de.src_lines == de_en.tgt_lines and en_de.tgt_lines == de_en.src_lines


@needs_mirror
def test_resolve_test_splits_come_from_the_source_and_are_checked():
    with_mirror = DataConfig(src="de", tgt="en", mirror=str(MIRROR))
    assert resolve_test_splits(with_mirror) == ["test_2016_flickr", "test_2017_flickr"]
    online = DataConfig(src="de", tgt="en")
    assert resolve_test_splits(online) == [
        "test_2016_flickr",
        "test_2017_flickr",
        "test_2017_mscoco",
        "test_2018_flickr",
    ]
    assert resolve_test_splits(DataConfig(src="cs", tgt="en")) == ["test_2016_flickr", "test_2018_flickr"]
    with_mirror.test_splits = ["test_2018_flickr"]  # published, but not in this mirror
    with pytest.raises(LstmMtError, match="data.test_splits: 'test_2018_flickr' is not available"):
        resolve_test_splits(with_mirror)


@needs_mirror
def test_known_checksums_match_the_mirror_files():
    raw = sorted((MIRROR / "multi30k" / "raw").glob("*.gz"))
    tok = sorted((MIRROR / "multi30k" / "tok").glob("*.gz"))
    assert len(raw) == 15 and len(tok) == 15
    for path in raw:
        assert sources.file_sha256(path) == multi30k.SHA256[f"raw/{path.name}"], path
    for path in tok:  # upstream stores these uncompressed; the mirror gzipped them
        content = gzip.decompress(path.read_bytes())
        assert hashlib.sha256(content).hexdigest() == multi30k.SHA256[f"tok/{path.name[:-3]}"], path


@needs_mirror
def test_tokenized_references_load():
    cfg = DataConfig(src="de", tgt="en", mirror=str(MIRROR))
    refs = load_tokenized_reference(cfg, "test_2016_flickr")
    assert len(refs) == 1000
    assert refs[0] == "a man in an orange hat starring at something ."
    assert all(r == r.lower() for r in refs)
    assert len(load_tokenized_reference(cfg, "val", lang="de")) == 1014
