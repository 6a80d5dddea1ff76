"""Corpus-level BLEU and chrF with sacreBLEU, always with their signatures.

Scores are sacreBLEU's own, on detokenized text with its default settings (BLEU: 13a
tokenization, cased; chrF: character 6-grams, beta 2), so they match `sacrebleu` run on
the same files and the signature says how to reproduce them.

`paper_bleu` is BLEU as the 2016-2018 Multi30k papers computed it (multi-bleu): hypotheses
lowercased, punctuation-normalized and Moses-tokenized like the official references
``tok/<split>.lc.norm.tok.<lang>`` (upstream ``scripts/task1-tokenize.sh``: lowercase.perl |
normalize-punctuation.perl -l LANG | tokenizer.perl -l LANG, which escapes ``'`` as ``&apos;``),
then scored against those references with sacreBLEU's ``tokenize="none"``. It needs sacremoses
(``pip install 'lstm-mt[paper]'``), imported only when used.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any

from sacrebleu.metrics import BLEU, CHRF

from lstm_mt.errors import LstmMtError

PAPER_BLEU = "paper_BLEU"  # Score.name of paper_bleu, the key in evaluate's report


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
    _check_line_parallel(hypotheses, references)
    return [corpus_bleu(hypotheses, references), corpus_chrf(hypotheses, references)]


def paper_bleu(hypotheses: list[str], tokenized_references: list[str], lang: str) -> Score:
    """Multi30k papers' BLEU: detokenized ``hypotheses`` in language ``lang`` lowercased and
    Moses-tokenized (`moses_tokenize`), scored against the official ``*.lc.norm.tok.*`` lines."""
    _check_line_parallel(hypotheses, tokenized_references)
    score = tokenized_bleu(moses_tokenize(hypotheses, lang), tokenized_references)
    preprocessing = f"hyp:lc.norm.tok.{lang}+sacremoses-{_sacremoses().__version__}"
    return Score(PAPER_BLEU, score.score, f"{score.signature}|{preprocessing}", f"paper {score.text}")


def tokenized_bleu(tokenized_hypotheses: list[str], tokenized_references: list[str]) -> Score:
    """BLEU of already tokenized text, split on whitespace only (like multi-bleu.perl)."""
    return corpus_bleu(tokenized_hypotheses, tokenized_references, tokenize="none", force=True)


def moses_tokenize(lines: list[str], lang: str) -> list[str]:
    """``lines`` as the official Multi30k ``tok/`` files are made: lowercased, normalized, Moses-tokenized."""
    normalizer, tokenizer = _moses_tools(_sacremoses(), lang)
    return [tokenizer.tokenize(normalizer.normalize(line.lower()), escape=True, return_str=True) for line in lines]


def require_paper_bleu() -> None:
    """Raise `LstmMtError` (how to install it) unless sacremoses, which `paper_bleu` needs, imports."""
    _sacremoses()


def _check_line_parallel(hypotheses: list[str], references: list[str]) -> None:
    if len(hypotheses) != len(references):
        raise LstmMtError(f"{len(hypotheses)} hypotheses for {len(references)} references: they must be line-parallel")


@cache
def _moses_tools(moses: ModuleType, lang: str) -> tuple[Any, Any]:
    """sacremoses' punctuation normalizer and tokenizer for ``lang``, built once."""
    return moses.MosesPunctNormalizer(lang=lang), moses.MosesTokenizer(lang=lang)


def _sacremoses() -> ModuleType:
    """The sacremoses module, or an `LstmMtError` saying how to install it."""
    try:
        return importlib.import_module("sacremoses")
    except ImportError:
        raise LstmMtError(
            "paper BLEU needs sacremoses: pip install 'lstm-mt[paper]' (or set paper_bleu=false)"
        ) from None
