"""Typed data configuration: which corpus, which direction, where files live, how to subword
(`SubwordConfig`, which lives beside the tokenizer in `lstm_mt.tokenizer`).

Plain dataclasses (str/int/float/bool/Optional/list/dict/nested) so Hydra's ConfigStore can
check overrides such as ``data.src=de data.spm.vocab_size=16000``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lstm_mt.errors import LstmMtError
from lstm_mt.ranges import bounded
from lstm_mt.tokenizer import SubwordConfig


@dataclass
class TatoebaConfig:
    """Deterministic split of the manythings.org exports (they have no official one).

    Pairs sharing an English or a foreign sentence form one group; each group goes to a
    split by a seeded hash, so no sentence (source or target) is in two splits.
    """

    valid_fraction: float = bounded(0.02, ge=0, lt=1)
    test_fraction: float = bounded(0.02, ge=0, lt=1)
    seed: int = bounded(1234, ge=0)


@dataclass
class FilePair:
    """Source and target text files (plain or .gz), line i of one translating line i of the other."""

    src: str | None = None
    tgt: str | None = None


@dataclass
class CustomConfig:
    """Paths for ``name=custom``: train and valid are required, test sets are optional.

    ``test`` maps a test set's name to its `FilePair`. The schema types its values loosely (a
    ``{src, tgt}`` mapping becomes a FilePair here) and `lstm_mt.config` lets Hydra add names
    to it: a dict of dataclasses would refuse ``data.custom.test.<name>.src=...`` on the command
    line, in every form, since OmegaConf cannot create such a value from a plain mapping.
    """

    train: FilePair = field(default_factory=FilePair)
    valid: FilePair = field(default_factory=FilePair)
    test: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.test = {name: file_pair(pair, f"data.custom.test.{name}") for name, pair in self.test.items()}


def file_pair(value: Any, key: str) -> FilePair:
    """``value`` (a FilePair or a mapping with keys src and tgt) as a FilePair; `LstmMtError` naming ``key`` else."""
    if isinstance(value, FilePair):
        return value
    if not isinstance(value, Mapping) or not set(value) <= {"src", "tgt"}:
        unknown = sorted(set(value) - {"src", "tgt"}) if isinstance(value, Mapping) else None
        what = f"unknown key(s) {', '.join(map(str, unknown))}" if unknown else f"got {value!r}"
        raise LstmMtError(f"{key}: a test set has a src and a tgt file ({what})")
    paths = {side: None if path is None else str(path) for side, path in value.items()}
    return FilePair(**paths)


@dataclass
class DataConfig:
    """Which parallel corpus to use, in which direction, and how to prepare it.

    ``name``: multi30k | tatoeba | custom. ``mirror``: local folder with the mirror
    layout (falls back to $LSTM_MT_DATA_MIRROR; without either, files are downloaded into
    ``cache_dir``). ``test_splits`` empty means every test split that exists for the pair.
    ``max_len`` / ``max_len_ratio`` filter training pairs only (subword tokens, eos not
    counted; ratio = longer side / shorter side).
    """

    name: str = "multi30k"
    src: str = "de"
    tgt: str = "en"
    mirror: str | None = None
    cache_dir: str = "data"
    train_split: str = "train"
    valid_split: str = "val"
    test_splits: list[str] = field(default_factory=list)
    max_len: int = bounded(100, ge=1)
    max_len_ratio: float = bounded(3.0, ge=1)
    spm: SubwordConfig = field(default_factory=SubwordConfig)
    tatoeba: TatoebaConfig = field(default_factory=TatoebaConfig)
    custom: CustomConfig = field(default_factory=CustomConfig)
