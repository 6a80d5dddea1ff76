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
        out = gates + r * gates_stride + j
        tl.store(out, i.to(gates.dtype.element_ty), mask=mask)
        tl.store(out + H, f.to(gates.dtype.element_ty), mask=mask)
        tl.store(out + 2 * H, g.to(gates.dtype.element_ty), mask=mask)
        tl.store(out + 3 * H, o.to(gates.dtype.element_ty), mask=mask)
        tl.store(tanh_c + r * tanh_c_stride + j, tanh_c_new.to(tanh_c.dtype.element_ty), mask=mask)


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
    g_in = gates + r * gates_stride + j
    i = tl.load(g_in, mask=mask, other=0.0).to(tl.float32)
    f = tl.load(g_in + H, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_in + 2 * H, mask=mask, other=0.0).to(tl.float32)
    o = tl.load(g_in + 3 * H, mask=mask, other=0.0).to(tl.float32)
    tc = tl.load(tanh_c + r * tanh_c_stride + j, mask=mask, other=0.0).to(tl.float32)
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
    rows,
    H,
    COUPLED: tl.constexpr,
    KEEP: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """The cell variants' step without layer norm (``lstm_variants.c``'s equations): peepholes (zeros
    when off), coupled gates, zoneout's d (``keep_*``, 0 when off; row stride 0 repeats one row)::

        f = σ(pre_f + w_cf·C_prev)   i = σ(pre_i + w_ci·C_prev), or 1 − f   C̃_t = f·C_prev + i·tanh(pre_C̃)
        o = σ(pre_o + w_co·C̃_t)      C = d_C·C_prev + (1 − d_C)·C̃_t      h = d_h·h_prev + (1 − d_h)·o·tanh(C̃_t)

    writes C̃_t (``c_tilde`` may be ``c``), C, h and with ``KEEP`` the gates and tanh(C̃_t)."""
    r, j, mask = _tile(rows, H, BLOCK_R, BLOCK_H)
    units = j < H
    p = pre + r * pre_stride + j
    cp = tl.load(c_prev + r * c_prev_stride + j, mask=mask, other=0.0).to(tl.float32)
    w_ci = tl.load(peepholes + j, mask=units, other=0.0).to(tl.float32)
    w_cf = tl.load(peepholes + H + j, mask=units, other=0.0).to(tl.float32)
    w_co = tl.load(peepholes + 2 * H + j, mask=units, other=0.0).to(tl.float32)
    f = _sigmoid(tl.load(p + H, mask=mask, other=0.0).to(tl.float32) + w_cf * cp)
    if COUPLED:
        i = 1.0 - f
    else:
        i = _sigmoid(tl.load(p, mask=mask, other=0.0).to(tl.float32) + w_ci * cp)
    g = _tanh(tl.load(p + 2 * H, mask=mask, other=0.0).to(tl.float32))
    ct = f * cp + i * g
    o = _sigmoid(tl.load(p + 3 * H, mask=mask, other=0.0).to(tl.float32) + w_co * ct)
    tc = _tanh(ct)
    kc = tl.load(keep_c + r * keep_c_stride + j, mask=mask, other=0.0).to(tl.float32)
    kh = tl.load(keep_h + r * keep_h_stride + j, mask=mask, other=0.0).to(tl.float32)
    hp = tl.load(h_prev + r * h_prev_stride + j, mask=mask, other=0.0).to(tl.float32)
    tl.store(c_tilde + r * c_tilde_stride + j, ct.to(c_tilde.dtype.element_ty), mask=mask)
    tl.store(c + r * c_stride + j, (kc * cp + (1.0 - kc) * ct).to(c.dtype.element_ty), mask=mask)
    tl.store(h + r * h_stride + j, (kh * hp + (1.0 - kh) * (o * tc)).to(h.dtype.element_ty), mask=mask)
    if KEEP:
        out = gates + r * gates_stride + j
        tl.store(out, i.to(gates.dtype.element_ty), mask=mask)
        tl.store(out + H, f.to(gates.dtype.element_ty), mask=mask)
        tl.store(out + 2 * H, g.to(gates.dtype.element_ty), mask=mask)
        tl.store(out + 3 * H, o.to(gates.dtype.element_ty), mask=mask)
        tl.store(tanh_c + r * tanh_c_stride + j, tc.to(tanh_c.dtype.element_ty), mask=mask)


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
    rows,
    H,
    COUPLED: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """`variant_forward_kernel`'s backward (``lstm_variants.c``'s, without layer norm): writes dL/dpre,
    adds the gradients reaching C_prev and (through zoneout) h_prev to ``dc_prev`` and ``dh_prev``."""
    r, j, mask = _tile(rows, H, BLOCK_R, BLOCK_H)
    units = j < H
    g_in = gates + r * gates_stride + j
    i = tl.load(g_in, mask=mask, other=0.0).to(tl.float32)
    f = tl.load(g_in + H, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_in + 2 * H, mask=mask, other=0.0).to(tl.float32)
    o = tl.load(g_in + 3 * H, mask=mask, other=0.0).to(tl.float32)
    tc = tl.load(tanh_c + r * tanh_c_stride + j, mask=mask, other=0.0).to(tl.float32)
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
    dct = (1.0 - kc) * dc_in + dh_new * o * (1.0 - tc * tc) + d_o * w_co
    d_input = dct * g
    if COUPLED:
        d_forget = dct * cp - d_input  # i = 1 − f
        d_i = 0.0 * d_input
    else:
        d_forget = dct * cp
        d_i = d_input * i * (1.0 - i)
    d_f = d_forget * f * (1.0 - f)
    out = grad_pre + r * grad_pre_stride + j
    out_type = grad_pre.dtype.element_ty
    tl.store(out, d_i.to(out_type), mask=mask)
    tl.store(out + H, d_f.to(out_type), mask=mask)
    tl.store(out + 2 * H, (dct * i * (1.0 - g * g)).to(out_type), mask=mask)
    tl.store(out + 3 * H, d_o.to(out_type), mask=mask)
    dcp = dc_prev + r * dc_prev_stride + j
    total = tl.load(dcp, mask=mask, other=0.0).to(tl.float32) + kc * dc_in + dct * f + d_i * w_ci + d_f * w_cf
    tl.store(dcp, total.to(dc_prev.dtype.element_ty), mask=mask)
    dhp = dh_prev + r * dh_prev_stride + j
    tl.store(
        dhp, (tl.load(dhp, mask=mask, other=0.0).to(tl.float32) + kh * dh_in).to(dh_prev.dtype.element_ty), mask=mask
    )
