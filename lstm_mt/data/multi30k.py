"""Multi30k task 1 (WMT16-18 multimodal translation, text only): en, de, fr, cs, official splits.

Files are the official raw ones from github.com/multi30k/dataset (``data/task1/raw``), read
from a mirror (``<mirror>/multi30k/raw/<split>.<lang>.gz``) or downloaded with sha256
verification. The lowercased Moses-tokenized references (``data/task1/tok``) are loadable for
scoring but never used for training.
"""

from __future__ import annotations

from pathlib import Path

from lstm_mt.data.config import DataConfig
from lstm_mt.data.corpus import ParallelCorpus, read_parallel
from lstm_mt.data.sources import download, mirror_file, resolve_mirror
from lstm_mt.data.textio import read_lines
from lstm_mt.errors import LstmMtError

NAME = "multi30k"
URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/{relpath}"

# Languages published upstream for each split, in the official order of the splits.
LANGUAGES: dict[str, tuple[str, ...]] = {
    "train": ("en", "de", "fr", "cs"),
    "val": ("en", "de", "fr", "cs"),
    "test_2016_flickr": ("en", "de", "fr", "cs"),
    "test_2017_flickr": ("en", "de", "fr"),
    "test_2017_mscoco": ("en", "de", "fr"),
    "test_2018_flickr": ("en", "de", "fr", "cs"),
}

# sha256 of the upstream files (raw: the .gz as stored; tok: the plain text), from
# /work/shared/data/multi30k/SOURCE.md. test_2017_mscoco and test_2018_flickr have none.
SHA256: dict[str, str] = {
    "raw/test_2016_flickr.cs.gz": "200a4a74cc9560f051924abb9803be008d1908d77f747e9141aeb86dfd2797f1",
    "raw/test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "raw/test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "raw/test_2016_flickr.fr.gz": "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90",
    "raw/test_2017_flickr.de.gz": "a2c89666db00c495cd8513b9d708d5a3acc205d7de312ef2bf5fb7ebc1540aee",
    "raw/test_2017_flickr.en.gz": "76a444ee25172e72695cddb13ae4a3bda59430617be88e0bb46b60504f054074",
    "raw/test_2017_flickr.fr.gz": "3ba671ceb2299f3304ffafefea7a833d08632fbaf0ba18546f8a2ec2391af496",
    "raw/train.cs.gz": "a65adb8b32e3bc664f21ecba7a6e7f6950fd1f405e135f7c312faabdb6255077",
    "raw/train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "raw/train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "raw/train.fr.gz": "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c",
    "raw/val.cs.gz": "b63226e05c4bd5dd6a42897d74b86a1b9d2c31498252c572b1ea7f7996927fcc",
    "raw/val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "raw/val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "raw/val.fr.gz": "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9",
    "tok/test_2016_flickr.lc.norm.tok.cs": "748c8816de928732365176e5c5d2f9bbabcec9b8d4448fba2d230feb057898a7",
    "tok/test_2016_flickr.lc.norm.tok.de": "c6a33d39d48f9f510de147651316cd9d918e09ad0219df734a2f16b6baccacc4",
    "tok/test_2016_flickr.lc.norm.tok.en": "5b7f32627cf99eced828311b955dae9800bb52bc8b91cf8b6526829e605b29d2",
    "tok/test_2016_flickr.lc.norm.tok.fr": "1463bd5960f9bfe098ec3cd752d3df0c49c84dc646fb518964a29232658cd836",
    "tok/test_2017_flickr.lc.norm.tok.de": "02067e4a9402786a4fcb8c1b6f4307e4a5073ced64800abead5273b54f5f31f6",
    "tok/test_2017_flickr.lc.norm.tok.en": "c9d1dfd7a26add989382e534af235af9f0f658b2a30e7eb0efdaf142496ee54f",
    "tok/test_2017_flickr.lc.norm.tok.fr": "c0583117a47b31e8a6c6a97cfe8de153e462074668f4e994764fcc80b21d33b4",
    "tok/train.lc.norm.tok.cs": "7645fb91efa18f94c83d493f740a5d5a941e4b01efa6a124bf2d4af040e133e0",
    "tok/train.lc.norm.tok.de": "cb5a23529b65ec2061f1dc446192a9c37382b63cc75f81a0be59d34894b3a505",
    "tok/train.lc.norm.tok.en": "08925f8e0572bcd5a006702fc5fe20e2d77c6917d4eebd576fc20de6693c2119",
    "tok/train.lc.norm.tok.fr": "8fa41bb718412bcb7c5dfa58603842810a01543eae86a51279f9886b901266e1",
    "tok/val.lc.norm.tok.cs": "b87ee4917f4a0f9ca6cca03e402026c9f4437dc1bd6a7dadfd2544ecfb6c5501",
    "tok/val.lc.norm.tok.de": "97232bd273eceb7207f689527386a97e4be2616b18ada47576bdaf96c8ae1f00",
    "tok/val.lc.norm.tok.en": "46573ce391ae227f1c72f873392436a20ef18e0a6d518098cfbd70b77c8572ec",
    "tok/val.lc.norm.tok.fr": "b303e301aa21fe7822a846b2b3fb2d5a1121ec807cd5b1d006fb7b2b5507168a",
}


def split_names(src: str, tgt: str) -> list[str]:
    """Official splits published for the pair, whether or not a mirror holds them."""
    _check_languages(src, tgt)
    return [split for split, langs in LANGUAGES.items() if src in langs and tgt in langs]


def available_splits(cfg: DataConfig) -> list[str]:
    """Splits of the pair that can be loaded: all official ones online, those present in a mirror."""
    names = split_names(cfg.src, cfg.tgt)
    mirror = resolve_mirror(cfg.mirror)
    if mirror is None:
        return names
    return [
        split
        for split in names
        if split in (cfg.train_split, cfg.valid_split)
        or all((mirror / NAME / _raw_relpath(split, lang)).is_file() for lang in (cfg.src, cfg.tgt))
    ]


def load(cfg: DataConfig, split: str) -> ParallelCorpus:
    """Raw sentences of ``split`` in direction cfg.src -> cfg.tgt."""
    _check_split(split, cfg.src, cfg.tgt)
    return read_parallel(split, raw_file(cfg, split, cfg.src), raw_file(cfg, split, cfg.tgt))


def raw_file(cfg: DataConfig, split: str, lang: str) -> Path:
    """Local path of ``<split>.<lang>.gz``: in the mirror, or downloaded into the cache."""
    return _local_file(cfg, _raw_relpath(split, lang), _raw_relpath(split, lang))


def load_tokenized_reference(cfg: DataConfig, split: str, lang: str | None = None) -> list[str]:
    """Official lowercased, Moses-normalized and tokenized lines of ``split`` (default: target side).

    These are the references most 2017-2018 Multi30k papers scored against (multi-bleu).
    """
    lang = lang or cfg.tgt
    if split not in LANGUAGES or lang not in LANGUAGES[split]:
        raise LstmMtError(f"multi30k has no tokenized reference for split '{split}', language '{lang}'")
    relpath = f"tok/{split}.lc.norm.tok.{lang}"
    return read_lines(_local_file(cfg, relpath + ".gz", relpath))


def _local_file(cfg: DataConfig, mirror_relpath: str, upstream_relpath: str) -> Path:
    mirror = resolve_mirror(cfg.mirror)
    if mirror is not None:
        return mirror_file(mirror, f"{NAME}/{mirror_relpath}")
    dest = Path(cfg.cache_dir) / NAME / upstream_relpath
    return download(URL.format(relpath=upstream_relpath), dest, SHA256.get(upstream_relpath))


def _raw_relpath(split: str, lang: str) -> str:
    return f"raw/{split}.{lang}.gz"


def _check_languages(src: str, tgt: str) -> None:
    known = LANGUAGES["train"]
    for key, lang in (("data.src", src), ("data.tgt", tgt)):
        if lang not in known:
            raise LstmMtError(f"{key}={lang}: multi30k has languages {', '.join(known)}")
    if src == tgt:
        raise LstmMtError(f"data.src and data.tgt are both '{src}'; pick two different languages")


def _check_split(split: str, src: str, tgt: str) -> None:
    names = split_names(src, tgt)
    if split not in names:
        raise LstmMtError(f"multi30k has no split '{split}' for {src}-{tgt}; splits: {', '.join(names)}")
