"""Random 0/1 masks for dropout and zoneout, drawn fast on CPU.

Why: torch's CPU generator fills a Bernoulli or uniform tensor one value at a time on one
thread (~5-10 ms per million values). A training update of the base model draws millions:
dropout between layers, on the decoder's attentional vector and on the embeddings, and
zoneout's d for every unit of every step. Here a unit is 1 with probability round(p·2¹⁶)/2¹⁶:

- CPU float32: the compiled kernel (`native.bernoulli16_fill`) hashes a seed drawn from
  torch's generator (counter-based: the same mask on any thread count), ~0.3 ms per million;
- elsewhere on CPU: each 64-bit draw of torch's generator serves four units as 16-bit lanes;
- other devices: torch's own draws (``rand < p``, ``F.dropout``).

Masks come from torch's generator state either way, so ``torch.manual_seed`` repeats them and
a resumed run (which restores that state) draws the same ones.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lstm_mt.lstm import native

__all__ = ["Dropout", "bernoulli", "dropout", "dropout_mask"]


def bernoulli(p: float, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """0/1 of ``shape`` in ``like``'s dtype and device, each 1 with probability p (on CPU: round(p·2¹⁶)/2¹⁶)."""
    if like.device.type != "cpu":
        return torch.rand(shape, dtype=like.dtype, device=like.device).lt_(p)
    if like.dtype == torch.float32:
        out = torch.empty(shape)
        if native.bernoulli16_fill(out, p, int(_random_int64(1))):
            return out
    count = math.prod(shape)
    lanes = _random_int64((count + 3) // 4).view(torch.int16)[:count]  # uniform on [−2¹⁵, 2¹⁵)
    return torch.lt(lanes, round(p * 2**16) - 2**15).view(shape).to(like.dtype)


def dropout_mask(p: float, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """Bernoulli(1 − p) / (1 − p) of ``shape``: dropout's multiplier, kept units scaled to keep the expectation."""
    return bernoulli(1 - p, shape, like).div_(1 - p)


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """``F.dropout(x, p, training)`` with the mask from `dropout_mask`: each unit zeroed with probability p,
    the kept ones scaled by 1/(1 − p)."""
    if not training or p == 0:
        return x
    if x.device.type != "cpu" or p >= 1:
        return F.dropout(x, p, training=True)
    return x * dropout_mask(p, tuple(x.shape), x.new_empty(0, dtype=torch.float32)).to(x.dtype)


class Dropout(nn.Dropout):
    """`torch.nn.Dropout` drawing its masks with `bernoulli` (same parameters, same state dict)."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


def _random_int64(count: int) -> Tensor:
    """``count`` draws of all 64 bits from torch's CPU generator."""
    return torch.empty(count, dtype=torch.int64).random_(-(2**63), None)
