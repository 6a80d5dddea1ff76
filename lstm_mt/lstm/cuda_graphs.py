"""CUDA graphs over a layer's recurrence: the launches of all its steps replayed as one.

Why: on a GPU a step of the recurrence is a matrix product and a point-wise kernel of a few
microseconds each, and launching them from Python costs more than running them (issue 21's
profile: a training step of 7.7 ms wall time for 1.2 ms of GPU work). A CUDA graph records a
layer direction's launches once, forward and (separately) the hand-written backward loop of
`lstm_mt.lstm.autograd`, and replays them with one call.

A graph is fixed to its shapes and memory addresses, so:

- the batch and the number of steps are padded up to buckets (`bucket_size`: exact up to 8,
  then four sizes per doubling, at most 25% padding), and a graph is keyed by the bucket,
  H, dtype, device and point-wise kernel; at most `max_graphs()` are kept, the least recently
  used dropped first. A bucket is captured on its second call (each layer direction is one), so
  a shape met once by a one-layer, one-direction LSTM runs the eager loop and costs no capture;
- every step runs all rows of the bucket. A padded position (past its sequence's end, or a
  row or step the bucket added) gets the pre-activations (−∞, −∞, 0, 0): its input and
  forget gates are shut, so C = 0·C_prev + 0·C̃ = 0 and h = o·tanh(0) = 0, exactly the zeros
  the eager path leaves there, and every gradient through it is zero (σ'(−∞) = 0, tanh(0)
  = 0). Rows never mix, so each real row computes what it computes in the eager loop, to the
  rounding of a product over more rows;
- each call copies its inputs into the graph's static buffers, replays, and copies the
  outputs out (under a lock, so threads take turns), so the layers and directions that share a
  bucket share its graph.

Warm-up runs on a side stream before capture, as `torch.cuda.graph` asks (it compiles the
Triton kernels and makes cuBLAS's handles); where a capture fails, a warning is logged and that
key runs the eager loop. The same padded functions run without a graph on CPU tensors (tests).

``LSTM_MT_CUDA_GRAPHS=0`` switches graphs off; ``LSTM_MT_CUDA_GRAPHS_MAX`` (default 64) bounds
how many are kept (`GraphCache`: a shape dropped and captured three times then stays eager).
A variant cell's layer recurrence (`lstm_mt.lstm.variant_autograd`'s loops) is graphed the same
way (`run_variant_layer`), with its dropout mask and zoneout's 0/1 tensors as graph inputs. Its
padding differs: layer norm and zoneout would not keep a shut position at zero, so every row runs
from zero state at its padded positions, whose h and C are zeroed after each step, and gradients
arriving there are dropped (`variant_forward`'s ``padding``). Whole layers only (`fastpath.run_layer`),
not the decoder's single steps.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, lru_cache, partial
from typing import Any, TypeVar, cast

import torch
from torch import Tensor

from lstm_mt.errors import LstmMtError
from lstm_mt.lstm import pointwise
from lstm_mt.lstm.autograd import recurrence_backward, recurrence_forward
from lstm_mt.lstm.variant_autograd import variant_backward, variant_forward
from lstm_mt.lstm.variant_pointwise import VariantPointwise
from lstm_mt.lstm.variants import CellVariant

__all__ = [
    "GraphCache",
    "bucket_size",
    "graph_cache",
    "enabled",
    "max_graphs",
    "off",
    "outside_autograd",
    "padded_shape",
    "run_layer",
    "run_variant_layer",
    "side_stream",
]

log = logging.getLogger(__name__)

ENV, MAX_ENV = "LSTM_MT_CUDA_GRAPHS", "LSTM_MT_CUDA_GRAPHS_MAX"
DEFAULT_MAX_GRAPHS = 64  # the base recipe meets 22 training buckets (2 graphs each) and 6 of validation
MAX_STEPS, MAX_BATCH = 1024, 4096  # larger runs take the eager loop (a graph would hold too much memory)
CAPTURE_AFTER = 2  # a forward bucket is captured on its second use
MAX_CAPTURES = 3  # a key dropped from the cache and captured again this often runs eagerly from then on
WARMUP = 2  # runs on a side stream before a capture

DEVICE_TYPES = {"cuda"}  # tests add "cpu" with a stand-in for `CapturedGraph` that replays by running again
_off_depth = 0  # `off` blocks entered


def enabled() -> bool:
    """Whether layer recurrences on CUDA may run as graphs (``LSTM_MT_CUDA_GRAPHS`` is not 0, not inside `off`)."""
    return _off_depth == 0 and os.environ.get(ENV, "1") != "0"


@contextmanager
def off() -> Iterator[None]:
    """Inside the block, no graphs: the eager loops run (to time them side by side)."""
    global _off_depth
    _off_depth += 1
    try:
        yield
    finally:
        _off_depth -= 1


def max_graphs() -> int:
    """How many graphs are kept: ``LSTM_MT_CUDA_GRAPHS_MAX``, default 64."""
    value = os.environ.get(MAX_ENV, str(DEFAULT_MAX_GRAPHS))
    if not value.isdigit() or int(value) < 1:
        raise LstmMtError(f"{MAX_ENV}={value!r}: must be a whole number of graphs, at least 1")
    return int(value)


def bucket_size(n: int) -> int:
    """``n`` rounded up to a bucket: exact up to 8, then multiples of a quarter of the power of two
    at or below ``n`` (9 → 10, 17 → 20, 30 → 32, 50 → 56, 65 → 80), so at most 25% is padding."""
    if n <= 8:
        return n
    step = 1 << (n.bit_length() - 3)
    return -(-n // step) * step


def padded_shape(steps: int, batch: int) -> tuple[int, int] | None:
    """The bucket ``(steps, batch)`` of a run, or None where graphs do not take it (empty, or too large)."""
    if not (0 < steps and 0 < batch):
        return None
    shape = bucket_size(steps), bucket_size(batch)
    return shape if shape[0] <= MAX_STEPS and shape[1] <= MAX_BATCH else None


def padding_mask(sizes: Tensor, batch: int) -> Tensor:
    """``[T, batch]``: True where row b is padding at step t, i.e. ``b >= sizes[t]`` (rows sorted by length)."""
    return torch.arange(batch, device=sizes.device) >= sizes.unsqueeze(1)


def shut_gates(x_proj: Tensor, mask: Tensor) -> Tensor:
    """``x_proj`` ``[T, B, 4H]`` with each padded position's pre-activations set to (−∞, −∞, 0, 0) for
    (i, f, C̃, o): input and forget gates shut, so that position's C and h are 0 whatever came before."""
    H = x_proj.shape[-1] // 4
    shut = x_proj.new_zeros(4 * H)
    shut[: 2 * H].fill_(float("-inf"))
    return torch.where(mask.unsqueeze(-1), shut, x_proj)


def padded_forward(
    x_proj: Tensor, sizes: Tensor, weight_hh: Tensor, h0: Tensor, c0: Tensor, keep: bool
) -> tuple[Tensor | None, ...]:
    """The recurrence over a padded batch, every row at every step (what a forward graph records).

    ``sizes[t]``: rows still running at step t (0 for steps the bucket added). Returns ``hs``, ``cs``,
    and with ``keep`` the gates and tanh(C) (else None), and the initial state as used, rows the
    bucket added zeroed (`recurrence_forward` and the module docstring).
    """
    mask, h0, c0, full = _bucket_start(sizes, x_proj, h0, c0)
    hs, cs, gates, tanh_cs = recurrence_forward(shut_gates(x_proj, mask), weight_hh, h0, c0, full, False, keep)
    return hs, cs, gates, tanh_cs, h0, c0


def _bucket_start(sizes: Tensor, x: Tensor, h0: Tensor, c0: Tensor) -> tuple[Tensor, Tensor, Tensor, list[int]]:
    """For a run over the bucket of ``x`` ``[T, B, ·]``: the `padding_mask`, the initial state with the rows the
    bucket added zeroed, and the batch sizes of a run of every row at every step."""
    mask = padding_mask(sizes, x.shape[1])
    added_rows = mask[0].unsqueeze(1)  # every sequence runs at step 0, so these are the rows the bucket added
    return mask, h0.masked_fill(added_rows, 0), c0.masked_fill(added_rows, 0), [x.shape[1]] * x.shape[0]


def padded_backward(sizes: Tensor, weight_hh: Tensor, *saved_and_grads: Tensor) -> tuple[Tensor | None, ...]:
    """`recurrence_backward` over a padded batch (what a backward graph records).

    ``saved_and_grads``: ``hs, cs, gates, tanh_cs, h0, c0`` from `padded_forward`, then the gradients
    reaching ``hs`` and ``cs``; those at padded positions are dropped, as the eager loop never reads them.
    Returns ``dL/dx_proj, dL/dW_hh, dL/dh0, dL/dc0``.
    """
    hs, cs, gates, tanh_cs, h0, c0, grad_hs, grad_cs = saved_and_grads
    dh, dc, full = _dropped_at_padding(sizes, grad_hs, grad_cs)
    saved = (weight_hh, h0, c0, hs, cs, gates, tanh_cs)
    return recurrence_backward(saved, dh, dc, full, False, need_dh0=True, need_weight=True)


def _dropped_at_padding(sizes: Tensor, grad_hs: Tensor, grad_cs: Tensor) -> tuple[Tensor, Tensor, list[int]]:
    """The gradients reaching ``hs`` and ``cs``, zero at padded positions, and the batch sizes of a run of
    every row at every step."""
    mask = padding_mask(sizes, grad_hs.shape[1]).unsqueeze(-1)
    return grad_hs.masked_fill(mask, 0), grad_cs.masked_fill(mask, 0), [grad_hs.shape[1]] * grad_hs.shape[0]


@contextmanager
def outside_autograd() -> Iterator[None]:
    """Neither recording autograd nor in inference mode: where a graph's buffers are made and written."""
    with torch.no_grad(), torch.inference_mode(False):
        yield


class CapturedGraph:
    """``fn`` recorded as a CUDA graph over static input buffers (``statics``, which give the bucket's shapes).

    Calling it copies each input into the leading part of its buffer, replays the graph and
    returns the static outputs, which the next call overwrites.
    """

    def __init__(self, fn: Callable[..., tuple[Tensor | None, ...]], statics: list[Tensor]) -> None:
        self.statics = statics
        with outside_autograd():  # the buffers are ordinary tensors, whatever mode the first call came in
            self.outputs = self._record(fn)

    def __call__(self, *inputs: Tensor) -> tuple[Tensor | None, ...]:
        for static, given in zip(self.statics, inputs):
            static[tuple(slice(0, n) for n in given.shape)].copy_(given)
        self._replay()
        return self.outputs

    def _record(self, fn: Callable[..., tuple[Tensor | None, ...]]) -> tuple[Tensor | None, ...]:
        """Warm up on a side stream, then capture ``fn`` on the statics; returns its (static) outputs."""
        device = self.statics[0].device
        stream = side_stream(device)
        with torch.cuda.device(device):
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):
                for _ in range(WARMUP):
                    fn(*self.statics)
            torch.cuda.current_stream(device).wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            # thread_local: a DataLoader's pin-memory thread allocating host memory must not break the capture
            with torch.cuda.graph(self.graph, stream=stream, capture_error_mode="thread_local"):
                return fn(*self.statics)

    def _replay(self) -> None:
        self.graph.replay()


class GraphCache:
    """At most ``limit`` graphs, the least recently used dropped first. `wanted` counts a key's uses
    (capture pays from the ``after``-th on); `get` returns its graph, capturing it if needed.

    A key is captured at most ``captures`` times: one dropped that often is used in turn with more
    shapes than ``limit`` holds, where capturing again costs more than the graph saves, so it
    runs the eager loop from then on (one warning). So does a key whose capture failed.
    """

    def __init__(self, limit: int, after: int = CAPTURE_AFTER, captures: int = MAX_CAPTURES) -> None:
        self.limit, self.after, self.captures = limit, after, captures
        self.graphs: OrderedDict[Hashable, Any] = OrderedDict()
        self.uses: Counter[Hashable] = Counter()
        self.captured: Counter[Hashable] = Counter()
        self.failed: set[Hashable] = set()

    def wanted(self, key: Hashable) -> bool:
        """Count a use of ``key``; True when it has a graph, or has been used ``after`` times and may be captured."""
        if key in self.graphs:
            return True
        self.uses[key] += 1
        return self.uses[key] >= self.after and key not in self.failed

    def get(self, key: Hashable, capture: Callable[[], Any]) -> Any | None:
        """The graph of ``key``, made by ``capture()`` if there is none; None where it may not be captured (again)."""
        if key in self.graphs:
            self.graphs.move_to_end(key)
            return self.graphs[key]
        if key in self.failed:
            return None
        if self.captured[key] >= self.captures:
            log.warning(
                "CUDA graph for %s dropped %d times (more shapes in turn than %s=%d holds); it runs without a graph",
                key,
                self.captured[key],
                MAX_ENV,
                self.limit,
            )
            self.failed.add(key)
            return None
        try:
            graph = capture()
        except Exception as error:  # capture fails in many ways (driver, Triton, allocator); the eager loop still works
            log.warning("CUDA graph capture failed for %s (%s); that shape runs without a graph", key, error)
            self.failed.add(key)
            return None
        self.captured[key] += 1
        self.graphs[key] = graph
        while len(self.graphs) > self.limit:
            self.graphs.popitem(last=False)
        return graph


_cache: GraphCache | None = None


def graph_cache() -> GraphCache:
    """The process's graphs (made on first use, bounded by `max_graphs`)."""
    global _cache
    if _cache is None:
        _cache = GraphCache(max_graphs())
    return _cache


def run_layer(
    x_proj: Tensor, weight_hh: Tensor, h0: Tensor, c0: Tensor, batch_sizes: list[int]
) -> tuple[Tensor, Tensor] | None:
    """`LayerRecurrence` through CUDA graphs: every step's ``h`` and ``C`` ``[T, B, H]``, zero on padding;
    None where graphs do not apply (see the module docstring), and the caller runs the eager loop."""
    tensors = [x_proj, weight_hh, h0, c0]
    shape = _bucket_taken(tensors)
    if shape is None:
        return None
    keep = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    if not graph_cache().wanted(("forward", keep, *_signature(x_proj, weight_hh, shape))):
        return None
    return PaddedRecurrence.apply(x_proj, weight_hh, h0, c0, batch_sizes, keep)


def _bucket_taken(tensors: list[Tensor]) -> tuple[int, int] | None:
    """The bucket of a layer run over ``tensors`` (the first ``[T, B, ·]``), or None where graphs do not take it:
    graphs off, not CUDA, inside someone else's capture (the eager loop is recorded there), mixed dtypes or
    devices, or a shape `padded_shape` refuses."""
    first = tensors[0]
    if not _takes(first) or (first.is_cuda and torch.cuda.is_current_stream_capturing()):
        return None
    if any(t.dtype != first.dtype or t.device != first.device for t in tensors):
        return None
    return padded_shape(first.shape[0], first.shape[1])


class PaddedRecurrence(torch.autograd.Function):
    """`LayerRecurrence` over the padded bucket (`padded_forward`, `padded_backward`), each pass replayed
    from a graph on CUDA; same inputs and outputs, except ``keep`` for ``h0_is_zero``: whether a backward
    pass will follow (the caller knows; ``ctx.needs_input_grad`` tells which inputs require grad, which
    parameters do under no_grad and inference_mode too)."""

    @staticmethod
    def forward(ctx, x_proj, weight_hh, h0, c0, batch_sizes, keep):
        steps, batch, _ = x_proj.shape
        shape = padded_shape(steps, batch)
        assert shape is not None, "run_layer checks the shape"
        T, B = shape
        sizes = _device_sizes(tuple(batch_sizes), T, x_proj.device)
        kept = _run(
            ("forward", keep, *_signature(x_proj, weight_hh, shape)),
            partial(padded_forward, keep=keep),
            [x_proj, sizes, weight_hh, h0, c0],
            _state_shapes(T, B, weight_hh),
            partial(_copies, shapes=[()] * 6 if keep else [(steps, batch)] * 2),  # all, or the real hs and cs
        )
        return _forward_result(ctx, kept, keep, (steps, batch), [sizes, weight_hh])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_hs, grad_cs):
        inputs, shapes = _backward_inputs(ctx, grad_hs, grad_cs)
        grad_pre, grad_w_hh, dh0, dc0 = _run(
            ("backward", *_signature(inputs[2], inputs[1], shapes[2][:2])),
            padded_backward,
            inputs,
            shapes,
            _real_gradients(ctx, 4),
        )
        return grad_pre, grad_w_hh, dh0, dc0, None, None


def run_variant_layer(
    x_in: Tensor,
    weight_hh: Tensor,
    h0: Tensor,
    c0: Tensor,
    *optional: Tensor | float | None,
    variant: CellVariant,
    batch_sizes: list[int],
) -> tuple[Tensor, Tensor] | None:
    """`VariantRecurrence` through CUDA graphs (same inputs: ``optional`` holds ``peephole_weight, ln_weight_hh,
    ln_weight_c, ln_bias_c, h_mask, keep_c, keep_h``); None where graphs do not apply, as `run_layer`.

    The masks and zoneout's 0/1 tensors are graph inputs, copied in as the state is; absent parameters and
    zoneout's evaluation probability are fixed in the graph (part of its key). Padded positions run from zero
    state and are zeroed after each step (`variant_forward`'s ``padding``): layer norm and zoneout would not
    leave a shut position at zero as the plain cell's gates do.
    """
    tensors = [x_in, weight_hh, h0, c0, *(t for t in optional if isinstance(t, Tensor))]
    shape = _bucket_taken(tensors)
    if shape is None:
        return None
    keep = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    layout = _VariantLayout(variant, tuple(_GIVEN if isinstance(t, Tensor) else t for t in optional))
    if not graph_cache().wanted(("variant forward", keep, *_signature(x_in, weight_hh, shape), layout.key())):
        return None
    return PaddedVariantRecurrence.apply(x_in, weight_hh, h0, c0, *optional, variant, batch_sizes, keep)


_GIVEN = "given"  # a `_VariantLayout` slot filled by a graph input


@dataclass
class _VariantLayout:
    """Which of a variant run's optional inputs are graph inputs (``_GIVEN``), and the others' fixed values
    (None: absent; a float: zoneout's probability)."""

    variant: CellVariant
    slots: tuple[object, ...]

    def key(self) -> Hashable:
        return dataclasses.astuple(self.variant), self.slots

    def fill(self, given: Sequence[Tensor]) -> list[Any]:
        """The optional inputs in order, ``given`` in the graph-input slots."""
        rest = iter(given)
        return [next(rest) if slot == _GIVEN else slot for slot in self.slots]

    def rule(self, given: Sequence[Tensor]) -> tuple[VariantPointwise, Tensor | None]:
        """The point-wise rule over these inputs, and the recurrent dropout mask."""
        peephole, ln_hh, ln_c, ln_bias_c, h_mask, keep_c, keep_h = self.fill(given)
        return VariantPointwise(self.variant, peephole, ln_hh, ln_c, ln_bias_c, keep_c, keep_h), h_mask


def padded_variant_forward(
    x_in: Tensor, sizes: Tensor, weight_hh: Tensor, h0: Tensor, c0: Tensor, *given: Tensor, layout: _VariantLayout
) -> tuple[Tensor | None, ...]:
    """`variant_forward` over a padded batch, every row at every step (what a variant forward graph records).
    Returns ``hs, cs, gates, tanh_cs, c_tildes``, the layer norms' buffers and the initial state as used."""
    rule, h_mask = layout.rule(given)
    mask, h0, c0, full = _bucket_start(sizes, x_in, h0, c0)
    _, _, saved = variant_forward(x_in, weight_hh, h0, c0, h_mask, rule, full, False, padding=mask)
    run, norm = saved[3:8], saved[9:]  # hs, cs, gates, tanh_cs, c_tildes; the layer norms' buffers
    return (*run, *norm, h0, c0)


def padded_variant_backward(
    sizes: Tensor, weight_hh: Tensor, *rest: Tensor, layout: _VariantLayout
) -> tuple[Tensor | None, ...]:
    """`variant_backward` over a padded batch (what a variant backward graph records). ``rest``: what
    `padded_variant_forward` returned, the optional graph inputs, then the gradients reaching ``hs`` and ``cs``
    (those at padded positions dropped). Returns the eight gradients of `variant_backward`."""
    *forward, h0, c0 = rest[:11]
    *given, grad_hs, grad_cs = rest[11:]
    rule, h_mask = layout.rule(given)
    mask = padding_mask(sizes, grad_hs.shape[1]).unsqueeze(-1)
    dh, dc = grad_hs.masked_fill(mask, 0), grad_cs.masked_fill(mask, 0)
    hs, cs, gates, tanh_cs, c_tildes, *norm = forward
    saved = [weight_hh, h0, c0, hs, cs, gates, tanh_cs, c_tildes, h_mask, *norm]
    peephole, ln_hh, ln_c, ln_bias_c = layout.fill(given)[:4]
    needs = (True, True, True, True, *(t is not None for t in (peephole, ln_hh, ln_c, ln_bias_c)))
    full = [grad_hs.shape[1]] * grad_hs.shape[0]
    return variant_backward(saved, rule, dh, dc, full, False, needs)


class PaddedVariantRecurrence(torch.autograd.Function):
    """`VariantRecurrence` over the padded bucket (`padded_variant_forward`, `padded_variant_backward`),
    each pass replayed from a graph on CUDA; same inputs and outputs, with ``keep`` for ``h0_is_zero``
    (as `PaddedRecurrence`)."""

    @staticmethod
    def forward(ctx, x_in, weight_hh, h0, c0, *rest):
        *optional, variant, batch_sizes, keep = rest
        steps, batch, _ = x_in.shape
        shape = padded_shape(steps, batch)
        assert shape is not None, "run_variant_layer checks the shape"
        T, B = shape
        layout = _VariantLayout(variant, tuple(_GIVEN if isinstance(t, Tensor) else t for t in optional))
        given = [t for t in optional if isinstance(t, Tensor)]
        given_shapes = [_bucket_of(t, steps, batch, T, B) for t in given]
        sizes = _device_sizes(tuple(batch_sizes), T, x_in.device)
        kept = _run(
            ("variant forward", keep, *_signature(x_in, weight_hh, shape), layout.key()),
            partial(padded_variant_forward, layout=layout),
            [x_in, sizes, weight_hh, h0, c0, *given],
            [*_state_shapes(T, B, weight_hh), *given_shapes],
            partial(_copies, shapes=[()] * 11 if keep else [(steps, batch)] * 2),
        )
        ctx.layout, ctx.given_shapes = layout, given_shapes
        return _forward_result(ctx, kept, keep, (steps, batch), [sizes, weight_hh], given)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_hs, grad_cs):
        inputs, shapes = _backward_inputs(ctx, grad_hs, grad_cs)
        shapes[13 : 13 + len(ctx.given_shapes)] = ctx.given_shapes  # the optional inputs in the bucket, as forward
        grads = _run(
            ("variant backward", *_signature(inputs[2], inputs[1], shapes[2][:2]), ctx.layout.key()),
            partial(padded_variant_backward, layout=ctx.layout),
            inputs,
            shapes,
            _real_gradients(ctx, 8),
        )
        return (*grads, *(None,) * (len(ctx.needs_input_grad) - 8))


def _state_shapes(T: int, B: int, weight_hh: Tensor) -> list[tuple[int, ...]]:
    """The bucket's shapes of a forward pass's ``x_proj, sizes, weight_hh, h0, c0``."""
    H = weight_hh.shape[1]
    return [(T, B, 4 * H), (T,), tuple(weight_hh.shape), (B, H), (B, H)]


def _forward_result(
    ctx: Any,
    kept: list[Tensor | None],
    keep: bool,
    real: tuple[int, int],
    first: list[Tensor],
    last: Sequence[Tensor] = (),
) -> tuple[Tensor, Tensor]:
    """The ``real`` ``[steps, batch]`` part of a padded forward pass's ``hs`` and ``cs`` (``kept``'s first two); with
    ``keep``, ``first``,
    all of ``kept`` and ``last`` are saved for the backward pass (in that order, the backward graph's inputs)."""
    hs, cs = kept[0], kept[1]
    assert hs is not None and cs is not None
    if not keep:
        return hs, cs  # copies of their real part already
    ctx.save_for_backward(*first, *kept, *last)
    ctx.shape = steps, batch = real
    return _leading(hs, steps, batch), _leading(cs, steps, batch)


def _backward_inputs(ctx: Any, grad_hs: Tensor, grad_cs: Tensor) -> tuple[list[Tensor], list[tuple[int, ...]]]:
    """A padded backward pass's inputs, what `_forward_result` saved (``sizes, weight_hh, hs, ...``) and the
    gradients reaching ``hs`` and ``cs``, with the shapes of each as it is (the gradients: the bucket's)."""
    saved = list(ctx.saved_tensors)
    shapes = [tuple(t.shape) for t in saved]
    return [*saved, grad_hs, grad_cs], shapes + [shapes[2]] * 2


def _real_gradients(ctx: Any, count: int) -> Callable[[tuple[Tensor | None, ...]], list[Tensor | None]]:
    """What a padded backward pass keeps of its first ``count`` gradients (``x_proj``'s, ``weight_hh``'s, ``h0``'s,
    ``c0``'s, then the parameters'): copies of their real part, None where autograd does not want it."""
    steps, batch = ctx.shape
    real = [(steps, batch), (), (batch,), (batch,), *[()] * (count - 4)]
    return partial(_copies, shapes=[shape if need else None for shape, need in zip(real, ctx.needs_input_grad)])


def _bucket_of(t: Tensor, steps: int, batch: int, T: int, B: int) -> tuple[int, ...]:
    """The bucket's shape for an optional input: ``[steps, batch, ·]`` and ``[batch, ·]`` padded, parameters as they are."""
    if t.dim() == 3:
        return (T, B, t.shape[2])
    if t.dim() == 2:
        return (B, t.shape[1])
    return tuple(t.shape)


_T = TypeVar("_T")
_replaying = threading.Lock()  # held from copying a graph's inputs in to copying its outputs out


def _run(
    key: Hashable,
    fn: Callable[..., tuple[Tensor | None, ...]],
    inputs: list[Tensor],
    shapes: list[tuple[int, ...]],
    take: Callable[[tuple[Tensor | None, ...]], _T],
) -> _T:
    """``take`` of ``fn``'s outputs on the inputs padded to ``shapes``: replayed from the graph of ``key``
    on CUDA, else run as is. ``take`` copies what is kept: a graph's outputs are its static buffers,
    which the next replay overwrites (so threads sharing a graph take turns here)."""
    with _replaying:
        if _takes(inputs[0]):
            statics = partial(_static_buffers, inputs, shapes)
            graph = graph_cache().get(key, lambda: CapturedGraph(fn, statics()))
            if graph is not None:
                return take(graph(*inputs))
    return take(fn(*(_zero_padded(t, shape) for t, shape in zip(inputs, shapes))))


def _copies(outputs: tuple[Tensor | None, ...], shapes: list[tuple[int, ...] | None]) -> list[Tensor | None]:
    """A copy of the leading part of each output of the paired shape (``()``: all of it; None: not wanted)."""
    return [
        None if t is None or shape is None else t[tuple(slice(0, n) for n in shape)].clone()
        for t, shape in zip(outputs, shapes)
    ]


def _takes(t: Tensor) -> bool:
    """Whether graphs are on and run tensors on ``t``'s device type (`DEVICE_TYPES`)."""
    return t.device.type in DEVICE_TYPES and enabled()


def _static_buffers(inputs: list[Tensor], shapes: list[tuple[int, ...]]) -> list[Tensor]:
    """Zeroed buffers of the bucket's shapes, like the inputs: valid data for the warm-up runs."""
    with torch.inference_mode(False):
        return [torch.zeros(shape, dtype=t.dtype, device=t.device) for t, shape in zip(inputs, shapes)]


def _zero_padded(t: Tensor, shape: tuple[int, ...]) -> Tensor:
    """``t`` in the leading part of a zero tensor of ``shape`` (``t`` itself where it has that shape)."""
    if tuple(t.shape) == tuple(shape):
        return t
    padded = t.new_zeros(shape)
    padded[tuple(slice(0, n) for n in t.shape)] = t
    return padded


def _leading(t: Tensor, steps: int, batch: int) -> Tensor:
    """The real ``[steps, batch]`` part of a padded ``[T, B, ·]`` tensor, contiguous (``t`` itself without padding)."""
    return t if t.shape[:2] == (steps, batch) else t[:steps, :batch].contiguous()


def _signature(x: Tensor, weight_hh: Tensor, shape: tuple[int, ...]) -> tuple[Hashable, ...]:
    """What a graph is fixed to besides its pass: bucket, H, dtype, device and the point-wise kernel it launches."""
    H = weight_hh.shape[1]
    probe = x.new_empty(1, H)
    kernel = pointwise.kernel_for(probe.new_empty(1, 4 * H), probe)
    return (*shape, H, x.dtype, x.device, cast(Hashable, kernel))


@lru_cache(maxsize=16)
def _device_sizes(batch_sizes: tuple[int, ...], steps: int, device: torch.device) -> Tensor:
    """``batch_sizes`` padded with zeros to ``steps``, on ``device`` (copied without waiting for the device);
    cached, as each layer and direction of a batch asks for the same."""
    with torch.inference_mode(False):  # a cached inference tensor could not be saved for a later backward
        sizes = torch.tensor(batch_sizes + (0,) * (steps - len(batch_sizes)), dtype=torch.int32)
        if device.type != "cuda":
            return sizes.to(device)
        return sizes.pin_memory().to(device, non_blocking=True)


@cache
def side_stream(device: torch.device) -> torch.cuda.Stream:
    """One stream per device for warm-up and capture (never the default stream, which cannot be captured)."""
    return torch.cuda.Stream(device)
