"""Checkpoint averaging: the elementwise mean of the model weights of several checkpoints.

    lstm-mt average inputs=[a.pt,b.pt,c.pt] output=avg.pt
    lstm-mt average dir=checkpoints last=5 output=avg.pt       # the 5 with the highest step

Only the model weights are averaged (in float64, stored in their own dtype); config,
tokenizer, vocab sizes, step and epoch are those of the newest input, and training state
(optimizer, scheduler, ...) is left out, since it belongs to no averaged model. The
output records ``averaged_from`` and is written with `save_checkpoint` (atomic).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from lstm_mt.checkpoint import load_checkpoint, save_checkpoint
from lstm_mt.configuring import typed_config
from lstm_mt.errors import LstmMtError
from lstm_mt.files import check_output_file
from lstm_mt.hydra_app import run_hydra
from lstm_mt.ranges import bounded

__all__ = ["AverageConfig", "average_checkpoints", "latest_checkpoints", "main"]

KEPT_KEYS = ("config", "tokenizer", "vocab_sizes", "step", "epoch")


@dataclass
class AverageConfig:
    """`lstm-mt average`: either ``inputs`` (checkpoint files) or ``dir`` and ``last``."""

    inputs: list[str] = field(default_factory=list)
    dir: str | None = None
    last: int = bounded(5, ge=1)
    pattern: str = "*.pt"
    output: str = MISSING


ConfigStore.instance().store(name="average_schema", node=AverageConfig)


def main(argv: list[str] | None = None) -> int | None:
    """`lstm-mt average inputs=[...] output=PATH` or `lstm-mt average dir=DIR last=N output=PATH`."""
    return run_hydra(run_average, "average", sys.argv[1:] if argv is None else argv, "lstm-mt average")


def run_average(cfg: DictConfig) -> Path:
    """Average the checkpoints the options name into ``output``."""
    options = typed_config(AverageConfig, cfg, "average config")
    output = Path(options.output)
    check_output_file(output, "output")
    if options.inputs and options.dir:
        raise LstmMtError("give either inputs=[...] or dir=... last=N, not both")
    if options.dir:
        paths = latest_checkpoints(Path(options.dir), options.last, options.pattern, exclude=output)
    elif options.inputs:
        paths = [Path(p) for p in options.inputs]
    else:
        raise LstmMtError("nothing to average: give inputs=[a.pt,b.pt] or dir=FOLDER last=N")
    check_output_file(output, "output", inputs=tuple(paths))
    saved = save_checkpoint(average_checkpoints(paths), output)
    print(f"averaged {len(paths)} checkpoints ({', '.join(map(str, paths))}) into {saved}", file=sys.stderr)
    return saved


def average_checkpoints(paths: Sequence[str | Path]) -> dict[str, Any]:
    """A checkpoint payload whose model weights are the mean of those of ``paths`` (see module docstring)."""
    if not paths:
        raise LstmMtError("nothing to average: no checkpoints given")
    sums: dict[str, torch.Tensor] = {}
    first: dict[str, Any] = {}
    newest: dict[str, Any] = {}
    for path in paths:
        payload = load_checkpoint(path)
        first = first or {"path": path, **payload}
        _check_compatible(path, payload, first)
        for name, tensor in payload["model"].items():
            if tensor.is_floating_point():
                sums[name] = sums[name] + tensor.double() if name in sums else tensor.double()
        if not newest or (payload.get("step") or 0) >= (newest.get("step") or 0):
            newest = {key: payload[key] for key in (*KEPT_KEYS, "model") if key in payload}
    model = {
        name: (sums[name] / len(paths)).to(tensor.dtype) if name in sums else tensor
        for name, tensor in newest["model"].items()  # non-float entries (counters): the newest's
    }
    return {**newest, "model": model, "averaged_from": [str(p) for p in paths]}


def latest_checkpoints(folder: Path, count: int, pattern: str = "*.pt", exclude: Path | None = None) -> list[Path]:
    """The ``count`` checkpoints in ``folder`` with the highest step, oldest first.

    Averages written earlier (they have ``averaged_from``) and ``exclude`` are skipped, and
    so are links to a file already taken (training's ``last.pt``/``best.pt`` link step files).
    """
    if count < 1:
        raise LstmMtError(f"last={count}: must be at least 1")
    if not folder.is_dir():
        raise LstmMtError(f"{folder}: no such folder (dir=)")
    found, seen_files = [], set()
    for path in sorted(folder.glob(pattern)):
        if exclude is not None and path.resolve() == exclude.resolve():
            continue
        if not path.exists():
            raise LstmMtError(f"{path}: a link to {os.readlink(path)}, which does not exist (dir={folder})")
        identity = (path.stat().st_dev, path.stat().st_ino)
        if identity in seen_files:
            continue
        seen_files.add(identity)
        payload = load_checkpoint(path)
        if "averaged_from" not in payload:
            found.append((int(payload.get("step") or 0), path))
    if len(found) < count:
        raise LstmMtError(f"{folder}: last={count} but only {len(found)} checkpoints match {pattern}")
    return [path for _, path in sorted(found)[-count:]]


def _check_compatible(path: str | Path, payload: dict[str, Any], first: dict[str, Any]) -> None:
    """Raise unless ``payload`` has the weight names and shapes, vocabulary and tokenizer of ``first``."""
    state, reference = payload["model"], first["model"]
    if state.keys() != reference.keys():
        different = sorted(set(state) ^ set(reference))
        raise LstmMtError(f"{path}: model weights differ from {first['path']} ({', '.join(different[:3])}, ...)")
    for name, tensor in state.items():
        if tensor.shape != reference[name].shape:
            raise LstmMtError(
                f"{path}: model.{name} has shape {tuple(tensor.shape)}, {first['path']} {tuple(reference[name].shape)}"
            )
    for key in ("vocab_sizes", "tokenizer"):
        if payload.get(key) != first.get(key):
            raise LstmMtError(
                f"{path}: {key} differs from {first['path']}; only checkpoints of one run can be averaged"
            )
