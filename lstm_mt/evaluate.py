"""Evaluation: translate test sets with a checkpoint and score them with sacreBLEU (BLEU, chrF).

    lstm-mt evaluate checkpoint=model.pt                                   # its dataset's test splits
    lstm-mt evaluate checkpoint=model.pt src=[a.de,b.de] ref=[a.en,b.en]   # any line-parallel files
    lstm-mt evaluate hyp=[a.hyp] ref=[a.en]                                # score given translations
    lstm-mt evaluate checkpoint=[a.pt,b.pt]                                # an ensemble of checkpoints

Test splits are those of the checkpoint's data config (``data.test_splits``, empty: every
one there is), read from ``mirror=`` or the checkpoint's ``data.mirror`` or
$LSTM_MT_DATA_MIRROR; ``splits=[...]`` picks any of the dataset's splits (``splits=[val]``
to tune on the valid split). Multi30k splits are also scored with the papers' BLEU
(`lstm_mt.metrics.paper_bleu`) against the official tokenized references: ``paper_bleu``
null does so where those references and sacremoses are there, true insists, false skips.
File test sets are named after the source file (``a.de`` -> ``a``). Each set's
translations go to ``<output_dir>/<name>.hyp`` and every score, with its signature, to
``<output_dir>/report.json``; ``output_dir`` defaults to the folder ``<checkpoint
name>.eval`` beside the checkpoint. Translating is `Translator`'s job, with the same
search options as `lstm-mt translate`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from lstm_mt.checkpoint import load_checkpoint
from lstm_mt.configuring import typed_config
from lstm_mt.data import DataConfig, load_split, load_tokenized_reference, resolve_test_splits
from lstm_mt.data.textio import read_lines
from lstm_mt.errors import LstmMtError
from lstm_mt.files import check_output_dir, write_text_atomic
from lstm_mt.hydra_app import report_warnings_on_stderr, run_hydra
from lstm_mt.metrics import Score, corpus_scores, paper_bleu, require_paper_bleu
from lstm_mt.search import SearchConfig
from lstm_mt.translate import DecodingOptions, Translator, checkpoint_paths

__all__ = ["EvaluateConfig", "SetResult", "TestSet", "dataset_test_sets", "evaluate", "file_test_sets", "main"]

log = logging.getLogger(__name__)

REPORT_NAME = "report.json"


@dataclass
class TestSet:
    """Line-parallel references and either the sources to translate or given ``hypotheses``.

    ``tokenized_references`` (official lowercased Moses-tokenized lines, in language ``lang``)
    add the papers' BLEU to the scores.
    """

    name: str
    references: list[str]
    sources: list[str] | None = None
    hypotheses: list[str] | None = None
    files: dict[str, str] = field(default_factory=dict)  # "source", "reference", "hypotheses": where from
    tokenized_references: list[str] | None = None
    lang: str | None = None


@dataclass
class SetResult:
    """A test set's scores and translations; ``seconds`` spent translating (0 for given ones)."""

    name: str
    hypotheses: list[str]
    scores: list[Score]
    seconds: float
    files: dict[str, str]


@dataclass
class EvaluateConfig(DecodingOptions):
    """`lstm-mt evaluate`: see the module docstring; ``src``/``ref``/``hyp`` are lists of files.

    ``paper_bleu``: None (where possible) | True | False, for dataset splits only.
    """

    checkpoint: Any = None  # a path, or a list of paths: their ensemble
    src: list[str] = field(default_factory=list)
    ref: list[str] = field(default_factory=list)
    hyp: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    mirror: str | None = None
    output_dir: str | None = None
    paper_bleu: bool | None = None


ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)


def main(argv: list[str] | None = None) -> int | None:
    """`lstm-mt evaluate checkpoint=PATH [src=[...] ref=[...]] [key=value ...]`."""
    return run_hydra(run_evaluate, "evaluate", sys.argv[1:] if argv is None else argv, "lstm-mt evaluate")


def run_evaluate(cfg: DictConfig) -> list[SetResult]:
    """Score every test set the options name, print the scores and write hypotheses and report."""
    options = typed_config(EvaluateConfig, cfg, "evaluate config")
    report_warnings_on_stderr()
    output_dir = _output_dir(options)
    if output_dir is not None:
        check_output_dir(output_dir, "output_dir")
    checkpoint, results = _evaluate_what_options_name(options)
    for result in results:
        if output_dir is not None and "hypotheses" not in result.files:
            result.files["hypotheses"] = str(
                write_text_atomic(output_dir / f"{result.name}.hyp", "".join(line + "\n" for line in result.hypotheses))
            )
        print(_describe(result))
    if output_dir is not None:
        report = json.dumps(_report(results, options, checkpoint), indent=2)
        print(f"report: {write_text_atomic(output_dir / REPORT_NAME, report)}")
    return results


def evaluate(translator: Translator | None, test_sets: list[TestSet], options: DecodingOptions) -> list[SetResult]:
    """Translate (unless given) and score each test set."""
    results = []
    for test_set in test_sets:
        if not test_set.references:
            raise LstmMtError(f"{test_set.files.get('reference', test_set.name)}: no lines to score (empty test set)")
        seconds = 0.0
        hypotheses = test_set.hypotheses
        if hypotheses is None:
            assert translator is not None and test_set.sources is not None
            start = time.perf_counter()
            translations = translator.translate_nbest(
                test_set.sources,
                options.search_config(),
                max_tokens=options.max_tokens,
                progress=options.progress,
                source=test_set.files.get("source", test_set.name),
            )
            hypotheses = [nbest[0].text for nbest in translations]
            seconds = time.perf_counter() - start
        scores = corpus_scores(hypotheses, test_set.references)
        if test_set.tokenized_references is not None and test_set.lang is not None:
            scores.append(paper_bleu(hypotheses, test_set.tokenized_references, test_set.lang))
        results.append(SetResult(test_set.name, hypotheses, scores, seconds, dict(test_set.files)))
    return results


def dataset_test_sets(cfg: DataConfig, paper: bool | None = None) -> list[TestSet]:
    """The test splits of a dataset config (``cfg.test_splits``, or all it has).

    ``paper``: whether to load the official tokenized references for paper BLEU (see the
    module docstring; None: where they exist).
    """
    test_sets = []
    paper = _paper_bleu_setting(cfg, paper)
    for split in resolve_test_splits(cfg):
        corpus = load_split(cfg, split)
        files = {"source": corpus.src_path, "reference": corpus.tgt_path}
        test_sets.append(
            TestSet(
                split,
                corpus.tgt_lines,
                sources=corpus.src_lines,
                files=files,
                tokenized_references=_tokenized_references(cfg, split, paper),
                lang=cfg.tgt,
            )
        )
    if not test_sets:
        raise LstmMtError(f"data: {cfg.name} {cfg.src}-{cfg.tgt} has no test split here; give src=[...] ref=[...]")
    return test_sets


def _paper_bleu_setting(cfg: DataConfig, wanted: bool | None) -> bool | None:
    """``wanted``, or False where paper BLEU cannot be had and was not insisted on (then an error)."""
    if wanted is False:
        return False
    if cfg.name != "multi30k":
        if wanted:
            raise LstmMtError(f"paper_bleu=true: {cfg.name} has no official tokenized references (multi30k has)")
        return False
    try:
        require_paper_bleu()
    except LstmMtError as error:
        if wanted:
            raise
        log.warning("paper BLEU skipped: %s", error)
        return False
    return wanted


def _tokenized_references(cfg: DataConfig, split: str, wanted: bool | None) -> list[str] | None:
    """The official tokenized target lines of ``split`` for paper BLEU, or None when not wanted
    (or, ``wanted`` being None, when the files are missing)."""
    if wanted is False:
        return None
    try:
        return load_tokenized_reference(cfg, split)
    except LstmMtError as error:
        if wanted:
            raise
        log.warning("paper BLEU skipped for %s: %s", split, error)
        return None


def file_test_sets(inputs: list[str], references: list[str], kind: str) -> list[TestSet]:
    """Test sets from line-parallel files: ``kind`` "src" (to translate) or "hyp" (given translations)."""
    if len(inputs) != len(references):
        raise LstmMtError(f"{kind}= has {len(inputs)} files but ref= has {len(references)}: give one ref per {kind}")
    test_sets: list[TestSet] = []
    names: set[str] = set()
    for input_path, reference_path in zip(inputs, references):
        lines, reference = read_lines(input_path), read_lines(reference_path)
        if len(lines) != len(reference):
            raise LstmMtError(
                f"{input_path} has {len(lines)} lines but {reference_path} has {len(reference)}: "
                "they must be line-parallel"
            )
        name = _unique(_set_name(input_path), names)
        if kind == "src":
            test_sets.append(
                TestSet(name, reference, sources=lines, files={"source": input_path, "reference": reference_path})
            )
        else:
            test_sets.append(
                TestSet(
                    name, reference, hypotheses=lines, files={"hypotheses": input_path, "reference": reference_path}
                )
            )
    return test_sets


def _evaluate_what_options_name(options: EvaluateConfig) -> tuple[dict[str, Any] | None, list[SetResult]]:
    """The checkpoint (None when scoring given hypotheses) and the results of every test set."""
    if options.nbest != 1:
        raise LstmMtError(
            f"nbest={options.nbest}: evaluate scores the best translation; lstm-mt translate writes n-best"
        )
    if options.paper_bleu and (options.hyp or options.src):
        raise LstmMtError("paper_bleu=true needs dataset splits (their official tokenized references), not files")
    if options.hyp:
        if options.checkpoint or options.src:
            raise LstmMtError("hyp= scores given translations: leave out checkpoint= and src=")
        return None, evaluate(None, file_test_sets(options.hyp, options.ref, "hyp"), options)
    if not options.checkpoint:
        raise LstmMtError("checkpoint is not set: lstm-mt evaluate checkpoint=PATH (or hyp=[...] ref=[...])")
    paths = checkpoint_paths(options.checkpoint)
    loaded = [(load_checkpoint(path), path) for path in paths]
    translator = Translator.from_payloads(loaded, options.device, options.max_input_tokens, options.precision)
    checkpoint = loaded[0][0]  # an ensemble's members share direction and data: the first one speaks for all
    if options.src:
        test_sets = file_test_sets(options.src, options.ref, "src")
    else:
        test_sets = dataset_test_sets(_data_config(checkpoint, options), options.paper_bleu)
    return checkpoint, evaluate(translator, test_sets, options)


def _data_config(checkpoint: dict[str, Any], options: EvaluateConfig) -> DataConfig:
    origin = f"{checkpoint_paths(options.checkpoint)[0]}: config.data"
    cfg = typed_config(DataConfig, checkpoint["config"].get("data"), origin, f"{origin}.")
    if options.mirror:
        cfg.mirror = options.mirror
    if options.splits:
        cfg.test_splits = list(options.splits)
    return cfg


def _output_dir(options: EvaluateConfig) -> Path | None:
    if options.output_dir:
        return Path(options.output_dir)
    if options.checkpoint:
        paths = [Path(path) for path in checkpoint_paths(options.checkpoint)]
        return paths[0].parent / f"{'+'.join(path.stem for path in paths)}.eval"
    return None  # scoring given files: print only, unless output_dir is set


def _set_name(path: str) -> str:
    name = Path(path).name.removesuffix(".gz")
    return Path(name).stem or name


def _unique(name: str, taken: set[str]) -> str:
    candidate, number = name, 1
    while candidate in taken:
        number += 1
        candidate = f"{name}-{number}"
    taken.add(candidate)
    return candidate


def _describe(result: SetResult) -> str:
    """The lines printed for one test set: what was scored, then each score with its signature."""
    count = len(result.hypotheses)
    speed = f", {count / result.seconds:.1f} sentences/s" if result.seconds > 0 else ""
    lines = [f"{result.name}: {count} sentences{speed}, hypotheses {result.files.get('hypotheses', '(not written)')}"]
    lines += [f"  {score.text}\n    {score.signature}" for score in result.scores]
    return "\n".join(lines)


def _report(results: list[SetResult], options: EvaluateConfig, checkpoint: dict[str, Any] | None) -> dict[str, Any]:
    search: SearchConfig | None = None if options.hyp else options.search_config()
    return {
        "checkpoint": options.checkpoint,
        "step": checkpoint.get("step") if checkpoint else None,
        "search": asdict(search) if search else None,
        "precision": None if options.hyp else options.precision,
        "test_sets": [
            {
                "name": result.name,
                "sentences": len(result.hypotheses),
                "seconds": round(result.seconds, 3),
                "files": result.files,
                "scores": {
                    score.name: {"score": score.score, "signature": score.signature, "text": score.text}
                    for score in result.scores
                },
            }
            for result in results
        ],
    }
