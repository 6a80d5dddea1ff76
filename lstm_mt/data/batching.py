"""Token-based batching: padded tensors, length-bucketed seeded samplers, inference ordering.

Batch cost, which ``max_tokens`` bounds, is the padded size of the larger side:
``batch_size * max(S, T)`` with S = longest source + 1 (eos) and T = longest target + 1
(bos in ``tgt_in``, eos in ``tgt_out``). Training batches come from length-sorted chunks of
a seeded permutation, then the batch list is shuffled; the batches of an epoch depend only
on (seed, epoch), and the sampler's (epoch, position) state resumes mid-epoch exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np
import torch

from lstm_mt.errors import LstmMtError
from lstm_mt.vocab import BOS_ID, EOS_ID, PAD_ID

T = TypeVar("T")


@dataclass
class Batch:
    """Padded tensors for one step; ``indices`` are the examples' positions in their dataset.

    ``src`` [B, S] ends each row with eos and ``src_lengths`` counts that eos; ``tgt_in`` [B, T]
    is bos + y and ``tgt_out`` [B, T] is y + eos; padding is 0 everywhere. Rows keep the order
    of ``indices`` (not sorted by length). ``num_tgt_tokens`` counts the non-pad ``tgt_out``
    tokens (the loss normalizer).
    """

    src: torch.Tensor
    src_lengths: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor
    indices: list[int]
    num_tgt_tokens: int

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The same batch with every tensor (``src_lengths`` too) on ``device``."""
        tensors = ("src", "src_lengths", "tgt_in", "tgt_out")
        return replace(self, **{n: getattr(self, n).to(device, non_blocking=non_blocking) for n in tensors})

    def __len__(self) -> int:
        return len(self.indices)


def collate(src_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]], indices: Sequence[int]) -> Batch:
    """Pad subword id lists (without bos/eos) into a :class:`Batch`."""
    return Batch(
        src=_pad(src_ids, prefix=(), suffix=(EOS_ID,)),
        src_lengths=torch.tensor([len(s) + 1 for s in src_ids], dtype=torch.long),
        tgt_in=_pad(tgt_ids, prefix=(BOS_ID,), suffix=()),
        tgt_out=_pad(tgt_ids, prefix=(), suffix=(EOS_ID,)),
        indices=list(indices),
        num_tgt_tokens=sum(len(t) + 1 for t in tgt_ids),
    )


def collate_source(src_ids: Sequence[Sequence[int]], indices: Sequence[int]) -> Batch:
    """A :class:`Batch` for translation: source only, ``tgt_in``/``tgt_out`` are [B, 0]."""
    empty = torch.zeros(len(src_ids), 0, dtype=torch.long)
    return replace(
        collate(src_ids, [[] for _ in src_ids], indices), tgt_in=empty, tgt_out=empty.clone(), num_tgt_tokens=0
    )


def _pad(seqs: Sequence[Sequence[int]], prefix: tuple[int, ...], suffix: tuple[int, ...]) -> torch.Tensor:
    width = max((len(s) for s in seqs), default=0) + len(prefix) + len(suffix)
    out = torch.full((len(seqs), width), PAD_ID, dtype=torch.long)
    for row, s in enumerate(seqs):
        ids = [*prefix, *s, *suffix]
        out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def padded_sizes(src_lengths: Sequence[int], tgt_lengths: Sequence[int] | None = None) -> np.ndarray:
    """Per-example max(S, T) (lengths + 1 for eos/bos): what one row of a batch costs."""
    sizes = np.asarray(src_lengths, dtype=np.int64) + 1
    if tgt_lengths is not None:
        sizes = np.maximum(sizes, np.asarray(tgt_lengths, dtype=np.int64) + 1)
    return sizes


def greedy_batches(order: Sequence[int] | np.ndarray, sizes: np.ndarray, max_tokens: int) -> list[list[int]]:
    """Cut ``order`` into consecutive batches whose len * max(size) stays <= max_tokens.

    An example larger than max_tokens alone gets a batch of its own.
    """
    batches: list[list[int]] = []
    current: list[int] = []
    widest = 0
    for i in order:
        i = int(i)
        if current and max(widest, sizes[i]) * (len(current) + 1) > max_tokens:
            batches.append(current)
            current, widest = [], 0
        current.append(i)
        widest = max(widest, int(sizes[i]))
    if current:
        batches.append(current)
    return batches


class TokenBatchSampler:
    """Training batches of example indices: length-bucketed, seeded, resumable.

    Each epoch: a permutation seeded by (seed, epoch) is cut into chunks of ``chunk_size``
    examples, each chunk is sorted by length and cut greedily into batches, and the batch
    list is shuffled with the same generator. ``shuffle=False`` sorts the whole dataset
    instead (fixed order, for validation). With ``num_shards`` > 1 (data parallel), shard k
    takes batches k, k + num_shards, ...; the last ``len % num_shards`` batches of an epoch
    are left out so every shard takes the same number of steps.

    Iteration starts at ``position`` in the current epoch's batch list and, when an epoch is
    exhausted, moves to the next epoch; ``set_epoch`` restarts only when the epoch changes.
    """

    def __init__(
        self,
        src_lengths: Sequence[int],
        tgt_lengths: Sequence[int] | None,
        max_tokens: int,
        shuffle: bool = True,
        seed: int = 0,
        chunk_size: int = 0,
        num_shards: int = 1,
        shard: int = 0,
        too_long_hint: str = "raise max_tokens or lower data.max_len",
        line_numbers: Sequence[int] | None = None,
    ) -> None:
        self.sizes = padded_sizes(src_lengths, tgt_lengths)
        self.src_lengths = np.asarray(src_lengths, dtype=np.int64)
        self.max_tokens = int(max_tokens)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.num_shards, self.shard = num_shards, shard
        self.too_long_hint = too_long_hint
        self.line_numbers = line_numbers
        self.epoch = 0
        self.position = 0
        self._check()
        self.chunk_size = chunk_size or self._default_chunk_size()
        self._cached: tuple[int, list[list[int]]] = (-1, [])

    def _check(self) -> None:
        if not 0 <= self.shard < self.num_shards:
            raise ValueError(f"shard {self.shard} is not in [0, {self.num_shards})")
        if len(self.sizes) and (widest := int(self.sizes.max())) > self.max_tokens:
            index = int(self.sizes.argmax())
            where = f"line {self.line_numbers[index]}" if self.line_numbers is not None else f"example {index + 1}"
            raise LstmMtError(
                f"max_tokens={self.max_tokens} is smaller than the longest example "
                f"({widest} padded tokens, {where}); {self.too_long_hint}"
            )

    def _default_chunk_size(self) -> int:
        # About 100 batches per sorted chunk: long enough runs of similar lengths for little
        # padding, short enough that batch contents still change from epoch to epoch.
        mean = float(self.sizes.mean()) if len(self.sizes) else 1.0
        return max(1, int(100 * self.max_tokens / mean))

    def batches_for_epoch(self, epoch: int) -> list[list[int]]:
        """This shard's batches of ``epoch``; a pure function of (lengths, settings, seed, epoch)."""
        if self._cached[0] != epoch:
            self._cached = (epoch, self._make_batches(epoch))
        return self._cached[1]

    def _make_batches(self, epoch: int) -> list[list[int]]:
        if not self.shuffle:
            order = np.lexsort((self.src_lengths, self.sizes))
            batches = greedy_batches(order, self.sizes, self.max_tokens)
        else:
            rng = np.random.default_rng([self.seed, epoch])
            perm = rng.permutation(len(self.sizes))
            batches = []
            for start in range(0, len(perm), self.chunk_size):
                chunk = perm[start : start + self.chunk_size]
                chunk = chunk[np.lexsort((self.src_lengths[chunk], self.sizes[chunk]))]
                batches += greedy_batches(chunk, self.sizes, self.max_tokens)
            batches = [batches[j] for j in rng.permutation(len(batches))]
        usable = len(batches) - len(batches) % self.num_shards
        return batches[self.shard : usable : self.num_shards]

    def set_epoch(self, epoch: int) -> None:
        """Move to ``epoch`` (from its first batch) unless already in it, e.g. after resuming."""
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.batches_for_epoch(self.epoch)
        while self.position < len(batches):
            self.position += 1  # counted when handed out, so a checkpoint after the step resumes after it
            yield list(batches[self.position - 1])
        self.epoch, self.position = self.epoch + 1, 0

    def __len__(self) -> int:
        return len(self.batches_for_epoch(self.epoch))

    def batch_key(self) -> tuple[int, int, int, int]:
        """(seed, shard, epoch, position) of the batch last handed out: its place in training."""
        return self.seed, self.shard, self.epoch, self.position

    def state_dict(self) -> dict[str, int]:
        """Where iteration stands (epoch, next batch) and the settings that define the batches."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "max_tokens": self.max_tokens,
            "num_examples": len(self.sizes),
            "num_shards": self.num_shards,
            "shard": self.shard,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue exactly where :meth:`state_dict` was taken; the settings must be the same."""
        for key in ("seed", "max_tokens", "num_examples", "num_shards", "shard"):
            ours = getattr(self, key) if key != "num_examples" else len(self.sizes)
            if state.get(key) != ours:
                raise LstmMtError(
                    f"cannot resume batching: checkpoint has {key}={state.get(key)}, now {ours}; "
                    "resuming needs the same data and batching settings"
                )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


class InferenceBatchSampler:
    """Batches for translation: longest sources first, and a way back to the input order.

    Cost counts the source only (``batch_size * (longest + 1)``), optionally capped at
    ``max_sentences`` per batch. A source longer than max_tokens gets a batch of its own.
    """

    def __init__(self, src_lengths: Sequence[int], max_tokens: int, max_sentences: int = 0) -> None:
        sizes = padded_sizes(src_lengths)
        order = np.argsort(-sizes, kind="stable")
        batches = greedy_batches(order, sizes, max_tokens)
        if max_sentences > 0:
            batches = [b[k : k + max_sentences] for b in batches for k in range(0, len(b), max_sentences)]
        self.batches = batches
        self.order = [i for b in batches for i in b]

    def __iter__(self) -> Iterator[list[int]]:
        return (list(b) for b in self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def restore_order(self, results: Sequence[T]) -> list[T]:
        """Reorder ``results`` (one per example, in iteration order) back to input order."""
        if len(results) != len(self.order):
            raise ValueError(f"expected {len(self.order)} results, got {len(results)}")
        out: list[T | None] = [None] * len(self.order)
        for position, index in enumerate(self.order):
            out[index] = results[position]
        return out  # type: ignore[return-value]
