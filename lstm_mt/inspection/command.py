"""`lstm-mt inspect`: translate sentences greedily and write, per sentence, figures of the
attention and of every LSTM layer's gates, summary statistics, an HTML page and the raw arrays.

    lstm-mt inspect checkpoint=runs/train/best.pt text="Ein Mann fährt Fahrrad."
    lstm-mt inspect checkpoint=best.pt input=sentences.de output_dir=inspect top_k=24

`InspectConfig` is the typed schema (registered in Hydra's ConfigStore as ``inspect_schema``,
the first entry of ``configs/inspect.yaml``), so unknown keys and wrong types fail early.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from lstm_mt.configuring import typed_config
from lstm_mt.data.textio import read_lines
from lstm_mt.errors import LstmMtError
from lstm_mt.files import check_output_dir
from lstm_mt.hydra_app import report_warnings_on_stderr, run_hydra
from lstm_mt.inspection.figures import require_matplotlib
from lstm_mt.inspection.report import write_index, write_sentence_report
from lstm_mt.inspection.tracing import trace_sentence
from lstm_mt.ranges import bounded
from lstm_mt.translate import Translator

SCHEMA_NAME = "inspect_schema"  # the first entry of configs/inspect.yaml's defaults list
FREE_TEXT_KEYS = ("text",)  # overrides whose value is a sentence, never Hydra syntax


@dataclass
class InspectConfig:
    """What `lstm-mt inspect` reads (``configs/inspect.yaml`` holds the defaults).

    ``checkpoint``: the model. The sentences: ``text`` (one) or ``input`` (a UTF-8 file, one
    sentence per line, blank lines skipped), the first ``max_sentences`` of them.
    ``output_dir``: where ``index.html`` and one folder per sentence go. ``top_k``: units
    shown per gate heatmap (those that vary most). ``device``: cpu, cuda, cuda:1, ...
    """

    checkpoint: str | None = None
    text: str | None = None
    input: str | None = None
    output_dir: str = "inspect"
    top_k: int = bounded(16, ge=1)
    max_sentences: int = bounded(10, ge=1)
    device: str = "cpu"


def register_configs() -> None:
    """Put `InspectConfig` into Hydra's ConfigStore (idempotent); call before composing ``inspect``."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=InspectConfig)


def main(argv: list[str] | None = None) -> int | None:
    """`lstm-mt inspect`: Hydra overrides in ``argv`` (default: the process arguments)."""
    register_configs()
    argv = sys.argv[1:] if argv is None else argv
    return run_hydra(_inspect_in_hydra_run, "inspect", quote_free_text(argv), prog="lstm-mt inspect")


def _inspect_in_hydra_run(cfg: DictConfig) -> None:
    run_inspection(cfg)


def run_inspection(options: InspectConfig | DictConfig) -> Path:
    """Inspect the sentences the options name; returns the index page."""
    cfg = typed_config(InspectConfig, options, "inspect config")
    if cfg.checkpoint is None:
        raise LstmMtError("checkpoint=PATH is required")
    check_output_dir(cfg.output_dir, "output_dir")
    sentences = read_sentences(cfg)
    require_matplotlib()
    report_warnings_on_stderr()
    translator = Translator.from_checkpoint(cfg.checkpoint, cfg.device)
    output = Path(cfg.output_dir)
    pages = []
    for number, sentence in enumerate(sentences, start=1):
        trace = trace_sentence(translator, sentence)
        page = write_sentence_report(trace, output / f"sentence_{number:03d}", f"Sentence {number}", cfg.top_k)
        pages.append((trace, page))
        print(f"{page}\t{trace.translation}")
    index = write_index(pages, output)
    print(index)
    return index


def read_sentences(cfg: InspectConfig) -> list[str]:
    """The sentences to inspect: ``text`` or the non-blank lines of ``input``, at most ``max_sentences``."""
    if (cfg.text is None) == (cfg.input is None):
        raise LstmMtError('give either text="..." or input=FILE (one sentence per line), not both or neither')
    lines = [cfg.text] if cfg.text is not None else read_lines(str(cfg.input))
    sentences = [line for line in lines if line.strip()][: cfg.max_sentences]
    if not sentences:
        raise LstmMtError(f"{cfg.input or 'text'}: no sentence to inspect (empty)")
    return sentences


def quote_free_text(argv: list[str]) -> list[str]:
    """Quote the value of ``text=...`` for Hydra, so any sentence passes as it is.

    Hydra reads unquoted values as its own syntax, where commas make lists and letters
    beyond ASCII are not allowed; inside quotes, only quotes, interpolations and the
    backslashes before them need escaping. A value the user already quoted is kept.
    """
    quoted = []
    for argument in argv:
        key, equals, value = argument.partition("=")
        if equals and key in FREE_TEXT_KEYS and not _is_quoted(value):
            argument = f"{key}='{_escape_for_hydra(value)}'"
        quoted.append(argument)
    return quoted


def _is_quoted(value: str) -> bool:
    return len(value) >= 2 and value[0] == value[-1] and value[0] in "'\""


def _escape_for_hydra(value: str) -> str:
    """``value`` for inside Hydra's single quotes: backslashes before a quote, a ``${`` or the
    end doubled (else Hydra reads them as escapes), then quotes and ``${`` escaped."""
    value = re.sub(r"(\\+)(?='|\$\{|$)", lambda match: match.group(1) * 2, value)
    return value.replace("'", "\\'").replace("${", "\\${")
