"""The explicit LSTM against torch.nn.LSTM / nn.LSTMCell with copied weights."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import use_point_wise
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lstm_mt import memory, profiling
from lstm_mt.lstm import GATE_NAMES, LSTM, GateRecorder, LSTMCell, autograd, lstm_step, native, onednn, pointwise
from lstm_mt.lstm.autograd import LayerRecurrence

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """The largest absolute difference between paired tensors (lists of equal length, shapes equal)."""
    assert len(a) == len(b), f"{len(a)} tensors against {len(b)}"
    for x, y in zip(a, b):
        assert x.shape == y.shape, f"shape {tuple(x.shape)} against {tuple(y.shape)}"
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def outputs_and_grads(module, run, inputs, weights):
    """Run ``run(module)``, reduce with fixed random weights, return outputs and all grads."""
    output, (h_n, c_n) = run(module)
    loss = sum((t * w).sum() for t, w in zip((output, h_n, c_n), weights))
    grads = torch.autograd.grad(loss, list(inputs) + list(module.parameters()))
    return [output, h_n, c_n], list(grads)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("variable_lengths", [False, True])
def test_lstm_matches_torch(dtype, num_layers, bidirectional, variable_lengths):
    torch.manual_seed(num_layers * 10 + bidirectional * 2 + variable_lengths)
    steps, batch, inputs, hidden = 7, 5, 6, 8
    reference = torch.nn.LSTM(inputs, hidden, num_layers, bidirectional=bidirectional).to(dtype)
    ours = LSTM.from_torch(reference)
    lengths = torch.tensor([7, 3, 5, 1, 7]) if variable_lengths else torch.full((batch,), steps)
    x = torch.randn(steps, batch, inputs, dtype=dtype, requires_grad=True)
    directions = 2 if bidirectional else 1
    h0 = torch.randn(num_layers * directions, batch, hidden, dtype=dtype, requires_grad=True)
    c0 = torch.randn_like(h0, requires_grad=True)

    def run_reference(module):
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        output, state = module(packed, (h0, c0))
        return pad_packed_sequence(output, total_length=steps)[0], state

    expected, expected_grads = None, None
    weights = None
    output, state = run_reference(reference)
    weights = [torch.randn_like(output), torch.randn_like(state[0]), torch.randn_like(state[1])]
    expected, expected_grads = outputs_and_grads(reference, run_reference, (x, h0, c0), weights)
    actual, actual_grads = outputs_and_grads(ours, lambda m: m(x, lengths, (h0, c0)), (x, h0, c0), weights)

    assert max_diff(actual, expected) < TOLERANCE[dtype]
    assert max_diff(actual_grads, expected_grads) < TOLERANCE[dtype]


def test_lstm_accepts_packed_sequence_and_batch_first():
    torch.manual_seed(0)
    reference = torch.nn.LSTM(4, 6, 2, bidirectional=True, batch_first=True).double()
    ours = LSTM.from_torch(reference)
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    lengths = torch.tensor([2, 5, 4])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    expected_out, (expected_h, expected_c) = reference(packed)
    actual_out, (actual_h, actual_c) = ours(packed)
    assert torch.equal(actual_out.batch_sizes, expected_out.batch_sizes)
    assert max_diff([actual_out.data, actual_h, actual_c], [expected_out.data, expected_h, expected_c]) < 1e-10

    padded_out, _ = ours(x, lengths)  # batch_first padded input gives the same numbers
    expected_padded, _ = pad_packed_sequence(expected_out, batch_first=True)
    assert max_diff([padded_out], [expected_padded]) < 1e-10


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_padding_never_changes_real_positions(dtype):
    """A sequence alone gives the same outputs and final state as inside a padded batch."""
    torch.manual_seed(1)
    lstm = LSTM(5, 7, num_layers=2, bidirectional=True).to(dtype)
    long = torch.randn(9, 1, 5, dtype=dtype)
    short = torch.randn(4, 1, 5, dtype=dtype)
    alone_out, (alone_h, alone_c) = lstm(short)
    garbage = torch.randn(5, 1, 5, dtype=dtype) * 100  # padding content must not matter
    batch = torch.cat([long, torch.cat([short, garbage])], dim=1)
    out, (h, c) = lstm(batch, torch.tensor([9, 4]))
    assert max_diff([out[:4, 1:2], h[:, 1:2], c[:, 1:2]], [alone_out, alone_h, alone_c]) < TOLERANCE[dtype]
    assert out[4:, 1].abs().max() == 0  # padded positions are zero


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cell_matches_torch_cell(dtype):
    torch.manual_seed(2)
    reference = torch.nn.LSTMCell(6, 9).to(dtype)
    ours = LSTMCell.from_torch(reference)
    x = torch.randn(4, 6, dtype=dtype, requires_grad=True)
    h0 = torch.randn(4, 9, dtype=dtype, requires_grad=True)
    c0 = torch.randn(4, 9, dtype=dtype, requires_grad=True)
    weights = [torch.randn(4, 9, dtype=dtype) for _ in range(2)]

    def run(cell):
        h, c = cell(x, (h0, c0))
        h2, c2 = cell(x * 0.5, (h, c))  # two steps, so gradients flow through a state
        loss = (h2 * weights[0]).sum() + (c2 * weights[1]).sum()
        return [h2, c2], list(torch.autograd.grad(loss, [x, h0, c0, *cell.parameters()]))

    expected, expected_grads = run(reference)
    actual, actual_grads = run(ours)
    assert max_diff(actual, expected) < TOLERANCE[dtype]
    assert max_diff(actual_grads, expected_grads) < TOLERANCE[dtype]


def test_cell_gates_follow_the_equations():
    """Each named gate block, applied by hand, gives the cell's output (a known answer)."""
    torch.manual_seed(3)
    cell = LSTMCell(3, 4).double()
    x, h, c = (torch.randn(2, n, dtype=torch.float64) for n in (3, 4, 4))
    gates = cell.gate_parameters()
    assert list(gates) == list(GATE_NAMES)

    def affine(name):
        p = gates[name]
        return x @ p["W_x"].T + h @ p["W_h"].T + p["b"]

    i, f, o = (torch.sigmoid(affine(n)) for n in ("input", "forget", "output"))
    candidate = torch.tanh(affine("candidate"))
    c_expected = f * c + i * candidate
    h_expected = o * torch.tanh(c_expected)
    h_actual, c_actual = cell(x, (h, c))
    assert torch.allclose(h_actual, h_expected, atol=1e-12)
    assert torch.allclose(c_actual, c_expected, atol=1e-12)


def test_gradcheck_layer_recurrence():
    """The hand-written backward against numerical differentiation, padding included."""
    torch.manual_seed(4)
    steps, batch, hidden = 5, 3, 4
    x_proj = torch.randn(steps, batch, 4 * hidden, dtype=torch.float64, requires_grad=True)
    weight_hh = torch.randn(4 * hidden, hidden, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(batch, hidden, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(batch, hidden, dtype=torch.float64, requires_grad=True)
    batch_sizes = [3, 3, 2, 1, 1]  # lengths 5, 2, 4 sorted: 5, 4, 2
    assert torch.autograd.gradcheck(
        lambda *args: LayerRecurrence.apply(*args, batch_sizes, False), (x_proj, weight_hh, h0, c0)
    )
    zeros = torch.zeros(batch, hidden, dtype=torch.float64)  # no initial state: the first product is skipped
    assert torch.autograd.gradcheck(
        lambda x_proj, weight_hh, c0: LayerRecurrence.apply(x_proj, weight_hh, zeros, c0, batch_sizes, True),
        (x_proj, weight_hh, c0),
    )


def test_rejects_bad_lengths():
    lstm = LSTM(3, 4)
    with pytest.raises(ValueError, match="lengths"):
        lstm(torch.randn(5, 2, 3), torch.tensor([6, 2]))
    with pytest.raises(ValueError, match="lengths"):
        lstm(torch.randn(5, 2, 3), torch.tensor([0, 2]))


def test_products_off_onednn_are_seen_by_the_flop_counter():
    """Under `onednn.off` a layer's products run as PyTorch's, which `profiling.product_flop_counter` counts
    (in-place accumulations included): a training
    step of one direction over T steps from a zero state does 3 products of each kind (forward, input gradient,
    weight gradient), 2·B·4H·I FLOPs per step for the input and 2·B·4H·H per step after the first for the
    recurrence: 24·H·B·(T·I + (T − 1)·H) in all. Outside the block oneDNN is as it was."""
    T, B, In, H = 7, 3, 5, 4
    lstm = LSTM(In, H)
    x = torch.randn(T, B, In, requires_grad=True)
    was = onednn.usable(torch.zeros(1))
    with onednn.off(), profiling.product_flop_counter() as counter:
        assert not onednn.usable(torch.zeros(1))
        lstm(x)[0].sum().backward()
    assert counter.get_total_flops() == 24 * H * B * (T * In + (T - 1) * H)
    assert onednn.usable(torch.zeros(1)) == was


@pytest.mark.parametrize("variable", onednn.CACHE_CAPACITY_VARIABLES)
@pytest.mark.parametrize(("given", "expected"), [(None, str(onednn.PRIMITIVE_CACHE_CAPACITY)), ("5", "5")])
def test_onednn_caches_are_bounded_unless_the_user_chose(variable, given, expected):
    """Importing the products' module bounds oneDNN's and ideep's caches before any product runs; a set value wins."""
    env = {k: v for k, v in os.environ.items() if k != variable}
    if given is not None:
        env[variable] = given
    code = f"import os, lstm_mt.lstm.onednn; print(os.environ['{variable}'])"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == expected


_MEMORY_AFTER_MANY_SHAPES = """
import torch
from lstm_mt import memory
from lstm_mt.lstm import onednn
def in_use():
    heap = memory.heap()
    return heap.in_use + heap.mmapped
torch.set_num_threads(1)
weight, bias = onednn.packed(torch.nn.Parameter(torch.randn(2048, 768))), torch.zeros(2048)
rows = torch.randn(300, 768)
onednn.linear(rows[:1], weight, bias)
before = in_use()
for n in range(2, 300):
    onednn.linear(rows[:n], weight, bias)
print(in_use() - before)
"""


def _memory_after_many_shapes(env: dict[str, str]) -> float:
    """MiB of glibc heap still in use after products of 298 row counts with one packed weight (a fresh process)."""
    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_AFTER_MANY_SHAPES], env=env, capture_output=True, text=True, check=True
    )
    return float(result.stdout)


def test_products_of_many_row_counts_do_not_accumulate_memory():
    """A recurrence multiplies by every row count its batches shrink to; with the caches bounded the memory they
    leave behind stays bounded too (ideep's default of 1,024 entries kept ~0.3 MiB for each row count seen)."""
    if not onednn.usable(torch.zeros(1)):
        pytest.skip("this PyTorch build has no usable oneDNN linear")
    if memory.heap() is None:
        pytest.skip("needs glibc's mallinfo2")
    env = {k: v for k, v in os.environ.items() if k not in onednn.CACHE_CAPACITY_VARIABLES}
    bounded = _memory_after_many_shapes(env)
    unbounded = _memory_after_many_shapes({**env, "LRU_CACHE_CAPACITY": "1024"})
    assert unbounded > 40, (
        f"ideep's cache no longer holds memory per shape ({unbounded:.1f} MiB): this test measures nothing"
    )
    assert bounded < 20, f"{bounded:.1f} MiB left in use after 298 row counts"


@pytest.mark.parametrize("use_onednn", [True, False])
def test_both_matmul_backends_match_torch(monkeypatch, use_onednn):
    """float32 on CPU runs on oneDNN when the build has it; the plain-torch fallback must agree too."""
    if not use_onednn:
        monkeypatch.setattr(onednn, "_WORKS", False)
    elif not onednn.usable(torch.zeros(1)):
        pytest.skip("this PyTorch build has no usable oneDNN linear")
    torch.manual_seed(5)
    reference = torch.nn.LSTM(6, 8, 2, bidirectional=True)
    ours = LSTM.from_torch(reference)
    x = torch.randn(5, 3, 6, requires_grad=True)
    expected, _ = reference(x)
    actual, _ = ours(x)
    assert max_diff([actual], [expected]) < 1e-5
    (g_expected,) = torch.autograd.grad(expected.sum(), x)
    (g_actual,) = torch.autograd.grad(actual.sum(), x)
    assert max_diff([g_actual], [g_expected]) < 1e-5
    with torch.no_grad():  # the inference path (no saved gates, oneDNN input projection)
        assert max_diff([ours(x)[0]], [expected]) < 1e-5

    ref_cell = torch.nn.LSTMCell(6, 8)
    cell = LSTMCell.from_torch(ref_cell)
    h, c = torch.randn(3, 8), torch.randn(3, 8)
    assert max_diff(list(cell(x[0], (h, c))), list(ref_cell(x[0], (h, c)))) < 1e-5


def test_fast_step_equals_the_written_out_equations():
    """LSTMCell.forward (fast path) against step_with_gates (lstm_step, the textbook form)."""
    torch.manual_seed(6)
    cell = LSTMCell(5, 7)
    x, h, c = torch.randn(4, 5), torch.randn(4, 7), torch.randn(4, 7)
    h_fast, c_fast = cell(x, (h, c))
    h_slow, c_slow, gates = cell.step_with_gates(x, (h, c))
    assert max_diff([h_fast, c_fast], [h_slow, c_slow]) < 1e-6
    assert torch.allclose(c_slow, gates.f * c + gates.i * gates.g)
    assert torch.allclose(h_slow, gates.o * torch.tanh(c_slow))


def test_packed_weights_follow_in_place_updates():
    """Inference reuses packed weights; an optimizer step or load_state_dict must invalidate them."""
    torch.manual_seed(7)
    reference = torch.nn.LSTM(4, 6)
    ours = LSTM.from_torch(reference)
    x = torch.randn(5, 2, 4)
    optimizer = torch.optim.Adam(ours.parameters(), lr=0.1)
    with torch.no_grad():
        before = ours(x)[0]
    ours(x)[0].sum().backward()
    optimizer.step()
    reference.load_state_dict(
        {
            f"{name}_l0": getattr(ours.layers[0][0], name).detach()
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        }
    )
    with torch.no_grad():
        after = ours(x)[0]
        assert max_diff([after], [reference(x)[0]]) < 1e-5
        assert max_diff([after], [before]) > 1e-3
        ours.load_state_dict(LSTM.from_torch(torch.nn.LSTM(4, 6)).state_dict())
        assert max_diff([ours(x)[0]], [after]) > 1e-3


def test_recorded_gates_reproduce_the_outputs():
    """Re-applying C_t = f*C_{t-1} + i*C̃ and h = o*tanh(C) to recorded gates gives the layer's outputs."""
    torch.manual_seed(8)
    lstm = LSTM(4, 5, num_layers=2, bidirectional=True).double()
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    lengths = torch.tensor([4, 6, 2])
    with GateRecorder() as recorder:
        output, (h_n, _) = lstm(x, lengths)
    assert len(recorder.records) == 4  # 2 layers x 2 directions
    for k, record in enumerate(recorder.records):
        layer, direction = divmod(k, 2)
        for b, length in enumerate(lengths.tolist()):
            times = range(length) if not record.reverse else range(length - 1, -1, -1)
            c_prev = torch.zeros(5, dtype=torch.float64)
            for t in times:
                c = record.f[t, b] * c_prev + record.i[t, b] * record.g[t, b]
                assert torch.allclose(c, record.c[t, b], atol=1e-12)
                assert torch.allclose(record.o[t, b] * torch.tanh(c), record.h[t, b], atol=1e-12)
                c_prev = c
            if layer == 1:
                assert torch.allclose(record.h[:length, b], output[:length, b, direction * 5 : (direction + 1) * 5])
            last = length - 1 if not record.reverse else 0
            assert torch.allclose(record.h[last, b], h_n[k, b])
        assert torch.all((record.i >= 0) & (record.i <= 1))

    cell = LSTMCell(4, 5).double()
    with GateRecorder() as recorder:
        h, c = cell(x[0])
    (record,) = recorder.records
    assert torch.allclose(record.c, record.i * record.g) and torch.equal(record.h, h)


def test_recording_off_leaves_outputs_unchanged():
    torch.manual_seed(9)
    lstm = LSTM(4, 5, bidirectional=True)
    x = torch.randn(6, 3, 4)
    lengths = torch.tensor([4, 6, 2])
    plain, _ = lstm(x, lengths)
    with GateRecorder():
        recorded, _ = lstm(x, lengths)
    assert torch.equal(plain, recorded)


def test_autocast_bf16_runs_in_bf16_with_fp32_gradients():
    torch.manual_seed(10)
    lstm = LSTM(6, 8, bidirectional=True)
    cell = LSTMCell(6, 8)
    x = torch.randn(5, 3, 6)
    lengths = torch.tensor([5, 2, 4])
    expected, _ = lstm(x, lengths)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output, _ = lstm(x, lengths)
        h, _ = cell(x[0])
    assert output.dtype == torch.bfloat16 and h.dtype == torch.bfloat16
    assert (output.float() - expected).abs().max() < 0.05  # bf16 keeps ~3 significant digits
    (output.float().sum() + h.float().sum()).backward()
    for p in (*lstm.parameters(), *cell.parameters()):
        assert p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()


def stacked_steps(cells: list[LSTMCell], xs: torch.Tensor, bf16: bool, prepared: bool) -> list[torch.Tensor]:
    """Two stacked cells stepped over ``xs`` ``[T, B, I]`` (as the decoder steps them), optionally under
    bf16 autocast and with weights prepared once (`LSTMCell.step_weights`); returns the outputs and
    the gradients of ``xs`` and every parameter for a fixed random reduction."""
    xs = xs.detach().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        weights = [cell.step_weights() if prepared else None for cell in cells]
        states: list = [None] * len(cells)
        outputs = []
        for x in xs:
            for k, cell in enumerate(cells):
                states[k] = cell(x, states[k], None, weights[k])
                x = states[k][0]
            outputs.append(x)
    output = torch.stack(outputs).to(xs.dtype)
    reduction = torch.randn(output.shape, generator=torch.Generator().manual_seed(3)).to(xs.dtype)
    parameters = [p for cell in cells for p in cell.parameters()]
    return [output.detach(), *torch.autograd.grad((output * reduction).sum(), [xs, *parameters])]


def two_cells(seed: int = 11) -> tuple[list[LSTMCell], torch.Tensor]:
    torch.manual_seed(seed)
    return [LSTMCell(10, 16), LSTMCell(16, 16)], torch.randn(7, 5, 10)


@pytest.mark.parametrize("bf16, tolerance", [(False, 1e-6), (True, 0.01)])
def test_weights_prepared_once_per_sequence_step_as_weights_prepared_at_every_step(bf16, tolerance):
    """Prepared once (cast once, the weight gradient one product over all steps) or at every step (the
    weights' gradient a product per step, summed in float32): the same outputs and input gradients bit
    for bit, the same weight gradients to rounding (bf16: each step's product rounded to bf16 or the sum's)."""
    cells, xs = two_cells()
    once, every_step = stacked_steps(cells, xs, bf16, prepared=True), stacked_steps(cells, xs, bf16, prepared=False)
    assert torch.equal(once[0], every_step[0]) and torch.equal(once[1], every_step[1])
    for a, b in zip(once[2:], every_step[2:]):
        assert a.dtype == torch.float32  # gradients reach the float32 parameters as float32
        assert (a - b).norm() <= tolerance * b.norm()  # measured: 1.2e-7 (fp32), 0.23 % (bf16)


def test_a_sequence_weight_gradient_is_taken_whole_at_every_backward():
    """Backward twice through a retained graph accumulates twice the gradient; a backward for the input alone
    leaves the weights' gradient untaken and the next full backward still right."""
    cells, xs = two_cells()
    x = xs.requires_grad_()
    weights = [cell.step_weights() for cell in cells]
    states: list = [None, None]
    for x_t in x:
        for k, cell in enumerate(cells):
            states[k] = cell(x_t, states[k], None, weights[k])
            x_t = states[k][0]
    loss = states[1][0].sum()
    torch.autograd.grad(loss, [x], retain_graph=True)
    assert all(p.grad is None for cell in cells for p in cell.parameters())
    loss.backward(retain_graph=True)
    first = [p.grad.clone() for cell in cells for p in cell.parameters()]
    loss.backward()
    assert all(torch.equal(p.grad, 2 * g) for p, g in zip([p for cell in cells for p in cell.parameters()], first))


def test_bf16_steps_with_prepared_weights_follow_float64_within_bf16_rounding():
    """Outputs and every gradient of the bf16 steps against the same cells in float64.

    bf16 keeps 8 bits of mantissa (relative rounding 2^-9 ≈ 0.002 per operation); over 7 steps of
    two layers the outputs stay within 0.01 and each gradient within 3 % (relative, by norm; measured
    0.0033 and 0.3-0.9 %).
    """
    cells, xs = two_cells()
    bf16 = stacked_steps(cells, xs, bf16=True, prepared=True)
    exact = stacked_steps([c.double() for c in cells], xs.double(), bf16=False, prepared=True)
    assert (bf16[0].double() - exact[0]).abs().max() < 0.01
    for got, want in zip(bf16[1:], exact[1:]):
        assert (got.double() - want).norm() < 0.03 * want.norm()


@pytest.mark.parametrize("bidirectional", [False, True])
def test_inference_path_matches_torch_with_variable_lengths(bidirectional):
    """No-grad float32 runs take the joint W·[h, x] product path (oneDNN); same numbers as torch."""
    torch.manual_seed(11)
    reference = torch.nn.LSTM(16, 24, 2, bidirectional=bidirectional)
    ours = LSTM.from_torch(reference)
    x = torch.randn(7, 5, 16)
    lengths = torch.tensor([7, 3, 5, 1, 6])
    with torch.no_grad():
        packed_out, (expected_h, expected_c) = reference(pack_padded_sequence(x, lengths, enforce_sorted=False))
        expected, _ = pad_packed_sequence(packed_out, total_length=7)
        actual, (actual_h, actual_c) = ours(x, lengths)
    assert max_diff([actual, actual_h, actual_c], [expected, expected_h, expected_c]) < 1e-5


def test_inference_cell_step_matches_torch_cell():
    torch.manual_seed(12)
    reference = torch.nn.LSTMCell(10, 12)
    ours = LSTMCell.from_torch(reference)
    x, h, c = torch.randn(3, 10), torch.randn(3, 12), torch.randn(3, 12)
    with torch.no_grad():
        for _ in range(3):  # several steps: packed weights reused
            (h_ref, c_ref), (h, c) = reference(x, (h, c)), ours(x, (h, c))
            assert max_diff([h, c], [h_ref, c_ref]) < 1e-5


def padded_bilstm_against_torch(dtype: torch.dtype, seed: int):
    """Our 2-layer bidirectional LSTM and torch.nn.LSTM with copied weights on one padded batch:
    ``(ours, x, lengths, (torch's outputs, grads), (our outputs, grads))``."""
    torch.manual_seed(seed)
    reference = torch.nn.LSTM(6, 8, 2, bidirectional=True).to(dtype)
    ours = LSTM.from_torch(reference)
    x = torch.randn(7, 5, 6, dtype=dtype, requires_grad=True)
    lengths = torch.tensor([7, 3, 5, 1, 6])
    weights = [torch.randn(7, 5, 16, dtype=dtype), torch.randn(4, 5, 8, dtype=dtype), torch.randn(4, 5, 8, dtype=dtype)]

    def run_reference(module):
        output, state = module(pack_padded_sequence(x, lengths, enforce_sorted=False))
        return pad_packed_sequence(output, total_length=7)[0], state

    expected = outputs_and_grads(reference, run_reference, [x], weights)
    actual = outputs_and_grads(ours, lambda m: m(x, lengths), [x], weights)
    return ours, x, lengths, expected, actual


@pytest.fixture(params=["native", "tensor"])
def point_wise(request, monkeypatch):
    """Run a test with the compiled kernel and with the tensor operations; yields the kernel calls made."""
    use_point_wise(request.param, monkeypatch)
    calls: list[str] = []
    call = native._call
    monkeypatch.setattr(native, "_call", lambda library, name, *args: (calls.append(name), call(library, name, *args)))
    yield calls
    expected = (
        {"lstm_cell_forward", "lstm_cell_forward_keep", "lstm_cell_backward"} if request.param == "native" else set()
    )
    assert set(calls) == expected


def test_point_wise_step_both_ways_matches_torch(point_wise):
    """Training and inference, layer and cell: the C kernel and the tensor operations both equal torch."""
    ours, x, lengths, (expected, expected_grads), (actual, actual_grads) = padded_bilstm_against_torch(
        torch.float32, seed=13
    )
    assert max_diff(actual, expected) < 1e-5
    assert max_diff(actual_grads, expected_grads) < 1e-5
    with torch.no_grad():
        assert max_diff([ours(x, lengths)[0]], [expected[0]]) < 1e-5

    ref_cell = torch.nn.LSTMCell(6, 8)
    cell = LSTMCell.from_torch(ref_cell)
    h, c = torch.randn(5, 8, requires_grad=True), torch.randn(5, 8, requires_grad=True)
    expected = ref_cell(x[0], (h, c))
    actual = cell(x[0], (h, c))
    assert max_diff(list(actual), list(expected)) < 1e-5
    loss_weights = torch.randn(2, 5, 8)
    grads = [
        torch.autograd.grad(sum((t * w).sum() for t, w in zip(out, loss_weights)), [x, h, c, *module.parameters()])
        for out, module in ((actual, cell), (expected, ref_cell))
    ]
    assert max_diff(list(grads[0]), list(grads[1])) < 1e-5
    with torch.no_grad():
        assert max_diff(list(cell(x[0], (h, c))), list(expected)) < 1e-5


class Float64Kernel:
    """A point-wise kernel for float64, written from the equations and their derivatives; counts its calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def usable(self, *tensors: torch.Tensor) -> bool:
        return all(t.dtype == torch.float64 for t in tensors)

    def forward(self, pre, c_prev, c, h, gates=None, tanh_c=None) -> bool:
        if not self.usable(pre, c_prev):
            return False
        self.calls.append("forward")
        h_new, c_new, activations = lstm_step(pre, c_prev)
        c.copy_(c_new)
        h.copy_(h_new)
        if gates is not None:
            gates.copy_(torch.cat(activations, dim=1))
            tanh_c.copy_(torch.tanh(c_new))
        return True

    def backward(self, gates, tanh_c, c_prev, dh, dc, grad_pre, dc_prev) -> bool:
        if not self.usable(gates, dh):
            return False
        self.calls.append("backward")
        i, f, g, o = gates.chunk(4, dim=1)
        dC = dc + dh * o * (1 - tanh_c**2)
        grad_pre.copy_(
            torch.cat(
                [dC * g * i * (1 - i), dC * c_prev * f * (1 - f), dC * i * (1 - g**2), dh * tanh_c * o * (1 - o)], 1
            )
        )
        dc_prev.add_(dC * f)
        return True


def test_a_registered_point_wise_kernel_runs_every_step(monkeypatch):
    """The plug-in point for device kernels: a registered kernel takes the steps it accepts, and results equal torch."""
    monkeypatch.setattr(pointwise, "_KERNELS", list(pointwise._KERNELS))
    kernel = Float64Kernel()
    pointwise.register_kernel(kernel)
    _, _, _, (expected, expected_grads), (actual, actual_grads) = padded_bilstm_against_torch(torch.float64, seed=14)
    assert max_diff(actual, expected) < 1e-10
    assert max_diff(actual_grads, expected_grads) < 1e-10
    assert (
        kernel.calls.count("forward") == 4 * 7 and kernel.calls.count("backward") == 4 * 7
    )  # layers x directions x steps

    kernel.calls.clear()
    with torch.no_grad():  # float32: the kernel declines, the built-in paths run
        LSTM(6, 8)(torch.randn(3, 2, 6))
    assert kernel.calls == []


@pytest.mark.parametrize("bias", [True, False])
def test_lstm_to_torch_round_trip_and_same_outputs(bias):
    """ours -> torch.nn.LSTM -> ours keeps every parameter exactly; torch's outputs on padded input equal ours."""
    torch.manual_seed(15)
    ours = LSTM(6, 8, num_layers=2, bias=bias, batch_first=True, dropout=0.25, bidirectional=True)
    theirs = ours.to_torch()
    assert type(theirs) is torch.nn.LSTM
    settings = (theirs.input_size, theirs.hidden_size, theirs.num_layers, theirs.bias)
    assert settings + (theirs.batch_first, theirs.dropout, theirs.bidirectional) == (6, 8, 2, bias, True, 0.25, True)
    back = LSTM.from_torch(theirs).state_dict()
    assert list(back) == list(ours.state_dict())
    assert all(torch.equal(back[name], value) for name, value in ours.state_dict().items())

    ours.eval(), theirs.eval()  # no dropout between layers
    lengths = torch.tensor([7, 3, 5, 1, 6])
    x = torch.randn(5, 7, 6)  # batch first
    x[torch.arange(7) >= lengths.unsqueeze(1)] = 1e3  # padding content must not matter
    with torch.no_grad():
        packed_out, (expected_h, expected_c) = theirs(pack_padded_sequence(x, lengths, True, enforce_sorted=False))
        expected, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=7)
        actual, (actual_h, actual_c) = ours(x, lengths)
    assert max_diff([actual, actual_h, actual_c], [expected, expected_h, expected_c]) < 1e-5


@pytest.mark.parametrize("bias", [True, False])
def test_cell_to_torch_round_trip_and_same_outputs(bias):
    torch.manual_seed(16)
    ours = LSTMCell(6, 8, bias=bias).double()
    theirs = ours.to_torch()
    assert type(theirs) is torch.nn.LSTMCell and theirs.weight_hh.dtype == torch.float64 and theirs.bias == bias
    back = LSTMCell.from_torch(theirs).state_dict()
    assert list(back) == list(ours.state_dict())
    assert all(torch.equal(back[name], value) for name, value in ours.state_dict().items())
    x, h, c = (
        torch.randn(3, 6, dtype=torch.float64),
        torch.randn(3, 8, dtype=torch.float64),
        torch.randn(3, 8, dtype=torch.float64),
    )
    with torch.no_grad():
        assert max_diff(list(ours(x, (h, c))), list(theirs(x, (h, c)))) < 1e-12


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_a_step_without_gradients_skips_autograd_and_gives_the_training_step_outputs(monkeypatch, bf16):
    """A single step under no_grad off the oneDNN route (as on CUDA, and under bf16 autocast) runs the step
    directly, not through `CellStep` (whose bookkeeping costs a GPU step more than its kernels), with the
    outputs of a step with gradients."""
    monkeypatch.setattr(onednn, "usable", lambda weight: False)
    applied: list[bool] = []
    apply = autograd.CellStep.apply
    monkeypatch.setattr(autograd.CellStep, "apply", lambda *a: applied.append(True) or apply(*a))
    torch.manual_seed(0)
    cell = LSTMCell(4, 6)
    x, h, c = torch.randn(3, 4), torch.randn(3, 6), torch.randn(3, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        with torch.no_grad():
            inferred = cell(x, (h, c))
        assert not applied
        trained = cell(x, (h, c))
    assert applied
    for a, b in zip(inferred, trained):
        assert torch.equal(a, b.detach())


def test_a_layer_without_gradients_keeps_no_gates(monkeypatch):
    """Under no_grad (where the parameters still require grad, which an autograd Function's needs_input_grad
    reports), the layer loop keeps no gates for a backward pass that never comes; with gradients it does.
    oneDNN is off, so that CPU float32 inference takes the loop, as CUDA and bf16 inference do."""
    monkeypatch.setattr(onednn, "usable", lambda weight: False)
    kept: list[bool] = []
    loop = autograd.recurrence_forward

    def spy(*args, **kwargs):
        kept.append(bool((*args, *kwargs.values())[-1]))
        return loop(*args, **kwargs)

    monkeypatch.setattr(autograd, "recurrence_forward", spy)
    torch.manual_seed(0)
    lstm = LSTM(4, 6)
    x, lengths = torch.randn(5, 3, 4), torch.tensor([5, 2, 4])
    with torch.no_grad():
        inferred = lstm(x, lengths)[0]
    trained = lstm(x, lengths)[0]
    assert kept == [False, True]
    assert torch.equal(inferred, trained.detach())
