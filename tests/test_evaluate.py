"""Tests for lstm_mt.metrics, lstm_mt.evaluate (`lstm-mt evaluate`) and lstm_mt.average, on real
Multi30k references and the tiny checkpoint of conftest.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
import torch

from lstm_mt.average import average_checkpoints, latest_checkpoints
from lstm_mt.average import main as average_main
from lstm_mt.checkpoint import load_checkpoint, save_checkpoint
from lstm_mt.data import load_split, load_tokenized_reference
from lstm_mt.errors import LstmMtError
from lstm_mt.evaluate import main as evaluate_main
from lstm_mt.metrics import corpus_scores
from lstm_mt.translate import Translator

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def test_2016(tiny_checkpoint):
    """Multi30k test_2016_flickr de-en, and as fixed 'hypotheses' its official lowercased tokenized English."""
    corpus = load_split(tiny_checkpoint.data, "test_2016_flickr")
    return corpus, load_tokenized_reference(tiny_checkpoint.data, "test_2016_flickr")


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# --- scoring -----------------------------------------------------------------------------


def test_scores_are_sacrebleus_own_with_signatures(test_2016):
    corpus, hypotheses = test_2016
    bleu, chrf = corpus_scores(hypotheses, corpus.tgt_lines)
    expected_bleu = sacrebleu.corpus_bleu(hypotheses, [corpus.tgt_lines])
    expected_chrf = sacrebleu.corpus_chrf(hypotheses, [corpus.tgt_lines])
    assert 80 < bleu.score < 95  # lowercased, tokenized text against cased references: close, not equal
    assert (bleu.score, bleu.text) == (expected_bleu.score, str(expected_bleu))
    assert (chrf.score, chrf.text) == (expected_chrf.score, str(expected_chrf))
    version = sacrebleu.__version__
    assert bleu.signature == f"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:{version}"
    assert chrf.signature == f"nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:{version}"
    with pytest.raises(LstmMtError, match="999 hypotheses for 1000 references"):
        corpus_scores(hypotheses[:-1], corpus.tgt_lines)


def test_evaluate_given_hypotheses_matches_the_sacrebleu_command(test_2016, tmp_path, capsys):
    corpus, hypotheses = test_2016
    hyp = write_lines(tmp_path / "tok.hyp", hypotheses)
    ref = write_lines(tmp_path / "test.en", corpus.tgt_lines)
    evaluate_main([f"hyp=[{hyp}]", f"ref=[{ref}]", f"output_dir={tmp_path / 'out'}"])
    printed = capsys.readouterr().out
    official = subprocess.run(
        [sys.executable, "-m", "sacrebleu", str(ref), "-i", str(hyp), "-m", "bleu", "chrf", "-w", "4"],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    scores = report["test_sets"][0]["scores"]
    for metric, key in zip(json.loads(official.stdout), ("BLEU", "chrF")):
        assert round(scores[key]["score"], 4) == metric["score"]
        assert scores[key]["signature"] == metric["signature"]
        assert metric["signature"] in printed
    assert report["test_sets"][0]["files"] == {"hypotheses": str(hyp), "reference": str(ref)}
    assert report["checkpoint"] is None and report["search"] is None
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.json"]


# --- translating and scoring -------------------------------------------------------------


def test_evaluate_command_on_file_pairs_writes_hypotheses_and_report(tiny_checkpoint, test_2016, tmp_path):
    corpus, _ = test_2016
    pairs = {"a": slice(0, 15), "b": slice(15, 25)}
    for name, rows in pairs.items():
        write_lines(tmp_path / f"{name}.de", corpus.src_lines[rows])
        write_lines(tmp_path / f"{name}.en", corpus.tgt_lines[rows])
    args = ["src=[a.de,b.de]", "ref=[a.en,b.en]"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lstm_mt",
            "evaluate",
            f"checkpoint={tiny_checkpoint.path}",
            *args,
            "beam_size=3",
            "output_dir=scores",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "scores" / "report.json").read_text())
    assert report["checkpoint"] == str(tiny_checkpoint.path) and report["step"] == 160
    assert report["search"]["beam_size"] == 3
    translator = Translator.from_checkpoint(tiny_checkpoint.path)
    for entry, (name, rows) in zip(report["test_sets"], pairs.items()):
        hypotheses = (tmp_path / "scores" / f"{name}.hyp").read_text(encoding="utf-8").splitlines()
        assert entry["name"] == name and entry["sentences"] == len(hypotheses) == len(corpus.src_lines[rows])
        assert hypotheses == translator.translate(corpus.src_lines[rows], beam_size=3)
        bleu = sacrebleu.corpus_bleu(hypotheses, [corpus.tgt_lines[rows]])
        assert entry["scores"]["BLEU"]["score"] == bleu.score
        assert f"{name}: {len(hypotheses)} sentences" in result.stdout
    assert "BLEU = " in result.stdout and "chrF2 = " in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.de", "a.en", "b.de", "b.en", "scores"]


def test_evaluate_defaults_to_the_checkpoints_test_splits(tiny_checkpoint, test_2016, capsys):
    evaluate_main([f"checkpoint={tiny_checkpoint.path}", "beam_size=1", "progress=false"])
    folder = tiny_checkpoint.path.parent / "tiny.eval"  # beside the checkpoint
    hypotheses = (folder / "test_2016_flickr.hyp").read_text(encoding="utf-8").splitlines()
    assert len(hypotheses) == len(test_2016[0]) == 1000
    report = json.loads((folder / "report.json").read_text())
    assert [entry["name"] for entry in report["test_sets"]] == ["test_2016_flickr"]
    assert report["test_sets"][0]["files"]["source"].endswith("test_2016_flickr.de.gz")
    assert "test_2016_flickr: 1000 sentences" in capsys.readouterr().out


def test_evaluate_errors_name_the_files(tiny_checkpoint, tmp_path):
    a = write_lines(tmp_path / "a.de", ["Ein Hund.", "Eine Katze."])
    b = write_lines(tmp_path / "b.en", ["A dog."])
    checkpoint = f"checkpoint={tiny_checkpoint.path}"
    with pytest.raises(LstmMtError, match=f"{a} has 2 lines but {b} has 1"):
        evaluate_main([checkpoint, f"src=[{a}]", f"ref=[{b}]"])
    with pytest.raises(LstmMtError, match="src= has 2 files but ref= has 1"):
        evaluate_main([checkpoint, f"src=[{a},{a}]", f"ref=[{b}]"])
    with pytest.raises(LstmMtError, match="checkpoint is not set"):
        evaluate_main([f"src=[{a}]", f"ref=[{b}]"])
    with pytest.raises(LstmMtError, match="'test_2099' is not available"):
        evaluate_main([checkpoint, "splits=[test_2099]"])
    with pytest.raises(LstmMtError, match="nbest=2: evaluate scores the best translation"):
        evaluate_main([checkpoint, "beam_size=2", "nbest=2"])


# --- averaging ---------------------------------------------------------------------------


def perturbed_copies(tiny_checkpoint, folder: Path, steps: list[int]) -> list[Path]:
    """Copies of the tiny checkpoint with seeded noise added to every weight, one per step."""
    payload = load_checkpoint(tiny_checkpoint.path)
    paths = []
    for step in steps:
        generator = torch.Generator().manual_seed(step)
        model = {name: t + torch.randn(t.shape, generator=generator) for name, t in payload["model"].items()}
        paths.append(
            save_checkpoint(
                {**payload, "model": model, "step": step, "optimizer": {"lr": 1.0}}, folder / f"step{step}.pt"
            )
        )
    return paths


def test_average_of_two_checkpoints_is_the_elementwise_mean(tiny_checkpoint, tmp_path):
    older, newer = perturbed_copies(tiny_checkpoint, tmp_path, [200, 100])[::-1]
    averaged = average_checkpoints([older, newer])
    a, b = load_checkpoint(older)["model"], load_checkpoint(newer)["model"]
    assert averaged["model"].keys() == a.keys()
    for name, tensor in averaged["model"].items():
        torch.testing.assert_close(tensor, (a[name] + b[name]) / 2, rtol=0, atol=1e-6)
        assert tensor.dtype == a[name].dtype
    assert averaged["step"] == 200 and "optimizer" not in averaged
    assert averaged["tokenizer"] == load_checkpoint(older)["tokenizer"]
    assert averaged["averaged_from"] == [str(older), str(newer)]
    saved = save_checkpoint(averaged, tmp_path / "avg.pt")
    assert Translator.from_checkpoint(saved).translate(["Ein Hund."], beam_size=1)  # loads and runs


def test_average_command_takes_the_last_n_by_step(tiny_checkpoint, tmp_path):
    paths = perturbed_copies(tiny_checkpoint, tmp_path, [300, 100, 200])
    assert latest_checkpoints(tmp_path, 2) == [paths[2], paths[0]]  # steps 200, 300
    average_main([f"dir={tmp_path}", "last=2", f"output={tmp_path / 'avg.pt'}"])
    averaged = load_checkpoint(tmp_path / "avg.pt")
    expected = average_checkpoints([paths[2], paths[0]])
    for name, tensor in averaged["model"].items():
        torch.testing.assert_close(tensor, expected["model"][name], rtol=0, atol=0)
    assert latest_checkpoints(tmp_path, 3) == [paths[1], paths[2], paths[0]], "an average is never averaged again"
    with pytest.raises(LstmMtError, match="last=4 but only 3 checkpoints"):
        latest_checkpoints(tmp_path, 4)
    os.link(paths[0], tmp_path / "last.pt")  # training links last.pt/best.pt to a step file
    inodes = [path.stat().st_ino for path in latest_checkpoints(tmp_path, 3)]
    assert inodes == [path.stat().st_ino for path in (paths[1], paths[2], paths[0])], "a link is no second checkpoint"


def test_average_refuses_checkpoints_of_different_models(tiny_checkpoint, tmp_path):
    first = perturbed_copies(tiny_checkpoint, tmp_path, [1])[0]
    payload = load_checkpoint(first)
    payload["model"]["generator.bias"] = torch.zeros(3)
    other = save_checkpoint(payload, tmp_path / "other.pt")
    with pytest.raises(LstmMtError, match=r"other.pt: model.generator.bias has shape \(3,\)"):
        average_checkpoints([first, other])
