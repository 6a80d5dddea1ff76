"""Parallel corpora, splits, mirrors/downloads and batching.

Modules, in the order data flows through them:
  config.py    DataConfig and its parts: plain dataclasses for Hydra (data.spm: lstm_mt.tokenizer.SubwordConfig)
  sources.py   mirror folder or checksummed, atomic download into the cache
  textio.py    exact line reading (plain/.gz) with file:line errors
  corpus.py    ParallelCorpus
  multi30k.py, tatoeba.py, splits.py   the corpora and the by-name entry points
  prepare.py   prepare_data: tokenizer, encoding, length filtering, report
  dataset.py   EncodedDataset, BatchIterator, SegmentationSampler (subword regularization)
  batching.py  Batch, collate, TokenBatchSampler, InferenceBatchSampler
"""

from lstm_mt.data.batching import (
    Batch,
    InferenceBatchSampler,
    TokenBatchSampler,
    collate,
    collate_source,
)
from lstm_mt.data.config import CustomConfig, DataConfig, FilePair, TatoebaConfig
from lstm_mt.data.corpus import ParallelCorpus
from lstm_mt.data.dataset import BatchIterator, EncodedDataset, SegmentationSampler
from lstm_mt.data.multi30k import load_tokenized_reference
from lstm_mt.data.prepare import FilterReport, PreparedData, prepare_data
from lstm_mt.data.sources import MIRROR_ENV
from lstm_mt.data.splits import available_splits, load_split, resolve_test_splits

__all__ = [
    "Batch",
    "BatchIterator",
    "CustomConfig",
    "DataConfig",
    "EncodedDataset",
    "FilePair",
    "FilterReport",
    "InferenceBatchSampler",
    "MIRROR_ENV",
    "ParallelCorpus",
    "PreparedData",
    "SegmentationSampler",
    "TatoebaConfig",
    "TokenBatchSampler",
    "available_splits",
    "collate",
    "collate_source",
    "load_split",
    "load_tokenized_reference",
    "prepare_data",
    "resolve_test_splits",
]
