"""The point-wise part of a variant cell's step (`lstm_mt.lstm.variants`): from ``pre`` to the gates, C and h, and back.

``pre`` holds the four gates' pre-activations (products, layer norm of the recurrent part and
bias already added). What is left is element by element, except the layer norm of C (a
reduction over each row): peepholes, coupled gates, zoneout and C's layer norm. Without layer
norm the compiled kernel (`lstm_mt.lstm.native`, C for CPU float32) runs the step when it
takes the tensors; otherwise, and with layer norm, PyTorch tensor operations do.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstm_mt.lstm.variants import LAYER_NORM_EPS, CellVariant


class VariantPointwise:
    """One layer run's (or one step's) point-wise rule: the variant, its parameters and zoneout's d.

    ``keep_c``/``keep_h``: ``[T, B, H]`` 0/1 tensors (training), or a probability (evaluation,
    0.0: off); step ``t`` of rows ``:n`` reads ``keep[t, :n]``.
    """

    def __init__(
        self,
        variant: CellVariant,
        peephole_weight: Tensor | None,
        ln_weight_c: Tensor | None,
        ln_bias_c: Tensor | None,
        keep_c: Tensor | float,
        keep_h: Tensor | float,
    ) -> None:
        self.variant = variant
        self.peepholes = None if peephole_weight is None else peephole_weight.detach().chunk(3)
        self.ln_c = (
            None if ln_weight_c is None else (ln_weight_c.detach(), None if ln_bias_c is None else ln_bias_c.detach())
        )
        self.keep_c, self.keep_h = keep_c, keep_h

    @property
    def zoneout_c(self) -> bool:
        """Whether C is zoned out, so C̃ (kept in its own buffer) differs from C."""
        return not _is_zero(self.keep_c)

    def _keep(self, keep: Tensor | float, t: int, n: int) -> Tensor | float:
        return keep if isinstance(keep, float) else keep[t, :n]

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
        ln_stats: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        """Step ``t`` for rows ``[n, ·]``: writes the gates to ``act`` (may be ``pre``), C̃, tanh of what h shows, C, h.

        ``c_tilde`` is ``c`` itself without zoneout of C. With layer norm, ``ln_stats`` receives
        C̃'s mean and 1/σ ``[n, 1]``.
        """
        n, H = c_prev.shape
        keep_c, keep_h = self._keep(self.keep_c, t, n), self._keep(self.keep_h, t, n)
        pre_i, pre_f, pre_g, pre_o = pre.chunk(4, dim=1)
        i, f, g, o = act.chunk(4, dim=1)
        if self.peepholes is not None:
            w_ci, w_cf, w_co = self.peepholes
            pre_i.addcmul_(w_ci, c_prev)
            pre_f.addcmul_(w_cf, c_prev)
        torch.sigmoid(pre_f, out=f)
        if self.variant.coupled_gates:
            torch.sub(1, f, out=i)
        else:
            torch.sigmoid(pre_i, out=i)
        torch.tanh(pre_g, out=g)
        torch.mul(f, c_prev, out=c_tilde).addcmul_(i, g)  # C̃_t = f*C_prev + i*C̃
        if self.peepholes is not None:
            pre_o.addcmul_(w_co, c_tilde)
        torch.sigmoid(pre_o, out=o)
        shown = c_tilde
        if self.ln_c is not None and ln_stats is not None:
            shown, mean, rstd = torch.native_layer_norm(c_tilde, [H], *self.ln_c, LAYER_NORM_EPS)
            ln_stats[0].copy_(mean)
            ln_stats[1].copy_(rstd)
        torch.mul(o, torch.tanh(shown, out=tanh_c), out=h)  # h̃ = o*tanh(C̃ or LN(C̃))
        if not _is_zero(keep_c):
            torch.lerp(c_tilde, c_prev, keep_c, out=c)  # C = d*C_prev + (1-d)*C̃_t
        if not _is_zero(keep_h):
            torch.lerp(h, h_prev, keep_h, out=h)

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
        ln_stats: tuple[Tensor, Tensor] | None = None,
        d_shown: Tensor | None = None,
    ) -> None:
        """Step ``t``'s backward: writes ``grad_pre = dL/dpre``, adds what reaches C_prev and h_prev.

        ``dh``/``dc`` arrive at the step's h and C (not changed). With layer norm of C,
        ``d_shown`` receives dL/dLN(C̃), for the gain's and bias's gradients.
        """
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
        if self.ln_c is not None and ln_stats is not None:
            weight, bias = self.ln_c
            mean, rstd = ln_stats
            grad = torch.ops.aten.native_layer_norm_backward(
                shown_grad, c_tilde, [H], mean, rstd, weight, bias, [True, False, False]
            )[0]
            dc_tilde.add_(grad)
            if d_shown is not None:
                d_shown.copy_(shown_grad)
        else:
            dc_tilde.add_(shown_grad)
        if self.peepholes is not None:
            w_ci, w_cf, w_co = self.peepholes
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
        if self.peepholes is not None:
            dc_prev.addcmul_(d_i, w_ci).addcmul_(d_f, w_cf)


def _is_zero(keep: Tensor | float) -> bool:
    return isinstance(keep, float) and keep == 0.0


def _add_scaled(target: Tensor, grad: Tensor, keep: Tensor | float) -> None:
    """``target += keep * grad`` for a 0/1 tensor or a probability."""
    if isinstance(keep, Tensor):
        target.addcmul_(grad, keep)
    else:
        target.add_(grad, alpha=keep)
