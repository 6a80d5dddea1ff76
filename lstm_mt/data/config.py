"""Typed data configuration: which corpus, which direction, where files live, how to subword.

Plain dataclasses (str/int/float/bool/Optional/list/dict/nested) so Hydra's ConfigStore can
check overrides such as ``data.src=de data.spm.vocab_size=16000``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from lstm_mt.ranges import bounded


@dataclass
class SubwordConfig:
    """SentencePiece settings; the model is trained on the training split only.

    ``joint`` trains one model on source and target text together (shared vocabulary);
    otherwise one model per side. Special ids are fixed (pad=0, unk=1, bos=2, eos=3).
    ``max_sentences`` caps the sentences SentencePiece samples (input_sentence_size).
    """

    model_type: str = "unigram"
    vocab_size: int = bounded(8000, ge=5)
    joint: bool = True
    character_coverage: float = bounded(1.0, gt=0, le=1)
    byte_fallback: bool = False
    max_sentences: int = bounded(1_000_000, ge=1)


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

    src: Optional[str] = None
    tgt: Optional[str] = None


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
    mirror: Optional[str] = None
    cache_dir: str = "data"
    train_split: str = "train"
    valid_split: str = "val"
    test_splits: list[str] = field(default_factory=list)
    max_len: int = bounded(100, ge=1)
    max_len_ratio: float = bounded(3.0, ge=1)
    spm: SubwordConfig = field(default_factory=SubwordConfig)
    tatoeba: TatoebaConfig = field(default_factory=TatoebaConfig)
    custom: CustomConfig = field(default_factory=CustomConfig)
