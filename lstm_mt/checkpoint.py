"""Checkpoints: written atomically, read without running code from the file, checked before use.

A checkpoint is one ``torch.save`` file of plain data (tensors, numbers, strings, bytes,
lists, dicts), so `torch.load(weights_only=True)` can read it and a tampered file cannot
run code. Keys every checkpoint has:

    format        "lstm-mt/1"
    model         the model's state_dict
    config        the full resolved config as plain containers: {"data", "model", "train", ...}
    tokenizer     Tokenizer.to_bytes_dict(): the SentencePiece model(s) as bytes
    vocab_sizes   {"src": int, "tgt": int}
    step, epoch   training progress
    sha256        SHA-256 of everything else (`content_digest`), written by `save_checkpoint`

Training adds what it needs to resume (optimizer, scheduler, RNG states, data position).

`load_checkpoint` trusts nothing in the file: whatever goes wrong (not a zip, a truncated or
damaged one, a pickled object that is not plain data, a wrong checksum, a field of the wrong
type, a NaN or infinite weight) is one `LstmMtError` naming the file and the fault. Checkpoints
from before the checksum load with a warning.

A training run keeps its checkpoints in ``<run>/checkpoints/``: ``step_<N>.pt`` (the last few,
`save_step_checkpoint` rotates them), ``last.pt`` (the newest) and ``best.pt``, both links to
a step file; `find_resume_checkpoint` finds where ``train.resume`` continues.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lstm_mt.errors import LstmMtError
from lstm_mt.files import atomic_write, temporary_name

__all__ = [
    "BEST",
    "CHECKPOINT_DIR",
    "CHECKSUM_KEY",
    "FORMAT",
    "LAST",
    "best_checkpoint",
    "check_payload",
    "checkpoint_path",
    "content_digest",
    "find_resume_checkpoint",
    "link_or_copy",
    "load_checkpoint",
    "save_checkpoint",
    "save_step_checkpoint",
    "step_checkpoints",
]

log = logging.getLogger(__name__)

FORMAT = "lstm-mt/1"
REQUIRED_KEYS = ("format", "model", "config", "tokenizer", "vocab_sizes")
CHECKSUM_KEY = "sha256"

CHECKPOINT_DIR = "checkpoints"  # in the run folder
LAST, BEST = "last.pt", "best.pt"

PathLike = str | os.PathLike


def save_checkpoint(payload: dict[str, Any], path: PathLike) -> Path:
    """Write ``payload`` (with its format tag and content checksum) to ``path`` atomically.

    A crash at any moment leaves either the old file or the new one, never half of one
    (`lstm_mt.files.atomic_write`).
    """
    payload = {"format": FORMAT, **{key: value for key, value in payload.items() if key != CHECKSUM_KEY}}
    payload[CHECKSUM_KEY] = content_digest(payload)
    with atomic_write(path) as handle:
        torch.save(payload, handle)
    return Path(path)


def load_checkpoint(path: PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only``) and check it (see the module docstring).

    Every failure is an `LstmMtError` naming ``path``; the result has every documented key with
    the documented type, finite model weights and, where the file has one, a matching checksum.
    """
    path = Path(path)
    if not path.exists():
        raise LstmMtError(f"{path}: checkpoint not found")
    if not path.is_file():
        raise LstmMtError(f"{path}: not a checkpoint file")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is not ours
        raise LstmMtError(f"{path}: not a complete torch.save zip archive (truncated, damaged or another kind of file)")
    try:
        with warnings.catch_warnings():  # torch's warnings about a damaged file's pickle say nothing useful
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # anything a damaged or hostile file makes the unpickler raise
        raise LstmMtError(f"{path}: {_load_failure(error)}") from None
    check_payload(payload, str(path))
    if torch.device(map_location).type != "cpu":
        payload = _map_tensors(payload, lambda tensor: tensor.to(map_location))
    return payload


def check_payload(payload: Any, origin: str) -> None:
    """Raise `LstmMtError` (naming ``origin``) unless ``payload`` is a sound lstm-mt checkpoint."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise LstmMtError(f"{origin}: not an lstm-mt checkpoint (expected format {FORMAT!r})")
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise LstmMtError(f"{origin}: checkpoint lacks {', '.join(missing)}")
    _check_checksum(payload, origin)
    _check_types(payload, origin)
    for name, tensor in payload["model"].items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise LstmMtError(f"{origin}: model weight {name} has NaN or infinite values; this model cannot be used")


def content_digest(payload: dict[str, Any]) -> str:
    """SHA-256 over the whole payload but its checksum: every tensor's dtype, shape and bytes, every
    string, number and bytes value, with the keys that lead to them, in order."""
    digest = hashlib.sha256()
    try:
        for key, value in payload.items():
            if key != CHECKSUM_KEY:
                _digest_value(digest, key)
                _digest_value(digest, value)
    except RecursionError:
        raise LstmMtError("checkpoint content is nested too deeply") from None
    return digest.hexdigest()


def _digest_value(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(value, (bytes, bytearray)):
        digest.update(b"B%d:" % len(value) + bytes(value))
    elif isinstance(value, str):
        digest.update(b"S%d:" % len(value) + value.encode("utf-8", "surrogatepass"))
    elif isinstance(value, dict):
        digest.update(b"D%d:" % len(value))
        for key, item in value.items():
            _digest_value(digest, key)
            _digest_value(digest, item)
    elif isinstance(value, (list, tuple)):
        digest.update(b"L%d:" % len(value) if isinstance(value, list) else b"U%d:" % len(value))
        for item in value:
            _digest_value(digest, item)
    else:  # numbers, booleans, None and the few other plain types weights_only allows
        digest.update(f"{type(value).__name__}:{value!r};".encode())


def _check_checksum(payload: dict[str, Any], origin: str) -> None:
    stored = payload.get(CHECKSUM_KEY)
    if stored is None:
        log.warning("%s: no content checksum (saved by an older lstm-mt); damage to it cannot be detected", origin)
        return
    if not isinstance(stored, str) or stored != content_digest(payload):
        raise LstmMtError(f"{origin}: content does not match its SHA-256 checksum: the file is damaged or was altered")


def _check_types(payload: dict[str, Any], origin: str) -> None:
    """Every documented key with its documented type, so that no reader meets a surprise."""
    model, config, tokenizer, sizes = (payload[key] for key in ("model", "config", "tokenizer", "vocab_sizes"))
    if not isinstance(model, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()
    ):
        raise LstmMtError(f"{origin}: field model must map weight names to tensors, found {_kind(model)}")
    if not isinstance(config, dict) or not all(
        isinstance(config.get(section, {}), dict) for section in ("model", "data", "train")
    ):
        raise LstmMtError(f"{origin}: field config must hold the sections model, data, train as mappings")
    if not isinstance(tokenizer, dict) or not all(
        isinstance(k, str) and isinstance(v, bytes) for k, v in tokenizer.items()
    ):
        raise LstmMtError(f"{origin}: field tokenizer must map names to SentencePiece model bytes")
    if not isinstance(sizes, dict) or not all(_is_count(sizes.get(side), 1) for side in ("src", "tgt")):
        raise LstmMtError(f"{origin}: field vocab_sizes must be {{'src': int, 'tgt': int}}, found {sizes!r:.80}")
    for key in ("step", "epoch"):
        if key in payload and not _is_count(payload[key], 0):
            raise LstmMtError(f"{origin}: field {key} must be a whole number >= 0, found {payload[key]!r:.80}")


def _is_count(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _kind(value: Any) -> str:
    return f"a {type(value).__name__}"


def _load_failure(error: Exception) -> str:
    """Why ``torch.load`` failed, in one line, never suggesting the unsafe ``weights_only=False``."""
    text = str(error)
    unsafe = re.search(r"[Uu]nsupported (?:global|GLOBAL|operand)[^\n]*", text)
    if unsafe or "Weights only load failed" in text:
        what = f" ({unsafe.group(0).strip().rstrip('.')})" if unsafe else ""
        return f"holds Python objects that are not plain data{what}; lstm-mt refuses to load them (it could run code)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = lines[0] if lines else type(error).__name__
    return f"not a readable lstm-mt checkpoint (truncated or damaged?): {reason[:200]}"


def _map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {key: _map_tensors(item, fn) for key, item in value.items()}
    if isinstance(value, list):
        return [_map_tensors(item, fn) for item in value]
    if isinstance(value, tuple):
        return tuple(_map_tensors(item, fn) for item in value)
    return value


def checkpoint_path(run_dir: Path, step: int) -> Path:
    """``<run_dir>/checkpoints/step_<step>.pt``."""
    return run_dir / CHECKPOINT_DIR / f"step_{step}.pt"


def save_step_checkpoint(payload: dict[str, Any], run_dir: Path, step: int, keep_last: int, best: bool) -> Path:
    """Save ``step_<step>.pt``, point last.pt (and, if ``best``, best.pt) at it, keep the newest ``keep_last``."""
    path = save_checkpoint(payload, checkpoint_path(run_dir, step))
    link_or_copy(path, path.with_name(LAST))
    if best:
        link_or_copy(path, path.with_name(BEST))
    for old in step_checkpoints(path.parent)[:-keep_last]:
        old.unlink()
    return path


def step_checkpoints(folder: Path) -> list[Path]:
    """The ``step_<N>.pt`` files in ``folder``, oldest (smallest N) first."""
    found = [(int(p.stem[5:]), p) for p in folder.glob("step_*.pt") if p.stem[5:].isdigit()]
    return [p for _, p in sorted(found)]


def best_checkpoint(run_dir: Path) -> Path | None:
    """``<run_dir>/checkpoints/best.pt`` if there is one."""
    path = run_dir / CHECKPOINT_DIR / BEST
    return path if path.is_file() else None


def find_resume_checkpoint(spec: str | None, run_dir: Path) -> Path | None:
    """The checkpoint ``train.resume`` names: a path, or for ``auto`` the newest in this run (or None).

    The newest is the highest ``step_<N>.pt``: last.pt can lag behind it when a run is killed
    between writing the one and linking the other.
    """
    if spec is None:
        return None
    if spec != "auto":
        return Path(spec)
    folder = run_dir / CHECKPOINT_DIR
    newest = next(reversed(step_checkpoints(folder)), None)
    if newest is None and (folder / LAST).is_file():
        newest = folder / LAST
    if newest is None:
        log.info(
            "train.resume=auto: no checkpoint in %s yet, starting from scratch "
            "(to continue a run, set hydra.run.dir to its folder)",
            folder,
        )
    return newest


def link_or_copy(source: Path, target: Path) -> None:
    """Make ``target`` the same file as ``source`` (a hard link, else an atomic copy), replacing it atomically."""
    temporary = temporary_name(target)
    try:
        os.link(source, temporary)
    except OSError:
        with atomic_write(target) as out, source.open("rb") as data:
            shutil.copyfileobj(data, out)
        return
    os.replace(temporary, target)
