"""Label-smoothed cross-entropy over target tokens, padding ignored.

With smoothing ε and V classes, each token's loss is ``(1 − ε)·(−log p_y) + ε·mean_v(−log p_v)``
(the same as ``F.cross_entropy(label_smoothing=ε)``). Sums, not means, are returned so that
gradient accumulation and data parallelism can divide by the total token count of an update.

Two ways to the same numbers:

- `label_smoothed_nll` takes logits ``[..., V]``: the plain reference, and what decoding
  code that already holds logits uses;
- `generator_loss` takes the generator's input h̃ and its weights and fuses the output layer
  into the loss (`GeneratorLoss`): it visits the non-pad tokens a chunk at a time, so neither
  the ``[B, T, V]`` logits nor their float32 log-probabilities and gradient ever exist whole
  (at V = 8000 and 4096 tokens those are 131 MB each in float32). Training and validation use it,
  through `teacher_forced_loss` and `TeacherForcedLoss`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lstm_mt.encoder import EncoderOutput
from lstm_mt.lstm.fastpath import autocast_dtype
from lstm_mt.model import Seq2Seq
from lstm_mt.vocab import PAD_ID

CHUNK_ELEMENTS = 1 << 22  # logits per chunk (16 MiB in float32): below glibc's 32 MiB mmap limit, so reused


class TokenLoss(NamedTuple):
    """Summed over the non-pad tokens: the (smoothed) training loss and the plain NLL."""

    loss: Tensor
    nll: Tensor


def label_smoothed_nll(logits: Tensor, targets: Tensor, smoothing: float, pad_id: int = PAD_ID) -> TokenLoss:
    """Loss sums for ``logits`` ``[..., V]`` against ``targets`` ``[...]``; positions equal to ``pad_id`` count 0.

    The log-softmax is taken in float32 at least, whatever the logits' dtype (autocast gives bf16/fp16).
    """
    log_probs = F.log_softmax(logits.to(softmax_dtype(logits.dtype)), dim=-1)
    keep = targets != pad_id
    nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    nll_sum = nll.masked_select(keep).sum()
    if smoothing == 0:
        return TokenLoss(nll_sum, nll_sum)
    uniform = -log_probs.mean(dim=-1)
    loss = (1.0 - smoothing) * nll + smoothing * uniform
    return TokenLoss(loss.masked_select(keep).sum(), nll_sum)


def generator_loss(
    hidden: Tensor, generator: nn.Linear, targets: Tensor, smoothing: float, pad_id: int = PAD_ID
) -> TokenLoss:
    """`label_smoothed_nll` of ``generator(hidden)`` without the full logits: ``hidden`` ``[..., D]``, ``targets`` ``[...]``.

    Under autocast the products run in the autocast dtype (as ``generator(hidden)`` would), the
    softmax in float32; gradients reach ``hidden``, the weight and the bias. Only ``loss`` is
    differentiable (``nll`` is for reporting).
    """
    keep = (targets != pad_id).flatten()
    rows = hidden.flatten(0, -2)[keep]
    device_type = hidden.device.type
    dtype = autocast_dtype(device_type) or rows.dtype
    with torch.autocast(device_type, enabled=False):
        loss, nll = GeneratorLoss.apply(
            rows, generator.weight, generator.bias, targets.flatten()[keep], smoothing, dtype
        )
    return TokenLoss(loss, nll)


def teacher_forced_loss(
    model: Seq2Seq,
    tgt_in: Tensor,
    tgt_out: Tensor,
    encoder_out: EncoderOutput,
    smoothing: float = 0.0,
    fused: bool = True,
) -> TokenLoss:
    """Summed label-smoothed loss and NLL of ``model``'s teacher-forced targets ``tgt_out`` ``[B, T]`` (pad ignored).

    ``fused``: the generator and the loss taken a chunk of tokens at a time, never holding the
    ``[B, T, V]`` logits (`generator_loss`); else from the full logits (`label_smoothed_nll`).
    """
    hidden, _ = model.decoder(tgt_in, encoder_out)
    if fused:
        return generator_loss(hidden, model.generator, tgt_out, smoothing)
    return label_smoothed_nll(model.generator(hidden), tgt_out, smoothing)


class TeacherForcedLoss(nn.Module):
    """What training minimizes, as a module whose forward DDP can wrap: `teacher_forced_loss` of a batch."""

    def __init__(self, model: Seq2Seq, smoothing: float, fused: bool = True) -> None:
        super().__init__()
        self.model = model
        self.smoothing = smoothing
        self.fused = fused

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, tgt_out: Tensor) -> TokenLoss:
        """Summed loss and NLL of ``tgt_out`` given ``src`` and the BOS-prefixed ``tgt_in``."""
        encoder_out = self.model.encode(src, src_lengths)
        return teacher_forced_loss(self.model, tgt_in, tgt_out, encoder_out, self.smoothing, self.fused)


class GeneratorLoss(torch.autograd.Function):
    """``(rows [N, D], weight [V, D], bias [V] | None, targets [N], smoothing, dtype) -> (loss, nll)`` sums.

    Forward takes the logits of a chunk of rows at a time (products in ``dtype``, softmax in
    float32) and, when gradients are needed, that chunk's gradient too: for the summed loss,
    ``∂loss/∂logits = softmax − (1 − ε)·onehot(y) − ε/V``, multiplied back through the product.
    Backward only scales the stored gradients by the incoming one, so the product is never
    taken twice.
    """

    @staticmethod
    def forward(ctx, rows, weight, bias, targets, smoothing, dtype):
        need_grad = any(ctx.needs_input_grad[:3])
        w = weight.to(dtype)
        b = None if bias is None else bias.to(dtype)
        exact = softmax_dtype(dtype)  # the softmax's and the gradients' dtype
        loss, nll = rows.new_zeros((), dtype=exact), rows.new_zeros((), dtype=exact)
        grad_rows = rows.new_empty(rows.shape if need_grad else (0,), dtype=exact)
        grad_weight = weight.new_zeros(weight.shape if need_grad else (0,), dtype=exact)
        grad_bias = None if bias is None or not need_grad else bias.new_zeros(bias.shape, dtype=exact)
        chunk = max(1, CHUNK_ELEMENTS // weight.shape[0])
        for start in range(0, rows.shape[0], chunk):
            x, y = rows[start : start + chunk].to(dtype), targets[start : start + chunk]
            logits = F.linear(x, w, b).to(exact)
            lse = torch.logsumexp(logits, dim=-1)
            chunk_nll = lse - logits.gather(1, y.unsqueeze(1)).squeeze(1)
            nll += chunk_nll.sum()
            loss += (1.0 - smoothing) * chunk_nll.sum() + smoothing * (lse - logits.mean(dim=-1)).sum()
            if need_grad:
                grad_logits = _smoothed_softmax_grad(logits, lse, y, smoothing)
                if grad_bias is not None:
                    grad_bias += grad_logits.sum(0)
                grad_logits = grad_logits.to(dtype)
                grad_rows[start : start + chunk] = grad_logits.mm(w)
                grad_weight += grad_logits.t().mm(x).to(exact)
        if need_grad:
            ctx.save_for_backward(grad_rows, grad_weight, grad_bias)
            ctx.rows_dtype, ctx.weight_dtype = rows.dtype, weight.dtype
        ctx.mark_non_differentiable(nll)
        return loss, nll

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss, grad_nll):
        grad_rows, grad_weight, grad_bias = ctx.saved_tensors
        need = ctx.needs_input_grad
        return (
            (grad_rows * grad_loss).to(ctx.rows_dtype) if need[0] else None,
            (grad_weight * grad_loss).to(ctx.weight_dtype) if need[1] else None,
            (grad_bias * grad_loss).to(ctx.weight_dtype) if grad_bias is not None and need[2] else None,
            None,
            None,
            None,
        )


def softmax_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a softmax over logits of ``dtype`` is taken in: float32, or float64 for float64."""
    return torch.promote_types(dtype, torch.float32)


def _smoothed_softmax_grad(logits: Tensor, lse: Tensor, targets: Tensor, smoothing: float) -> Tensor:
    """``softmax(logits) − (1 − ε)·onehot(targets) − ε/V``, computed in place over ``logits``."""
    grad = logits.sub_(lse.unsqueeze(1)).exp_()
    grad.sub_(smoothing / logits.shape[1])
    grad.scatter_add_(1, targets.unsqueeze(1), grad.new_full((targets.shape[0], 1), smoothing - 1.0))
    return grad
