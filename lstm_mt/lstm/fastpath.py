"""The fast path: the LSTM equations arranged for speed, behind two entry points.

`LSTMCell` and `LSTM` (`lstm_mt.lstm.modules`) call only these:

- `cell_step(cell, x, h_prev, c_prev)`: one step, as the decoder takes it;
- `run_layer(cell, x, h0, c0, batch_sizes, h0_is_zero)`: one layer direction over a whole
  length-sorted, time-major batch, as the encoder takes it.

A cell with a variant switched on (`lstm_mt.lstm.variants`) takes the variant routes (unless
only dropout is on and no masks were drawn: evaluation runs the plain routes), which
are these same two arranged for the variant's extra terms: no-grad CPU float32 through
`lstm_mt.lstm.inference` with the variant's point-wise rule (unless layer norm or a recurrent
dropout mask needs the recurrent product on its own), else `VariantRecurrence`
(`lstm_mt.lstm.variant_autograd`, replayed from CUDA graphs on CUDA as below); the single step is
a run of length 1 (in training without layer norm `VariantCellStep`, with the plain step's
per-sequence weights and weight gradient). A plain cell's
route is untouched by them. For a plain cell, each picks the first route that applies, in this order:

1. inference (no gradients) in float32 on CPU with oneDNN: `lstm_mt.lstm.inference`, one
   product ``W·[h, x]`` per step over the joined ``[h_{t-1}, x_t]``;
2. everything else: the autograd Functions of `lstm_mt.lstm.autograd`, with hand-written
   backward passes; under autocast the whole recurrence runs in the autocast dtype. On CUDA,
   `run_layer` replays the same loops from CUDA graphs (`lstm_mt.lstm.cuda_graphs`) where they apply.

Both routes hand the point-wise part of each step (gates, C, h and their gradients) to
`lstm_mt.lstm.pointwise`, where a compiled kernel (`lstm_mt.lstm.native`, C for CPU
float32; `lstm_mt.lstm.triton_step`, Triton for CUDA) runs it when it takes the tensors. A new device backend plugs in at one of these
two places: a point-wise kernel with `pointwise.register_kernel`, or a whole-layer route
added to `cell_step`/`run_layer` below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor

from lstm_mt.lstm import cuda_graphs, inference
from lstm_mt.lstm.autograd import CellStep, SequenceWeights, WeightGradient, layer_recurrence, step_forward
from lstm_mt.lstm.equations import input_projection
from lstm_mt.lstm.variant_autograd import BlockNorm, VariantCellStep, VariantRecurrence
from lstm_mt.lstm.variant_pointwise import VariantPointwise
from lstm_mt.lstm.variants import CellNoise, VariantWeights


@dataclass(frozen=True)
class StepWeights:
    """A plain cell's weights as `cell_step` takes them, prepared once for all steps of a sequence.

    ``weight_ih``, ``weight_hh`` and ``bias`` (``b_ih + b_hh``) are detached copies in the
    dtype the steps compute in (under autocast, its dtype: cast once per sequence instead of
    once per step). ``token`` and ``gradient`` (where gradients are wanted) tie the steps to
    the parameters through `SequenceWeights`, which takes the weights' gradient once for all
    steps (see `CellStep`).
    """

    weight_ih: Tensor
    weight_hh: Tensor
    bias: Tensor | None
    dtype: torch.dtype | None  # the autocast dtype they were prepared for; None outside autocast
    token: Tensor | None
    gradient: WeightGradient | None


def step_weights(cell: VariantWeights, device_type: str) -> StepWeights:
    """``cell``'s weights for `cell_step`, under the autocast and grad mode of ``device_type`` now.

    (The variant routes take the cell's parameters as they are and leave these unused.)
    """
    bias = cell.combined_bias()
    dtype = autocast_dtype(device_type)
    weight_ih, weight_hh, low_bias = (
        None if t is None else t.detach().to(dtype or t.dtype) for t in (cell.weight_ih, cell.weight_hh, bias)
    )
    assert weight_ih is not None and weight_hh is not None
    token = gradient = None
    parameters = (cell.weight_ih, cell.weight_hh, bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in parameters):
        gradient = WeightGradient()
        token = SequenceWeights.apply(*parameters, gradient)
    return StepWeights(weight_ih, weight_hh, low_bias, dtype, token, gradient)


def cell_step(
    cell: VariantWeights,
    x: Tensor,
    h_prev: Tensor,
    c_prev: Tensor,
    noise: CellNoise | None = None,
    weights: StepWeights | None = None,
) -> tuple[Tensor, Tensor]:
    """One step of ``cell`` for a batch: ``x`` ``[B, I]``, states ``[B, H]``; returns ``(h, c)``.

    ``noise``: a variant cell's masks and zoneout for this step (`CellNoise`, zoneout ``[B, H]``).
    ``weights``: the cell's `step_weights`, prepared once for many steps (else prepared here).
    """
    if not _runs_plain(cell, noise):
        noise = noise or CellNoise()
        per_step = CellNoise(noise.h_mask, noise.x_mask, _one_step(noise.keep_c), _one_step(noise.keep_h))
        if not cell.variant.layer_norm and _wants_weight_gradient(cell):
            return _variant_cell_step(cell, x, h_prev, c_prev, per_step, weights)
        hs, cs = _run_variant_layer(cell, x.unsqueeze(0), h_prev, c_prev, [x.shape[0]], False, per_step)
        return hs[0], cs[0]
    if inference.applies(cell, x, h_prev, c_prev):
        return inference.cell_step(cell, x, h_prev, c_prev)
    w = _weights_for_now(cell, x, weights)
    x, h_prev, c_prev = cast(list[Tensor], _autocast_inputs(x, h_prev, c_prev))
    with _autocast_off(x):
        if w.token is None and not (torch.is_grad_enabled() and any(t.requires_grad for t in (x, h_prev, c_prev))):
            return step_forward(x, h_prev, c_prev, w.weight_ih, w.weight_hh, w.bias, keep=False)[:2]  # no autograd
        return CellStep.apply(x, h_prev, c_prev, w.weight_ih, w.weight_hh, w.bias, w.token, w.gradient)


def _wants_weight_gradient(cell: VariantWeights) -> bool:
    """Whether this call trains the cell's weights (grad mode on and the weights requiring grad)."""
    return torch.is_grad_enabled() and cell.weight_ih.requires_grad


def _weights_for_now(cell: VariantWeights, x: Tensor, weights: StepWeights | None) -> StepWeights:
    """``weights`` where they were prepared for the autocast state and grad mode of now, else prepared here."""
    device_type = x.device.type
    if weights is None or not _prepared_for_now(weights, cell, device_type):
        return step_weights(cell, device_type)
    return weights


def _variant_cell_step(
    cell: VariantWeights, x: Tensor, h_prev: Tensor, c_prev: Tensor, noise: CellNoise, weights: StepWeights | None
) -> tuple[Tensor, Tensor]:
    """A variant cell's training step without layer norm (`VariantCellStep`), the weights' gradient once per sequence."""
    w = _weights_for_now(cell, x, weights)
    if noise.x_mask is not None:
        x = x * noise.x_mask
    inputs = _autocast_inputs(x, h_prev, c_prev, cell.peephole_weight, noise.h_mask, noise.keep_c, noise.keep_h)
    with _autocast_off(x):
        return VariantCellStep.apply(
            *inputs[:3], w.weight_ih, w.weight_hh, w.bias, *inputs[3:], cell.variant, w.token, w.gradient
        )


def _prepared_for_now(weights: StepWeights, cell: VariantWeights, device_type: str) -> bool:
    """Whether ``weights`` were prepared under the autocast state and (where gradients are wanted) grad mode of now."""
    if weights.dtype != autocast_dtype(device_type):
        return False
    return weights.token is not None or not (torch.is_grad_enabled() and cell.weight_ih.requires_grad)


def run_layer(
    cell: VariantWeights,
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    batch_sizes: list[int],
    h0_is_zero: bool = False,
    noise: CellNoise | None = None,
) -> tuple[Tensor, Tensor]:
    """Every step's ``h`` and ``C`` ``[T, B, H]`` of ``cell`` over ``x`` ``[T, B, I]``, zero on padding.

    The batch is sorted by length, longest first; ``batch_sizes[t]`` sequences still run at
    step t. ``h0_is_zero``: no initial state was given, so the first step can skip ``W_h·h0``.
    ``noise``: a variant cell's masks and zoneout (`CellNoise`, zoneout ``[T, B, H]``).
    """
    if not _runs_plain(cell, noise):
        return _run_variant_layer(cell, x, h0, c0, batch_sizes, h0_is_zero, noise or CellNoise(), graphs=True)
    if inference.applies(cell, x, h0, c0):
        return inference.run_layer(cell, x, h0, c0, batch_sizes, h0_is_zero)
    x_proj = input_projection(cell, x)  # W_x·x_t + b for every step in one product
    x_proj, weight_hh, h0, c0 = cast(list[Tensor], _autocast_inputs(x_proj, cell.weight_hh, h0, c0))
    with _autocast_off(x):
        graphed = cuda_graphs.run_layer(x_proj, weight_hh, h0, c0, batch_sizes)
        return graphed or layer_recurrence(x_proj, weight_hh, h0, c0, batch_sizes, h0_is_zero)


def _runs_plain(cell: VariantWeights, noise: CellNoise | None) -> bool:
    """Whether this call is the plain cell's: every variant off, or only dropout variants without masks
    (evaluation), so the plain routes run it."""
    v = cell.variant
    if v.is_plain():
        return True
    if v.layer_norm or v.peepholes or v.coupled_gates or v.zoneout_c or v.zoneout_h:
        return False
    return noise is None or (noise.h_mask is None and noise.x_mask is None)


def _run_variant_layer(
    cell: VariantWeights,
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    batch_sizes: list[int],
    h0_is_zero: bool,
    noise: CellNoise,
    graphs: bool = False,
) -> tuple[Tensor, Tensor]:
    """`run_layer` for a cell with a variant switched on (``graphs``: a whole layer, which CUDA graphs may run,
    as the plain cell's; the decoder's single steps are not graphed)."""
    variant = cell.variant
    if noise.x_mask is not None:
        x = x * noise.x_mask
    if noise.h_mask is None and not variant.layer_norm and inference.applies(cell, x, h0, c0):
        rule = VariantPointwise(variant, cell.peephole_weight, None, None, None, noise.keep_c, noise.keep_h)
        return inference.run_layer(cell, x, h0, c0, batch_sizes, h0_is_zero, rule)
    if variant.layer_norm:
        assert cell.ln_weight_ih is not None
        x_proj = input_projection(cell, x, bias=False).to(cell.ln_weight_ih.dtype)  # normalized in full precision
        with _autocast_off(x):
            x_in = BlockNorm.apply(x_proj, cell.ln_weight_ih, cell.combined_bias())
    else:
        x_in = input_projection(cell, x)
    inputs = _autocast_inputs(
        x_in,
        cell.weight_hh,
        h0,
        c0,
        cell.peephole_weight,
        cell.ln_weight_hh,
        cell.ln_weight_c,
        cell.ln_bias_c,
        noise.h_mask,
        noise.keep_c,
        noise.keep_h,
    )
    with _autocast_off(x):
        state = cast(list[Tensor], inputs[:4])  # x_in, weight_hh, h0, c0 (as cast)
        graphed = graphs and cuda_graphs.run_variant_layer(
            *state, *inputs[4:], variant=variant, batch_sizes=batch_sizes
        )
        return graphed or VariantRecurrence.apply(*inputs, variant, batch_sizes, h0_is_zero)


def _one_step(keep: Tensor | float) -> Tensor | float:
    """A step's zoneout ``[B, H]`` as a run of length 1's ``[1, B, H]``."""
    return keep.unsqueeze(0) if isinstance(keep, Tensor) else keep


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast computes in on ``device_type`` now, or None where it is off."""
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


def _autocast_inputs(first: Tensor, *tensors: Tensor | float | None) -> list[Tensor | float | None]:
    """Under autocast, the recurrence runs wholly in the autocast dtype (as cuDNN's LSTM does)."""
    dtype = autocast_dtype(first.device.type)
    if dtype is None:
        return [first, *tensors]
    return [t.to(dtype) if isinstance(t, Tensor) else t for t in (first, *tensors)]


def _autocast_off(x: Tensor) -> torch.autocast:
    """A context in which autocast leaves the (already cast) recurrence alone."""
    return torch.autocast(x.device.type, enabled=False)
