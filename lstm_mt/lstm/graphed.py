"""A differentiable call replayed from CUDA graphs: its forward pass and its backward pass (autograd's), one launch each.

Why: the decoder's teacher-forced loop cannot run layer by layer (input feeding ties each step to
the last one's attention), so on CUDA it launches a few dozen small kernels per target position from
Python and is bound by launching them, as the encoder's layers were before `cuda_graphs`. Here a
whole call of such a function is recorded once as two CUDA graphs, forward and backward, over
static buffers, and replayed for every later call of the same key.

The caller's side of the contract:

- inputs come already padded to the bucket's shapes, by differentiable operations (so that
  autograd takes the real part of their gradients), and the caller slices the real part out of
  the outputs (so that the padded part's gradients arrive as zeros); padding must leave the real
  part's results as they are and finite;
- ``key`` names what the graph is fixed to besides the module, the method, the parameters'
  addresses and the inputs' shapes, dtypes and ``requires_grad`` (which `run` adds): the
  module's mode, the autocast state (`fastpath.autocast_dtype`).

A forward replay leaves the saved activations in the graph's memory until its backward replay.
So a key replays its forward pass only once the previous replay's backward has run or its outputs
are gone; otherwise (two forward passes, then their backward passes) the call runs eagerly. A
backward pass whose forward replay was overwritten raises instead of returning wrong gradients.

Graphs are captured on a key's second use and kept in their own `cuda_graphs.GraphCache`
(``LSTM_MT_CUDA_GRAPHS_MAX``); ``LSTM_MT_CUDA_GRAPHS_DECODER=0`` switches them off, and
``LSTM_MT_CUDA_GRAPHS=0`` all graphs. The same steps run
without a graph on CPU tensors in tests, with a stand-in for `GraphedFunction`.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Hashable, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from lstm_mt.lstm import cuda_graphs
from lstm_mt.lstm.fastpath import autocast_dtype

__all__ = ["GraphedFunction", "applies", "run"]

DEVICE_TYPES = {"cuda"}  # tests add "cpu" with a stand-in for `GraphedFunction` that replays by running again
ENV = "LSTM_MT_CUDA_GRAPHS_DECODER"  # 0: no graphed calls (the layers' graphs stay on)

Outputs = tuple[Tensor, ...]
Method = Callable[..., Outputs]  # called as method(module, *inputs)


def applies(*tensors: Tensor) -> bool:
    """Whether a call on these tensors may be graphed: graphs on, a device type in `DEVICE_TYPES`, a backward
    pass wanted, and not inside another capture (which records the eager call)."""
    first = tensors[0]
    if first.device.type not in DEVICE_TYPES or not torch.is_grad_enabled():
        return False
    if not cuda_graphs.enabled() or os.environ.get(ENV, "1") == "0":
        return False
    return not (first.is_cuda and torch.cuda.is_current_stream_capturing())


class _Bound(nn.Module):
    """``method(module, *inputs)`` as a module's forward, for `torch.func.functional_call`."""

    def __init__(self, module: nn.Module, method: Method) -> None:
        super().__init__()
        self.module, self.method = module, method

    def forward(self, *inputs: Tensor) -> Outputs:
        return self.method(self.module, *inputs)


class GraphedFunction:
    """``method(module, *inputs)`` recorded over static copies of ``inputs`` as two graphs: its forward pass, then
    autograd's backward pass from gradients for every output to the inputs and parameters that require them.

    `forward` copies the inputs in and replays the first; `backward` copies the outputs' gradients in and
    replays the second. Both return static buffers, which the next replay overwrites.
    """

    def __init__(self, module: nn.Module, method: Method, inputs: Sequence[Tensor]) -> None:
        bound = _Bound(module, method)
        named = dict(bound.named_parameters())
        with cuda_graphs.outside_autograd():
            self.statics = tuple(t.detach().clone().requires_grad_(t.requires_grad) for t in inputs)  # real data
            # The graphs differentiate aliases of the parameters (same memory, so replays read the values of now):
            # autograd nodes of the parameters themselves, made on the default stream by an earlier eager pass and
            # still alive, would join the default stream into the capture, which CUDA refuses.
            aliases = {name: p.detach().requires_grad_(p.requires_grad) for name, p in named.items()}
        self.parameters = list(named.values())
        self.wrt = [t for t in (*self.statics, *aliases.values()) if t.requires_grad]
        self.call = partial(torch.func.functional_call, bound, aliases, self.statics)  # method(module, *statics)
        self.generation = 0  # forward replays so far
        self.pending: weakref.ref[Tensor] | None = None  # the last forward replay's first output, until its backward
        self.outputs, self.grad_outputs, self.grads = self._record()

    def free(self) -> bool:
        """Whether the last forward replay's activations are no longer needed (its backward ran or its outputs
        are gone), so that the forward pass may be replayed again."""
        return self.pending is None or self.pending() is None

    def forward(self, inputs: Sequence[Tensor]) -> Outputs:
        for static, given in zip(self.statics, inputs):
            static.detach().copy_(given)
        self._replay_forward()
        self.generation += 1
        return self.outputs

    def backward(self, grad_outputs: Sequence[Tensor], generation: int) -> Sequence[Tensor | None]:
        if generation != self.generation:
            raise RuntimeError("a graphed call's forward pass was replayed again before this backward pass")
        for static, given in zip(self.grad_outputs, grad_outputs):
            static.copy_(given)
        self._replay_backward()
        self.pending = None
        return self.grads

    def _record(self) -> tuple[Outputs, list[Tensor], Sequence[Tensor | None]]:
        """Warm up on a side stream, then capture the forward pass and the backward pass in one memory pool."""
        device = self.statics[0].device
        stream = cuda_graphs.side_stream(device)
        with torch.cuda.device(device), _uncached_autocast(device.type), torch.enable_grad():
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):
                for _ in range(cuda_graphs.WARMUP):
                    outputs = self.call()
                    self._gradients(outputs, [torch.zeros_like(t) for t in outputs])
            torch.cuda.current_stream(device).wait_stream(stream)
            self.forward_graph, self.backward_graph = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.forward_graph, stream=stream, capture_error_mode="thread_local"):
                outputs = self.call()
            grad_outputs = [torch.zeros_like(t) for t in outputs]
            with torch.cuda.graph(
                self.backward_graph, pool=self.forward_graph.pool(), stream=stream, capture_error_mode="thread_local"
            ):
                grads = self._gradients(outputs, grad_outputs)
        return tuple(t.detach() for t in outputs), grad_outputs, grads

    def _gradients(self, outputs: Outputs, grad_outputs: Sequence[Tensor]) -> Sequence[Tensor | None]:
        return torch.autograd.grad(outputs, self.wrt, grad_outputs, allow_unused=True)

    def _replay_forward(self) -> None:
        self.forward_graph.replay()

    def _replay_backward(self) -> None:
        self.backward_graph.replay()


def _uncached_autocast(device_type: str) -> torch.autocast:
    """The autocast state of now without its cast cache: a cached cast made during a capture would live in the
    graph's memory, and the eager code after it would read it while replays overwrite it."""
    dtype = autocast_dtype(device_type)
    return torch.autocast(device_type, dtype=dtype, enabled=dtype is not None, cache_enabled=False)


_cache: cuda_graphs.GraphCache | None = None


def graph_cache() -> cuda_graphs.GraphCache:
    """The process's graphed calls (made on first use, bounded by `cuda_graphs.max_graphs`)."""
    global _cache
    if _cache is None:
        _cache = cuda_graphs.GraphCache(cuda_graphs.max_graphs())
    return _cache


def run(key: Hashable, module: nn.Module, method: Method, inputs: Sequence[Tensor]) -> Outputs | None:
    """``method(module, *inputs)`` replayed from the graphs of ``key`` (captured on its second use), with gradients
    to the inputs and the module's parameters that require them; None where it is not replayed now (`applies`, the
    cache, or the key's last forward replay still waiting for its backward pass), and the caller runs it itself.

    ``key`` names what the graphs are fixed to besides the module, its parameters and the inputs (added here):
    say, the module's mode and the autocast state (`fastpath.autocast_dtype`).
    """
    if not applies(*inputs):
        return None
    key = (
        key,
        id(module),
        method,
        tuple((p.data_ptr(), p.requires_grad) for p in module.parameters()),
        tuple((tuple(t.shape), t.dtype, t.device, t.requires_grad) for t in inputs),
    )
    if not graph_cache().wanted(key):
        return None
    graph = graph_cache().get(key, lambda: GraphedFunction(module, method, inputs))
    if graph is None or not graph.free():
        return None
    outputs = _GraphedCall.apply(graph, len(inputs), *inputs, *graph.parameters)
    graph.pending = weakref.ref(outputs[0])
    return outputs


class _GraphedCall(torch.autograd.Function):
    """One replay of a `GraphedFunction` in autograd: ``(graph, count, *inputs, *parameters) -> outputs``;
    its outputs and gradients are copies of the static buffers."""

    @staticmethod
    def forward(ctx: Any, graph: GraphedFunction, count: int, *tensors: Tensor) -> Outputs:
        ctx.graph, ctx.generation = graph, graph.generation + 1
        ctx.wants = [t.requires_grad for t in tensors]
        return tuple(t.clone() for t in graph.forward(tensors[:count]))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, *grad_outputs: Tensor) -> tuple[Tensor | None, ...]:
        grads = iter(ctx.graph.backward(grad_outputs, ctx.generation))
        return None, None, *(_copy(next(grads)) if wants else None for wants in ctx.wants)


def _copy(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clone()
