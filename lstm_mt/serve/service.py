"""What the server does, apart from HTTP: check a request against the limits, queue it, decode.

`TranslationService` owns the `Translator` and the `DynamicBatcher`. `submit` runs on the event
loop: it checks the options and the sentence lengths (refusals are `RequestError` s naming the
field) and queues the work; `run` runs on the batcher's worker thread: it decodes the queued
requests that share search options as one list and builds each request's JSON.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import asdict, astuple, dataclass
from typing import Any

import torch

from lstm_mt.checkpoint import load_checkpoint
from lstm_mt.search import SearchConfig
from lstm_mt.serve.batching import DynamicBatcher, Job, QueueFull
from lstm_mt.serve.config import ServeConfig
from lstm_mt.serve.results import sentence_result
from lstm_mt.serve.schemas import TranslateRequest
from lstm_mt.translate import Translator


class RequestError(Exception):
    """A request the server refuses: the HTTP ``status``, the ``field`` at fault and a one-line ``message``."""

    def __init__(self, status: int, field: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{field}: {message}")
        self.status = status
        self.field = field
        self.message = message
        self.headers = headers or {}


@dataclass(frozen=True)
class Work:
    """One request as the worker thread needs it."""

    sentences: list[str]
    search: SearchConfig
    attention: bool
    gates: bool
    gate_units: int


class TranslationService:
    """A translator behind a bounded, batching queue, with the server's limits and defaults."""

    def __init__(self, translator: Translator, config: ServeConfig, info: dict[str, Any]) -> None:
        config.check()
        self.translator = translator
        self.config = config
        self._info = info
        self.batcher = DynamicBatcher(
            self.run, config.batch_wait_ms / 1000, config.max_batch_tokens, config.max_queue_sentences
        )

    @classmethod
    def from_config(cls, config: ServeConfig) -> TranslationService:
        """Load ``config.checkpoint`` and describe it for ``GET /v1/info``."""
        config.check()
        payload = load_checkpoint(config.checkpoint)
        translator = Translator.from_payload(
            payload, config.checkpoint, config.device, max_input_tokens=config.limits.max_subwords
        )
        data = payload["config"].get("data") or {}
        info = {
            "model": {
                "parameters": translator.model.num_parameters(),
                "config": dict(payload["config"].get("model") or {}),
            },
            "languages": {"source": data.get("src"), "target": data.get("tgt")},
            "vocabulary": {
                "source": translator.tokenizer.src_vocab_size,
                "target": translator.tokenizer.tgt_vocab_size,
            },
            "checkpoint": {
                "path": os.path.abspath(config.checkpoint),
                "step": payload.get("step"),
                "epoch": payload.get("epoch"),
            },
        }
        return cls(translator, config, info)

    def info(self) -> dict[str, Any]:
        """The model, its languages and vocabularies, the checkpoint, decoding defaults and limits."""
        return {
            **self._info,
            "device": str(self.translator.device),
            "decoding": asdict(self.config.search),
            "limits": asdict(self.config.limits),
        }

    def start(self) -> None:
        """Start decoding (PyTorch's thread count is set here, once, for the whole process)."""
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        self.batcher.start()

    def close(self) -> None:
        """Finish the queued requests and stop the worker."""
        self.batcher.close(self.config.shutdown_timeout_s)

    def submit(self, request: TranslateRequest) -> Future:
        """Check ``request`` and queue it; the future receives the `TranslateResponse` JSON.

        Raises `RequestError`: 422 for a limit or option out of range, 503 when the queue is full.
        """
        search = self.search_config(request)
        lengths = self.check_sentences(request)
        if request.gates and len(request.sentences) > self.config.limits.max_gate_sentences:
            raise RequestError(
                422,
                "gates",
                f"gates for {len(request.sentences)} sentences; at most "
                f"{self.config.limits.max_gate_sentences} per request",
            )
        work = Work(list(request.sentences), search, request.attention, request.gates, request.gate_units)
        cost = sum(length + 1 for length in lengths) * search.beam_size
        try:
            return self.batcher.submit(astuple(search), len(work.sentences), cost, work)
        except QueueFull as full:
            raise RequestError(
                503, "queue", f"busy, try again later ({full})", {"Retry-After": str(self.config.retry_after_s)}
            ) from None

    def search_config(self, request: TranslateRequest) -> SearchConfig:
        """The request's search options, the server's defaults filling the gaps, checked against the limits."""
        defaults, limits = self.config.search, self.config.limits
        search = SearchConfig(
            beam_size=_given(request.beam_size, defaults.beam_size),
            alpha=_given(request.alpha, defaults.alpha),
            max_len_a=_given(request.max_len_a, defaults.max_len_a),
            max_len_b=_given(request.max_len_b, defaults.max_len_b),
            nbest=_given(request.nbest, 1),
        )
        for name, limit in (
            ("beam_size", limits.max_beam_size),
            ("max_len_a", limits.max_len_a),
            ("max_len_b", limits.max_len_b),
        ):
            if getattr(search, name) > limit:
                raise RequestError(422, name, f"{getattr(search, name)} is above this server's limit of {limit}")
        if search.nbest > search.beam_size:
            raise RequestError(422, "nbest", f"{search.nbest} is more than beam_size ({search.beam_size})")
        return search

    def check_sentences(self, request: TranslateRequest) -> list[int]:
        """The subword count of each sentence, after checking the count, characters and subwords against the limits."""
        limits, sentences = self.config.limits, request.sentences
        if len(sentences) > limits.max_sentences:
            raise RequestError(
                422, "sentences", f"{len(sentences)} sentences; at most {limits.max_sentences} per request"
            )
        for index, sentence in enumerate(sentences):
            if len(sentence) > limits.max_chars:
                raise RequestError(
                    422, f"sentences[{index}]", f"{len(sentence)} characters; at most {limits.max_chars}"
                )
        lengths = [len(ids) for ids in self.translator.tokenizer.encode_src(sentences)]
        for index, length in enumerate(lengths):
            if length > limits.max_subwords:
                raise RequestError(422, f"sentences[{index}]", f"{length} subwords; at most {limits.max_subwords}")
        return lengths

    def run(self, jobs: Sequence[Job]) -> list[dict[str, Any]]:
        """Decode the jobs' sentences as one list (they share search options); one response JSON per job."""
        works: list[Work] = [job.payload for job in jobs]
        search = works[0].search  # the same for every job: it is the batching key
        sentences = [sentence for work in works for sentence in work.sentences]
        keep_attention = any(work.attention or work.gates for work in works)
        results = self.translator.translate_nbest(
            sentences, search, max_tokens=self.config.max_batch_tokens, source="request", keep_attention=keep_attention
        )
        responses, start = [], 0
        for work in works:
            mine = results[start : start + len(work.sentences)]
            start += len(work.sentences)
            translations = [
                sentence_result(self.translator, text, nbest, work.attention, work.gates, work.gate_units)
                for text, nbest in zip(work.sentences, mine)
            ]
            responses.append({"translations": translations, "options": asdict(search)})
        return responses


def _given(value: Any, default: Any) -> Any:
    return default if value is None else value
