"""Corpus-level BLEU and chrF with sacreBLEU, always with their signatures.

Scores are sacreBLEU's own, on detokenized text with its default settings (BLEU: 13a
tokenization, cased; chrF: character 6-grams, beta 2), so they match `sacrebleu` run on
the same files and the signature says how to reproduce them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sacrebleu.metrics import BLEU, CHRF

from lstm_mt.errors import LstmMtError


@dataclass
class Score:
    """One metric's corpus score and the sacreBLEU signature that makes it reproducible."""

    name: str
    score: float
    signature: str
    text: str  # sacreBLEU's own one-line rendering, e.g. "BLEU = 38.12 70.1/45.0/... "


def corpus_bleu(hypotheses: list[str], references: list[str], **options) -> Score:
    """sacreBLEU BLEU of detokenized ``hypotheses`` against one reference each (default: 13a, cased)."""
    metric = BLEU(**options)
    result = metric.corpus_score(hypotheses, [references])
    return Score("BLEU", result.score, str(metric.get_signature()), str(result))


def corpus_chrf(hypotheses: list[str], references: list[str], **options) -> Score:
    """sacreBLEU chrF of detokenized ``hypotheses`` against one reference each."""
    metric = CHRF(**options)
    result = metric.corpus_score(hypotheses, [references])
    return Score("chrF", result.score, str(metric.get_signature()), str(result))


def corpus_scores(hypotheses: list[str], references: list[str]) -> list[Score]:
    """BLEU and chrF of one test set; ``hypotheses[i]`` translates the sentence of ``references[i]``."""
    if len(hypotheses) != len(references):
        raise LstmMtError(f"{len(hypotheses)} hypotheses for {len(references)} references: they must be line-parallel")
    return [corpus_bleu(hypotheses, references), corpus_chrf(hypotheses, references)]
