"""The LSTM's inference path on CPU float32: a layer in one C call on MKL's products, else oneDNN's per step.

Where MKL is preferred (`lstm_mt.lstm.mkl`: in PyTorch's x86 builds, on Intel CPUs) and the C kernels
are built, a plain cell's layer, or a variant's in evaluation, runs as `lstm_mt.lstm.native.layer_forward`:
``W_x·x`` for all steps in one product, then each step's ``W_h·h_{t-1}`` added in place and the
step's equations, without returning to Python between steps. Elsewhere, and for layer-norm, training-mode
variant and int8 cells, each step joins ``[h_{t-1}, x_t]`` and multiplies it by the packed
``W = [W_h, W_x]`` in one oneDNN product, exactly as the equations write it: with oneDNN's products
that is faster than projecting all inputs first.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lstm_mt.lstm import mkl, native, onednn
from lstm_mt.lstm.equations import CellWeights
from lstm_mt.lstm.pointwise import forward_step
from lstm_mt.lstm.variant_pointwise import VariantPointwise


def applies(cell: CellWeights, x: Tensor, h0: Tensor, c0: Tensor) -> bool:
    """No gradients, float32, no autocast, oneDNN at hand: this path can run the cell."""
    tensors = (x, h0, c0, *cell.parameters())
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    return (
        not needs_grad
        and all(t.dtype == torch.float32 for t in tensors)
        and not torch.is_autocast_enabled(x.device.type)
        and onednn.usable(cell.weight_hh)
    )


def run_layer(
    cell: CellWeights,
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    batch_sizes: list[int],
    h0_is_zero: bool = False,
    rule: VariantPointwise | None = None,
) -> tuple[Tensor, Tensor]:
    """Every step's ``h`` and ``C`` ``[T, B, H]`` of a length-sorted batch, zero on padding.

    With ``h0_is_zero`` the first step multiplies ``W_x·x_0`` alone. On oneDNN's route ``h`` is a
    view into the buffer of joined rows. ``rule``: a variant cell's point-wise step instead of the plain one.
    """
    variant = None if rule is None else rule.layer_variant(h0)
    if (rule is None or variant is not None) and _int8_product(cell) is None and mkl.preferred():
        packed = mkl.packed(cell.weight_ih), mkl.packed(cell.weight_hh)
        h0, c0, bias = h0.contiguous(), c0.contiguous(), cell.combined_bias()
        layer = native.layer_forward(
            x.contiguous(), packed, mkl.product_address(), bias, h0, c0, batch_sizes, h0_is_zero, variant
        )
        if layer is not None:
            return layer
    steps, batch, _ = x.shape
    H = cell.weight_hh.shape[1]
    joint_product = _joint_product(cell)
    first_from_x = h0_is_zero and _int8_product(cell) is None  # int8 has no W_x of its own: it multiplies [0, x]
    hx = x.new_empty(steps + 1, batch, H + x.shape[2])  # row t holds [h_{t-1}, x_t]; h_t goes to row t+1
    hx[:steps, :, H:] = x
    hx[0, :, :H] = h0
    hs, cs = hx[1:, :, :H], x.new_empty(steps, batch, H)  # hs: a view, h_t already sits in row t+1
    hx_rows, h_rows, c_rows = hx.unbind(0), hs.unbind(0), cs.unbind(0)  # per-step views made at once
    tanh_c = x.new_empty(batch, H)
    c_tilde = x.new_empty(batch, H) if rule is not None and rule.zoneout_c else None
    c_prev = c0
    for t, n in enumerate(batch_sizes):
        if t == 0 and first_from_x:
            pre = onednn.linear(x[0], onednn.packed(cell.weight_ih), cell.combined_bias())  # W·[0, x] = W_x·x
        else:
            pre = joint_product(hx_rows[t][:n])
        if rule is None:
            forward_step(pre, c_prev[:n], pre, c_rows[t][:n], tanh_c[:n], h_rows[t][:n])
        else:
            c_new = c_rows[t][:n] if c_tilde is None else c_tilde[:n]
            h_prev = hx_rows[t][:n, :H]
            rule.forward(t, pre, c_prev[:n], h_prev, pre, c_new, tanh_c[:n], c_rows[t][:n], h_rows[t][:n])
        c_prev = c_rows[t]
    if batch_sizes[-1] < batch:  # rows past a sequence's end were left as they were: zero them
        finished = torch.arange(batch) >= torch.tensor(batch_sizes).unsqueeze(1)
        finished = finished.unsqueeze(2).to(x.device)
        hs.masked_fill_(finished, 0)
        cs.masked_fill_(finished, 0)
    return hs, cs


def cell_step(cell: CellWeights, x: Tensor, h_prev: Tensor, c_prev: Tensor) -> tuple[Tensor, Tensor]:
    """One step as `run_layer` takes it: ``W·[h, x] + b`` in one packed product; returns ``(h, c)``.

    (A variant cell's step runs as `run_layer` over one step.)
    """
    pre = _joint_product(cell)(torch.cat([h_prev, x], dim=1))
    c, tanh_c, h = torch.empty_like(c_prev), torch.empty_like(c_prev), torch.empty_like(c_prev)
    forward_step(pre, c_prev, pre, c, tanh_c, h)
    return h, c


def _int8_product(cell: CellWeights) -> Callable[[Tensor], Tensor] | None:
    """The cell's int8 ``W·[h, x] + b`` where `lstm_mt.lstm.int8.attach` gave it one (``precision=int8``)."""
    return getattr(cell, "int8_product", None)


def _joint_product(cell: CellWeights) -> Callable[[Tensor], Tensor]:
    """``W·[h, x] + b`` for joined rows ``[h, x]``: the cell's int8 product where it has one, else one
    product with ``W = [W_h, W_x]`` packed, on MKL where it is preferred, else on oneDNN (float32 weights
    are packed only on this route)."""
    int8_product = _int8_product(cell)
    if int8_product is not None:
        return int8_product
    bias = cell.combined_bias()
    if mkl.preferred():
        joined, width = mkl.packed(cell.weight_hh, cell.weight_ih), 4 * cell.weight_hh.shape[1]
        return lambda rows: mkl.linear(rows, joined, width, bias)
    weight = onednn.packed(cell.weight_hh, cell.weight_ih)
    return lambda rows: onednn.linear(rows, weight, bias)
