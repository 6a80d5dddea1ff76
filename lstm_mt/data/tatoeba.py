"""Tatoeba sentence pairs as exported by manythings.org (deu-eng, fra-eng), with a seeded split.

The export is one file, ``English<TAB>other[<TAB>attribution]`` per line, without an official
split. Pairs that share an English or a foreign sentence are grouped (union-find) and each
group is sent to train/val/test by a seeded hash of its smallest English sentence, so no
sentence of either side occurs in two splits and the split is the same for both directions.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from pathlib import Path

from lstm_mt.data.config import DataConfig, TatoebaConfig
from lstm_mt.data.corpus import ParallelCorpus
from lstm_mt.data.sources import download, mirror_file, resolve_mirror
from lstm_mt.data.textio import decode_lines, read_lines
from lstm_mt.errors import LstmMtError

log = logging.getLogger(__name__)

NAME = "tatoeba"
MIRROR_DIR = "tatoeba-manythings"
URL = "https://www.manythings.org/anki/{pair}.zip"
PAIRS = {"de": "deu-eng", "fr": "fra-eng"}  # foreign language -> export name
SPLITS = ("train", "val", "test")


def split_names() -> list[str]:
    """The three splits made by :func:`assign_splits`."""
    return list(SPLITS)


def load(cfg: DataConfig, split: str) -> ParallelCorpus:
    """Pairs of ``split`` (train / val / test) in direction cfg.src -> cfg.tgt."""
    if split not in SPLITS:
        raise LstmMtError(f"tatoeba has no split '{split}'; splits: {', '.join(SPLITS)}")
    foreign = _foreign_language(cfg.src, cfg.tgt)
    lines, path = _export_lines(cfg, PAIRS[foreign])
    english, other, line_numbers = parse_pairs(lines, path)
    chosen = [i for i, s in enumerate(assign_splits(english, other, cfg.tatoeba)) if s == split]
    src_side, tgt_side = (english, other) if cfg.src == "en" else (other, english)
    return ParallelCorpus(
        name=split,
        src_lines=[src_side[i] for i in chosen],
        tgt_lines=[tgt_side[i] for i in chosen],
        src_path=path,
        tgt_path=path,
        line_numbers=[line_numbers[i] for i in chosen],
    )


def parse_pairs(lines: list[str], path: str) -> tuple[list[str], list[str], list[int]]:
    """English sentences, foreign sentences and their 1-based line numbers.

    Entirely empty lines are skipped and reported; any other line must have 2 or 3 fields.
    """
    english: list[str] = []
    other: list[str] = []
    numbers: list[int] = []
    empty: list[int] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            empty.append(number)
            continue
        fields = line.split("\t")
        if len(fields) not in (2, 3):
            raise LstmMtError(
                f"{path}:{number}: expected English<TAB>translation[<TAB>attribution], "
                f"found {len(fields)} tab-separated field(s)"
            )
        english.append(fields[0])
        other.append(fields[1])
        numbers.append(number)
    if empty:
        log.warning("%s: skipped %d empty line(s), first at line %d", path, len(empty), empty[0])
    return english, other, numbers


def assign_splits(english: list[str], other: list[str], cfg: TatoebaConfig) -> list[str]:
    """Split name for every pair; pairs linked by a shared sentence always land together."""
    if cfg.valid_fraction < 0 or cfg.test_fraction < 0 or cfg.valid_fraction + cfg.test_fraction >= 1:
        raise LstmMtError(
            "data.tatoeba.valid_fraction and test_fraction must be >= 0 and sum to less than 1 "
            f"(got {cfg.valid_fraction} and {cfg.test_fraction})"
        )
    groups = _group_pairs(english, other)
    key: dict[int, str] = {}
    for i, group in enumerate(groups):
        if group not in key or english[i] < key[group]:
            key[group] = english[i]
    split_of_group = {g: _split_for(k, cfg) for g, k in key.items()}
    return [split_of_group[g] for g in groups]


def _split_for(key: str, cfg: TatoebaConfig) -> str:
    digest = hashlib.sha256(f"{cfg.seed}\t{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < cfg.valid_fraction:
        return "val"
    if u < cfg.valid_fraction + cfg.test_fraction:
        return "test"
    return "train"


def _group_pairs(english: list[str], other: list[str]) -> list[int]:
    """Connected component id of each pair, where pairs sharing a sentence are connected."""
    parent: list[int] = []
    node: dict[tuple[int, str], int] = {}

    def node_of(side: int, text: str) -> int:
        if (side, text) not in node:
            node[(side, text)] = len(parent)
            parent.append(len(parent))
        return node[(side, text)]

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for e, o in zip(english, other):
        a, b = root(node_of(0, e)), root(node_of(1, o))
        if a != b:
            parent[a] = b
    return [root(node[(0, e)]) for e in english]


def _foreign_language(src: str, tgt: str) -> str:
    pair = {src, tgt}
    foreign = (pair - {"en"}).pop() if "en" in pair and len(pair) == 2 else None
    if foreign not in PAIRS:
        options = ", ".join(f"en-{f}, {f}-en" for f in PAIRS)
        raise LstmMtError(f"tatoeba has no pair {src}-{tgt} (data.src/data.tgt); pairs: {options}")
    return foreign


def _export_lines(cfg: DataConfig, pair: str) -> tuple[list[str], str]:
    """Lines of ``<lang>.txt`` from the mirror, or from the downloaded official zip."""
    member = f"{pair[:3]}.txt"
    mirror = resolve_mirror(cfg.mirror)
    if mirror is not None:
        path = mirror_file(mirror, f"{MIRROR_DIR}/{pair}/{member}.gz")
        return read_lines(path), str(path)
    archive = download(URL.format(pair=pair), Path(cfg.cache_dir) / MIRROR_DIR / f"{pair}.zip", None)
    label = f"{archive}/{member}"
    try:
        with zipfile.ZipFile(archive) as zf:
            data = zf.read(member)
    except (zipfile.BadZipFile, KeyError) as e:
        raise LstmMtError(f"{archive}: not a manythings export with {member} ({e}); delete it to re-download") from None
    return decode_lines(data, label), label
