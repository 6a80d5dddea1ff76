"""Tests for lstm_mt.data.tatoeba: the seeded, sentence-disjoint split on fake and real exports, bad lines, the
official zip download (faked)."""

from __future__ import annotations

import io
import logging
import re
import zipfile
from pathlib import Path

import pytest
from conftest import MIRROR, needs_mirror, write_gz

from lstm_mt.data import DataConfig, TatoebaConfig, load_split, sources, tatoeba, textio
from lstm_mt.errors import LstmMtError

pytestmark = pytest.mark.usefixtures("offline")  # no test here may use the network or $LSTM_MT_DATA_MIRROR


def tatoeba_lines(n: int) -> list[str]:
    """Pairs where English and German sentences repeat, linking pairs into groups."""
    lines = []
    for i in range(n):
        english, german = f"Sentence {i // 3}.", f"Satz {i // 2}."
        attribution = "\tCC-BY 2.0 (France) Attribution: tatoeba.org" if i % 5 == 0 else ""
        lines.append(f"{english}\t{german}{attribution}")
    return lines


def tatoeba_mirror(root: Path, lines: list[str]) -> Path:
    write_gz(root / "tatoeba-manythings" / "deu-eng" / "deu.txt.gz", ("\n".join(lines) + "\n").encode())
    return root


def test_tatoeba_split_is_disjoint_deterministic_and_direction_independent(tmp_path, caplog):
    lines = tatoeba_lines(3000)
    lines.insert(100, "")
    mirror = tatoeba_mirror(tmp_path, lines)
    split_cfg = TatoebaConfig(valid_fraction=0.1, test_fraction=0.1, seed=7)
    de_en = DataConfig(name="tatoeba", src="de", tgt="en", mirror=str(mirror), tatoeba=split_cfg)
    en_de = DataConfig(name="tatoeba", src="en", tgt="de", mirror=str(mirror), tatoeba=split_cfg)
    with caplog.at_level(logging.WARNING):
        parts = {s: load_split(de_en, s) for s in ("train", "val", "test")}
    assert "deu.txt.gz: skipped 1 empty line(s), first at line 101" in caplog.text
    assert sum(len(c) for c in parts.values()) == 3000
    assert 150 < len(parts["val"]) < 450 and 150 < len(parts["test"]) < 450
    for side in ("src_lines", "tgt_lines"):
        seen = [set(getattr(c, side)) for c in parts.values()]
        assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2]), side
    val = parts["val"]
    assert val.src_lines[0].startswith("Satz") and val.tgt_lines[0].startswith("Sentence")
    assert lines[val.line_numbers[0] - 1].startswith(f"{val.tgt_lines[0]}\t{val.src_lines[0]}")
    reversed_val = load_split(en_de, "val")
    assert reversed_val.line_numbers == val.line_numbers and reversed_val.src_lines == val.tgt_lines
    assert load_split(de_en, "val").line_numbers == val.line_numbers
    de_en.tatoeba.seed = 8
    assert load_split(de_en, "val").line_numbers != val.line_numbers


def test_tatoeba_bad_lines_and_pairs(tmp_path):
    lines = tatoeba_lines(10)
    lines[6] = "only one field"
    mirror = tatoeba_mirror(tmp_path, lines)
    cfg = DataConfig(name="tatoeba", src="de", tgt="en", mirror=str(mirror))
    path = mirror / "tatoeba-manythings" / "deu-eng" / "deu.txt.gz"
    with pytest.raises(LstmMtError, match=f"^{re.escape(str(path))}:7: expected English<TAB>translation"):
        load_split(cfg, "train")
    with pytest.raises(LstmMtError, match="tatoeba has no pair en-cs"):
        load_split(DataConfig(name="tatoeba", src="en", tgt="cs", mirror=str(mirror)), "train")
    with pytest.raises(LstmMtError, match="lacks tatoeba-manythings/fra-eng/fra.txt.gz"):
        load_split(DataConfig(name="tatoeba", src="fr", tgt="en", mirror=str(mirror)), "train")


def test_tatoeba_download_reads_the_official_zip(tmp_path, monkeypatch, caplog):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("deu.txt", "\n".join(tatoeba_lines(50)) + "\n")
        zf.writestr("_about.txt", "about")
    calls = []

    def fetch(url, out):
        calls.append(url)
        out.write(archive.getvalue())

    monkeypatch.setattr(sources, "fetch_url", fetch)
    cfg = DataConfig(name="tatoeba", src="en", tgt="de", cache_dir=str(tmp_path))
    with caplog.at_level(logging.WARNING):
        total = sum(len(load_split(cfg, s)) for s in ("train", "val", "test"))
    assert total == 50
    assert calls == ["https://www.manythings.org/anki/deu-eng.zip"]
    assert "deu-eng.zip: no known sha256" in caplog.text


@needs_mirror
def test_real_tatoeba_split_has_sensible_sizes_and_no_shared_sentence():
    path = MIRROR / "tatoeba-manythings" / "deu-eng" / "deu.txt.gz"
    english, german, _ = tatoeba.parse_pairs(textio.read_lines(path), str(path))
    splits = tatoeba.assign_splits(english, german, TatoebaConfig())
    assert len(english) == 169813
    for name in ("val", "test"):
        assert 0.015 < splits.count(name) / len(splits) < 0.025, name
    for side in (english, german):
        owner: dict[str, str] = {}
        for sentence, split in zip(side, splits):
            assert owner.setdefault(sentence, split) == split, sentence
