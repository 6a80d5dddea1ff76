"""The float32 point-wise kernel for bf16 and fp16 CPU tensors: widen the inputs, run it, narrow the outputs.

Under autocast on CPU the LSTM's steps hold bf16 (or fp16) tensors, which the C kernel
(`lstm_mt.lstm.native`, float32 only) does not take; without this, each step would run as a
dozen PyTorch operations in bf16, every one converting to float32 and back inside. Here the
step's inputs are converted to float32 once, the C kernel takes the gates, C and h (or their
gradients) in one pass, and the outputs are rounded back once. The arithmetic is float32
throughout, so the results are those of the float32 step rounded to the tensors' dtype.

A `lstm_mt.lstm.pointwise.PointwiseKernel`, registered after the C and Triton kernels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstm_mt.lstm import native

NARROW = (torch.bfloat16, torch.float16)


def usable(*tensors: Tensor) -> bool:
    """Whether these are CPU bf16/fp16 matrices with contiguous rows and the C kernel is available."""
    return all(_narrow_cpu_rows(t) for t in tensors) and native.available()


def forward(
    pre: Tensor, c_prev: Tensor, c: Tensor, h: Tensor, gates: Tensor | None = None, tanh_c: Tensor | None = None
) -> bool:
    """`native.forward` for narrow tensors; False, touching nothing, where it does not apply."""
    outputs = [c, h] if gates is None or tanh_c is None else [c, h, gates, tanh_c]
    if not usable(pre, c_prev, *outputs):
        return False
    wide = [torch.empty(t.shape, dtype=torch.float32) for t in outputs]
    if not native.forward(pre.float(), c_prev.float(), *wide):
        return False
    for narrow, result in zip(outputs, wide):
        narrow.copy_(result)
    return True


def backward(
    gates: Tensor, tanh_c: Tensor, c_prev: Tensor, dh: Tensor, dc: Tensor, grad_pre: Tensor, dc_prev: Tensor
) -> bool:
    """`native.backward` for narrow tensors; False, touching nothing, where it does not apply."""
    if not usable(gates, tanh_c, c_prev, dh, dc, grad_pre, dc_prev):
        return False
    wide_grad_pre, wide_dc_prev = torch.empty(grad_pre.shape, dtype=torch.float32), dc_prev.float()
    wide_gates, wide_tanh_c, wide_c_prev, wide_dh, wide_dc = (t.float() for t in (gates, tanh_c, c_prev, dh, dc))
    if not native.backward(wide_gates, wide_tanh_c, wide_c_prev, wide_dh, wide_dc, wide_grad_pre, wide_dc_prev):
        return False
    grad_pre.copy_(wide_grad_pre)
    dc_prev.copy_(wide_dc_prev)
    return True


def _narrow_cpu_rows(t: Tensor) -> bool:
    return t.dtype in NARROW and t.is_cpu and t.dim() == 2 and t.stride(-1) == 1
