"""Ensembles: several models of one direction and vocabulary decoding as one.

At every step of greedy or beam search, `Ensemble.decode_step` steps each model from its
own state and returns the log of the models' mean next-token probability,
``log(1/N * sum_i p_i)``; the attention it reports is the models' mean. Each model encodes
the source once and steps once per step, so N models cost at most N times one. Search sees an
ensemble as one model (`lstm_mt.search.SearchModel`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from lstm_mt.decoder import DecoderState
from lstm_mt.encoder import BatchRows, EncoderOutput
from lstm_mt.model import Seq2Seq, log_probabilities, probabilities

__all__ = ["Ensemble", "EnsembleEncoding", "EnsembleState", "log_mean_probabilities"]


@dataclasses.dataclass
class EnsembleEncoding(BatchRows):
    """Each model's encoder output, in model order."""

    outputs: tuple[EncoderOutput, ...]


@dataclasses.dataclass
class EnsembleState(BatchRows):
    """Each model's decoder state, in model order."""

    states: tuple[DecoderState, ...]


def log_mean_probabilities(logits: Sequence[Tensor]) -> Tensor:
    """``log(mean_i softmax(logits[i]))`` over the last dimension, in at least float32.

    One softmax per model (costing what its log-softmax would), N−1 additions, a log and a shift,
    in the models' own ``[B, V]`` step outputs (each overwritten). Averaging log-probabilities
    around their maximum instead took eleven passes over ``[B, V]`` a step and kept two models
    above twice one model's time. A probability below float32's range (under 1e-45 in every
    model) becomes -inf.
    """
    if len(logits) == 1:
        return log_probabilities(logits[0])
    total = probabilities(logits[0])
    for other in logits[1:]:
        total.add_(probabilities(other))
    return total.log_().sub_(math.log(len(logits)))


class Ensemble(nn.Module):
    """`Seq2Seq` models decoding together; see the module docstring."""

    def __init__(self, models: Sequence[Seq2Seq]) -> None:
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.models = nn.ModuleList(models)

    def members(self) -> list[Seq2Seq]:
        """The models, in order."""
        return [cast(Seq2Seq, model) for model in self.models]

    def encode(self, src: Tensor, src_lengths: Tensor) -> EnsembleEncoding:
        """Every model's encoding of ``src`` ``[B, S]``."""
        return EnsembleEncoding(tuple(model.encode(src, src_lengths) for model in self.members()))

    def init_decoder_state(self, encoder_out: EnsembleEncoding) -> EnsembleState:
        """Every model's state before the first step."""
        return EnsembleState(
            tuple(model.init_decoder_state(out) for model, out in zip(self.members(), encoder_out.outputs))
        )

    def decode_step(
        self, prev_tokens: Tensor, state: EnsembleState, encoder_out: EnsembleEncoding
    ) -> tuple[Tensor, EnsembleState, Tensor]:
        """One step of every model: the log of their mean probabilities ``[B, V]``, the new
        states and their mean attention ``[B, S]``."""
        steps = [
            model.step_logits(prev_tokens, model_state, out)
            for model, model_state, out in zip(self.members(), state.states, encoder_out.outputs)
        ]
        log_probs = log_mean_probabilities([logits for logits, _, _ in steps])
        attention = torch.stack([attention for _, _, attention in steps]).mean(dim=0)
        return log_probs, EnsembleState(tuple(new_state for _, new_state, _ in steps)), attention

    def num_parameters(self, trainable_only: bool = False) -> int:
        """The parameters of all the models together."""
        return sum(model.num_parameters(trainable_only) for model in self.members())
