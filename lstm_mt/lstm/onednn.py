"""Matrix products on oneDNN (PyTorch's bundled CPU kernel library, the one `torch.nn.LSTM` uses).

A recurrence multiplies the same weight at every step. oneDNN can keep that weight in its
own packed layout, which PyTorch's public API cannot; its private ops (``torch.ops.mkldnn``)
can. They are wrapped here, behind a check that this PyTorch build runs them correctly:

- `usable`: CPU float32 on a build where the ops work (checked once, on a known answer);
- `packed`: weights joined side by side in the packed layout, cached while they do not change;
- `Product`: ``x @ W.T`` (+ bias, or added to another tensor) on oneDNN, else plain PyTorch;
- `linear`: one product with an already packed weight;
- `off`: plain PyTorch products for a while (e.g. for torch.utils.flop_counter, which cannot see oneDNN's).

oneDNN also keeps every primitive it has built, with its buffers, one per product shape (1,024 by
default). A recurrence's row counts differ from step to step and from batch to batch, so a training
run fills that cache: about 300 MiB of the base recipe's peak. `PRIMITIVE_CACHE_CAPACITY` (16) keeps
the shapes of the inner loop at the same speed; oneDNN reads it when it builds its first primitive,
so it is set when this module is imported, unless ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` is set already.
PyTorch's oneDNN wrapper (ideep) keeps a second per-shape cache of its own, sized by ``LRU_CACHE_CAPACITY``
(1,024 by default); left at that, it grew the base recipe's memory in use by 150 MiB over the first
epoch and more with each validation's shapes. It gets the same capacity, the same way.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from lstm_mt.lstm.weight_cache import PackedWeights

PRIMITIVE_CACHE_CAPACITY = 16
CACHE_CAPACITY_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")  # oneDNN's, ideep's
for _variable in CACHE_CAPACITY_VARIABLES:
    os.environ.setdefault(_variable, str(PRIMITIVE_CACHE_CAPACITY))

_WORKS: bool | None = None  # decided on first use: does this PyTorch build run oneDNN's linear?


def usable(weight: Tensor) -> bool:
    """Whether oneDNN can take products with ``weight`` (CPU float32, supported build)."""
    global _WORKS
    if weight.device.type != "cpu" or weight.dtype != torch.float32 or _WORKS is False:
        return False
    if _WORKS is None:
        try:
            w = torch.arange(6, dtype=torch.float32).view(2, 3)
            x = torch.ones(1, 3)
            packed = torch.ops.mkldnn._reorder_linear_weight(w, None)
            plain = torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
            added = torch.ops.mkldnn._linear_pointwise.binary(x, plain, packed, None, "add")
            _WORKS = bool(torch.equal(added, 2 * w.sum(1, keepdim=True).t()))
        except (AttributeError, RuntimeError):
            _WORKS = False
    return _WORKS


@contextlib.contextmanager
def off() -> Iterator[None]:
    """Within the block, `usable` says no: every product runs as plain PyTorch operations (same arithmetic)."""
    global _WORKS
    usable(torch.empty(0))  # decide _WORKS first, so that it is restored as decided
    previous, _WORKS = _WORKS, False
    try:
        yield
    finally:
        _WORKS = previous


packed = PackedWeights(lambda joined: torch.ops.mkldnn._reorder_linear_weight(joined, None))
"""``packed(*weights)``: the weights joined side by side (``[W_1, W_2, ...]``) in oneDNN's packed layout,
reused until a weight changes (see `PackedWeights`), so inference pays for packing once."""


def linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x @ W.T + bias`` with ``weight`` from `packed`: one oneDNN product."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class Product:
    """``x @ weight.T`` (plus a bias or another tensor) for a weight used many times.

    On CPU in float32 it runs on oneDNN, with the weight packed into oneDNN's layout
    when ``pack`` (worth it when one call makes many products); elsewhere `torch.addmm`.
    """

    def __init__(self, weight: Tensor, pack: bool = False) -> None:
        self.weight = weight.detach()
        self.onednn = usable(self.weight) and self.weight.is_contiguous()
        if self.onednn and pack:
            self.weight = packed(weight)

    def __call__(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        """``x @ weight.T + bias``."""
        if self.onednn:
            return linear(x, self.weight, bias)
        return F.linear(x, self.weight, bias)

    def add_to(self, other: Tensor, x: Tensor) -> Tensor:
        """``other + x @ weight.T`` as a new tensor."""
        if self.onednn:
            return torch.ops.mkldnn._linear_pointwise.binary(x, other, self.weight, None, "add")
        return torch.addmm(other, x, self.weight.t())

    def accumulate(self, out: Tensor, x: Tensor) -> None:
        """``out += x @ weight.T`` in place (elsewhere than oneDNN one kernel, not a product and a copy)."""
        if self.onednn:
            out.copy_(self.add_to(out, x))
        else:
            out.addmm_(x, self.weight.t())
