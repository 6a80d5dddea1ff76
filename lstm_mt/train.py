"""`lstm-mt train`: the training loop, configured by Hydra (``configs/train.yaml``).

One run: prepare the train and valid splits (never a test split), build the model and
optimizer, then repeat epochs of token-bucketed batches. Each update accumulates
``train.accumulate`` batches of label-smoothed cross-entropy (summed over target tokens and
divided by the update's token count, across all ranks), clips the gradient norm and steps
Adam/AdamW; the learning rate comes from `lstm_mt.optim.Schedule`. Validation (loss,
perplexity, sacreBLEU of greedy output) runs every ``train.valid_every`` updates or after
each epoch and drives best.pt, the plateau schedule and early stopping.

The run directory (Hydra's, e.g. ``runs/train/<time>``) receives:

    metrics.jsonl           one JSON object per line: {"kind": "train" | "valid" | "end", "step", ...}
    checkpoints/step_<N>.pt the last ``train.keep_last`` checkpoints
    checkpoints/last.pt     the newest checkpoint, best.pt the best by ``train.early_stop_metric``
    tensorboard/            with ``train.tensorboard=true``

Checkpoints (`lstm_mt.checkpoint`, written atomically, read with ``weights_only``) hold the
documented keys (model, config, tokenizer, vocab_sizes, step = updates done, epoch =
epochs completed) and what resuming needs: optimizer, schedule, scaler, best (the tracked
metric), validated_at, sampler (the batch iterator's epoch and position), rng (per rank:
torch, python random, cuda), world_size, data (PreparedData.record()) and metrics (the
latest validation). Resuming restores all of it, so a run stopped at any update boundary
and resumed ends with exactly the parameters of an uninterrupted run (same device and
thread count). SIGINT/SIGTERM set a flag that the loop checks between updates: it saves a
checkpoint and exits with status 128 + signal number.

Device, precision, ranks and stop signals are in `lstm_mt.runtime`; checkpoint files, their
rotation and the resume lookup in `lstm_mt.checkpoint`; metrics.jsonl in `lstm_mt.runlog`.

Data parallel: started by ``torchrun``, every rank takes every ``world_size``-th batch
(gloo on CPU, nccl on CUDA); rank 0 alone validates (and broadcasts the result), writes
logs and checkpoints.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import random
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn
from torch.profiler import record_function
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from lstm_mt.checkpoint import (
    CHECKPOINT_DIR,
    best_checkpoint,
    find_resume_checkpoint,
    load_checkpoint,
    save_step_checkpoint,
)
from lstm_mt.config import TrainConfig, TrainJobConfig, register_configs
from lstm_mt.configuring import typed_config
from lstm_mt.data import Batch, BatchIterator, EncodedDataset, PreparedData, prepare_data
from lstm_mt.errors import LstmMtError
from lstm_mt.files import FolderLock, remove_stale_temporaries
from lstm_mt.hydra_app import run_hydra
from lstm_mt.loss import TeacherForcedLoss, teacher_forced_loss
from lstm_mt.metrics import corpus_bleu
from lstm_mt.model import ModelConfig, Seq2Seq, build_model
from lstm_mt.optim import MetricTracker, Schedule, build_optimizer, check_optimizer
from lstm_mt.profiling import BACKWARD, FORWARD, OPTIMIZER
from lstm_mt.runlog import METRICS_FILE, MetricsLog
from lstm_mt.runtime import Distributed, Precision, StopSignals, check_precision, select_device, select_precision
from lstm_mt.search import greedy_search

log = logging.getLogger(__name__)

TRAINING_KEYS = ("optimizer", "schedule", "scaler", "best", "sampler", "rng", "step", "epoch")
NONFINITE = ("stop", "skip")  # train.nonfinite


def main(argv: list[str]) -> int | None:
    """``lstm-mt train [overrides...]``: Hydra's command line over ``configs/train.yaml``."""
    register_configs()
    return run_hydra(_train_in_hydra_run, "train", argv, prog="lstm-mt train")


def _train_in_hydra_run(cfg: DictConfig) -> dict[str, Any]:
    from hydra.core.hydra_config import HydraConfig

    return dataclasses.asdict(train(cfg, Path(HydraConfig.get().runtime.output_dir)))


@dataclass
class TrainResult:
    """How a run ended: updates and epochs done, the best validation value and its checkpoint."""

    step: int
    epoch: int
    stop_reason: str
    best_metric: float | None
    best_checkpoint: str | None
    last_validation: dict[str, Any] | None


def train(cfg: DictConfig | TrainJobConfig, run_dir: str | Path) -> TrainResult:
    """Train as ``cfg`` says, writing metrics and checkpoints under ``run_dir``."""
    job = typed_config(TrainJobConfig, cfg, "config")
    check_train_config(job.train)
    if job.train.num_threads > 0:
        torch.set_num_threads(job.train.num_threads)
    dist = Distributed.from_environment()
    device = select_device(job.device, dist.local_rank)
    dist.start(device)
    try:
        if not dist.is_main:
            logging.getLogger("lstm_mt").setLevel(logging.WARNING)
        run_dir = Path(dist.broadcast(str(run_dir)))
        with _run_folder_lock(run_dir, dist), StopSignals() as signals:
            trainer = Trainer(job, run_dir, dist, device, signals)
            result = trainer.run()
        dist.barrier()  # no rank leaves the process group while another may still be talking to it
        return result
    finally:
        dist.stop()


def _run_folder_lock(run_dir: Path, dist: Distributed) -> AbstractContextManager:
    """Rank 0 holds the run folder while training, so that a second training there stops at once;
    temporary files of saves that a killed run left behind are removed."""
    if not dist.is_main:
        return nullcontext()
    remove_stale_temporaries(run_dir / CHECKPOINT_DIR)
    return FolderLock(run_dir, "a training")


def check_train_config(cfg: TrainConfig) -> None:
    """Raise `LstmMtError` naming the first ``train.*`` value that cannot work."""
    check_precision(cfg.precision)
    if cfg.nonfinite not in NONFINITE:
        raise LstmMtError(f"train.nonfinite={cfg.nonfinite!r} is not one of {', '.join(NONFINITE)}")
    MetricTracker(cfg.early_stop_metric)
    Schedule(cfg)
    check_optimizer(cfg)


# --- data, random state ---------------------------------------------------------------------


def load_data(job: TrainJobConfig, dist: Distributed) -> PreparedData:
    """Train and valid splits and the tokenizer; rank 0 prepares first so the others reuse its cache."""
    if not dist.is_main:
        dist.barrier()
    data = prepare_data(job.data)
    if dist.is_main:
        dist.barrier()
    if job.train.max_train_examples is not None:
        data = dataclasses.replace(data, train=first_examples(data.train, job.train.max_train_examples))
    return data


def first_examples(dataset: EncodedDataset, count: int) -> EncodedDataset:
    """The first ``count`` examples of ``dataset``."""
    if count >= len(dataset):
        return dataset
    return EncodedDataset(
        name=dataset.name,
        src_ids=dataset.src_ids[:count],
        tgt_ids=dataset.tgt_ids[:count],
        src_lines=dataset.src_lines[:count],
        tgt_lines=dataset.tgt_lines[:count],
        line_numbers=dataset.line_numbers[:count],
    )


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's random generators: torch (CPU), python ``random`` and, on CUDA, the device's."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Put the generators back as `rng_state` found them."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def parameter_digest(module: nn.Module) -> str:
    """SHA-256 over every tensor of ``module.state_dict()``: equal digests mean bitwise-equal models."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# --- validation ------------------------------------------------------------------------------


@dataclass
class Validation:
    """Validation results: per-token NLL (no smoothing), perplexity, sacreBLEU of greedy output."""

    loss: float
    ppl: float
    bleu: float
    bleu_signature: str

    def value(self, metric: str) -> float:
        """The number for ``train.early_stop_metric`` (bleu or loss)."""
        return self.bleu if metric == "bleu" else self.loss


class ValidationStopped(Exception):
    """A stop signal came while validating: the validation is left to the resumed run."""


@torch.no_grad()
def validate(
    model: Seq2Seq,
    data: PreparedData,
    max_tokens: int,
    device: torch.device,
    precision: Precision,
    fused: bool = True,
    should_stop: Callable[[], bool] | None = None,
) -> Validation:
    """Loss over the valid split and BLEU of its greedy translations against the raw references.

    ``should_stop`` is asked before each batch; when it answers True, `ValidationStopped` is
    raised, so Ctrl-C during a long validation stops within a batch.
    """
    was_training = model.training
    model.eval()
    nll, tokens = 0.0, 0
    hypotheses = [""] * len(data.valid)
    try:
        for batch in data.valid_batches(max_tokens):
            if should_stop is not None and should_stop():
                raise ValidationStopped
            batch = batch.to(device)
            with precision.autocast(device):
                encoder_out = model.encode(batch.src, batch.src_lengths)  # once, for the loss and the search
                nll += teacher_forced_loss(model, batch.tgt_in, batch.tgt_out, encoder_out, fused=fused).nll.item()
                found = greedy_search(model, batch.src, batch.src_lengths, encoder_out=encoder_out)
            tokens += batch.num_tgt_tokens
            for index, hypothesis in zip(batch.indices, found):
                hypotheses[index] = data.tokenizer.decode_tgt(hypothesis.tokens)
    finally:
        model.train(was_training)
    bleu = corpus_bleu(hypotheses, data.valid.tgt_lines)
    loss = nll / max(tokens, 1)
    return Validation(loss=loss, ppl=math.exp(min(loss, 100.0)), bleu=bleu.score, bleu_signature=bleu.signature)


# --- the loop --------------------------------------------------------------------------------


@dataclass
class UpdateStats:
    """One update: summed smoothed loss and NLL of this rank, target tokens of all ranks, lr, gradient norm."""

    loss: float
    nll: float
    local_tokens: int
    tokens: float
    lr: float
    grad_norm: float


@dataclass
class TrainWindow:
    """Running sums between two log lines: loss per token, tokens per second of training time."""

    loss: float = 0.0
    nll: float = 0.0
    local_tokens: int = 0
    tokens: float = 0.0
    seconds: float = 0.0
    updates: int = 0
    lr: float = 0.0
    grad_norm: float = 0.0

    def add(self, stats: UpdateStats, seconds: float) -> None:
        self.loss += stats.loss
        self.nll += stats.nll
        self.local_tokens += stats.local_tokens
        self.tokens += stats.tokens
        self.seconds += seconds
        self.updates += 1
        self.lr, self.grad_norm = stats.lr, stats.grad_norm

    def summary(self) -> dict[str, float]:
        """Averages since the window opened (loss and NLL per target token of rank 0)."""
        per_token = max(self.local_tokens, 1)
        return {
            "loss": self.loss / per_token,
            "nll": self.nll / per_token,
            "ppl": math.exp(min(self.nll / per_token, 100.0)),
            "lr": self.lr,
            "grad_norm": self.grad_norm,
            "tokens_per_s": self.tokens / max(self.seconds, 1e-9),
        }


@dataclass
class Progress:
    """Where training stands: updates done, epochs completed, the last validated and saved updates, time spent."""

    step: int = 0
    epoch: int = 0
    validated_at: int = -1
    validation_pending: bool = False  # a signal stopped the validation due at ``step``: run it on resume
    saved_at: int = -1
    last_validation: dict[str, Any] | None = None
    seconds_before: float = 0.0  # wall clock of the sessions this one resumed


def update_groups(batches: BatchIterator, size: int) -> Iterator[list[Batch]]:
    """Consecutive groups of ``size`` batches (the last one of an epoch may be shorter)."""
    group: list[Batch] = []
    for batch in batches:
        group.append(batch)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


class Trainer:
    """Holds everything one run needs and runs it: epochs of updates, validation, checkpoints."""

    def __init__(
        self, job: TrainJobConfig, run_dir: Path, dist: Distributed, device: torch.device, signals: StopSignals
    ) -> None:
        self.job, self.cfg = job, job.train
        self.run_dir, self.dist, self.device, self.signals = run_dir, dist, device, signals
        self.precision = select_precision(self.cfg.precision, device)
        self.interrupted = 0
        self.skipped_updates = 0
        self.out_of_time = False
        self.started = time.monotonic()
        self.progress = Progress()
        self.window = TrainWindow()

        seed_everything(job.seed)
        self.data = load_data(job, dist)
        self.module = build_model(job.model, self.data.tokenizer.src_vocab_size, self.data.tokenizer.tgt_vocab_size).to(
            device
        )
        torch.manual_seed(job.seed + dist.rank)  # dropout differs across ranks, init does not
        self.optimizer = build_optimizer(self.module.parameters(), self.cfg)
        self.schedule = Schedule(self.cfg)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision.scales_loss)
        self.best = MetricTracker(self.cfg.early_stop_metric)
        self.batches = self.data.train_batches(
            self.cfg.max_tokens, seed=job.seed, num_shards=dist.world_size, shard=dist.rank
        )
        self.metrics = MetricsLog(
            run_dir / METRICS_FILE if dist.is_main else None, run_dir / "tensorboard" if self.cfg.tensorboard else None
        )
        resume_from = self.dist.broadcast(find_resume_checkpoint(self.cfg.resume, run_dir))
        if resume_from is not None:
            self.restore(Path(resume_from))
        self.schedule.apply(self.optimizer, self.progress.step)
        self.model: nn.Module = self._parallel(
            TeacherForcedLoss(self.module, self.cfg.label_smoothing, self.cfg.fused_loss)
        )
        self._log_start()

    def _parallel(self, module: nn.Module) -> nn.Module:
        if not self.dist.enabled:
            return module
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)

    def _log_start(self) -> None:
        log.info(
            "model: %d parameters (%s), device %s, precision %s, %d rank(s), %d thread(s); run dir %s",
            self.module.num_parameters(),
            _model_summary(self.job),
            self.device,
            self.precision.name,
            self.dist.world_size,
            torch.get_num_threads(),
            self.run_dir,
        )

    # --- running ---

    def run(self) -> TrainResult:
        """Train until max_epochs, max_steps, early stopping or a signal; then validate and save."""
        try:
            self.check_time_budget()  # a resumed run may have spent it already
            if self.progress.validation_pending:
                self.validate_and_save()
            while self.stop_reason() is None:
                self.train_epoch()
            return self.finish()
        finally:
            self.metrics.close()

    def stop_reason(self) -> str | None:
        """Why training should stop now, or None to go on."""
        cfg = self.cfg
        if self.interrupted:
            return signal.Signals(self.interrupted).name
        if cfg.max_steps and self.progress.step >= cfg.max_steps:
            return "max_steps"
        if self.out_of_time:
            return "max_minutes"
        if self.progress.epoch >= cfg.max_epochs:
            return "max_epochs"
        if cfg.patience and self.best.since_best >= cfg.patience:
            return "early_stop"
        return None

    def train_epoch(self) -> None:
        """Updates over the rest of the current epoch (all of it unless resumed mid-epoch)."""
        self.batches.set_epoch(self.progress.epoch)
        per_update = self.cfg.accumulate
        done = self.batches.state_dict()["position"] // per_update
        total = math.ceil(len(self.batches) / per_update)
        if self.cfg.max_steps:  # the bar ends where training will
            total = min(total, done + self.cfg.max_steps - self.progress.step)
        with self._progress_bar(total, done) as bar, logging_redirect_tqdm():
            clock = time.perf_counter()
            for group in update_groups(self.batches, per_update):
                stats = self.update(group)
                self.progress.step += 1
                self.window.add(stats, time.perf_counter() - clock)
                bar.update(1)
                self.after_update(bar)
                if self.stop_reason() is not None:
                    return
                clock = time.perf_counter()
        self.progress.epoch += 1
        if not self.cfg.valid_every:
            self.validate_and_save()

    def _progress_bar(self, total: int, done: int) -> tqdm:
        return tqdm(
            total=total,
            initial=done,
            desc=f"epoch {self.progress.epoch + 1}",
            unit="upd",
            disable=self.cfg.quiet or not self.dist.is_main,
            dynamic_ncols=True,
            leave=False,
        )

    def update(self, group: list[Batch]) -> UpdateStats:
        """One optimizer step over ``group``: loss summed over tokens / all ranks' token count."""
        local_tokens = sum(batch.num_tgt_tokens for batch in group)
        tokens = self.dist.sum(local_tokens, self.device)
        scale = self.dist.world_size / tokens  # DDP averages gradients over ranks
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = nll_sum = torch.zeros((), device=self.device)
        for i, batch in enumerate(group):
            batch = batch.to(self.device, non_blocking=True)
            with self._gradient_sync(last=i == len(group) - 1):
                with self.precision.autocast(self.device), record_function(FORWARD):
                    loss = self.model(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out)
                with record_function(BACKWARD):
                    self.scaler.scale(loss.loss * scale).backward()
            loss_sum, nll_sum = loss_sum + loss.loss.detach(), nll_sum + loss.nll.detach()
        with record_function(OPTIMIZER):
            grad_norm = self._clip_gradients()
            if self._non_finite(float(loss_sum), grad_norm):
                self.scaler.update()  # the step is not taken; the scaler still closes this update
                self.optimizer.zero_grad(set_to_none=True)
            else:
                self.scaler.step(self.optimizer)
                self.scaler.update()
        self.schedule.apply(self.optimizer, self.progress.step + 1)
        return UpdateStats(float(loss_sum), float(nll_sum), local_tokens, tokens, lr, grad_norm)

    def _non_finite(self, loss: float, grad_norm: float) -> bool:
        """Whether any rank's update went NaN/infinite: then stop (train.nonfinite=stop) or skip it (True).

        With fp16 loss scaling an infinite gradient is the scaler's business (it skips the step itself).
        """
        bad = not math.isfinite(loss) or (not self.precision.scales_loss and not math.isfinite(grad_norm))
        if not self.dist.max(int(bad), self.device):
            return False
        step = self.progress.step + 1
        if self.cfg.nonfinite == "stop":
            raise LstmMtError(
                f"update {step}: the loss or gradient became NaN or infinite (loss {loss}, gradient norm {grad_norm}); "
                f"stopped without applying it. Lower train.lr or raise train.warmup_steps, or set "
                f"train.nonfinite=skip to skip such updates"
            )
        self.skipped_updates += 1
        log.warning(
            "update %d: NaN or infinite loss or gradient, update skipped (%d so far)", step, self.skipped_updates
        )
        return True

    def _gradient_sync(self, last: bool) -> AbstractContextManager:
        """DDP averages gradients only after the last batch of an update."""
        if last or not isinstance(self.model, nn.parallel.DistributedDataParallel):
            return nullcontext()
        return self.model.no_sync()

    def _clip_gradients(self) -> float:
        self.scaler.unscale_(self.optimizer)
        max_norm = self.cfg.clip_norm if self.cfg.clip_norm > 0 else math.inf
        return float(nn.utils.clip_grad_norm_(self.module.parameters(), max_norm))

    def after_update(self, bar: tqdm) -> None:
        """Log, validate or save when due, and notice stop signals (on any rank)."""
        step = self.progress.step
        bar.set_postfix_str(self._postfix(), refresh=False)
        if step % self.cfg.log_every == 0:
            self.log_window()
        if self.cfg.valid_every and step % self.cfg.valid_every == 0:
            self.validate_and_save()
        elif self.cfg.save_every and step % self.cfg.save_every == 0:
            self.save()
        self.interrupted = self.dist.max(self.signals.received, self.device)
        self.check_time_budget()
        if self.interrupted and self.progress.saved_at != step:
            self.save()

    def check_time_budget(self) -> None:
        """Note whether ``train.max_minutes`` is spent on any rank, so that all ranks stop together."""
        over_budget = bool(self.cfg.max_minutes) and self.elapsed_seconds() >= 60 * self.cfg.max_minutes
        self.out_of_time = bool(self.dist.max(int(over_budget), self.device))

    def elapsed_seconds(self) -> float:
        """Wall-clock seconds of this run: earlier sessions (when resumed) and this one so far."""
        return self.progress.seconds_before + time.monotonic() - self.started

    def _postfix(self) -> str:
        summary = self.window.summary()
        return f"loss {summary['loss']:.3f} lr {summary['lr']:.2e} {summary['tokens_per_s']:.0f} tok/s"

    def log_window(self) -> None:
        """A ``train`` record (and, with train.quiet, a log line) for the updates since the last one."""
        if not self.window.updates:
            return
        record = {"kind": "train", "step": self.progress.step, "epoch": self.epoch_float(), **self.window.summary()}
        if self.skipped_updates:
            record["skipped_updates"] = self.skipped_updates
        self.metrics.write(record)
        if self.cfg.quiet:
            log.info(
                "epoch %.2f step %d: loss %.3f ppl %.1f lr %.2e %.0f tok/s",
                record["epoch"],
                record["step"],
                record["loss"],
                record["ppl"],
                record["lr"],
                record["tokens_per_s"],
            )
        self.window = TrainWindow()

    def epoch_float(self) -> float:
        """Epochs done, with the fraction of the current one (from the batch position)."""
        position = self.batches.state_dict()
        if position["epoch"] > self.progress.epoch or not len(self.batches):
            return float(self.progress.epoch)
        return self.progress.epoch + position["position"] / len(self.batches)

    def validate_and_save(self) -> None:
        """Validate (rank 0, shared with all), update best/schedule/early stopping, checkpoint."""
        result = None
        if self.dist.is_main:
            try:
                result = validate(
                    self.module,
                    self.data,
                    self.cfg.max_tokens,
                    self.device,
                    self.precision,
                    self.cfg.fused_loss,
                    should_stop=lambda: bool(self.signals.received),
                )
            except ValidationStopped:
                result = None
        result = self.dist.broadcast(result)
        if result is None:  # stopped by a signal on rank 0: every rank stops, the checkpoint says to validate first
            self.interrupted = self.dist.max(self.signals.received, self.device)
            self.progress.validation_pending = True
            log.warning("validation at step %d stopped; a resumed run validates first", self.progress.step)
            self.save()
            return
        self.progress.validation_pending = False
        value = result.value(self.cfg.early_stop_metric)
        improved = self.best.observe(value)
        self.schedule.observe(value)
        self.schedule.apply(self.optimizer, self.progress.step)
        self.progress.validated_at = self.progress.step
        self.progress.last_validation = dataclasses.asdict(result)
        self.metrics.write(
            {
                "kind": "valid",
                "step": self.progress.step,
                "epoch": self.epoch_float(),
                **self.progress.last_validation,
                "best": self.best.best,
                "lr": self.optimizer.param_groups[0]["lr"],
                "minutes": round(self.elapsed_seconds() / 60, 3),
            }
        )
        log.info(
            "valid step %d: loss %.3f ppl %.2f BLEU %.2f (%s)%s",
            self.progress.step,
            result.loss,
            result.ppl,
            result.bleu,
            result.bleu_signature,
            " new best" if improved else "",
        )
        self.save(best=improved)

    # --- checkpoints ---

    def save(self, best: bool = False) -> None:
        """Write step_<N>.pt (rank 0, with every rank's RNG state), point last.pt (and best.pt) at it."""
        rng = self.dist.gather(rng_state(self.device))
        self.progress.saved_at = self.progress.step
        if not self.dist.is_main:
            return
        payload = self.checkpoint_payload(rng)
        path = save_step_checkpoint(payload, self.run_dir, self.progress.step, self.cfg.keep_last, best)
        log.info("saved %s%s", path, " (best)" if best else "")

    def checkpoint_payload(self, rng: list[dict[str, Any]]) -> dict[str, Any]:
        """Everything to use the model (see lstm_mt.checkpoint) and to resume this run exactly."""
        tokenizer = self.data.tokenizer
        return {
            "model": self.module.state_dict(),
            "config": dataclasses.asdict(self.job),
            "tokenizer": tokenizer.to_bytes_dict(),
            "vocab_sizes": {"src": tokenizer.src_vocab_size, "tgt": tokenizer.tgt_vocab_size},
            "step": self.progress.step,
            "epoch": self.progress.epoch,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best": self.best.state_dict(),
            "validated_at": self.progress.validated_at,
            "validation_pending": self.progress.validation_pending,
            "sampler": self.batches.state_dict(),
            "rng": rng,
            "world_size": self.dist.world_size,
            "data": self.data.record(),
            "metrics": self.progress.last_validation,
            "seconds": self.elapsed_seconds(),
        }

    def restore(self, path: Path) -> None:
        """Continue from the checkpoint at ``path``: weights, optimizer, schedule, data position, RNG."""
        checkpoint = load_checkpoint(path)
        missing = [key for key in TRAINING_KEYS if key not in checkpoint]
        if missing:
            raise LstmMtError(
                f"{path}: cannot resume from it, it lacks {', '.join(missing)} (not a training checkpoint)"
            )
        self._check_same_model(path, checkpoint)
        try:
            self.module.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.schedule.load_state_dict(checkpoint["schedule"])
            self.scaler.load_state_dict(checkpoint["scaler"])
            self.best.load_state_dict(checkpoint["best"])
            self.batches.load_state_dict({**checkpoint["sampler"], "shard": self.dist.rank})
            rng = checkpoint["rng"]
            restore_rng_state(rng[self.dist.rank] if len(rng) == self.dist.world_size else rng[0], self.device)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise LstmMtError(f"{path}: cannot resume from this checkpoint: {reason}") from None
        self.progress = Progress(
            step=int(checkpoint["step"]),
            epoch=int(checkpoint["epoch"]),
            validated_at=int(checkpoint.get("validated_at", -1)),
            validation_pending=bool(checkpoint.get("validation_pending", False)),
            saved_at=int(checkpoint["step"]),
            last_validation=checkpoint.get("metrics"),
            seconds_before=float(checkpoint.get("seconds", 0.0)),
        )
        self.metrics.forget_after(self.progress.step)
        log.info("resumed from %s at step %d (epoch %.2f)", path, self.progress.step, self.epoch_float())

    def _check_same_model(self, path: Path, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint["config"].get("model", {}) if isinstance(checkpoint["config"], dict) else {}
        saved = dataclasses.asdict(typed_config(ModelConfig, saved, f"{path}: config.model"))  # old ones lack new keys
        ours = dataclasses.asdict(self.job.model)
        differing = [f"model.{k}={saved.get(k)!r} there, {v!r} here" for k, v in ours.items() if saved.get(k) != v]
        if differing:
            raise LstmMtError(f"{path}: cannot resume with a different model: {'; '.join(differing)}")
        if checkpoint["tokenizer"] != self.data.tokenizer.to_bytes_dict():
            raise LstmMtError(
                f"{path}: cannot resume: its SentencePiece model differs from this run's (data.spm or data changed)"
            )

    # --- the end ---

    def finish(self) -> TrainResult:
        """Validate and save unless just done, record how the run ended; exit 128+N after signal N."""
        reason = self.stop_reason() or "done"
        if self.interrupted:
            log.warning(
                "stopped by %s at step %d; continue with: lstm-mt train <same overrides> "
                "train.resume=auto hydra.run.dir=%s",
                reason,
                self.progress.step,
                self.run_dir,
            )
            raise SystemExit(128 + self.interrupted)
        self.log_window()
        if self.progress.validated_at != self.progress.step:
            self.validate_and_save()
        elif self.progress.saved_at != self.progress.step:
            self.save()
        digests = self.dist.gather(parameter_digest(self.module))
        in_sync = len(set(digests)) == 1
        self.metrics.write(
            {
                "kind": "end",
                "step": self.progress.step,
                "epoch": self.epoch_float(),
                "reason": reason,
                "minutes": round(self.elapsed_seconds() / 60, 2),
                "best": self.best.best,
                "parameter_sha256": digests,
                "ranks_in_sync": in_sync,
            }
        )
        if not in_sync:
            raise RuntimeError(f"ranks ended with different parameters: {digests}")
        best_path = best_checkpoint(self.run_dir)
        best_file = str(best_path) if best_path is not None else None
        log.info(
            "finished (%s) after %d updates, %d epochs, %.1f min; best %s %s (%s)",
            reason,
            self.progress.step,
            self.progress.epoch,
            self.elapsed_seconds() / 60,
            self.cfg.early_stop_metric,
            self.best.best,
            best_file,
        )
        return TrainResult(
            self.progress.step,
            self.progress.epoch,
            reason,
            self.best.best,
            best_file,
            self.progress.last_validation,
        )


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA) and python ``random``."""
    random.seed(seed)
    torch.manual_seed(seed)


def _model_summary(job: TrainJobConfig) -> str:
    m = job.model
    return (
        f"emb {m.emb_size}, encoder {m.encoder_layers}x{m.encoder_hidden}{' bi' if m.bidirectional else ''}, "
        f"decoder {m.decoder_layers}x{m.decoder_hidden}, {m.attention} attention"
    )
