"""Exact top-k over a vocabulary by blocks: what search picks at every step, without sorting the vocabulary.

On CPU, ``torch.topk`` over a sentence's ``K * V`` extensions and ``torch.max`` with indices
over a row of ``V`` log-probabilities are scalar loops, several times slower than the vectorized
``amax``. Both selections here first take the maximum of each block of `BLOCK` consecutive
tokens (one vectorized pass), keep the ``k`` blocks with the largest maxima, and select among
those blocks' tokens only. That is exact: a token among the ``k`` best lies in a block whose
maximum is at least its own value, and fewer than ``k`` blocks can have a larger maximum. So the
values returned are those of ``torch.topk``/``torch.max``; only the order of exactly tied values
may differ (`best_extensions`), and `row_argmax` returns the first maximum, as ``torch.max`` does.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["BLOCK", "best_extensions", "row_argmax"]

BLOCK = 64  # tokens per block: a few AVX-512 registers; 8,000 tokens make 125 blocks


def best_extensions(values: Tensor, bias: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """The ``k`` largest ``bias[i, g] + values[i, g, v]`` of each row i over all ``(g, v)``, best first.

    ``values`` ``[n, G, V]`` (e.g. the log-probabilities of a sentence's G beams), ``bias``
    ``[n, G]`` (the beams' scores). Returns the sums ``[n, k]``, their group g and their
    index v (each ``[n, k]``): ``torch.topk`` of the flattened sums, computed by blocks.
    """
    n, groups, width = values.shape
    if width < 4 * BLOCK or groups * (width // BLOCK) < k:
        totals = (bias.unsqueeze(2) + values).view(n, groups * width)
        top, flat = totals.topk(k, dim=1)
        return top, flat // width, flat % width
    maxima = _block_maxima(values)  # [n, G, blocks]
    blocks = maxima.shape[2]
    chosen = (bias.unsqueeze(2) + maxima).view(n, groups * blocks).topk(k, dim=1).indices
    group, block = chosen // blocks, chosen % blocks
    tokens, inside = _block_tokens(block, width)  # [n, k, BLOCK]
    candidates = values.reshape(n, groups * width).gather(1, (group.unsqueeze(2) * width + tokens).view(n, -1))
    candidates = candidates.view(n, k, BLOCK)
    if inside is not None:
        candidates = candidates.masked_fill(~inside, float("-inf"))
    sums = (bias.gather(1, group).unsqueeze(2) + candidates).view(n, k * BLOCK)
    top, picked = sums.topk(k, dim=1)
    return top, group.gather(1, picked // BLOCK), tokens.view(n, k * BLOCK).gather(1, picked)


def row_argmax(values: Tensor) -> tuple[Tensor, Tensor]:
    """The maximum of each row of ``values`` ``[R, V]`` and the index of its first occurrence: ``values.max(dim=1)``."""
    rows, width = values.shape
    if width < 4 * BLOCK:
        best, index = values.max(dim=1)
        return best, index
    maxima = _block_maxima(values.unsqueeze(1)).squeeze(1)  # [R, blocks]
    best, block = maxima.max(dim=1)
    tokens, inside = _block_tokens(block.unsqueeze(1), width)  # [R, 1, BLOCK]
    candidates = values.gather(1, tokens.view(rows, BLOCK))
    if inside is not None:
        candidates = candidates.masked_fill(~inside.view(rows, BLOCK), float("-inf"))
    return best, tokens.view(rows, BLOCK).gather(1, candidates.argmax(dim=1, keepdim=True)).squeeze(1)


def _block_maxima(values: Tensor) -> Tensor:
    """``[n, G, V]`` -> the maximum of every block of `BLOCK` tokens ``[n, G, ceil(V / BLOCK)]``."""
    width = values.shape[2]
    whole = width // BLOCK * BLOCK
    maxima = values[..., :whole].unflatten(2, (whole // BLOCK, BLOCK)).amax(dim=3)
    if whole == width:
        return maxima
    return torch.cat([maxima, values[..., whole:].amax(dim=2, keepdim=True)], dim=2)


def _block_tokens(block: Tensor, width: int) -> tuple[Tensor, Tensor | None]:
    """The token indices of blocks ``block`` ``[n, k]`` as ``[n, k, BLOCK]``, clamped to the vocabulary,
    and where the last, short block runs past its end, which of them are real (None when all are)."""
    tokens = block.unsqueeze(2) * BLOCK + torch.arange(BLOCK, device=block.device)
    if width % BLOCK == 0:
        return tokens, None
    return tokens.clamp(max=width - 1), tokens < width
