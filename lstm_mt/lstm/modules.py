"""The public LSTM modules: `LSTMCell` (one step) and `LSTM` (layers, directions, padding).

Both keep `torch.nn.LSTM`'s parameters (see `lstm_mt.lstm.equations` for the equations and
the weight layout) and run them through the fast path's two entry points,
`fastpath.cell_step` and `fastpath.run_layer`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from lstm_mt.lstm import fastpath, masks, padding
from lstm_mt.lstm.equations import GATE_NAMES, GateActivations, lstm_step, preactivations
from lstm_mt.lstm.recording import active_recorder
from lstm_mt.lstm.variants import CellNoise, CellVariant, variant_step


class LSTMCell(nn.Module):
    """One LSTM step: ``(h, c) = cell(x, (h_prev, c_prev))``.

    Same parameters and results as `torch.nn.LSTMCell`; `from_torch` copies one.
    `forward` takes the fast path; `step_with_gates` spells the equations out and also
    returns the gate values, for inspection.

    ``variant`` switches on variant equations (`lstm_mt.lstm.variants`); they add parameters
    (``peephole_weight`` [3H]; ``ln_weight_ih``, ``ln_weight_hh`` [4H], ``ln_weight_c``,
    ``ln_bias_c`` [H]) after torch's. With recurrent or input dropout, a training step
    needs the sequence's masks: ``noise = cell.sequence_noise(x)`` once, then
    ``cell(x_t, state, noise)`` at every step.
    ``int8_product``: ``W·[h, x] + b`` with int8 weights for decoding (`lstm_mt.lstm.int8.attach`).
    """

    int8_product: Callable[[Tensor], Tensor] | None = None

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, variant: CellVariant | None = None
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.variant = CellVariant() if variant is None else dataclasses.replace(variant)
        self.variant.check()
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size))
            self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        H, v = hidden_size, self.variant
        self.peephole_weight = nn.Parameter(torch.empty(3 * H)) if v.peepholes else None
        self.ln_weight_ih = nn.Parameter(torch.empty(4 * H)) if v.layer_norm else None
        self.ln_weight_hh = nn.Parameter(torch.empty(4 * H)) if v.layer_norm else None
        self.ln_weight_c = nn.Parameter(torch.empty(H)) if v.layer_norm else None
        self.ln_bias_c = nn.Parameter(torch.empty(H)) if v.layer_norm else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-1/√H, 1/√H), as `torch.nn.LSTMCell` does; layer-norm gains 1 and bias 0."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for name, weight in self.named_parameters():
            if not name.startswith("ln_"):
                nn.init.uniform_(weight, -bound, bound)
        for gain in (self.ln_weight_ih, self.ln_weight_hh, self.ln_weight_c):
            if gain is not None:
                nn.init.ones_(gain)
        if self.ln_bias_c is not None:
            nn.init.zeros_(self.ln_bias_c)

    def gate_parameters(self) -> dict[str, dict[str, Tensor | None]]:
        """Views of each gate's weights: ``{"forget": {"W_x": ..., "W_h": ..., "b": ...}, ...}``.

        ``W_x`` and ``W_h`` are the input and hidden halves of ``W_g`` in the equations;
        ``b`` is ``b_ih + b_hh`` (a copy, since it is a sum), or None without bias.
        """
        H = self.hidden_size
        gates: dict[str, dict[str, Tensor | None]] = {}
        for k, name in enumerate(GATE_NAMES):
            rows = slice(k * H, (k + 1) * H)
            bias = None if self.bias_ih is None else self.bias_ih[rows] + self.bias_hh[rows]
            gates[name] = {"W_x": self.weight_ih[rows], "W_h": self.weight_hh[rows], "b": bias}
        return gates

    def combined_bias(self) -> Tensor | None:
        """``b = b_ih + b_hh`` (PyTorch keeps two biases where the equations have one)."""
        return None if self.bias_ih is None else self.bias_ih + self.bias_hh

    def forward(
        self,
        x: Tensor,
        state: tuple[Tensor, Tensor] | None = None,
        noise: CellNoise | None = None,
        weights: fastpath.StepWeights | None = None,
    ) -> tuple[Tensor, Tensor]:
        """One step for a batch: ``x`` is ``[batch, input]``; returns ``(h, c)``, each ``[batch, hidden]``.

        ``noise``: the sequence's dropout masks from `sequence_noise` (variant cells in training).
        ``weights``: `step_weights` prepared once for all steps of a sequence (saves a cast per step under autocast).
        """
        noise = self.step_noise(x, noise)
        recorder = active_recorder()
        if recorder is not None:
            h, c, gates = self.step_with_gates(x, state, noise)
            recorder.record_step(self, gates, c, h)
            return h, c
        h_prev, c_prev = self._state_or_zeros(x, state)
        return fastpath.cell_step(self, x, h_prev, c_prev, noise, weights)

    def step_weights(self, device_type: str | None = None) -> fastpath.StepWeights:
        """The weights as every step of a sequence uses them, for ``forward(..., weights=...)``.

        Made under the current autocast state of ``device_type`` (default: the weights' device).
        """
        return fastpath.step_weights(self, device_type or self.weight_ih.device.type)

    def step_with_gates(
        self, x: Tensor, state: tuple[Tensor, Tensor] | None = None, noise: CellNoise | None = None
    ) -> tuple[Tensor, Tensor, GateActivations]:
        """`forward` written out with `lstm_step` (`variant_step` for a variant), also returning i, f, C̃ and o.

        ``noise`` is used as given (zoneout included: see `step_noise`).
        """
        h_prev, c_prev = self._state_or_zeros(x, state)
        if not self.variant.is_plain():
            return variant_step(self, x, h_prev, c_prev, noise)
        return lstm_step(preactivations(self, x, h_prev), c_prev)

    def sequence_noise(self, x: Tensor) -> CellNoise | None:
        """Recurrent and input dropout masks for one sequence per row of ``x`` ``[..., B, I]`` (None: none needed).

        Only in training and with those variants on; the caller keeps them for every step.
        """
        v = self.variant
        if not self.training or (v.recurrent_dropout == 0 and v.input_dropout == 0):
            return None
        batch = x.shape[-2]
        h_mask = _dropout_mask(v.recurrent_dropout, (batch, self.hidden_size), x)
        return CellNoise(h_mask=h_mask, x_mask=_dropout_mask(v.input_dropout, (batch, self.input_size), x))

    def step_noise(self, x: Tensor, sequence: CellNoise | None, steps: int | None = None) -> CellNoise | None:
        """The sequence's masks with zoneout's d for one step (``[B, H]``) or ``steps`` steps (``[T, B, H]``).

        Raises ValueError in training when dropout masks are needed and ``sequence`` has none.
        """
        v = self.variant
        if v.is_plain():
            return None
        if sequence is None and self.training and (v.recurrent_dropout or v.input_dropout):
            raise ValueError(
                "LSTMCell with recurrent_dropout/input_dropout in training needs the sequence's masks: "
                "noise = cell.sequence_noise(x), then cell(x_t, state, noise) at every step"
            )
        sequence = sequence or CellNoise()
        shape = (x.shape[-2], self.hidden_size) if steps is None else (steps, x.shape[-2], self.hidden_size)
        return dataclasses.replace(
            sequence,
            keep_c=_zoneout_keep(v.zoneout_c, shape, x, self.training),
            keep_h=_zoneout_keep(v.zoneout_h, shape, x, self.training),
        )

    def _state_or_zeros(self, x: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
        if state is not None:
            return state
        zeros = x.new_zeros(x.shape[0], self.hidden_size)
        return zeros, zeros

    def _check_plain_for_torch(self) -> None:
        if not self.variant.is_plain():
            raise ValueError(f"torch.nn.LSTM has no equivalent of the variant ({self.variant.describe()})")

    @classmethod
    def from_torch(cls, cell: nn.LSTMCell) -> LSTMCell:
        """An `LSTMCell` with a copy of a `torch.nn.LSTMCell`'s weights."""
        ours = cls(cell.input_size, cell.hidden_size, bias=cell.bias)
        ours.to(dtype=cell.weight_ih.dtype, device=cell.weight_ih.device)
        _copy_parameters(ours.named_parameters(), cell, to_torch=False)
        return ours

    def to_torch(self) -> nn.LSTMCell:
        """A `torch.nn.LSTMCell` with a copy of this cell's weights (same dtype and device); plain cells only."""
        self._check_plain_for_torch()
        first = self.weight_ih
        theirs = nn.LSTMCell(self.input_size, self.hidden_size, self.bias, device=first.device, dtype=first.dtype)
        _copy_parameters(self.named_parameters(), theirs, to_torch=True)
        return theirs

    def extra_repr(self) -> str:
        variant = self.variant.describe()
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}" + (f", {variant}" if variant else "")


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
        variant: CellVariant | None = None,
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
                LSTMCell(input_size if layer == 0 else hidden_size * self.num_directions, hidden_size, bias, variant)
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
        packed = None
        if isinstance(x, PackedSequence):
            packed = x
            x, lengths = pad_packed_sequence(packed)
        elif self.batch_first:
            x = x.transpose(0, 1)
        steps, batch = x.shape[0], x.shape[1]

        order = unsort = None
        if lengths is not None:
            lengths = torch.as_tensor(lengths).cpu()
            padding.check_lengths(lengths, steps, batch)
            if bool((lengths == steps).all()):
                lengths = None
            else:
                lengths, order = torch.sort(lengths, descending=True, stable=True)
                unsort = torch.empty_like(order)
                unsort[order] = torch.arange(batch)
                order, unsort = order.to(x.device), unsort.to(x.device)
                x = x.index_select(1, order)
        batch_sizes = padding.batch_sizes(lengths, steps, batch)

        zero_state = state is None
        if state is None:
            zeros = x.new_zeros(self.num_layers * self.num_directions, batch, self.hidden_size)
            h0s, c0s = zeros, zeros
        elif order is not None:
            h0s, c0s = state[0].index_select(1, order), state[1].index_select(1, order)
        else:
            h0s, c0s = state

        h_ns, c_ns = [], []
        layer_input = x
        for layer, cells in enumerate(self.cells()):
            if layer > 0 and self.dropout > 0 and self.training:
                layer_input = masks.dropout(layer_input, self.dropout)
            outputs = []
            for direction, cell in enumerate(cells):
                k = layer * self.num_directions + direction
                hs, h_last, c_last = _run_direction(
                    cell, layer_input, h0s[k], c0s[k], lengths, batch_sizes, direction == 1, zero_state, unsort
                )
                outputs.append(hs)
                h_ns.append(h_last)
                c_ns.append(c_last)
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)

        output, h_n, c_n = layer_input, torch.stack(h_ns), torch.stack(c_ns)
        if unsort is not None:
            output, h_n, c_n = output.index_select(1, unsort), h_n.index_select(1, unsort), c_n.index_select(1, unsort)
        if packed is not None:
            return padding.repack_like(output, packed), (h_n, c_n)
        if self.batch_first:
            output = output.transpose(0, 1)
        return output, (h_n, c_n)

    def cells(self) -> list[list[LSTMCell]]:
        """``cells()[layer][direction]``: each layer's `LSTMCell` per direction (0 forward, 1 backward)."""
        return [[cast(LSTMCell, cell) for cell in cast(nn.ModuleList, cells)] for cells in self.layers]

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
        first = next(lstm.parameters())
        ours.to(dtype=first.dtype, device=first.device)
        _copy_parameters(ours._torch_named_parameters(), lstm, to_torch=False)
        return ours

    def to_torch(self) -> nn.LSTM:
        """A `torch.nn.LSTM` with a copy of these weights: all layers and directions, ``batch_first`` kept (plain cells).

        It takes the same inputs as this LSTM, except that variable lengths go in as a
        `PackedSequence` (``pack_padded_sequence``) rather than a ``lengths`` argument.
        """
        self.cells()[0][0]._check_plain_for_torch()
        first = self.cells()[0][0].weight_ih
        theirs = nn.LSTM(
            self.input_size,
            self.hidden_size,
            self.num_layers,
            self.bias,
            self.batch_first,
            self.dropout,
            self.bidirectional,
            device=first.device,
            dtype=first.dtype,
        )
        _copy_parameters(self._torch_named_parameters(), theirs, to_torch=True)
        theirs.flatten_parameters()  # cuDNN wants its weights in one block
        return theirs

    def _torch_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Each parameter under its `torch.nn.LSTM` name: ``weight_ih_l1_reverse`` is layer 1's backward ``weight_ih``."""
        for layer, cells in enumerate(self.cells()):
            for direction, cell in enumerate(cells):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                for name, param in cell.named_parameters():
                    yield name + suffix, param

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"bidirectional={self.bidirectional}, dropout={self.dropout}, batch_first={self.batch_first}"
        )


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
        x = padding.reverse_within_lengths(x, lengths)
    noise = cell.step_noise(x, cell.sequence_noise(x), steps=x.shape[0])
    hs, cs = fastpath.run_layer(cell, x, h0, c0, batch_sizes, h0_is_zero, noise)
    recorder = active_recorder()
    if recorder is not None:
        recorder.record_layer(cell, x, h0, c0, hs, cs, lengths, reverse, unsort, noise)
    if lengths is None:
        h_last, c_last = hs[-1], cs[-1]
    else:
        last = (lengths - 1).to(hs.device)
        rows = torch.arange(hs.shape[1], device=hs.device)
        h_last, c_last = hs[last, rows], cs[last, rows]
    if reverse:
        hs = padding.reverse_within_lengths(hs, lengths)
    return hs, h_last, c_last


def _dropout_mask(p: float, shape: tuple[int, ...], like: Tensor) -> Tensor | None:
    """`masks.dropout_mask` of ``shape``, None for p = 0."""
    return None if p == 0 else masks.dropout_mask(p, shape, like)


def _zoneout_keep(p: float, shape: tuple[int, ...], like: Tensor, training: bool) -> Tensor | float:
    """Zoneout's d: Bernoulli(p) per unit in training (`masks.bernoulli`), its expectation p in evaluation
    (0.0: off)."""
    if p == 0 or not training:
        return float(p)
    return masks.bernoulli(p, shape, like)


def _copy_parameters(ours: Iterable[tuple[str, nn.Parameter]], theirs: nn.Module, to_torch: bool) -> None:
    """Copy each of our parameters, listed under its name in the torch module ``theirs``, to or from it."""
    with torch.no_grad():
        for name, param in ours:
            their_param = getattr(theirs, name)
            if to_torch:
                their_param.copy_(param)
            else:
                param.copy_(their_param)
