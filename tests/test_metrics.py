"""Tests for the papers' BLEU (lstm_mt.metrics.paper_bleu) on real Multi30k files: sacremoses
remakes the official lowercased Moses-tokenized references from the raw ones, the references
score 100 against themselves, and `lstm-mt evaluate` reports it beside sacreBLEU and chrF."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from lstm_mt.data import DataConfig, load_split, load_tokenized_reference
from lstm_mt.errors import LstmMtError
from lstm_mt.evaluate import dataset_test_sets, evaluate
from lstm_mt.metrics import PAPER_BLEU, corpus_bleu, moses_tokenize, paper_bleu, tokenized_bleu
from lstm_mt.translate import DecodingOptions

SPLIT = "test_2016_flickr"


def raw_and_tokenized(cfg: DataConfig, lang: str) -> tuple[list[str], list[str]]:
    """The raw references of SPLIT in ``lang`` and the official tokenized ones."""
    pair = dataclasses.replace(cfg, src="fr" if lang != "fr" else "en", tgt=lang)
    return load_split(pair, SPLIT).tgt_lines, load_tokenized_reference(pair, SPLIT, lang)


@pytest.mark.parametrize("lang", ["de", "en"])
def test_moses_tokenization_remakes_the_official_tokenized_references(multi30k_de_en, lang):
    raw, official = raw_and_tokenized(multi30k_de_en, lang)
    ours = moses_tokenize(raw, lang)
    matches = sum(a == b for a, b in zip(ours, official))
    assert len(ours) == len(official) == 1000
    assert matches / len(official) >= 0.99, f"{matches}/{len(official)} lines equal"  # measured: 1000/1000


@pytest.mark.parametrize("lang", ["de", "en"])
def test_references_score_100_against_themselves(multi30k_de_en, lang):
    raw, official = raw_and_tokenized(multi30k_de_en, lang)
    assert tokenized_bleu(official, official).score == pytest.approx(100.0)
    paper = paper_bleu(raw, official, lang)
    assert paper.name == PAPER_BLEU and paper.score >= 99.0 and paper.text.startswith("paper BLEU = ")
    assert "tok:none" in paper.signature and f"lc.norm.tok.{lang}+sacremoses-" in paper.signature


def test_paper_bleu_lowercases_normalizes_and_escapes_like_the_references():
    hypotheses = ["A man\u2019s Dog runs «fast»."]
    reference = ["a man &apos;s dog runs &quot; fast . &quot;"]  # English: the full stop goes inside quotes
    assert moses_tokenize(hypotheses, "en") == reference
    assert paper_bleu(hypotheses, reference, "en").score == pytest.approx(100.0)
    assert corpus_bleu(hypotheses, reference).score < 50  # sacreBLEU proper is cased and detokenized


def test_missing_sacremoses_is_one_line_saying_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sacremoses", None)  # makes `import sacremoses` fail
    with pytest.raises(LstmMtError, match=r"^paper BLEU needs sacremoses: pip install 'lstm-mt\[paper\]'"):
        paper_bleu(["a dog ."], ["a dog ."], "en")


def test_evaluate_reports_paper_bleu_for_multi30k_splits_only_when_possible(multi30k_de_en, monkeypatch, caplog):
    test_set = dataset_test_sets(multi30k_de_en)[0]
    assert test_set.name == SPLIT and test_set.lang == "en" and len(test_set.tokenized_references) == 1000
    given = dataclasses.replace(test_set, hypotheses=test_set.references)
    scores = {score.name: score.score for score in evaluate(None, [given], DecodingOptions())[0].scores}
    assert list(scores) == ["BLEU", "chrF", PAPER_BLEU]
    assert scores["BLEU"] == pytest.approx(100.0) and scores[PAPER_BLEU] == pytest.approx(100.0)

    assert dataset_test_sets(multi30k_de_en, paper=False)[0].tokenized_references is None
    custom = DataConfig(name="custom")
    with pytest.raises(LstmMtError, match="paper_bleu=true: custom has no official tokenized references"):
        dataset_test_sets(custom, paper=True)
    monkeypatch.setitem(sys.modules, "sacremoses", None)
    assert dataset_test_sets(multi30k_de_en)[0].tokenized_references is None
    assert "paper BLEU skipped: paper BLEU needs sacremoses" in caplog.text
    with pytest.raises(LstmMtError, match="needs sacremoses"):
        dataset_test_sets(multi30k_de_en, paper=True)
