"""Tests for lstm_mt.data: real Multi30k / Tatoeba files from the shared mirror, tiny fake
mirrors and a faked download for every kind of bad input. No test uses the network."""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import re
import time
import urllib.error
import zipfile
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from lstm_mt.config import TrainJobConfig, register_configs
from lstm_mt.configuring import typed_config
from lstm_mt.data import (
    MIRROR_ENV,
    CustomConfig,
    DataConfig,
    FilePair,
    InferenceBatchSampler,
    TatoebaConfig,
    TokenBatchSampler,
    available_splits,
    collate,
    collate_source,
    load_split,
    load_tokenized_reference,
    multi30k,
    prepare_data,
    resolve_test_splits,
    sources,
    tatoeba,
    textio,
)
from lstm_mt.errors import LstmMtError
from lstm_mt.hydra_app import CONFIG_DIR
from lstm_mt.tokenizer import SubwordConfig

MIRROR = Path(os.environ.get(MIRROR_ENV) or Path(__file__).resolve().parents[2] / "shared" / "data")
needs_mirror = pytest.mark.skipif(not (MIRROR / "multi30k" / "raw").is_dir(), reason=f"no data mirror at {MIRROR}")
PUBLISHED = {"train": 29000, "val": 1014, "test_2016_flickr": 1000, "test_2017_flickr": 1000}
RAW_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Every test picks its mirror explicitly, and any real download attempt fails the test."""
    monkeypatch.delenv(MIRROR_ENV, raising=False)

    def no_network(url, out):
        raise AssertionError(f"test tried to download {url}")

    monkeypatch.setattr(sources, "fetch_url", no_network)


def write_gz(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data))
    return path


def fake_multi30k(root: Path, files: dict[str, bytes]) -> Path:
    """A mirror folder holding only ``files`` (name like 'train.de' -> content)."""
    for name, data in files.items():
        write_gz(root / "multi30k" / "raw" / f"{name}.gz", data)
    return root


# --- Multi30k from the real mirror ------------------------------------------------------------


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


# --- downloads (faked) -------------------------------------------------------------------------


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


# --- bad input in mirrors and files ------------------------------------------------------------


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


def test_line_count_mismatch_names_both_files(tmp_path):
    mirror = fake_multi30k(tmp_path, {"val.de": b"a\nb\nc\n", "val.en": b"a\nb\n"})
    raw = mirror / "multi30k" / "raw"
    with pytest.raises(LstmMtError) as err:
        load_split(DataConfig(src="de", tgt="en", mirror=str(mirror)), "val")
    assert str(err.value).startswith(f"{raw}/val.de.gz has 3 lines but {raw}/val.en.gz has 2;")


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


# --- custom corpora ----------------------------------------------------------------------------


def custom_config(tmp_path: Path, train: tuple[bytes, bytes], valid: tuple[bytes, bytes], **kwargs) -> DataConfig:
    def pair(name: str, texts: tuple[bytes, bytes], gz: bool) -> FilePair:
        paths = [tmp_path / f"{name}.{side}{'.gz' if gz else ''}" for side in ("src", "tgt")]
        for path, text in zip(paths, texts):
            path.write_bytes(gzip.compress(text) if gz else text)
        return FilePair(str(paths[0]), str(paths[1]))

    custom = CustomConfig(
        train=pair("train", train, gz=False),
        valid=pair("valid", valid, gz=True),
        test={"t1": pair("t1", (b"x\n", b"y\n"), gz=False), "t2": pair("t2", (b"p\nq\n", b"r\ns\n"), gz=True)},
    )
    return DataConfig(
        name="custom",
        src="src",
        tgt="tgt",
        valid_split="valid",
        cache_dir=str(tmp_path / "cache"),
        custom=custom,
        **kwargs,
    )


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


def compose_custom(*overrides: str) -> DataConfig:
    """``data`` as `lstm-mt train data=custom <overrides>` composes and types it."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["data=custom", *overrides])
    return typed_config(TrainJobConfig, cfg, "config").data


@pytest.mark.parametrize("plus", ["", "+", "++"])
def test_custom_test_sets_are_named_on_the_command_line_as_documented(plus):
    data = compose_custom(
        f"{plus}data.custom.test.news.src=news.de",
        f"{plus}data.custom.test.news.tgt=news.en",
        f"{plus}data.custom.test.web={{src: web.de, tgt: web.en}}",
    )
    assert data.custom.test == {"news": FilePair("news.de", "news.en"), "web": FilePair("web.de", "web.en")}
    assert resolve_test_splits(data) == ["news", "web"]


def test_custom_test_set_with_a_wrong_key_is_one_line_naming_it():
    with pytest.raises(
        LstmMtError, match=r"^data\.custom\.test\.news: a test set has a src and a tgt file \(unknown key\(s\) scr\)$"
    ):
        compose_custom("data.custom.test.news.scr=news.de")


# --- Tatoeba -----------------------------------------------------------------------------------


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


# --- batching ----------------------------------------------------------------------------------


def test_collate_layout():
    batch = collate([[5, 6], [7]], [[8], [9, 10, 11]], [4, 2])
    assert batch.src.tolist() == [[5, 6, 3], [7, 3, 0]]
    assert batch.src_lengths.tolist() == [3, 2]
    assert batch.tgt_in.tolist() == [[2, 8, 0, 0], [2, 9, 10, 11]]
    assert batch.tgt_out.tolist() == [[8, 3, 0, 0], [9, 10, 11, 3]]
    assert batch.indices == [4, 2] and batch.num_tgt_tokens == 6
    moved = batch.to("meta")
    assert moved.src.device.type == "meta" and moved.src_lengths.device.type == "meta"
    assert batch.src.device.type == "cpu"
    source_only = collate_source([[5, 6], [7]], [0, 1])
    assert source_only.src.tolist() == batch.src.tolist() and source_only.tgt_in.shape == (2, 0)
    assert source_only.num_tgt_tokens == 0


def random_lengths(n: int, seed: int = 0) -> tuple[list[int], list[int]]:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(1, 60, (n,), generator=g)
    tgt = (src.float() * (0.7 + 0.6 * torch.rand(n, generator=g))).long().clamp(min=1)
    return src.tolist(), tgt.tolist()


def test_sampler_batches_respect_max_tokens_and_cover_each_epoch_once():
    src, tgt = random_lengths(5000)
    sampler = TokenBatchSampler(src, tgt, max_tokens=1000, seed=1)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        seen = []
        real = padded = 0
        for indices in sampler:
            width = max(max(src[i], tgt[i]) + 1 for i in indices)
            assert len(indices) * width <= 1000
            seen += indices
            real += sum(max(src[i], tgt[i]) + 1 for i in indices)
            padded += len(indices) * width
        assert sorted(seen) == list(range(5000))
        assert real / padded > 0.9, "length bucketing should keep padding low"


def test_same_seed_same_batches_and_epochs_differ():
    src, tgt = random_lengths(3000)
    a, b = (TokenBatchSampler(src, tgt, 800, seed=5) for _ in range(2))
    assert a.batches_for_epoch(0) == b.batches_for_epoch(0)
    assert a.batches_for_epoch(3) == b.batches_for_epoch(3)
    assert a.batches_for_epoch(0) != a.batches_for_epoch(1)
    assert TokenBatchSampler(src, tgt, 800, seed=6).batches_for_epoch(0) != a.batches_for_epoch(0)
    assert list(a) == a.batches_for_epoch(0) and a.epoch == 1, "iterating an epoch moves to the next"


def test_resumed_sampler_continues_exactly():
    src, tgt = random_lengths(2000)
    reference = TokenBatchSampler(src, tgt, 700, seed=2)
    expected = list(reference) + list(reference)  # epochs 0 and 1
    first = TokenBatchSampler(src, tgt, 700, seed=2)
    taken = []
    for indices in first:
        taken.append(indices)
        if len(taken) == 17:
            break
    state = first.state_dict()
    assert state["epoch"] == 0 and state["position"] == 17
    resumed = TokenBatchSampler(src, tgt, 700, seed=2)
    resumed.load_state_dict(state)
    resumed.set_epoch(0)  # a training loop calls this at the start of the epoch: must not restart
    taken += list(resumed)
    resumed.set_epoch(1)
    taken += list(resumed)
    assert taken == expected


def test_resume_with_other_settings_is_refused():
    src, tgt = random_lengths(100)
    state = TokenBatchSampler(src, tgt, 500, seed=2).state_dict()
    with pytest.raises(LstmMtError, match="checkpoint has max_tokens=500, now 600"):
        TokenBatchSampler(src, tgt, 600, seed=2).load_state_dict(state)
    with pytest.raises(LstmMtError, match="checkpoint has num_examples=100, now 99"):
        TokenBatchSampler(src[:99], tgt[:99], 500, seed=2).load_state_dict(state)


def test_unshuffled_batches_are_length_sorted_and_fixed():
    src, tgt = random_lengths(500)
    sampler = TokenBatchSampler(src, tgt, 600, shuffle=False)
    batches = sampler.batches_for_epoch(0)
    assert batches == sampler.batches_for_epoch(7)
    widths = [max(src[i], tgt[i]) for b in batches for i in b]
    assert widths == sorted(widths)


def test_shards_split_batches_evenly_and_disjointly():
    src, tgt = random_lengths(1000)
    shards = [TokenBatchSampler(src, tgt, 500, seed=1, num_shards=2, shard=k) for k in range(2)]
    b0, b1 = (s.batches_for_epoch(0) for s in shards)
    assert len(b0) == len(b1) > 0
    assert not {i for b in b0 for i in b} & {i for b in b1 for i in b}


def test_max_tokens_below_longest_example_is_an_error():
    with pytest.raises(LstmMtError, match=r"max_tokens=50 is smaller than the longest example \(61 padded"):
        TokenBatchSampler([10, 60], [5, 20], max_tokens=50)


def test_inference_batches_are_longest_first_and_order_is_restored():
    src, _ = random_lengths(300)
    sampler = InferenceBatchSampler(src, max_tokens=400, max_sentences=16)
    flat = [i for b in sampler for i in b]
    assert sorted(flat) == list(range(300))
    assert [src[i] for i in flat] == sorted(src, reverse=True)
    assert all(len(b) <= 16 and len(b) * (max(src[i] for i in b) + 1) <= 400 for b in sampler)
    assert sampler.restore_order([f"out{i}" for i in flat]) == [f"out{i}" for i in range(300)]


# --- prepare_data ------------------------------------------------------------------------------


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
