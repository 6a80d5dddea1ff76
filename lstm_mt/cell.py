"""The LSTM, written gate by gate: `LSTMCell` for one step and `LSTM` for whole sequences.

The equations (one time step, ``[h, x]`` the previous hidden state joined with the input)::

    i  = σ(W_i·[h, x] + b_i)        input gate: how much of the candidate to write
    f  = σ(W_f·[h, x] + b_f)        forget gate: how much of the old cell state to keep
    o  = σ(W_o·[h, x] + b_o)        output gate: how much of the cell state to show
    C̃  = tanh(W_C·[h, x] + b_C)     candidate cell state
    C  = f * C_prev + i * C̃
    h  = o * tanh(C)

Storage follows `torch.nn.LSTM` so weights copy both ways: ``W_g·[h, x]`` is kept as
``weight_ih[g]·x + weight_hh[g]·h`` with the four gates stacked in the order
i, f, C̃ (called ``g`` by PyTorch), o. `LSTMCell.gate_parameters()` names each block.

`lstm_step` is the textbook version of one step. The code that runs in training and
decoding applies the very same equations through a fast path kept in one section below
("Fast path"), checked against `lstm_step` and `torch.nn.LSTM` by the tests:

- a whole layer direction (`_LayerRecurrence`) projects the inputs of all time steps in
  one matrix product, runs the recurrence in a tight loop over preallocated buffers that
  skips padded positions, and has a hand-written backward pass that computes the weight
  gradient once over the whole sequence instead of once per step;
- a single step (`_CellStep`, used by the decoder) has a hand-written backward too;
- on CPU in float32 the per-step matrix products go to oneDNN (PyTorch's bundled kernel
  library, the one `torch.nn.LSTM` uses), with the recurrent weight packed once per call
  (and kept across calls while the weights do not change);
- inference (no gradients) on that path multiplies ``W·[h, x]`` exactly as the equations
  write it, one product per step over the joined ``[h_{t-1}, x_t]`` (`_joint_recurrence`);
- the point-wise part of a step (the four gates, C and h, and their derivatives) runs
  in one pass of a small C kernel where a C compiler is at hand (`lstm_mt.native`,
  source ``lstm_mt/csrc/lstm_cell.c``, the same equations element by element); elsewhere
  it is a few tensor operations, with tanh computed as 2σ(2x) − 1 so that all four gates
  take one sigmoid kernel.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from lstm_mt import native

GATE_NAMES = ("input", "forget", "candidate", "output")  # row blocks of the fused weights


class GateActivations(NamedTuple):
    """The four gate values of one step, after their non-linearities."""

    i: Tensor
    f: Tensor
    g: Tensor  # the candidate cell state C̃
    o: Tensor


def lstm_step(preactivations: Tensor, c_prev: Tensor) -> tuple[Tensor, Tensor, GateActivations]:
    """Apply the LSTM equations to the stacked gate pre-activations ``W·[h, x] + b``.

    ``preactivations`` is ``[batch, 4 * hidden]`` in the order i, f, C̃, o.
    Returns the new hidden state, the new cell state and the gate values.
    """
    pre_i, pre_f, pre_g, pre_o = preactivations.chunk(4, dim=1)
    i = torch.sigmoid(pre_i)
    f = torch.sigmoid(pre_f)
    g = torch.tanh(pre_g)
    o = torch.sigmoid(pre_o)
    c = f * c_prev + i * g
    h = o * torch.tanh(c)
    return h, c, GateActivations(i, f, g, o)


@dataclass
class GateRecord:
    """What one LSTM cell computed, recorded by `GateRecorder`.

    For a whole-sequence layer run (encoder): tensors ``[T, B, H]`` in the sentence's own
    time order (also for the backward direction), batch rows in the caller's order,
    padded positions zero; ``lengths`` gives the real lengths. For a single step
    (decoder): ``[B, H]`` and ``lengths`` None. ``g`` is the candidate C̃.
    """

    cell: LSTMCell
    reverse: bool
    i: Tensor
    f: Tensor
    g: Tensor
    o: Tensor
    c: Tensor
    h: Tensor
    lengths: Tensor | None = None


class GateRecorder:
    """Records the gates, cell states and outputs of every LSTM call made while it is active.

        with GateRecorder() as recorder:
            model(src, src_lengths, tgt_in)
        recorder.records          # GateRecord list, in call order

    When no recorder is active the fast path pays one ``is None`` check per call: no
    extra work or memory in training and decoding.
    """

    def __init__(self) -> None:
        self.records: list[GateRecord] = []

    def __enter__(self) -> GateRecorder:
        global _ACTIVE_RECORDER
        if _ACTIVE_RECORDER is not None:
            raise RuntimeError("a GateRecorder is already active")
        _ACTIVE_RECORDER = self
        return self

    def __exit__(self, *exc_info: object) -> None:
        global _ACTIVE_RECORDER
        _ACTIVE_RECORDER = None


_ACTIVE_RECORDER: GateRecorder | None = None


class LSTMCell(nn.Module):
    """One LSTM step: ``(h, c) = cell(x, (h_prev, c_prev))``.

    Same parameters and results as `torch.nn.LSTMCell`; `from_torch` copies one.
    `forward` takes the fast path; `step_with_gates` spells the equations out and also
    returns the gate values, for inspection.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size))
            self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-1/√H, 1/√H), as `torch.nn.LSTMCell` does."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def gate_parameters(self) -> dict[str, dict[str, Tensor | None]]:
        """Views of each gate's weights: ``{"forget": {"W_x": ..., "W_h": ..., "b": ...}, ...}``.

        ``W_x`` and ``W_h`` are the input and hidden halves of ``W_g`` in the equations;
        ``b`` is ``b_ih + b_hh`` (a copy, since it is a sum), or None without bias.
        """
        H = self.hidden_size
        gates = {}
        for k, name in enumerate(GATE_NAMES):
            rows = slice(k * H, (k + 1) * H)
            bias = None if self.bias_ih is None else self.bias_ih[rows] + self.bias_hh[rows]
            gates[name] = {"W_x": self.weight_ih[rows], "W_h": self.weight_hh[rows], "b": bias}
        return gates

    def combined_bias(self) -> Tensor | None:
        """``b = b_ih + b_hh`` (PyTorch keeps two biases where the equations have one)."""
        return None if self.bias_ih is None else self.bias_ih + self.bias_hh

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """One step for a batch: ``x`` is ``[batch, input]``; returns ``(h, c)``, each ``[batch, hidden]``."""
        if _ACTIVE_RECORDER is not None:
            h, c, gates = self.step_with_gates(x, state)
            _ACTIVE_RECORDER.records.append(GateRecord(self, False, *(t.detach() for t in (*gates, c, h))))
            return h, c
        h_prev, c_prev = self._state_or_zeros(x, state)
        if _joint_product_applies(self, x, h_prev, c_prev):
            return _joint_step(self, x, h_prev, c_prev)
        inputs = _autocast_inputs(x, h_prev, c_prev, self.weight_ih, self.weight_hh, self.combined_bias())
        with _autocast_off(x):
            return _CellStep.apply(*inputs)

    def step_with_gates(
        self, x: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor, GateActivations]:
        """`forward` written out with `lstm_step`, also returning i, f, C̃ and o."""
        h_prev, c_prev = self._state_or_zeros(x, state)
        preactivations = F.linear(x, self.weight_ih, self.combined_bias()) + F.linear(h_prev, self.weight_hh)
        return lstm_step(preactivations, c_prev)

    def _state_or_zeros(self, x: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
        if state is not None:
            return state
        zeros = x.new_zeros(x.shape[0], self.hidden_size)
        return zeros, zeros

    @classmethod
    def from_torch(cls, cell: nn.LSTMCell) -> LSTMCell:
        """An `LSTMCell` with a copy of a `torch.nn.LSTMCell`'s weights."""
        ours = cls(cell.input_size, cell.hidden_size, bias=cell.bias)
        ours.to(dtype=cell.weight_ih.dtype, device=cell.weight_ih.device)
        with torch.no_grad():
            for name, _ in ours.named_parameters():
                getattr(ours, name).copy_(getattr(cell, name))
        return ours

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}"


# ---------------------------------------------------------------------------------------
# Fast path: the same equations, arranged for speed. Everything below is private.
# ---------------------------------------------------------------------------------------

_ONEDNN_WORKS: bool | None = None  # decided on first use: does this PyTorch build run oneDNN's linear?


def _onednn_usable(weight: Tensor) -> bool:
    """Whether oneDNN can take products with ``weight`` (CPU float32, supported build)."""
    global _ONEDNN_WORKS
    if weight.device.type != "cpu" or weight.dtype != torch.float32 or _ONEDNN_WORKS is False:
        return False
    if _ONEDNN_WORKS is None:
        try:
            w = torch.arange(6, dtype=torch.float32).view(2, 3)
            x = torch.ones(1, 3)
            packed = torch.ops.mkldnn._reorder_linear_weight(w, None)
            plain = torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
            added = torch.ops.mkldnn._linear_pointwise.binary(x, plain, packed, None, "add")
            _ONEDNN_WORKS = bool(torch.equal(added, 2 * w.sum(1, keepdim=True).t()))
        except (AttributeError, RuntimeError):
            _ONEDNN_WORKS = False
    return _ONEDNN_WORKS


_PACKED_WEIGHTS: dict[tuple[int, ...], tuple[tuple, Tensor]] = {}  # ids -> (packed from what, packed)


def _packed(*weights: Tensor) -> Tensor:
    """The weights, joined side by side (``[W_1, W_2, ...]``), in oneDNN's packed layout.

    Reused until a weight changes: when its storage or its version counter (bumped by
    every in-place update: optimizer steps, ``load_state_dict``) differs, so inference
    pays for packing once. Updates through ``weight.data`` bypass the version counter
    and are not supported while the packed copy is cached.
    """

    def pack() -> Tensor:
        joined = weights[0] if len(weights) == 1 else torch.cat(weights, dim=1)
        return torch.ops.mkldnn._reorder_linear_weight(joined.detach().contiguous(), None)

    if not all(isinstance(w, nn.Parameter) for w in weights):  # temporaries: nothing to reuse
        return pack()
    try:
        source = tuple((w.data_ptr(), w._version, tuple(w.shape)) for w in weights)
    except RuntimeError:  # inference tensors have no version counter: pack every time
        return pack()
    key = tuple(id(w) for w in weights)
    entry = _PACKED_WEIGHTS.get(key)
    if entry is None or entry[0] != source:
        if entry is None:
            for weight in weights:
                weakref.finalize(weight, _PACKED_WEIGHTS.pop, key, None)
        entry = (source, pack())
        _PACKED_WEIGHTS[key] = entry
    return entry[1]


class _Product:
    """``x @ weight.T`` (plus a bias or another tensor) for a weight used many times.

    On CPU in float32 it runs on oneDNN, with the weight packed into oneDNN's layout
    when ``pack`` (worth it when one call makes many products); elsewhere `torch.addmm`.
    """

    def __init__(self, weight: Tensor, pack: bool = False) -> None:
        self.weight = weight.detach()
        self.onednn = _onednn_usable(self.weight) and self.weight.is_contiguous()
        if self.onednn and pack:
            self.weight = _packed(weight)

    def __call__(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        """``x @ weight.T + bias``."""
        if self.onednn:
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, bias, "none", [], "")
        return F.linear(x, self.weight, bias)

    def add_to(self, other: Tensor, x: Tensor) -> Tensor:
        """``other + x @ weight.T`` as a new tensor."""
        if self.onednn:
            return torch.ops.mkldnn._linear_pointwise.binary(x, other, self.weight, None, "add")
        return torch.addmm(other, x, self.weight.t())


def _tanh(x: Tensor, out: Tensor) -> Tensor:
    """``out = tanh(x) = 2σ(2x) − 1``: PyTorch's CPU sigmoid kernel is several times faster than its tanh."""
    return torch.mul(x, 2, out=out).sigmoid_().mul_(2).sub_(1)


def _activate_gates(pre: Tensor, out: Tensor) -> None:
    """``out = [σ(pre_i), σ(pre_f), tanh(pre_C̃), σ(pre_o)]`` in one sigmoid; overwrites ``pre``."""
    H = pre.shape[1] // 4
    pre[:, 2 * H : 3 * H].mul_(2)
    torch.sigmoid(pre, out=out)
    out[:, 2 * H : 3 * H].mul_(2).sub_(1)  # C̃ = tanh(·) = 2σ(2·) − 1


def _forward_step(pre: Tensor, c_prev: Tensor, act: Tensor, c: Tensor, tanh_c: Tensor, h: Tensor) -> None:
    """One step of the equations from ``pre = W·[h, x] + b``, into the given buffers.

    Fills ``act`` with i, f, C̃, o (``act`` may be ``pre`` itself), ``c`` with C,
    ``tanh_c`` with tanh(C) and ``h`` with the new hidden state. When ``act`` is ``pre``
    (inference), only ``c`` and ``h`` are guaranteed.
    """
    keep = act is not pre
    if native.forward(pre, c_prev, c, h, act if keep else None, tanh_c if keep else None):
        return
    _activate_gates(pre, act)
    i, f, g, o = act.chunk(4, dim=1)
    torch.mul(f, c_prev, out=c).addcmul_(i, g)  # C = f*C_prev + i*C̃
    torch.mul(o, _tanh(c, out=tanh_c), out=h)  # h = o*tanh(C)


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


class _CellStep(torch.autograd.Function):
    """One step of `LSTMCell` with a hand-written backward (fewer, larger kernels than autograd's)."""

    @staticmethod
    def forward(ctx, x, h_prev, c_prev, weight_ih, weight_hh, bias):  # type: ignore[override]
        pre = _Product(weight_hh).add_to(_Product(weight_ih)(x, bias), h_prev)
        training = any(ctx.needs_input_grad)
        act = torch.empty_like(pre) if training else pre
        c, tanh_c, h = torch.empty_like(c_prev), torch.empty_like(c_prev), torch.empty_like(c_prev)
        _forward_step(pre, c_prev, act, c, tanh_c, h)
        if training:
            ctx.save_for_backward(x, h_prev, c_prev, weight_ih, weight_hh, act, tanh_c)
            ctx.has_bias = bias is not None
        return h, c

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h, grad_c):  # type: ignore[override]
        x, h_prev, c_prev, weight_ih, weight_hh, act, tanh_c = ctx.saved_tensors
        grad_pre = torch.empty_like(act)
        grad_c_prev = torch.zeros_like(c_prev)
        if not native.backward(act, tanh_c, c_prev, grad_h, grad_c, grad_pre, grad_c_prev):
            factors, dc_from_dh = _backward_factors(act, tanh_c, c_prev)
            dc = _gate_gradients(factors, dc_from_dh, grad_h, grad_c.clone(), grad_pre)
            H = c_prev.shape[1]
            grad_c_prev.addcmul_(dc, act[:, H : 2 * H])  # C_prev reaches C through f
        need = ctx.needs_input_grad
        return (
            grad_pre.mm(weight_ih) if need[0] else None,
            grad_pre.mm(weight_hh) if need[1] else None,
            grad_c_prev if need[2] else None,
            grad_pre.t().mm(x) if need[3] else None,
            grad_pre.t().mm(h_prev) if need[4] else None,
            grad_pre.sum(0) if ctx.has_bias and need[5] else None,
        )


class _LayerRecurrence(torch.autograd.Function):
    """The recurrence of one layer direction over a whole (length-sorted) batch.

    Inputs: ``x_proj[t] = W_x·x_t + b`` for all steps ``[T, B, 4H]``, ``weight_hh``,
    initial ``h0, c0`` ``[B, H]`` and ``batch_sizes[t]``, the number of sequences still
    running at step t (the batch is sorted by length, longest first, so they are the
    first rows), and ``h0_is_zero`` (no initial state given: the first step needs no
    recurrent product). Returns every step's ``h`` and ``C`` as ``[T, B, H]``, zero on padding.

    Backward runs only the dh/dC recurrence step by step and leaves the weight gradient
    to one large matrix product over all steps.
    """

    @staticmethod
    def forward(ctx, x_proj, weight_hh, h0, c0, batch_sizes, h0_is_zero):  # type: ignore[override]
        steps, batch, _ = x_proj.shape
        H = weight_hh.shape[1]
        recurrent = _Product(weight_hh, pack=True)
        hs, cs, tanh_cs = (x_proj.new_empty(steps, batch, H) for _ in range(3))
        training = any(ctx.needs_input_grad[:4])
        gates = x_proj.new_empty(steps, batch, 4 * H) if training else None
        h_prev, c_prev = h0, c0
        for t, n in enumerate(batch_sizes):
            if t == 0 and h0_is_zero:
                pre = x_proj[0].clone()  # W_h·0 = 0
            else:
                pre = recurrent.add_to(x_proj[t, :n], h_prev[:n])  # W·[h, x] + b, all four gates
            act = gates[t, :n] if training else pre
            _forward_step(pre, c_prev[:n], act, cs[t, :n], tanh_cs[t, :n], hs[t, :n])
            if n < batch:
                hs[t, n:] = 0
                cs[t, n:] = 0
            h_prev, c_prev = hs[t], cs[t]
        if training:
            ctx.save_for_backward(weight_hh, h0, c0, hs, cs, gates, tanh_cs)
            ctx.batch_sizes, ctx.h0_is_zero = batch_sizes, h0_is_zero
        return hs, cs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_hs, grad_cs):  # type: ignore[override]
        weight_hh, h0, c0, hs, cs, gates, tanh_cs = ctx.saved_tensors
        batch_sizes = ctx.batch_sizes
        steps, batch, H = hs.shape
        through_hh = _Product(weight_hh.t().contiguous(), pack=True)  # dpre ↦ dpre @ W_hh

        grad_pre = gates.new_empty(steps, batch, 4 * H)
        dh_total = grad_hs.clone()  # dL/dh_t: from the outputs, plus from step t+1 below
        dc_total = grad_cs.clone()  # dL/dC_t likewise
        dc0 = torch.zeros_like(c0)
        if native.usable(gates[0], dh_total[0], c0):
            step_backward = _native_step_backward
        else:
            step_backward = _tensor_step_backward(gates, tanh_cs, torch.cat([c0.unsqueeze(0), cs[:-1]]))
        for t in range(steps - 1, -1, -1):
            n = batch_sizes[t]
            c_prev, dc_prev = (cs[t - 1, :n], dc_total[t - 1, :n]) if t > 0 else (c0[:n], dc0[:n])
            step_backward(
                t, gates[t, :n], tanh_cs[t, :n], c_prev, dh_total[t, :n], dc_total[t, :n], grad_pre[t, :n], dc_prev
            )
            if n < batch:
                grad_pre[t, n:] = 0
            if t > 0:
                dh_total[t - 1, :n] = through_hh.add_to(dh_total[t - 1, :n], grad_pre[t, :n])
        dh0 = through_hh(grad_pre[0]) if ctx.needs_input_grad[2] else None

        grad_w_hh = None
        if ctx.needs_input_grad[1]:
            # dW_hh = Σ_t dpre_tᵀ · h_{t-1}: one product over all steps after the first.
            grad_w_hh = torch.zeros_like(weight_hh)
            if steps > 1:
                grad_w_hh.addmm_(grad_pre[1:].flatten(0, 1).t(), hs[:-1].flatten(0, 1))
            if not ctx.h0_is_zero:
                grad_w_hh.addmm_(grad_pre[0].t(), h0)
        return grad_pre, grad_w_hh, dh0, dc0, None, None


_StepBackward = Callable[[int, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor], None]


def _native_step_backward(
    t: int, gates: Tensor, tanh_c: Tensor, c_prev: Tensor, dh: Tensor, dc: Tensor, grad_pre: Tensor, dc_prev: Tensor
) -> None:
    """Step ``t`` of `_LayerRecurrence`'s backward in the C kernel: fills ``grad_pre``, adds to ``dc_prev``."""
    native.backward(gates, tanh_c, c_prev, dh, dc, grad_pre, dc_prev)


def _tensor_step_backward(gates: Tensor, tanh_cs: Tensor, c_prevs: Tensor) -> _StepBackward:
    """Step backward of `_LayerRecurrence` in tensor operations, their gradient-free factors computed for all steps at once."""
    factors, dc_from_dh = _backward_factors(gates, tanh_cs, c_prevs)
    H = tanh_cs.shape[-1]

    def step(
        t: int, gates: Tensor, tanh_c: Tensor, c_prev: Tensor, dh: Tensor, dc: Tensor, grad_pre: Tensor, dc_prev: Tensor
    ) -> None:
        n = dh.shape[0]
        dc = _gate_gradients(factors[t, :n], dc_from_dh[t, :n], dh, dc, grad_pre)
        dc_prev.addcmul_(dc, gates[:, H : 2 * H])  # C_prev reaches C through f

    return step


def _reverse_within_lengths(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of a time-major ``[T, B, ...]`` batch inside its own length.

    Padding stays where it is, so a reversed sequence still starts at step 0.
    """
    if lengths is None:
        return x.flip(0)
    steps = x.shape[0]
    t = torch.arange(steps, device=x.device).unsqueeze(1)
    lengths = lengths.to(x.device).unsqueeze(0)
    index = torch.where(t < lengths, lengths - 1 - t, t)
    index = index.view(steps, -1, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(0, index)


class LSTM(nn.Module):
    """A stack of `LSTMCell` layers, optionally bidirectional, over padded batches.

    ``forward(x, lengths=None, state=None)`` mirrors `torch.nn.LSTM`: returns
    ``output`` (``[T, B, D*H]``, or batch first) and ``(h_n, c_n)`` (``[layers*D, B, H]``).
    With ``lengths``, positions past a sequence's length are zero in ``output`` and never
    touch the final state, so padding cannot change any real result. A `PackedSequence`
    is accepted too and gives a `PackedSequence` back.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = dropout
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1
        self.layers = nn.ModuleList(
            nn.ModuleList(
                LSTMCell(input_size if layer == 0 else hidden_size * self.num_directions, hidden_size, bias)
                for _ in range(self.num_directions)
            )
            for layer in range(num_layers)
        )

    def forward(
        self,
        x: Tensor | PackedSequence,
        lengths: Tensor | None = None,
        state: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor | PackedSequence, tuple[Tensor, Tensor]]:
        """Run all layers and directions; see the class docstring for shapes."""
        packed = x if isinstance(x, PackedSequence) else None
        if packed is not None:
            x, lengths = pad_packed_sequence(packed)
        elif self.batch_first:
            x = x.transpose(0, 1)
        steps, batch = x.shape[0], x.shape[1]

        order = unsort = None
        if lengths is not None:
            lengths = torch.as_tensor(lengths).cpu()
            _check_lengths(lengths, steps, batch)
            if bool((lengths == steps).all()):
                lengths = None
            else:
                lengths, order = torch.sort(lengths, descending=True, stable=True)
                unsort = torch.empty_like(order)
                unsort[order] = torch.arange(batch)
                order, unsort = order.to(x.device), unsort.to(x.device)
                x = x.index_select(1, order)
        batch_sizes = _batch_sizes(lengths, steps, batch)

        zero_state = state is None
        if zero_state:
            zeros = x.new_zeros(self.num_layers * self.num_directions, batch, self.hidden_size)
            state = (zeros, zeros)
        elif order is not None:
            state = (state[0].index_select(1, order), state[1].index_select(1, order))

        h_n, c_n = [], []
        layer_input = x
        for layer, cells in enumerate(self.layers):
            if layer > 0 and self.dropout > 0 and self.training:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
            outputs = []
            for direction, cell in enumerate(cells):
                k = layer * self.num_directions + direction
                h0, c0 = state[0][k], state[1][k]
                hs, h_last, c_last = _run_direction(
                    cell, layer_input, h0, c0, lengths, batch_sizes, direction == 1, zero_state, unsort
                )
                outputs.append(hs)
                h_n.append(h_last)
                c_n.append(c_last)
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)

        output, h_n, c_n = layer_input, torch.stack(h_n), torch.stack(c_n)
        if unsort is not None:
            output, h_n, c_n = output.index_select(1, unsort), h_n.index_select(1, unsort), c_n.index_select(1, unsort)
        if packed is not None:
            return _repack_like(output, packed), (h_n, c_n)
        if self.batch_first:
            output = output.transpose(0, 1)
        return output, (h_n, c_n)

    @classmethod
    def from_torch(cls, lstm: nn.LSTM) -> LSTM:
        """An `LSTM` with a copy of a `torch.nn.LSTM`'s weights (``proj_size`` unsupported)."""
        if lstm.proj_size:
            raise ValueError("LSTM.from_torch: proj_size > 0 has no equivalent here")
        ours = cls(
            lstm.input_size,
            lstm.hidden_size,
            lstm.num_layers,
            lstm.bias,
            lstm.batch_first,
            lstm.dropout,
            lstm.bidirectional,
        )
        ours.to(dtype=lstm.weight_ih_l0.dtype, device=lstm.weight_ih_l0.device)
        with torch.no_grad():
            for layer, cells in enumerate(ours.layers):
                for direction, cell in enumerate(cells):
                    suffix = f"_l{layer}" + ("_reverse" if direction else "")
                    for name, param in cell.named_parameters():
                        param.copy_(getattr(lstm, name + suffix))
        return ours

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"bidirectional={self.bidirectional}, dropout={self.dropout}, batch_first={self.batch_first}"
        )


def _batch_sizes(lengths: Tensor | None, steps: int, batch: int) -> list[int]:
    """How many sequences of a length-sorted batch are still running at each step."""
    if lengths is None:
        return [batch] * steps
    return (lengths.unsqueeze(0) > torch.arange(steps).unsqueeze(1)).sum(1).tolist()


def _check_lengths(lengths: Tensor, steps: int, batch: int) -> None:
    if lengths.shape != (batch,):
        raise ValueError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
    if batch and (int(lengths.min()) < 1 or int(lengths.max()) > steps):
        raise ValueError(f"lengths must lie in [1, {steps}], got min {int(lengths.min())} max {int(lengths.max())}")


def _run_direction(
    cell: LSTMCell,
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    lengths: Tensor | None,
    batch_sizes: list[int],
    reverse: bool,
    h0_is_zero: bool = False,
    unsort: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One layer direction over a length-sorted, time-major batch: ``(outputs, h_n, c_n)``.

    ``h0_is_zero``: no initial state was given, so the first step can skip ``W_h·h0``.
    ``unsort`` (rows back to the caller's order) is only needed to record gates.
    """
    if reverse:
        x = _reverse_within_lengths(x, lengths)
    if _joint_product_applies(cell, x, h0, c0):
        hs, cs = _joint_recurrence(cell, x, h0, c0, batch_sizes, h0_is_zero)
    else:
        x_proj = _input_projection(cell, x)  # W_x·x_t + b for every step in one product
        inputs = _autocast_inputs(x_proj, cell.weight_hh, h0, c0)
        with _autocast_off(x):
            hs, cs = _LayerRecurrence.apply(*inputs, batch_sizes, h0_is_zero)
    if _ACTIVE_RECORDER is not None:
        _record_layer(_ACTIVE_RECORDER, cell, x, h0, hs, cs, lengths, reverse, unsort)
    if lengths is None:
        h_last, c_last = hs[-1], cs[-1]
    else:
        last = (lengths - 1).to(hs.device)
        rows = torch.arange(hs.shape[1], device=hs.device)
        h_last, c_last = hs[last, rows], cs[last, rows]
    if reverse:
        hs = _reverse_within_lengths(hs, lengths)
    return hs, h_last, c_last


@torch.no_grad()
def _record_layer(
    recorder: GateRecorder,
    cell: LSTMCell,
    x: Tensor,
    h0: Tensor,
    hs: Tensor,
    cs: Tensor,
    lengths: Tensor | None,
    reverse: bool,
    unsort: Tensor | None,
) -> None:
    """Recompute a layer run's gates from its inputs and states (one product) and record them."""
    x_proj = _input_projection(cell, x)
    h_prev = torch.cat([h0.unsqueeze(0), hs[:-1]])
    _, _, gates = lstm_step((x_proj + F.linear(h_prev, cell.weight_hh)).flatten(0, 1), cs.flatten(0, 1))
    tensors = [t.view_as(x_proj[..., : cell.hidden_size]) for t in gates] + [cs, hs]
    if lengths is not None:
        real = (torch.arange(hs.shape[0]).unsqueeze(1) < lengths.unsqueeze(0)).unsqueeze(2).to(hs.device)
        tensors = [t * real for t in tensors]
    if reverse:
        tensors = [_reverse_within_lengths(t, lengths) for t in tensors]
    if unsort is not None:
        tensors = [t.index_select(1, unsort) for t in tensors]
        lengths = lengths.index_select(0, unsort.cpu())
    recorder.records.append(GateRecord(cell, reverse, *(t.detach() for t in tensors), lengths=lengths))


def _joint_product_applies(cell: LSTMCell, x: Tensor, h0: Tensor, c0: Tensor) -> bool:
    """Inference in float32 on CPU with oneDNN: `_joint_recurrence` can run the layer."""
    tensors = (x, h0, c0, *cell.parameters())
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    return (
        not needs_grad
        and all(t.dtype == torch.float32 for t in tensors)
        and not torch.is_autocast_enabled(x.device.type)
        and _onednn_usable(cell.weight_hh)
    )


def _joint_recurrence(
    cell: LSTMCell, x: Tensor, h0: Tensor, c0: Tensor, batch_sizes: list[int], h0_is_zero: bool = False
) -> tuple[Tensor, Tensor]:
    """Inference: ``W·[h, x] + b`` as one product per step, the equations' own form.

    Without a backward pass to feed, joining ``[h_{t-1}, x_t]`` into one oneDNN product
    per step is faster than projecting all inputs first and adding them step by step.
    With ``h0_is_zero`` the first step multiplies ``W_x·x_0`` alone. Returns every step's
    ``h`` and ``C`` ``[T, B, H]``, zero on padding (as `_LayerRecurrence`); ``h`` is a view
    into the buffer of joined rows.
    """
    steps, batch, _ = x.shape
    H = cell.hidden_size
    weight, bias = _joint_weights(cell)
    hx = x.new_empty(steps + 1, batch, H + x.shape[2])  # row t holds [h_{t-1}, x_t]; h_t goes to row t+1
    hx[:steps, :, H:] = x
    hx[0, :, :H] = h0
    hs, cs = hx[1:, :, :H], x.new_empty(steps, batch, H)  # hs: a view, h_t already sits in row t+1
    hx_rows, h_rows, c_rows = hx.unbind(0), hs.unbind(0), cs.unbind(0)  # per-step views made at once
    tanh_c = x.new_empty(batch, H)
    c_prev = c0
    for t, n in enumerate(batch_sizes):
        if t == 0 and h0_is_zero:
            pre = _joint_preactivations(x[0], _packed(cell.weight_ih), bias)  # W·[0, x] = W_x·x
        else:
            pre = _joint_preactivations(hx_rows[t][:n], weight, bias)
        _forward_step(pre, c_prev[:n], pre, c_rows[t][:n], tanh_c[:n], h_rows[t][:n])
        c_prev = c_rows[t]
    if batch_sizes[-1] < batch:  # rows past a sequence's end were left as they were: zero them
        finished = torch.arange(batch) >= torch.tensor(batch_sizes).unsqueeze(1)
        finished = finished.unsqueeze(2).to(x.device)
        hs.masked_fill_(finished, 0)
        cs.masked_fill_(finished, 0)
    return hs, cs


def _joint_step(cell: LSTMCell, x: Tensor, h_prev: Tensor, c_prev: Tensor) -> tuple[Tensor, Tensor]:
    """One inference step as `_joint_recurrence` takes it: ``W·[h, x] + b`` in one packed product."""
    pre = _joint_preactivations(torch.cat([h_prev, x], dim=1), *_joint_weights(cell))
    c, tanh_c, h = torch.empty_like(c_prev), torch.empty_like(c_prev), torch.empty_like(c_prev)
    _forward_step(pre, c_prev, pre, c, tanh_c, h)
    return h, c


def _joint_weights(cell: LSTMCell) -> tuple[Tensor, Tensor | None]:
    """``W = [W_h, W_x]`` packed for oneDNN, and ``b``, for products with rows ``[h, x]``."""
    return _packed(cell.weight_hh, cell.weight_ih), cell.combined_bias()


def _joint_preactivations(hx: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``W·[h, x] + b`` for rows ``hx`` with `_joint_weights`: one oneDNN product."""
    return torch.ops.mkldnn._linear_pointwise(hx, weight, bias, "none", [], "")


def _autocast_inputs(*tensors: Tensor | None) -> list[Tensor | None]:
    """Under autocast, the recurrence runs wholly in the autocast dtype (as cuDNN's LSTM does)."""
    device_type = tensors[0].device.type
    if not torch.is_autocast_enabled(device_type):
        return list(tensors)
    dtype = torch.get_autocast_dtype(device_type)
    return [None if t is None else t.to(dtype) for t in tensors]


def _autocast_off(x: Tensor) -> torch.autocast:
    """A context in which autocast leaves the (already cast) recurrence alone."""
    return torch.autocast(x.device.type, enabled=False)


def _input_projection(cell: LSTMCell, x: Tensor) -> Tensor:
    """``W_x·x_t + b`` for all steps of ``x`` ``[T, B, I]`` at once."""
    return F.linear(x, cell.weight_ih, cell.combined_bias())


def _repack_like(output: Tensor, packed: PackedSequence) -> PackedSequence:
    """Pack a padded time-major output with the same order and batch sizes as ``packed``."""
    sorted_indices = packed.sorted_indices
    if sorted_indices is not None:
        output = output.index_select(1, sorted_indices)
    steps = len(packed.batch_sizes)
    data = torch.cat([output[t, : int(packed.batch_sizes[t])] for t in range(steps)])
    return PackedSequence(data, packed.batch_sizes, sorted_indices, packed.unsorted_indices)
