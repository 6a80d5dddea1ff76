"""Cell variants: the seed's equations (`lstm_mt.lstm.equations`) with one change each, all off by default.

Beside the plain step (``[h, x]`` the previous hidden state joined with the input)::

    plain                              i = σ(W_i·[h, x] + b_i)   f = σ(W_f·[h, x] + b_f)   o = σ(W_o·[h, x] + b_o)
                                       C̃ = tanh(W_C·[h, x] + b_C)   C = f * C_prev + i * C̃   h = o * tanh(C)

the variants read (each composes with the others):

    layer_norm (Ba, Kiros & Hinton 2016), per gate block g ∈ {i, f, C̃, o}:
        pre_g = LN(W_g,x·x; γ_x,g) + LN(W_g,h·h; γ_h,g) + b_g        LN(a; γ) = γ * (a − mean a) / √(var a + ε)
        h     = o * tanh(LN(C; γ_C) + β_C)                           (C itself is kept unnormalized)
    recurrent_dropout p (Gal & Ghahramani 2016), training only:
        h_prev → m_h * h_prev   in every product W_·,h·h,  m_h ~ Bernoulli(1 − p) / (1 − p)  per sequence,
                                 the same mask at every step of the sequence
    input_dropout p: likewise x → m_x * x, one mask per sequence
    zoneout_c, zoneout_h (Krueger et al. 2017), with C̃_t = f * C_prev + i * C̃ and h̃_t = o * tanh(C̃_t):
        C = d_C * C_prev + (1 − d_C) * C̃_t      h = d_h * h_prev + (1 − d_h) * h̃_t
        training: d ~ Bernoulli(zoneout) per unit and step (1 = keep the previous value);
        evaluation: d = zoneout, the expectation
    peepholes (Gers & Schmidhuber 2000):
        i = σ(… + w_ci * C_prev)   f = σ(… + w_cf * C_prev)   o = σ(… + w_co * C̃_t)
    coupled_gates (CIFG, Greff et al. 2017):
        i = 1 − f   (the input-gate rows of the weights are kept, for the layout, and get no gradient)

`variant_step` is the readable form of one step with all of them; the fast path
(`lstm_mt.lstm.variant_autograd`, `lstm_mt.lstm.variant_pointwise`) computes the same and the
tests hold it to this.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from lstm_mt.lstm.equations import CellWeights, GateActivations
from lstm_mt.ranges import bounded, check_ranges

LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default


@dataclass
class CellVariant:
    """Which variant equations a cell uses (the ``model.cell`` config group); all off is the plain cell.

    Probabilities lie in [0, 1). The flags are described in this module's docstring.
    """

    layer_norm: bool = False
    recurrent_dropout: float = bounded(0.0, ge=0, lt=1)
    input_dropout: float = bounded(0.0, ge=0, lt=1)
    zoneout_c: float = bounded(0.0, ge=0, lt=1)
    zoneout_h: float = bounded(0.0, ge=0, lt=1)
    peepholes: bool = False
    coupled_gates: bool = False

    def is_plain(self) -> bool:
        """True when every variant is off: the seed's equations, on the plain cell's fast path."""
        return self == CellVariant()

    def check(self, where: str = "variant") -> None:
        """Raise `LstmMtError` naming ``<where>.<key>`` for a probability outside [0, 1)."""
        check_ranges(self, f"{where}.")

    def describe(self) -> str:
        """The switched-on variants as ``key=value`` (empty for the plain cell)."""
        on = [f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self) if getattr(self, f.name)]
        return ", ".join(on)


@dataclass
class CellNoise:
    """The random (training) or expected (evaluation) parts of a variant cell's run.

    ``h_mask`` ``[B, H]`` and ``x_mask`` ``[B, I]``: recurrent and input dropout masks, already
    scaled by 1/(1 − p), one per sequence (None: none). ``keep_c``, ``keep_h``: zoneout's d,
    a tensor of 0/1 per unit (``[B, H]`` for a step, ``[T, B, H]`` for a layer run) in
    training, or the probability itself in evaluation (0.0: no zoneout).
    """

    h_mask: Tensor | None = None
    x_mask: Tensor | None = None
    keep_c: Tensor | float = 0.0
    keep_h: Tensor | float = 0.0


class VariantWeights(CellWeights, Protocol):
    """A cell's weights with its variant's extra parameters (None where the variant is off)."""

    @property
    def variant(self) -> CellVariant: ...

    @property
    def peephole_weight(self) -> Tensor | None:
        """``[3H]``: w_ci, w_cf, w_co."""
        ...

    @property
    def ln_weight_ih(self) -> Tensor | None:
        """``[4H]``: γ_x per gate block."""
        ...

    @property
    def ln_weight_hh(self) -> Tensor | None:
        """``[4H]``: γ_h per gate block."""
        ...

    @property
    def ln_weight_c(self) -> Tensor | None:
        """``[H]``: γ_C."""
        ...

    @property
    def ln_bias_c(self) -> Tensor | None:
        """``[H]``: β_C."""
        ...


def block_layer_norm(a: Tensor, gain: Tensor) -> Tensor:
    """``γ * (a − mean) / √(var + ε)`` over each of the four gate blocks of ``a`` ``[..., 4H]`` (no bias)."""
    blocks = a.unflatten(-1, (4, a.shape[-1] // 4))
    normed = F.layer_norm(blocks, blocks.shape[-1:], eps=LAYER_NORM_EPS)
    return normed.flatten(-2) * gain


def zoneout(previous: Tensor, new: Tensor, keep: Tensor | float) -> Tensor:
    """``keep * previous + (1 − keep) * new``: zoneout's update (plain ``new`` when keep is 0)."""
    if isinstance(keep, float) and keep == 0.0:
        return new
    return keep * previous + (1 - keep) * new


def variant_step(
    cell: VariantWeights, x: Tensor, h_prev: Tensor, c_prev: Tensor, noise: CellNoise | None = None
) -> tuple[Tensor, Tensor, GateActivations]:
    """One step of ``cell``'s equations written out (module docstring); any leading shape.

    Returns the new hidden state, the new cell state and the gate values.
    """
    v, noise = cell.variant, noise or CellNoise()
    x_in = x if noise.x_mask is None else x * noise.x_mask
    h_in = h_prev if noise.h_mask is None else h_prev * noise.h_mask
    from_x, from_h = F.linear(x_in, cell.weight_ih), F.linear(h_in, cell.weight_hh)
    if v.layer_norm:
        assert cell.ln_weight_ih is not None and cell.ln_weight_hh is not None
        from_x, from_h = block_layer_norm(from_x, cell.ln_weight_ih), block_layer_norm(from_h, cell.ln_weight_hh)
    pre = from_x + from_h
    bias = cell.combined_bias()
    if bias is not None:
        pre = pre + bias
    pre_i, pre_f, pre_g, pre_o = pre.chunk(4, dim=-1)
    if v.peepholes:
        assert cell.peephole_weight is not None
        w_ci, w_cf, w_co = cell.peephole_weight.chunk(3)
        pre_i, pre_f = pre_i + w_ci * c_prev, pre_f + w_cf * c_prev
    f = torch.sigmoid(pre_f)
    i = 1 - f if v.coupled_gates else torch.sigmoid(pre_i)
    g = torch.tanh(pre_g)
    c_new = f * c_prev + i * g
    if v.peepholes:
        pre_o = pre_o + w_co * c_new
    o = torch.sigmoid(pre_o)
    shown = c_new
    if v.layer_norm:
        shown = F.layer_norm(c_new, c_new.shape[-1:], cell.ln_weight_c, cell.ln_bias_c, eps=LAYER_NORM_EPS)
    h_new = o * torch.tanh(shown)
    c = zoneout(c_prev, c_new, noise.keep_c)
    h = zoneout(h_prev, h_new, noise.keep_h)
    return h, c, GateActivations(i, f, g, o)
