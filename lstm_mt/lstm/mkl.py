"""Matrix products on MKL's packed GEMM, the BLAS that PyTorch's x86 wheels carry inside ``libtorch_cpu``.

Why: inference multiplies the same ``W_h`` at every step of a layer. MKL can keep a weight in a
layout of its own (``cblas_sgemm_pack``) and multiply by it (``cblas_sgemm_compute``); on the
2-core Xeon of README's tables that product is 11 % faster than oneDNN's packed linear at a step's
shape (64 rows, H=512) and 17 % faster for a layer's input projection. The whole inference
recurrence then runs in C (`lstm_mt.lstm.native.layer_forward`), which calls the product through
`product_address`.

PyTorch exports these functions where it links MKL (its x86 Linux and Windows wheels); where it
does not (ARM, macOS) or where they fail a known answer, `available` says no and inference keeps
oneDNN's products. A packed weight is valid for any row count: the pack is sized by the weight alone.

MKL picks its fastest kernels on Intel CPUs only; on the AMD EPYC of README's first tables its
products measured 35 % slower than oneDNN's. So `preferred` says yes on Intel CPUs, and
``LSTM_MT_MKL=1`` (use it on any CPU, e.g. to measure it) or ``LSTM_MT_MKL=0`` (never) decide instead.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

from lstm_mt.lstm.weight_cache import PackedWeights

__all__ = ["available", "linear", "packed", "preferred", "product_address"]

log = logging.getLogger(__name__)

# CBLAS enumerations (mkl_cblas.h)
ROW_MAJOR, NO_TRANSPOSE, TRANSPOSE, PACKED, B_MATRIX = 101, 111, 112, 151, 162
PACKED_FOR_ROWS = 64  # the row count MKL lays a pack out for; 1 would make a step's product of 64 rows 40 % slower


def available() -> bool:
    """Whether MKL's packed products are at hand and give a known answer (checked once)."""
    return _library() is not None


def preferred() -> bool:
    """Whether inference should multiply on MKL: `available`, and an Intel CPU unless ``LSTM_MT_MKL`` says."""
    choice = os.environ.get("LSTM_MT_MKL", "")
    if choice == "0" or not available():
        return False
    return choice == "1" or _intel_cpu()


@cache
def _intel_cpu() -> bool:
    try:
        return "GenuineIntel" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return "Intel" in platform.processor()


packed = PackedWeights(lambda joined: _pack(_checked_library(), joined))
"""``packed(*weights)``: the weights joined side by side in MKL's packed layout, as the ``B = Wᵀ`` of
``x @ W.T``, reused until one changes."""


def linear(x: Tensor, weight: Tensor, out_features: int, bias: Tensor | None = None) -> Tensor:
    """``x @ W.T + bias`` for contiguous float32 ``x`` ``[M, K]`` and ``weight`` from `packed`."""
    rows = x.shape[0]
    if bias is None:
        out = x.new_empty(rows, out_features)
    else:
        out = bias.expand(rows, out_features).clone(memory_format=torch.contiguous_format)  # a copy, even for one row
    _compute(_checked_library(), x, weight, out, 0.0 if bias is None else 1.0)
    return out


@cache
def product_address() -> int:
    """The address of ``cblas_sgemm_compute``, for C code that multiplies step by step."""
    address = ctypes.cast(_checked_library().cblas_sgemm_compute, ctypes.c_void_p).value
    assert address is not None
    return address


def _pack(library: ctypes.CDLL, weight: Tensor) -> Tensor:
    """Contiguous float32 ``weight`` ``[N, K]`` packed; the buffer must stay where it is (MKL's layout
    depends on its address)."""
    n, k = weight.shape
    m = PACKED_FOR_ROWS
    buffer = torch.empty((library.cblas_sgemm_pack_get_size(B_MATRIX, m, n, k) + 3) // 4)
    library.cblas_sgemm_pack(ROW_MAJOR, B_MATRIX, TRANSPOSE, m, n, k, 1.0, weight.data_ptr(), k, buffer.data_ptr())
    return buffer


def _compute(library: ctypes.CDLL, x: Tensor, weight: Tensor, out: Tensor, beta: float) -> None:
    (rows, k), n = x.shape, out.shape[1]
    if not (x.is_contiguous() and out.is_contiguous() and out.shape[0] == rows):
        raise ValueError("mkl.linear: x and out must be contiguous matrices with the same row count")
    library.cblas_sgemm_compute(
        ROW_MAJOR, NO_TRANSPOSE, PACKED, rows, n, k, x.data_ptr(), k, weight.data_ptr(), n, beta, out.data_ptr(), n
    )


def _checked_library() -> ctypes.CDLL:
    library = _library()
    if library is None:
        raise RuntimeError("MKL's packed GEMM is not available in this PyTorch build")
    return library


_INT, _FLOAT, _POINTER = ctypes.c_int, ctypes.c_float, ctypes.c_void_p  # MKL_INT is 32-bit in its LP64 interface
_SIGNATURES = {
    "cblas_sgemm_pack_get_size": ([_INT] * 4, ctypes.c_size_t),
    "cblas_sgemm_pack": ([_INT] * 6 + [_FLOAT, _POINTER, _INT, _POINTER], None),
    "cblas_sgemm_compute": ([_INT] * 6 + [_POINTER, _INT, _POINTER, _INT, _FLOAT, _POINTER, _INT], None),
}


@cache
def _library() -> ctypes.CDLL | None:
    """PyTorch's CPU library with the MKL functions typed, if it exports them and they compute right."""
    paths = sorted((Path(torch.__file__).parent / "lib").glob("libtorch_cpu.*"))
    try:
        library = ctypes.CDLL(str(paths[0]))
        for name, (arguments, result) in _SIGNATURES.items():
            function = getattr(library, name)
            function.argtypes, function.restype = arguments, result
    except (IndexError, OSError, AttributeError):
        log.info("MKL's packed GEMM not found in this PyTorch build; inference uses oneDNN's products")
        return None
    if not _gives_known_answer(library):
        log.warning("MKL's packed GEMM disagrees with PyTorch here; inference uses oneDNN's products")
        return None
    return library


def _gives_known_answer(library: ctypes.CDLL) -> bool:
    """Pack a random weight once and multiply row counts other than the pack's, as the recurrence does."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(37, 29, generator=generator)
    buffer = _pack(library, weight)
    for rows in (1, 5, 70):
        x, base = torch.randn(rows, 29, generator=generator), torch.randn(rows, 37, generator=generator)
        out = base.clone()
        _compute(library, x, buffer, out, 1.0)
        want = (base.double() + x.double() @ weight.double().T).float()
        if not torch.allclose(out, want, rtol=1e-5, atol=1e-4):
            return False
    return True
