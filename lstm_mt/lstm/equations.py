"""The LSTM equations for one time step, ``[h, x]`` the previous hidden state joined with the input::

    i  = σ(W_i·[h, x] + b_i)        input gate: how much of the candidate to write
    f  = σ(W_f·[h, x] + b_f)        forget gate: how much of the old cell state to keep
    o  = σ(W_o·[h, x] + b_o)        output gate: how much of the cell state to show
    C̃  = tanh(W_C·[h, x] + b_C)     candidate cell state
    C  = f * C_prev + i * C̃
    h  = o * tanh(C)

Storage follows `torch.nn.LSTM`, so weights copy both ways: ``W_g·[h, x]`` is kept as
``weight_ih[g]·x + weight_hh[g]·h`` with the four gates stacked in the order i, f, C̃
(called ``g`` by PyTorch), o, and ``b = bias_ih + bias_hh``.

`lstm_step` is the textbook form of one step. The code that runs in training and decoding
(`lstm_mt.lstm.fastpath`) applies the very same equations arranged for speed; the tests
check it against `lstm_step` and `torch.nn.LSTM`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

GATE_NAMES = ("input", "forget", "candidate", "output")  # row blocks of the fused weights


class GateActivations(NamedTuple):
    """The four gate values of one step, after their non-linearities."""

    i: Tensor
    f: Tensor
    g: Tensor  # the candidate cell state C̃
    o: Tensor


class CellWeights(Protocol):
    """What the fast path and the gate recorder read from a cell: `torch.nn.LSTMCell`'s weight layout."""

    @property
    def weight_ih(self) -> Tensor: ...

    @property
    def weight_hh(self) -> Tensor: ...

    def combined_bias(self) -> Tensor | None:
        """``b = b_ih + b_hh``, or None without bias."""
        ...

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]: ...


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


def input_projection(cell: CellWeights, x: Tensor, bias: bool = True) -> Tensor:
    """``W_x·x + b`` (or ``W_x·x``), the input's share of every gate, for any leading shape of ``x`` (all steps at once)."""
    return F.linear(x, cell.weight_ih, cell.combined_bias() if bias else None)


def preactivations(cell: CellWeights, x: Tensor, h_prev: Tensor) -> Tensor:
    """``W·[h, x] + b``, stored as ``(W_x·x + b) + W_h·h``: the four gates' inputs stacked i, f, C̃, o."""
    return input_projection(cell, x) + F.linear(h_prev, cell.weight_hh)
