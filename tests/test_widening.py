"""lstm_mt.lstm.widening: the float32 C kernel on bf16/fp16 CPU tensors, against the equations in float64."""

from __future__ import annotations

import pytest
import torch
from conftest import use_point_wise

from lstm_mt.lstm import LSTM, native, pointwise, widening

torch.set_num_threads(1)

ROUNDING = {torch.bfloat16: 2**-8, torch.float16: 2**-11}  # relative rounding of one conversion


@pytest.fixture(autouse=True)
def compiled_kernel(monkeypatch):
    use_point_wise("native", monkeypatch)


def reference_step(pre, c_prev, dh, dc):
    """The step and its backward from the equations, in float64, on the (already rounded) inputs."""
    pre, c_prev, dh, dc = (t.double() for t in (pre, c_prev, dh, dc))
    i, f, g, o = pre.chunk(4, dim=1)
    i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
    c = f * c_prev + i * g
    tanh_c = c.tanh()
    dC = dc + dh * o * (1 - tanh_c**2)
    grad_pre = torch.cat(
        [dC * g * i * (1 - i), dC * c_prev * f * (1 - f), dC * i * (1 - g**2), dh * tanh_c * o * (1 - o)], 1
    )
    return {
        "c": c,
        "h": o * tanh_c,
        "gates": torch.cat([i, f, g, o], 1),
        "tanh_c": tanh_c,
        "grad_pre": grad_pre,
        "dC": dC,
    }


def assert_rounded_from(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype, factor: float = 4.0) -> None:
    """``got`` (in ``dtype``) is ``want`` up to a few roundings of ``dtype`` (the C kernel's approximate
    exp adds ~1e-6 relative, far below)."""
    assert got.dtype == dtype
    error = (got.double() - want).abs()
    assert bool((error <= factor * ROUNDING[dtype] * (want.abs() + 1e-3)).all()), float(error.max())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_one_step_forward_and_backward_follow_the_equations(dtype):
    generator = torch.Generator().manual_seed(0)
    rows, H = 37, 24
    # rows of a larger buffer, as the layer recurrence passes them
    pre = (torch.randn(rows, 4 * H + 5, generator=generator) * 3)[:, : 4 * H].to(dtype)
    c_prev, dh, dc = (torch.randn(rows, H, generator=generator).to(dtype) for _ in range(3))
    want = reference_step(pre, c_prev, dh, dc)

    c, h, tanh_c = (torch.empty(rows, H, dtype=dtype) for _ in range(3))
    gates = torch.empty(rows, 4 * H, dtype=dtype)
    assert widening.forward(pre, c_prev, c, h, gates, tanh_c)
    for name, got in (("c", c), ("h", h), ("gates", gates), ("tanh_c", tanh_c)):
        assert_rounded_from(got, want[name], dtype)

    grad_pre, dc_prev = torch.empty(rows, 4 * H, dtype=dtype), torch.ones(rows, H, dtype=dtype)
    gates_exact = want["gates"].to(dtype)  # the backward reads the stored (rounded) gates
    want = reference_step(pre, c_prev, dh, dc)
    assert widening.backward(gates_exact, tanh_c, c_prev, dh, dc, grad_pre, dc_prev)
    # the gradients are products of rounded gates: allow a few more roundings
    assert (grad_pre.double() - want["grad_pre"]).abs().max() < 16 * ROUNDING[dtype] * want["grad_pre"].abs().max()
    expected_dc_prev = 1 + want["dC"] * want["gates"][:, H : 2 * H]
    assert (dc_prev.double() - expected_dc_prev).abs().max() < 16 * ROUNDING[dtype] * expected_dc_prev.abs().max()


def test_other_tensors_are_left_to_the_next_kernel():
    """float32 is the C kernel's own business, float64 and mixed dtypes nobody's here: False, nothing written."""
    for dtype in (torch.float32, torch.float64):
        pre, c_prev = torch.zeros(2, 8, dtype=dtype), torch.zeros(2, 2, dtype=dtype)
        c, h = torch.full((2, 2), 7.0, dtype=dtype), torch.full((2, 2), 7.0, dtype=dtype)
        assert not widening.forward(pre, c_prev, c, h)
        assert bool((c == 7).all() and (h == 7).all())
    mixed = torch.zeros(2, 2)
    assert not widening.forward(torch.zeros(2, 8, dtype=torch.bfloat16), mixed, mixed.bfloat16(), mixed.bfloat16())


def test_without_the_compiled_kernel_nothing_is_taken(monkeypatch):
    monkeypatch.setattr(native, "_library", lambda: None)
    bf16 = torch.zeros(2, 2, dtype=torch.bfloat16)
    assert not widening.usable(bf16)
    assert not widening.forward(torch.zeros(2, 8, dtype=torch.bfloat16), bf16, bf16.clone(), bf16.clone())


def layer_run(lstm: LSTM, x: torch.Tensor, lengths: torch.Tensor, bf16: bool = True) -> list[torch.Tensor]:
    """A padded bidirectional layer stack (under bf16 autocast): output and the gradients of x and all weights."""
    x = x.detach().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        output, _ = lstm(x, lengths)
    output = output.to(x.dtype)
    reduction = torch.randn(output.shape, generator=torch.Generator().manual_seed(5)).to(x.dtype)
    grads = torch.autograd.grad((output * reduction).sum(), [x, *lstm.parameters()])
    return [output.detach(), *grads]


def test_a_bf16_layer_with_the_widened_kernel_is_as_close_to_float64_as_with_tensor_operations(monkeypatch):
    """Outputs and every gradient of a padded 2-layer bidirectional LSTM under bf16 autocast: the widened
    C kernel (float32 arithmetic) is never further from float64 than the bf16 tensor operations."""
    torch.manual_seed(8)
    lstm = LSTM(12, 16, num_layers=2, bidirectional=True)
    x, lengths = torch.randn(9, 5, 12), torch.tensor([9, 4, 7, 1, 9])
    monkeypatch.setattr(pointwise, "_KERNELS", [k for k in pointwise._KERNELS if k is not widening])
    tensor_ops = layer_run(lstm, x, lengths)
    monkeypatch.setattr(pointwise, "_KERNELS", [*pointwise._KERNELS, widening])
    calls: list[str] = []
    monkeypatch.setattr(widening, "native", CountingNative(calls))
    widened = layer_run(lstm, x, lengths)
    assert calls.count("forward") == 2 * 2 * 9 and calls.count("backward") == 2 * 2 * 9  # layers x directions x steps
    exact = layer_run(lstm.double(), x.double(), lengths, bf16=False)
    for ours, theirs, want in zip(widened, tensor_ops, exact):
        assert (ours.double() - want).norm() <= (theirs.double() - want).norm()  # measured: 0.3-0.7 % against 0.4-1.4 %


class CountingNative:
    """`native` that records each call it passes on."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def available(self) -> bool:
        return native.available()

    def forward(self, *args) -> bool:
        self.calls.append("forward")
        return native.forward(*args)

    def backward(self, *args) -> bool:
        self.calls.append("backward")
        return native.backward(*args)
