"""Lower-precision inference: decode in fp32 (the default), under bf16 autocast, or with int8 weights.

``bf16``: `torch.autocast` in bfloat16 around search (CPU or CUDA); the log-probabilities
search ranks by stay float32 (`Seq2Seq.decode_step`). ``int8``: PyTorch's dynamic
quantization (``torch.ao.quantization.quantize_dynamic``) of every `nn.Linear`: the
generator, attention, bridge and attentional layer keep int8 weights and quantize their
inputs per batch; the LSTM cells' products ``W·[h, x]`` likewise (`lstm_mt.lstm.int8`,
one scale per row of W), their gates stay float32. CPU only.
"""

from __future__ import annotations

import copy
import warnings
from contextlib import AbstractContextManager, nullcontext
from typing import TypeVar, cast

import torch
from torch import nn

from lstm_mt.errors import LstmMtError
from lstm_mt.lstm import int8

__all__ = ["INFERENCE_PRECISIONS", "check_inference_precision", "inference_autocast", "for_inference"]

INFERENCE_PRECISIONS = ("fp32", "bf16", "int8")

ModelT = TypeVar("ModelT", bound=nn.Module)


def check_inference_precision(name: str, device: torch.device) -> None:
    """Raise `LstmMtError` naming ``precision`` unless it is one of `INFERENCE_PRECISIONS` and runs on ``device``."""
    if name not in INFERENCE_PRECISIONS:
        raise LstmMtError(f"precision={name!r} is not one of {', '.join(INFERENCE_PRECISIONS)}")
    if name == "int8" and device.type != "cpu":
        raise LstmMtError(f"precision=int8 runs on CPU only (device={device}); use bf16 on {device.type}")


def for_inference(model: ModelT, precision: str) -> ModelT:
    """``model`` ready to decode in ``precision``: itself, or for int8 a quantized copy (of the same class)."""
    if precision != "int8":
        return model
    with warnings.catch_warnings():  # eager-mode quantization warns that torchao will replace it
        warnings.filterwarnings("ignore", message=".*deprecated.*", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
    int8.attach(quantized)
    return cast(ModelT, quantized)


def inference_autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """bf16 autocast on ``device`` for ``bf16``; nothing for the others."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
