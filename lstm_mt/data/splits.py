"""One entry point for every corpus: which splits exist, and loading one of them by name."""

from __future__ import annotations

from pathlib import Path

from lstm_mt.data import multi30k, tatoeba
from lstm_mt.data.config import DataConfig, FilePair
from lstm_mt.data.corpus import ParallelCorpus, read_parallel
from lstm_mt.errors import LstmMtError

CORPORA = ("multi30k", "tatoeba", "custom")


def available_splits(cfg: DataConfig) -> list[str]:
    """Names of the splits that can be loaded for cfg.name and the cfg.src-cfg.tgt pair."""
    if cfg.name == "multi30k":
        return multi30k.available_splits(cfg)
    if cfg.name == "tatoeba":
        return tatoeba.split_names()
    if cfg.name == "custom":
        return [cfg.train_split, cfg.valid_split, *cfg.custom.test]
    raise LstmMtError(f"data.name={cfg.name}: unknown corpus; choose one of {', '.join(CORPORA)}")


def resolve_test_splits(cfg: DataConfig) -> list[str]:
    """cfg.test_splits, or every available split that is neither train nor valid.

    Only checks names (and, for a mirror, that the files exist); never reads a test file.
    """
    available = available_splits(cfg)
    if not cfg.test_splits:
        return [s for s in available if s not in (cfg.train_split, cfg.valid_split)]
    for split in cfg.test_splits:
        if split not in available:
            raise LstmMtError(
                f"data.test_splits: '{split}' is not available for {cfg.name} {cfg.src}-{cfg.tgt}; "
                f"available: {', '.join(available)}"
            )
    return list(cfg.test_splits)


def load_split(cfg: DataConfig, split: str) -> ParallelCorpus:
    """Raw sentence pairs of one split, direction cfg.src -> cfg.tgt, nothing filtered."""
    if cfg.name == "multi30k":
        return multi30k.load(cfg, split)
    if cfg.name == "tatoeba":
        return tatoeba.load(cfg, split)
    if cfg.name == "custom":
        return _load_custom(cfg, split)
    raise LstmMtError(f"data.name={cfg.name}: unknown corpus; choose one of {', '.join(CORPORA)}")


def _load_custom(cfg: DataConfig, split: str) -> ParallelCorpus:
    if split == cfg.train_split:
        key, pair = "train", cfg.custom.train
    elif split == cfg.valid_split:
        key, pair = "valid", cfg.custom.valid
    elif split in cfg.custom.test:
        key, pair = f"test.{split}", cfg.custom.test[split]
    else:
        raise LstmMtError(f"custom data has no split '{split}'; splits: {', '.join(available_splits(cfg))}")
    src, tgt = _custom_paths(key, pair)
    return read_parallel(split, src, tgt)


def _custom_paths(key: str, pair: FilePair) -> tuple[Path, Path]:
    paths = []
    for side in ("src", "tgt"):
        value = getattr(pair, side)
        if not value:
            raise LstmMtError(f"data.custom.{key}.{side} is not set (a path to a text file, plain or .gz)")
        paths.append(Path(value).expanduser())
    return paths[0], paths[1]
