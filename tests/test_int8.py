"""Tests for lstm_mt.lstm.int8: the LSTM's inference product with int8 weights (``precision=int8``).

References: the float32 product and layer they replace, and a product computed here from the
int8 weights and 7-bit rows written out in tensor operations.
"""

from __future__ import annotations

import copy

import pytest
import torch

from lstm_mt.lstm import LSTM, LSTMCell, int8
from lstm_mt.lstm.variants import CellVariant

torch.set_num_threads(1)


def quantized_reference(weight: torch.Tensor, bias: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``rows @ W.T + b`` with W symmetric int8 per output row and rows affine 7-bit per tensor."""
    w_scale = weight.abs().amax(dim=1, keepdim=True) / 127
    w_int = torch.round(weight / w_scale).clamp(-128, 127)
    low, high = min(float(rows.min()), 0.0), max(float(rows.max()), 0.0)
    r_scale = (high - low) / 127
    zero = round(-low / r_scale)
    r_int = (torch.round(rows / r_scale) + zero).clamp(0, 127)
    return (r_int - zero).double() @ (w_int * w_scale).double().t() * r_scale + bias.double()


def test_int8_product_is_the_quantized_product():
    torch.manual_seed(0)
    weight, bias, rows = torch.randn(64, 48) * 0.1, torch.randn(64) * 0.1, torch.randn(20, 48)
    ours = int8.Int8Product(weight, bias)(rows)
    exact = rows @ weight.t() + bias
    reference = quantized_reference(weight, bias, rows).float()
    scale = float(exact.abs().max())
    assert ours.dtype == torch.float32 and ours.shape == (20, 64)
    assert (ours - reference).abs().max() < 1e-5 * scale  # the same rounding, summed in another order
    assert (ours - exact).abs().max() < 0.04 * scale
    assert not torch.equal(ours, exact), "int8, not the float32 product"


def plain_and_int8(layer: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    quantized = copy.deepcopy(layer)
    assert int8.attach(quantized) == sum(isinstance(m, LSTMCell) for m in layer.modules())
    return layer, quantized


@pytest.mark.parametrize("variant", [None, CellVariant(peepholes=True)])
def test_int8_layer_matches_float32_within_rounding(variant):
    torch.manual_seed(1)
    fp32, quantized = plain_and_int8(LSTM(16, 32, num_layers=2, bidirectional=True, variant=variant).eval())
    x, lengths = torch.randn(7, 5, 16), torch.tensor([7, 6, 6, 3, 1])
    with torch.no_grad():
        (expected, (h_exp, c_exp)), (ours, (h, c)) = fp32(x, lengths), quantized(x, lengths)
    assert 0 < (ours - expected).abs().max() < 0.05
    assert (h - h_exp).abs().max() < 0.05 and (c - c_exp).abs().max() < 0.1
    padding = torch.arange(7).unsqueeze(1) >= lengths.unsqueeze(0)
    assert torch.equal(ours[padding], torch.zeros_like(ours[padding])), "padding stays exactly zero"


def test_int8_cell_step_matches_float32_within_rounding():
    torch.manual_seed(2)
    fp32, quantized = plain_and_int8(LSTMCell(24, 40).eval())
    x, state = torch.randn(9, 24), (torch.randn(9, 40) * 0.5, torch.randn(9, 40))
    with torch.no_grad():
        (h_exp, c_exp), (h, c) = fp32(x, state), quantized(x, state)
    assert 0 < (h - h_exp).abs().max() < 0.05 and (c - c_exp).abs().max() < 0.1


def test_cells_without_int8_weights_multiply_in_float32():
    cell = LSTMCell(8, 8).eval()
    x = torch.randn(3, 8)
    with torch.no_grad():
        first = cell(x)
        int8.attach(torch.nn.Sequential())  # another model's cells: this one is untouched
        assert torch.equal(cell(x)[0], first[0])
