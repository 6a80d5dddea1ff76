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
from lstm_mt.ranges import bounded, check_ranges
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

    max_body_bytes: int = bounded(1_000_000, ge=1)
    max_sentences: int = bounded(64, ge=1)
    max_chars: int = bounded(1000, ge=1)
    max_subwords: int = bounded(250, ge=1)
    max_beam_size: int = bounded(16, ge=1)
    max_len_a: float = bounded(4.0, ge=1)
    max_len_b: int = bounded(256, ge=1)
    max_gate_sentences: int = bounded(8, ge=1)


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
    port: int = bounded(8000, ge=0, le=65535)
    device: str = "cpu"
    threads: int = bounded(0, ge=0)
    search: SearchConfig = field(default_factory=SearchConfig)
    limits: Limits = field(default_factory=Limits)
    batch_wait_ms: float = bounded(5.0, ge=0)
    max_batch_tokens: int = bounded(3000, ge=1)
    max_queue_sentences: int = bounded(512, ge=1)
    retry_after_s: int = bounded(1, ge=1)
    shutdown_timeout_s: int = bounded(30, ge=0)
    log_level: str = "info"

    def check(self) -> None:
        """Raise `LstmMtError` naming the first option out of range (`lstm_mt.ranges`) or out of its limit."""
        check_ranges(self)
        self.search.check()
        if self.search.beam_size > self.limits.max_beam_size:
            raise LstmMtError(
                f"search.beam_size={self.search.beam_size}: above limits.max_beam_size={self.limits.max_beam_size}"
            )


def register_configs() -> None:
    """Put `ServeConfig` into Hydra's ConfigStore (idempotent); call before composing ``serve``."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=ServeConfig)
