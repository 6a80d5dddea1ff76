"""CUDA graphs over the layer recurrence (`lstm_mt.lstm.cuda_graphs`).

On CPU: the buckets, the padding (the padded recurrence, run without a graph, against the eager
`LayerRecurrence`: outputs and every gradient), the graph cache, the switches, and that the CPU
path never reaches the graphs. With CUDA: the graphed LSTM against the eager one (graphs off),
in fp32, bf16 autocast and inference, several batches sharing a bucket, and the LRU bound; and the
variant cells' graphed layers against their eager loops (each variant, training and evaluation).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os

import pytest
import torch
from conftest import graphs_or_stand_in, use_point_wise
from test_cell import max_diff, outputs_and_grads

from lstm_mt.errors import LstmMtError
from lstm_mt.lstm import LSTM, LSTMCell, cuda_graphs, onednn, padding, triton_step
from lstm_mt.lstm.autograd import LayerRecurrence
from lstm_mt.lstm.variants import CellVariant


def test_buckets_pad_at_most_a_quarter_and_are_few():
    assert [cuda_graphs.bucket_size(n) for n in (1, 5, 8, 9, 17, 30, 50, 64, 65, 128, 129)] == [
        1,
        5,
        8,
        10,
        20,
        32,
        56,
        64,
        80,
        128,
        160,
    ]
    sizes = [cuda_graphs.bucket_size(n) for n in range(1, 4097)]
    for n, size in enumerate(sizes, start=1):
        assert n <= size < 1.25 * n or size == n
        assert cuda_graphs.bucket_size(size) == size  # a bucket is its own bucket
    assert sizes == sorted(sizes)
    assert len(set(sizes)) <= 8 + 4 * math.log2(4096 / 8) + 1  # exact to 8, then four per doubling


def test_padded_shape_refuses_empty_and_oversized_runs():
    assert cuda_graphs.padded_shape(30, 64) == (32, 64)
    assert cuda_graphs.padded_shape(50, 100) == (56, 112)
    assert cuda_graphs.padded_shape(0, 4) is None and cuda_graphs.padded_shape(4, 0) is None
    assert cuda_graphs.padded_shape(cuda_graphs.MAX_STEPS + 1, 4) is None
    assert cuda_graphs.padded_shape(4, cuda_graphs.MAX_BATCH + 1) is None


def test_padding_mask_and_shut_gates():
    sizes = torch.tensor([3, 2, 1, 0])  # three rows of lengths 3, 2, 1 in a bucket of 4 steps and 4 rows
    mask = cuda_graphs.padding_mask(sizes, 4)
    assert mask.tolist() == [
        [False, False, False, True],
        [False, False, True, True],
        [False, True, True, True],
        [True, True, True, True],
    ]
    x = torch.randn(4, 4, 8)
    x[3, 0] = float("nan")  # whatever padding holds is replaced
    shut = cuda_graphs.shut_gates(x, mask)
    assert torch.equal(shut[~mask], x[~mask])
    inf = float("-inf")
    assert (shut[mask] == torch.tensor([inf, inf, inf, inf, 0, 0, 0, 0])).all()


def recurrence_inputs(steps: int, lengths: list[int], hidden: int = 8, seed: int = 0):
    """A length-sorted layer-recurrence case: ``x_proj, weight_hh, h0, c0`` (all requiring grad), ``batch_sizes``,
    and gradients for ``hs`` and ``cs`` that are NaN at padded positions (never to be read)."""
    torch.manual_seed(seed)
    batch = len(lengths)
    x_proj = (torch.randn(steps, batch, 4 * hidden) * 2).requires_grad_()
    weight_hh = (torch.randn(4 * hidden, hidden) * 0.5).requires_grad_()
    h0, c0 = torch.randn(batch, hidden).requires_grad_(), torch.randn(batch, hidden).requires_grad_()
    sizes = padding.batch_sizes(torch.tensor(lengths), steps, batch)
    padded = torch.arange(batch) >= torch.tensor(sizes).unsqueeze(1)
    grads = [torch.randn(steps, batch, hidden).masked_fill(padded.unsqueeze(-1), float("nan")) for _ in range(2)]
    return (x_proj, weight_hh, h0, c0), sizes, grads, padded


@pytest.fixture(params=["tensor", "native", "triton"])
def point_wise_step(request, monkeypatch) -> str:
    """The padded recurrence's point-wise step as tensor operations, the C kernel, or Triton's interpreter."""
    if request.param == "triton":
        if importlib.util.find_spec("triton") is None or os.environ.get("TRITON_INTERPRET") != "1":
            pytest.skip("Triton's interpreter is not available here")
        use_point_wise("tensor", monkeypatch)
        with triton_step.only_on("cpu"):
            yield request.param
        return
    use_point_wise(request.param, monkeypatch)
    yield request.param


@pytest.mark.parametrize(
    "steps, lengths", [(9, [9, 7, 7, 3, 1, 1]), (5, [5, 5, 5]), (12, [12, 11, 2, 1, 1, 1, 1, 1, 1])]
)
def test_padded_recurrence_equals_the_eager_loop(point_wise_step, steps, lengths):
    """Every row at every step of a padded bucket (9 steps x 6 rows run as 10 x 6; 12 x 9 as 12 x 10), with
    the gates shut at padded positions: the same outputs and gradients as the loop that skips them;
    the padded outputs are zero, and NaN gradients arriving at padded positions are never read."""
    inputs, sizes, grads, padded = recurrence_inputs(steps, lengths)
    assert cuda_graphs.padded_shape(steps, len(lengths)) != (steps, len(lengths)) or steps == 5
    expected = LayerRecurrence.apply(*inputs, sizes, False)
    actual = cuda_graphs.PaddedRecurrence.apply(*inputs, sizes, True)
    assert max_diff(list(actual), list(expected)) < 1e-5
    if point_wise_step != "native":  # σ(−∞) is exactly 0 here; the C kernel's clamped exp leaves ~1e-38
        assert all(t[padded].abs().max() == 0 for t in actual if padded.any())
    expected_grads = torch.autograd.grad(expected, inputs, grads)
    actual_grads = torch.autograd.grad(actual, inputs, grads)
    assert all(torch.isfinite(g).all() for g in actual_grads)
    assert max_diff(list(actual_grads), list(expected_grads)) < 1e-5


def test_padded_recurrence_with_a_zero_initial_state_and_no_gradients():
    """h0 = 0 (the eager loop skips W_h·h0) and inference: the same results."""
    (x_proj, weight_hh, _, _), sizes, _, _ = recurrence_inputs(6, [6, 4, 4, 2, 1])
    zeros = torch.zeros(5, 8)
    with torch.no_grad():
        expected = LayerRecurrence.apply(x_proj, weight_hh, zeros, zeros, sizes, True)
        actual = cuda_graphs.PaddedRecurrence.apply(x_proj, weight_hh, zeros, zeros, sizes, False)
    assert max_diff(list(actual), list(expected)) < 1e-5


def test_graph_cache_captures_on_the_second_use_and_drops_the_least_recent(caplog):
    cache = cuda_graphs.GraphCache(limit=2, after=2)
    made: list[str] = []

    def capture(key: str):
        return lambda: made.append(key) or f"graph {key}"

    assert not cache.wanted("a") and cache.wanted("a")  # the second use asks for a graph
    assert cache.get("a", capture("a")) == "graph a"
    assert cache.get("a", capture("a")) == "graph a" and made == ["a"]  # kept, not captured again
    cache.get("b", capture("b"))
    cache.get("a", capture("a"))  # a is now the most recent
    cache.get("c", capture("c"))  # over the limit: b goes
    assert list(cache.graphs) == ["a", "c"]
    assert cache.wanted("a")

    def broken():
        raise RuntimeError("capture invalidated")

    with caplog.at_level(logging.WARNING):
        assert cache.get("d", broken) is None
    assert "capture invalidated" in caplog.text
    assert not cache.wanted("d") and not cache.wanted("d")  # never tried again
    assert cache.get("d", capture("d")) is None


def test_graph_cache_stops_capturing_a_shape_it_keeps_dropping(caplog):
    """Three shapes in turn through a cache of two: each is captured at most `captures` times, then runs eagerly."""
    cache = cuda_graphs.GraphCache(limit=2, after=1, captures=3)
    made: list[str] = []
    with caplog.at_level(logging.WARNING):
        for _ in range(10):
            for key in "abc":
                if cache.wanted(key):
                    cache.get(key, lambda key=key: made.append(key) or key)
    assert sorted(made) == sorted("abc" * 3)
    assert "dropped 3 times" in caplog.text and cuda_graphs.MAX_ENV in caplog.text
    assert not any(cache.wanted(key) for key in "abc" if key not in cache.graphs)


def test_switches(monkeypatch):
    monkeypatch.delenv(cuda_graphs.ENV, raising=False)
    assert cuda_graphs.enabled()
    with cuda_graphs.off():
        assert not cuda_graphs.enabled()
    assert cuda_graphs.enabled()
    monkeypatch.setenv(cuda_graphs.ENV, "0")
    assert not cuda_graphs.enabled()
    monkeypatch.setenv(cuda_graphs.MAX_ENV, "3")
    assert cuda_graphs.max_graphs() == 3
    for bad in ("0", "-1", "many"):
        monkeypatch.setenv(cuda_graphs.MAX_ENV, bad)
        with pytest.raises(LstmMtError, match=cuda_graphs.MAX_ENV):
            cuda_graphs.max_graphs()


def test_the_cpu_path_never_reaches_the_graphs(monkeypatch):
    """Training and inference on CPU tensors: the graphed Function is never applied, nothing is cached."""

    def refuse(*args):
        raise AssertionError("CUDA graphs reached from a CPU run")

    monkeypatch.setattr(cuda_graphs.PaddedRecurrence, "apply", refuse)
    lstm = LSTM(4, 6, 2, bidirectional=True)
    x, lengths = torch.randn(5, 3, 4), torch.tensor([5, 2, 4])
    for _ in range(3):
        lstm(x, lengths)[0].sum().backward()
        with torch.no_grad():
            lstm(x, lengths)
    assert (
        cuda_graphs.run_layer(x.new_zeros(5, 3, 24), x.new_zeros(24, 6), x.new_zeros(3, 6), x.new_zeros(3, 6), [3] * 5)
        is None
    )
    assert cuda_graphs._cache is None or not cuda_graphs._cache.graphs


# --- graphed against eager: on CUDA, and on CPU with a stand-in for the graph ------------------------


TOLERANCE = {"cpu": 1e-5, "cuda": 1e-4}  # float32; on CUDA cuBLAS may round a product over more rows differently


class ReplayedOnCpu(cuda_graphs.CapturedGraph):
    """`CapturedGraph` without CUDA: the same static buffers and outputs; a replay runs the function
    again on the static buffers and writes its results into the outputs of the first run."""

    def _record(self, fn):
        self.fn = fn
        return fn(*self.statics)

    def _replay(self):
        with cuda_graphs.outside_autograd():  # as `_record` ran (a real replay records no operations)
            for out, new in zip(self.outputs, self.fn(*self.statics)):
                if out is not None:
                    out.copy_(new)


@pytest.fixture(params=["cpu", "cuda"])
def device(request, monkeypatch) -> torch.device:
    """CUDA with real graphs, or CPU with `ReplayedOnCpu` (the buffers, padding, cache and autograd around a graph)."""
    return graphs_or_stand_in(request, monkeypatch, cuda_graphs, {"CapturedGraph": ReplayedOnCpu})


def lstm_case(seed: int, steps: int, lengths: list[int], device: torch.device, dtype: torch.dtype = torch.float32):
    """A 2-layer bidirectional LSTM's input, lengths, initial state and loss weights (all of one batch)."""
    torch.manual_seed(seed)
    batch = len(lengths)
    x = torch.randn(steps, batch, 6, device=device, dtype=dtype, requires_grad=True)
    h0 = torch.randn(4, batch, 8, device=device, dtype=dtype, requires_grad=True)
    c0 = torch.randn(4, batch, 8, device=device, dtype=dtype, requires_grad=True)
    weights = [
        torch.randn(steps, batch, 16, device=device, dtype=dtype),
        torch.randn(4, batch, 8, device=device, dtype=dtype),
    ]
    return x, torch.tensor(lengths), (h0, c0), weights + [torch.randn_like(weights[1])]


def graphed_and_eager(lstm: LSTM, case, precision: torch.dtype | None = None, seed: int = 0):
    """``(outputs, grads)`` of the LSTM on ``case`` with graphs on, then off (``precision``: autocast dtype;
    ``seed``: the random state each run starts from, so that a variant cell draws the same masks in both)."""
    x, lengths, state, weights = case
    results = []
    for graphs in (True, False):
        torch.manual_seed(seed)
        with torch.autocast(x.device.type, dtype=precision or torch.bfloat16, enabled=precision is not None):
            with contextlib.nullcontext() if graphs else cuda_graphs.off():
                results.append(outputs_and_grads(lstm, lambda m: m(x, lengths, state), [x, *state], weights))
    return results


@pytest.mark.parametrize("triton", [True, False])
def test_graphed_lstm_equals_eager_over_batches_sharing_a_bucket(device, triton, monkeypatch):
    """Four batches in one bucket (13-14 steps, 9-10 rows -> 14 x 10), the largest first and then shorter and
    narrower ones, so the graphs' buffers hold a larger batch's data: outputs and every gradient equal
    to the eager loop's; the forward and backward graphs were captured and are the ones replayed."""
    if triton and device.type == "cpu":
        if importlib.util.find_spec("triton") is None or os.environ.get("TRITON_INTERPRET") != "1":
            pytest.skip("Triton's interpreter is not available here")
        use_point_wise("tensor", monkeypatch)
    lstm = LSTM(6, 8, 2, bidirectional=True).to(device)
    cases = [
        (14, [14, 9, 14, 1, 7, 3, 2, 5, 11, 6]),
        (13, [13, 2, 5, 13, 1, 8, 4, 4, 12]),
        (14, [3, 14, 2, 9, 1, 6, 7, 8, 10]),
        (13, [13] * 10),
    ]
    with triton_step.only_on(*((device.type,) if triton else ())):
        for seed, (steps, lengths) in enumerate(cases):
            (out, grads), (eager_out, eager_grads) = graphed_and_eager(lstm, lstm_case(seed, steps, lengths, device))
            assert max_diff(out, eager_out) < TOLERANCE[device.type]
            assert max_diff(grads, eager_grads) < TOLERANCE[device.type]
    kinds = sorted(key[0] for key in cuda_graphs.graph_cache().graphs)
    assert kinds == ["backward", "forward"], "one forward graph (training) and one backward graph for the bucket"


def test_graphed_lstm_under_bf16_autocast_and_in_inference(device, monkeypatch):
    """bf16 training, then float32 inference (inference_mode, then no_grad): the inference graph keeps no
    gates, although the parameters and the given state require grad (which a Function's
    ``ctx.needs_input_grad`` reports under no_grad too). On CPU, oneDNN is switched off so that float32
    inference reaches the graphs, as it does on CUDA."""
    if device.type == "cpu":
        monkeypatch.setattr(onednn, "usable", lambda weight: False)
    lstm = LSTM(6, 8, 2, bidirectional=True).to(device)
    for seed in range(3):
        case = lstm_case(seed, 11, [11, 4, 7, 1], device)
        (out, grads), (eager_out, eager_grads) = graphed_and_eager(lstm, case, torch.bfloat16)
        assert out[0].dtype == torch.bfloat16
        assert max_diff([t.float() for t in out], [t.float() for t in eager_out]) < 2e-2
        assert max_diff(grads, eager_grads) < 5e-2 * max(1.0, max(g.abs().max().item() for g in eager_grads))
        x, lengths, state, _ = case
        with torch.inference_mode():
            inferred = lstm(x, lengths, state)[0]
        with torch.no_grad():  # a graph captured in inference mode serves no_grad too
            again = lstm(x, lengths, state)[0]
            with cuda_graphs.off():
                eager = lstm(x, lengths, state)[0]
        assert max_diff([inferred, again], [eager, eager]) < TOLERANCE[device.type]
    keys = cuda_graphs.graph_cache().graphs
    assert any(key[:2] == ("forward", True) and key[5] == torch.bfloat16 for key in keys)
    float32 = [key[:2] for key in keys if key[5] == torch.float32]
    assert float32 == [("forward", False)], "one float32 graph: inference, without the backward's tensors"


def test_the_lru_bound_keeps_results_right(device, monkeypatch):
    """One graph at most, two buckets used in turn: graphs are dropped and captured again, results stay equal."""
    monkeypatch.setattr(cuda_graphs, "_cache", cuda_graphs.GraphCache(limit=1))
    lstm = LSTM(6, 8, 2, bidirectional=True).to(device)
    for seed in range(4):
        steps = 5 if seed % 2 else 20
        (out, grads), (eager_out, eager_grads) = graphed_and_eager(lstm, lstm_case(seed, steps, [steps, 3], device))
        assert max(max_diff(out, eager_out), max_diff(grads, eager_grads)) < TOLERANCE[device.type]
        assert len(cuda_graphs.graph_cache().graphs) == 1


def test_switched_off_by_the_environment(device, monkeypatch):
    monkeypatch.setenv(cuda_graphs.ENV, "0")
    lstm = LSTM(6, 8).to(device)
    x = torch.randn(7, 3, 6, device=device)
    for _ in range(3):
        lstm(x)[0].sum().backward()
    assert cuda_graphs._cache is None or not cuda_graphs._cache.graphs


# --- variant cells (`cuda_graphs.run_variant_layer`) ---------------------------------------------------

VARIANTS = {
    "layer_norm": CellVariant(layer_norm=True),
    "zoneout": CellVariant(zoneout_c=0.3, zoneout_h=0.2),
    "dropout": CellVariant(recurrent_dropout=0.3, input_dropout=0.2),
    "peepholes_cifg": CellVariant(peepholes=True, coupled_gates=True),
    "all": CellVariant(True, 0.3, 0.0, 0.3, 0.2, True, True),
}
# float64 (tensor operations): graphed equals eager to rounding (< 1e-12 measured). float32 (the C kernel
# on CPU, Triton on CUDA): products over more rows round differently, and layer norm's 1/σ of an 8-unit
# block with little spread magnifies that (up to 3e-4 of the largest gradient measured, all variants at once)
VARIANT_CASES = {"cpu": [("tensor", torch.float64, 1e-10), ("native", torch.float32, 1e-3)]}
VARIANT_CASES["cuda"] = [("tensor", torch.float32, 1e-3), ("triton", torch.float32, 1e-3)]


def relative_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """`max_diff` over the largest magnitude in ``b`` (at least 1)."""
    return max_diff(a, b) / max(1.0, max(t.abs().max().item() for t in b))


def variant_lstm(name: str, device: torch.device, dtype: torch.dtype = torch.float32) -> LSTM:
    """A 2-layer bidirectional LSTM with the variant, its gains and biases moved off their initial values."""
    torch.manual_seed(1)
    lstm = LSTM(6, 8, 2, bidirectional=True, variant=VARIANTS[name]).to(device, dtype)
    with torch.no_grad():
        for parameter in lstm.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    return lstm


@pytest.mark.parametrize("case", [0, 1])
@pytest.mark.parametrize("name", VARIANTS)
def test_graphed_variant_lstm_equals_eager(device, name, case, monkeypatch):
    """Training (masks and zoneout drawn alike for both runs) over batches in two buckets, each met twice
    (the graphs' buffers then hold an earlier batch's data, or were made for a smaller one): outputs and every gradient (the variant's gains,
    biases and peepholes too) equal to the eager loop's, through variant graphs; then evaluation (zoneout's
    expectation), also through graphs. On CPU oneDNN is off, so that float32 inference reaches the graphs,
    as on CUDA."""
    point_wise, dtype, tolerance = VARIANT_CASES[device.type][case]
    if device.type == "cpu":
        use_point_wise(point_wise, monkeypatch)
        monkeypatch.setattr(onednn, "usable", lambda weight: False)
    lstm = variant_lstm(name, device, dtype)
    # the first batch of the bucket 14 x 10 is smaller than it, the next one fills it
    cases = [(13, [13, 2, 5, 13, 1, 8, 4, 4, 12]), (14, [14, 9, 14, 1, 7, 3, 2, 5, 11, 6]), (14, [3, 14, 2, 9, 1, 6])]
    with triton_step.only_on(*((device.type,) if point_wise == "triton" else ())):
        for seed, (steps, lengths) in enumerate(cases * 2):
            (out, grads), (eager_out, eager_grads) = graphed_and_eager(
                lstm, lstm_case(seed, steps, lengths, device, dtype), seed=seed
            )
            assert relative_diff(out, eager_out) < tolerance
            assert relative_diff(grads, eager_grads) < tolerance
        kinds = {key[:2] for key in cuda_graphs.graph_cache().graphs}
        assert {kind for kind, _ in kinds} == {"variant forward", "variant backward"}
        assert ("variant forward", True) in kinds
        lstm.eval()
        for seed, (steps, lengths) in enumerate(cases):
            x, lengths, state, _ = lstm_case(seed, steps, lengths, device, dtype)
            with torch.no_grad():
                graphed = lstm(x, lengths, state)
                with cuda_graphs.off():
                    eager = lstm(x, lengths, state)
            assert relative_diff([graphed[0], *graphed[1]], [eager[0], *eager[1]]) < tolerance
    inference = [key for key in cuda_graphs.graph_cache().graphs if key[:2] == ("variant forward", False)]
    assert bool(inference) == (name != "dropout"), "dropout-only cells run the plain cell in evaluation"


def test_graphed_variant_lstm_through_the_triton_kernels_on_cpu(monkeypatch):
    """All variants at once with the variant step in the Triton kernels (Triton's interpreter on CPU; what
    CUDA runs inside its graphs): training outputs and every gradient equal to the eager loop's."""
    if importlib.util.find_spec("triton") is None or os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("Triton's interpreter is not available here")
    monkeypatch.setattr(cuda_graphs, "DEVICE_TYPES", {"cpu"})
    monkeypatch.setattr(cuda_graphs, "CapturedGraph", ReplayedOnCpu)
    use_point_wise("tensor", monkeypatch)
    launched: list[bool] = []
    forward = triton_step.variant_forward

    def counted(*args, **kwargs) -> bool:
        launched.append(forward(*args, **kwargs))
        return launched[-1]

    monkeypatch.setattr(triton_step, "variant_forward", counted)
    cpu = torch.device("cpu")
    with triton_step.only_on("cpu"):
        lstm = variant_lstm("all", cpu)
        for seed, (steps, lengths) in enumerate([(13, [13, 2, 5, 13, 1, 8, 4, 4, 12]), (14, [14, 9, 14, 1, 7, 3, 2])]):
            (out, grads), (eager_out, eager_grads) = graphed_and_eager(
                lstm, lstm_case(seed, steps, lengths, cpu), seed=seed
            )
            assert relative_diff(out, eager_out) < 1e-3 and relative_diff(grads, eager_grads) < 1e-3
    assert launched and all(launched), "every variant step ran in the Triton kernel"
    assert {key[0] for key in cuda_graphs.graph_cache().graphs} == {"variant forward", "variant backward"}


def test_graphed_variant_lstm_without_an_initial_state(device):
    """No initial state: the eager loop skips the first step's recurrent product and its layer norm, the graph
    normalizes W_h·0 = 0 to 0; outputs and every gradient agree (float64 on CPU: to rounding)."""
    dtype, tolerance = (torch.float64, 1e-10) if device.type == "cpu" else (torch.float32, 1e-3)
    lstm = variant_lstm("layer_norm", device, dtype)
    for seed, (steps, lengths) in enumerate([(13, [13, 2, 5, 13, 1, 8, 4, 4, 12]), (14, [14, 9, 14, 1, 7, 3, 2])]):
        x, lengths, _, weights = lstm_case(seed, steps, lengths, device, dtype)
        runs = []
        for graphs in (True, False):
            with contextlib.nullcontext() if graphs else cuda_graphs.off():
                runs.append(outputs_and_grads(lstm, lambda m, x=x, lengths=lengths: m(x, lengths), [x], weights))
        assert relative_diff(runs[0][0], runs[1][0]) < tolerance
        assert relative_diff(runs[0][1], runs[1][1]) < tolerance
    assert any(key[0] == "variant backward" for key in cuda_graphs.graph_cache().graphs)


def test_graphed_variant_lstm_under_bf16_autocast(device):
    """bf16 autocast (how the GPU recipes train), all variants at once: the whole recurrence runs in bf16
    through the graphs, with the eager loop's outputs and gradients."""
    lstm = variant_lstm("all", device)
    cases = [(13, [13, 2, 5, 13, 1, 8, 4, 4, 12]), (14, [14, 9, 14, 1, 7, 3, 2, 5, 11, 6])]
    for seed, (steps, lengths) in enumerate(cases):
        case = lstm_case(seed, steps, lengths, device)
        (out, grads), (eager_out, eager_grads) = graphed_and_eager(lstm, case, torch.bfloat16, seed=seed)
        assert out[0].dtype == torch.bfloat16
        assert relative_diff([t.float() for t in out], [t.float() for t in eager_out]) < 2e-2
        assert relative_diff(grads, eager_grads) < 5e-2
    assert any(
        key[:2] == ("variant forward", True) and key[5] == torch.bfloat16 for key in cuda_graphs.graph_cache().graphs
    )


def test_the_decoder_steps_of_a_variant_cell_are_not_graphed(device):
    """`LSTMCell` steps (the decoder's) run eagerly, as the plain cell's: a graph per step would cost more
    in copies than it saves."""
    cell = LSTMCell(6, 8, variant=VARIANTS["all"]).to(device)
    x, h, c = (torch.randn(4, n, device=device) for n in (6, 8, 8))
    noise = cell.sequence_noise(x)
    for _ in range(4):
        h, c = cell(x, (h, c), noise)
    (h + c).sum().backward()
    assert cuda_graphs._cache is None or not cuda_graphs._cache.graphs
