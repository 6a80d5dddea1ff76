"""MKL's packed products (`lstm_mt.lstm.mkl`) and the inference layer that runs on them in one C call."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lstm_mt.lstm import LSTM, LSTMCell, mkl, native
from lstm_mt.lstm.variants import CellVariant

needs_mkl = pytest.mark.skipif(not mkl.available(), reason="this PyTorch build exports no MKL packed GEMM")


@needs_mkl
@pytest.mark.parametrize("rows", [1, 3, mkl.PACKED_FOR_ROWS, 100])
def test_a_packed_weight_multiplies_any_row_count(rows):
    """One pack serves every row count a recurrence meets, with and without a bias."""
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(70, 45))
    x, bias = torch.randn(rows, 45), torch.randn(70)
    want = x.double() @ weight.detach().double().T
    assert torch.allclose(mkl.linear(x, mkl.packed(weight), 70).double(), want, atol=1e-4)
    assert torch.allclose(mkl.linear(x, mkl.packed(weight), 70, bias).double(), want + bias.double(), atol=1e-4)


def layer_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the whole-buffer C functions called from now on, with MKL's route chosen on any CPU."""
    monkeypatch.setenv("LSTM_MT_MKL", "1")
    calls: list[str] = []
    call = native._call_plain
    monkeypatch.setattr(native, "_call_plain", lambda name, *args: (calls.append(name), call(name, *args))[1])
    return calls


@needs_mkl
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("given_state", [False, True])
def test_inference_layer_runs_in_one_c_call_and_matches_torch(monkeypatch, bidirectional, given_state):
    """No-grad float32: each layer direction is one ``lstm_layer_forward`` call, with torch's numbers on a
    padded batch (padding zero), with and without an initial state, at a hidden size that fills no vector."""
    if not native.available():
        pytest.skip("no C compiler here: the compiled kernel is not built")
    calls = layer_calls(monkeypatch)
    torch.manual_seed(1)
    reference = torch.nn.LSTM(10, 13, 2, bidirectional=bidirectional)
    ours = LSTM.from_torch(reference)
    directions = 2 if bidirectional else 1
    x, lengths = torch.randn(9, 6, 10), torch.tensor([9, 2, 5, 1, 9, 4])
    state = tuple(torch.randn(2 * directions, 6, 13) for _ in range(2)) if given_state else None
    with torch.no_grad():
        packed_out, (expected_h, expected_c) = reference(pack_padded_sequence(x, lengths, enforce_sorted=False), state)
        expected, _ = pad_packed_sequence(packed_out, total_length=9)
        actual, (actual_h, actual_c) = ours(x, lengths, state)
    for got, want in ((actual, expected), (actual_h, expected_h), (actual_c, expected_c)):
        assert torch.allclose(got, want, atol=2e-6)
    padding = torch.arange(9).unsqueeze(1) >= lengths
    assert padding.any() and actual[padding].eq(0).all()
    assert calls == ["lstm_layer_forward"] * (2 * directions)


@needs_mkl
def test_the_decoders_inference_step_multiplies_on_mkl_as_torchs_cell(monkeypatch):
    """A single no-grad step (the decoder's) takes ``W·[h, x] + b`` from MKL's packed product, with torch's numbers."""
    monkeypatch.setenv("LSTM_MT_MKL", "1")
    products: list[int] = []
    linear = mkl.linear
    monkeypatch.setattr(mkl, "linear", lambda rows, *args: (products.append(rows.shape[0]), linear(rows, *args))[1])
    torch.manual_seed(4)
    reference = torch.nn.LSTMCell(10, 12)
    ours = LSTMCell.from_torch(reference)
    x, h, c = torch.randn(3, 10), torch.randn(3, 12), torch.randn(3, 12)
    with torch.no_grad():
        for _ in range(3):  # several steps: one pack reused
            (h_ref, c_ref), (h, c) = reference(x, (h, c)), ours(x, (h, c))
            assert torch.allclose(h, h_ref, atol=2e-6) and torch.allclose(c, c_ref, atol=2e-6)
    assert products == [3, 3, 3]


def test_without_mkl_inference_keeps_onednn_products(monkeypatch):
    """Where PyTorch carries no MKL the layer runs step by step as before, with the same numbers."""
    monkeypatch.setattr(mkl, "_library", lambda: None)
    calls = layer_calls(monkeypatch)
    torch.manual_seed(2)
    reference = torch.nn.LSTM(8, 11)
    ours = LSTM.from_torch(reference)
    x = torch.randn(6, 4, 8)
    with torch.no_grad():
        assert torch.allclose(ours(x)[0], reference(x)[0], atol=2e-6)
    assert "lstm_layer_forward" not in calls and not mkl.available()


@needs_mkl
@pytest.mark.parametrize(
    ("setting", "intel", "expected"), [("", True, True), ("", False, False), ("1", False, True), ("0", True, False)]
)
def test_mkl_is_preferred_on_intel_cpus_unless_the_user_says(monkeypatch, setting, intel, expected):
    """MKL's fast kernels are Intel's: elsewhere oneDNN keeps the products unless ``LSTM_MT_MKL=1``."""
    monkeypatch.setenv("LSTM_MT_MKL", setting)
    monkeypatch.setattr(mkl, "_intel_cpu", lambda: intel)
    assert mkl.preferred() is expected


VARIANTS = {
    "zoneout": CellVariant(zoneout_c=0.3, zoneout_h=0.2),
    "peepholes": CellVariant(peepholes=True),
    "coupled_gates": CellVariant(coupled_gates=True),
    "all_three": CellVariant(zoneout_c=0.1, zoneout_h=0.4, peepholes=True, coupled_gates=True),
}


@needs_mkl
@pytest.mark.parametrize("name", VARIANTS)
def test_a_variant_layer_in_evaluation_runs_in_one_c_call_as_its_tensor_operations(monkeypatch, name):
    """Zoneout (its expectation), peepholes and CIFG in eval mode take the one-call layer too, and give the
    numbers of the variants' tensor operations (the C kernels off), padding zero."""
    if not native.available():
        pytest.skip("no C compiler here: the compiled kernel is not built")
    torch.manual_seed(3)
    ours = LSTM(7, 12, 2, bidirectional=True, variant=VARIANTS[name]).eval()
    with torch.no_grad():
        for parameter in ours.parameters():  # peephole weights start at zero: make them count
            parameter.uniform_(-0.5, 0.5)
    x, lengths = torch.randn(8, 5, 7), torch.tensor([8, 3, 6, 1, 8])
    state = tuple(torch.randn(4, 5, 12) for _ in range(2))
    with torch.no_grad(), monkeypatch.context() as tensor_operations:
        tensor_operations.setattr(native, "_library", lambda: None)
        expected, (expected_h, expected_c) = ours(x, lengths, state)
    calls = layer_calls(monkeypatch)
    with torch.no_grad():
        actual, (actual_h, actual_c) = ours(x, lengths, state)
    for got, want in ((actual, expected), (actual_h, expected_h), (actual_c, expected_c)):
        assert torch.allclose(got, want, atol=2e-6)
    padding = torch.arange(8).unsqueeze(1) >= lengths
    assert actual[padding].eq(0).all()
    assert calls == ["lstm_layer_forward"] * 4
