"""Corpus-level BLEU and chrF with sacreBLEU, always with their signatures."""

from __future__ import annotations

from dataclasses import dataclass

from sacrebleu.metrics import BLEU, CHRF


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
