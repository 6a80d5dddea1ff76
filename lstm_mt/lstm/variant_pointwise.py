"""The point-wise part of a variant cell's step (`lstm_mt.lstm.variants`): from ``pre`` to the gates, C and h, and back.

``pre`` holds the four gates' pre-activations (products and bias already added). What is left
is element by element, except the layer norms (reductions over each row): with layer norm
the step also normalizes the recurrent product per gate block (``pre`` is then the input's
share alone), and C̃_t before tanh. Then come peepholes, coupled gates and zoneout.

The step runs in a compiled kernel where one takes the tensors and agreed with the tensor
operations here on first use (per device and dtype): C (``lstm_variants.c`` through
`lstm_mt.lstm.native`, CPU float32), or Triton (`lstm_mt.lstm.triton_step`, CUDA, every variant
but layer norm); otherwise, as the reference, in PyTorch tensor operations.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from functools import cache
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from lstm_mt.lstm import native, triton_step
from lstm_mt.lstm.variants import LAYER_NORM_EPS, CellVariant

log = logging.getLogger(__name__)


class RecurrentNorm(NamedTuple):
    """A step's layer norm of its recurrent product ``W_h·h_in``: ``product`` ``[n, 4H]`` (forward only),
    and what the forward writes for the backward: ``hat``, the product normalized per gate block
    ``[n, 4H]``, and each block's 1/σ, ``rstd`` ``[n, 4]``."""

    product: Tensor | None
    hat: Tensor
    rstd: Tensor


class CellNorm(NamedTuple):
    """A step's layer norm of C̃_t, written by the forward for the backward: C̃_t normalized, ``hat``
    ``[n, H]``, and its 1/σ, ``rstd`` ``[n, 1]``."""

    hat: Tensor
    rstd: Tensor


class _Forward(NamedTuple):
    """One forward step's tensors, as `VariantPointwise.forward` takes them."""

    pre: Tensor
    c_prev: Tensor
    h_prev: Tensor
    act: Tensor
    c_tilde: Tensor
    tanh_c: Tensor
    c: Tensor
    h: Tensor
    c_norm: CellNorm | None
    recurrent: RecurrentNorm | None


class _Backward(NamedTuple):
    """One backward step's tensors, as `VariantPointwise.backward` takes them."""

    act: Tensor
    c_tilde: Tensor
    tanh_c: Tensor
    c_prev: Tensor
    dh: Tensor
    dc: Tensor
    grad_pre: Tensor
    dc_prev: Tensor
    dh_prev: Tensor
    c_norm: CellNorm | None
    d_shown: Tensor | None
    recurrent: RecurrentNorm | None
    grad_rec: Tensor | None


class VariantPointwise:
    """One layer run's (or one step's) point-wise rule: the variant, its parameters and zoneout's d.

    ``keep_c``/``keep_h``: ``[T, B, H]`` 0/1 tensors (training), or a probability (evaluation,
    0.0: off); step ``t`` of rows ``:n`` reads ``keep[t, :n]``.
    """

    def __init__(
        self,
        variant: CellVariant,
        peephole_weight: Tensor | None,
        ln_weight_hh: Tensor | None,
        ln_weight_c: Tensor | None,
        ln_bias_c: Tensor | None,
        keep_c: Tensor | float,
        keep_h: Tensor | float,
    ) -> None:
        self.variant = variant
        self.peephole_weight = None if peephole_weight is None else peephole_weight.detach()
        self.gain_hh = None if ln_weight_hh is None else ln_weight_hh.detach()
        self.ln_c = (
            None if ln_weight_c is None else (ln_weight_c.detach(), None if ln_bias_c is None else ln_bias_c.detach())
        )
        self.keep_c, self.keep_h = keep_c, keep_h
        self._neutral: dict[tuple[float, int], Tensor] = {}

    @property
    def zoneout_c(self) -> bool:
        """Whether C is zoned out, so C̃_t (kept in its own buffer) differs from C."""
        return not _is_zero(self.keep_c)

    def forward(
        self,
        t: int,
        pre: Tensor,
        c_prev: Tensor,
        h_prev: Tensor,
        act: Tensor,
        c_tilde: Tensor,
        tanh_c: Tensor,
        c: Tensor,
        h: Tensor,
        c_norm: CellNorm | None = None,
        recurrent: RecurrentNorm | None = None,
    ) -> None:
        """Step ``t`` for rows ``[n, ·]``: writes the gates to ``act`` (may be ``pre``), C̃_t, tanh of what h shows, C, h.

        ``c_tilde`` is ``c`` itself without zoneout of C. With layer norm, ``c_norm`` receives
        C̃_t's statistics, and ``recurrent`` holds the recurrent product to normalize and add
        to ``pre``, the input's share (``act`` must then be its own buffer).
        """
        step = _Forward(pre, c_prev, h_prev, act, c_tilde, tanh_c, c, h, c_norm, recurrent)
        for kernel in _usable_kernels(c_prev):
            if self._kernel_forward(kernel, t, step):
                return
        self._tensor_forward(t, step)

    def backward(
        self,
        t: int,
        act: Tensor,
        c_tilde: Tensor,
        tanh_c: Tensor,
        c_prev: Tensor,
        dh: Tensor,
        dc: Tensor,
        grad_pre: Tensor,
        dc_prev: Tensor,
        dh_prev: Tensor,
        c_norm: CellNorm | None = None,
        d_shown: Tensor | None = None,
        recurrent: RecurrentNorm | None = None,
        grad_rec: Tensor | None = None,
    ) -> None:
        """Step ``t``'s backward: writes ``grad_pre = dL/dpre``, adds what reaches C_prev and h_prev.

        ``dh``/``dc`` arrive at the step's h and C (not changed). With layer norm of C,
        ``d_shown`` receives dL/dLN(C̃_t), for the gain's and bias's gradients; of the recurrent
        product, ``grad_rec`` receives dL/d(W_h·h_in).
        """
        step = _Backward(
            act, c_tilde, tanh_c, c_prev, dh, dc, grad_pre, dc_prev, dh_prev, c_norm, d_shown, recurrent, grad_rec
        )
        for kernel in _usable_kernels(c_prev):
            if self._kernel_backward(kernel, t, step):
                return
        self._tensor_backward(t, step)

    def layer_variant(self, like: Tensor) -> native.LayerVariant | None:
        """This rule as `native.layer_forward` takes it, for state ``like`` ``[B, H]``: where its zoneout is a
        probability (evaluation) and it has no layer norm; else None."""
        if self.gain_hh is not None or self.ln_c is not None:
            return None
        if not isinstance(self.keep_c, float) or not isinstance(self.keep_h, float):
            return None
        H = like.shape[1]
        peepholes = self.peephole_weight if self.peephole_weight is not None else self._constant(0.0, 3 * H, like)[0]
        keep_c, keep_h = self._constant(self.keep_c, H, like), self._constant(self.keep_h, H, like)
        return native.LayerVariant(self.variant.coupled_gates, peepholes.contiguous(), keep_c, keep_h)

    def _keep(self, keep: Tensor | float, t: int, n: int) -> Tensor | float:
        return keep if isinstance(keep, float) else keep[t, :n]

    def _keep_rows(self, keep: Tensor | float, t: int, like: Tensor) -> Tensor:
        """Zoneout's d for step ``t`` as ``[n, H]`` rows for the kernel (a probability: one row ``[1, H]`` for all)."""
        if isinstance(keep, Tensor):
            return keep[t, : like.shape[0]]
        return self._constant(keep, like.shape[1], like)

    def _constant(self, value: float, width: int, like: Tensor) -> Tensor:
        """``[1, width]`` of ``value``, made once per rule: the kernel's neutral or constant inputs."""
        key = (value, width)
        if key not in self._neutral:
            self._neutral[key] = like.new_full((1, width), value)
        return self._neutral[key]

    def _kernel_forward(self, kernel: VariantKernel, t: int, step: _Forward) -> bool:
        """The step in ``lstm_variants.c``; False (nothing written) where the kernel does not take the tensors."""
        pre, c_prev, h_prev, act, c_tilde, tanh_c, c, h, c_norm, recurrent = step
        keep = act is not pre
        H = c_prev.shape[1]
        peepholes = self.peephole_weight if self.peephole_weight is not None else self._constant(0.0, 3 * H, c_prev)[0]
        ln_c = self.ln_c if c_norm is not None else None
        return kernel.variant_forward(
            self.variant.coupled_gates,
            peepholes=peepholes,
            pre=act if recurrent is not None else pre,
            x_in=pre if recurrent is not None else None,
            rec=None if recurrent is None else recurrent.product,
            gain_hh=None if recurrent is None else self.gain_hh,
            rec_hat=None if recurrent is None else recurrent.hat,
            rec_rstd=None if recurrent is None else recurrent.rstd,
            c_prev=c_prev,
            h_prev=h_prev,
            keep_c=self._keep_rows(self.keep_c, t, c_prev),
            keep_h=self._keep_rows(self.keep_h, t, c_prev),
            gates=act if keep else None,
            tanh_c=tanh_c if keep else None,
            c_tilde=c_tilde,
            c=c,
            h=h,
            gain_c=None if ln_c is None else ln_c[0],
            bias_c=None if ln_c is None else ln_c[1],
            c_hat=None if c_norm is None else c_norm.hat,
            c_rstd=None if c_norm is None else c_norm.rstd,
        )

    def _kernel_backward(self, kernel: VariantKernel, t: int, step: _Backward) -> bool:
        """The step's backward in ``lstm_variants.c``; False (nothing written) where the kernel does not apply."""
        act, c_tilde, tanh_c, c_prev, dh, dc, grad_pre, dc_prev, dh_prev, c_norm, d_shown, recurrent, grad_rec = step
        H = c_prev.shape[1]
        peepholes = self.peephole_weight if self.peephole_weight is not None else self._constant(0.0, 3 * H, c_prev)[0]
        ln_c = c_norm is not None and self.ln_c is not None
        if ln_c and d_shown is None:
            d_shown = torch.empty_like(c_prev)
        return kernel.variant_backward(
            self.variant.coupled_gates,
            peepholes=peepholes,
            gates=act,
            c_tilde=c_tilde,
            tanh_c=tanh_c,
            c_prev=c_prev,
            keep_c=self._keep_rows(self.keep_c, t, c_prev),
            keep_h=self._keep_rows(self.keep_h, t, c_prev),
            dh=dh,
            dc=dc,
            grad_pre=grad_pre,
            dc_prev=dc_prev,
            dh_prev=dh_prev,
            gain_c=self.ln_c[0] if ln_c and self.ln_c is not None else None,
            c_hat=c_norm.hat if ln_c and c_norm is not None else None,
            c_rstd=c_norm.rstd if ln_c and c_norm is not None else None,
            d_shown=d_shown if ln_c else None,
            gain_hh=None if recurrent is None else self.gain_hh,
            rec_hat=None if recurrent is None else recurrent.hat,
            rec_rstd=None if recurrent is None else recurrent.rstd,
            grad_rec=grad_rec if recurrent is not None else None,
        )

    def _tensor_forward(self, t: int, step: _Forward) -> None:
        """The step as PyTorch tensor operations: the reference the kernel is checked against."""
        pre, c_prev, h_prev, act, c_tilde, tanh_c, c, h, c_norm, recurrent = step
        n, H = c_prev.shape
        keep_c, keep_h = self._keep(self.keep_c, t, n), self._keep(self.keep_h, t, n)
        if recurrent is not None and self.gain_hh is not None:
            pre = _add_normalized(pre, recurrent, self.gain_hh)
        pre_i, pre_f, pre_g, pre_o = pre.chunk(4, dim=1)
        i, f, g, o = act.chunk(4, dim=1)
        if self.peephole_weight is not None:
            w_ci, w_cf, w_co = self.peephole_weight.chunk(3)
            pre_i.addcmul_(w_ci, c_prev)
            pre_f.addcmul_(w_cf, c_prev)
        torch.sigmoid(pre_f, out=f)
        if self.variant.coupled_gates:
            torch.sub(1, f, out=i)
        else:
            torch.sigmoid(pre_i, out=i)
        torch.tanh(pre_g, out=g)
        torch.mul(f, c_prev, out=c_tilde).addcmul_(i, g)  # C̃_t = f*C_prev + i*C̃
        if self.peephole_weight is not None:
            pre_o.addcmul_(w_co, c_tilde)
        torch.sigmoid(pre_o, out=o)
        shown = c_tilde
        if self.ln_c is not None and c_norm is not None:
            normed, _, rstd = torch.native_layer_norm(c_tilde, [H], None, None, LAYER_NORM_EPS)
            c_norm.hat.copy_(normed)
            c_norm.rstd.copy_(rstd)
            gain, bias = self.ln_c
            shown = normed * gain if bias is None else torch.addcmul(bias, normed, gain)
        torch.mul(o, torch.tanh(shown, out=tanh_c), out=h)  # h̃ = o*tanh(C̃_t or LN(C̃_t))
        if not _is_zero(keep_c):
            torch.lerp(c_tilde, c_prev, keep_c, out=c)  # C = d*C_prev + (1-d)*C̃_t
        if not _is_zero(keep_h):
            torch.lerp(h, h_prev, keep_h, out=h)

    def _tensor_backward(self, t: int, step: _Backward) -> None:
        """The step's backward as PyTorch tensor operations."""
        act, c_tilde, tanh_c, c_prev, dh, dc, grad_pre, dc_prev, dh_prev, c_norm, d_shown, recurrent, grad_rec = step
        n, H = c_prev.shape
        keep_c, keep_h = self._keep(self.keep_c, t, n), self._keep(self.keep_h, t, n)
        i, f, g, o = act.chunk(4, dim=1)
        d_i, d_f, d_g, d_o = grad_pre.chunk(4, dim=1)
        if not _is_zero(keep_h):
            _add_scaled(dh_prev, dh, keep_h)  # h_prev reaches h directly where zoned out
            dh = dh * (1 - keep_h)
        if not _is_zero(keep_c):
            _add_scaled(dc_prev, dc, keep_c)
            dc_tilde = dc * (1 - keep_c)
        else:
            dc_tilde = dc.clone()
        torch.mul(o, 1 - o, out=d_o).mul_(tanh_c).mul_(dh)  # dpre_o = dh·tanh·o(1-o)
        shown_grad = (1 - tanh_c * tanh_c).mul_(o).mul_(dh)  # dL/d(what tanh reads)
        if self.ln_c is not None and c_norm is not None:
            dc_tilde.add_(layer_norm_backward(c_norm.hat, c_norm.rstd, shown_grad * self.ln_c[0]))
            if d_shown is not None:
                d_shown.copy_(shown_grad)
        else:
            dc_tilde.add_(shown_grad)
        if self.peephole_weight is not None:
            w_ci, w_cf, w_co = self.peephole_weight.chunk(3)
            dc_tilde.addcmul_(d_o, w_co)
        torch.mul(g, g, out=d_g).neg_().add_(1).mul_(i).mul_(dc_tilde)  # dpre_C̃ = dC̃·i·(1-C̃²)
        d_input = dc_tilde * g  # dL/di
        d_forget = dc_tilde * c_prev  # dL/df
        if self.variant.coupled_gates:
            d_forget.sub_(d_input)  # i = 1 - f
            d_i.zero_()
        else:
            torch.mul(i, 1 - i, out=d_i).mul_(d_input)
        torch.mul(f, 1 - f, out=d_f).mul_(d_forget)
        dc_prev.addcmul_(dc_tilde, f)
        if self.peephole_weight is not None:
            dc_prev.addcmul_(d_i, w_ci).addcmul_(d_f, w_cf)
        if recurrent is not None and self.gain_hh is not None and grad_rec is not None:
            n = grad_pre.shape[0]
            d_hat = (grad_pre * self.gain_hh).view(n, 4, H)
            grad = layer_norm_backward(recurrent.hat.view(n, 4, H), recurrent.rstd.view(n, 4, 1), d_hat)
            grad_rec.copy_(grad.view(n, 4 * H))


def _add_normalized(x_in: Tensor, recurrent: RecurrentNorm, gain: Tensor) -> Tensor:
    """``x_in + γ_h * LN(product)`` per gate block, writing the normalized product and 1/σ to ``recurrent``."""
    assert recurrent.product is not None
    n = x_in.shape[0]
    blocks = recurrent.product.view(n, 4, -1)
    normed, _, rstd = torch.native_layer_norm(blocks, blocks.shape[-1:], None, None, LAYER_NORM_EPS)
    recurrent.hat.copy_(normed.view(n, -1))
    recurrent.rstd.copy_(rstd.view(n, 4))
    return torch.addcmul(x_in, recurrent.hat, gain)


def layer_norm_backward(x_hat: Tensor, rstd: Tensor, d_hat: Tensor) -> Tensor:
    """dL/dx of x̂ = (x − mean)/σ over the last dimension, from x̂, 1/σ and dL/dx̂ (the tensor-operation form
    of ``layer_norm_backward`` in lstm_variants.c):
    ``rstd · (dx̂ − mean(dx̂) − x̂ · mean(dx̂ · x̂))``."""
    mean_d = d_hat.mean(-1, keepdim=True)
    mean_dot = (d_hat * x_hat).mean(-1, keepdim=True)
    return (d_hat - mean_d - x_hat * mean_dot) * rstd


def _is_zero(keep: Tensor | float) -> bool:
    return isinstance(keep, float) and keep == 0.0


def _add_scaled(target: Tensor, grad: Tensor, keep: Tensor | float) -> None:
    """``target += keep * grad`` for a 0/1 tensor or a probability."""
    if isinstance(keep, Tensor):
        target.addcmul_(grad, keep)
    else:
        target.add_(grad, alpha=keep)


class VariantKernel(Protocol):
    """A compiled variant step: `lstm_mt.lstm.native` (C, CPU float32) and `lstm_mt.lstm.triton_step` (Triton,
    CUDA, without layer norm) are the two; see ``native.variant_forward`` for the contract."""

    VARIANT_LAYER_NORM: bool  # whether it takes the layer-norm fields

    def usable(self, *tensors: Tensor) -> bool: ...

    def variant_forward(self, coupled: bool, **tensors: Tensor | None) -> bool: ...

    def variant_backward(self, coupled: bool, **tensors: Tensor | None) -> bool: ...


_KERNELS: tuple[VariantKernel, ...] = (native, triton_step)


def _usable_kernels(state: Tensor) -> Iterator[VariantKernel]:
    """The kernels that may take a step with this state (``[n, H]``): usable here and checked (once per device and dtype)."""
    for index, kernel in enumerate(_KERNELS):
        if kernel.usable(state) and _kernel_checked(index, state.device, state.dtype):
            yield kernel


_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 5e-3}


@cache
def _kernel_checked(index: int, device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``_KERNELS[index]`` computes what the tensor operations do on ``device`` for ``dtype``: forward and
    backward on random input with every variant it takes on, the gates coupled and not (once per kernel, device and
    dtype)."""
    kernel = _KERNELS[index]
    try:
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            agrees = all(_kernel_agrees(kernel, device, dtype, coupled) for coupled in (False, True))
    except Exception as error:  # a kernel that fails to compile or launch is not used
        log.warning(
            "LSTM variant kernel %s fails on %s for %s (%s); using PyTorch operations", kernel, device, dtype, error
        )
        return False
    if not agrees:
        log.warning(
            "LSTM variant kernel %s disagrees with PyTorch on %s for %s; using PyTorch operations",
            kernel,
            device,
            dtype,
        )
    return agrees


def _kernel_agrees(kernel: VariantKernel, device: torch.device, dtype: torch.dtype, coupled: bool) -> bool:
    """One step forward and backward in ``kernel`` (inputs in ``dtype``) and in tensor operations (the same
    values in float32), equal to ``dtype``'s tolerance."""
    generator = torch.Generator().manual_seed(0)
    rows, H = 70, 61  # rows * H >= 4096: the C kernel splits rows among threads
    layer_norm = kernel.VARIANT_LAYER_NORM

    def randn(*shape: int, scale: float = 1.0) -> Tensor:
        return (torch.randn(*shape, generator=generator) * scale).to(device, dtype)

    variant = CellVariant(layer_norm, zoneout_c=0.5, zoneout_h=0.5, peepholes=True, coupled_gates=coupled)
    keep = [torch.rand(1, rows, H, generator=generator).round().to(device, dtype) for _ in range(2)]
    peepholes, gains = randn(3 * H), (randn(4 * H), randn(H), randn(H))
    pre, product = randn(rows, 4 * H), randn(rows, 4 * H, scale=3.0)
    inputs = [pre, product, *(randn(rows, H) for _ in range(4))]  # and c_prev, h_prev, dh, dc
    results = []
    for in_kernel in (True, False):
        like = dtype if in_kernel else torch.float32
        gain_hh, gain_c, bias_c = (g.to(like) if layer_norm else None for g in gains)
        rule = VariantPointwise(variant, peepholes.to(like), gain_hh, gain_c, bias_c, *(k.to(like) for k in keep))
        pre, product, c_prev, h_prev, dh, dc = (t.to(like) for t in inputs)
        zeros = functools.partial(torch.zeros, device=device, dtype=like)

        act, grad_pre, grad_rec = zeros(rows, 4 * H), zeros(rows, 4 * H), zeros(rows, 4 * H)
        c_tilde, tanh_c, c, h, d_shown = (zeros(rows, H) for _ in range(5))
        dc_prev, dh_prev = zeros(rows, H) + 1, zeros(rows, H) + 1
        recurrent = RecurrentNorm(product, zeros(rows, 4 * H), zeros(rows, 4)) if layer_norm else None
        c_norm = CellNorm(zeros(rows, H), zeros(rows, 1)) if layer_norm else None
        step = _Forward(pre.clone(), c_prev, h_prev, act, c_tilde, tanh_c, c, h, c_norm, recurrent)
        back = _Backward(
            act, c_tilde, tanh_c, c_prev, dh, dc, grad_pre, dc_prev, dh_prev, c_norm, d_shown, recurrent, grad_rec
        )
        if in_kernel and not (rule._kernel_forward(kernel, 0, step) and rule._kernel_backward(kernel, 0, back)):
            return False
        if not in_kernel:
            rule._tensor_forward(0, step)
            rule._tensor_backward(0, back)
        results.append([act, c_tilde, tanh_c, c, h, grad_pre, dc_prev, dh_prev])
        if recurrent is not None and c_norm is not None:
            results[-1] += [recurrent.hat, recurrent.rstd, *c_norm, grad_rec, d_shown]
    tolerance = _TOLERANCE[dtype]
    return all(torch.allclose(a.float(), b, rtol=tolerance, atol=tolerance) for a, b in zip(*results))
