"""Cell variants (lstm_mt/lstm/variants.py): the fast path against the written-out equations, and each variant's promise."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from conftest import use_point_wise

from lstm_mt.errors import LstmMtError
from lstm_mt.lstm import LSTM, GateRecorder, LSTMCell, fastpath, inference, native, variant_pointwise
from lstm_mt.lstm.autograd import CellStep, LayerRecurrence
from lstm_mt.lstm.equations import input_projection
from lstm_mt.lstm.variants import CellNoise, CellVariant, variant_step
from lstm_mt.model import ModelConfig, ModelConfigError, build_model

VARIANTS = {
    "layer_norm": CellVariant(layer_norm=True),
    "recurrent_dropout": CellVariant(recurrent_dropout=0.3, input_dropout=0.2),
    "zoneout": CellVariant(zoneout_c=0.3, zoneout_h=0.2),
    "peepholes": CellVariant(peepholes=True),
    "coupled_gates": CellVariant(coupled_gates=True),
    "all": CellVariant(True, 0.3, 0.2, 0.3, 0.2, True, True),
}
LENGTHS = torch.tensor([5, 5, 3, 1])  # sorted, with padding
BATCH_SIZES = [int((LENGTHS > t).sum()) for t in range(5)]


@pytest.fixture(params=["native", "tensor"])
def point_wise(request, monkeypatch):
    """Run a test with the compiled kernel and with the tensor operations; checks which ran (a test whose
    cell runs as the plain cell sets ``expected["kernel"] = False``)."""
    use_point_wise(request.param, monkeypatch)
    ran: set[str] = set()
    for name in ("variant_forward", "variant_backward"):
        kernel = getattr(native, name)
        monkeypatch.setattr(
            native, name, lambda *a, kernel=kernel, name=name, **k: kernel(*a, **k) and not ran.add(name)
        )
    expected = {"kernel": request.param == "native"}
    yield expected
    assert ran == ({"variant_forward", "variant_backward"} if expected["kernel"] else set())


def variant_cell(
    variant: CellVariant, dtype: torch.dtype, training: bool, seed: int = 0, sizes: tuple[int, int] = (5, 6)
) -> LSTMCell:
    """A cell with every parameter moved off its initial value (layer-norm gains away from 1)."""
    torch.manual_seed(seed)
    cell = LSTMCell(*sizes, variant=variant).to(dtype).train(training)
    with torch.no_grad():
        for p in cell.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return cell


def reference_layer(cell, x, h0, c0, noise, lengths):
    """`variant_step` step by step; a sequence past its length keeps its state and outputs zero."""
    hs, cs, h, c = [], [], h0, c0
    for t in range(x.shape[0]):
        keep_c, keep_h = (k if isinstance(k, float) else k[t] for k in (noise.keep_c, noise.keep_h))
        h_new, c_new, _ = variant_step(cell, x[t], h, c, CellNoise(noise.h_mask, noise.x_mask, keep_c, keep_h))
        alive = (t < lengths).unsqueeze(1).to(x.dtype)
        h, c = alive * h_new + (1 - alive) * h, alive * c_new + (1 - alive) * c
        hs.append(h_new * alive)
        cs.append(c_new * alive)
    return torch.stack(hs), torch.stack(cs)


def grads(outputs, weights, inputs):
    loss = sum((out * w).sum() for out, w in zip(outputs, weights))
    found = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(found, inputs)]


def close(actual, expected, tolerance):
    """Every pair equal within ``tolerance`` relative to the larger of 1 and the expected tensor's size."""
    return all((a - e).abs().max() <= tolerance * max(1.0, e.abs().max().item()) for a, e in zip(actual, expected))


def in_float64(noise: CellNoise) -> CellNoise:
    return CellNoise(*(k.double() if isinstance(k, torch.Tensor) else k for k in dataclasses.astuple(noise)))


def assert_layer_equals_float64_reference(cell, x, h0, c0, noise, lengths):
    """`fastpath.run_layer` of ``cell`` (lengths sorted): outputs and the gradients of the inputs and every
    parameter equal `variant_step` on a float64 copy to float32 tolerance. Returns the reference outputs."""
    batch_sizes = [int((lengths > t).sum()) for t in range(x.shape[0])]
    actual = fastpath.run_layer(cell, x, h0, c0, batch_sizes, False, noise)
    reference = copy.deepcopy(cell).double()
    x64, h064, c064 = (t.detach().double().requires_grad_() for t in (x, h0, c0))
    expected = reference_layer(reference, x64, h064, c064, in_float64(noise), lengths)
    assert close(actual, expected, 1e-5)
    weights = [torch.randn_like(t) for t in expected]
    found = grads(actual, weights, [x, h0, c0, *cell.parameters()])
    assert close(found, grads(expected, weights, [x64, h064, c064, *reference.parameters()]), 1e-5)
    return expected


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("training", [True, False])
def test_layer_fast_path_equals_the_written_out_step(name, training, point_wise):
    """Whole layer in float32 (padding, initial state): outputs and all gradients equal `variant_step` step by
    step in float64, to float32 tolerance."""
    cell = variant_cell(VARIANTS[name], torch.float32, training)
    x = torch.randn(5, 4, 5, requires_grad=True)
    h0, c0 = torch.randn(4, 6, requires_grad=True), torch.randn(4, 6, requires_grad=True)
    noise = cell.step_noise(x, cell.sequence_noise(x), steps=5)
    if name == "recurrent_dropout" and not training:
        point_wise["kernel"] = False  # no masks in evaluation: the plain cell runs
    expected = assert_layer_equals_float64_reference(cell, x, h0, c0, noise, LENGTHS)
    with torch.no_grad():  # the inference route (joint product) where it applies
        assert close(fastpath.run_layer(cell, x, h0, c0, BATCH_SIZES, False, noise), expected, 1e-5)


@pytest.mark.parametrize("coupled", [False, True])
def test_kernel_with_rows_shared_among_threads(coupled, point_wise):
    """Every variant at once, 80 sequences of H = 64 (the kernel splits rows among OpenMP threads): a layer's
    outputs and all gradients equal `variant_step` in float64, to float32 tolerance."""
    variant = dataclasses.replace(VARIANTS["all"], coupled_gates=coupled)
    cell = variant_cell(variant, torch.float32, training=True, sizes=(8, 64))
    lengths = torch.tensor([3] * 50 + [2] * 20 + [1] * 10)
    x = torch.randn(3, 80, 8, requires_grad=True)
    h0, c0 = torch.randn(80, 64, requires_grad=True), torch.randn(80, 64, requires_grad=True)
    noise = cell.step_noise(x, cell.sequence_noise(x), steps=3)
    assert_layer_equals_float64_reference(cell, x, h0, c0, noise, lengths)


@pytest.mark.parametrize("name", VARIANTS)
def test_decoder_step_equals_the_written_out_step(name, point_wise):
    """`LSTMCell.forward` (the decoder's single step) over two steps: outputs and all gradients."""
    cell = variant_cell(VARIANTS[name], torch.float32, training=True)
    x = torch.randn(4, 5, requires_grad=True)
    h0, c0 = torch.randn(4, 6, requires_grad=True), torch.randn(4, 6, requires_grad=True)
    sequence = cell.sequence_noise(x)
    first, second = cell.step_noise(x, sequence), cell.step_noise(x, sequence)
    h1, c1 = fastpath.cell_step(cell, x, h0, c0, first)
    actual = fastpath.cell_step(cell, x * 0.5, h1, c1, second)
    h1_ref, c1_ref, _ = variant_step(cell, x, h0, c0, first)
    expected = variant_step(cell, x * 0.5, h1_ref, c1_ref, second)[:2]
    assert close(actual, expected, 1e-5)
    weights = [torch.randn_like(t) for t in expected]
    inputs = [x, h0, c0, *cell.parameters()]
    assert close(grads(actual, weights, inputs), grads(expected, weights, inputs), 1e-5)


@pytest.mark.parametrize("name", VARIANTS)
def test_decoder_steps_with_weights_prepared_once_equal_the_written_out_steps(name, point_wise):
    """Two stacked cells stepped four times as the decoder steps them (weights prepared once per sequence,
    `VariantCellStep` without layer norm: the weights' gradient one product for all steps): outputs and the
    gradients of the inputs and every parameter equal `variant_step` on float64 copies, to float32 tolerance."""
    torch.manual_seed(5)
    cells = [variant_cell(VARIANTS[name], torch.float32, True, seed=k, sizes=(5 if k == 0 else 6, 6)) for k in (0, 1)]
    references = [copy.deepcopy(cell).double() for cell in cells]
    xs = torch.randn(4, 3, 5, requires_grad=True)
    noises = [cell.sequence_noise(xs[0, :, : cell.input_size]) for cell in cells]
    steps = [[cell.step_noise(xs[0], noise) for cell, noise in zip(cells, noises)] for _ in range(4)]
    weights = [cell.step_weights() for cell in cells]
    xs64 = xs.detach().double().requires_grad_()
    actual, expected = [], []
    states, states64 = [(torch.zeros(3, 6),) * 2] * 2, [(torch.zeros(3, 6, dtype=torch.float64),) * 2] * 2
    for t in range(4):
        x, x64 = xs[t], xs64[t]
        for k in (0, 1):
            states[k] = fastpath.cell_step(cells[k], x, *states[k], steps[t][k], weights[k])
            h64, c64, _ = variant_step(references[k], x64, *states64[k], in_float64(steps[t][k]))
            states64[k] = (h64, c64)
            x, x64 = states[k][0], h64
        actual.append(x)
        expected.append(x64)
    assert close(actual, expected, 1e-5)
    reduction = [torch.randn_like(t) for t in expected]
    parameters = [p for cell in cells for p in cell.parameters()]
    parameters64 = [p for cell in references for p in cell.parameters()]
    found = grads(actual, reduction, [xs, *parameters])
    assert close(found, grads(expected, reduction, [xs64, *parameters64]), 5e-5)  # eight steps of float32


@pytest.mark.parametrize("name", VARIANTS)
def test_gradcheck_through_the_fast_path(name):
    """float64 layer run with padding (with and without an initial state) and a decoder step, numerically."""
    cell = variant_cell(VARIANTS[name], torch.float64, training=True, sizes=(2, 3))
    x = torch.randn(5, 4, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    noise = cell.step_noise(x, cell.sequence_noise(x), steps=5)
    params = list(cell.parameters())

    def run(x, h0, c0, *values, h0_is_zero=False):
        with torch.nn.utils.stateless._reparametrize_module(cell, dict(zip(dict(cell.named_parameters()), values))):
            return fastpath.run_layer(cell, x, h0, c0, BATCH_SIZES, h0_is_zero, noise)

    assert torch.autograd.gradcheck(run, (x, h0, c0, *params), fast_mode=True)
    zeros = torch.zeros(4, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda x, c0, *p: run(x, zeros, c0, *p, h0_is_zero=True), (x, c0, *params), fast_mode=True
    )

    step = cell.step_noise(x[0], noise)
    assert torch.autograd.gradcheck(
        lambda x, h, c: fastpath.cell_step(cell, x, h, c, step), (x[0], h0, c0), fast_mode=True
    )


def test_switched_off_runs_todays_cell_bitwise():
    """All variants off: the same parameters from the same seed, and the plain routes' very numbers."""
    torch.manual_seed(1)
    plain = LSTM(5, 6, num_layers=2, bidirectional=True)
    torch.manual_seed(1)
    off = LSTM(5, 6, num_layers=2, bidirectional=True, variant=CellVariant())
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), off.state_dict().values()))
    assert list(plain.state_dict()) == list(off.state_dict())
    cell = off.cells()[0][0]
    assert cell.peephole_weight is None and cell.ln_weight_hh is None
    x = torch.randn(5, 4, 5, requires_grad=True)
    h0, c0 = torch.randn(4, 6), torch.randn(4, 6)

    hs, cs = fastpath.run_layer(cell, x, h0, c0, BATCH_SIZES)  # training route
    today = LayerRecurrence.apply(input_projection(cell, x), cell.weight_hh, h0, c0, BATCH_SIZES, False)
    assert torch.equal(hs, today[0]) and torch.equal(cs, today[1])
    grads_now = torch.autograd.grad(hs.sum(), [x, *cell.parameters()])
    grads_today = torch.autograd.grad(today[0].sum(), [x, *cell.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(grads_now, grads_today))
    with torch.no_grad():  # inference route
        assert torch.equal(
            fastpath.run_layer(cell, x, h0, c0, BATCH_SIZES)[0], inference.run_layer(cell, x, h0, c0, BATCH_SIZES)[0]
        )
    step = cell(x[0], (h0, c0))
    bias = cell.combined_bias()
    assert torch.equal(step[0], CellStep.apply(x[0], h0, c0, cell.weight_ih, cell.weight_hh, bias)[0])


def test_dropout_variants_in_evaluation_are_the_plain_cell_bitwise():
    """Recurrent and input dropout draw no masks in evaluation: layer and step give the plain cell's very numbers."""
    torch.manual_seed(4)
    plain = LSTM(5, 6, bidirectional=True).eval()
    dropout = LSTM(5, 6, bidirectional=True, variant=CellVariant(recurrent_dropout=0.3, input_dropout=0.2)).eval()
    dropout.load_state_dict(plain.state_dict())
    x, lengths = torch.randn(5, 4, 5), torch.tensor([5, 2, 4, 1])
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            assert torch.equal(plain(x, lengths)[0], dropout(x, lengths)[0])
    state = torch.randn(4, 6), torch.randn(4, 6)
    assert torch.equal(plain.cells()[0][0](x[0], state)[0], dropout.cells()[0][0](x[0], state)[0])


def test_recurrent_dropout_one_mask_per_sequence_at_every_step():
    """Gradients reaching h_{t-1} through the recurrent product vanish exactly on dropped units: the same
    units at every step of a sequence, different units in different sequences."""
    torch.manual_seed(2)
    cell = LSTMCell(3, 64, variant=CellVariant(recurrent_dropout=0.5)).double().train()
    x = torch.randn(6, 8, 3, dtype=torch.float64)
    noise = cell.sequence_noise(x[0])
    h, c = torch.zeros(8, 64, dtype=torch.float64), torch.zeros(8, 64, dtype=torch.float64)
    patterns = []
    for t in range(6):
        h = h.detach().requires_grad_()
        h_new, c = cell(x[t], (h, c.detach()), noise)
        (grad,) = torch.autograd.grad((h_new * torch.randn_like(h_new)).sum(), h)
        patterns.append(grad == 0)
        h = h_new
    assert all(torch.equal(p, patterns[0]) for p in patterns)  # the same mask at every step
    dropped = patterns[0].double().mean().item()
    assert 0.35 < dropped < 0.65  # p = 0.5 over 512 units
    assert all(not torch.equal(patterns[0][0], patterns[0][b]) for b in range(1, 8))  # differs between sequences
    assert not torch.equal(noise.h_mask, cell.sequence_noise(x[0]).h_mask)  # a new draw for the next batch
    with pytest.raises(ValueError, match="sequence_noise"):
        cell(x[0])  # in training a step needs the sequence's masks


def test_zoneout_evaluation_is_deterministic_and_the_expectation():
    """In evaluation C and h are z·previous + (1 − z)·new, from gates computed by hand."""
    zc, zh = 0.3, 0.6
    cell = variant_cell(CellVariant(zoneout_c=zc, zoneout_h=zh), torch.float64, training=False)
    x, h, c = (torch.randn(4, n, dtype=torch.float64) for n in (5, 6, 6))
    gates = x @ cell.weight_ih.T + h @ cell.weight_hh.T + cell.bias_ih + cell.bias_hh
    i, f, g, o = gates.chunk(4, dim=1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_new = torch.sigmoid(o) * torch.tanh(c_new)
    first, second = cell(x, (h, c)), cell(x, (h, c))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert torch.allclose(first[1], zc * c + (1 - zc) * c_new, atol=1e-12)
    assert torch.allclose(first[0], zh * h + (1 - zh) * h_new, atol=1e-12)

    lstm = LSTM(5, 6, variant=CellVariant(zoneout_c=zc, zoneout_h=zh)).eval()
    xs = torch.randn(7, 3, 5)
    with torch.no_grad():
        assert torch.equal(lstm(xs)[0], lstm(xs)[0])
    lstm.train()
    assert not torch.equal(lstm(xs)[0], lstm(xs)[0])  # training draws d afresh


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("p", [0.05, 0.3, 0.9])
def test_zoneout_training_draws_are_bernoulli_p(p, compiled, monkeypatch):
    """Training's d on CPU (the compiled fill, or torch's generator in 16-bit lanes): only 0s and 1s, a
    fraction p of 1s (within 5 standard deviations over 240k units), the same units at no two steps,
    and the same draw again from the same seed."""
    if not compiled:
        monkeypatch.setattr(native, "bernoulli16_fill", lambda *args: False)
    elif not native.available():
        pytest.skip("no compiled kernel on this machine")
    cell = variant_cell(CellVariant(zoneout_c=p, zoneout_h=p), torch.float32, training=True)
    x = torch.randn(4, 5)
    torch.manual_seed(11)
    noise = cell.step_noise(x, None, steps=10_000)
    torch.manual_seed(11)
    again = cell.step_noise(x, None, steps=10_000)
    for keep in (noise.keep_c, noise.keep_h):
        assert keep.shape == (10_000, 4, 6) and keep.dtype == torch.float32
        assert torch.equal(keep, keep.clamp(0, 1).round())
        assert abs(keep.mean().item() - p) < 5 * (p * (1 - p) / keep.numel()) ** 0.5
        assert not torch.equal(keep[0], keep[1])
    assert not torch.equal(noise.keep_c, noise.keep_h)  # C and h draw their own d
    assert torch.equal(noise.keep_c, again.keep_c) and torch.equal(noise.keep_h, again.keep_h)


def test_layer_norm_equals_torch_layer_norm_and_lstm_cell_equations():
    """An independent LN-LSTM from torch.nn.LayerNorm (one per gate block) and torch.nn.LSTMCell's weights."""
    cell = variant_cell(CellVariant(layer_norm=True), torch.float64, training=True, seed=3)
    H = 6

    def layer_norm(weight, bias=None):
        """A torch.nn.LayerNorm whose gain (and bias) are the cell's tensors, so gradients reach them."""
        layer = torch.nn.LayerNorm(H, bias=bias is not None).double()
        del layer.weight
        layer.weight = weight
        if bias is not None:
            del layer.bias
            layer.bias = bias
        return layer

    norm_x = [layer_norm(gain) for gain in cell.ln_weight_ih.chunk(4)]
    norm_h = [layer_norm(gain) for gain in cell.ln_weight_hh.chunk(4)]
    norm_c = layer_norm(cell.ln_weight_c, cell.ln_bias_c)
    w_ih, w_hh = cell.weight_ih.chunk(4), cell.weight_hh.chunk(4)
    bias = (cell.bias_ih + cell.bias_hh).chunk(4)

    def reference_step(x, h, c):
        i, f, g, o = (norm_x[k](x @ w_ih[k].T) + norm_h[k](h @ w_hh[k].T) + bias[k] for k in range(4))
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(norm_c(c)), c

    lstm = LSTM(5, H, variant=CellVariant(layer_norm=True)).double()
    lstm.layers[0][0].load_state_dict(cell.state_dict())
    x = torch.randn(5, 4, 5, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([2, 5, 1, 4])
    output, (h_n, c_n) = lstm(x, lengths)
    expected_out, h_ref, c_ref = torch.zeros_like(output), [], []
    for b, length in enumerate(lengths.tolist()):
        h, c = torch.zeros(1, H, dtype=torch.float64), torch.zeros(1, H, dtype=torch.float64)
        for t in range(length):
            h, c = reference_step(x[t, b : b + 1], h, c)
            expected_out[t, b] = h[0]
        h_ref.append(h)
        c_ref.append(c)
    expected = [expected_out, torch.cat(h_ref).unsqueeze(0), torch.cat(c_ref).unsqueeze(0)]
    actual = [output, h_n, c_n]
    assert close(actual, expected, 1e-10)
    weights = [torch.randn_like(t) for t in expected]
    ours = [x, *lstm.parameters()]
    theirs = [x, *cell.parameters()]
    assert close(grads(actual, weights, ours), grads(expected, weights, theirs), 1e-10)


def test_recorded_gates_of_a_variant_reproduce_the_outputs():
    """GateRecorder on a variant layer and step: the recorded gates are `variant_step`'s and C, h the outputs."""
    variant = CellVariant(True, 0.0, 0.0, 0.3, 0.2, True, False)
    lstm = LSTM(5, 6, bidirectional=True, variant=variant).double().eval()
    x = torch.randn(5, 3, 5, dtype=torch.float64)
    lengths = torch.tensor([5, 2, 4])
    with GateRecorder() as recorder:
        output, _ = lstm(x, lengths)
    forward, _ = recorder.records
    cell = lstm.cells()[0][0]
    h, c = torch.zeros(3, 6, dtype=torch.float64), torch.zeros(3, 6, dtype=torch.float64)
    for t in range(2):  # all three sequences are running
        h, c, gates = variant_step(cell, x[t], h, c, cell.step_noise(x[t], None))
        assert torch.allclose(forward.i[t], gates.i) and torch.allclose(forward.o[t], gates.o)
        assert torch.allclose(forward.c[t], c) and torch.allclose(forward.h[t], output[t, :, :6])


def test_model_config_selects_variants_for_encoder_and_decoder():
    cfg = ModelConfig(emb_size=8, encoder_hidden=8, decoder_hidden=16, attentional_size=8, attention_hidden=8)
    cfg.cell = CellVariant(True, 0.2, 0.1, 0.1, 0.1, True, True)
    model = build_model(cfg, 20, 20)
    cells = [*(c for layer in model.encoder.rnn.cells() for c in layer), *model.decoder.cells.layers]
    assert all(cell.variant == cfg.cell for cell in cells)
    src, tgt = torch.randint(4, 20, (3, 6)), torch.randint(4, 20, (3, 5))
    logits = model(src, torch.tensor([6, 3, 4]), tgt)  # training: masks drawn once per sequence
    logits.sum().backward()
    assert all(p.grad is not None for name, p in model.named_parameters() if "ln_" in name)
    model.eval()
    with torch.no_grad():
        encoded = model.encode(src, torch.tensor([6, 3, 4]))
        model.decode_step(tgt[:, 0], model.init_decoder_state(encoded), encoded)
    cfg.cell = CellVariant(zoneout_h=1.0)
    with pytest.raises(ModelConfigError, match=r"model\.cell\.zoneout_h=1\.0: must be in \[0, 1\)"):
        build_model(cfg, 20, 20)


def test_cell_keys_are_typed_and_old_configs_read_as_plain():
    from lstm_mt.configuring import typed_config

    assert typed_config(ModelConfig, {"emb_size": 8}, "config.model").cell == CellVariant()
    cfg = typed_config(ModelConfig, {"cell": {"peepholes": True, "zoneout_c": 0.1}}, "config.model")
    assert cfg.cell == CellVariant(peepholes=True, zoneout_c=0.1)
    with pytest.raises(LstmMtError, match="cell.layer_nrom"):
        typed_config(ModelConfig, {"cell": {"layer_nrom": True}}, "config.model")
    with pytest.raises(ValueError, match="no equivalent"):
        LSTM(3, 4, variant=CellVariant(peepholes=True)).to_torch()


def test_a_kernel_that_disagrees_is_not_used(monkeypatch, caplog):
    """The C step is checked against the tensor operations on first use: a wrong one is refused, with a warning."""
    if not native.available():
        pytest.skip("no C compiler here: the compiled kernel is not built")
    real = native.variant_forward

    def wrong(coupled, **tensors):
        done = real(coupled, **tensors)
        tensors["h"].add_(1e-3)  # off by a little
        return done

    monkeypatch.setattr(native, "variant_forward", wrong)
    variant_pointwise._kernel_checked.cache_clear()
    try:
        with caplog.at_level("WARNING"):
            assert not variant_pointwise._kernel_checked(0, torch.device("cpu"), torch.float32)
        assert "disagrees" in caplog.text
        cell = variant_cell(VARIANTS["peepholes"], torch.float32, training=True)
        x, h0, c0 = torch.randn(5, 4, 5), torch.randn(4, 6), torch.randn(4, 6)
        actual = fastpath.run_layer(cell, x, h0, c0, BATCH_SIZES, False, cell.step_noise(x, None, steps=5))
        expected = reference_layer(cell, x, h0, c0, cell.step_noise(x, None, steps=5), LENGTHS)
        assert close(actual, expected, 1e-5)
    finally:
        variant_pointwise._kernel_checked.cache_clear()
