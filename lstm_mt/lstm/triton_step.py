"""The LSTM cell's point-wise step on CUDA: one Triton kernel forward, one backward (`triton_kernels`).

Why: after its matrix product, a step of the cell is a dozen small tensor operations
(sigmoids, tanh, products, sums); on a GPU each is a kernel launch of a few microseconds
over a few hundred kilobytes, so a step is bound by launches, not arithmetic. The kernels
take the gates, C and h (and their gradients) in one launch each, with the same
equations as `lstm_step`. This is the CUDA counterpart of `lstm_mt.lstm.native` (C, CPU) and
has the same calling convention: `forward` and `backward` return False, touching
nothing, where they do not apply, and the caller then runs the tensor operations. The cell
variants' step (peepholes, coupled gates, zoneout, layer norm with a whole row per program) is
likewise one launch each way, `variant_forward` and `variant_backward`, with `native`'s keyword
contract; it is checked by `lstm_mt.lstm.variant_pointwise` against its tensor operations on
first use.

Triton is optional (``pip install 'lstm-mt[gpu]'``); it is imported on first use, and on
each device the kernels are first run once on random input and checked against PyTorch in
float64: if they fail to compile or disagree, a warning is logged and the tensor operations
run there. ``LSTM_MT_TRITON=0`` switches them off. They run for tensors on the device types
in `DEVICE_TYPES` (CUDA); tests add ``"cpu"`` and set ``TRITON_INTERPRET=1`` before Triton is
imported, so Triton's interpreter runs the same kernels on CPU tensors. Inputs may be
float32, bfloat16 or float16, each in its own dtype: arithmetic is float32 inside the kernel.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from types import ModuleType

import torch
from torch import Tensor

from lstm_mt.lstm.equations import lstm_step
from lstm_mt.lstm.variants import LAYER_NORM_EPS

__all__ = [
    "VARIANT_LAYER_NORM",
    "DEVICE_TYPES",
    "agrees_with_torch",
    "available",
    "backward",
    "forward",
    "only_on",
    "usable",
    "variant_backward",
    "variant_forward",
]

log = logging.getLogger(__name__)

VARIANT_LAYER_NORM: bool = True  # whether variant_forward/variant_backward take the layer-norm fields

DEVICE_TYPES = {"cuda"}  # the kernels take tensors on these device types only
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
TILE = 1024  # elements per program: rows × units


def available() -> bool:
    """Whether Triton is installed and not switched off (the kernels compile on first launch)."""
    return _kernels() is not None


def usable(*tensors: Tensor) -> bool:
    """Whether the kernels take these tensors: matrices with contiguous rows in a supported
    dtype, on a device in `DEVICE_TYPES` where the kernels passed their check."""
    return (
        bool(tensors)
        and all(t.device.type in DEVICE_TYPES and _fits(t) for t in tensors)
        and _works_on(tensors[0].device, tensors[0].dtype)
    )


@contextmanager
def only_on(*device_types: str) -> Iterator[None]:
    """Inside the block, the kernels take tensors on these device types only; with none, the
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
    tensors = (pre, c_prev, c, h) if gates is None or tanh_c is None else (pre, c_prev, c, h, gates, tanh_c)
    checked = _arguments(c, tensors, (4, 1, 1, 1, 4, 1))
    if checked is None or not _works_on(checked[0], pre.dtype):
        return False
    rows, hidden = c.shape
    _launch_forward(checked[1], rows, hidden, keep=len(tensors) == 6)
    return True


def backward(
    gates: Tensor, tanh_c: Tensor, c_prev: Tensor, dh: Tensor, dc: Tensor, grad_pre: Tensor, dc_prev: Tensor
) -> bool:
    """One step's backward: writes ``grad_pre = dL/dpre`` and adds the gradient reaching C_prev to ``dc_prev``.

    ``dh`` and ``dc`` are the gradients arriving at the step's h and C. Returns False,
    touching nothing, where the kernel does not apply.
    """
    checked = _arguments(dh, (gates, tanh_c, c_prev, dh, dc, grad_pre, dc_prev), (4, 1, 1, 1, 1, 4, 1))
    if checked is None or not _works_on(checked[0], gates.dtype):
        return False
    rows, hidden = dh.shape
    _launch_backward(checked[1], rows, hidden)
    return True


def variant_forward(coupled: bool, **tensors: Tensor | None) -> bool:
    """The cell variants' step, with `lstm_mt.lstm.native.variant_forward`'s keyword tensors (with layer norm
    ``pre`` is written, as there). Returns False, touching nothing, where it does not apply."""
    checked = _variant_arguments(tensors, _VARIANT_FORWARD, ignored=())
    if checked is None:
        return False
    arguments, flags, rows, hidden = checked
    if rows and hidden:
        grid, blocks = _launch_shape(rows, hidden, whole_rows=flags["LN_HH"] or flags["LN_C"])
        kernel = _loaded_kernels().variant_forward_kernel
        kernel[grid](*arguments, rows, hidden, COUPLED=coupled, EPS=LAYER_NORM_EPS, **flags, **blocks)
    return True


def variant_backward(coupled: bool, **tensors: Tensor | None) -> bool:
    """`variant_forward`'s backward, with `lstm_mt.lstm.native.variant_backward`'s keyword tensors. Returns False,
    touching nothing, where it does not apply."""
    checked = _variant_arguments(tensors, _VARIANT_BACKWARD, ignored=("c_tilde",))
    if checked is None:
        return False
    arguments, flags, rows, hidden = checked
    if rows and hidden:
        grid, blocks = _launch_shape(rows, hidden, whole_rows=flags["LN_HH"] or flags["LN_C"])
        _loaded_kernels().variant_backward_kernel[grid](*arguments, rows, hidden, COUPLED=coupled, **flags, **blocks)
    return True


_Field = tuple[str, int, int | None]  # name, width in units of H, plus a constant (None: a vector of width·H)
# The variant kernels' tensors in argument order, in groups that come whole or not at all (the flag a group
# sets, None for the group always given); a matrix of one row is repeated for every sequence.
_VARIANT_FORWARD: list[tuple[str | None, list[_Field]]] = [
    (
        None,
        [("pre", 4, 0), ("c_prev", 1, 0), ("h_prev", 1, 0), ("keep_c", 1, 0), ("keep_h", 1, 0), ("peepholes", 3, None)]
        + [("c_tilde", 1, 0), ("c", 1, 0), ("h", 1, 0)],
    ),
    ("KEEP", [("gates", 4, 0), ("tanh_c", 1, 0)]),
    ("LN_HH", [("x_in", 4, 0), ("rec", 4, 0), ("rec_hat", 4, 0), ("rec_rstd", 0, 4), ("gain_hh", 4, None)]),
    ("LN_C", [("c_hat", 1, 0), ("c_rstd", 0, 1), ("gain_c", 1, None), ("bias_c", 1, None)]),
]
_VARIANT_BACKWARD: list[tuple[str | None, list[_Field]]] = [
    (
        None,
        [
            ("gates", 4, 0),
            ("tanh_c", 1, 0),
            ("c_prev", 1, 0),
            ("keep_c", 1, 0),
            ("keep_h", 1, 0),
            ("peepholes", 3, None),
        ]
        + [("dh", 1, 0), ("dc", 1, 0), ("grad_pre", 4, 0), ("dc_prev", 1, 0), ("dh_prev", 1, 0)],
    ),
    ("LN_HH", [("rec_hat", 4, 0), ("rec_rstd", 0, 4), ("gain_hh", 4, None), ("grad_rec", 4, 0)]),
    ("LN_C", [("c_hat", 1, 0), ("c_rstd", 0, 1), ("gain_c", 1, None), ("d_shown", 1, 0)]),
]
MAX_WHOLE_ROW = 8192  # layer norm needs a whole row per program: wider rows are left to the tensor operations


def _variant_arguments(
    tensors: dict[str, Tensor | None], layout: list[tuple[str | None, list[_Field]]], ignored: tuple[str, ...]
) -> tuple[_Arguments, dict[str, bool], int, int] | None:
    """The variant kernels' arguments and flags, if each group of ``layout`` is given whole or not at all (and
    nothing else but ``ignored``), fits ``c_prev``'s ``[rows, H]`` on one device of `DEVICE_TYPES` (the current
    CUDA device) in dtypes the kernels take, and the kernels are there; else None. A group left out gets
    placeholders (``c`` or ``c_prev`` and the peepholes), never read."""
    given = {name for name, t in tensors.items() if t is not None}
    known = {field[0] for _, fields in layout for field in fields}
    state = tensors.get("c_prev")
    if given - known - set(ignored) or state is None or state.dim() != 2:
        return None
    index = _device_index(state)
    if index is None or _kernels() is None:
        return None
    rows, hidden = state.shape
    arguments: _Arguments = []
    flags: dict[str, bool] = {}
    for flag, fields in layout:
        present = [name in given for name, _, _ in fields]
        if flag is None and not all(present) or any(present) and not all(present):
            return None
        if flag is not None:
            flags[flag] = all(present)
        for name, per_hidden, extra in fields:
            t = tensors.get(name) if all(present) else (tensors["peepholes"] if extra is None else state)
            assert t is not None
            if t.dtype not in DTYPES or t.get_device() != index:
                return None
            if extra is None:
                if t is not tensors["peepholes"] and (t.shape != (per_hidden * hidden,) or t.stride() != (1,)):
                    return None
                arguments.append(t)
                continue
            stride = t.stride()
            width = per_hidden * hidden + extra if all(present) else hidden
            if t.dim() != 2 or t.shape[0] not in (rows, 1) or t.shape[1] != width or stride[-1] != 1:
                return None
            arguments += (t, stride[0] if t.shape[0] == rows else 0)
    peepholes = tensors["peepholes"]
    assert peepholes is not None
    if peepholes.shape != (3 * hidden,) or peepholes.stride() != (1,):
        return None
    if (flags.get("LN_HH") or flags.get("LN_C")) and _next_power_of_two(hidden) > MAX_WHOLE_ROW:
        return None
    return arguments, flags, rows, hidden


_Arguments = list  # the kernels' arguments: ``tensor, row stride`` for each tensor


def _launch_forward(arguments: _Arguments, rows: int, hidden: int, keep: bool) -> None:
    """`forward` on checked arguments: ``pre, c_prev, c, h`` and, to keep them, ``gates, tanh_c``."""
    if rows and hidden:
        if not keep:
            arguments = arguments + arguments[4:6] * 2  # any valid pointers: not written without KEEP
        grid, blocks = _launch_shape(rows, hidden)
        _loaded_kernels().lstm_forward_kernel[grid](*arguments, rows, hidden, KEEP=keep, **blocks)


def _launch_backward(arguments: _Arguments, rows: int, hidden: int) -> None:
    """`backward` on checked arguments."""
    if rows and hidden:
        grid, blocks = _launch_shape(rows, hidden)
        _loaded_kernels().lstm_backward_kernel[grid](*arguments, rows, hidden, **blocks)


def _fits(t: Tensor) -> bool:
    """A matrix with contiguous rows in a dtype the kernels read and write."""
    return t.dim() == 2 and t.dtype in DTYPES and t.stride(-1) == 1


def _arguments(
    state: Tensor, tensors: tuple[Tensor, ...], widths: tuple[int, ...]
) -> tuple[torch.device, _Arguments] | None:
    """The device and the kernel arguments, if every tensor is ``[rows, width·H]`` for ``state``
    ``[rows, H]`` (`_fits`) on the device of ``state``, whose type is in `DEVICE_TYPES` (and which is the
    current CUDA device); else None.
    The kernels trust these shapes. (Per step, so written for few tensor attribute calls.)"""
    index = _device_index(state)
    if index is None or state.dim() != 2:
        return None
    rows, hidden = state.shape
    arguments: _Arguments = []
    for t, width in zip(tensors, widths):
        stride = t.stride()
        if t.shape != (rows, width * hidden) or stride[-1] != 1 or t.dtype not in DTYPES or t.get_device() != index:
            return None
        arguments += (t, stride[0])
    return state.device, arguments


def _device_index(state: Tensor) -> int | None:
    """``state``'s device index (-1 on CPU) where the kernels may launch: a device type in `DEVICE_TYPES`, and
    for CUDA the current device (Triton launches there); else None."""
    if state.device.type not in DEVICE_TYPES:
        return None
    index = state.get_device()
    return None if index >= 0 and index != torch.cuda.current_device() else index


def _launch_shape(rows: int, hidden: int, whole_rows: bool = False) -> tuple[tuple[int, int], dict[str, int]]:
    """Tiles of about `TILE` elements, whole rows where H allows (or always, ``whole_rows``): the grid and the
    block sizes."""
    block_h = _next_power_of_two(hidden) if whole_rows else min(_next_power_of_two(hidden), TILE)
    block_r = max(1, min(TILE // block_h, _next_power_of_two(rows)))
    grid = (-(-rows // block_r), -(-hidden // block_h))
    return grid, {"BLOCK_R": block_r, "BLOCK_H": block_h}


def _next_power_of_two(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


@cache
def _kernels() -> ModuleType | None:
    """The kernel module, imported (with Triton) on first use; None without Triton or with ``LSTM_MT_TRITON=0``."""
    if os.environ.get("LSTM_MT_TRITON", "1") == "0" or importlib.util.find_spec("triton") is None:
        return None
    try:
        from lstm_mt.lstm import triton_kernels
    except Exception as error:  # a broken Triton install fails in many ways; the tensor operations still work
        log.warning("Triton unavailable (%s); the LSTM uses PyTorch operations", error)
        return None
    return triton_kernels


def _loaded_kernels() -> ModuleType:
    kernels = _kernels()
    if kernels is None:
        raise RuntimeError("Triton is not installed")
    return kernels


@cache
def _works_on(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the kernels compile and agree with PyTorch on ``device`` for ``dtype`` inputs; checked on first use."""
    if _kernels() is None or dtype not in DTYPES:
        return False
    try:
        # First use may come inside no_grad/inference_mode/autocast (a bf16 inference step): the check
        # differentiates its float64 reference, so it runs outside them.
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast("cpu", enabled=False):
            agrees = agrees_with_torch(device, dtype)
    except Exception as error:  # compilation and launch errors come in many types
        log.warning("Triton LSTM kernels fail on %s for %s (%s); using PyTorch operations", device, dtype, error)
        return False
    if not agrees:
        log.warning("Triton LSTM kernels disagree with PyTorch on %s for %s; using PyTorch operations", device, dtype)
    return agrees


_TOLERANCE = {
    torch.float32: 1e-5,
    torch.bfloat16: 5e-2,
    torch.float16: 5e-3,
}  # gradients from rounded gates: ~1% in bf16


def agrees_with_torch(device: torch.device, dtype: torch.dtype = torch.float32) -> bool:
    """Run both kernels on ``device`` on random ``dtype`` input with strided rows and compare with
    `lstm_step` and its gradients in float64: the check `usable` makes once per device and dtype.
    Raises what the kernels raise (a failed compilation, say)."""
    generator = torch.Generator().manual_seed(0)
    rows, hidden = 9, 37
    wide = [torch.randn(rows, width + 3, generator=generator) for width in (4 * hidden, hidden, hidden, hidden)]
    wide[0] *= 4  # pre-activations well into the saturated range
    on = [w.to(device, dtype)[:, : w.shape[1] - 3] for w in wide]  # pre, c_prev, dh, dc: rows with a gap between
    pre, c_prev, dh, dc = (t.cpu().double() for t in on)

    pre.requires_grad_(), c_prev.requires_grad_()
    h_ref, c_ref, gates_ref = lstm_step(pre, c_prev)
    grad_pre_ref, dc_prev_ref = torch.autograd.grad((h_ref * dh).sum() + (c_ref * dc).sum(), [pre, c_prev])

    c, h, tanh_c = (torch.empty(rows, hidden, device=device, dtype=dtype) for _ in range(3))
    gates, grad_pre = (torch.empty(rows, 4 * hidden, device=device, dtype=dtype) for _ in range(2))
    dc_prev = torch.ones(rows, hidden, device=device, dtype=dtype)
    with only_on(device.type):
        forward_arguments = _arguments(c, (on[0], on[1], c, h, gates, tanh_c), (4, 1, 1, 1, 4, 1))
        backward_arguments = _arguments(
            on[2], (gates, tanh_c, on[1], on[2], on[3], grad_pre, dc_prev), (4, 1, 1, 1, 1, 4, 1)
        )
    assert forward_arguments is not None and backward_arguments is not None
    _launch_forward(forward_arguments[1], rows, hidden, keep=True)
    _launch_backward(backward_arguments[1], rows, hidden)
    checks = [
        (c, c_ref),
        (h, h_ref),
        (gates, torch.cat(gates_ref, 1)),
        (tanh_c, c_ref.tanh()),
        (grad_pre, grad_pre_ref),
        (dc_prev, 1 + dc_prev_ref),
    ]
    tolerance = _TOLERANCE[dtype]
    return all(
        torch.allclose(got.cpu().double(), want.detach(), rtol=tolerance, atol=tolerance) for got, want in checks
    )
