"""From a DataConfig to training-ready data: load, skip empty pairs, subword, length-filter.

Only the train and valid splits are read; test splits are named (and checked to exist) but
their files are never opened here, so nothing about training can depend on test data.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from lstm_mt.data.config import DataConfig
from lstm_mt.data.corpus import ParallelCorpus
from lstm_mt.data.dataset import BatchIterator, EncodedDataset, SegmentationSampler
from lstm_mt.data.splits import load_split, resolve_test_splits
from lstm_mt.errors import LstmMtError
from lstm_mt.tokenizer import Tokenizer, train_or_load_tokenizer

log = logging.getLogger(__name__)

MAX_EXAMPLES = 10  # locations of skipped pairs kept in the report


@dataclass
class FilterReport:
    """What happened to the training pairs: read, skipped as empty, filtered by length, kept.

    ``too_long``: a side has more than max_len subwords. ``bad_ratio``: the longer side has
    more than max_len_ratio times the subwords of the shorter one (counted only if not too long).
    ``empty_examples``: 'file:line' of the first few skipped empty pairs.
    """

    total: int
    empty: int
    too_long: int
    bad_ratio: int
    kept: int
    empty_examples: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.total} pairs read, {self.kept} kept; skipped {self.empty} empty, "
            f"{self.too_long} too long, {self.bad_ratio} with too high length ratio"
        )


@dataclass
class PreparedData:
    """Tokenizer, encoded train/valid splits, and the names of the test splits for later.

    ``files`` maps each loaded split and the tokenizer to the files it came from, so a run
    states exactly which corpus files and SentencePiece model(s) it used.
    """

    config: DataConfig
    tokenizer: Tokenizer
    train: EncodedDataset
    valid: EncodedDataset
    test_splits: list[str]
    filter_report: FilterReport
    files: dict[str, list[str]]
    seconds: float

    def train_batches(self, max_tokens: int, seed: int = 0, num_shards: int = 1, shard: int = 0) -> BatchIterator:
        """Shuffled, length-bucketed, resumable training batches (see TokenBatchSampler); with
        ``data.spm.sample_alpha`` > 0 each batch gets sampled segmentations (`SegmentationSampler`)."""
        spm = self.config.spm
        segmentation = (
            SegmentationSampler(self.tokenizer, spm.sample_alpha, spm.sample_nbest) if spm.sample_alpha else None
        )
        return self.train.batches(
            max_tokens, shuffle=True, seed=seed, segmentation=segmentation, num_shards=num_shards, shard=shard
        )

    def valid_batches(self, max_tokens: int) -> BatchIterator:
        """Validation batches in a fixed length-sorted order (``indices`` map back to lines)."""
        return self.valid.batches(
            max_tokens,
            shuffle=False,
            too_long_hint="validation pairs are never filtered (data.max_len does not apply to them), "
            "so raise train.max_tokens or shorten that line of the valid split",
        )

    def record(self) -> dict[str, Any]:
        """Plain-data description of the preparation, for logs and checkpoints."""
        return {
            "config": _config_dict(self.config),
            "files": self.files,
            "sizes": {"train": len(self.train), "valid": len(self.valid)},
            "vocab_size": {"src": self.tokenizer.src_vocab_size, "tgt": self.tokenizer.tgt_vocab_size},
            "test_splits": self.test_splits,
            "filter": dataclasses.asdict(self.filter_report),
            "seconds": round(self.seconds, 2),
        }

    def summary(self) -> str:
        """A few lines for the log: sizes, filtering, vocabulary, time."""
        cfg, tok = self.config, self.tokenizer
        vocab = f"joint {tok.src_vocab_size}" if tok.joint else f"src {tok.src_vocab_size} / tgt {tok.tgt_vocab_size}"
        return (
            f"data {cfg.name} {cfg.src}->{cfg.tgt}: train {self.filter_report}; "
            f"valid {len(self.valid)} pairs; test splits {', '.join(self.test_splits) or '-'}; "
            f"SentencePiece {cfg.spm.model_type} {vocab} ({', '.join(tok.model_files)}); "
            f"{self.seconds:.1f}s"
        )


def prepare_data(cfg: DataConfig) -> PreparedData:
    """Load train/valid, train or reuse the tokenizer, encode, filter train, and log a report."""
    start = time.perf_counter()
    tests = resolve_test_splits(cfg)
    train_raw = load_split(cfg, cfg.train_split)
    valid_raw = load_split(cfg, cfg.valid_split)
    train_raw, empty = drop_empty_pairs(train_raw)
    if not len(train_raw):
        raise LstmMtError(
            f"{train_raw.src_path}, {train_raw.tgt_path}: no training pair with text on both sides "
            f"({len(empty)} pairs, all empty or blank on a side): nothing to train SentencePiece or a model on"
        )
    tokenizer = train_or_load_tokenizer(cfg.spm, train_raw.src_lines, train_raw.tgt_lines, cfg.cache_dir)
    train, report = filter_by_length(encode_corpus(train_raw, tokenizer), cfg.max_len, cfg.max_len_ratio)
    report.total += len(empty)
    report.empty, report.empty_examples = len(empty), empty[:MAX_EXAMPLES]
    prepared = PreparedData(
        config=cfg,
        tokenizer=tokenizer,
        train=train,
        valid=encode_corpus(valid_raw, tokenizer),
        test_splits=tests,
        filter_report=report,
        files={
            cfg.train_split: [train_raw.src_path, train_raw.tgt_path],
            cfg.valid_split: [valid_raw.src_path, valid_raw.tgt_path],
            "spm": tokenizer.model_files,
        },
        seconds=time.perf_counter() - start,
    )
    log.info("%s", prepared.summary())
    return prepared


def drop_empty_pairs(corpus: ParallelCorpus) -> tuple[ParallelCorpus, list[str]]:
    """The corpus without pairs whose source or target is blank, and 'file:line' of each dropped pair."""
    keep = [i for i, (s, t) in enumerate(zip(corpus.src_lines, corpus.tgt_lines)) if s.strip() and t.strip()]
    if len(keep) == len(corpus):
        return corpus, []
    kept = set(keep)
    dropped = [corpus.where(i) for i in range(len(corpus)) if i not in kept]
    log.warning("%s: skipped %d empty line(s) in training data, first at %s", corpus.src_path, len(dropped), dropped[0])
    return dataclasses.replace(
        corpus,
        src_lines=[corpus.src_lines[i] for i in keep],
        tgt_lines=[corpus.tgt_lines[i] for i in keep],
        line_numbers=[corpus.line_number(i) for i in keep],
    ), dropped


def encode_corpus(corpus: ParallelCorpus, tokenizer: Tokenizer) -> EncodedDataset:
    """Subword ids of every pair, keeping the raw lines and their file line numbers."""
    return EncodedDataset(
        name=corpus.name,
        src_ids=tokenizer.encode_src(corpus.src_lines),
        tgt_ids=tokenizer.encode_tgt(corpus.tgt_lines),
        src_lines=corpus.src_lines,
        tgt_lines=corpus.tgt_lines,
        line_numbers=[corpus.line_number(i) for i in range(len(corpus))],
    )


def filter_by_length(data: EncodedDataset, max_len: int, max_ratio: float) -> tuple[EncodedDataset, FilterReport]:
    """Training pairs within ``max_len`` subwords per side and ``max_ratio`` longer/shorter.

    Only for training data: validation and test sets are always used whole.
    """
    keep: list[int] = []
    too_long = bad_ratio = 0
    for i, (s, t) in enumerate(zip(data.src_ids, data.tgt_ids)):
        longer, shorter = max(len(s), len(t)), min(len(s), len(t))
        if longer > max_len:
            too_long += 1
        elif longer > max_ratio * max(shorter, 1):
            bad_ratio += 1
        else:
            keep.append(i)
    report = FilterReport(total=len(data), empty=0, too_long=too_long, bad_ratio=bad_ratio, kept=len(keep))
    if len(keep) == len(data):
        return data, report
    return EncodedDataset(
        name=data.name,
        src_ids=[data.src_ids[i] for i in keep],
        tgt_ids=[data.tgt_ids[i] for i in keep],
        src_lines=[data.src_lines[i] for i in keep],
        tgt_lines=[data.tgt_lines[i] for i in keep],
        line_numbers=[data.line_numbers[i] for i in keep],
    ), report


def _config_dict(cfg: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return dataclasses.asdict(cfg)
    from omegaconf import OmegaConf  # a Hydra DictConfig

    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
