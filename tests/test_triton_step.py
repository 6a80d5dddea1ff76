"""The Triton point-wise step against the textbook equations (`lstm_step`) and torch.nn.LSTM.

Each test runs on CPU tensors in Triton's interpreter (conftest sets ``TRITON_INTERPRET=1``
where there is no CUDA) and on CUDA tensors with the compiled kernels; a variant skips,
with the reason, where Triton or CUDA is missing.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest
import torch
from test_cell import max_diff, outputs_and_grads
from test_variants import LENGTHS, VARIANTS, assert_layer_equals_float64_reference, variant_cell
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lstm_mt.lstm import LSTM, LSTMCell, lstm_step, native, triton_step, variant_pointwise

HAS_TRITON = importlib.util.find_spec("triton") is not None


@pytest.fixture(params=["cpu", "cuda"])
def device(request) -> Iterator[torch.device]:
    """Where the kernels run: CPU tensors through Triton's interpreter, or CUDA."""
    if not HAS_TRITON:
        pytest.skip("Triton is not installed (pip install 'lstm-mt[gpu]')")
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if request.param == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("Triton's interpreter is off (conftest sets TRITON_INTERPRET=1 only where CUDA is absent)")
    with triton_step.only_on(request.param):
        yield torch.device(request.param)


def reference_step(pre: torch.Tensor, c_prev: torch.Tensor, dh: torch.Tensor, dc: torch.Tensor):
    """`lstm_step` in float64 with autograd: h, C, the gates, tanh(C), dL/dpre and dL/dC_prev
    for the loss ``Σ h·dh + Σ C·dc``."""
    pre = pre.double().requires_grad_()
    c_prev = c_prev.double().requires_grad_()
    h, c, gates = lstm_step(pre, c_prev)
    grad_pre, grad_c_prev = torch.autograd.grad((h * dh.double()).sum() + (c * dc.double()).sum(), [pre, c_prev])
    return h.detach(), c.detach(), torch.cat(gates, 1).detach(), c.detach().tanh(), grad_pre, grad_c_prev


def strided(rows: int, cols: int, device: torch.device, dtype=torch.float32, scale: float = 1.0) -> torch.Tensor:
    """A random ``[rows, cols]`` view with a row stride larger than its width (a slice of a bigger buffer)."""
    return (torch.randn(rows, cols + 5, device=device) * scale)[:, :cols].to(dtype)


@pytest.mark.parametrize("rows, hidden", [(5, 8), (3, 37), (130, 20), (2, 1100)])
def test_forward_and_backward_match_the_equations(device, rows, hidden):
    """Float32 everywhere, strided rows, H not a power of two, H above one tile: equal to float64 `lstm_step`."""
    torch.manual_seed(rows + hidden)
    pre, c_prev = strided(rows, 4 * hidden, device, scale=3.0), strided(rows, hidden, device)
    dh, dc = strided(rows, hidden, device), strided(rows, hidden, device)
    h_ref, c_ref, gates_ref, tanh_c_ref, grad_pre_ref, grad_c_prev_ref = reference_step(pre, c_prev, dh, dc)

    c, h = torch.empty(rows, hidden, device=device), torch.empty(rows, hidden, device=device)
    assert triton_step.forward(pre, c_prev, c, h)  # inference: C and h only
    assert torch.allclose(c.double(), c_ref, atol=1e-6) and torch.allclose(h.double(), h_ref, atol=1e-6)

    gates, tanh_c = strided(rows, 4 * hidden, device), strided(rows, hidden, device)
    c2, h2 = torch.empty_like(c), torch.empty_like(h)
    assert triton_step.forward(pre, c_prev, c2, h2, gates, tanh_c)
    assert torch.equal(c2, c) and torch.equal(h2, h)
    assert torch.allclose(gates.double(), gates_ref, atol=1e-6)
    assert torch.allclose(tanh_c.double(), tanh_c_ref, atol=1e-6)

    grad_pre, dc_prev = strided(rows, 4 * hidden, device), torch.full((rows, hidden), 0.5, device=device)
    assert triton_step.backward(gates, tanh_c, c_prev, dh, dc, grad_pre, dc_prev)
    assert torch.allclose(grad_pre.double(), grad_pre_ref, atol=1e-5)
    assert torch.allclose(dc_prev.double(), 0.5 + grad_c_prev_ref, atol=1e-5)  # added to what was there


def test_half_precision_inputs_with_a_float32_cell_state(device):
    """bf16 pre-activations with C kept in float32 (and fp16 throughout): within each format's rounding."""
    torch.manual_seed(3)
    rows, hidden = 6, 24
    for dtype, state_dtype, tolerance in [(torch.bfloat16, torch.float32, 2e-2), (torch.float16, torch.float16, 3e-3)]:
        pre, c_prev = strided(rows, 4 * hidden, device, dtype, 3.0), strided(rows, hidden, device, state_dtype)
        dh, dc = strided(rows, hidden, device, dtype), strided(rows, hidden, device, state_dtype)
        h_ref, c_ref, gates_ref, _, grad_pre_ref, grad_c_prev_ref = reference_step(pre, c_prev, dh, dc)
        c, h = torch.empty(rows, hidden, device=device, dtype=state_dtype), torch.empty(rows, hidden, device=device)
        h = h.to(dtype)
        gates, tanh_c = torch.empty_like(pre), torch.empty(rows, hidden, device=device, dtype=state_dtype)
        assert triton_step.forward(pre, c_prev, c, h, gates, tanh_c)
        assert c.dtype == state_dtype and h.dtype == dtype and gates.dtype == dtype
        for got, want in [(c, c_ref), (h, h_ref), (gates, gates_ref)]:
            assert (got.double() - want).abs().max() < tolerance * max(1.0, want.abs().max().item())
        grad_pre, dc_prev = torch.empty_like(pre), torch.zeros(rows, hidden, device=device, dtype=state_dtype)
        assert triton_step.backward(gates, tanh_c, c_prev, dh, dc, grad_pre, dc_prev)
        for got, want in [(grad_pre, grad_pre_ref), (dc_prev, grad_c_prev_ref)]:
            assert (got.double() - want).abs().max() < tolerance * max(1.0, want.abs().max().item())


@pytest.mark.filterwarnings(
    "ignore:overflow encountered in exp"
)  # the interpreter's numpy: exp(200) = inf, as intended
def test_saturates_and_propagates_nan_like_torch(device):
    pre = torch.tensor(
        [[float("nan"), 0.0, 0.0, 0.0], [200.0, -200.0, 200.0, 200.0], [-200.0, 200.0, -200.0, -200.0]], device=device
    )
    c_prev = torch.ones(3, 1, device=device)
    c, h = torch.empty_like(c_prev), torch.empty_like(c_prev)
    assert triton_step.forward(pre, c_prev, c, h)
    h_ref, c_ref, _ = lstm_step(pre, c_prev)
    assert torch.isnan(c[0]) and torch.isnan(h[0])
    assert torch.allclose(c[1:], c_ref[1:], atol=1e-6) and torch.allclose(h[1:], h_ref[1:], atol=1e-6)


def test_leaves_unsupported_tensors_alone(device):
    """float64, rows that are not contiguous, shapes that do not fit: nothing is written, the caller falls back."""
    c, h = torch.zeros(2, 3, device=device), torch.zeros(2, 3, device=device)
    c_prev = torch.randn(2, 3, device=device)
    assert not triton_step.forward(torch.randn(2, 12, device=device, dtype=torch.float64), c_prev, c, h)
    assert not triton_step.forward(torch.randn(12, 2, device=device).t(), c_prev, c, h)
    assert not triton_step.forward(torch.randn(2, 11, device=device), c_prev, c, h)
    assert not triton_step.forward(torch.randn(3, 12, device=device), c_prev, c, h)
    assert c.abs().sum() == 0 and h.abs().sum() == 0
    assert not triton_step.usable(torch.randn(2, 3, device=device, dtype=torch.float64))
    assert triton_step.usable(c_prev)


@pytest.fixture
def launches(device, monkeypatch) -> Iterator[list[str]]:
    """The compiled C kernel off (CPU runs the Triton interpreter instead); yields the Triton launches made."""
    monkeypatch.setattr(native, "_library", lambda: None)
    calls: list[str] = []
    for name in ("forward", "backward"):
        launch = getattr(triton_step, name)
        monkeypatch.setattr(triton_step, name, lambda *args, _n=name, _f=launch: calls.append(_n) or _f(*args))
    yield calls


def test_lstm_and_cell_match_torch_through_the_kernels(device, launches, monkeypatch):
    """Layers with padding and single steps, training and inference: the fused path equals torch.nn.LSTM
    (cuDNN on CUDA, its TF32 off) with copied weights, outputs and every gradient."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(14)
    tolerance = 1e-5 if device.type == "cpu" else 1e-4
    reference = torch.nn.LSTM(6, 8, 2, bidirectional=True).to(device)
    ours = LSTM.from_torch(reference)
    x = torch.randn(7, 5, 6, device=device, requires_grad=True)
    lengths = torch.tensor([7, 3, 5, 1, 6])
    h0 = torch.randn(4, 5, 8, device=device, requires_grad=True)
    c0 = torch.randn_like(h0, requires_grad=True)
    weights = [torch.randn(7, 5, 16, device=device), torch.randn(4, 5, 8, device=device), torch.randn_like(h0)]

    def run_reference(module):
        output, state = module(pack_padded_sequence(x, lengths, enforce_sorted=False), (h0, c0))
        return pad_packed_sequence(output, total_length=7)[0], state

    expected, expected_grads = outputs_and_grads(reference, run_reference, [x, h0, c0], weights)
    actual, actual_grads = outputs_and_grads(ours, lambda m: m(x, lengths, (h0, c0)), [x, h0, c0], weights)
    assert max_diff(actual, expected) < tolerance
    assert max_diff(actual_grads, expected_grads) < tolerance
    with torch.no_grad():
        assert max_diff([ours(x, lengths, (h0, c0))[0]], [expected[0]]) < tolerance

    ref_cell = torch.nn.LSTMCell(6, 8).to(device)
    cell = LSTMCell.from_torch(ref_cell)
    h, c = h0[0].detach().requires_grad_(), c0[0].detach().requires_grad_()
    outputs = [cell(x[0], (h, c)), ref_cell(x[0], (h, c))]
    assert max_diff(list(outputs[0]), list(outputs[1])) < tolerance
    loss_weights = torch.randn(2, 5, 8, device=device)
    grads = [
        torch.autograd.grad(sum((t * w).sum() for t, w in zip(out, loss_weights)), [x, h, c, *module.parameters()])
        for out, module in zip(outputs, (cell, ref_cell))
    ]
    assert max_diff(list(grads[0]), list(grads[1])) < tolerance
    with torch.no_grad():
        assert max_diff(list(cell(x[0], (h, c))), list(outputs[1])) < tolerance
    assert set(launches) == {"forward", "backward"}


def test_bf16_autocast_through_the_kernels_stays_near_float32(device, launches):
    """Under bf16 autocast the layer runs the kernels in bf16: outputs within bf16 rounding of float32,
    finite float32 gradients."""
    torch.manual_seed(15)
    lstm = LSTM(6, 8, bidirectional=True).to(device)
    x = torch.randn(5, 3, 6, device=device)
    lengths = torch.tensor([5, 2, 4])
    expected, _ = lstm(x, lengths)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        output, _ = lstm(x, lengths)
    assert output.dtype == torch.bfloat16
    assert (output.float() - expected).abs().max() < 0.05
    output.float().sum().backward()
    assert all(
        p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in lstm.parameters()
    )
    assert "forward" in launches and "backward" in launches


def test_kernels_that_fail_their_check_leave_the_work_to_torch(device, monkeypatch, caplog):
    """A kernel that does not compile (or computes wrong values) is never used: one warning, then torch."""
    monkeypatch.setattr(triton_step, "_launch_backward", lambda *args: (_ for _ in ()).throw(RuntimeError("boom")))
    triton_step._works_on.cache_clear()
    try:
        c, h = torch.zeros(2, 3, device=device), torch.zeros(2, 3, device=device)
        assert not triton_step.usable(c)
        assert not triton_step.forward(torch.randn(2, 12, device=device), torch.randn(2, 3, device=device), c, h)
        assert c.abs().sum() == 0 and "boom" in caplog.text
    finally:
        triton_step._works_on.cache_clear()


def test_the_check_passes_for_every_dtype_and_catches_a_wrong_kernel(device, monkeypatch):
    """`agrees_with_torch`, run once per device and dtype before the kernels are used: true for these kernels,
    false for one whose h is off by 1e-4 (float32)."""
    assert all(triton_step.agrees_with_torch(device, dtype) for dtype in triton_step.DTYPES)
    launch = triton_step._launch_forward

    def slightly_wrong(arguments, *shape, **keep):
        launch(arguments, *shape, **keep)
        arguments[6].add_(1e-4)  # h: arguments are pre, its row stride, c_prev, its stride, c, its stride, h, ...

    monkeypatch.setattr(triton_step, "_launch_forward", slightly_wrong)
    assert not triton_step.agrees_with_torch(device, torch.float32)


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("LSTM_MT_TRITON", "0")
    triton_step._kernels.cache_clear()
    try:
        assert not triton_step.available()
    finally:
        triton_step._kernels.cache_clear()


@pytest.mark.parametrize("context", ["no_grad", "inference_mode", "autocast"])
def test_the_first_use_may_come_inside_no_grad_or_autocast(device, context):
    """The once-per-dtype check differentiates a float64 reference; it must pass when the first bf16 step
    of a process comes from decoding (no_grad, inference_mode) or under autocast (seen on an H200: the bf16
    check failed there and the kernels were given up for the whole run)."""
    contexts = {
        "no_grad": torch.no_grad,
        "inference_mode": torch.inference_mode,
        "autocast": lambda: torch.autocast(device.type, dtype=torch.bfloat16),
    }
    triton_step._works_on.cache_clear()
    try:
        with contexts[context]():
            assert triton_step._works_on(device, torch.bfloat16)
    finally:
        triton_step._works_on.cache_clear()


@pytest.mark.parametrize("name", ["all", "layer_norm", "zoneout", "coupled_gates"])
def test_variant_kernels_match_the_written_out_step(device, name, monkeypatch):
    """The cell variants' Triton step through a padded layer, training: outputs and all gradients equal
    `variant_step` in float64, to float32 tolerance."""
    monkeypatch.setattr(native, "_library", lambda: None)
    launched: set[str] = set()
    for function in ("variant_forward", "variant_backward"):
        kernel = getattr(triton_step, function)
        monkeypatch.setattr(
            triton_step, function, lambda *a, _f=kernel, _n=function, **k: _f(*a, **k) and not launched.add(_n)
        )
    cell = variant_cell(VARIANTS[name], torch.float32, training=True).to(device)
    x = torch.randn(5, 4, 5, device=device, requires_grad=True)
    h0 = torch.randn(4, 6, device=device, requires_grad=True)
    c0 = torch.randn(4, 6, device=device, requires_grad=True)
    noise = cell.step_noise(x, cell.sequence_noise(x), steps=5)
    assert_layer_equals_float64_reference(cell, x, h0, c0, noise, LENGTHS.to(device))
    assert launched == {"variant_forward", "variant_backward"}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_variant_kernels_pass_their_check_in_half_precision(device, dtype):
    """The first-use check of the variant kernels (every variant, coupled gates and not) in bf16 and fp16 passes:
    float32 arithmetic inside, within each format's rounding of the tensor operations in float32."""
    variant_pointwise._kernel_checked.cache_clear()
    try:
        assert variant_pointwise._kernel_checked(variant_pointwise._KERNELS.index(triton_step), device, dtype)
    finally:
        variant_pointwise._kernel_checked.cache_clear()
