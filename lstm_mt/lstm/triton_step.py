"""The LSTM cell's point-wise step on CUDA: one Triton kernel forward, one backward (`triton_kernels`).

Why: after its matrix product, a step of the cell is a dozen small tensor operations
(sigmoids, tanh, products, sums); on a GPU each is a kernel launch of a few microseconds
over a few hundred kilobytes, so a step is bound by launches, not arithmetic. The kernels
take the gates, C and h (and their gradients) in one launch each, with the same
equations as `lstm_step`. This is the CUDA counterpart of `lstm_mt.native` (C, CPU) and
has the same calling convention: `forward` and `backward` return False, touching
nothing, where they do not apply, and the caller then runs the tensor operations.

Triton is optional (``pip install 'lstm-mt[gpu]'``); it is imported on first use. The
kernels run for tensors on the device types in `DEVICE_TYPES` (CUDA); tests add ``"cpu"``
and set ``TRITON_INTERPRET=1`` before Triton is imported, so Triton's interpreter runs the
same kernels on CPU tensors. Inputs may be float32, bfloat16 or float16, each in its own
dtype: arithmetic is float32 inside the kernel.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from types import ModuleType

import torch
from torch import Tensor

__all__ = ["DEVICE_TYPES", "available", "backward", "forward", "only_on", "usable"]

DEVICE_TYPES = {"cuda"}  # where `usable` sends work to the kernels
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
TILE = 1024  # elements per program: rows × units


def available() -> bool:
    """Whether Triton is installed (the kernels compile on first launch)."""
    return _kernels() is not None


def usable(*tensors: Tensor) -> bool:
    """Whether the kernels take these tensors: matrices with contiguous rows in a supported
    dtype, on a device in `DEVICE_TYPES`, with Triton installed."""
    return all(t.device.type in DEVICE_TYPES and _fits(t) for t in tensors) and available()


@contextmanager
def only_on(*device_types: str) -> Iterator[None]:
    """Inside the block, `usable` accepts tensors on these device types only; with none, the
    tensor operations run everywhere (to time them), with ``"cpu"`` the interpreter runs (tests)."""
    global DEVICE_TYPES
    saved, DEVICE_TYPES = DEVICE_TYPES, set(device_types)
    try:
        yield
    finally:
        DEVICE_TYPES = saved


def forward(
    pre: Tensor, c_prev: Tensor, c: Tensor, h: Tensor, gates: Tensor | None = None, tanh_c: Tensor | None = None
) -> bool:
    """One step from ``pre = W·[h, x] + b`` ``[B, 4H]``: writes ``c`` and ``h`` ``[B, H]``.

    With ``gates`` ``[B, 4H]`` and ``tanh_c`` ``[B, H]``, also writes i, f, C̃, o and tanh(C)
    for the backward pass. Returns False, touching nothing, where the kernel does not apply.
    """
    keep = gates is not None and tanh_c is not None
    tensors: tuple[Tensor, ...] = (pre, c_prev, c, h)
    if gates is not None and tanh_c is not None:
        tensors += (gates, tanh_c)
    if not _shapes_fit(c, tensors, (4, 1, 1, 1, 4, 1)):
        return False
    kernels = _kernels()
    if kernels is None:
        return False
    rows, hidden = c.shape
    if rows == 0 or hidden == 0:
        return True
    pointers = tensors if keep else (*tensors, c, c)  # unused when not keeping: any valid pointer
    grid, blocks = _launch_shape(rows, hidden)
    kernels.lstm_forward_kernel[grid](*_with_strides(pointers), rows, hidden, KEEP=keep, **blocks)
    return True


def backward(
    gates: Tensor, tanh_c: Tensor, c_prev: Tensor, dh: Tensor, dc: Tensor, grad_pre: Tensor, dc_prev: Tensor
) -> bool:
    """One step's backward: writes ``grad_pre = dL/dpre`` and adds the gradient reaching C_prev to ``dc_prev``.

    ``dh`` and ``dc`` are the gradients arriving at the step's h and C. Returns False,
    touching nothing, where the kernel does not apply.
    """
    tensors = (gates, tanh_c, c_prev, dh, dc, grad_pre, dc_prev)
    if not _shapes_fit(dh, tensors, (4, 1, 1, 1, 1, 4, 1)):
        return False
    kernels = _kernels()
    if kernels is None:
        return False
    rows, hidden = dh.shape
    if rows == 0 or hidden == 0:
        return True
    grid, blocks = _launch_shape(rows, hidden)
    kernels.lstm_backward_kernel[grid](*_with_strides(tensors), rows, hidden, **blocks)
    return True


def _fits(t: Tensor) -> bool:
    """A matrix with contiguous rows in a dtype the kernels read and write."""
    return t.dim() == 2 and t.dtype in DTYPES and t.stride(-1) == 1


def _shapes_fit(state: Tensor, tensors: tuple[Tensor, ...], widths: tuple[int, ...]) -> bool:
    """Every tensor is ``[rows, width·H]`` for ``state`` ``[rows, H]``, on one device (the kernels trust this)."""
    if state.dim() != 2:
        return False
    rows, hidden = state.shape
    return all(
        t.shape == (rows, width * hidden) and _fits(t) and t.device == state.device for t, width in zip(tensors, widths)
    )


def _launch_shape(rows: int, hidden: int) -> tuple[tuple[int, int], dict[str, int]]:
    """Tiles of about `TILE` elements, whole rows where H allows: the grid and the block sizes."""
    block_h = min(_next_power_of_two(hidden), TILE)
    block_r = min(TILE // block_h, _next_power_of_two(rows))
    grid = (-(-rows // block_r), -(-hidden // block_h))
    return grid, {"BLOCK_R": block_r, "BLOCK_H": block_h}


def _next_power_of_two(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _with_strides(tensors: tuple[Tensor, ...]) -> list[Tensor | int]:
    """``tensor, row stride`` for each tensor: the kernels' argument pairs."""
    return [item for t in tensors for item in (t, t.stride(0))]


@cache
def _kernels() -> ModuleType | None:
    """The kernel module, imported (with Triton) on first use; None without Triton."""
    if importlib.util.find_spec("triton") is None:
        return None
    from lstm_mt.lstm import triton_kernels

    return triton_kernels
