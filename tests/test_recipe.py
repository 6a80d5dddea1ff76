"""Tests for the result recipes: configs/experiment/ composes to the typed schema (typos
refused), training never opens a test split, and lstm_mt.recipe picks checkpoint and decoding
on the valid split before it scores the test splits with that choice."""

from __future__ import annotations

import builtins
import dataclasses
import gzip
import io
import json
import pathlib
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, compose_train
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from lstm_mt import evaluate as evaluate_module
from lstm_mt import recipe
from lstm_mt.average import average_checkpoints
from lstm_mt.checkpoint import load_checkpoint, save_checkpoint
from lstm_mt.config import DecodingGrid, TrainJobConfig
from lstm_mt.configuring import typed_config
from lstm_mt.data import multi30k, textio
from lstm_mt.model import ModelConfig
from lstm_mt.train import train
from lstm_mt.translate import Translator

TINY = [
    "model.emb_size=32",
    "model.encoder_hidden=32",
    "model.decoder_hidden=64",
    "model.attentional_size=32",
    "model.attention_hidden=32",
    "model.encoder_layers=1",
    "model.decoder_layers=1",
]


# --- the recipe configs ------------------------------------------------------------------------


@pytest.mark.parametrize("experiment, src, tgt", [("multi30k_en_de", "en", "de"), ("multi30k_de_en", "de", "en")])
def test_recipes_compose_to_the_typed_schema(experiment, src, tgt):
    job = typed_config(TrainJobConfig, compose_train(f"+experiment={experiment}"), "config")
    assert (job.data.name, job.data.src, job.data.tgt) == ("multi30k", src, tgt)
    assert job.data.test_splits == ["test_2016_flickr", "test_2017_flickr"]
    assert (job.data.spm.vocab_size, job.data.spm.joint) == (8000, True)
    assert (job.model.emb_size, job.model.decoder_hidden, job.model.dropout) == (256, 512, 0.3)  # model=base
    assert job.train.early_stop_metric == "bleu" and job.train.valid_every == 0 and job.train.keep_last >= 5
    assert job.train.label_smoothing == 0.1 and job.train.patience > 0
    assert job.decoding == DecodingGrid(beam_size=5, alpha=0.6, beam_sizes=[1, 5, 10], alphas=[0.0, 0.6, 1.0])
    overridden = typed_config(
        TrainJobConfig, compose_train(f"+experiment={experiment}", "decoding.beam_sizes=[1]", "device=cuda"), "config"
    )
    assert overridden.decoding.beam_sizes == [1] and overridden.device == "cuda"


@pytest.mark.parametrize(
    "text, named",
    [
        ("decoding:\n  beam_sise: 5\n", "beam_sise"),  # a typo'd key
        ("train:\n  patience: forever\n", "train.patience"),  # a wrong type
    ],
)
def test_a_typo_in_an_experiment_file_is_refused(tmp_path, text, named):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - multi30k\n  - _self_\n" + text
    )
    shutil.copy(REPO / "lstm_mt" / "configs" / "experiment" / "multi30k.yaml", tmp_path / "experiment")
    with pytest.raises(ConfigCompositionException) as error:
        compose_train("+experiment=mine", f"hydra.searchpath=[file://{tmp_path}]")
    assert named in str(error.value) + str(error.value.__cause__)


def test_recipe_script_refuses_an_unknown_recipe():
    result = subprocess.run(["bash", "scripts/recipe.sh", "multi30k_xx_yy"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2
    assert "configs/experiment/multi30k_xx_yy.yaml not found" in result.stderr


# --- training reads train and val only ------------------------------------------------------------


def test_training_never_opens_a_test_split(multi30k_de_en, tmp_path, monkeypatch):
    opened: list[str] = []

    def recording(open_function):
        def recorded(file, *args, **kwargs):
            opened.append(str(file))
            return open_function(file, *args, **kwargs)

        return recorded

    for module, name in [
        (builtins, "open"),
        (io, "open"),
        (gzip, "open"),
        (pathlib.Path, "open"),
        (textio, "read_bytes"),
    ]:
        monkeypatch.setattr(module, name, recording(getattr(module, name)))
    cfg = compose_train(
        "+experiment=multi30k_en_de",
        f"data.mirror={multi30k_de_en.mirror}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.spm.vocab_size=500",
        "data.spm.max_sentences=2000",
        *TINY,
        "train.max_train_examples=200",
        "train.max_steps=2",
        "train.num_threads=1",
        "train.quiet=true",
        "device=cpu",
    )
    (tmp_path / "run").mkdir()  # Hydra makes the run folder before train() runs
    result = train(cfg, tmp_path / "run")
    assert result.step == 2
    names = [Path(path).name for path in opened]
    assert {"train.en.gz", "train.de.gz", "val.en.gz", "val.de.gz"} <= set(names)
    test_splits = tuple(split for split in multi30k.LANGUAGES if split.startswith("test_"))
    assert not [path for path in opened if Path(path).name.startswith(test_splits)], "a test split was opened"


# --- choosing on val, then testing -------------------------------------------------------------------


def test_the_grid_tries_greedy_search_once():
    grid = recipe.decoding_grid(DecodingGrid(beam_sizes=[1, 5, 10], alphas=[0.0, 0.6, 1.0]))
    assert grid == [(1, 0.0), (5, 0.0), (5, 0.6), (5, 1.0), (10, 0.0), (10, 0.6), (10, 1.0)]


@pytest.fixture
def run_dir(tiny_checkpoint, tmp_path) -> Path:
    """A run folder as `lstm-mt train` and recipe.sh leave it: config, best.pt, average.pt, timings."""
    run = tmp_path / "run"
    model = typed_config(ModelConfig, load_checkpoint(tiny_checkpoint.path)["config"]["model"], "tiny model")
    job = TrainJobConfig(
        data=tiny_checkpoint.data,
        model=model,
        decoding=DecodingGrid(beam_size=1, alpha=0.6, beam_sizes=[1, 2], alphas=[0.0, 1.0]),
    )
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.structured(job), run / ".hydra" / "config.yaml")
    OmegaConf.save(
        OmegaConf.create(["+experiment=multi30k_de_en", "train.resume=auto", "device=cpu"]),
        run / ".hydra" / "overrides.yaml",
    )
    (run / "checkpoints").mkdir()
    shutil.copy(tiny_checkpoint.path, run / "checkpoints" / "best.pt")
    save_checkpoint(average_checkpoints([tiny_checkpoint.path, tiny_checkpoint.path]), run / "average.pt")
    (run / "train_times.jsonl").write_text('{"seconds": 3000, "status": 143}\n{"seconds": 600, "status": 0}\n')
    (run / "metrics.jsonl").write_text('{"kind": "end", "step": 160, "epoch": 160, "reason": "done", "best": 1.0}\n')
    return run


def test_tune_picks_on_val_and_test_scores_the_test_splits_with_that_choice(run_dir, monkeypatch, capsys):
    decoded: list[str] = []
    full_valid = recipe.valid_set

    def first_sentences(cfg):  # a slice of val keeps the test fast
        valid = full_valid(cfg)
        decoded.append(valid.name)
        return dataclasses.replace(
            valid,
            sources=valid.sources[:40],
            references=valid.references[:40],
            tokenized_references=valid.tokenized_references[:40],
        )

    monkeypatch.setattr(recipe, "valid_set", first_sentences)
    decoding = recipe.tune_run(run_dir, "cpu")
    assert decoded == ["val"] and decoding["split"] == "val"
    trials = decoding["trials"]
    assert [(t["checkpoint"], t["beam_size"], t["alpha"]) for t in trials][:2] == [
        ("best", 1, 0.0),
        ("average", 1, 0.0),
    ]
    assert len(trials) == 4  # best and average greedy, then beam 2 with alpha 0 and 1 for the winner
    name = decoding["checkpoint_name"]
    assert decoding["checkpoint"] == str(run_dir / recipe.CANDIDATES[name])
    assert decoding["scores"]["BLEU"] == max(t["scores"]["BLEU"] for t in trials if t["checkpoint"] == name)
    assert [t["beam_size"] for t in trials if t["checkpoint"] == name] == [1, 2, 2]
    assert set(decoding["scores"]) == {"BLEU", "chrF", "paper_BLEU"}
    assert json.loads((run_dir / "decoding.json").read_text()) == decoding

    summary = recipe.evaluate_run(run_dir, "cpu")
    printed = capsys.readouterr().out
    test = summary["test"]["test_2016_flickr"]
    assert set(test) == {"BLEU", "chrF", "paper_BLEU"} and "tok:none" in test["paper_BLEU"]["signature"]
    assert test["BLEU"]["signature"] in printed  # sacreBLEU scores are printed with their signatures
    report = json.loads((run_dir / "test" / "report.json").read_text())
    assert report["search"]["beam_size"] == decoding["beam_size"] and report["search"]["alpha"] == decoding["alpha"]
    assert summary["training"] == {"step": 160, "epoch": 160, "reason": "done", "best": 1.0, "seconds": 3600.0}
    assert summary["command"] == "bash scripts/recipe.sh multi30k_de_en device=cpu"
    assert summary["direction"] == "de-en" and summary["parameters"] > 0
    assert "| de→en | test_2016_flickr |" in printed
    assert json.loads((run_dir / "results.json").read_text()) == summary


def test_the_ensemble_of_best_and_average_competes_and_is_tested_as_a_list(run_dir, monkeypatch):
    config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    config.decoding.update(ensemble=True, beam_sizes=[1], alphas=[0.0])
    OmegaConf.save(config, run_dir / ".hydra" / "config.yaml")
    monkeypatch.setattr(recipe, "dataset_test_sets", _first_sentences(recipe.dataset_test_sets))  # val
    monkeypatch.setattr(evaluate_module, "dataset_test_sets", _first_sentences(evaluate_module.dataset_test_sets))
    decoding = recipe.tune_run(run_dir, "cpu", precision="int8")
    assert [t["checkpoint"] for t in decoding["trials"]] == ["best", "average", "best+average"]
    assert decoding["precision"] == "int8"
    members = [str(run_dir / path) for path in recipe.CANDIDATES.values()]
    decoding.update(checkpoint=members, checkpoint_name="best+average")  # as if the ensemble had won
    (run_dir / "decoding.json").write_text(json.dumps(decoding))
    summary = recipe.evaluate_run(run_dir, "cpu")
    report = json.loads((run_dir / "test" / "report.json").read_text())
    assert report["checkpoint"] == members and report["precision"] == "int8"
    assert summary["parameters"] == 2 * Translator.from_checkpoint(members[0]).model.num_parameters()


def test_the_ensemble_of_tuned_runs_is_tuned_on_val_and_tested(run_dir, tmp_path, monkeypatch, capsys):
    config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    config.decoding.update(beam_sizes=[1], alphas=[0.0])
    OmegaConf.save(config, run_dir / ".hydra" / "config.yaml")
    seed2 = shutil.copytree(run_dir, tmp_path / "seed2")
    best, pair = (
        str(run_dir / "checkpoints" / "best.pt"),
        [str(seed2 / "checkpoints" / "best.pt"), str(seed2 / "average.pt")],
    )
    (run_dir / "decoding.json").write_text(json.dumps({"checkpoint": best}))
    (seed2 / "decoding.json").write_text(json.dumps({"checkpoint": pair}))  # its best+average ensemble won
    monkeypatch.setattr(recipe, "dataset_test_sets", _first_sentences(recipe.dataset_test_sets))  # val
    monkeypatch.setattr(evaluate_module, "dataset_test_sets", _first_sentences(evaluate_module.dataset_test_sets))
    out = tmp_path / "ensemble"
    summary = recipe.ensemble_runs(out, [run_dir, seed2], "cpu")
    decoding = json.loads((out / "decoding.json").read_text())
    assert decoding["checkpoint"] == [best, *pair] and decoding["split"] == "val"
    assert [(t["checkpoint"], t["beam_size"]) for t in decoding["trials"]] == [("ensemble of 2 runs", 1)]
    report = json.loads((out / "test" / "report.json").read_text())
    assert report["checkpoint"] == [best, *pair]
    assert summary["parameters"] == 3 * Translator.from_checkpoint(best).model.num_parameters()
    assert summary["training"] == {"runs": [str(run_dir), str(seed2)], "seconds": 7200.0}
    assert summary["command"] == f"lstm-mt recipe ensemble {out} {run_dir} {seed2}"
    assert json.loads((out / "results.json").read_text()) == summary
    assert "| de→en | test_2016_flickr |" in capsys.readouterr().out


def test_an_ensemble_of_untuned_runs_is_a_one_line_error_naming_the_file(run_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        recipe.main(["ensemble", str(tmp_path / "out"), str(run_dir), str(run_dir)])
    assert stop.value.code == 2
    assert (
        capsys.readouterr().err
        == f"error: {run_dir / 'decoding.json'}: not found; run `python -m lstm_mt.recipe tune {run_dir}` first\n"
    )
    with pytest.raises(SystemExit) as stop:
        recipe.main(["ensemble", str(tmp_path / "out"), str(run_dir)])
    assert stop.value.code == 2 and "ensemble an output folder and two or more runs" in capsys.readouterr().err


def _first_sentences(load):
    """``load`` with each test set cut to its first 20 sentences (keeps a test quick)."""

    def cut(*args, **kwargs):
        return [
            dataclasses.replace(t, sources=t.sources[:20], references=t.references[:20], tokenized_references=None)
            for t in load(*args, **kwargs)
        ]

    return cut


def _fake_run(folder, bleus, tuned=None):
    folder.mkdir()
    lines = [json.dumps({"kind": "train", "step": 5, "loss": 3.0})]
    lines += [json.dumps({"kind": "valid", "step": 10 * (k + 1), "bleu": bleu}) for k, bleu in enumerate(bleus)]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if tuned is not None:
        (folder / "decoding.json").write_text(json.dumps({"scores": {"BLEU": tuned}}))
    return folder


@pytest.mark.parametrize(
    "second, tuned, status",
    [([1.0, 5.0, 9.0], 9.5, 0), ([1.0, 5.4, 9.0], 9.5, 0), ([1.0, 5.0, 9.6], 9.5, 1), ([1.0, 5.0, 9.0], 8.9, 1)],
    ids=["identical", "within-0.5", "one-validation-off", "tuned-off"],
)
def test_compare_passes_a_rerun_only_within_half_a_bleu(tmp_path, capsys, second, tuned, status):
    first = _fake_run(tmp_path / "run", [1.0, 5.0, 9.0], tuned=9.5)
    rerun = _fake_run(tmp_path / "rerun", second, tuned=tuned)
    with pytest.raises(SystemExit) as exit_info:
        recipe.main(["compare", str(first), str(rerun)])
    assert exit_info.value.code == status
    out = capsys.readouterr().out
    assert ("NOT reproduced" in out) == bool(status)
    assert "3 validations compared" in out


def test_compare_without_common_validations_is_a_one_line_error(tmp_path, capsys):
    first = _fake_run(tmp_path / "run", [1.0])
    empty = _fake_run(tmp_path / "rerun", [])
    with pytest.raises(SystemExit) as exit_info:
        recipe.main(["compare", str(first), str(empty)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_compare_names_a_broken_metrics_line(tmp_path, capsys):
    first = _fake_run(tmp_path / "run", [1.0])
    broken = _fake_run(tmp_path / "rerun", [1.0])
    with (broken / "metrics.jsonl").open("a") as metrics:
        metrics.write('{"kind": "valid", "step": 20, "bl\n')
    with pytest.raises(SystemExit) as exit_info:
        recipe.main(["compare", str(first), str(broken)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "metrics.jsonl:3:" in err and len(err.strip().splitlines()) == 1
