"""The LSTM cell's point-wise step as two Triton kernels, one for the forward and one for the backward pass.

The same equations as `lstm_step` and ``lstm_mt/csrc/lstm_cell.c``, element by element (and the
cell variants' without layer norm, as ``lstm_variants.c``: `variant_forward_kernel`, `variant_backward_kernel`),
for a tile of rows × hidden units per program; `lstm_mt.lstm.triton_step` launches them.
Every matrix argument is a row-major ``[rows, width·H]`` view with its own row stride, so
slices of larger buffers can be passed. Values are loaded in their own dtype (float32,
bfloat16 or float16), computed in float32 and stored in the dtype of each output, so a
bfloat16 step may keep its cell state C in float32.

This module imports Triton; only `triton_step` imports it, and only when a kernel is run.
"""

import triton
import triton.language as tl


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    return 2.0 * _sigmoid(2.0 * x) - 1.0  # tanh x = 2σ(2x) − 1; saturates to ±1 without overflow


@triton.jit
def _tile(rows, H, BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr):
    """This program's row indices ``[BLOCK_R, 1]``, unit indices ``[1, BLOCK_H]`` and their mask."""
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)[:, None]
    j = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)[None, :]
    return r, j, (r < rows) & (j < H)


@triton.jit
def _store_gates(gates, gates_stride, tanh_c, tanh_c_stride, r, j, mask, H, i, f, g, o, tc):
    """Keep a step's gates (laid out like ``pre``) and tanh for the backward pass, in the buffers' dtypes."""
    out = gates + r * gates_stride + j
    tl.store(out, i.to(gates.dtype.element_ty), mask=mask)
    tl.store(out + H, f.to(gates.dtype.element_ty), mask=mask)
    tl.store(out + 2 * H, g.to(gates.dtype.element_ty), mask=mask)
    tl.store(out + 3 * H, o.to(gates.dtype.element_ty), mask=mask)
    tl.store(tanh_c + r * tanh_c_stride + j, tc.to(tanh_c.dtype.element_ty), mask=mask)


@triton.jit
def _load_gates(gates, gates_stride, tanh_c, tanh_c_stride, r, j, mask, H):
    """A step's kept i, f, C̃, o and tanh, in float32."""
    g_in = gates + r * gates_stride + j
    i = tl.load(g_in, mask=mask, other=0.0).to(tl.float32)
    f = tl.load(g_in + H, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_in + 2 * H, mask=mask, other=0.0).to(tl.float32)
    o = tl.load(g_in + 3 * H, mask=mask, other=0.0).to(tl.float32)
    tc = tl.load(tanh_c + r * tanh_c_stride + j, mask=mask, other=0.0).to(tl.float32)
    return i, f, g, o, tc


@triton.jit
def lstm_forward_kernel(
    pre,
    pre_stride,
    c_prev,
    c_prev_stride,
    c,
    c_stride,
    h,
    h_stride,
    gates,
    gates_stride,
    tanh_c,
    tanh_c_stride,
    rows,
    H,
    KEEP: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """One step from ``pre = W·[h, x] + b`` (gate blocks i, f, C̃, o): writes C and h, and with
    ``KEEP`` the gate values (laid out like ``pre``) and tanh(C) for the backward pass."""
    r, j, mask = _tile(rows, H, BLOCK_R, BLOCK_H)
    p = pre + r * pre_stride + j
    i = _sigmoid(tl.load(p, mask=mask, other=0.0).to(tl.float32))
    f = _sigmoid(tl.load(p + H, mask=mask, other=0.0).to(tl.float32))
    g = _tanh(tl.load(p + 2 * H, mask=mask, other=0.0).to(tl.float32))  # C̃
    o = _sigmoid(tl.load(p + 3 * H, mask=mask, other=0.0).to(tl.float32))
    cp = tl.load(c_prev + r * c_prev_stride + j, mask=mask, other=0.0).to(tl.float32)
    c_new = f * cp + i * g
    tanh_c_new = _tanh(c_new)
    tl.store(c + r * c_stride + j, c_new.to(c.dtype.element_ty), mask=mask)
    tl.store(h + r * h_stride + j, (o * tanh_c_new).to(h.dtype.element_ty), mask=mask)
    if KEEP:
        _store_gates(gates, gates_stride, tanh_c, tanh_c_stride, r, j, mask, H, i, f, g, o, tanh_c_new)


@triton.jit
def lstm_backward_kernel(
    gates,
    gates_stride,
    tanh_c,
    tanh_c_stride,
    c_prev,
    c_prev_stride,
    dh,
    dh_stride,
    dc,
    dc_stride,
    grad_pre,
    grad_pre_stride,
    dc_prev,
    dc_prev_stride,
    rows,
    H,
    BLOCK_R: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """One step's backward, with σ' = σ(1 − σ) and tanh' = 1 − tanh²::

        dC     = dc + dh · o · (1 − tanh²C)      dpre_i = dC · C̃ · i(1 − i)
        dpre_f = dC · C_prev · f(1 − f)          dpre_C̃ = dC · i · (1 − C̃²)
        dpre_o = dh · tanh C · o(1 − o)

    writes dL/dpre to ``grad_pre`` and adds dC · f, the gradient reaching C_prev, to ``dc_prev``.
    """
    r, j, mask = _tile(rows, H, BLOCK_R, BLOCK_H)
    i, f, g, o, tc = _load_gates(gates, gates_stride, tanh_c, tanh_c_stride, r, j, mask, H)
    cp = tl.load(c_prev + r * c_prev_stride + j, mask=mask, other=0.0).to(tl.float32)
    dh_r = tl.load(dh + r * dh_stride + j, mask=mask, other=0.0).to(tl.float32)
    dC = tl.load(dc + r * dc_stride + j, mask=mask, other=0.0).to(tl.float32) + dh_r * o * (1.0 - tc * tc)
    out = grad_pre + r * grad_pre_stride + j
    out_type = grad_pre.dtype.element_ty
    tl.store(out, (dC * g * i * (1.0 - i)).to(out_type), mask=mask)
    tl.store(out + H, (dC * cp * f * (1.0 - f)).to(out_type), mask=mask)
    tl.store(out + 2 * H, (dC * i * (1.0 - g * g)).to(out_type), mask=mask)
    tl.store(out + 3 * H, (dh_r * tc * o * (1.0 - o)).to(out_type), mask=mask)
    dcp = dc_prev + r * dc_prev_stride + j
    total = tl.load(dcp, mask=mask, other=0.0).to(tl.float32) + dC * f
    tl.store(dcp, total.to(dc_prev.dtype.element_ty), mask=mask)


@triton.jit
def _normalize(x, mask, H, EPS: tl.constexpr):
    """``(x − mean)/σ`` over each row of a tile holding whole rows (masked units left out, and 0 there),
    and 1/σ ``[BLOCK_R, 1]``."""
    mean = tl.sum(tl.where(mask, x, 0.0), axis=1)[:, None] / H
    centered = tl.where(mask, x - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centered * centered, axis=1)[:, None] / H + EPS)
    return centered * rstd, rstd


@triton.jit
def _normalize_backward(x_hat, rstd, d_hat, mask, H):
    """dL/dx of ``x̂ = (x − mean)/σ`` over each row from x̂, 1/σ and dL/dx̂: ``rstd·(dx̂ − mean dx̂ − x̂·mean(dx̂·x̂))``."""
    d_hat = tl.where(mask, d_hat, 0.0)
    mean_d = tl.sum(d_hat, axis=1)[:, None] / H
    mean_dot = tl.sum(d_hat * x_hat, axis=1)[:, None] / H
    return rstd * (d_hat - mean_d - x_hat * mean_dot)


@triton.jit
def _recurrent_block(
    x_in, x_in_stride, rec, rec_stride, rec_hat, rec_hat_stride, rec_rstd, rec_rstd_stride, gain_hh, pre, pre_stride,
    r, j, mask, rows, H, k, EPS: tl.constexpr
):  # fmt: skip
    """Gate block ``k``'s pre-activation with layer norm, ``x_in + γ_h·LN(rec)``, into ``pre``, keeping LN(rec)
    and 1/σ."""
    x = tl.load(rec + r * rec_stride + k * H + j, mask=mask, other=0.0).to(tl.float32)
    x_hat, rstd = _normalize(x, mask, H, EPS)
    tl.store(rec_hat + r * rec_hat_stride + k * H + j, x_hat.to(rec_hat.dtype.element_ty), mask=mask)
    tl.store(rec_rstd + r * rec_rstd_stride + k, rstd.to(rec_rstd.dtype.element_ty), mask=r < rows)
    gain = tl.load(gain_hh + k * H + j, mask=j < H, other=0.0).to(tl.float32)
    x_share = tl.load(x_in + r * x_in_stride + k * H + j, mask=mask, other=0.0).to(tl.float32)
    tl.store(pre + r * pre_stride + k * H + j, (x_share + gain * x_hat).to(pre.dtype.element_ty), mask=mask)


@triton.jit
def _recurrent_block_backward(
    rec_hat, rec_hat_stride, rec_rstd, rec_rstd_stride, gain_hh, grad_pre, grad_pre_stride, grad_rec, grad_rec_stride,
    r, j, mask, rows, H, k
):  # fmt: skip
    """Gate block ``k``'s dL/d(W_h·h_in) from its dL/dpre, through ``γ_h·LN(·)``."""
    x_hat = tl.load(rec_hat + r * rec_hat_stride + k * H + j, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.load(rec_rstd + r * rec_rstd_stride + k, mask=r < rows, other=0.0).to(tl.float32)
    gain = tl.load(gain_hh + k * H + j, mask=j < H, other=0.0).to(tl.float32)
    d_pre = tl.load(grad_pre + r * grad_pre_stride + k * H + j, mask=mask, other=0.0).to(tl.float32)
    grad = _normalize_backward(x_hat, rstd, d_pre * gain, mask, H)
    tl.store(grad_rec + r * grad_rec_stride + k * H + j, grad.to(grad_rec.dtype.element_ty), mask=mask)


@triton.jit
def variant_forward_kernel(
    pre,
    pre_stride,
    c_prev,
    c_prev_stride,
    h_prev,
    h_prev_stride,
    keep_c,
    keep_c_stride,
    keep_h,
    keep_h_stride,
    peepholes,
    c_tilde,
    c_tilde_stride,
    c,
    c_stride,
    h,
    h_stride,
    gates,
    gates_stride,
    tanh_c,
    tanh_c_stride,
    x_in,
    x_in_stride,
    rec,
    rec_stride,
    rec_hat,
    rec_hat_stride,
    rec_rstd,
    rec_rstd_stride,
    gain_hh,
    c_hat,
    c_hat_stride,
    c_rstd,
    c_rstd_stride,
    gain_c,
    bias_c,
    rows,
    H,
    COUPLED: tl.constexpr,
    KEEP: tl.constexpr,
    LN_HH: tl.constexpr,
    LN_C: tl.constexpr,
    EPS: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """The cell variants' step (``lstm_variants.c``'s equations): peepholes (zeros when off), coupled
    gates, zoneout's d (``keep_*``, 0 when off; row stride 0 repeats one row), and with ``LN_HH``/``LN_C``
    layer norm (tiles then hold whole rows)::

        pre = x_in + γ_h·LN(rec) per gate block (LN_HH; else pre is given)
        f = σ(pre_f + w_cf·C_prev)   i = σ(pre_i + w_ci·C_prev), or 1 − f   C̃_t = f·C_prev + i·tanh(pre_C̃)
        o = σ(pre_o + w_co·C̃_t)      h̃ = o·tanh(γ_C·LN(C̃_t) + β_C) (LN_C; else o·tanh(C̃_t))
        C = d_C·C_prev + (1 − d_C)·C̃_t      h = d_h·h_prev + (1 − d_h)·h̃

    writes C̃_t (``c_tilde`` may be ``c``), C, h, with ``KEEP`` the gates and the tanh, and the layer
    norms' normalized values and 1/σ for the backward pass."""
    r, j, mask = _tile(rows, H, BLOCK_R, BLOCK_H)
    units = j < H
    if LN_HH:  # pre = x_in + γ_h·LN(rec), written block by block (as the C kernel does), then read as given
        for k in tl.static_range(4):
            _recurrent_block(
                x_in, x_in_stride, rec, rec_stride, rec_hat, rec_hat_stride, rec_rstd, rec_rstd_stride, gain_hh,
                pre, pre_stride, r, j, mask, rows, H, k, EPS
            )  # fmt: skip
        tl.debug_barrier()
    p = pre + r * pre_stride + j
    pre_i = tl.load(p, mask=mask, other=0.0).to(tl.float32)
    pre_f = tl.load(p + H, mask=mask, other=0.0).to(tl.float32)
    pre_g = tl.load(p + 2 * H, mask=mask, other=0.0).to(tl.float32)
    pre_o = tl.load(p + 3 * H, mask=mask, other=0.0).to(tl.float32)
    cp = tl.load(c_prev + r * c_prev_stride + j, mask=mask, other=0.0).to(tl.float32)
    w_ci = tl.load(peepholes + j, mask=units, other=0.0).to(tl.float32)
    w_cf = tl.load(peepholes + H + j, mask=units, other=0.0).to(tl.float32)
    w_co = tl.load(peepholes + 2 * H + j, mask=units, other=0.0).to(tl.float32)
    f = _sigmoid(pre_f + w_cf * cp)
    if COUPLED:
        i = 1.0 - f
    else:
        i = _sigmoid(pre_i + w_ci * cp)
    g = _tanh(pre_g)
    ct = f * cp + i * g
    o = _sigmoid(pre_o + w_co * ct)
    if LN_C:
        x_hat, rstd = _normalize(ct, mask, H, EPS)
        tl.store(c_hat + r * c_hat_stride + j, x_hat.to(c_hat.dtype.element_ty), mask=mask)
        tl.store(c_rstd + r * c_rstd_stride, rstd.to(c_rstd.dtype.element_ty), mask=r < rows)
        gain = tl.load(gain_c + j, mask=units, other=0.0).to(tl.float32)
        shown = gain * x_hat + tl.load(bias_c + j, mask=units, other=0.0).to(tl.float32)
    else:
        shown = ct
    tc = _tanh(shown)
    kc = tl.load(keep_c + r * keep_c_stride + j, mask=mask, other=0.0).to(tl.float32)
    kh = tl.load(keep_h + r * keep_h_stride + j, mask=mask, other=0.0).to(tl.float32)
    hp = tl.load(h_prev + r * h_prev_stride + j, mask=mask, other=0.0).to(tl.float32)
    tl.store(c_tilde + r * c_tilde_stride + j, ct.to(c_tilde.dtype.element_ty), mask=mask)
    tl.store(c + r * c_stride + j, (kc * cp + (1.0 - kc) * ct).to(c.dtype.element_ty), mask=mask)
    tl.store(h + r * h_stride + j, (kh * hp + (1.0 - kh) * (o * tc)).to(h.dtype.element_ty), mask=mask)
    if KEEP:
        _store_gates(gates, gates_stride, tanh_c, tanh_c_stride, r, j, mask, H, i, f, g, o, tc)


@triton.jit
def variant_backward_kernel(
    gates,
    gates_stride,
    tanh_c,
    tanh_c_stride,
    c_prev,
    c_prev_stride,
    keep_c,
    keep_c_stride,
    keep_h,
    keep_h_stride,
    peepholes,
    dh,
    dh_stride,
    dc,
    dc_stride,
    grad_pre,
    grad_pre_stride,
    dc_prev,
    dc_prev_stride,
    dh_prev,
    dh_prev_stride,
    rec_hat,
    rec_hat_stride,
    rec_rstd,
    rec_rstd_stride,
    gain_hh,
    grad_rec,
    grad_rec_stride,
    c_hat,
    c_hat_stride,
    c_rstd,
    c_rstd_stride,
    gain_c,
    d_shown,
    d_shown_stride,
    rows,
    H,
    COUPLED: tl.constexpr,
    LN_HH: tl.constexpr,
    LN_C: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """`variant_forward_kernel`'s backward (``lstm_variants.c``'s): writes dL/dpre (and with ``LN_HH``
    dL/d(W_h·h_in), with ``LN_C`` dL/d(what tanh reads)), adds the gradients reaching C_prev and (through
    zoneout) h_prev to ``dc_prev`` and ``dh_prev``."""
    r, j, mask = _tile(rows, H, BLOCK_R, BLOCK_H)
    units = j < H
    i, f, g, o, tc = _load_gates(gates, gates_stride, tanh_c, tanh_c_stride, r, j, mask, H)
    cp = tl.load(c_prev + r * c_prev_stride + j, mask=mask, other=0.0).to(tl.float32)
    kc = tl.load(keep_c + r * keep_c_stride + j, mask=mask, other=0.0).to(tl.float32)
    kh = tl.load(keep_h + r * keep_h_stride + j, mask=mask, other=0.0).to(tl.float32)
    w_ci = tl.load(peepholes + j, mask=units, other=0.0).to(tl.float32)
    w_cf = tl.load(peepholes + H + j, mask=units, other=0.0).to(tl.float32)
    w_co = tl.load(peepholes + 2 * H + j, mask=units, other=0.0).to(tl.float32)
    dh_in = tl.load(dh + r * dh_stride + j, mask=mask, other=0.0).to(tl.float32)
    dc_in = tl.load(dc + r * dc_stride + j, mask=mask, other=0.0).to(tl.float32)
    dh_new = (1.0 - kh) * dh_in
    d_o = dh_new * tc * o * (1.0 - o)
    d_tanh = dh_new * o * (1.0 - tc * tc)
    if LN_C:
        tl.store(d_shown + r * d_shown_stride + j, d_tanh.to(d_shown.dtype.element_ty), mask=mask)
        x_hat = tl.load(c_hat + r * c_hat_stride + j, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(c_rstd + r * c_rstd_stride, mask=r < rows, other=0.0).to(tl.float32)
        gain = tl.load(gain_c + j, mask=units, other=0.0).to(tl.float32)
        d_tanh = _normalize_backward(x_hat, rstd, d_tanh * gain, mask, H)
    dct = (1.0 - kc) * dc_in + d_tanh + d_o * w_co
    d_input = dct * g
    if COUPLED:
        d_forget = dct * cp - d_input  # i = 1 − f
        d_i = 0.0 * d_input
    else:
        d_forget = dct * cp
        d_i = d_input * i * (1.0 - i)
    d_f = d_forget * f * (1.0 - f)
    d_g = dct * i * (1.0 - g * g)
    out = grad_pre + r * grad_pre_stride + j
    out_type = grad_pre.dtype.element_ty
    tl.store(out, d_i.to(out_type), mask=mask)
    tl.store(out + H, d_f.to(out_type), mask=mask)
    tl.store(out + 2 * H, d_g.to(out_type), mask=mask)
    tl.store(out + 3 * H, d_o.to(out_type), mask=mask)
    dcp = dc_prev + r * dc_prev_stride + j
    total = tl.load(dcp, mask=mask, other=0.0).to(tl.float32) + kc * dc_in + dct * f + d_i * w_ci + d_f * w_cf
    tl.store(dcp, total.to(dc_prev.dtype.element_ty), mask=mask)
    dhp = dh_prev + r * dh_prev_stride + j
    total_h = tl.load(dhp, mask=mask, other=0.0).to(tl.float32) + kh * dh_in
    tl.store(dhp, total_h.to(dh_prev.dtype.element_ty), mask=mask)
    if LN_HH:
        tl.debug_barrier()  # dL/dpre is read back block by block
        for k in tl.static_range(4):
            _recurrent_block_backward(
                rec_hat, rec_hat_stride, rec_rstd, rec_rstd_stride, gain_hh, grad_pre, grad_pre_stride, grad_rec,
                grad_rec_stride, r, j, mask, rows, H, k
            )  # fmt: skip
