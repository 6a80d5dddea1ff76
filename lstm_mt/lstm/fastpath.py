"""The fast path: the LSTM equations arranged for speed, behind two entry points.

`LSTMCell` and `LSTM` (`lstm_mt.lstm.modules`) call only these:

- `cell_step(cell, x, h_prev, c_prev)`: one step, as the decoder takes it;
- `run_layer(cell, x, h0, c0, batch_sizes, h0_is_zero)`: one layer direction over a whole
  length-sorted, time-major batch, as the encoder takes it.

Each picks the first route that applies, in this order:

1. inference (no gradients) in float32 on CPU with oneDNN: `lstm_mt.lstm.inference`, one
   product ``W·[h, x]`` per step over the joined ``[h_{t-1}, x_t]``;
2. everything else: the autograd Functions of `lstm_mt.lstm.autograd`, with hand-written
   backward passes; under autocast the whole recurrence runs in the autocast dtype.

Both routes hand the point-wise part of each step (gates, C, h and their gradients) to
`lstm_mt.lstm.pointwise`, where a compiled kernel (`lstm_mt.lstm.native`, C for CPU
float32; `lstm_mt.lstm.triton_step`, Triton for CUDA) runs it when it takes the tensors. A new device backend plugs in at one of these
two places: a point-wise kernel with `pointwise.register_kernel`, or a whole-layer route
added to `cell_step`/`run_layer` below.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstm_mt.lstm import inference
from lstm_mt.lstm.autograd import CellStep, LayerRecurrence
from lstm_mt.lstm.equations import CellWeights, input_projection


def cell_step(cell: CellWeights, x: Tensor, h_prev: Tensor, c_prev: Tensor) -> tuple[Tensor, Tensor]:
    """One step of ``cell`` for a batch: ``x`` ``[B, I]``, states ``[B, H]``; returns ``(h, c)``."""
    if inference.applies(cell, x, h_prev, c_prev):
        return inference.cell_step(cell, x, h_prev, c_prev)
    inputs = _autocast_inputs(x, h_prev, c_prev, cell.weight_ih, cell.weight_hh, cell.combined_bias())
    with _autocast_off(x):
        return CellStep.apply(*inputs)


def run_layer(
    cell: CellWeights, x: Tensor, h0: Tensor, c0: Tensor, batch_sizes: list[int], h0_is_zero: bool = False
) -> tuple[Tensor, Tensor]:
    """Every step's ``h`` and ``C`` ``[T, B, H]`` of ``cell`` over ``x`` ``[T, B, I]``, zero on padding.

    The batch is sorted by length, longest first; ``batch_sizes[t]`` sequences still run at
    step t. ``h0_is_zero``: no initial state was given, so the first step can skip ``W_h·h0``.
    """
    if inference.applies(cell, x, h0, c0):
        return inference.run_layer(cell, x, h0, c0, batch_sizes, h0_is_zero)
    x_proj = input_projection(cell, x)  # W_x·x_t + b for every step in one product
    inputs = _autocast_inputs(x_proj, cell.weight_hh, h0, c0)
    with _autocast_off(x):
        return LayerRecurrence.apply(*inputs, batch_sizes, h0_is_zero)


def _autocast_inputs(first: Tensor, *tensors: Tensor | None) -> list[Tensor | None]:
    """Under autocast, the recurrence runs wholly in the autocast dtype (as cuDNN's LSTM does)."""
    device_type = first.device.type
    if not torch.is_autocast_enabled(device_type):
        return [first, *tensors]
    dtype = torch.get_autocast_dtype(device_type)
    return [t if t is None else t.to(dtype) for t in (first, *tensors)]


def _autocast_off(x: Tensor) -> torch.autocast:
    """A context in which autocast leaves the (already cast) recurrence alone."""
    return torch.autocast(x.device.type, enabled=False)
