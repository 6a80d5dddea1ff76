"""An encoded split (subword ids + raw text) and the iterator that turns it into batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from lstm_mt.data.batching import Batch, TokenBatchSampler, collate


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

    def batch(self, indices: Sequence[int]) -> Batch:
        """Padded :class:`Batch` of the examples at ``indices``."""
        return collate([self.src_ids[i] for i in indices], [self.tgt_ids[i] for i in indices], indices)

    def batches(self, max_tokens: int, shuffle: bool = False, seed: int = 0, **sampler_args: Any) -> BatchIterator:
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
        return BatchIterator(self, sampler)


class BatchIterator:
    """Iterates :class:`Batch` objects in the order a sampler gives, and forwards its state.

    Batches are built in the calling process (collation is cheap), so the sampler's position
    is exactly the number of batches handed out: ``state_dict`` after a step resumes after it.
    """

    def __init__(self, dataset: EncodedDataset, sampler: TokenBatchSampler) -> None:
        self.dataset = dataset
        self.sampler = sampler

    def __iter__(self) -> Iterator[Batch]:
        for indices in self.sampler:
            yield self.dataset.batch(indices)

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
