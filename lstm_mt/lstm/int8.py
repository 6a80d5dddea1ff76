"""int8 products for the LSTM's CPU inference path (``precision=int8``).

The cell's inference step is one product ``W·[h, x] + b`` per step (`lstm_mt.lstm.inference`).
Here ``W = [W_h, W_x]`` is quantized once to int8, one scale per output row (per gate unit),
and each step's rows ``[h, x]`` are quantized on the fly (PyTorch's dynamic quantized
linear, fbgemm on x86): the same product at 2-3x the float32 speed, with its rounding.
The gates' point-wise step stays float32. `attach` gives every cell of a decoding copy its
int8 weights; a cell without them (the default) multiplies in float32 as before.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

from lstm_mt.lstm.equations import CellWeights
from lstm_mt.lstm.modules import LSTMCell

__all__ = ["Int8Product", "attach"]


class Int8Product:
    """``rows @ W.T + b`` with ``W`` held as int8 (symmetric, per output row) for fbgemm's dynamic linear."""

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        weight = weight.detach().float().contiguous()
        scales = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-12).double()
        zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
        with warnings.catch_warnings():  # quantized tensor creation warns that torchao will replace it
            warnings.filterwarnings("ignore", category=UserWarning)
            quantized = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
            self._packed: Any = torch.ops.quantized.linear_prepack(
                quantized, None if bias is None else bias.detach().float()
            )

    def __call__(self, rows: Tensor) -> Tensor:
        """``[n, in]`` float32 rows to ``[n, out]`` float32 pre-activations."""
        return torch.ops.quantized.linear_dynamic(rows.contiguous(), self._packed, True)  # 7-bit rows: no overflow


def joint_product(cell: CellWeights) -> Int8Product:
    """The int8 product of ``W = [W_h, W_x]`` and ``b``, for rows ``[h, x]`` as the inference path joins them."""
    return Int8Product(torch.cat([cell.weight_hh, cell.weight_ih], dim=1), cell.combined_bias())


def attach(model: nn.Module) -> int:
    """Give every LSTM cell of ``model`` its int8 product (``cell.int8_product``); returns how many.

    For a copy that only decodes: the int8 weights are taken now and do not follow later updates.
    """
    cells = [module for module in model.modules() if isinstance(module, LSTMCell)]
    for cell in cells:
        cell.int8_product = joint_product(cell)
    return len(cells)
