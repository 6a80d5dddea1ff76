"""The LSTM's training path: autograd Functions with hand-written backward passes.

- `CellStep`: one step (the decoder's), its backward in fewer, larger kernels than autograd's
  (`step_forward`, its forward pass, also serves no-grad steps directly);
  with `SequenceWeights`, the weights' gradient for all steps of a sequence as one product;
- `LayerRecurrence`: a whole layer direction over a length-sorted batch. Forward runs the
  recurrence in a tight loop over preallocated buffers that skips padded positions; backward
  runs only the dh/dC recurrence step by step and computes the weight gradient once, as one
  matrix product over all steps, instead of once per step.

The two loops are also functions (`recurrence_forward`, `recurrence_backward`), which
`lstm_mt.lstm.cuda_graphs` records as CUDA graphs; `layer_recurrence` runs the forward loop alone
where no backward pass follows.

Products go through `lstm_mt.lstm.onednn.Product`, the point-wise part of each step through
`lstm_mt.lstm.pointwise`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstm_mt.lstm import pointwise
from lstm_mt.lstm.onednn import Product


class CellStep(torch.autograd.Function):
    """One step of `LSTMCell`: ``(x, h_prev, c_prev, weight_ih, weight_hh, bias, token, gradient) -> (h, c)``.

    The weights are multiplied with as given (in ``x``'s dtype). Without ``gradient`` the step
    returns their gradients itself. With a `WeightGradient` (and ``token``, the output of
    `SequenceWeights` for it), the weights are detached copies and the step instead hands its
    share of their gradient to ``gradient``, which `SequenceWeights` turns into the weights'
    gradients for all steps of the sequence at once.
    """

    @staticmethod
    def forward(ctx, x, h_prev, c_prev, weight_ih, weight_hh, bias, token=None, gradient=None):
        training = any(ctx.needs_input_grad)
        h, c, act, tanh_c = step_forward(x, h_prev, c_prev, weight_ih, weight_hh, bias, keep=training)
        if training:
            ctx.save_for_backward(x, h_prev, c_prev, weight_ih, weight_hh, act, tanh_c)
            ctx.has_bias, ctx.gradient = bias is not None, gradient
            ctx.step = None if gradient is None else gradient.new_step()
        return h, c

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h, grad_c):
        x, h_prev, c_prev, weight_ih, weight_hh, act, tanh_c = ctx.saved_tensors
        grad_pre = torch.empty_like(act)
        grad_c_prev = torch.zeros_like(c_prev)
        pointwise.backward_step(act, tanh_c, c_prev, grad_h, grad_c, grad_pre, grad_c_prev)
        need = ctx.needs_input_grad
        if ctx.gradient is not None and need[6]:
            ctx.gradient.add(ctx.step, grad_pre, x, h_prev)
        return (
            grad_pre.mm(weight_ih) if need[0] else None,
            grad_pre.mm(weight_hh) if need[1] else None,
            grad_c_prev if need[2] else None,
            grad_pre.t().mm(x) if need[3] else None,
            grad_pre.t().mm(h_prev) if need[4] else None,
            grad_pre.sum(0) if ctx.has_bias and need[5] else None,
            grad_pre.new_zeros(0) if need[6] else None,
            None,
        )


def step_forward(
    x: Tensor, h_prev: Tensor, c_prev: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias: Tensor | None, keep: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One step: ``(h, c, gates, tanh_c)``; without ``keep`` (no backward pass) the gates overwrite the
    pre-activations. `CellStep`'s forward pass, and a no-grad step without autograd's bookkeeping."""
    pre = Product(weight_hh).add_to(Product(weight_ih)(x, bias), h_prev)
    act = torch.empty_like(pre) if keep else pre
    c, tanh_c, h = torch.empty_like(c_prev), torch.empty_like(c_prev), torch.empty_like(c_prev)
    pointwise.forward_step(pre, c_prev, act, c, tanh_c, h)
    return h, c, act, tanh_c


class WeightGradient:
    """A cell's weight gradient in pieces: each `CellStep` of a sequence adds its dL/dpre and inputs.

    A piece is kept under its step's number, so a backward pass that runs a step again (a
    retained graph, or an earlier ``autograd.grad`` for other inputs that never reached the
    weights) replaces it rather than adding it twice.
    """

    def __init__(self) -> None:
        self.steps = 0
        self.pieces: dict[int, tuple[Tensor, Tensor, Tensor]] = {}

    def new_step(self) -> int:
        """A number for the next step of the sequence."""
        self.steps += 1
        return self.steps - 1

    def add(self, step: int, grad_pre: Tensor, x: Tensor, h_prev: Tensor) -> None:
        """Step ``step``'s share."""
        self.pieces[step] = (grad_pre, x, h_prev)

    def take(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """All steps' ``dpre``, ``x`` and ``h_prev``, each joined along the rows in step order (None: no step
        added any); empties it."""
        if not self.pieces:
            return None
        pieces = [self.pieces[step] for step in sorted(self.pieces)]
        self.pieces = {}
        grad_pre, x, h_prev = (torch.cat(parts) for parts in zip(*pieces))
        return grad_pre, x, h_prev


class SequenceWeights(torch.autograd.Function):
    """``(weight_ih, weight_hh, bias, gradient) -> token``: a cell's weights, as all steps of a sequence use them.

    The token (an empty tensor) is an input of every `CellStep` of the sequence, so this
    backward runs after all of theirs, when ``gradient`` holds every step's share; the
    weights' gradients are then one product each over all steps, ``dW_ih = Σ_t dpre_tᵀ x_t``,
    ``dW_hh = Σ_t dpre_tᵀ h_{t-1}``, ``db = Σ_t dpre_t`` (the encoder's `LayerRecurrence` does the
    same), instead of a product, a conversion and an accumulation per step.
    """

    @staticmethod
    def forward(ctx, weight_ih, weight_hh, bias, gradient):
        ctx.gradient, ctx.has_bias = gradient, bias is not None
        return weight_ih.new_empty(0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, _):
        pieces = ctx.gradient.take()
        if pieces is None:
            return None, None, None, None
        grad_pre, x, h_prev = pieces
        need = ctx.needs_input_grad
        return (
            grad_pre.t().mm(x) if need[0] else None,
            grad_pre.t().mm(h_prev) if need[1] else None,
            grad_pre.sum(0) if ctx.has_bias and need[2] else None,
            None,
        )


class LayerRecurrence(torch.autograd.Function):
    """The recurrence of one layer direction over a whole (length-sorted) batch.

    Inputs: ``x_proj[t] = W_x·x_t + b`` for all steps ``[T, B, 4H]``, ``weight_hh``,
    initial ``h0, c0`` ``[B, H]`` and ``batch_sizes[t]``, the number of sequences still
    running at step t (the batch is sorted by length, longest first, so they are the
    first rows), and ``h0_is_zero`` (no initial state given: the first step needs no
    recurrent product). Returns every step's ``h`` and ``C`` as ``[T, B, H]``, zero on padding.
    """

    @staticmethod
    def forward(ctx, x_proj, weight_hh, h0, c0, batch_sizes, h0_is_zero):
        training = any(ctx.needs_input_grad[:4])
        hs, cs, gates, tanh_cs = recurrence_forward(x_proj, weight_hh, h0, c0, batch_sizes, h0_is_zero, training)
        if training:
            ctx.save_for_backward(weight_hh, h0, c0, hs, cs, gates, tanh_cs)
            ctx.batch_sizes, ctx.h0_is_zero = batch_sizes, h0_is_zero
        return hs, cs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_hs, grad_cs):
        weight_hh, h0, c0, hs, cs, gates, tanh_cs = ctx.saved_tensors
        need = ctx.needs_input_grad
        grad_pre, grad_w_hh, dh0, dc0 = recurrence_backward(
            (weight_hh, h0, c0, hs, cs, gates, tanh_cs),
            grad_hs.clone(),
            grad_cs.clone(),
            ctx.batch_sizes,
            ctx.h0_is_zero,
            need_dh0=need[2],
            need_weight=need[1],
        )
        return grad_pre, grad_w_hh, dh0, dc0, None, None


def layer_recurrence(
    x_proj: Tensor, weight_hh: Tensor, h0: Tensor, c0: Tensor, batch_sizes: list[int], h0_is_zero: bool
) -> tuple[Tensor, Tensor]:
    """`LayerRecurrence` where a backward pass will follow, else its forward loop alone, keeping no gates:
    inside the Function, ``ctx.needs_input_grad`` cannot tell, as parameters require grad under no_grad too."""
    tensors = (x_proj, weight_hh, h0, c0)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return LayerRecurrence.apply(*tensors, batch_sizes, h0_is_zero)
    hs, cs, _, _ = recurrence_forward(*tensors, batch_sizes, h0_is_zero, keep=False)
    return hs, cs


def recurrence_forward(
    x_proj: Tensor, weight_hh: Tensor, h0: Tensor, c0: Tensor, batch_sizes: list[int], h0_is_zero: bool, keep: bool
) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """`LayerRecurrence`'s forward loop: every step's ``h``, ``C`` and, with ``keep``, the gates (else None)
    and tanh(C) for the backward pass, as new ``[T, B, ·]`` tensors (`lstm_mt.lstm.cuda_graphs` records it too)."""
    steps, batch, _ = x_proj.shape
    H = weight_hh.shape[1]
    recurrent = Product(weight_hh, pack=True)
    # With padding, rows past a sequence's end stay zero: zeroed once here, not per step (on a GPU
    # every step's zeroing would be two more kernel launches).
    buffer = x_proj.new_zeros if _padded(batch_sizes, batch) else x_proj.new_empty
    hs, cs, tanh_cs = buffer(steps, batch, H), buffer(steps, batch, H), x_proj.new_empty(steps, batch, H)
    gates = x_proj.new_empty(steps, batch, 4 * H) if keep else None
    h_prev, c_prev = h0, c0
    for t, n in enumerate(batch_sizes):
        if t == 0 and h0_is_zero:
            pre = x_proj[0].clone()  # W_h·0 = 0
        else:
            pre = recurrent.add_to(x_proj[t, :n], h_prev[:n])  # W·[h, x] + b, all four gates
        act = pre if gates is None else gates[t, :n]
        pointwise.forward_step(pre, c_prev[:n], act, cs[t, :n], tanh_cs[t, :n], hs[t, :n])
        h_prev, c_prev = hs[t], cs[t]
    return hs, cs, gates, tanh_cs


def recurrence_backward(
    saved: tuple[Tensor, ...],
    dh_total: Tensor,
    dc_total: Tensor,
    batch_sizes: list[int],
    h0_is_zero: bool,
    need_dh0: bool,
    need_weight: bool,
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor]:
    """`LayerRecurrence`'s backward loop: ``(dL/dx_proj, dL/dW_hh, dL/dh0, dL/dc0)`` (None where not needed).

    ``saved``: ``(weight_hh, h0, c0, hs, cs, gates, tanh_cs)`` of the forward pass. ``dh_total`` and
    ``dc_total`` ``[T, B, H]`` hold the gradients arriving at the outputs and are overwritten: the
    gradients from step t+1 are added to them on the way back.
    """
    weight_hh, h0, c0, hs, cs, gates, tanh_cs = saved
    steps, batch, H = hs.shape
    through_hh = Product(weight_hh.t().contiguous(), pack=True)  # dpre ↦ dpre @ W_hh

    buffer = gates.new_zeros if _padded(batch_sizes, batch) else gates.new_empty  # padded rows stay zero
    grad_pre = buffer(steps, batch, 4 * H)
    dc0 = torch.zeros_like(c0)
    step_backward = pointwise.layer_step_backward(gates, tanh_cs, c0, cs, dh_total, dc_total)
    for t in range(steps - 1, -1, -1):
        n = batch_sizes[t]
        c_prev, dc_prev = (cs[t - 1, :n], dc_total[t - 1, :n]) if t > 0 else (c0[:n], dc0[:n])
        step_backward(
            t, gates[t, :n], tanh_cs[t, :n], c_prev, dh_total[t, :n], dc_total[t, :n], grad_pre[t, :n], dc_prev
        )
        if t > 0:
            through_hh.accumulate(dh_total[t - 1, :n], grad_pre[t, :n])
    dh0 = through_hh(grad_pre[0]) if need_dh0 else None

    grad_w_hh = None
    if need_weight:
        # dW_hh = Σ_t dpre_tᵀ · h_{t-1}: one product over all steps after the first.
        grad_w_hh = torch.zeros_like(weight_hh)
        if steps > 1:
            grad_w_hh.addmm_(grad_pre[1:].flatten(0, 1).t(), hs[:-1].flatten(0, 1))
        if not h0_is_zero:
            grad_w_hh.addmm_(grad_pre[0].t(), h0)
    return grad_pre, grad_w_hh, dh0, dc0


def _padded(batch_sizes: list[int], batch: int) -> bool:
    """Whether some sequences end before the last step (``batch_sizes`` never grows)."""
    return bool(batch_sizes) and batch_sizes[-1] < batch
