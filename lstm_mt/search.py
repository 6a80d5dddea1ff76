"""Search: turn a trained model and a source batch into target token sequences.

`greedy_search` picks the most probable token at every step. Output length is capped at
``max_len_a * source_length + max_len_b`` tokens per sentence (EOS included).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lstm_mt.model import BOS_ID, EOS_ID, PAD_ID, Seq2Seq


@dataclass
class Hypothesis:
    """One output sentence: token ids (no BOS/EOS), its total log-probability, attention ``[T, S]``."""

    tokens: list[int]
    score: float
    attention: Tensor


def max_output_lengths(src_lengths: Tensor, max_len_a: float, max_len_b: int) -> Tensor:
    """Per-sentence cap on output tokens (EOS included): ``a * source_length + b``, at least 1."""
    return (src_lengths.float() * max_len_a + max_len_b).floor().long().clamp(min=1)


@torch.no_grad()
def greedy_search(
    model: Seq2Seq, src: Tensor, src_lengths: Tensor, max_len_a: float = 1.5, max_len_b: int = 10
) -> list[Hypothesis]:
    """The argmax token at every step, for a padded batch ``src`` ``[B, S]``; one `Hypothesis` per row."""
    encoder_out = model.encode(src, src_lengths)
    state = model.init_decoder_state(encoder_out)
    batch = src.shape[0]
    limits = max_output_lengths(src_lengths.to(src.device), max_len_a, max_len_b)
    prev = torch.full((batch,), BOS_ID, dtype=torch.long, device=src.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=src.device)
    scores = torch.zeros(batch, device=src.device)
    tokens, attentions = [], []
    for step in range(int(limits.max())):
        log_probs, state, attention = model.decode_step(prev, state, encoder_out)
        best_score, best = log_probs.max(dim=-1)
        best = best.masked_fill(finished, PAD_ID)
        scores += best_score.masked_fill(finished, 0.0)
        tokens.append(best)
        attentions.append(attention)
        finished |= (best == EOS_ID) | (step + 1 >= limits)
        if bool(finished.all()):
            break
        prev = best
    return _to_hypotheses(torch.stack(tokens, dim=1), scores, torch.stack(attentions, dim=1), src_lengths)


def _to_hypotheses(tokens: Tensor, scores: Tensor, attention: Tensor, src_lengths: Tensor) -> list[Hypothesis]:
    """Cut each row at its EOS (or padding) and wrap it as a `Hypothesis`."""
    hypotheses = []
    for row, score, weights, src_length in zip(tokens.tolist(), scores.tolist(), attention, src_lengths.tolist()):
        length = next((k for k, token in enumerate(row) if token in (EOS_ID, PAD_ID)), len(row))
        hypotheses.append(Hypothesis(row[:length], score, weights[: length + 1, :src_length].cpu()))
    return hypotheses
