"""Optimizer and learning-rate schedule for training, built from the ``train`` config.

The schedule is one small object with plain-number state (so it resumes exactly from a
checkpoint): the rate of update ``n`` is ``lr × warmup(n) × decay(n) × plateau_scale``,
where warmup ramps up linearly over ``warmup_steps``, decay is 1, ``sqrt(warmup / n)``
after warmup (inverse_sqrt) or a straight line from 1 after warmup to 0 at ``max_steps``
(linear: short runs of a known length end on a small rate), and plateau_scale is multiplied by ``plateau_factor`` whenever
more than ``plateau_patience`` validations in a row did not improve (as torch's
ReduceLROnPlateau counts), never taking the rate below ``min_lr``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch.autograd.graph import increment_version

from lstm_mt.config import TrainConfig
from lstm_mt.errors import LstmMtError

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
SCHEDULES = ("plateau", "inverse_sqrt", "linear", "constant")
METRIC_MODES = {"bleu": "max", "loss": "min"}  # how each validation metric improves

log = logging.getLogger(__name__)


def build_optimizer(parameters: Iterable[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam or AdamW over ``parameters`` with ``train.lr``, ``train.betas``, ``train.weight_decay``.

    With ``train.fused_optimizer`` it is PyTorch's fused kernel (all parameters in one call, a single
    pass over each, on CPU as on CUDA), where the parameters' device and dtype have one; else the
    per-parameter loop. Both give the same update up to float rounding.
    """
    check_optimizer(cfg)
    parameters = list(parameters)
    options: dict[str, Any] = dict(
        lr=cfg.lr, betas=(float(cfg.betas[0]), float(cfg.betas[1])), weight_decay=cfg.weight_decay
    )
    if cfg.fused_optimizer:
        try:
            optimizer = OPTIMIZERS[cfg.optimizer](parameters, **options, fused=True)
        except RuntimeError as error:  # a device or dtype without the fused kernel
            log.info("train.fused_optimizer: %s; using the per-parameter loop", str(error).splitlines()[0])
        else:
            optimizer.register_step_post_hook(_mark_parameters_changed)
            return optimizer
    return OPTIMIZERS[cfg.optimizer](parameters, **options)


def _mark_parameters_changed(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Bump the version counter of every parameter after a fused step, which writes them without doing so.

    Caches keyed by the version counter (`lstm_mt.lstm.onednn.packed`, the LSTM's weights in oneDNN's
    layout) would otherwise keep serving the weights from before the update.
    """
    increment_version([p for group in optimizer.param_groups for p in group["params"]])


def check_optimizer(cfg: TrainConfig) -> None:
    """Raise `LstmMtError` unless ``train.optimizer`` is known and ``train.betas`` has two values."""
    if cfg.optimizer not in OPTIMIZERS:
        raise LstmMtError(f"train.optimizer={cfg.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
    if len(cfg.betas) != 2:
        raise LstmMtError(f"train.betas={list(cfg.betas)} must have two values")


class MetricTracker:
    """The best value of a validation metric so far and how many validations since it improved."""

    def __init__(self, metric: str) -> None:
        if metric not in METRIC_MODES:
            raise LstmMtError(f"train.early_stop_metric={metric!r} is not one of {', '.join(METRIC_MODES)}")
        self.metric = metric
        self.best: float | None = None
        self.since_best = 0

    def observe(self, value: float) -> bool:
        """Record one validation's value; True when it is a new best (NaN never is)."""
        better = not math.isnan(value) and (
            self.best is None or (value > self.best if METRIC_MODES[self.metric] == "max" else value < self.best)
        )
        if better:
            self.best, self.since_best = value, 0
        else:
            self.since_best += 1
        return better

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers for a checkpoint."""
        return {"metric": self.metric, "best": self.best, "since_best": self.since_best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (only when it tracked the same metric)."""
        if state["metric"] == self.metric:
            self.best, self.since_best = state["best"], int(state["since_best"])


class Schedule:
    """The learning rate of every update: warmup, then constant, inverse-sqrt, linear decay or reduce-on-plateau."""

    def __init__(self, cfg: TrainConfig) -> None:
        if cfg.schedule not in SCHEDULES:
            raise LstmMtError(f"train.schedule={cfg.schedule!r} is not one of {', '.join(SCHEDULES)}")
        if cfg.schedule == "linear" and cfg.max_steps <= cfg.warmup_steps:
            raise LstmMtError(
                f"train.schedule=linear decays to 0 at train.max_steps, which must exceed train.warmup_steps "
                f"(max_steps={cfg.max_steps}, warmup_steps={cfg.warmup_steps})"
            )
        self.kind = cfg.schedule
        self.base_lr = cfg.lr
        self.warmup_steps = cfg.warmup_steps
        self.max_steps = cfg.max_steps
        self.plateau_factor = cfg.plateau_factor
        self.plateau_patience = cfg.plateau_patience
        self.min_lr = cfg.min_lr
        self.plateau = MetricTracker(cfg.early_stop_metric)
        self.plateau_scale = 1.0

    def lr(self, step: int) -> float:
        """The rate for update number ``step + 1`` (``step`` updates are done)."""
        n = step + 1
        rate = self.base_lr * (min(1.0, n / self.warmup_steps) if self.warmup_steps else 1.0)
        if self.kind == "inverse_sqrt":
            rate *= math.sqrt(max(self.warmup_steps, 1) / max(n, self.warmup_steps, 1))
        elif self.kind == "linear" and n > self.warmup_steps:
            rate *= max(0.0, (self.max_steps + 1 - n) / (self.max_steps + 1 - self.warmup_steps))
        elif self.kind == "plateau":
            rate *= self.plateau_scale
        return rate

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set the rate for the next update on every parameter group; returns it."""
        lr = self.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def observe(self, value: float) -> None:
        """After a validation: on a plateau schedule, lower the rate when ``value`` stopped improving."""
        if self.kind != "plateau":
            return
        self.plateau.observe(value)
        if self.plateau.since_best > self.plateau_patience:
            self.plateau_scale = max(self.plateau_scale * self.plateau_factor, self.min_lr / self.base_lr)
            self.plateau.since_best = 0

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers for a checkpoint."""
        return {"plateau": self.plateau.state_dict(), "plateau_scale": self.plateau_scale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`."""
        self.plateau.load_state_dict(state["plateau"])
        self.plateau_scale = float(state["plateau_scale"])
