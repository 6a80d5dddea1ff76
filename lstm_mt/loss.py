"""Label-smoothed cross-entropy over target tokens, padding ignored.

With smoothing ε and V classes, each token's loss is ``(1 − ε)·(−log p_y) + ε·mean_v(−log p_v)``
(the same as ``F.cross_entropy(label_smoothing=ε)``). Sums, not means, are returned so that
gradient accumulation and data parallelism can divide by the total token count of an update.
"""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor

from lstm_mt.vocab import PAD_ID


class TokenLoss(NamedTuple):
    """Summed over the non-pad tokens: the (smoothed) training loss and the plain NLL."""

    loss: Tensor
    nll: Tensor


def label_smoothed_nll(logits: Tensor, targets: Tensor, smoothing: float, pad_id: int = PAD_ID) -> TokenLoss:
    """Loss sums for ``logits`` ``[..., V]`` against ``targets`` ``[...]``; positions equal to ``pad_id`` count 0.

    The log-softmax is taken in float32 whatever the logits' dtype (autocast gives bf16/fp16).
    """
    log_probs = F.log_softmax(logits.float(), dim=-1)
    keep = targets != pad_id
    nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    nll_sum = nll.masked_select(keep).sum()
    if smoothing == 0:
        return TokenLoss(nll_sum, nll_sum)
    uniform = -log_probs.mean(dim=-1)
    loss = (1.0 - smoothing) * nll + smoothing * uniform
    return TokenLoss(loss.masked_select(keep).sum(), nll_sum)
