"""Padded, time-major batches ``[T, B, ...]`` with per-sequence lengths: the bookkeeping around the recurrence."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence


def check_lengths(lengths: Tensor, steps: int, batch: int) -> None:
    """Raise ValueError unless ``lengths`` is ``[batch]`` with every length in ``[1, steps]``."""
    if lengths.shape != (batch,):
        raise ValueError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
    if batch and (int(lengths.min()) < 1 or int(lengths.max()) > steps):
        raise ValueError(f"lengths must lie in [1, {steps}], got min {int(lengths.min())} max {int(lengths.max())}")


def batch_sizes(lengths: Tensor | None, steps: int, batch: int) -> list[int]:
    """How many sequences of a length-sorted batch are still running at each step."""
    if lengths is None:
        return [batch] * steps
    return (lengths.unsqueeze(0) > torch.arange(steps).unsqueeze(1)).sum(1).tolist()


def reverse_within_lengths(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of a time-major ``[T, B, ...]`` batch inside its own length.

    Padding stays where it is, so a reversed sequence still starts at step 0.
    """
    if lengths is None:
        return x.flip(0)
    steps = x.shape[0]
    t = torch.arange(steps, device=x.device).unsqueeze(1)
    lengths = lengths.to(x.device).unsqueeze(0)
    index = torch.where(t < lengths, lengths - 1 - t, t)
    index = index.view(steps, -1, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(0, index)


def repack_like(output: Tensor, packed: PackedSequence) -> PackedSequence:
    """Pack a padded time-major output with the same order and batch sizes as ``packed``."""
    sorted_indices = packed.sorted_indices
    if sorted_indices is not None:
        output = output.index_select(1, sorted_indices)
    steps = len(packed.batch_sizes)
    data = torch.cat([output[t, : int(packed.batch_sizes[t])] for t in range(steps)])
    return PackedSequence(data, packed.batch_sizes, sorted_indices, packed.unsorted_indices)
