"""An encoded split (subword ids + raw text) and the iterator that turns it into batches."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from lstm_mt.data.batching import Batch, TokenBatchSampler, collate
from lstm_mt.tokenizer import Sampling, Tokenizer


@dataclass(frozen=True)
class SegmentationSampler:
    """Subword regularization (Kudo 2018): each training batch re-encoded with sampled segmentations.

    The seed of a batch's draw is a hash of its place in training (seed, shard, epoch, position),
    so every batch sees new segmentations and a resumed run sees the same ones as an unbroken run.
    Batches are formed on the best segmentation's lengths; sampled ones are usually a little longer.
    """

    tokenizer: Tokenizer
    alpha: float
    nbest: int

    def encode(
        self, src_lines: Sequence[str], tgt_lines: Sequence[str], key: Sequence[int]
    ) -> tuple[list[list[int]], list[list[int]]]:
        """Sampled subword ids of both sides of a batch; ``key`` names the batch's place in training."""
        src = self.tokenizer.encode_src(src_lines, Sampling(self.alpha, self.nbest, draw_seed(key, "src")))
        tgt = self.tokenizer.encode_tgt(tgt_lines, Sampling(self.alpha, self.nbest, draw_seed(key, "tgt")))
        return src, tgt


def draw_seed(key: Sequence[int], side: str) -> int:
    """A 32-bit seed from a batch key and a side: unrelated seeds for neighbouring batches."""
    digest = hashlib.sha256(f"{side}:{':'.join(map(str, key))}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


@dataclass
class EncodedDataset:
    """Subword ids of one split (no bos/eos) with the raw lines they came from.

    The raw lines are what BLEU is computed against; ``line_numbers`` are the 1-based lines
    in the corpus files, so any example can be traced back after filtering.
    """

    name: str
    src_ids: list[list[int]]
    tgt_ids: list[list[int]]
    src_lines: list[str]
    tgt_lines: list[str]
    line_numbers: list[int] = field(repr=False)

    def __len__(self) -> int:
        return len(self.src_ids)

    @property
    def src_lengths(self) -> list[int]:
        """Subword count of each source sentence (eos not counted)."""
        return [len(s) for s in self.src_ids]

    @property
    def tgt_lengths(self) -> list[int]:
        """Subword count of each target sentence (bos/eos not counted)."""
        return [len(t) for t in self.tgt_ids]

    def batch(
        self, indices: Sequence[int], segmentation: SegmentationSampler | None = None, key: Sequence[int] = ()
    ) -> Batch:
        """Padded :class:`Batch` of the examples at ``indices``; re-segmented when ``segmentation`` is given."""
        if segmentation is None:
            return collate([self.src_ids[i] for i in indices], [self.tgt_ids[i] for i in indices], indices)
        src, tgt = segmentation.encode([self.src_lines[i] for i in indices], [self.tgt_lines[i] for i in indices], key)
        return collate(src, tgt, indices)

    def batches(
        self,
        max_tokens: int,
        shuffle: bool = False,
        seed: int = 0,
        segmentation: SegmentationSampler | None = None,
        **sampler_args: Any,
    ) -> BatchIterator:
        """Token-bucketed batches: shuffled per epoch for training, length-sorted otherwise."""
        sampler = TokenBatchSampler(
            self.src_lengths,
            self.tgt_lengths,
            max_tokens,
            shuffle=shuffle,
            seed=seed,
            line_numbers=self.line_numbers,
            **sampler_args,
        )
        return BatchIterator(self, sampler, segmentation)


class BatchIterator:
    """Iterates :class:`Batch` objects in the order a sampler gives, and forwards its state.

    Batches are built in the calling process (collation is cheap), so the sampler's position
    is exactly the number of batches handed out: ``state_dict`` after a step resumes after it.
    With a ``segmentation`` sampler each batch is re-encoded, keyed by where the sampler stands.
    """

    def __init__(
        self, dataset: EncodedDataset, sampler: TokenBatchSampler, segmentation: SegmentationSampler | None = None
    ) -> None:
        self.dataset = dataset
        self.sampler = sampler
        self.segmentation = segmentation

    def __iter__(self) -> Iterator[Batch]:
        for indices in self.sampler:
            yield self.dataset.batch(indices, self.segmentation, self.sampler.batch_key())

    def __len__(self) -> int:
        return len(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        """See :meth:`TokenBatchSampler.set_epoch`."""
        self.sampler.set_epoch(epoch)

    def state_dict(self) -> dict[str, int]:
        """The sampler's resume state (epoch, position, settings)."""
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume at the saved epoch and position."""
        self.sampler.load_state_dict(state)
