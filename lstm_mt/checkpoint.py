"""Checkpoints: written atomically, read without running code from the file.

A checkpoint is one ``torch.save`` file of plain data (tensors, numbers, strings, bytes,
lists, dicts), so `torch.load(weights_only=True)` can read it and a tampered file cannot
run code. Keys every checkpoint has:

    format        "lstm-mt/1"
    model         the model's state_dict
    config        the full resolved config as plain containers: {"data", "model", "train", ...}
    tokenizer     Tokenizer.to_bytes_dict(): the SentencePiece model(s) as bytes
    vocab_sizes   {"src": int, "tgt": int}
    step, epoch   training progress

Training adds what it needs to resume (optimizer, scheduler, RNG states, data position).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from lstm_mt.errors import LstmMtError
from lstm_mt.files import atomic_write

FORMAT = "lstm-mt/1"
REQUIRED_KEYS = ("format", "model", "config", "tokenizer", "vocab_sizes")

PathLike = str | os.PathLike


def save_checkpoint(payload: dict[str, Any], path: PathLike) -> Path:
    """Write ``payload`` to ``path`` atomically (`lstm_mt.files.atomic_write`).

    A crash at any moment leaves either the old file or the new one, never half of one.
    """
    with atomic_write(path) as handle:
        torch.save({"format": FORMAT, **payload}, handle)
    return Path(path)


def load_checkpoint(path: PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only``); a missing, truncated or foreign file is an `LstmMtError`."""
    path = Path(path)
    if not path.is_file():
        raise LstmMtError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LstmMtError(f"{path}: not a readable lstm-mt checkpoint (truncated or tampered?): {reason}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise LstmMtError(f"{path}: not an lstm-mt checkpoint (expected format {FORMAT!r})")
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise LstmMtError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return payload
