"""Translation: the `Translator` API and the `lstm-mt translate` command.

`Translator.from_checkpoint(path)` rebuilds the model and the SentencePiece tokenizer
from a checkpoint. `translate` / `translate_nbest` encode the sentences, truncate any
longer than ``max_input_tokens`` subwords (with a warning naming the line), search in
batches of similar length (longest first, at most ``max_tokens`` source tokens times
beam size each), detokenize, and return the results in input order. Empty or
whitespace-only sentences translate to "" without touching the model.

The command (Hydra; options in `TranslateConfig`, defaults in configs/translate.yaml):

    lstm-mt translate checkpoint=model.pt input=news.de output=news.en beam_size=5

reads a file or stdin and writes exactly one line per input line (``nbest`` > 1: that
many ``index ||| translation ||| score`` lines per input) to stdout or, atomically, to a
file; progress and speed go to stderr, so stdout carries only translations. From stdin to
stdout it streams (``stream``, default: whenever input and output are stdin and stdout): the
lines of each read are translated and written, flushed, before the next read, so an
interactive user or a program writing one line at a time gets each answer at once, while a
file piped in is still translated in large batches.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig
from tqdm import tqdm

from lstm_mt.checkpoint import load_checkpoint
from lstm_mt.configuring import typed_config
from lstm_mt.data import InferenceBatchSampler, collate_source
from lstm_mt.data.textio import decode_lines, read_bytes
from lstm_mt.ensemble import Ensemble
from lstm_mt.errors import LstmMtError
from lstm_mt.files import check_output_dir, check_output_file
from lstm_mt.files import write_output as write_file_output
from lstm_mt.hydra_app import report_warnings_on_stderr, run_hydra
from lstm_mt.model import ModelConfig, Seq2Seq, build_model
from lstm_mt.precision import check_inference_precision, for_inference, inference_autocast
from lstm_mt.ranges import bounded
from lstm_mt.runtime import check_device
from lstm_mt.search import Hypothesis, SearchConfig, Translation, search
from lstm_mt.tokenizer import Tokenizer

__all__ = [
    "DecodingOptions",
    "TranslateConfig",
    "checkpoint_paths",
    "Translation",
    "Translator",
    "format_translations",
    "main",
    "read_input",
    "run_translate",
    "write_output",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_INPUT_TOKENS = 250
DEFAULT_MAX_TOKENS = 3000


class Translator:
    """A model and its tokenizer, ready to translate lists of sentences on one device."""

    def __init__(
        self,
        model: Seq2Seq | Ensemble,
        tokenizer: Tokenizer,
        device: str | torch.device = "cpu",
        max_input_tokens: int = DEFAULT_MAX_INPUT_TOKENS,
        precision: str = "fp32",
    ) -> None:
        if max_input_tokens < 1:
            raise LstmMtError(f"max_input_tokens={max_input_tokens}: must be at least 1")
        self.device = check_device(device)
        check_inference_precision(precision, self.device)
        self.precision = precision
        self.model = for_inference(model.to(self.device).eval(), precision)
        self.tokenizer = tokenizer
        self.max_input_tokens = max_input_tokens

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike | Sequence[str | os.PathLike],
        device: str | torch.device = "cpu",
        max_input_tokens: int = DEFAULT_MAX_INPUT_TOKENS,
        precision: str = "fp32",
    ) -> Translator:
        """The translator saved in checkpoint ``path`` (model config, weights and tokenizer); for a
        list of checkpoints, their `Ensemble` (one direction and vocabulary, else `LstmMtError`)."""
        paths = [path] if isinstance(path, str | os.PathLike) else list(path)
        return cls.from_payloads([(load_checkpoint(p), str(p)) for p in paths], device, max_input_tokens, precision)

    @classmethod
    def from_payload(
        cls,
        payload: dict[str, Any],
        origin: str,
        device: str | torch.device = "cpu",
        max_input_tokens: int = DEFAULT_MAX_INPUT_TOKENS,
        precision: str = "fp32",
    ) -> Translator:
        """Like `from_checkpoint`, from a checkpoint already loaded with `load_checkpoint` (``origin``: its path)."""
        return cls.from_payloads([(payload, origin)], device, max_input_tokens, precision)

    @classmethod
    def from_payloads(
        cls,
        loaded: Sequence[tuple[dict[str, Any], str]],
        device: str | torch.device = "cpu",
        max_input_tokens: int = DEFAULT_MAX_INPUT_TOKENS,
        precision: str = "fp32",
    ) -> Translator:
        """One model, or the `Ensemble` of several, from loaded checkpoints ``(payload, path)``."""
        if not loaded:
            raise LstmMtError("checkpoint: no checkpoint given")
        models, tokenizers = zip(*(_model_and_tokenizer(payload, origin) for payload, origin in loaded))
        first_payload, first = loaded[0]
        for (payload, origin), tokenizer in zip(loaded[1:], tokenizers[1:]):
            if _direction(payload) != _direction(first_payload):
                raise LstmMtError(
                    f"{origin} translates {'->'.join(_direction(payload))} but {first} translates "
                    f"{'->'.join(_direction(first_payload))}: an ensemble needs one direction"
                )
            if tokenizer.to_bytes_dict() != tokenizers[0].to_bytes_dict():
                raise LstmMtError(f"{origin}: its vocabulary differs from {first}'s: an ensemble needs the same one")
        model = models[0] if len(models) == 1 else Ensemble(models)
        return cls(model, tokenizers[0], device, max_input_tokens, precision)

    def single_model(self) -> Seq2Seq:
        """The model, for what needs one (gate recording); `LstmMtError` for an ensemble."""
        if isinstance(self.model, Ensemble):
            raise LstmMtError(f"this needs one checkpoint, not an ensemble of {len(self.model.models)}")
        return self.model

    def translate(
        self,
        sentences: Sequence[str],
        cfg: SearchConfig | None = None,
        *,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        progress: bool = False,
        source: str = "input",
        **search_options: Any,
    ) -> list[str]:
        """The best translation of each sentence, in input order.

        ``cfg`` (default `SearchConfig()`) with any of its fields replaced by ``search_options``,
        e.g. ``translate(sentences, beam_size=1)`` for greedy search.
        """
        cfg = dataclasses.replace(cfg or SearchConfig(), **search_options)
        results = self.translate_nbest(sentences, cfg, max_tokens=max_tokens, progress=progress, source=source)
        return [nbest[0].text for nbest in results]

    def translate_nbest(
        self,
        sentences: Sequence[str],
        cfg: SearchConfig | None = None,
        *,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        progress: bool = False,
        source: str = "input",
        keep_attention: bool = False,
        first_line: int = 1,
    ) -> list[list[Translation]]:
        """``cfg.nbest`` translations of each sentence, best first, in input order.

        ``max_tokens`` bounds a batch's source tokens times beam_size (the rows
        decoded together); ``progress`` shows a bar on stderr; ``source`` names the
        input in warnings (``<source>:<line>: ...``, lines counted from ``first_line``);
        ``keep_attention`` keeps each translation's attention weights (memory grows with the input).
        """
        cfg = cfg or SearchConfig()
        cfg.check()
        source_ids = self.encode(sentences, source, first_line)
        results = [[Translation("", 0.0, [], [])] * cfg.nbest for _ in sentences]  # blank lines too: n lines each
        todo = {i: ids for i, ids in enumerate(source_ids) if ids is not None}
        order = list(todo)
        # Each sentence decodes beam_size rows, so the budget is divided among them.
        sampler = InferenceBatchSampler([len(ids) for ids in todo.values()], max(1, max_tokens // cfg.beam_size))
        with tqdm(total=len(todo), disable=not progress, unit="sent", file=sys.stderr, desc="translate") as bar:
            for positions in sampler:
                indices = [order[p] for p in positions]
                batch = collate_source([todo[i] for i in indices], indices).to(self.device)
                with inference_autocast(self.precision, self.device):
                    found = search(self.model, batch.src, batch.src_lengths, cfg)
                for index, nbest in zip(indices, found):
                    results[index] = [self._translation(h, todo[index], cfg.alpha, keep_attention) for h in nbest]
                bar.update(len(indices))
        return results

    def encode(self, sentences: Sequence[str], source: str = "input", first_line: int = 1) -> list[list[int] | None]:
        """Source ids of each sentence, cut to ``max_input_tokens``; None for an empty or blank one."""
        if isinstance(sentences, str):
            raise TypeError("translate takes a list of sentences, not one string")
        blank = [not sentence.strip() for sentence in sentences]
        encoded = iter(self.tokenizer.encode_src([s for s, b in zip(sentences, blank) if not b]))
        source_ids: list[list[int] | None] = []
        for line, is_blank in enumerate(blank, start=first_line):
            ids = None if is_blank else next(encoded)
            if ids is not None and len(ids) > self.max_input_tokens:
                log.warning(
                    "%s:%d: %d subword tokens, translating only the first %d (max_input_tokens)",
                    source,
                    line,
                    len(ids),
                    self.max_input_tokens,
                )
                ids = ids[: self.max_input_tokens]
            source_ids.append(ids)
        return source_ids

    def _translation(
        self, hypothesis: Hypothesis, source_ids: list[int], alpha: float, keep_attention: bool
    ) -> Translation:
        text = self.tokenizer.decode_tgt(hypothesis.tokens)
        attention = hypothesis.attention if keep_attention else None
        if attention is not None and attention.dtype in (torch.bfloat16, torch.float16):
            attention = attention.float()
        return Translation(text, hypothesis.normalized_score(alpha), hypothesis.tokens, source_ids, attention)


def _model_and_tokenizer(payload: dict[str, Any], origin: str) -> tuple[Seq2Seq, Tokenizer]:
    """The model and tokenizer a loaded checkpoint holds; errors name ``origin``."""
    model_cfg = typed_config(
        ModelConfig, payload["config"].get("model"), f"{origin}: config.model", f"{origin}: config.model."
    )
    sizes = payload["vocab_sizes"]
    try:
        tokenizer = Tokenizer.from_bytes_dict(payload["tokenizer"])
    except LstmMtError as error:
        raise LstmMtError(f"{origin}: {error}") from None
    if (tokenizer.src_vocab_size, tokenizer.tgt_vocab_size) != (sizes["src"], sizes["tgt"]):
        raise LstmMtError(
            f"{origin}: vocab_sizes {sizes} do not match its tokenizer "
            f"(src {tokenizer.src_vocab_size}, tgt {tokenizer.tgt_vocab_size})"
        )
    model = build_model(model_cfg, sizes["src"], sizes["tgt"])
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[0]
        raise LstmMtError(f"{origin}: weights do not fit config.model: {reason}") from None
    return model, tokenizer


def _direction(payload: dict[str, Any]) -> tuple[str, str]:
    """The checkpoint's ``(data.src, data.tgt)``, "?" where its config does not say."""
    data = payload["config"].get("data") or {}
    return str(data.get("src", "?")), str(data.get("tgt", "?"))


# --- configuration shared by the translate and evaluate commands --------------------------


@dataclass
class DecodingOptions(SearchConfig):
    """How `lstm-mt translate` and `lstm-mt evaluate` search and batch: a `SearchConfig`
    (its fields and defaults) plus where and in what batches.

    ``max_tokens`` bounds a batch's source tokens times beam_size; inputs longer than
    ``max_input_tokens`` subwords are truncated (with a warning); ``device``: cpu, cuda, cuda:1, ...;
    ``precision``: fp32, bf16 or int8 (`lstm_mt.precision`).
    """

    device: str = "cpu"
    precision: str = "fp32"
    max_tokens: int = bounded(DEFAULT_MAX_TOKENS, ge=1)
    max_input_tokens: int = bounded(DEFAULT_MAX_INPUT_TOKENS, ge=1)
    progress: bool = True

    def search_config(self) -> SearchConfig:
        """The search part of these options, as a plain `SearchConfig`."""
        return SearchConfig(**{field.name: getattr(self, field.name) for field in dataclasses.fields(SearchConfig)})


@dataclass
class TranslateConfig(DecodingOptions):
    """`lstm-mt translate`: ``checkpoint`` is a path or a list of paths (an ensemble); ``input`` /
    ``output`` null (or "-") mean stdin / stdout.

    ``attention_plots``: a folder for one attention heatmap PNG per input line, for the
    first ``attention_plots_max`` lines (needs matplotlib). ``stream``: answer stdin's lines as
    they arrive (null: when input and output are stdin and stdout and there are no plots).
    """

    checkpoint: Any = MISSING  # a path, or a list of paths: their ensemble
    input: str | None = None
    output: str | None = None
    attention_plots: str | None = None
    attention_plots_max: int = bounded(10, ge=0)
    stream: bool | None = None


ConfigStore.instance().store(name="translate_schema", node=TranslateConfig)


def main(argv: list[str] | None = None) -> int | None:
    """`lstm-mt translate checkpoint=PATH [input=FILE] [output=FILE] [key=value ...]`."""
    return run_hydra(run_translate, "translate", sys.argv[1:] if argv is None else argv, "lstm-mt translate")


def run_translate(cfg: DictConfig) -> None:
    """Translate ``cfg.input`` into ``cfg.output`` line by line (see the module docstring)."""
    options = typed_config(TranslateConfig, cfg, "translate config")
    report_warnings_on_stderr()
    if options.output not in (None, "-"):
        check_output_file(options.output, "output", inputs=(options.input, *checkpoint_paths(options.checkpoint)))
    if options.attention_plots:
        check_output_dir(options.attention_plots, "attention_plots")
    translator = Translator.from_checkpoint(
        checkpoint_paths(options.checkpoint), options.device, options.max_input_tokens, options.precision
    )
    if streams(options):
        stream_translate(translator, options)
        return
    sentences, source = read_input(options.input)
    start = time.perf_counter()
    results = translator.translate_nbest(
        sentences,
        options.search_config(),
        max_tokens=options.max_tokens,
        progress=options.progress,
        source=source,
        keep_attention=options.attention_plots is not None,
    )
    seconds = time.perf_counter() - start
    write_output(format_translations(results, options.nbest), options.output)
    if options.attention_plots:
        from lstm_mt.plotting import save_attention_plots

        save_attention_plots(
            Path(options.attention_plots),
            sentences,
            [r[0] for r in results],
            translator.tokenizer,
            options.attention_plots_max,
        )
    print(
        f"translated {len(sentences)} lines in {seconds:.1f} s: {len(sentences) / max(seconds, 1e-9):.1f} sentences/s",
        file=sys.stderr,
    )


def checkpoint_paths(value: Any, key: str = "checkpoint") -> list[str]:
    """The ``checkpoint`` option as a list of paths: one path, or a list of them (an ensemble)."""
    paths = [value] if isinstance(value, str) else value
    if not isinstance(paths, Sequence) or not paths or not all(isinstance(path, str) and path for path in paths):
        raise LstmMtError(f"{key}={value}: give a checkpoint path or a list of them, e.g. {key}=[a.pt,b.pt]")
    return list(paths)


def streams(options: TranslateConfig) -> bool:
    """Whether to answer stdin line by line as it arrives: ``stream``, or by default for stdin to stdout."""
    on_std_streams = options.input in (None, "-") and options.output in (None, "-")
    if options.stream and not (on_std_streams and options.attention_plots is None):
        raise LstmMtError("stream=true answers stdin on stdout: drop input=, output= and attention_plots= (or stream)")
    return on_std_streams and options.attention_plots is None if options.stream is None else options.stream


STREAM_READ = 1 << 16  # bytes per read: one interactive line, or about a thousand lines of a piped file


def stream_translate(translator: Translator, options: TranslateConfig) -> None:
    """Translate stdin to stdout read by read: each read's complete lines are one call of the translator.

    A read returns what has arrived (blocking only while nothing has), so each line typed or
    written by another program is answered before the next is awaited.
    """
    reader = cast(io.BufferedReader, sys.stdin.buffer)  # read1: what has arrived, at most one system call
    start, done, pending = time.perf_counter(), 0, b""
    while chunk := reader.read1(STREAM_READ):
        complete, newline, pending = (pending + chunk).rpartition(b"\n")
        if newline:
            done += _translate_lines(translator, options, complete + newline, done)
    if pending:
        done += _translate_lines(translator, options, pending, done)
    seconds = time.perf_counter() - start
    print(f"translated {done} lines in {seconds:.1f} s (streaming)", file=sys.stderr)


def _translate_lines(translator: Translator, options: TranslateConfig, data: bytes, done: int) -> int:
    """Translate the lines of ``data`` (lines ``done`` + 1, ... of stdin), write them, flush; their count."""
    sentences = decode_lines(data, "<stdin>", first_line=done + 1)
    results = translator.translate_nbest(
        sentences, options.search_config(), max_tokens=options.max_tokens, source="<stdin>", first_line=done + 1
    )
    write_output(format_translations(results, options.nbest, first_index=done), None)
    return len(sentences)


def format_translations(results: Sequence[Sequence[Translation]], nbest: int, first_index: int = 0) -> list[str]:
    """Output lines: the best text per input, or ``index ||| text ||| score`` for each of the n best
    (indices counted from ``first_index``)."""
    if nbest == 1:
        return [_one_line(translations[0].text) for translations in results]
    return [
        f"{index} ||| {_one_line(t.text)} ||| {t.score:.4f}"
        for index, translations in enumerate(results, start=first_index)
        for t in translations
    ]


def read_input(path: str | None) -> tuple[list[str], str]:
    """Lines of a UTF-8 file (plain or .gz) or of stdin (path None or "-"), and the name to report them by."""
    if path in (None, "-"):
        return decode_lines(sys.stdin.buffer.read(), "<stdin>"), "<stdin>"
    return decode_lines(read_bytes(path), path), path


def write_output(lines: Sequence[str], path: str | None) -> None:
    """Write ``lines`` to stdout (path None or "-") or to ``path`` (`lstm_mt.files.write_output`:
    atomically for a regular file, in place for a FIFO, device or symlink)."""
    text = "".join(line + "\n" for line in lines)
    if path in (None, "-"):
        sys.stdout.buffer.write(text.encode("utf-8"))
        sys.stdout.buffer.flush()
    else:
        write_file_output(path, text.encode("utf-8"))


def _one_line(text: str) -> str:
    # The one-line-per-input contract must hold whatever the detokenizer returns.
    return text.replace("\r", " ").replace("\n", " ")
