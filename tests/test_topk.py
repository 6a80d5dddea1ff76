"""Tests for lstm_mt.topk: the blocked selections give torch.topk's and torch.max's answers exactly."""

from __future__ import annotations

import pytest
import torch

from lstm_mt.topk import BLOCK, VocabularyBlocks, row_argmax

WIDTHS = [7, 4 * BLOCK - 1, 4 * BLOCK, 500, 8000, 8003]  # small (plain path), whole blocks, a short last block


def _values(shape: tuple[int, ...], seed: int, ties: bool, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Log-probability-like values; with ``ties``, few distinct ones (so blocks and rows tie), and some -inf."""
    generator = torch.Generator().manual_seed(seed)
    if ties:
        values = torch.randint(-6, 0, shape, generator=generator).to(dtype)
    else:
        values = torch.randn(shape, generator=generator, dtype=dtype) * 3 - 8
    values[..., 0] = float("-inf")  # like PAD
    return values


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_best_extensions_are_topk_of_every_sum(width, ties, dtype):
    n, groups = 6, 5
    values = _values((n, groups, width), seed=width, ties=ties, dtype=dtype)
    bias = _values((n, groups), seed=width + 1, ties=ties, dtype=dtype)
    bias[0, 1:] = float("-inf")  # a sentence with one live beam, as at the first step
    sums = (bias.unsqueeze(2) + values).view(n, groups * width)
    for k in sorted({1, 2 * groups, min(40, groups * width)}):
        top, group, index = VocabularyBlocks(values.view(n * groups, width)).best_extensions(bias, k)
        expected = sums.topk(k, dim=1).values
        assert torch.equal(top, expected)  # the same values, bit for bit, best first
        assert torch.equal(bias.gather(1, group) + values[torch.arange(n)[:, None], group, index], top)
        assert ((index >= 0) & (index < width)).all()
        finite = top.isfinite()
        for row in range(n):  # every finite sum picked once
            pairs = list(zip(group[row][finite[row]].tolist(), index[row][finite[row]].tolist()))
            assert len(pairs) == len(set(pairs))


def test_best_extensions_when_fewer_sums_are_finite_than_asked():
    """A vocabulary where only two tokens are possible: the rest of the k are -inf, all from real tokens."""
    values = torch.full((2, 3, 8000), float("-inf"))
    values[:, :, [5, 4000]] = torch.tensor([-1.0, -2.0])
    top, group, index = VocabularyBlocks(values.view(6, 8000)).best_extensions(torch.zeros(2, 3), 10)
    assert top[:, :6].tolist() == [[-1.0] * 3 + [-2.0] * 3] * 2
    assert (top[:, 6:] == float("-inf")).all() and (index < 8000).all()


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("ties", [False, True])
def test_row_argmax_is_torch_max_with_its_first_index(width, ties):
    values = _values((50, width), seed=width, ties=ties)
    values[3] = float("-inf")  # a row with nothing possible: index 0, like torch.max
    best, index = row_argmax(values)
    expected_best, expected_index = values.max(dim=1)
    assert torch.equal(best, expected_best)
    assert torch.equal(index, expected_index)
    rows = torch.tensor([7, 3, 3, 0, 49])  # some rows, in any order, repeated
    best, index = VocabularyBlocks(values).argmax(rows)
    assert torch.equal(best, expected_best[rows])
    assert torch.equal(index, expected_index[rows])
