"""The variant cells' training path: one autograd Function over a whole layer direction, hand-written backward.

`VariantRecurrence` is `lstm_mt.lstm.autograd.LayerRecurrence` with the variants'
(`lstm_mt.lstm.variants`) extra terms: the recurrent dropout mask on h before each product,
the layer norm of each step's recurrent product, and the point-wise rule of
`lstm_mt.lstm.variant_pointwise`. As there, the backward runs only the dh/dC recurrence
step by step; the gradients of W_hh, the peephole weights and the layer-norm gains come
afterwards, each in one pass over all steps. The decoder's single step is a run of length 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstm_mt.lstm.onednn import Product
from lstm_mt.lstm.variant_pointwise import VariantPointwise
from lstm_mt.lstm.variants import LAYER_NORM_EPS, CellVariant


class VariantRecurrence(torch.autograd.Function):
    """The recurrence of one variant layer direction over a length-sorted batch.

    Inputs: ``x_in[t]`` ``[T, B, 4H]``, the input's share of every gate (``W_x·x_t + b``, or
    with layer norm ``LN(W_x·x_t) + b``), ``weight_hh``, ``h0``, ``c0``, the variant's
    parameters (``peephole_weight``, ``ln_weight_hh``, ``ln_weight_c``, ``ln_bias_c``; None
    where off), the recurrent dropout mask ``h_mask`` ``[B, H]`` (or None), zoneout's
    ``keep_c``/``keep_h`` (see `VariantPointwise`), the `CellVariant`, ``batch_sizes`` and
    ``h0_is_zero``, as `LayerRecurrence`. Returns every step's ``h`` and ``C`` ``[T, B, H]``,
    zero on padding.
    """

    @staticmethod
    def forward(
        ctx,
        x_in: Tensor,
        weight_hh: Tensor,
        h0: Tensor,
        c0: Tensor,
        peephole_weight: Tensor | None,
        ln_weight_hh: Tensor | None,
        ln_weight_c: Tensor | None,
        ln_bias_c: Tensor | None,
        h_mask: Tensor | None,
        keep_c: Tensor | float,
        keep_h: Tensor | float,
        variant: CellVariant,
        batch_sizes: list[int],
        h0_is_zero: bool,
    ) -> tuple[Tensor, Tensor]:
        steps, batch, _ = x_in.shape
        H = weight_hh.shape[1]
        rule = VariantPointwise(variant, peephole_weight, ln_weight_c, ln_bias_c, keep_c, keep_h)
        recurrent = Product(weight_hh, pack=True)
        hs, cs, tanh_cs = (x_in.new_empty(steps, batch, H) for _ in range(3))
        gates = x_in.new_empty(steps, batch, 4 * H)
        c_tildes = x_in.new_zeros(steps, batch, H) if rule.zoneout_c else cs
        norm = _LayerNormBuffers.allocate(x_in, variant.layer_norm)
        gain_hh = None if ln_weight_hh is None else ln_weight_hh.detach().view(4, H)
        h_prev, c_prev = h0, c0
        for t, n in enumerate(batch_sizes):
            h_in = h_prev[:n] if h_mask is None else h_prev[:n] * h_mask[:n]
            if t == 0 and h0_is_zero:
                pre = x_in[0].clone()  # W_h·0 = 0, and so is its layer norm
            elif gain_hh is None:
                pre = recurrent.add_to(x_in[t, :n], h_in)  # W·[h, x] + b, all four gates
            else:
                pre = norm.add_recurrent(t, recurrent(h_in), gain_hh, x_in[t, :n])
            c_rows = (c_tildes[t, :n], cs[t, :n])
            rule.forward(
                t,
                pre,
                c_prev[:n],
                h_prev[:n],
                gates[t, :n],
                c_rows[0],
                tanh_cs[t, :n],
                c_rows[1],
                hs[t, :n],
                norm.c_stats(t, n),
            )
            if n < batch:
                hs[t, n:] = 0
                cs[t, n:] = 0
            h_prev, c_prev = hs[t], cs[t]
        if any(ctx.needs_input_grad[:8]):
            ctx.save_for_backward(weight_hh, h0, c0, hs, cs, gates, tanh_cs, c_tildes, h_mask, *norm.saved())
            ctx.rule, ctx.batch_sizes, ctx.h0_is_zero, ctx.gain_hh = rule, batch_sizes, h0_is_zero, gain_hh
        return hs, cs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_hs: Tensor, grad_cs: Tensor) -> tuple[Tensor | None, ...]:
        weight_hh, h0, c0, hs, cs, gates, tanh_cs, c_tildes, h_mask, *norm_saved = ctx.saved_tensors
        rule: VariantPointwise = ctx.rule
        norm = _LayerNormBuffers(ctx.gain_hh is not None, *norm_saved)
        batch_sizes, needs = ctx.batch_sizes, ctx.needs_input_grad
        steps, batch, H = hs.shape
        through_hh = Product(weight_hh.t().contiguous(), pack=True)  # d ↦ d @ W_hh

        grad_pre = gates.new_empty(steps, batch, 4 * H)
        grad_rec = norm.grad_recurrent_buffer(grad_pre)  # dL/d(W_h·h_in): grad_pre itself without layer norm
        d_shown = torch.zeros_like(hs) if rule.ln_c is not None else None
        dh_total, dc_total = grad_hs.clone(), grad_cs.clone()  # from the outputs, plus from step t+1 below
        dh0, dc0 = torch.zeros_like(h0), torch.zeros_like(c0)
        for t in range(steps - 1, -1, -1):
            n = batch_sizes[t]
            if t > 0:
                c_prev, dc_prev, dh_prev = cs[t - 1, :n], dc_total[t - 1, :n], dh_total[t - 1, :n]
            else:
                c_prev, dc_prev, dh_prev = c0[:n], dc0[:n], dh0[:n]
            rule.backward(
                t,
                gates[t, :n],
                c_tildes[t, :n],
                tanh_cs[t, :n],
                c_prev,
                dh_total[t, :n],
                dc_total[t, :n],
                grad_pre[t, :n],
                dc_prev,
                dh_prev,
                norm.c_stats(t, n),
                None if d_shown is None else d_shown[t, :n],
            )
            if n < batch:
                grad_pre[t, n:] = 0
            if t == 0 and ctx.h0_is_zero:
                continue  # no recurrent product was taken
            rec = norm.grad_recurrent(t, n, grad_pre[t, :n], ctx.gain_hh, grad_rec)
            if h_mask is None:
                dh_prev.copy_(through_hh.add_to(dh_prev, rec))
            else:
                dh_prev.addcmul_(through_hh(rec), h_mask[:n])

        grad_w_hh = None
        if needs[1]:
            # dW_hh = Σ_t dpre_tᵀ · h_in,t-1: one product over all steps after the first.
            h_ins = hs if h_mask is None else hs * h_mask
            grad_w_hh = torch.zeros_like(weight_hh)
            if steps > 1:
                grad_w_hh.addmm_(grad_rec[1:].flatten(0, 1).t(), h_ins[:-1].flatten(0, 1))
            if not ctx.h0_is_zero:
                grad_w_hh.addmm_(grad_rec[0].t(), h0 if h_mask is None else h0 * h_mask)
        c_prevs = torch.cat([c0.unsqueeze(0), cs[:-1]])
        return (
            grad_pre,
            grad_w_hh,
            dh0 if needs[2] else None,
            dc0 if needs[3] else None,
            _peephole_grad(grad_pre, c_prevs, c_tildes) if needs[4] else None,
            norm.gain_grad(grad_pre) if needs[5] else None,
            norm.c_gain_grad(d_shown, c_tildes) if needs[6] and d_shown is not None else None,
            d_shown.sum((0, 1)) if needs[7] and d_shown is not None else None,
            *(None,) * 6,
        )


def _peephole_grad(grad_pre: Tensor, c_prevs: Tensor, c_tildes: Tensor) -> Tensor:
    """``[dw_ci, dw_cf, dw_co]``: Σ over steps and rows of dpre_i·C_prev, dpre_f·C_prev, dpre_o·C̃_t."""
    d_i, d_f, _, d_o = grad_pre.chunk(4, dim=-1)
    return torch.cat([(d_i * c_prevs).sum((0, 1)), (d_f * c_prevs).sum((0, 1)), (d_o * c_tildes).sum((0, 1))])


class _LayerNormBuffers:
    """What the layer norms of a run keep for the backward pass: each step's recurrent product
    ``W_h·h_in`` ``[T, B, 4H]`` with its per-block mean and 1/σ ``[T, B, 4, 1]``, and C̃'s mean and
    1/σ ``[T, B, 1]``, zero on padding. Without layer norm (``on`` False) it holds nothing."""

    def __init__(self, on: bool, products: Tensor, mean: Tensor, rstd: Tensor, c_mean: Tensor, c_rstd: Tensor) -> None:
        self.on = on
        self.products, self.mean, self.rstd, self.c_mean, self.c_rstd = products, mean, rstd, c_mean, c_rstd

    @classmethod
    def allocate(cls, like: Tensor, on: bool) -> _LayerNormBuffers:
        """Zeroed buffers for a run shaped like ``like`` ``[T, B, 4H]`` (empty when not ``on``)."""
        steps, batch, four_h = like.shape if on else (0, 0, 0)
        zeros = like.new_zeros
        return cls(
            on,
            zeros(steps, batch, four_h),
            zeros(steps, batch, 4, 1),
            zeros(steps, batch, 4, 1),
            zeros(steps, batch, 1),
            zeros(steps, batch, 1),
        )

    def saved(self) -> list[Tensor]:
        return [self.products, self.mean, self.rstd, self.c_mean, self.c_rstd]

    def c_stats(self, t: int, n: int) -> tuple[Tensor, Tensor] | None:
        """Step ``t``'s slots for C̃'s mean and 1/σ ``[n, 1]``."""
        return (self.c_mean[t, :n], self.c_rstd[t, :n]) if self.on else None

    def add_recurrent(self, t: int, product: Tensor, gain: Tensor, x_in: Tensor) -> Tensor:
        """``x_in + γ_h * LN(product)`` per gate block, keeping the product and its statistics."""
        n = product.shape[0]
        self.products[t, :n] = product
        blocks = product.view(n, 4, -1)
        normed, mean, rstd = torch.native_layer_norm(blocks, blocks.shape[-1:], None, None, LAYER_NORM_EPS)
        self.mean[t, :n], self.rstd[t, :n] = mean, rstd
        return torch.addcmul(x_in, normed.view(n, -1), gain.view(-1))

    def grad_recurrent_buffer(self, grad_pre: Tensor) -> Tensor:
        """Where dL/d(W_h·h_in) goes: grad_pre itself without layer norm."""
        return torch.zeros_like(grad_pre) if self.on else grad_pre

    def grad_recurrent(self, t: int, n: int, grad: Tensor, gain: Tensor | None, out: Tensor) -> Tensor:
        """dL/d(W_h·h_in) for step ``t`` from dL/dpre (written to ``out[t]`` with layer norm)."""
        if gain is None:
            return grad
        blocks = self.products[t, :n].view(n, 4, -1)
        d_normed = grad.view(n, 4, -1) * gain
        d_product = torch.ops.aten.native_layer_norm_backward(
            d_normed, blocks, blocks.shape[-1:], self.mean[t, :n], self.rstd[t, :n], None, None, [True, False, False]
        )[0]
        out[t, :n] = d_product.view(n, -1)
        return out[t, :n]

    def gain_grad(self, grad_pre: Tensor) -> Tensor:
        """dγ_h = Σ over steps and rows of dpre · LN(W_h·h_in), per gate block."""
        steps, batch, four_h = grad_pre.shape
        normed = (self.products.view(steps, batch, 4, -1) - self.mean) * self.rstd
        return (grad_pre.view(steps, batch, 4, -1) * normed).sum((0, 1)).view(four_h)

    def c_gain_grad(self, d_shown: Tensor, c_tildes: Tensor) -> Tensor:
        """dγ_C = Σ over steps and rows of dL/dLN(C̃) · (C̃ − mean)/σ."""
        return (d_shown * (c_tildes - self.c_mean) * self.c_rstd).sum((0, 1))
