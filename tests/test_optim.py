"""Tests for lstm_mt.optim: the learning-rate schedules (warmup, inverse sqrt, constant, linear, plateau) and
the plateau state a resumed run restores."""

from __future__ import annotations

import pytest
from conftest import compose_train

from lstm_mt.config import TrainJobConfig
from lstm_mt.configuring import typed_config
from lstm_mt.errors import LstmMtError
from lstm_mt.optim import Schedule


def schedule(**overrides) -> Schedule:
    job = typed_config(TrainJobConfig, compose_train(*(f"train.{k}={v}" for k, v in overrides.items())), "config")
    return Schedule(job.train)


def test_warmup_then_inverse_sqrt_and_constant():
    inverse = schedule(schedule="inverse_sqrt", warmup_steps=4, lr=1.0)
    assert [inverse.lr(step) for step in range(6)] == pytest.approx(
        [0.25, 0.5, 0.75, 1.0, (4 / 5) ** 0.5, (4 / 6) ** 0.5]
    )
    assert inverse.lr(399) == pytest.approx(0.1)
    constant = schedule(schedule="constant", warmup_steps=2, lr=0.5)
    assert [constant.lr(step) for step in range(4)] == [0.25, 0.5, 0.5, 0.5]


def test_linear_schedule_warms_up_then_falls_to_zero_at_max_steps():
    linear = schedule(schedule="linear", warmup_steps=2, max_steps=6, lr=1.0)
    assert [linear.lr(step) for step in range(7)] == pytest.approx([0.5, 1.0, 0.8, 0.6, 0.4, 0.2, 0.0])
    with pytest.raises(LstmMtError, match="train.schedule=linear decays to 0 at train.max_steps"):
        schedule(schedule="linear", warmup_steps=2)


def test_plateau_halves_the_rate_after_patience_and_resumes_from_its_state():
    plateau = schedule(
        schedule="plateau", lr=1.0, plateau_patience=1, plateau_factor=0.5, min_lr=0.2, early_stop_metric="loss"
    )
    rates = []
    for loss in (5.0, 4.0, 4.5, 4.2, 3.0, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5):
        plateau.observe(loss)
        rates.append(plateau.lr(100))
    assert rates == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2, 0.2]
    copy = schedule(schedule="plateau", lr=1.0, early_stop_metric="loss")
    copy.load_state_dict(plateau.state_dict())
    assert copy.lr(100) == 0.2 and copy.plateau.best == 3.0
