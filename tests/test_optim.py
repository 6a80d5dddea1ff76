"""Tests for lstm_mt.optim: the learning-rate schedules (warmup, inverse sqrt, constant, linear, plateau) and
the plateau state a resumed run restores; fused Adam against the per-parameter loop, and resuming either bitwise."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_train

from lstm_mt.config import TrainJobConfig
from lstm_mt.configuring import typed_config
from lstm_mt.errors import LstmMtError
from lstm_mt.lstm import LSTM
from lstm_mt.optim import Schedule, build_optimizer


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


def adam_run(fused: bool, steps: int, optimizer_state: dict | None = None, start: int = 0):
    """Adam from the train config on a small model with seeded gradients: its parameters after ``steps``
    updates numbered from ``start``, and the optimizer's state dict (resumed from ``optimizer_state``)."""
    job = typed_config(TrainJobConfig, compose_train(f"train.fused_optimizer={str(fused).lower()}"), "config")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(37, 19), torch.nn.Linear(19, 5))
    if optimizer_state is not None:  # the parameters a resumed run would load with it
        model.load_state_dict(optimizer_state["model"])
    optimizer = build_optimizer(model.parameters(), job.train)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state["optimizer"])
    for step in range(start, start + steps):
        generator = torch.Generator().manual_seed(step)
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=generator)
        optimizer.step()
    return model, {"model": model.state_dict(), "optimizer": optimizer.state_dict()}


def test_fused_adam_updates_as_the_per_parameter_loop():
    fused, _ = adam_run(fused=True, steps=20)
    loop, _ = adam_run(fused=False, steps=20)
    for a, b in zip(fused.parameters(), loop.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)  # 20 updates of lr 1e-3: rounding only


@pytest.mark.parametrize("fused", [True, False])
def test_adam_resumed_from_a_saved_state_continues_bitwise(tmp_path, fused):
    """6 updates in one go equal 3, a save and load (weights_only, as checkpoints are read) and 3 more."""
    whole, whole_state = adam_run(fused, steps=6)
    _, state = adam_run(fused, steps=3)
    torch.save(state, tmp_path / "state.pt")
    saved = torch.load(tmp_path / "state.pt", weights_only=True)
    resumed, resumed_state = adam_run(fused, steps=3, optimizer_state=saved, start=3)
    assert all(torch.equal(a, b) for a, b in zip(whole.parameters(), resumed.parameters()))
    for ours, reference in zip(
        resumed_state["optimizer"]["state"].values(), whole_state["optimizer"]["state"].values()
    ):
        assert ours["step"].dtype == reference["step"].dtype == torch.float32 and float(ours["step"]) == 6
        assert torch.equal(ours["exp_avg"], reference["exp_avg"]) and torch.equal(
            ours["exp_avg_sq"], reference["exp_avg_sq"]
        )


@pytest.mark.parametrize("fused", [True, False])
def test_an_lstm_computes_with_its_updated_weights_after_an_optimizer_step(fused):
    """The LSTM keeps its weights packed for oneDNN, cached by each parameter's version counter; a fused
    Adam step writes the parameters without bumping it, so build_optimizer bumps it (else the next forward
    and training step ran on the weights from before the update)."""
    job = typed_config(TrainJobConfig, compose_train(f"train.fused_optimizer={str(fused).lower()}"), "config")
    torch.manual_seed(0)
    lstm = LSTM(6, 8)
    x = torch.randn(5, 3, 6)
    optimizer = build_optimizer(lstm.parameters(), job.train)
    for _ in range(2):
        with torch.no_grad():
            lstm(x)  # packs the weights (the inference route)
        lstm(x)[0].sum().backward()  # the training route packs W_hh too
        optimizer.step()
        optimizer.zero_grad()
    fresh = LSTM(6, 8)
    fresh.load_state_dict(lstm.state_dict())  # nothing cached for these tensors yet
    with torch.no_grad():
        assert torch.equal(lstm(x)[0], fresh(x)[0])
    assert torch.equal(lstm(x)[0], fresh(x)[0])
