"""Typed data configuration: which corpus, which direction, where files live, how to subword
(`SubwordConfig`, which lives beside the tokenizer in `lstm_mt.tokenizer`).

Plain dataclasses (str/int/float/bool/Optional/list/dict/nested) so Hydra's ConfigStore can
check overrides such as ``data.src=de data.spm.vocab_size=16000``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    """Paths for ``name=custom``: train and valid are required, test sets are optional."""

    train: FilePair = field(default_factory=FilePair)
    valid: FilePair = field(default_factory=FilePair)
    test: dict[str, FilePair] = field(default_factory=dict)


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
