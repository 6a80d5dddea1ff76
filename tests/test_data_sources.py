"""Tests for lstm_mt.data.sources: the mirror folder (configured, from the environment, incomplete, missing) and
checksummed downloads, faked (no test uses the network)."""

from __future__ import annotations

import gzip
import logging
import re
import urllib.error
from pathlib import Path

import pytest
from conftest import MIRROR, fake_multi30k, needs_mirror, write_gz

from lstm_mt.data import MIRROR_ENV, DataConfig, load_split, resolve_test_splits, sources
from lstm_mt.errors import LstmMtError

pytestmark = pytest.mark.usefixtures("offline")  # no test here may use the network or $LSTM_MT_DATA_MIRROR


RAW_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/"


def serve_from(mirror: Path, calls: list[str]):
    """A stand-in for sources.fetch_url that answers official URLs from a mirror folder."""

    def fetch(url: str, out) -> None:
        calls.append(url)
        out.write((mirror / "multi30k" / url.split("/data/task1/", 1)[1]).read_bytes())

    return fetch


@needs_mirror
def test_download_verifies_checksum_writes_atomically_and_caches(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(sources, "fetch_url", serve_from(MIRROR, calls))
    cfg = DataConfig(src="de", tgt="en", cache_dir=str(tmp_path / "cache"))
    assert len(load_split(cfg, "val")) == 1014
    assert calls == [RAW_URL + "val.de.gz", RAW_URL + "val.en.gz"]
    raw_dir = tmp_path / "cache" / "multi30k" / "raw"
    assert sorted(p.name for p in raw_dir.iterdir()) == ["val.de.gz", "val.en.gz"]  # no temp files left
    assert len(load_split(cfg, "val")) == 1014
    assert len(calls) == 2, "cached files must not be downloaded again"


def test_checksum_mismatch_is_an_error_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "fetch_url", lambda url, out: out.write(b"an error page"))
    cfg = DataConfig(src="de", tgt="en", cache_dir=str(tmp_path))
    with pytest.raises(LstmMtError) as err:
        load_split(cfg, "val")
    message = str(err.value)
    assert message.startswith(RAW_URL + "val.de.gz: sha256 mismatch (expected f0cba2f9")
    assert "\n" not in message
    assert not any(p.is_file() for p in tmp_path.rglob("*")), "nothing may be written on a mismatch"


def test_changed_cached_file_is_reported(tmp_path):
    cached = write_gz(tmp_path / "multi30k" / "raw" / "val.de.gz", b"edited\n")
    with pytest.raises(LstmMtError, match=f"^{re.escape(str(cached))}: sha256 mismatch .*delete the file"):
        load_split(DataConfig(src="de", tgt="en", cache_dir=str(tmp_path)), "val")


def test_split_without_known_checksum_downloads_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(sources, "fetch_url", lambda url, out: out.write(gzip.compress(b"a\nb\nc\n")))
    cfg = DataConfig(src="fr", tgt="en", cache_dir=str(tmp_path))
    with caplog.at_level(logging.WARNING):
        corpus = load_split(cfg, "test_2017_mscoco")
    assert corpus.src_lines == ["a", "b", "c"]
    assert f"{RAW_URL}test_2017_mscoco.fr.gz: no known sha256" in caplog.text


def test_download_failure_is_one_clear_line(tmp_path, monkeypatch):
    def offline(url, out):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(sources, "fetch_url", offline)
    with pytest.raises(LstmMtError, match=r"val\.de\.gz: download failed \(Temporary failure.*data\.mirror"):
        load_split(DataConfig(src="de", tgt="en", cache_dir=str(tmp_path)), "val")


def test_mirror_without_the_needed_files(tmp_path):
    mirror = fake_multi30k(tmp_path / "mirror", {"val.de": b"x\n", "val.en": b"y\n"})
    cfg = DataConfig(src="de", tgt="en", mirror=str(mirror))
    with pytest.raises(LstmMtError) as err:
        load_split(cfg, "train")
    assert str(err.value) == (
        f"{mirror}/multi30k/raw/train.de.gz: not found; the data mirror {mirror} lacks multi30k/raw/train.de.gz"
    )
    assert resolve_test_splits(cfg) == [], "test splits missing from the mirror are not offered"


def test_missing_mirror_folder(tmp_path):
    with pytest.raises(LstmMtError, match=f"^{re.escape(str(tmp_path))}/nowhere: data mirror folder does not exist"):
        load_split(DataConfig(mirror=str(tmp_path / "nowhere")), "val")


def test_environment_mirror_is_used_and_config_wins(tmp_path, monkeypatch):
    mirror = fake_multi30k(tmp_path, {"val.de": b"eins\nzwei\n", "val.en": b"one\ntwo\n"})
    monkeypatch.setenv(MIRROR_ENV, str(mirror))
    assert load_split(DataConfig(src="de", tgt="en"), "val").tgt_lines == ["one", "two"]
    if (MIRROR / "multi30k").is_dir():
        assert len(load_split(DataConfig(src="de", tgt="en", mirror=str(MIRROR)), "val")) == 1014
