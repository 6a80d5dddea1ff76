"""A differentiable call replayed from CUDA graphs (lstm_mt.lstm.graphed) and the decoder's graphed teacher forcing.

On CUDA with real graphs; on CPU with `ReplayedOnCpu`, a stand-in that replays by running the call again on
the static buffers, so the padding, the buffers, the cache and the autograd around the graphs are checked
without a GPU.
"""

from functools import partial

import pytest
import torch
from conftest import graphs_or_stand_in
from test_model import VOCAB, padded_batch, tiny_config

from lstm_mt.lstm import cuda_graphs, graphed
from lstm_mt.model import build_model


class ReplayedOnCpu(graphed.GraphedFunction):
    """`GraphedFunction` without CUDA: the same static buffers; a forward replay runs the call again and writes
    its outputs into the static ones, a backward replay takes autograd's gradients of that run."""

    def _record(self):
        with torch.enable_grad():
            outputs = self.call()
        grad_outputs = [torch.zeros_like(t) for t in outputs]
        grads = self._gradients(outputs, grad_outputs)
        return tuple(t.detach() for t in outputs), grad_outputs, [None if g is None else g.clone() for g in grads]

    def _replay_forward(self):
        with torch.enable_grad():
            self.live = self.call()
        for static, new in zip(self.outputs, self.live):
            static.copy_(new.detach())

    def _replay_backward(self):
        for static, new in zip(self.grads, self._gradients(self.live, self.grad_outputs)):
            if static is not None:
                static.copy_(new)


@pytest.fixture(params=["cpu", "cuda"])
def device(request, monkeypatch) -> torch.device:
    """CUDA with real graphs, or CPU with `ReplayedOnCpu`; a fresh cache either way."""
    monkeypatch.delenv(graphed.ENV, raising=False)
    monkeypatch.setattr(graphed, "_cache", None)
    return graphs_or_stand_in(request, monkeypatch, graphed, {"GraphedFunction": ReplayedOnCpu})


TOLERANCE = {"cpu": 1e-6, "cuda": 1e-4}  # float32; on CUDA cuBLAS may round a product over more rows differently


# --- the generic call ------------------------------------------------------------------


def test_a_graphed_call_gives_the_eager_outputs_and_gradients_on_every_replay(device):
    """Inputs and parameters change between calls; each replay's outputs and gradients are that call's."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(5, 3).to(device)

    def method(module, x, scale):
        return torch.tanh(module(x)) * scale, x.sum(1)

    fn = partial(method, linear)

    for call in range(4):
        x = torch.randn(4, 5, device=device, requires_grad=True)
        scale = torch.randn(4, 3, device=device)
        weights = [torch.randn(4, 3, device=device), torch.randn(4, device=device)]
        results = []
        for use_graph in (True, False):
            outputs = graphed.run("fn", linear, method, [x, scale]) if use_graph else None
            if use_graph and call > 0:
                assert outputs is not None, "captured on the second call, replayed from then on"
            outputs = outputs if outputs is not None else fn(x, scale)
            loss = sum((o * w).sum() for o, w in zip(outputs, weights))
            results.append([*outputs, *torch.autograd.grad(loss, [x, *linear.parameters()])])
        for got, want in zip(*results):
            torch.testing.assert_close(got, want, rtol=TOLERANCE[device.type], atol=TOLERANCE[device.type])
        with torch.no_grad():
            linear.weight.add_(0.1)  # the graph reads the parameters where they are


def test_a_second_forward_before_the_first_backward_runs_eagerly(device):
    """Two forward passes of one key, then both backward passes: the second ran eagerly, both gradients are right."""
    torch.manual_seed(0)
    module = torch.nn.Linear(3, 3, bias=False).to(device)
    weight = module.weight

    def method(module, x):
        return (torch.sigmoid(module(x)),)

    fn = partial(method, module)

    x = [torch.randn(2, 3, device=device) for _ in range(3)]
    for t in x[:2]:  # the first call runs eagerly, the second captures
        (graphed.run("fn", module, method, [t]) or fn(t))[0].sum().backward()
    weight.grad = None
    first = graphed.run("fn", module, method, [x[1]])
    assert first is not None
    assert graphed.run("fn", module, method, [x[2]]) is None, "its activations are still waiting for a backward pass"
    second = fn(x[2])
    (first[0].sum() + 2 * second[0].sum()).backward()
    expected = torch.autograd.grad(fn(x[1])[0].sum() + 2 * fn(x[2])[0].sum(), weight)[0]
    torch.testing.assert_close(weight.grad, expected, rtol=TOLERANCE[device.type], atol=TOLERANCE[device.type])
    del first, second
    assert graphed.run("fn", module, method, [x[2]]) is not None, "replayed again once the earlier outputs are gone"


def test_no_graph_without_a_backward_pass_or_with_graphs_off(device, monkeypatch):
    x = torch.randn(2, 2, device=device)
    module = torch.nn.Linear(2, 2).to(device)
    with torch.no_grad():
        assert not graphed.applies(x)
    assert graphed.applies(x)
    monkeypatch.setenv(graphed.ENV, "0")
    assert not graphed.applies(x)
    monkeypatch.setenv(graphed.ENV, "1")
    monkeypatch.setenv(cuda_graphs.ENV, "0")
    assert not graphed.applies(x)
    assert all(graphed.run("fn", module, lambda m, t: (m(t),), [x]) is None for _ in range(3))


# --- the decoder's teacher forcing -----------------------------------------------------


@pytest.mark.parametrize("autocast", [None, torch.bfloat16], ids=["fp32", "bf16"])
def test_graphed_teacher_forcing_equals_the_eager_loop_in_a_padded_bucket(device, autocast):
    """Batches whose rows, targets and sources are padded to one bucket: outputs, attention and every
    gradient (parameters and encoder) as the eager loop's, on the replays too; also under bf16 autocast
    (casts recorded in the graph; tolerance: bf16's rounding of a product over more rows)."""
    tolerance = TOLERANCE[device.type] if autocast is None else 2e-2
    torch.manual_seed(0)
    model = build_model(tiny_config(), VOCAB, VOCAB).to(device).train()
    generator = torch.Generator().manual_seed(0)
    shapes = [(10, 10, 10), (9, 9, 9), (10, 9, 10), (9, 10, 10)]  # rows, targets, source: each in the bucket of 10
    for seed, (rows, steps, source) in enumerate(shapes):
        src_lengths = torch.randint(1, source + 1, (rows,), generator=generator).tolist()
        src_lengths[seed % rows] = source
        tgt_lengths = [steps] * rows
        src, lengths = padded_batch(src_lengths, seed=seed)
        tgt_in, _ = padded_batch(tgt_lengths, seed=seed + 10)
        src, lengths, tgt_in = src.to(device), lengths.to(device), tgt_in.to(device)
        runs = []
        for graphs in (True, False):
            with cuda_graphs.off() if not graphs else torch.enable_grad():
                with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
                    encoder_out = model.encode(src, lengths)
                    hidden, attention = model.decoder(tgt_in, encoder_out)
                hidden, attention = hidden.float(), attention.float()
                torch.manual_seed(seed)
                weights = torch.randn(hidden.shape, device=device)
                loss = (hidden * weights).sum() + (attention * attention).sum()
                grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
                runs.append([hidden, attention, *grads])
        for got, want in zip(*runs):
            assert (got is None) == (want is None)
            if got is not None:
                torch.testing.assert_close(got, want, rtol=tolerance, atol=tolerance)
    assert graphed.graph_cache().graphs, "a bucket met twice is captured"
