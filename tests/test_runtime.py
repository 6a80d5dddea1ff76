"""Tests for lstm_mt.runtime: precision names checked against the device."""

from __future__ import annotations

import pytest
import torch

from lstm_mt.errors import LstmMtError
from lstm_mt.runtime import select_precision


def test_fp16_needs_cuda_and_auto_is_full_precision_on_cpu():
    with pytest.raises(LstmMtError, match="train.precision=fp16 needs a CUDA device"):
        select_precision("fp16", torch.device("cpu"))
    assert select_precision("auto", torch.device("cpu")).dtype is None
