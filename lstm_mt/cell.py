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

Speed lives in one place, `_LayerRecurrence`: a whole layer direction runs with its input
projection done for all time steps in one matrix product, the recurrence in a tight loop
that skips padded positions, and a hand-written backward pass that computes the weight
gradients once over the whole sequence instead of once per step. `lstm_step` holds the
gate equations both paths share.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

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


class LSTMCell(nn.Module):
    """One LSTM step: ``(h, c) = cell(x, (h_prev, c_prev))``.

    Same parameters and results as `torch.nn.LSTMCell`; `from_torch` copies one.
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

    def gate_parameters(self) -> dict[str, dict[str, Optional[Tensor]]]:
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

    def preactivations(self, x: Tensor, h_prev: Tensor) -> Tensor:
        """``W·[h, x] + b`` for all four gates at once: ``[batch, 4 * hidden]``."""
        pre = F.linear(x, self.weight_ih, self.bias_ih)
        if self.bias_hh is not None:
            pre = pre + self.bias_hh
        return torch.addmm(pre, h_prev, self.weight_hh.t())

    def forward(
        self, x: Tensor, state: Optional[tuple[Tensor, Tensor]] = None
    ) -> tuple[Tensor, Tensor]:
        """One step for a batch: ``x`` is ``[batch, input]``; returns ``(h, c)``, each ``[batch, hidden]``."""
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden_size)
            state = (zeros, zeros)
        h_prev, c_prev = state
        h, c, _ = lstm_step(self.preactivations(x, h_prev), c_prev)
        return h, c

    @classmethod
    def from_torch(cls, cell: nn.LSTMCell) -> "LSTMCell":
        """An `LSTMCell` with a copy of a `torch.nn.LSTMCell`'s weights."""
        ours = cls(cell.input_size, cell.hidden_size, bias=cell.bias)
        ours.to(dtype=cell.weight_ih.dtype, device=cell.weight_ih.device)
        with torch.no_grad():
            for name, _ in ours.named_parameters():
                getattr(ours, name).copy_(getattr(cell, name))
        return ours

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}"


class _RepeatedProduct:
    """``other + x @ weight.T`` for a weight used at every time step.

    On CPU in float32 the weight is packed once for oneDNN (PyTorch's bundled matmul
    library, the one `torch.nn.LSTM` uses), which is markedly faster than the default
    matmul for these thin products; elsewhere, or if oneDNN is unavailable, `torch.addmm`.
    """

    def __init__(self, weight: Tensor) -> None:
        self.weight_t = weight.t()
        self.packed = _onednn_pack(weight)

    def __call__(self, x: Tensor, other: Tensor) -> Tensor:
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(x, other, self.packed, None, "add")
        return torch.addmm(other, x, self.weight_t)

    def product(self, x: Tensor) -> Tensor:
        """``x @ weight.T``."""
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "none", [], "")
        return x.mm(self.weight_t)


_ONEDNN_WORKS: Optional[bool] = None  # decided on first use: does this build run the packed op?


def _onednn_pack(weight: Tensor) -> Optional[Tensor]:
    """The weight packed for oneDNN, or None where oneDNN cannot be used for it."""
    global _ONEDNN_WORKS
    if weight.device.type != "cpu" or weight.dtype != torch.float32 or _ONEDNN_WORKS is False:
        return None
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)
        if _ONEDNN_WORKS is None:
            probe = torch.ops.mkldnn._linear_pointwise.binary(
                weight.new_ones(1, weight.shape[1]), weight.new_zeros(1, weight.shape[0]), packed, None, "add"
            )
            _ONEDNN_WORKS = bool(torch.allclose(probe[0], weight.detach().sum(1), rtol=1e-4, atol=1e-4))
    except (AttributeError, RuntimeError):
        _ONEDNN_WORKS = False
    return packed if _ONEDNN_WORKS else None


class _LayerRecurrence(torch.autograd.Function):
    """The recurrence of one layer direction over a whole (length-sorted) batch.

    Inputs: ``x_proj[t] = W_x·x_t + b`` for all steps ``[T, B, 4H]``, ``weight_hh``,
    initial ``h0, c0`` ``[B, H]`` and ``batch_sizes[t]``, the number of sequences still
    running at step t (the batch is sorted by length, longest first, so they are the
    first rows). Returns every step's ``h`` and ``C`` as ``[T, B, H]``, zero on padding.

    Forward applies `lstm_step`'s equations in place into preallocated buffers; backward
    runs only the dh/dC recurrence step by step and leaves the weight gradient to one
    large matrix product over all steps.
    """

    @staticmethod
    def forward(ctx, x_proj, weight_hh, h0, c0, batch_sizes):  # type: ignore[override]
        steps, batch, _ = x_proj.shape
        H = weight_hh.shape[1]
        recurrent = _RepeatedProduct(weight_hh)
        hs = x_proj.new_empty(steps, batch, H)
        cs = x_proj.new_empty(steps, batch, H)
        training = any(ctx.needs_input_grad[:4])
        gates = x_proj.new_empty(steps, batch, 4 * H) if training else None
        tanh_cs = x_proj.new_empty(steps, batch, H) if training else None
        h_prev, c_prev = h0, c0
        for t, n in enumerate(batch_sizes):
            pre = recurrent(h_prev[:n], x_proj[t, :n])  # W·[h, x] + b for all four gates
            act = gates[t, :n] if training else pre
            torch.sigmoid(pre[:, : 2 * H], out=act[:, : 2 * H])  # i = σ(·), f = σ(·)
            torch.tanh(pre[:, 2 * H : 3 * H], out=act[:, 2 * H : 3 * H])  # C̃ = tanh(·)
            torch.sigmoid(pre[:, 3 * H :], out=act[:, 3 * H :])  # o = σ(·)
            i, f, g, o = act.chunk(4, dim=1)
            c = torch.mul(f, c_prev[:n], out=cs[t, :n]).addcmul_(i, g)  # C = f*C_prev + i*C̃
            if training:
                torch.mul(torch.tanh(c, out=tanh_cs[t, :n]), o, out=hs[t, :n])  # h = o*tanh(C)
            else:
                torch.tanh(c, out=hs[t, :n]).mul_(o)  # h = o*tanh(C)
            if n < batch:
                hs[t, n:] = 0
                cs[t, n:] = 0
            h_prev, c_prev = hs[t], cs[t]
        if training:
            ctx.save_for_backward(weight_hh, h0, c0, hs, cs, gates, tanh_cs)
            ctx.batch_sizes = batch_sizes
        return hs, cs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_hs, grad_cs):  # type: ignore[override]
        weight_hh, h0, c0, hs, cs, gates, tanh_cs = ctx.saved_tensors
        batch_sizes = ctx.batch_sizes
        steps, batch, H = hs.shape
        factors, dc_from_dh = _backward_factors(gates, tanh_cs, cs, c0)
        forget = gates[:, :, H : 2 * H]
        back_through_hh = _RepeatedProduct(weight_hh.t().contiguous())  # dpre @ W_hh

        grad_pre = gates.new_empty(steps, batch, 4 * H)
        dh_total = grad_hs.clone()  # dL/dh_t: from the outputs, plus from step t+1 below
        dc_total = grad_cs.clone()  # dL/dC_t likewise
        dh0 = dc0 = None
        for t in range(steps - 1, -1, -1):
            n = batch_sizes[t]
            dh, dc = dh_total[t, :n], dc_total[t, :n]
            dc.addcmul_(dh, dc_from_dh[t, :n])  # h = o*tanh(C) also depends on C
            pre = grad_pre[t, :n]
            torch.mul(factors[t, :n, : 3 * H].unflatten(1, (3, H)), dc.unsqueeze(1),
                      out=pre[:, : 3 * H].unflatten(1, (3, H)))  # dpre for i, f, C̃
            torch.mul(factors[t, :n, 3 * H :], dh, out=pre[:, 3 * H :])  # dpre for o
            if n < batch:
                grad_pre[t, n:] = 0
            if t > 0:
                dh_total[t - 1, :n] = back_through_hh(pre, dh_total[t - 1, :n])
                dc_total[t - 1, :n].addcmul_(dc, forget[t, :n])
            else:
                dh0 = back_through_hh.product(pre)
                dc0 = dc * forget[0]

        grad_w_hh = None
        if ctx.needs_input_grad[1]:
            # dW_hh = Σ_t dpre_tᵀ · h_{t-1}: one product over all steps after the first.
            grad_w_hh = grad_pre[0].t().mm(h0)
            if steps > 1:
                grad_w_hh.addmm_(grad_pre[1:].flatten(0, 1).t(), hs[:-1].flatten(0, 1))
        return grad_pre, grad_w_hh, dh0, dc0, None


def _backward_factors(gates: Tensor, tanh_cs: Tensor, cs: Tensor, c0: Tensor) -> tuple[Tensor, Tensor]:
    """The parts of the gate derivatives that do not depend on the backward recurrence.

    With σ' = σ(1-σ) and tanh' = 1 - tanh², for every step at once:
    ``dpre_i = dC·C̃·i(1-i)``, ``dpre_f = dC·C_prev·f(1-f)``, ``dpre_C̃ = dC·i·(1-C̃²)``,
    ``dpre_o = dh·tanh(C)·o(1-o)``, and ``dC += dh·o·(1-tanh²C)``. Returns the four
    factors stacked like the gates, and the last one.
    """
    i, f, g, o = gates.chunk(4, dim=2)
    factors = torch.empty_like(gates)
    f_i, f_f, f_g, f_o = factors.chunk(4, dim=2)
    torch.addcmul(i, i, i, value=-1, out=f_i).mul_(g)
    torch.addcmul(f, f, f, value=-1, out=f_f)
    f_f[0].mul_(c0)
    f_f[1:].mul_(cs[:-1])
    torch.mul(g, g, out=f_g).neg_().add_(1).mul_(i)
    torch.addcmul(o, o, o, value=-1, out=f_o).mul_(tanh_cs)
    dc_from_dh = torch.mul(tanh_cs, tanh_cs).neg_().add_(1).mul_(o)
    return factors, dc_from_dh


def _reverse_within_lengths(x: Tensor, lengths: Optional[Tensor]) -> Tensor:
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
        lengths: Optional[Tensor] = None,
        state: Optional[tuple[Tensor, Tensor]] = None,
    ) -> tuple[Tensor | PackedSequence, tuple[Tensor, Tensor]]:
        """Run all layers and directions; see the class docstring for shapes."""
        packed = x if isinstance(x, PackedSequence) else None
        if packed is not None:
            x, lengths = pad_packed_sequence(packed)
        elif self.batch_first:
            x = x.transpose(0, 1)
        steps, batch = x.shape[0], x.shape[1]

        order = None
        if lengths is not None:
            lengths = torch.as_tensor(lengths).cpu()
            _check_lengths(lengths, steps, batch)
            if bool((lengths == steps).all()):
                lengths = None
            else:
                lengths, order = torch.sort(lengths, descending=True, stable=True)
                x = x.index_select(1, order.to(x.device))
        batch_sizes = [batch] * steps if lengths is None else (lengths.unsqueeze(0) > torch.arange(steps).unsqueeze(1)).sum(1).tolist()

        if state is None:
            zeros = x.new_zeros(self.num_layers * self.num_directions, batch, self.hidden_size)
            state = (zeros, zeros)
        elif order is not None:
            state = tuple(s.index_select(1, order.to(s.device)) for s in state)

        h_n, c_n = [], []
        layer_input = x
        for layer, cells in enumerate(self.layers):
            if layer > 0 and self.dropout > 0 and self.training:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
            outputs = []
            for direction, cell in enumerate(cells):
                k = layer * self.num_directions + direction
                hs, h_last, c_last = _run_direction(
                    cell, layer_input, state[0][k], state[1][k], lengths, batch_sizes, reverse=direction == 1
                )
                outputs.append(hs)
                h_n.append(h_last)
                c_n.append(c_last)
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)

        output, h_n, c_n = layer_input, torch.stack(h_n), torch.stack(c_n)
        if order is not None:
            unsort = torch.empty_like(order)
            unsort[order] = torch.arange(batch)
            unsort = unsort.to(output.device)
            output, h_n, c_n = output.index_select(1, unsort), h_n.index_select(1, unsort), c_n.index_select(1, unsort)
        if packed is not None:
            return _repack_like(output, packed), (h_n, c_n)
        if self.batch_first:
            output = output.transpose(0, 1)
        return output, (h_n, c_n)

    @classmethod
    def from_torch(cls, lstm: nn.LSTM) -> "LSTM":
        """An `LSTM` with a copy of a `torch.nn.LSTM`'s weights (``proj_size`` unsupported)."""
        if lstm.proj_size:
            raise ValueError("LSTM.from_torch: proj_size > 0 has no equivalent here")
        ours = cls(
            lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.bias,
            lstm.batch_first, lstm.dropout, lstm.bidirectional,
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
    lengths: Optional[Tensor],
    batch_sizes: list[int],
    reverse: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """One layer direction over a length-sorted, time-major batch: ``(outputs, h_n, c_n)``."""
    bias = None
    if cell.bias_ih is not None:
        bias = cell.bias_ih + cell.bias_hh
    x_proj = F.linear(x, cell.weight_ih, bias)  # W_x·x_t + b for every step in one product
    if reverse:
        x_proj = _reverse_within_lengths(x_proj, lengths)
    hs, cs = _LayerRecurrence.apply(x_proj, cell.weight_hh, h0, c0, batch_sizes)
    if lengths is None:
        h_last, c_last = hs[-1], cs[-1]
    else:
        last = (lengths - 1).to(hs.device)
        rows = torch.arange(hs.shape[1], device=hs.device)
        h_last, c_last = hs[last, rows], cs[last, rows]
    if reverse:
        hs = _reverse_within_lengths(hs, lengths)
    return hs, h_last, c_last


def _repack_like(output: Tensor, packed: PackedSequence) -> PackedSequence:
    """Pack a padded time-major output with the same order and batch sizes as ``packed``."""
    sorted_indices = packed.sorted_indices
    if sorted_indices is not None:
        output = output.index_select(1, sorted_indices)
    steps = len(packed.batch_sizes)
    data = torch.cat([output[t, : int(packed.batch_sizes[t])] for t in range(steps)])
    return PackedSequence(data, packed.batch_sizes, sorted_indices, packed.unsorted_indices)
