"""Typed configuration of `lstm-mt train`, registered in Hydra's ConfigStore.

`TrainJobConfig` is the schema of the whole job (``data``, ``model``, ``train``, ``seed``,
``device``). ``configs/train.yaml`` starts its defaults list with it (``train_schema``),
so every group file merged on top (``data/multi30k.yaml``, ``model/small.yaml``,
``train/default.yaml``) and every command-line override is checked against these
dataclasses: an unknown key or a wrongly typed value stops Hydra with a message naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from lstm_mt.data.config import DataConfig
from lstm_mt.model import ModelConfig
from lstm_mt.ranges import bounded
from lstm_mt.search import SearchConfig

SCHEMA_NAME = "train_schema"  # the first entry of configs/train.yaml's defaults list


@dataclass
class TrainConfig:
    """How to train (the ``train`` config group; ``configs/train/default.yaml`` holds the defaults).

    Optimization: ``optimizer`` adam | adamw, ``lr``, ``betas``, ``weight_decay``,
    ``label_smoothing``, ``clip_norm`` (0: no clipping), ``accumulate`` (batches per update).
    Schedule: ``schedule`` plateau | inverse_sqrt | linear | constant; ``warmup_steps`` ramps the
    rate up linearly first (any schedule); linear then decays it to 0 at ``max_steps``; plateau multiplies it by ``plateau_factor`` when
    more than ``plateau_patience`` validations in a row did not improve ``early_stop_metric``,
    never below ``min_lr``.
    Length: ``max_epochs``, ``max_steps`` (updates; 0: no limit), ``max_minutes`` (wall-clock
    budget of the run, resumed sessions included; checked between updates, then the run validates
    and saves as at any end; 0: no limit), early stopping after ``patience`` validations without
    improvement (0: never).
    Batches: ``max_tokens`` padded tokens per batch and per rank; ``max_train_examples`` keeps
    only the first N training pairs (quick runs, tests).
    Validation every ``valid_every`` updates (0: after each epoch): loss, perplexity, BLEU.
    Checkpoints at each validation and every ``save_every`` updates (0: only at validations);
    the last ``keep_last`` are kept, plus best.pt and last.pt. ``resume``: a checkpoint path, or
    ``auto`` for the newest one in the run directory (a fresh start when there is none).
    ``precision``: auto (bf16/fp16 autocast on CUDA, fp32 on CPU) | fp32 | bf16 | fp16.
    ``num_threads``: torch.set_num_threads (0: PyTorch's default). ``fused_loss``: the generator
    and the loss taken together a chunk of tokens at a time (`lstm_mt.loss.generator_loss`);
    false computes the full ``[B, T, V]`` logits first (the reference, same results to rounding).
    ``fused_optimizer``: PyTorch's fused Adam/AdamW kernel (one call for all parameters); false:
    its per-parameter loop (same updates to float rounding).
    ``nonfinite``: what an update whose loss (or, without loss scaling, gradient norm) is NaN or
    infinite does: ``stop`` the run with an error before applying it, or ``skip`` it (counted in
    the log records as ``skipped_updates``); such a model is never saved.
    Output: ``quiet`` prints plain log lines instead of progress bars, every ``log_every``
    updates (also the period of ``train`` records in metrics.jsonl); ``tensorboard`` also
    writes TensorBoard events (needs the tensorboard package).
    """

    optimizer: str = "adam"
    lr: float = bounded(1e-3, gt=0)
    betas: list[float] = bounded(factory=lambda: [0.9, 0.999], ge=0, lt=1)
    weight_decay: float = bounded(0.0, ge=0)
    label_smoothing: float = bounded(0.1, ge=0, lt=1)
    clip_norm: float = bounded(1.0, ge=0)
    accumulate: int = bounded(1, ge=1)
    schedule: str = "plateau"
    warmup_steps: int = bounded(0, ge=0)
    plateau_factor: float = bounded(0.5, gt=0, lt=1)
    plateau_patience: int = bounded(1, ge=0)
    min_lr: float = bounded(1e-5, ge=0)
    max_epochs: int = bounded(30, ge=0)
    max_steps: int = bounded(0, ge=0)
    max_minutes: float = bounded(0.0, ge=0)
    patience: int = bounded(5, ge=0)
    early_stop_metric: str = "bleu"
    max_tokens: int = bounded(4096, ge=1)
    max_train_examples: int | None = bounded(None, ge=1)
    valid_every: int = bounded(0, ge=0)
    save_every: int = bounded(0, ge=0)
    keep_last: int = bounded(3, ge=1)
    resume: str | None = None
    precision: str = "auto"
    num_threads: int = bounded(0, ge=0)
    fused_loss: bool = True
    fused_optimizer: bool = True
    quiet: bool = False
    log_every: int = bounded(100, ge=1)
    tensorboard: bool = False
    nonfinite: str = "stop"


@dataclass
class DecodingGrid:
    """The search settings a result recipe tries on the valid split (never read by training).

    `lstm_mt.recipe` compares best.pt with the checkpoint average at ``beam_size``/``alpha``, then
    scores every ``beam_sizes`` x ``alphas`` pair on the valid split with the better checkpoint and
    translates the test splits with the best pair. Defaults: `SearchConfig`'s. ``ensemble``: the
    ensemble of best.pt and the average competes with them too (it decodes with both models).
    """

    beam_size: int = bounded(SearchConfig.beam_size, ge=1)
    alpha: float = bounded(SearchConfig.alpha, ge=0)
    beam_sizes: list[int] = bounded(factory=lambda: [SearchConfig.beam_size], ge=1)
    alphas: list[float] = bounded(factory=lambda: [SearchConfig.alpha], ge=0)
    ensemble: bool = False


@dataclass
class TrainJobConfig:
    """Everything `lstm-mt train` reads: corpus, model, training, seed and device (auto | cpu | cuda[:N]).

    ``decoding`` rides along for the recipes (``configs/experiment/``): checkpoints carry it.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decoding: DecodingGrid = field(default_factory=DecodingGrid)
    seed: int = bounded(1, ge=0, lt=2**32)
    device: str = "auto"


def register_configs() -> None:
    """Put the schemas into Hydra's ConfigStore (idempotent); call before composing ``train``."""
    schema = OmegaConf.structured(TrainJobConfig)
    OmegaConf.set_struct(schema.data.custom.test, False)  # new test set names: data.custom.test.<name>.src=...
    ConfigStore.instance().store(name=SCHEMA_NAME, node=schema)
