"""The point-wise part of a step: from ``pre = W·[h, x] + b`` to the gates, C and h, and back.

After a step's matrix product the equations are element by element. They run on the first
registered kernel that takes the tensors (registered by default: `lstm_mt.lstm.native`, a
C loop for CPU float32, `lstm_mt.lstm.triton_step`, Triton kernels for CUDA, and
`lstm_mt.lstm.widening`, the C loop for CPU bf16/fp16 through float32 copies); where none
does, on a few PyTorch tensor operations, with tanh computed as 2σ(2x) − 1 so that all four
gates take one sigmoid kernel.

A device backend (say a fused CUDA step) plugs in here with `register_kernel`: an object
with the three functions of `PointwiseKernel`, each returning False (touching nothing)
for tensors it does not take.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from lstm_mt.lstm import native, triton_step, widening


class PointwiseKernel(Protocol):
    """A compiled point-wise step; `lstm_mt.lstm.native` is one (see its functions for the contract)."""

    def usable(self, *tensors: Tensor) -> bool:
        """Whether `forward`/`backward` take these tensors (any step shape ``[rows, ·H]``)."""
        ...

    def forward(
        self,
        pre: Tensor,
        c_prev: Tensor,
        c: Tensor,
        h: Tensor,
        gates: Tensor | None = None,
        tanh_c: Tensor | None = None,
    ) -> bool:
        """Write ``c``, ``h`` (and with ``gates``, also the gates and tanh(C)); False where it does not apply."""
        ...

    def backward(
        self, gates: Tensor, tanh_c: Tensor, c_prev: Tensor, dh: Tensor, dc: Tensor, grad_pre: Tensor, dc_prev: Tensor
    ) -> bool:
        """Write ``grad_pre``, add C_prev's gradient to ``dc_prev``; False where it does not apply."""
        ...


_KERNELS: list[PointwiseKernel] = [native, triton_step, widening]


def register_kernel(kernel: PointwiseKernel) -> None:
    """Try ``kernel`` before the ones registered earlier (idempotent)."""
    if kernel not in _KERNELS:
        _KERNELS.insert(0, kernel)


def kernel_for(*tensors: Tensor) -> PointwiseKernel | None:
    """The first registered kernel that takes these tensors (step shapes ``[rows, ·H]``), or None: tensor operations."""
    return next((kernel for kernel in _KERNELS if kernel.usable(*tensors)), None)


def forward_step(pre: Tensor, c_prev: Tensor, act: Tensor, c: Tensor, tanh_c: Tensor, h: Tensor) -> None:
    """One step of the equations from ``pre = W·[h, x] + b``, into the given buffers.

    Fills ``act`` with i, f, C̃, o (``act`` may be ``pre`` itself), ``c`` with C,
    ``tanh_c`` with tanh(C) and ``h`` with the new hidden state. When ``act`` is ``pre``
    (inference), only ``c`` and ``h`` are guaranteed.
    """
    keep = act is not pre
    for kernel in _KERNELS:
        if kernel.forward(pre, c_prev, c, h, act if keep else None, tanh_c if keep else None):
            return
    _activate_gates(pre, act)
    i, f, g, o = act.chunk(4, dim=1)
    torch.mul(f, c_prev, out=c).addcmul_(i, g)  # C = f*C_prev + i*C̃
    torch.mul(o, _tanh(c, out=tanh_c), out=h)  # h = o*tanh(C)


def backward_step(
    gates: Tensor, tanh_c: Tensor, c_prev: Tensor, dh: Tensor, dc: Tensor, grad_pre: Tensor, dc_prev: Tensor
) -> None:
    """One step's backward: ``grad_pre = dL/dpre``; adds the gradient reaching C_prev to ``dc_prev``.

    ``dh`` and ``dc`` are the gradients arriving at the step's h and C (``dc`` is not changed).
    """
    for kernel in _KERNELS:
        if kernel.backward(gates, tanh_c, c_prev, dh, dc, grad_pre, dc_prev):
            return
    factors, dc_from_dh = _backward_factors(gates, tanh_c, c_prev)
    dc = _gate_gradients(factors, dc_from_dh, dh, dc.clone(), grad_pre)
    H = c_prev.shape[1]
    dc_prev.addcmul_(dc, gates[:, H : 2 * H])  # C_prev reaches C through f


StepBackward = Callable[[int, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor], None]
"""``(t, gates, tanh_c, c_prev, dh, dc, grad_pre, dc_prev)``: step ``t`` of a layer's backward, in place."""


def layer_step_backward(gates: Tensor, tanh_cs: Tensor, c0: Tensor, cs: Tensor, dh: Tensor, dc: Tensor) -> StepBackward:
    """The step backward for a whole layer run (``[T, B, ·]`` tensors), chosen once for all steps.

    A kernel that takes the tensors runs each step; otherwise the tensor operations, with
    the factors that do not depend on the incoming gradients computed for all steps at once.
    ``dh`` and ``dc`` are the buffers of incoming gradients the steps will see (a step may
    overwrite its ``dc``).
    """
    kernel = kernel_for(gates[0], tanh_cs[0], c0, dh[0], dc[0])
    if kernel is not None:
        return _kernel_step_backward(kernel)
    factors, dc_from_dh = _backward_factors(gates, tanh_cs, torch.cat([c0.unsqueeze(0), cs[:-1]]))
    H = tanh_cs.shape[-1]

    def step(
        t: int, gates: Tensor, tanh_c: Tensor, c_prev: Tensor, dh: Tensor, dc: Tensor, grad_pre: Tensor, dc_prev: Tensor
    ) -> None:
        n = dh.shape[0]
        dc = _gate_gradients(factors[t, :n], dc_from_dh[t, :n], dh, dc, grad_pre)
        dc_prev.addcmul_(dc, gates[:, H : 2 * H])  # C_prev reaches C through f

    return step


def _kernel_step_backward(kernel: PointwiseKernel) -> StepBackward:
    """Each step in ``kernel``, which has said it takes the layer's tensors."""

    def step(
        t: int, gates: Tensor, tanh_c: Tensor, c_prev: Tensor, dh: Tensor, dc: Tensor, grad_pre: Tensor, dc_prev: Tensor
    ) -> None:
        if not kernel.backward(gates, tanh_c, c_prev, dh, dc, grad_pre, dc_prev):
            raise RuntimeError(f"point-wise kernel {kernel!r} refused a step after accepting the layer")

    return step


def _tanh(x: Tensor, out: Tensor) -> Tensor:
    """``out = tanh(x) = 2σ(2x) − 1``: PyTorch's CPU sigmoid kernel is several times faster than its tanh."""
    return torch.mul(x, 2, out=out).sigmoid_().mul_(2).sub_(1)


def _activate_gates(pre: Tensor, out: Tensor) -> None:
    """``out = [σ(pre_i), σ(pre_f), tanh(pre_C̃), σ(pre_o)]`` in one sigmoid; overwrites ``pre``."""
    H = pre.shape[1] // 4
    pre[:, 2 * H : 3 * H].mul_(2)
    torch.sigmoid(pre, out=out)
    out[:, 2 * H : 3 * H].mul_(2).sub_(1)  # C̃ = tanh(·) = 2σ(2·) − 1


def _backward_factors(gates: Tensor, tanh_c: Tensor, c_prev: Tensor) -> tuple[Tensor, Tensor]:
    """The parts of the gate derivatives that do not depend on the incoming gradients.

    With σ' = σ(1-σ) and tanh' = 1 - tanh²: ``dpre_i = dC·C̃·i(1-i)``,
    ``dpre_f = dC·C_prev·f(1-f)``, ``dpre_C̃ = dC·i·(1-C̃²)``, ``dpre_o = dh·tanh(C)·o(1-o)``,
    and C gets ``dh·o·(1-tanh²C)`` through h. Works on any leading shape (one step, or
    all steps at once). Returns the four factors stacked like the gates, and the last one.
    """
    i, f, g, o = gates.chunk(4, dim=-1)
    factors = torch.empty_like(gates)
    f_i, f_f, f_g, f_o = factors.chunk(4, dim=-1)
    torch.addcmul(i, i, i, value=-1, out=f_i).mul_(g)
    torch.addcmul(f, f, f, value=-1, out=f_f).mul_(c_prev)
    torch.mul(g, g, out=f_g).neg_().add_(1).mul_(i)
    torch.addcmul(o, o, o, value=-1, out=f_o).mul_(tanh_c)
    dc_from_dh = torch.mul(tanh_c, tanh_c).neg_().add_(1).mul_(o)
    return factors, dc_from_dh


def _gate_gradients(factors: Tensor, dc_from_dh: Tensor, dh: Tensor, dc: Tensor, out: Tensor) -> Tensor:
    """``out = dL/dpre`` for one step; adds h's share to ``dc`` in place and returns it."""
    H = dh.shape[1]
    dc.addcmul_(dh, dc_from_dh)
    torch.mul(factors[:, : 3 * H].unflatten(1, (3, H)), dc.unsqueeze(1), out=out[:, : 3 * H].unflatten(1, (3, H)))
    torch.mul(factors[:, 3 * H :], dh, out=out[:, 3 * H :])
    return dc
