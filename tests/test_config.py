"""Tests for lstm_mt.config (the typed train job schema in Hydra): defaults, refused keys and types, group
files checked, `--cfg job` and bad values naming their key."""

from __future__ import annotations

import pytest
from conftest import compose_train, run_train_cli
from hydra.errors import ConfigCompositionException

from lstm_mt.config import TrainJobConfig
from lstm_mt.configuring import typed_config
from lstm_mt.errors import LstmMtError
from lstm_mt.train import train


def test_default_config_composes_to_the_schema():
    job = typed_config(TrainJobConfig, compose_train(), "config")
    assert (job.data.name, job.model.emb_size, job.train.optimizer, job.train.max_tokens) == (
        "multi30k",
        128,
        "adam",
        4096,
    )
    assert job.train.label_smoothing == 0.1 and job.train.clip_norm == 1.0 and job.device == "auto"
    quick = typed_config(TrainJobConfig, compose_train("train=quick"), "config")
    assert (quick.train.max_epochs, quick.train.max_tokens) == (1, 2048) and quick.train.label_smoothing == 0.1


def test_quickstart_is_the_small_model_on_a_linear_schedule_validated_once_within_five_minutes():
    job = typed_config(TrainJobConfig, compose_train("+experiment=quickstart"), "config")
    assert (job.model.emb_size, job.model.decoder_layers, job.data.src, job.data.tgt) == (128, 1, "de", "en")
    assert (job.train.schedule, job.train.max_steps, job.train.max_minutes) == ("linear", 700, 5.0)
    assert job.train.valid_every == job.train.max_steps and job.train.precision == "fp32"
    shorter = typed_config(TrainJobConfig, compose_train("+experiment=quickstart", "train.max_steps=40"), "config")
    assert shorter.train.valid_every == 40, "validation follows max_steps"


@pytest.mark.parametrize(
    "override, named",
    [
        ("model.emb_sz=64", "emb_sz"),  # a typo'd key
        ("train.lr=fast", "train.lr"),  # a string where a float belongs
        ("train.max_epochs=2.5", "train.max_epochs"),  # a float where an int belongs
        ("seeed=3", "seeed"),  # a typo at the top level
    ],
)
def test_unknown_keys_and_wrong_types_are_refused(override, named):
    with pytest.raises(ConfigCompositionException) as error:
        compose_train(override)
    assert named in str(error.value) + str(error.value.__cause__)


@pytest.mark.parametrize("added", ["+seeed=3", "+model.emb_sz=3"])
def test_keys_added_with_plus_are_refused_before_training(tmp_path, added):
    with pytest.raises(LstmMtError, match=f"^config key {added[1:-2]}: Key '[a-z_]+' not in '[A-Za-z]+'$"):
        train(compose_train(added), tmp_path)


@pytest.mark.parametrize(
    "group, text, named",
    [
        ("train", "defaults: [default, _self_]\nlerning_rate: 0.1\n", "lerning_rate"),
        ("model", "emb_size: large\n", "emb_size"),
    ],
)
def test_group_files_are_checked_against_the_schema(tmp_path, group, text, named):
    (tmp_path / group).mkdir()
    (tmp_path / group / "mine.yaml").write_text(text)
    with pytest.raises(ConfigCompositionException) as error:
        compose_train(f"{group}=mine", f"hydra.searchpath=[file://{tmp_path}]")
    assert named in str(error.value) + str(error.value.__cause__)


def test_cli_prints_the_composed_config_and_a_clear_error_for_a_bad_value():
    shown = run_train_cli("model=base", "train.lr=5e-4", "--cfg", "job")
    assert shown.returncode == 0, shown.stderr
    assert "emb_size: 256" in shown.stdout and "lr: 0.0005" in shown.stdout
    bad = run_train_cli("train.lr=fast")
    assert bad.returncode != 0
    assert "train.lr" in bad.stderr and "could not be converted to Float" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_bad_train_values_name_the_key(tmp_path):
    for override, message in [
        ("train.schedule=cosine", "train.schedule='cosine'"),
        ("train.accumulate=0", "train.accumulate=0"),
        ("train.early_stop_metric=ter", "train.early_stop_metric='ter'"),
    ]:
        with pytest.raises(LstmMtError, match=message):
            train(compose_train(override), tmp_path)
