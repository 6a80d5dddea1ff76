"""Attention over the encoder memory: Bahdanau (additive) and Luong (dot, general).

Every kind scores each source position against the decoder's query, turns the scores
into weights with a softmax over the real (unpadded) positions only, and returns the
weighted sum of the memory (the context) together with the weights, so they can be
plotted. A kind differs only in how it scores::

    bahdanau   score(q, k_j) = vᵀ tanh(W_q·q + W_k·k_j + b)
    dot        score(q, k_j) = qᵀ k_j
    general    score(q, k_j) = qᵀ W_a k_j

The part that depends only on the memory (``W_k·k_j`` for Bahdanau, ``W_a·k_j`` for
general) is computed once per sentence by `Attention.project_memory`; the decoder keeps
the result and passes it back as ``keys`` at every step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

ATTENTION_KINDS = ("bahdanau", "dot", "general")


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the last dimension where ``mask`` is True; masked positions get exactly 0.

    Every row needs at least one True position (a sentence has at least one token).
    """
    return scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)


class Attention(nn.Module):
    """Common part of every attention kind: masked softmax over scores, then the context.

    Subclasses define `score` and, if some of the scoring depends only on the memory,
    `project_memory`.
    """

    def project_memory(self, memory: Tensor) -> Tensor:
        """The keys for `score`, computed once per sentence from ``memory`` ``[B, S, M]``."""
        return memory

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        """Unnormalized scores ``[B, S]`` of ``query`` ``[B, Q]`` against ``keys`` ``[B, S, K]``."""
        raise NotImplementedError

    def forward(self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Attend from ``query`` ``[B, Q]`` over ``memory`` ``[B, S, M]``.

        ``keys`` is ``project_memory(memory)``; ``mask`` ``[B, S]`` is True at real tokens.
        Returns the context ``[B, M]`` and the weights ``[B, S]`` (zero on padding, rows sum to 1).
        """
        weights = masked_softmax(self.score(query, keys), mask)
        context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)
        return context, weights


class BahdanauAttention(Attention):
    """Additive attention (Bahdanau et al., 2015): ``vᵀ tanh(W_q·q + W_k·k_j + b)``."""

    def __init__(self, query_size: int, memory_size: int, hidden_size: int) -> None:
        super().__init__()
        self.query_projection = nn.Linear(query_size, hidden_size, bias=False)
        self.memory_projection = nn.Linear(memory_size, hidden_size, bias=True)
        self.v = nn.Linear(hidden_size, 1, bias=False)

    def project_memory(self, memory: Tensor) -> Tensor:
        """``W_k·k_j + b`` for every position: ``[B, S, hidden]``."""
        return self.memory_projection(memory)

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        """``vᵀ tanh(W_q·q + keys_j)`` for every position: ``[B, S]`` (with gradients through `AdditiveScores`)."""
        projected_query = self.query_projection(query)
        if not torch.is_grad_enabled():  # search, where int8 decoding quantizes v: nothing is kept for backward
            return self.v(additive_tanh(projected_query, keys)).squeeze(2)
        return AdditiveScores.apply(projected_query, keys, self.v.weight[0])


def additive_tanh(projected_query: Tensor, keys: Tensor) -> Tensor:
    """``tanh(projected_query + keys_j)`` ``[B, S, A]``, in place: one ``[B, S, A]`` buffer, not two."""
    return (projected_query.unsqueeze(1) + keys).tanh_()


class AdditiveScores(torch.autograd.Function):
    """``(projected_query [B, A], keys [B, S, A], v [A]) -> vᵀ tanh(projected_query + keys_j)`` ``[B, S]``.

    Autograd would keep the ``[B, S, A]`` tanh of every decoder step for the backward pass: at
    4,096 tokens a batch and A = 512 that is up to 8 MiB a step, the largest activation of a
    training step. This keeps only the step's projected query (the keys are shared by all steps)
    and computes the tanh again in the backward pass. Under autocast ``v`` is taken in the
    others' dtype, as `nn.Linear` would be.
    """

    @staticmethod
    def forward(ctx, projected_query: Tensor, keys: Tensor, v: Tensor) -> Tensor:
        ctx.save_for_backward(projected_query, keys, v)
        hidden = additive_tanh(projected_query, keys)
        return hidden.matmul(v.to(hidden.dtype))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_scores: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        projected_query, keys, v = ctx.saved_tensors
        hidden = additive_tanh(projected_query, keys)
        grad_scores = grad_scores.to(hidden.dtype)
        grad_v = (
            torch.bmm(grad_scores.unsqueeze(1), hidden).sum((0, 1)).to(v.dtype) if ctx.needs_input_grad[2] else None
        )
        # ∂/∂(q + k) = grad · v · (1 − tanh²), written over the recomputed tanh
        grad_pre = hidden.mul_(hidden).neg_().add_(1).mul_(grad_scores.unsqueeze(2)).mul_(v.to(hidden.dtype))
        grad_query = grad_pre.sum(1) if ctx.needs_input_grad[0] else None
        return grad_query, grad_pre if ctx.needs_input_grad[1] else None, grad_v


class DotAttention(Attention):
    """Luong et al. (2015) "dot": ``qᵀ k_j``; the query and memory sizes must be equal."""

    def __init__(self, query_size: int, memory_size: int) -> None:
        super().__init__()
        if query_size != memory_size:
            raise ValueError(f"dot attention needs equal query and memory sizes, got {query_size} and {memory_size}")

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        """``qᵀ k_j`` for every position: ``[B, S]``."""
        return torch.bmm(keys, query.unsqueeze(2)).squeeze(2)


class GeneralAttention(DotAttention):
    """Luong et al. (2015) "general": ``qᵀ W_a k_j``, a dot product with projected keys."""

    def __init__(self, query_size: int, memory_size: int) -> None:
        super().__init__(query_size, query_size)
        self.memory_projection = nn.Linear(memory_size, query_size, bias=False)

    def project_memory(self, memory: Tensor) -> Tensor:
        """``W_a·k_j`` for every position: ``[B, S, query_size]``."""
        return self.memory_projection(memory)


def build_attention(kind: str, query_size: int, memory_size: int, hidden_size: int) -> Attention:
    """The attention named ``kind`` (one of `ATTENTION_KINDS`).

    ``hidden_size`` is the size of Bahdanau's ``tanh`` layer; the Luong kinds ignore it.
    """
    if kind == "bahdanau":
        return BahdanauAttention(query_size, memory_size, hidden_size)
    if kind == "dot":
        return DotAttention(query_size, memory_size)
    if kind == "general":
        return GeneralAttention(query_size, memory_size)
    raise ValueError(f"unknown attention {kind!r}; expected one of {', '.join(ATTENTION_KINDS)}")
