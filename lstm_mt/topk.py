"""Exact top-k over a vocabulary by blocks: what search picks at every step, without sorting the vocabulary.

On CPU, ``torch.topk`` over a sentence's ``K * V`` extensions and ``torch.max`` with indices
over a row of ``V`` log-probabilities are scalar loops, several times slower than the vectorized
``amax``. Both selections here first take the maximum of each block of `BLOCK` consecutive
tokens (one vectorized pass), keep the ``k`` blocks with the largest maxima, and select among
those blocks' tokens only. That is exact: a token among the ``k`` best lies in a block whose
maximum is at least its own value, and fewer than ``k`` blocks can have a larger maximum. So the
values returned are those of ``torch.topk``/``torch.max``; only the order of exactly tied values
may differ (`VocabularyBlocks.best_extensions`), and the argmax is the first maximum, as ``torch.max``'s.
`VocabularyBlocks` takes the block maxima once per step for every selection of that step.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["BLOCK", "VocabularyBlocks", "row_argmax"]

BLOCK = 64  # tokens per block: a few AVX-512 registers; 8,000 tokens make 125 blocks


class VocabularyBlocks:
    """Rows of values over a vocabulary ``[R, V]`` with the maximum of every block of `BLOCK` tokens,
    computed once for all the selections of a decoding step.

    A vocabulary of fewer than ``4 * BLOCK`` tokens keeps no maxima: its selections are plain
    ``torch.topk``/``torch.max``.
    """

    def __init__(self, values: Tensor) -> None:
        self.values = values.contiguous()
        self.maxima = _block_maxima(values) if values.shape[1] >= 4 * BLOCK else None  # [R, blocks]

    def best_extensions(self, bias: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
        """The ``k`` largest ``bias[i, g] + values[i * G + g, v]`` of each i over all ``(g, v)``, best first.

        ``bias`` ``[n, G]`` (e.g. the scores of a sentence's G beams, whose log-probabilities
        are rows ``i * G + g``). Returns the sums ``[n, k]``, their g and their v (each
        ``[n, k]``): ``torch.topk`` of the flattened sums, computed by blocks.
        """
        n, groups = bias.shape
        width = self.values.shape[1]
        values = self.values.view(n, groups, width)
        if self.maxima is None or groups * self.maxima.shape[1] < k:
            top, flat = (bias.unsqueeze(2) + values).view(n, groups * width).topk(k, dim=1)
            return top, flat // width, flat % width
        blocks = self.maxima.shape[1]
        chosen, real = _top_indices((bias.unsqueeze(2) + self.maxima.view(n, groups, blocks)).view(n, -1), k)
        group, block = chosen // blocks, chosen % blocks
        tokens, candidates = self._block_values(group + groups * torch.arange(n, device=bias.device)[:, None], block)
        if real is not None:
            candidates = candidates.masked_fill(~real.unsqueeze(2), float("-inf"))
        sums = (bias.gather(1, group).unsqueeze(2) + candidates).view(n, k * BLOCK)
        top, picked = sums.topk(k, dim=1)
        return top, group.gather(1, picked // BLOCK), tokens.view(n, k * BLOCK).gather(1, picked)

    def argmax(self, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The maximum of each row (of ``rows``, default all) and the index of its first occurrence:
        ``values[rows].max(dim=1)``."""
        if self.maxima is None:
            best, index = (self.values if rows is None else self.values[rows]).max(dim=1)
            return best, index
        maxima = self.maxima if rows is None else self.maxima[rows]
        rows = torch.arange(maxima.shape[0], device=maxima.device) if rows is None else rows
        best, block = maxima.max(dim=1)
        tokens, candidates = self._block_values(rows.unsqueeze(1), block.unsqueeze(1))  # [r, 1, BLOCK]
        first = candidates.squeeze(1).argmax(dim=1, keepdim=True)
        return best, tokens.squeeze(1).gather(1, first).squeeze(1)

    def _block_values(self, rows: Tensor, block: Tensor) -> tuple[Tensor, Tensor]:
        """The tokens ``[n, k, BLOCK]`` of blocks ``block`` ``[n, k]`` of rows ``rows`` ``[n, k]`` and their
        values; where the last block is short, its positions past the vocabulary repeat its last
        token with value -inf."""
        width = self.values.shape[1]
        tokens = block.unsqueeze(2) * BLOCK + torch.arange(BLOCK, device=block.device)
        inside = None if width % BLOCK == 0 else tokens < width
        if inside is not None:
            tokens = tokens.clamp(max=width - 1)
        flat = (rows.unsqueeze(2) * width + tokens).view(-1)
        candidates = self.values.view(-1).index_select(0, flat).view(tokens.shape)
        if inside is not None:
            candidates = candidates.masked_fill(~inside, float("-inf"))
        return tokens, candidates


def row_argmax(values: Tensor) -> tuple[Tensor, Tensor]:
    """The maximum of each row of ``values`` ``[R, V]`` and the index of its first occurrence: ``values.max(dim=1)``."""
    return VocabularyBlocks(values).argmax()


def _top_indices(values: Tensor, k: int) -> tuple[Tensor, Tensor | None]:
    """Where the ``k`` largest of each row of ``values`` ``[n, W]`` are, and which of them are real.

    On CPU, ``torch.topk`` sorts partially only from ``64 * k`` elements a row (ATen's TopKImpl;
    below that, nth_element, ~3x slower for 625 block maxima and k = 10), so shorter rows are
    padded with -inf. A padding position is chosen only where fewer than ``k`` values exceed -inf;
    it comes back as the row's last position, marked not real (None: all are real).
    """
    width = values.shape[1]
    if values.device.type != "cpu" or width >= 64 * k:
        return values.topk(k, dim=1).indices, None
    padded = torch.cat([values, values.new_full((values.shape[0], 64 * k - width), float("-inf"))], dim=1)
    chosen = padded.topk(k, dim=1).indices
    return chosen.clamp(max=width - 1), chosen < width


def _block_maxima(values: Tensor) -> Tensor:
    """``[R, V]`` -> the maximum of every block of `BLOCK` tokens ``[R, ceil(V / BLOCK)]``."""
    width = values.shape[1]
    whole = width // BLOCK * BLOCK
    maxima = values[:, :whole].unflatten(1, (whole // BLOCK, BLOCK)).amax(dim=2)
    if whole == width:
        return maxima
    return torch.cat([maxima, values[:, whole:].amax(dim=1, keepdim=True)], dim=1)
