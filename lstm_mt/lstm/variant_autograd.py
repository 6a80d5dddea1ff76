"""The variant cells' training path: one autograd Function over a whole layer direction, hand-written backward.

`VariantRecurrence` is `lstm_mt.lstm.autograd.LayerRecurrence` with the variants'
(`lstm_mt.lstm.variants`) extra terms: the recurrent dropout mask on h before each product,
the layer norm of each step's recurrent product, and the point-wise rule of
`lstm_mt.lstm.variant_pointwise`. As there, the backward runs only the dh/dC recurrence
step by step; the gradients of W_hh, the peephole weights and the layer-norm gains come
afterwards, each in one pass over all steps. The decoder's single step is a run of length 1:
in training without layer norm `VariantCellStep`, which takes the weights' gradient once per
sequence as `lstm_mt.lstm.autograd.CellStep` does; otherwise `VariantRecurrence` itself.

`BlockNorm` is the layer norm of the input's share, ``γ_x·LN(W_x·x) + b`` per gate block,
for all steps at once. All run their element-wise and per-row work in C
(`lstm_mt.lstm.native`) where it takes the tensors, else in tensor operations.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor

from lstm_mt.lstm import native
from lstm_mt.lstm.autograd import WeightGradient
from lstm_mt.lstm.onednn import Product
from lstm_mt.lstm.variant_pointwise import CellNorm, RecurrentNorm, VariantPointwise, layer_norm_backward
from lstm_mt.lstm.variants import LAYER_NORM_EPS, CellVariant


class BlockNorm(torch.autograd.Function):
    """``(x_proj [T, B, 4H], gain [4H], bias [4H] or None) -> gain·LN(x_proj) + bias``, each gate block
    normalized on its own (`lstm_mt.lstm.variants.block_layer_norm` plus the bias, in one pass)."""

    @staticmethod
    def forward(ctx, x_proj: Tensor, gain: Tensor, bias: Tensor | None) -> Tensor:
        rows = x_proj.shape[:-1].numel()
        x = x_proj.contiguous().view(rows, -1)
        y, hat, rstd = torch.empty_like(x), torch.empty_like(x), x.new_empty(rows, 4)
        if not native.block_norm_forward(x, gain.detach(), None if bias is None else bias.detach(), y, hat, rstd):
            blocks = x.view(rows, 4, -1)
            normed, _, block_rstd = torch.native_layer_norm(blocks, blocks.shape[-1:], None, None, LAYER_NORM_EPS)
            hat.copy_(normed.view(rows, -1))
            rstd.copy_(block_rstd.view(rows, 4))
            if bias is None:
                torch.mul(hat, gain, out=y)
            else:
                torch.addcmul(bias, hat, gain, out=y)
        ctx.save_for_backward(hat, rstd, gain)
        ctx.has_bias = bias is not None
        return y.view_as(x_proj)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y: Tensor) -> tuple[Tensor | None, ...]:
        hat, rstd, gain = ctx.saved_tensors
        rows = hat.shape[0]
        dy = grad_y.contiguous().view(rows, -1)
        dx = torch.empty_like(dy)
        if not native.block_norm_backward(dy, hat, rstd, gain, dx):
            d_hat = (dy * gain).view(rows, 4, -1)
            dx = layer_norm_backward(hat.view(rows, 4, -1), rstd.view(rows, 4, 1), d_hat).view(rows, -1)
        needs = ctx.needs_input_grad
        return (
            dx.view_as(grad_y) if needs[0] else None,
            column_dot(dy, hat) if needs[1] else None,
            dy.sum(0) if ctx.has_bias and needs[2] else None,
        )


def column_dot(a: Tensor, b: Tensor) -> Tensor:
    """``Σ over all leading dimensions of a * b`` (a gain's gradient) in one pass where the kernel takes it."""
    width = a.shape[-1]
    out = a.new_zeros(width)
    if not native.column_dot(a.reshape(-1, width), b.reshape(-1, width), out):
        out = (a * b).reshape(-1, width).sum(0)
    return out


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
        rule = VariantPointwise(variant, peephole_weight, ln_weight_hh, ln_weight_c, ln_bias_c, keep_c, keep_h)
        hs, cs, saved = variant_forward(x_in, weight_hh, h0, c0, h_mask, rule, batch_sizes, h0_is_zero)
        if any(ctx.needs_input_grad[:8]):
            ctx.save_for_backward(*saved)
            ctx.rule, ctx.batch_sizes, ctx.h0_is_zero = rule, batch_sizes, h0_is_zero
        return hs, cs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_hs: Tensor, grad_cs: Tensor) -> tuple[Tensor | None, ...]:
        needs = ctx.needs_input_grad[:8]
        grads = variant_backward(ctx.saved_tensors, ctx.rule, grad_hs, grad_cs, ctx.batch_sizes, ctx.h0_is_zero, needs)
        return (*grads, *(None,) * 6)


class VariantCellStep(torch.autograd.Function):
    """One decoder step of a variant cell without layer norm in training, as `CellStep` is the plain cell's:
    ``(x, h_prev, c_prev, weight_ih, weight_hh, bias, peephole_weight, h_mask, keep_c, keep_h, variant, token,
    gradient) -> (h, c)``.

    A run of length 1 of `variant_forward`/`variant_backward` whose weights come from
    `lstm_mt.lstm.fastpath.StepWeights` (detached, cast once per batch): the step hands its share of
    the weights' gradient to ``gradient``, and `SequenceWeights` (``token``) makes it one product for
    all steps of the sequence, instead of two products and two accumulations of [4H, ·] per step.
    """

    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        h_prev: Tensor,
        c_prev: Tensor,
        weight_ih: Tensor,
        weight_hh: Tensor,
        bias: Tensor | None,
        peephole_weight: Tensor | None,
        h_mask: Tensor | None,
        keep_c: Tensor | float,
        keep_h: Tensor | float,
        variant: CellVariant,
        token: Tensor,
        gradient: WeightGradient,
    ) -> tuple[Tensor, Tensor]:
        rule = VariantPointwise(variant, peephole_weight, None, None, None, keep_c, keep_h)
        x_in = Product(weight_ih)(x, bias).unsqueeze(0)
        rows = [x.shape[0]]
        hs, cs, saved = variant_forward(x_in, weight_hh, h_prev, c_prev, h_mask, rule, rows, False, pack=False)
        ctx.save_for_backward(x, weight_ih, *saved)
        ctx.rule, ctx.gradient, ctx.step = rule, gradient, gradient.new_step()
        return hs[0], cs[0]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h: Tensor, grad_c: Tensor) -> tuple[Tensor | None, ...]:
        x, weight_ih, *saved = ctx.saved_tensors
        h_prev, h_mask = saved[1], saved[8]
        need = ctx.needs_input_grad
        needs = (True, False, need[1], need[2], need[6], False, False, False)
        grad_x_in, _, dh_prev, dc_prev, d_peepholes, *_ = variant_backward(
            saved, ctx.rule, grad_h.unsqueeze(0), grad_c.unsqueeze(0), [x.shape[0]], False, needs, pack=False
        )
        assert grad_x_in is not None
        grad_pre = grad_x_in[0]
        if need[11]:
            ctx.gradient.add(ctx.step, grad_pre, x, h_prev if h_mask is None else h_prev * h_mask)
        dx = grad_pre.mm(weight_ih) if need[0] else None
        token_grad = grad_pre.new_zeros(0) if need[11] else None
        return dx, dh_prev, dc_prev, None, None, None, d_peepholes, None, None, None, None, token_grad, None


def variant_forward(
    x_in: Tensor,
    weight_hh: Tensor,
    h0: Tensor,
    c0: Tensor,
    h_mask: Tensor | None,
    rule: VariantPointwise,
    batch_sizes: list[int],
    h0_is_zero: bool,
    padding: Tensor | None = None,
    pack: bool = True,
) -> tuple[Tensor, Tensor, list[Tensor | None]]:
    """`VariantRecurrence`'s forward loop: every step's ``h`` and ``C``, and what `variant_backward` reads
    (``weight_hh, h0, c0, hs, cs, gates, tanh_cs, c_tildes, h_mask`` and the layer norms' buffers).

    ``padding`` ``[T, B]`` (True where a row is padding), with ``batch_sizes`` all B: every row runs every
    step and padded positions' h and C are zeroed after it, so that what a padded row computes from then on
    starts from zero state, finite, and never reaches a real position (`lstm_mt.lstm.cuda_graphs` records it).
    ``pack``: multiply with W_hh in oneDNN's packed layout (worth it for many steps, not for one).
    """
    steps, batch, _ = x_in.shape
    H = weight_hh.shape[1]
    recurrent = Product(weight_hh, pack=pack)
    hs, cs, tanh_cs = (x_in.new_empty(steps, batch, H) for _ in range(3))
    gates = x_in.new_empty(steps, batch, 4 * H)
    padded = batch_sizes[-1] < batch
    c_tildes = (x_in.new_zeros if padded else x_in.new_empty)(steps, batch, H) if rule.zoneout_c else cs
    norm = _LayerNormBuffers.allocate(x_in, rule.variant.layer_norm, padded, h0_is_zero)
    h_prev, c_prev = h0, c0
    for t, n in enumerate(batch_sizes):
        h_in = h_prev[:n] if h_mask is None else h_prev[:n] * h_mask[:n]
        rec_norm = None
        if t == 0 and h0_is_zero:
            pre = x_in[0].clone()  # W_h·0 = 0, and so is its layer norm
        elif not norm.on:
            pre = recurrent.add_to(x_in[t, :n], h_in)  # W·[h, x] + b, all four gates
        else:
            pre, rec_norm = x_in[t, :n], norm.recurrent(t, n, recurrent(h_in))  # the step adds γ_h·LN(W_h·h_in)
        rule.forward(
            t,
            pre,
            c_prev[:n],
            h_prev[:n],
            gates[t, :n],
            c_tildes[t, :n],
            tanh_cs[t, :n],
            cs[t, :n],
            hs[t, :n],
            norm.c_norm(t, n),
            rec_norm,
        )
        if n < batch:
            hs[t, n:] = 0
            cs[t, n:] = 0
        if padding is not None:
            hs[t].masked_fill_(padding[t].unsqueeze(1), 0)
            cs[t].masked_fill_(padding[t].unsqueeze(1), 0)
        h_prev, c_prev = hs[t], cs[t]
    return hs, cs, [weight_hh, h0, c0, hs, cs, gates, tanh_cs, c_tildes, h_mask, *norm.saved()]


def variant_backward(
    saved: tuple[Tensor | None, ...] | list[Tensor | None],
    rule: VariantPointwise,
    grad_hs: Tensor,
    grad_cs: Tensor,
    batch_sizes: list[int],
    h0_is_zero: bool,
    needs: tuple[bool, ...],
    pack: bool = True,
) -> tuple[Tensor | None, ...]:
    """`VariantRecurrence`'s backward loop: the gradients of ``x_in, weight_hh, h0, c0, peephole_weight,
    ln_weight_hh, ln_weight_c, ln_bias_c`` (None where ``needs`` says no) from `variant_forward`'s ``saved``
    (``pack`` as there)."""
    weight_hh, h0, c0, hs, cs, gates, tanh_cs, c_tildes, h_mask, *norm_saved = saved
    assert weight_hh is not None and h0 is not None and c0 is not None and hs is not None and cs is not None
    assert gates is not None and tanh_cs is not None and c_tildes is not None
    norm = _LayerNormBuffers(rule.gain_hh is not None, *cast(list[Tensor], norm_saved))
    steps, batch, H = hs.shape
    # d ↦ d @ W_hh: packed from a transposed copy for many steps; for one step the transposed view,
    # which PyTorch's product takes as it is, saves copying W_hh at every decoder step
    through_hh = Product(weight_hh.t().contiguous(), pack=True) if pack else Product(weight_hh.t())

    grad_pre = gates.new_empty(steps, batch, 4 * H)
    buffer = torch.zeros_like if batch_sizes[-1] < batch else torch.empty_like  # padded rows stay zero
    grad_rec = buffer(grad_pre) if norm.on else grad_pre  # dL/d(W_h·h_in)
    d_shown = buffer(hs) if rule.ln_c is not None else None
    dh_total, dc_total = grad_hs.clone(), grad_cs.clone()  # from the outputs, plus from step t+1 below
    dh0, dc0 = torch.zeros_like(h0), torch.zeros_like(c0)
    for t in range(steps - 1, -1, -1):
        n = batch_sizes[t]
        if t > 0:
            c_prev, dc_prev, dh_prev = cs[t - 1, :n], dc_total[t - 1, :n], dh_total[t - 1, :n]
        else:
            c_prev, dc_prev, dh_prev = c0[:n], dc0[:n], dh0[:n]
        product_taken = not (t == 0 and h0_is_zero)
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
            norm.c_norm(t, n),
            None if d_shown is None else d_shown[t, :n],
            norm.recurrent(t, n) if norm.on and product_taken else None,
            grad_rec[t, :n],
        )
        if n < batch:
            grad_pre[t, n:] = 0
        if not product_taken:
            continue
        if h_mask is None:
            dh_prev.copy_(through_hh.add_to(dh_prev, grad_rec[t, :n]))
        else:
            dh_prev.addcmul_(through_hh(grad_rec[t, :n]), h_mask[:n])

    grad_w_hh = None
    if needs[1]:
        # dW_hh = Σ_t dpre_tᵀ · h_in,t-1: one product over all steps after the first.
        h_ins = hs if h_mask is None else hs * h_mask
        grad_w_hh = torch.zeros_like(weight_hh)
        if steps > 1:
            grad_w_hh.addmm_(grad_rec[1:].flatten(0, 1).t(), h_ins[:-1].flatten(0, 1))
        if not h0_is_zero:
            grad_w_hh.addmm_(grad_rec[0].t(), h0 if h_mask is None else h0 * h_mask)
    c_prevs = torch.cat([c0.unsqueeze(0), cs[:-1]])
    return (
        grad_pre,
        grad_w_hh,
        dh0 if needs[2] else None,
        dc0 if needs[3] else None,
        _peephole_grad(grad_pre, c_prevs, c_tildes) if needs[4] else None,
        norm.gain_grad(grad_pre) if needs[5] else None,
        norm.c_gain_grad(d_shown) if needs[6] and d_shown is not None else None,
        d_shown.sum((0, 1)) if needs[7] and d_shown is not None else None,
    )


def _peephole_grad(grad_pre: Tensor, c_prevs: Tensor, c_tildes: Tensor) -> Tensor:
    """``[dw_ci, dw_cf, dw_co]``: Σ over steps and rows of dpre_i·C_prev, dpre_f·C_prev, dpre_o·C̃_t."""
    d_i, d_f, _, d_o = grad_pre.chunk(4, dim=-1)
    return torch.cat([(d_i * c_prevs).sum((0, 1)), (d_f * c_prevs).sum((0, 1)), (d_o * c_tildes).sum((0, 1))])


class _LayerNormBuffers:
    """What the layer norms of a run keep for the backward pass: each step's recurrent product
    normalized per gate block ``[T, B, 4H]`` with each block's 1/σ ``[T, B, 4]``, and C̃_t normalized
    ``[T, B, H]`` with its 1/σ ``[T, B, 1]``; zero where never written (padding, a zero initial
    state's first step). Without layer norm (``on`` False) it holds nothing."""

    def __init__(self, on: bool, hats: Tensor, rstd: Tensor, c_hats: Tensor, c_rstd: Tensor) -> None:
        self.on = on
        self.hats, self.rstd, self.c_hats, self.c_rstd = hats, rstd, c_hats, c_rstd

    @classmethod
    def allocate(cls, like: Tensor, on: bool, padded: bool, h0_is_zero: bool) -> _LayerNormBuffers:
        """Buffers for a run shaped like ``like`` ``[T, B, 4H]`` (empty when not ``on``)."""
        steps, batch, four_h = like.shape if on else (0, 0, 0)
        new = like.new_zeros if padded else like.new_empty
        hats = new(steps, batch, four_h)
        if h0_is_zero and steps and not padded:
            hats[0] = 0  # W_h·0 is not normalized
        return cls(on, hats, new(steps, batch, 4), new(steps, batch, four_h // 4), new(steps, batch, 1))

    def saved(self) -> list[Tensor]:
        return [self.hats, self.rstd, self.c_hats, self.c_rstd]

    def c_norm(self, t: int, n: int) -> CellNorm | None:
        """Step ``t``'s slots for C̃_t normalized and its 1/σ."""
        return CellNorm(self.c_hats[t, :n], self.c_rstd[t, :n]) if self.on else None

    def recurrent(self, t: int, n: int, product: Tensor | None = None) -> RecurrentNorm:
        """Step ``t``'s recurrent ``product`` (forward) and the slots for it normalized and its 1/σ."""
        return RecurrentNorm(product, self.hats[t, :n], self.rstd[t, :n])

    def gain_grad(self, grad_pre: Tensor) -> Tensor:
        """dγ_h = Σ over steps and rows of dpre · LN(W_h·h_in)."""
        return column_dot(grad_pre, self.hats)

    def c_gain_grad(self, d_shown: Tensor) -> Tensor:
        """dγ_C = Σ over steps and rows of dL/dLN(C̃_t) · (C̃_t − mean)/σ."""
        return column_dot(d_shown, self.c_hats)
