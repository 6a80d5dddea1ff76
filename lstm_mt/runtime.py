"""Where and how a training run executes: device, precision, ranks and stop signals.

`select_device` and `select_precision` turn the ``device`` and ``train.precision`` config
values into a device and an autocast setting; `Distributed` is this process's place among
``torchrun`` ranks, with the few collective operations the loop needs; `StopSignals`
turns SIGINT/SIGTERM into a flag that the loop checks between updates.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lstm_mt.errors import LstmMtError

log = logging.getLogger(__name__)


def select_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` (this rank's GPU) or ``cuda:N``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise LstmMtError(f"device={name}: CUDA is not available here; use device=cpu or device=auto")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    raise LstmMtError(f"device={name!r} is not one of auto, cpu, cuda, cuda:N")


def check_device(device: str | torch.device, key: str = "device") -> torch.device:
    """``device`` as a torch device that exists here; else an `LstmMtError` naming ``key``."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise LstmMtError(f"{key}={device}: not a device (cpu, cuda, cuda:1, mps, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LstmMtError(f"{key}={device}: CUDA is not available here; use {key}=cpu")
    return device


@dataclass(frozen=True)
class Precision:
    """The dtype autocast runs in (None: plain fp32) and whether fp16's loss scaling is needed."""

    name: str
    dtype: torch.dtype | None

    def autocast(self, device: torch.device) -> AbstractContextManager:
        """Autocast for ``device`` in this precision, or nothing for fp32."""
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)

    @property
    def scales_loss(self) -> bool:
        return self.dtype == torch.float16


PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # the values of train.precision


def check_precision(name: str) -> None:
    """Raise `LstmMtError` unless ``name`` is one of `PRECISIONS` (checked before any work starts)."""
    if name not in PRECISIONS:
        raise LstmMtError(f"train.precision={name!r} is not one of {', '.join(PRECISIONS)}")


def select_precision(name: str, device: torch.device) -> Precision:
    """``auto``: bf16 (else fp16) autocast on CUDA, fp32 on CPU; ``bf16`` on CPU is opt-in."""
    if name == "auto":
        name = "fp32" if device.type != "cuda" else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    if name == "fp16" and device.type != "cuda":
        raise LstmMtError("train.precision=fp16 needs a CUDA device; on CPU use fp32 or bf16")
    if name == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning("train.precision=bf16: this CPU lacks avx512_bf16/amx_bf16, so bf16 is likely slower than fp32")
    return Precision(name, {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name])


def cpu_has_native_bf16() -> bool:
    """Whether /proc/cpuinfo lists avx512_bf16 or amx_bf16 (False where it cannot be read)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass
class Distributed:
    """This process's place among ``torchrun`` ranks (one rank when not started by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> Distributed:
        """Read RANK, WORLD_SIZE and LOCAL_RANK as torchrun sets them."""
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def start(self, device: torch.device) -> None:
        """Join the process group: nccl for CUDA, gloo for CPU."""
        if self.enabled:
            if device.type == "cuda":
                torch.cuda.set_device(device)
            torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def stop(self) -> None:
        """Leave the process group."""
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def sum(self, value: float, device: torch.device) -> float:
        """``value`` summed over ranks."""
        if not self.enabled:
            return value
        total = torch.tensor([float(value)], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(total)
        return float(total.item())

    def max(self, value: int, device: torch.device) -> int:
        """The largest ``value`` of any rank."""
        if not self.enabled:
            return value
        largest = torch.tensor([value], dtype=torch.long, device=device)
        torch.distributed.all_reduce(largest, op=torch.distributed.ReduceOp.MAX)
        return int(largest.item())

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (picklable objects)."""
        if not self.enabled:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, obj)
        return gathered

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


class StopSignals:
    """SIGINT and SIGTERM set a flag that the loop checks between updates; a second SIGINT aborts at once."""

    def __init__(self) -> None:
        self.received = 0  # the signal number, 0 while none came
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        log.warning("%s received: saving a checkpoint after this update", signal.Signals(signum).name)
