"""The typed configuration of `lstm-mt serve` (defaults in ``lstm_mt/configs/serve.yaml``).

`ServeConfig` names the checkpoint, the address, the decoding defaults (one `SearchConfig`),
the batching and queue settings and the request `Limits`; registered in Hydra's ConfigStore
as ``serve_schema``, so a misspelled key or a wrong type stops the command with its name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from lstm_mt.errors import LstmMtError
from lstm_mt.search import SearchConfig

SCHEMA_NAME = "serve_schema"


@dataclass
class Limits:
    """What one request may ask for; beyond these it gets a 4xx answer naming the field.

    ``max_body_bytes``: the request body; ``max_sentences`` per request; ``max_chars`` and
    ``max_subwords`` per sentence; ``max_beam_size``; ``max_len_a``/``max_len_b``: the largest
    output-length options; ``max_gate_sentences``: sentences per request that may ask for gates
    (each costs one more pass through the model and a large answer).
    """

    max_body_bytes: int = 1_000_000
    max_sentences: int = 64
    max_chars: int = 1000
    max_subwords: int = 250
    max_beam_size: int = 16
    max_len_a: float = 4.0
    max_len_b: int = 256
    max_gate_sentences: int = 8

    def check(self) -> None:
        """Raise `LstmMtError` naming the first limit below 1."""
        for name, value in vars(self).items():
            if value < 1:
                raise LstmMtError(f"limits.{name}={value}: must be at least 1")


@dataclass
class ServeConfig:
    """`lstm-mt serve checkpoint=PATH [host=...] [port=...] [key=value ...]`.

    ``search``: the decoding options a request gets unless it names its own. Batching: the
    worker waits up to ``batch_wait_ms`` after the first queued request for more to decode
    together, up to ``max_batch_tokens`` source subwords times beam size per batch;
    ``max_queue_sentences`` may wait at once, more get 503 with ``Retry-After: retry_after_s``.
    ``threads``: PyTorch threads for decoding (0: PyTorch's default). On SIGTERM or Ctrl-C the
    server stops accepting and finishes the requests in flight, for up to ``shutdown_timeout_s``.
    """

    checkpoint: str = MISSING
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "cpu"
    threads: int = 0
    search: SearchConfig = field(default_factory=SearchConfig)
    limits: Limits = field(default_factory=Limits)
    batch_wait_ms: float = 5.0
    max_batch_tokens: int = 3000
    max_queue_sentences: int = 512
    retry_after_s: int = 1
    shutdown_timeout_s: int = 30
    log_level: str = "info"

    def check(self) -> None:
        """Raise `LstmMtError` naming the first option out of range."""
        self.search.check()
        self.limits.check()
        if self.search.beam_size > self.limits.max_beam_size:
            raise LstmMtError(
                f"search.beam_size={self.search.beam_size}: above limits.max_beam_size={self.limits.max_beam_size}"
            )
        if not 0 <= self.port <= 65535:
            raise LstmMtError(f"port={self.port}: must be between 0 and 65535")
        if self.threads < 0:
            raise LstmMtError(f"threads={self.threads}: must be >= 0 (0: PyTorch's default)")
        if self.batch_wait_ms < 0:
            raise LstmMtError(f"batch_wait_ms={self.batch_wait_ms}: must be >= 0")
        for name in ("max_batch_tokens", "max_queue_sentences", "retry_after_s"):
            if getattr(self, name) < 1:
                raise LstmMtError(f"{name}={getattr(self, name)}: must be at least 1")


def register_configs() -> None:
    """Put `ServeConfig` into Hydra's ConfigStore (idempotent); call before composing ``serve``."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=ServeConfig)
