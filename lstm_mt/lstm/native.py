"""The LSTM cell's point-wise step compiled from C (``lstm_mt/lstm/csrc/``), for CPU float32.

Why: after its matrix product, a step of the cell is a dozen small tensor operations
(sigmoids, tanh, products, sums), each a PyTorch kernel with its own pass over memory and
its own dispatch cost; on a 2-core CPU they cost a layer 10-20% of its time. The C files
take the same equations element by element in one pass: ``lstm_cell.c`` the plain cell's
(`forward`, `backward`; and `layer_forward`, a whole inference layer, its products on MKL),
``lstm_variants.c`` the cell variants' (`variant_forward`, `variant_backward`, called by
`lstm_mt.lstm.variant_pointwise`), built into one library. Built with FMAs and, on x86, 512-bit
vectors where the CPU has them: the point-wise step then takes half the time (2.15 -> 1.03 ms for
30 steps of 64 x 512 on the Xeon of README).

The kernel is built the first time it is needed, with the C compiler named by ``$CC`` or
found as ``cc``/``gcc``/``clang``, into ``$LSTM_MT_CACHE`` (default ``~/.cache/lstm_mt``),
keyed by the sources, compiler and CPU; then the plain kernel is checked against PyTorch on random input. It
is used only when all of that worked: without a compiler, on a failed build or check, or
with ``LSTM_MT_NATIVE=0``, `forward` and `backward` return False and the caller runs the
tensor operations instead.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

from lstm_mt.errors import LstmMtError
from lstm_mt.files import atomic_path

__all__ = [
    "VARIANT_LAYER_NORM",
    "available",
    "backward",
    "bernoulli16_fill",
    "block_norm_backward",
    "block_norm_forward",
    "column_dot",
    "forward",
    "LayerVariant",
    "layer_forward",
    "usable",
    "variant_backward",
    "variant_forward",
]

log = logging.getLogger(__name__)

VARIANT_LAYER_NORM: bool = True  # whether variant_forward/variant_backward take the layer-norm fields

CSRC = Path(__file__).with_name("csrc")
SOURCES = [CSRC / "lstm_cell.c", CSRC / "lstm_variants.c"]
HEADERS = [CSRC / "fastmath.h"]
FLAGS = ["-O3", "-march=native", "-std=c11", "-shared", "-fPIC", "-ffp-contract=fast"]  # ISO C alone forbids FMAs
if platform.machine().lower() in ("x86_64", "amd64"):
    FLAGS.append("-mprefer-vector-width=512")  # GCC keeps to 256-bit vectors on AVX-512 CPUs unless told
OPENMP = "-fopenmp"  # rows in parallel; without it (a compiler lacking OpenMP) the kernel runs on one thread
_SIGNATURES = {  # argument count of each exported function: (rows, H) then (pointer, stride) pairs
    "lstm_cell_forward": 4,
    "lstm_cell_forward_keep": 6,
    "lstm_cell_backward": 7,
}
_LOCK = threading.Lock()


def available() -> bool:
    """Whether the compiled kernel is in use (built, loaded and checked); builds it on first call."""
    return _library() is not None


def usable(*tensors: Tensor) -> bool:
    """Whether the kernel can take these tensors: CPU float32 matrices with contiguous rows."""
    return all(t.dim() == 2 and _float32_cpu_rows(t) for t in tensors) and available()


def forward(
    pre: Tensor, c_prev: Tensor, c: Tensor, h: Tensor, gates: Tensor | None = None, tanh_c: Tensor | None = None
) -> bool:
    """One step from ``pre = W·[h, x] + b`` ``[B, 4H]``: writes ``c`` and ``h`` ``[B, H]``.

    With ``gates`` ``[B, 4H]`` and ``tanh_c`` ``[B, H]``, also writes i, f, C̃, o and tanh(C)
    for the backward pass. Returns False, touching nothing, where the kernel does not apply.
    """
    if gates is None:
        return _run("lstm_cell_forward", c, (pre, c_prev, c, h), (4, 1, 1, 1))
    if tanh_c is None:
        raise ValueError("native.forward: gates and tanh_c go together")
    return _run("lstm_cell_forward_keep", c, (pre, c_prev, c, h, gates, tanh_c), (4, 1, 1, 1, 4, 1))


def backward(
    gates: Tensor, tanh_c: Tensor, c_prev: Tensor, dh: Tensor, dc: Tensor, grad_pre: Tensor, dc_prev: Tensor
) -> bool:
    """One step's backward: writes ``grad_pre = dL/dpre`` and adds the gradient reaching C_prev to ``dc_prev``.

    ``dh`` and ``dc`` are the gradients arriving at the step's h and C. Returns False,
    touching nothing, where the kernel does not apply.
    """
    tensors = (gates, tanh_c, c_prev, dh, dc, grad_pre, dc_prev)
    return _run("lstm_cell_backward", dh, tensors, (4, 1, 1, 1, 1, 4, 1))


def variant_forward(coupled: bool, **tensors: Tensor | None) -> bool:
    """One step of the cell variants' point-wise equations (``lstm_variants.c``), keyword tensors as its
    ``variant_forward_t`` fields (``[rows, width]``; ``[1, width]`` is one row for every sequence).

    Always given: ``pre``, ``c_prev``, ``h_prev``, ``keep_c``, ``keep_h`` (zoneout's d, zero when
    off), ``peepholes`` (zeros when off), outputs ``c_tilde`` (may be ``c``), ``c``, ``h``.
    Training adds ``gates`` (may be ``pre``) and ``tanh_c``; layer norm of the recurrent product
    ``gain_hh``, ``x_in``, ``rec`` and outputs ``rec_hat``, ``rec_rstd`` (``pre`` is then written);
    of C ``gain_c``, ``bias_c`` and outputs ``c_hat``, ``c_rstd``. Returns False, touching
    nothing, where the kernel does not take the tensors.
    """
    return _run_variant("lstm_variant_forward", coupled, tensors)


def variant_backward(coupled: bool, **tensors: Tensor | None) -> bool:
    """One step's backward of `variant_forward`, keyword tensors as ``variant_backward_t``'s fields.

    Always given: the saved ``gates``, ``c_tilde``, ``tanh_c``, ``c_prev``, ``keep_c``, ``keep_h``,
    ``peepholes``; the incoming ``dh``, ``dc``; outputs ``grad_pre``, and ``dc_prev``, ``dh_prev`` (added
    to). Layer norm of the recurrent product adds ``gain_hh``, ``rec_hat``, ``rec_rstd`` and the
    output ``grad_rec``; of C ``gain_c``, ``c_hat``, ``c_rstd`` and the output ``d_shown``.
    Returns False, touching nothing, where the kernel does not take the tensors.
    """
    return _run_variant("lstm_variant_backward", coupled, tensors)


def block_norm_forward(x: Tensor, gain: Tensor, bias: Tensor | None, y: Tensor, hat: Tensor, rstd: Tensor) -> bool:
    """Layer norm of each gate block of every row of ``x`` ``[rows, blocks·H]`` with ``gain`` (and ``bias``)
    ``[blocks·H]``: writes ``hat = (x − mean)/σ``, ``y = gain·hat + bias`` and 1/σ to ``rstd`` ``[rows, blocks]``.

    Returns False, touching nothing, where the kernel does not take the tensors (all contiguous).
    """
    rows, blocks = rstd.shape if rstd.dim() == 2 else (0, 0)
    width = x.shape[-1]
    fits = blocks > 0 and width % blocks == 0 and _contiguous(x, y, hat, rstd, gain, *(() if bias is None else (bias,)))
    vectors = [gain] if bias is None else [gain, bias]
    if not fits or any(t.shape != (rows, width) for t in (x, y, hat)) or any(v.shape != (width,) for v in vectors):
        return False
    return _call_plain("lstm_block_norm_forward", rows, width // blocks, blocks, x, gain, bias, y, hat, rstd)


def block_norm_backward(dy: Tensor, hat: Tensor, rstd: Tensor, gain: Tensor, dx: Tensor) -> bool:
    """`block_norm_forward`'s backward: writes ``dx`` from ``dy`` (the gradient of ``y``), without the gain's
    and bias's gradients. Returns False, touching nothing, where the kernel does not take the tensors."""
    rows, blocks = rstd.shape if rstd.dim() == 2 else (0, 0)
    width = dy.shape[-1]
    fits = blocks > 0 and width % blocks == 0 and _contiguous(dy, hat, rstd, gain, dx)
    if not fits or any(t.shape != (rows, width) for t in (dy, hat, dx)) or gain.shape != (width,):
        return False
    return _call_plain("lstm_block_norm_backward", rows, width // blocks, blocks, dy, hat, rstd, gain, dx)


def column_dot(a: Tensor, b: Tensor, out: Tensor) -> bool:
    """``out += Σ over rows of a * b`` for ``[rows, width]`` matrices and ``out`` ``[width]``, in one pass.

    Returns False, touching nothing, where the kernel does not take the tensors (all contiguous).
    """
    if a.dim() != 2 or b.shape != a.shape or out.shape != a.shape[1:] or not _contiguous(a, b, out):
        return False
    return _call_plain("lstm_column_dot", a.shape[0], a.shape[1], a, b, out)


def bernoulli16_fill(out: Tensor, p: float, seed: int) -> bool:
    """Fill contiguous CPU float32 ``out`` with 0/1, each 1 with probability round(p·2¹⁶)/2¹⁶, from ``seed``
    (a counter-based hash: the same seed gives the same mask on any thread count).

    Returns False, touching nothing, where the kernel does not take the tensor.
    """
    if not _contiguous(out):
        return False
    return _call_plain("lstm_bernoulli16_fill", out.numel(), seed % 2**64, round(p * 2**16), out)


_PLAIN_ARGUMENTS = {  # the whole-buffer functions: sizes, then pointers to contiguous tensors
    "lstm_layer_forward": [ctypes.c_void_p]
    + 4 * [ctypes.c_int64]
    + 7 * [ctypes.c_void_p]
    + [ctypes.c_int64]
    + 4 * [ctypes.c_void_p],
    "lstm_block_norm_forward": 3 * [ctypes.c_int64] + 6 * [ctypes.c_void_p],
    "lstm_block_norm_backward": 3 * [ctypes.c_int64] + 5 * [ctypes.c_void_p],
    "lstm_column_dot": 2 * [ctypes.c_int64] + 3 * [ctypes.c_void_p],
    "lstm_bernoulli16_fill": [ctypes.c_int64, ctypes.c_uint64, ctypes.c_int64, ctypes.c_void_p],
}


@dataclass(frozen=True)
class LayerVariant:
    """A variant cell's constants for `layer_forward` in evaluation: CIFG, peephole weights ``[3H]``
    (zeros when off), zoneout's probabilities for C and h as ``[1, H]`` rows (zeros when off)."""

    coupled: bool
    peepholes: Tensor
    keep_c: Tensor
    keep_h: Tensor

    def fits(self, hidden: int) -> bool:
        """Whether the tensors are contiguous CPU float32 of the shapes above for ``hidden`` units."""
        shapes = ((self.peepholes, (3 * hidden,)), (self.keep_c, (1, hidden)), (self.keep_h, (1, hidden)))
        return all(t.shape == shape for t, shape in shapes) and _contiguous(self.peepholes, self.keep_c, self.keep_h)


def layer_forward(
    x: Tensor,
    packed_weights: tuple[Tensor, Tensor],
    product: int,
    bias: Tensor | None,
    h0: Tensor,
    c0: Tensor,
    batch_sizes: Sequence[int],
    h0_is_zero: bool,
    variant: LayerVariant | None = None,
) -> tuple[Tensor, Tensor] | None:
    """Every step's ``h`` and ``C`` ``[T, B, H]`` over ``x`` ``[T, B, I]``, zero on padding, in one call
    (``lstm_layer_forward``): the inference recurrence without a Python step.

    ``packed_weights``: ``W_x`` and ``W_h`` packed by `lstm_mt.lstm.mkl`, whose product ``product`` is the
    address of; ``bias`` ``[4H]`` (or None); ``h0``, ``c0`` ``[B, H]``; ``batch_sizes`` as `run_layer`'s;
    ``variant``: a variant cell's step instead of the plain one. None, touching nothing, where the kernel
    does not take the tensors (contiguous CPU float32).
    """
    steps, batch, input_size = x.shape
    hidden = h0.shape[-1]
    vectors = () if bias is None else (bias,)
    if h0.shape != (batch, hidden) or c0.shape != h0.shape or len(batch_sizes) != steps:
        return None
    if not _contiguous(x, h0, c0, *packed_weights, *vectors) or (bias is not None and bias.shape != (4 * hidden,)):
        return None
    if variant is not None and not variant.fits(hidden):
        return None
    pre, hs, cs = (
        x.new_empty(steps, batch, 4 * hidden),
        x.new_empty(steps, batch, hidden),
        x.new_empty(steps, batch, hidden),
    )
    sizes = torch.tensor(batch_sizes, dtype=torch.int64)
    step = None
    if variant is not None:
        step = _VARIANT_ARGUMENTS["lstm_variant_forward"](H=hidden, coupled=int(variant.coupled))
        step.peepholes, step.keep_c, step.keep_h = (
            t.data_ptr() for t in (variant.peepholes, variant.keep_c, variant.keep_h)
        )
    w_ih, w_hh = packed_weights
    arguments = (steps, batch, input_size, hidden, sizes, x, w_ih, w_hh, bias, h0, c0, int(h0_is_zero), pre, hs, cs)
    step_pointer = None if step is None else ctypes.addressof(step)
    return (hs, cs) if _call_plain("lstm_layer_forward", product, *arguments, step_pointer) else None


def _contiguous(*tensors: Tensor) -> bool:
    return all(t.dtype is torch.float32 and t.is_cpu and t.is_contiguous() for t in tensors)


def _call_plain(name: str, *args: int | Tensor | None) -> bool:
    """``name(*args)`` with tensors passed as their data pointers (int64 ones too); False when the library is not built."""
    library = _library()
    if library is None:
        return False
    getattr(library, name)(*(a.data_ptr() if isinstance(a, Tensor) else a for a in args))
    return True


# Each variant function's struct fields after (rows, H, coupled), in lstm_variants.c's order: vectors
# (a pointer; width in units of H) and row matrices (rows_t: pointer and row stride; width as (units of H, plus
# a constant)).
_VARIANT_FIELDS: dict[str, tuple[dict[str, int], dict[str, tuple[int, int]]]] = {
    "lstm_variant_forward": (
        {"peepholes": 3, "gain_hh": 4, "gain_c": 1, "bias_c": 1},
        {
            **dict.fromkeys(["pre", "x_in", "rec", "rec_hat"], (4, 0)),
            **dict.fromkeys(["c_prev", "h_prev", "keep_c", "keep_h"], (1, 0)),
            "gates": (4, 0),
            **dict.fromkeys(["c_tilde", "tanh_c", "c", "h"], (1, 0)),
            "rec_rstd": (0, 4),
            "c_hat": (1, 0),
            "c_rstd": (0, 1),
        },
    ),
    "lstm_variant_backward": (
        {"peepholes": 3, "gain_hh": 4, "gain_c": 1},
        {
            "gates": (4, 0),
            **dict.fromkeys(["c_tilde", "tanh_c", "c_prev", "keep_c", "keep_h", "dh", "dc"], (1, 0)),
            "grad_pre": (4, 0),
            **dict.fromkeys(["dc_prev", "dh_prev", "d_shown", "c_hat"], (1, 0)),
            "c_rstd": (0, 1),
            "rec_hat": (4, 0),
            "rec_rstd": (0, 4),
            "grad_rec": (4, 0),
        },
    ),
}
_VARIANT_KNOWN = {name: vectors.keys() | rows.keys() for name, (vectors, rows) in _VARIANT_FIELDS.items()}
# Which fields must be given: those under None always, those under a field together with it.
_VARIANT_NEEDS: dict[str, dict[str | None, tuple[str, ...]]] = {
    "lstm_variant_forward": {
        None: ("peepholes", "pre", "c_prev", "h_prev", "keep_c", "keep_h", "c_tilde", "c", "h"),
        "gates": ("tanh_c",),
        "gain_hh": ("x_in", "rec", "rec_hat", "rec_rstd", "gates"),
        "gain_c": ("bias_c", "c_hat", "c_rstd", "gates"),
    },
    "lstm_variant_backward": {
        None: ("peepholes", "gates", "c_tilde", "tanh_c", "c_prev", "keep_c", "keep_h", "dh", "dc", "grad_pre")
        + ("dc_prev", "dh_prev"),
        "gain_hh": ("rec_hat", "rec_rstd", "grad_rec"),
        "gain_c": ("c_hat", "c_rstd", "d_shown"),
    },
}


def _variant_struct(name: str) -> type[ctypes.Structure]:
    """The C struct of ``name``'s arguments; each ``rows_t`` is spelled as its two members (data, stride)."""
    vectors, rows = _VARIANT_FIELDS[name]
    fields: list[tuple[str, type]] = [("rows", ctypes.c_int64), ("H", ctypes.c_int64), ("coupled", ctypes.c_int64)]
    fields += [(field, ctypes.c_void_p) for field in vectors]
    for field in rows:
        fields += [(field, ctypes.c_void_p), (field + "_stride", ctypes.c_int64)]
    return type(name, (ctypes.Structure,), {"_fields_": fields})


_VARIANT_ARGUMENTS = {name: _variant_struct(name) for name in _VARIANT_FIELDS}


def _run_variant(name: str, coupled: bool, tensors: dict[str, Tensor | None]) -> bool:
    """Call variant kernel ``name`` if the given fields are complete and fit ``c_prev``'s ``[rows, H]``
    (the C code trusts them, so they are checked here; this runs at every step, so it is kept lean)."""
    vectors, row_fields = _VARIANT_FIELDS[name]
    if not tensors.keys() <= _VARIANT_KNOWN[name]:
        raise TypeError(f"{name}: unknown fields {sorted(tensors.keys() - _VARIANT_KNOWN[name])}")
    for key, fields in _VARIANT_NEEDS[name].items():
        if (key is None or tensors.get(key) is not None) and any(tensors.get(f) is None for f in fields):
            return False
    state = tensors["c_prev"]
    if state is None or state.dim() != 2:
        return False
    rows, hidden = state.shape
    float32 = torch.float32
    values: list[int | None] = [rows, hidden, int(coupled)]
    for field, width in vectors.items():
        t = tensors.get(field)
        if t is None:
            values.append(None)
        elif t.dtype is not float32 or not t.is_cpu or t.shape != (width * hidden,) or t.stride() != (1,):
            return False
        else:
            values.append(t.data_ptr())
    for field, (per_hidden, extra) in row_fields.items():
        t = tensors.get(field)
        if t is None:
            values += (None, 0)
            continue
        shape, stride = t.shape, t.stride()
        if t.dtype is not float32 or not t.is_cpu or len(shape) != 2 or stride[1] != 1:
            return False
        if shape[1] != per_hidden * hidden + extra or (shape[0] != rows and shape[0] != 1):
            return False
        values += (t.data_ptr(), stride[0] if shape[0] == rows else 0)
    library = _library()
    if library is None:
        return False
    getattr(library, name)(ctypes.byref(_VARIANT_ARGUMENTS[name](*values)))
    return True


def _run(name: str, state: Tensor, tensors: tuple[Tensor, ...], widths: tuple[int, ...]) -> bool:
    """Call kernel ``name`` if every tensor fits: ``[rows, width·H]`` for ``state`` ``[rows, H]``,
    CPU float32 with contiguous rows (the C code trusts these shapes, so they are checked here)."""
    if state.dim() != 2:
        return False
    rows, hidden = state.shape
    for t, width in zip(tensors, widths):
        if t.shape != (rows, width * hidden) or not _float32_cpu_rows(t):
            return False
    library = _library()
    if library is None:
        return False
    _call(library, name, (rows, hidden), tensors)
    return True


def _float32_cpu_rows(t: Tensor) -> bool:
    """CPU float32 whose rows are contiguous: what the C code reads and writes."""
    return t.dtype is torch.float32 and t.is_cpu and t.stride(-1) == 1


def _call(library: ctypes.CDLL, name: str, shape: tuple[int, int], tensors: Sequence[Tensor]) -> None:
    """``name(rows, H, pointer, row stride, ...)`` for a ``[rows, H]`` step."""
    args: list[int] = [shape[0], shape[1]]
    for t in tensors:
        args += [t.data_ptr(), t.stride(0)]
    getattr(library, name)(*args)


@cache
def _library() -> ctypes.CDLL | None:
    """The built, loaded and checked kernel library, or None (the reason goes to the log)."""
    if os.environ.get("LSTM_MT_NATIVE", "1") == "0":
        return None
    with _LOCK:
        try:
            library = _load(_build())
        except (OSError, RuntimeError, subprocess.SubprocessError, LstmMtError) as error:  # cache unwritable too
            log.info("compiled LSTM kernel unavailable (%s); using PyTorch operations", error)
            return None
    if not _agrees_with_torch(library):
        log.warning("compiled LSTM kernel disagrees with PyTorch on this machine; using PyTorch operations")
        return None
    return library


def _compiler() -> str:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    raise RuntimeError("no C compiler found (set CC)")


def _build() -> Path:
    """Compile the source into the cache (once per source, compiler and CPU), atomically."""
    compiler = _compiler()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60, check=True).stdout
    key = hashlib.sha256(
        "\0".join(
            [*(p.read_text() for p in SOURCES + HEADERS), compiler, version, *FLAGS, OPENMP, _cpu_signature()]
        ).encode()
    ).hexdigest()[:16]
    cache = Path(os.environ.get("LSTM_MT_CACHE") or Path.home() / ".cache" / "lstm_mt") / "kernels"
    target = cache / f"lstm_cell_{key}.so"
    if target.exists():
        return target
    with atomic_path(target) as partial:  # another process building the same key writes the same file
        for flags in ([*FLAGS, OPENMP], FLAGS):
            build = subprocess.run(
                [compiler, *flags, *map(str, SOURCES), "-o", str(partial)], capture_output=True, text=True, timeout=300
            )
            if build.returncode == 0:
                break
        else:
            raise RuntimeError(f"{compiler} failed: {build.stderr.strip().splitlines()[-1:] or build.returncode}")
    return target


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: the CPU's model and feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({line for line in lines if line.startswith(("model name", "flags"))}))
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def _load(path: Path) -> ctypes.CDLL:
    library = ctypes.CDLL(str(path))
    for name, pairs in _SIGNATURES.items():
        function = getattr(library, name)
        function.argtypes = [ctypes.c_int64, ctypes.c_int64] + [ctypes.c_void_p, ctypes.c_int64] * pairs
        function.restype = None
    for name, struct in _VARIANT_ARGUMENTS.items():
        function = getattr(library, name)
        function.argtypes = [ctypes.POINTER(struct)]
        function.restype = None
    for name, types in _PLAIN_ARGUMENTS.items():
        function = getattr(library, name)
        function.argtypes = types
        function.restype = None
    return library


def _agrees_with_torch(library: ctypes.CDLL, tolerance: float = 1e-5) -> bool:
    """Run both kernels on random input with strided rows and compare with PyTorch in float64."""
    generator = torch.Generator().manual_seed(0)
    rows, hidden = 70, 61  # rows * hidden >= 4096: the kernel splits rows among threads
    pre = (torch.randn(rows, 4 * hidden + 3, generator=generator) * 4)[:, : 4 * hidden]
    c_prev = torch.randn(rows, hidden, generator=generator)
    dh, dc = torch.randn(rows, hidden, generator=generator), torch.randn(rows, hidden, generator=generator)

    i, f, g, o = pre.double().chunk(4, dim=1)
    i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
    c_ref = f * c_prev.double() + i * g
    tanh_c_ref = c_ref.tanh()
    dC = dc.double() + dh.double() * o * (1 - tanh_c_ref**2)
    grad_ref = torch.cat(
        [
            dC * g * i * (1 - i),
            dC * c_prev.double() * f * (1 - f),
            dC * i * (1 - g**2),
            dh.double() * tanh_c_ref * o * (1 - o),
        ],
        1,
    )

    c, h, gates, tanh_c = (
        torch.empty_like(c_prev),
        torch.empty_like(c_prev),
        torch.empty(rows, 4 * hidden),
        torch.empty_like(c_prev),
    )
    c_infer, h_infer = torch.empty_like(c_prev), torch.empty_like(c_prev)
    grad_pre, dc_prev = torch.empty(rows, 4 * hidden), torch.ones(rows, hidden)
    tensors = {
        "lstm_cell_forward": [pre, c_prev, c_infer, h_infer],
        "lstm_cell_forward_keep": [pre, c_prev, c, h, gates, tanh_c],
        "lstm_cell_backward": [gates, tanh_c, c_prev, dh, dc, grad_pre, dc_prev],
    }
    for name, args in tensors.items():
        _call(library, name, (rows, hidden), args)
    checks = [
        (c, c_ref),
        (h, o * tanh_c_ref),
        (c_infer, c_ref),
        (h_infer, o * tanh_c_ref),
        (gates, torch.cat([i, f, g, o], 1)),
        (tanh_c, tanh_c_ref),
        (grad_pre, grad_ref),
        (dc_prev, 1 + dC * f),
    ]
    return all(torch.allclose(got.double(), want, rtol=tolerance, atol=tolerance) for got, want in checks)
