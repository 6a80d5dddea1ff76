"""Result recipes: pick checkpoint and decoding on the valid split, then score the test splits.

`scripts/recipe.sh RECIPE` trains ``+experiment=RECIPE`` into ``runs/RECIPE``, averages the
last 5 step checkpoints into ``<run>/average.pt`` (`lstm-mt average`) and runs the two steps here:

    lstm-mt recipe tune runs/multi30k_en_de [--device cuda]
    lstm-mt recipe test runs/multi30k_en_de [--device cuda]

(``python -m lstm_mt.recipe ...`` is the same command.)

``tune`` translates the valid split only. It scores best.pt and average.pt at the run's
``decoding.beam_size``/``alpha``, then every ``decoding.beam_sizes`` x ``decoding.alphas`` pair
with the better checkpoint, by sacreBLEU BLEU, and writes the choice and every trial to
``<run>/decoding.json``; with ``decoding.ensemble=true`` the ensemble of the two
(``best+average``, `lstm_mt.ensemble`) competes as a third checkpoint. ``--precision``
(fp32, bf16, int8) sets how both steps decode; ``test`` defaults to the one ``tune`` used. ``test`` translates the run's test splits (``data.test_splits``) with
that choice through `lstm_mt.evaluate` (BLEU and chrF with signatures, and the papers' BLEU on
Multi30k; hypotheses and report.json in ``<run>/test/``) and writes ``<run>/results.json``:
direction, parameters, training steps and time, hardware, the decoding choice, every test
score, and the command line, with one Markdown row per test set for the README's table.
The run's config is the one the latest `lstm-mt train` wrote to ``<run>/.hydra/config.yaml``.

``lstm-mt recipe ensemble OUT_DIR RUN_DIR RUN_DIR ...`` puts the tuned runs of one recipe (seeds,
say) together: each run's chosen checkpoint(s) in one `lstm_mt.ensemble.Ensemble`, its search
tuned on val over the first run's grid, then the test splits, with ``decoding.json``, ``test/``
and ``results.json`` (rows named by the command) in ``OUT_DIR``.

A further step checks reproducibility: ``lstm-mt recipe compare RUN RERUN`` prints the
val BLEU of both runs at each validation (and of their tuned decoding) and exits 1 when any
pair differs by more than 0.5 BLEU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from lstm_mt.config import DecodingGrid, TrainJobConfig
from lstm_mt.configuring import typed_config
from lstm_mt.data import DataConfig
from lstm_mt.errors import LstmMtError
from lstm_mt.evaluate import EvaluateConfig, SetResult, TestSet, dataset_test_sets, evaluate, run_evaluate
from lstm_mt.files import write_text_atomic
from lstm_mt.metrics import PAPER_BLEU
from lstm_mt.runlog import METRICS_FILE, read_records
from lstm_mt.runtime import select_device
from lstm_mt.translate import DecodingOptions, Translator

__all__ = [
    "Trial",
    "compare_runs",
    "decoding_grid",
    "ensemble_runs",
    "evaluate_run",
    "main",
    "tune",
    "tune_run",
    "valid_set",
]

log = logging.getLogger(__name__)

CANDIDATES = {"best": "checkpoints/best.pt", "average": "average.pt"}  # written by train and recipe.sh
ENSEMBLE = "best+average"  # the candidates' ensemble, tried with decoding.ensemble=true
DECODING_FILE = "decoding.json"
RESULTS_FILE = "results.json"
TRAIN_TIMES_FILE = "train_times.jsonl"  # {"seconds": N, "status": S} per `lstm-mt train` of recipe.sh
TEST_DIR = "test"
SELECTED_BY = "BLEU"  # sacreBLEU's, on the raw valid references
REPRODUCED_WITHIN = 0.5  # val BLEU: how close a rerun with the same seed must come


@dataclass
class Trial:
    """One translation of the valid split: checkpoint name, search settings and scores by metric name."""

    checkpoint: str
    beam_size: int
    alpha: float
    scores: dict[str, float]


def decoding_grid(cfg: DecodingGrid) -> list[tuple[int, float]]:
    """Each (beam_size, alpha) of ``beam_sizes`` x ``alphas`` once; beam 1 (greedy) ignores alpha: (1, 0.0)."""
    return list(dict.fromkeys(_searched(beam, alpha) for beam in cfg.beam_sizes for alpha in cfg.alphas))


def tune(
    translators: dict[str, Translator], valid: TestSet, cfg: DecodingGrid, options: DecodingOptions
) -> tuple[Trial, list[Trial]]:
    """The best trial on ``valid`` and all trials run (in order, none twice).

    First every checkpoint at ``cfg.beam_size``/``cfg.alpha``; then the grid with the best of
    them. Best: highest BLEU, the earlier trial on a tie.
    """
    trials: dict[tuple[str, int, float], Trial] = {}

    def trial(name: str, beam_size: int, alpha: float) -> Trial:
        key = (name, *_searched(beam_size, alpha))
        if key not in trials:
            trials[key] = _translate_valid(translators[name], name, valid, key[1], key[2], options)
        return trials[key]

    checkpoint = _best([trial(name, cfg.beam_size, cfg.alpha) for name in translators]).checkpoint
    for beam_size, alpha in decoding_grid(cfg):
        trial(checkpoint, beam_size, alpha)
    run = list(trials.values())
    return _best([done for done in run if done.checkpoint == checkpoint]), run


def valid_set(cfg: DataConfig) -> TestSet:
    """The valid split of ``cfg`` as a test set (with tokenized references where there are any)."""
    return dataset_test_sets(dataclasses.replace(cfg, test_splits=[cfg.valid_split]))[0]


def tune_run(run_dir: Path, device: str = "auto", precision: str = "fp32") -> dict[str, Any]:
    """`tune` for a run folder: write and return ``decoding.json`` (see the module docstring)."""
    job = run_config(run_dir)
    paths: dict[str, str | list[str]] = {
        name: str(run_dir / relpath) for name, relpath in CANDIDATES.items() if (run_dir / relpath).is_file()
    }
    if not paths:
        raise LstmMtError(f"{run_dir}: neither {' nor '.join(CANDIDATES.values())} exists; train first")
    if job.decoding.ensemble and len(paths) == len(CANDIDATES):
        paths[ENSEMBLE] = [str(path) for path in paths.values()]
    options = DecodingOptions(device=resolve_device(device), precision=precision, progress=False)
    translators = {
        name: Translator.from_checkpoint(path, options.device, precision=precision) for name, path in paths.items()
    }
    return _tune_and_record(run_dir, job, paths, translators, options)


def _tune_and_record(
    run_dir: Path,
    job: TrainJobConfig,
    paths: dict[str, str | list[str]],
    translators: dict[str, Translator],
    options: DecodingOptions,
) -> dict[str, Any]:
    """`tune` the translators on ``job``'s valid split and write the choice to ``run_dir/decoding.json``."""
    chosen, trials = tune(translators, valid_set(job.data), job.decoding, options)
    decoding = {
        "split": job.data.valid_split,
        "selected_by": SELECTED_BY,
        "checkpoint": paths[chosen.checkpoint],
        "checkpoint_name": chosen.checkpoint,
        "beam_size": chosen.beam_size,
        "alpha": chosen.alpha,
        "precision": options.precision,
        "scores": chosen.scores,
        "trials": [dataclasses.asdict(trial) for trial in trials],
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / DECODING_FILE, json.dumps(decoding, indent=2))
    print(f"chosen on {decoding['split']}: {_describe_trial(chosen)} -> {run_dir / DECODING_FILE}")
    return decoding


def evaluate_run(run_dir: Path, device: str = "auto", precision: str | None = None) -> dict[str, Any]:
    """`test` for a run folder: evaluate the tuned choice on the test splits, write ``results.json``.

    ``precision``: None decodes in the precision ``tune`` chose with.
    """
    job = run_config(run_dir)
    decoding = _read_decoding(run_dir)
    training = {**_training_end(run_dir), "seconds": _training_seconds(run_dir)}
    return _test_and_record(run_dir, job, decoding, device, precision, _recipe_command(run_dir), training)


def ensemble_runs(out_dir: Path, run_dirs: list[Path], device: str = "auto", precision: str = "fp32") -> dict[str, Any]:
    """The ensemble of several tuned runs of one recipe (e.g. seeds): each run's chosen checkpoint(s)
    together, its search tuned on val like `tune_run`, then the test splits like `evaluate_run`;
    ``decoding.json``, ``test/`` and ``results.json`` go to ``out_dir``."""
    if len(run_dirs) < 2:
        raise LstmMtError("recipe ensemble: name at least two run folders")
    paths: list[str] = []
    for run_dir in run_dirs:
        chosen = _read_decoding(run_dir)["checkpoint"]
        paths += [chosen] if isinstance(chosen, str) else chosen
    job = run_config(run_dirs[0])
    options = DecodingOptions(device=resolve_device(device), precision=precision, progress=False)
    name = f"ensemble of {len(run_dirs)} runs"
    translators = {name: Translator.from_checkpoint(paths, options.device, precision=precision)}
    decoding = _tune_and_record(out_dir, job, {name: paths}, translators, options)
    seconds = [_training_seconds(run_dir) for run_dir in run_dirs]
    total = None if any(value is None for value in seconds) else sum(value or 0.0 for value in seconds)
    training = {"runs": [str(run_dir) for run_dir in run_dirs], "seconds": total}
    command = " ".join(["lstm-mt recipe ensemble", str(out_dir), *map(str, run_dirs)])
    return _test_and_record(out_dir, job, decoding, device, None, command, training)


def _read_decoding(run_dir: Path) -> dict[str, Any]:
    """``run_dir/decoding.json`` as `tune_run` wrote it; `LstmMtError` naming the file when missing."""
    path = run_dir / DECODING_FILE
    if not path.is_file():
        raise LstmMtError(f"{path}: not found; run `python -m lstm_mt.recipe tune {run_dir}` first")
    return json.loads(path.read_text())


def _test_and_record(
    run_dir: Path,
    job: TrainJobConfig,
    decoding: dict[str, Any],
    device: str,
    precision: str | None,
    command: str | None,
    training: dict[str, Any],
) -> dict[str, Any]:
    """Score the test splits with ``decoding``'s choice; write ``run_dir/test/`` and ``results.json``."""
    options = EvaluateConfig(
        checkpoint=decoding["checkpoint"],
        beam_size=decoding["beam_size"],
        alpha=decoding["alpha"],
        precision=precision or decoding.get("precision", "fp32"),
        device=resolve_device(device),
        output_dir=str(run_dir / TEST_DIR),
    )
    results = run_evaluate(OmegaConf.structured(options))
    summary = _summary(run_dir, job, decoding, results, options.device, command, training)
    write_text_atomic(run_dir / RESULTS_FILE, json.dumps(summary, indent=2))
    print("\n".join(_table_rows(summary)))
    print(f"results: {run_dir / RESULTS_FILE}")
    return summary


def run_config(run_dir: Path) -> TrainJobConfig:
    """The typed config the latest `lstm-mt train` of ``run_dir`` composed (``.hydra/config.yaml``)."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise LstmMtError(f"{path}: not found; {run_dir} is not a run folder of `lstm-mt train`")
    return typed_config(TrainJobConfig, OmegaConf.load(path), str(path), f"{path}: ")


def resolve_device(name: str) -> str:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N`` as a torch device string."""
    return str(select_device(name))


def compare_runs(first: Path, second: Path, tolerance: float = REPRODUCED_WITHIN) -> bool:
    """Print the val BLEU of two runs of one recipe side by side; True if every pair is within ``tolerance``.

    Pairs the validations of ``metrics.jsonl`` by update step, and compares the tuned val
    BLEU of ``decoding.json`` too where both runs have one.
    """
    pairs = _valid_bleu(first), _valid_bleu(second)
    steps = sorted(set(pairs[0]) & set(pairs[1]))
    if not steps:
        raise LstmMtError(f"{first} and {second}: no validation at a common step in {METRICS_FILE}")
    rows = [(f"step {step}", pairs[0][step], pairs[1][step]) for step in steps]
    tuned = [run / DECODING_FILE for run in (first, second)]
    if all(path.is_file() for path in tuned):
        rows.append(("tuned decoding", *(json.loads(path.read_text())["scores"][SELECTED_BY] for path in tuned)))
    print(f"val BLEU | {first} | {second} | difference")
    for label, a, b in rows:
        print(f"{label} | {a:.2f} | {b:.2f} | {abs(a - b):.2f}")
    largest = max(abs(a - b) for _, a, b in rows)
    unmatched = len(set(pairs[0]) ^ set(pairs[1]))
    verdict = "reproduced" if largest <= tolerance else "NOT reproduced"
    print(
        f"{verdict}: largest difference {largest:.2f} BLEU (tolerance {tolerance}); "
        f"{len(steps)} validations compared, {unmatched} in one run only"
    )
    return largest <= tolerance


def main(argv: list[str] | None = None) -> None:
    """``lstm-mt recipe tune|test RUN_DIR [--device D]``, ``compare RUN_DIR OTHER_RUN_DIR`` or
    ``ensemble OUT_DIR RUN_DIR RUN_DIR...``.

    Errors are one line with exit status 2; ``compare`` exits 1 when the runs differ by more than the tolerance.
    """
    parser = argparse.ArgumentParser(prog="lstm-mt recipe", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "step",
        choices=("tune", "test", "compare", "ensemble"),
        help="tune: pick on val; test: score the test splits; compare: val BLEU of two runs; "
        "ensemble OUT_DIR RUN_DIR RUN_DIR...: tune and test the tuned runs' ensemble into OUT_DIR",
    )
    parser.add_argument("run_dir", type=Path, help="the run folder, e.g. runs/multi30k_en_de (ensemble: OUT_DIR)")
    parser.add_argument(
        "other_run_dirs", type=Path, nargs="*", help="compare: the rerun's folder; ensemble: the tuned runs"
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument(
        "--precision", default=None, help="tune/test: fp32 | bf16 | int8 (default: fp32; test: the one tune used)"
    )
    parser.add_argument("--tolerance", type=float, default=REPRODUCED_WITHIN, help="compare: BLEU (default 0.5)")
    args = parser.parse_args(argv)
    others = len(args.other_run_dirs)
    if {"compare": others != 1, "ensemble": others < 2}.get(args.step, others != 0):
        parser.error("compare takes two run folders, ensemble an output folder and two or more runs, tune and test one")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.step == "compare":
            sys.exit(0 if compare_runs(args.run_dir, args.other_run_dirs[0], args.tolerance) else 1)
        if args.step == "ensemble":
            ensemble_runs(args.run_dir, args.other_run_dirs, args.device, args.precision or "fp32")
        elif args.step == "tune":
            tune_run(args.run_dir, args.device, args.precision or "fp32")
        else:
            evaluate_run(args.run_dir, args.device, args.precision)
    except LstmMtError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


# --- helpers ------------------------------------------------------------------------------


def _valid_bleu(run_dir: Path) -> dict[int, float]:
    """Val BLEU by update step from ``run_dir``'s metrics.jsonl (the last record of a step wins)."""
    records = read_records(run_dir / METRICS_FILE)
    if records is None:
        raise LstmMtError(f"{run_dir / METRICS_FILE}: not found; is {run_dir} a training run folder?")
    return {record["step"]: record["bleu"] for record in records if record.get("kind") == "valid" and "bleu" in record}


def _searched(beam_size: int, alpha: float) -> tuple[int, float]:
    """The settings as search uses them: greedy search (beam 1) has no length penalty."""
    return (beam_size, float(alpha) if beam_size > 1 else 0.0)


def _best(trials: list[Trial]) -> Trial:
    return max(trials, key=lambda trial: trial.scores[SELECTED_BY])  # max keeps the first of equals


def _translate_valid(
    translator: Translator, name: str, valid: TestSet, beam_size: int, alpha: float, options: DecodingOptions
) -> Trial:
    """Translate and score ``valid`` once with these settings."""
    searched = dataclasses.replace(options, beam_size=beam_size, alpha=alpha)
    result = evaluate(translator, [valid], searched)[0]
    trial = Trial(name, beam_size, alpha, {score.name: score.score for score in result.scores})
    log.info("%s: %s (%.0f s)", valid.name, _describe_trial(trial), result.seconds)
    return trial


def _describe_trial(trial: Trial) -> str:
    scores = " ".join(f"{name} {value:.2f}" for name, value in trial.scores.items())
    return f"{trial.checkpoint} beam {trial.beam_size} alpha {trial.alpha}: {scores}"


def _summary(
    run_dir: Path,
    job: TrainJobConfig,
    decoding: dict[str, Any],
    results: list[SetResult],
    device: str,
    command: str | None,
    training: dict[str, Any],
) -> dict[str, Any]:
    """What results.json holds (see the module docstring)."""
    translator = Translator.from_checkpoint(decoding["checkpoint"])
    return {
        "run_dir": str(run_dir),
        "command": command,
        "direction": f"{job.data.src}-{job.data.tgt}",
        "parameters": translator.model.num_parameters(),
        "training": training,
        "hardware": _hardware(device),
        "decoding": {key: value for key, value in decoding.items() if key != "trials"},
        "test": {
            result.name: {score.name: {"score": score.score, "signature": score.signature} for score in result.scores}
            for result in results
        },
    }


def _training_end(run_dir: Path) -> dict[str, Any]:
    """The last ``end`` record of metrics.jsonl: steps, epochs, why it stopped, best validation."""
    ends = [record for record in read_records(run_dir / METRICS_FILE) or [] if record.get("kind") == "end"]
    return {key: ends[-1].get(key) for key in ("step", "epoch", "reason", "best")} if ends else {}


def _training_seconds(run_dir: Path) -> float | None:
    """Wall-clock seconds of every `lstm-mt train` recipe.sh ran in ``run_dir`` (None: not recorded)."""
    path = run_dir / TRAIN_TIMES_FILE
    if not path.is_file():
        return None
    return float(sum(json.loads(line)["seconds"] for line in path.read_text().splitlines() if line.strip()))


def _recipe_command(run_dir: Path) -> str | None:
    """``bash scripts/recipe.sh RECIPE [overrides]`` rebuilt from the latest train's overrides."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    overrides = [str(item) for item in OmegaConf.load(path)]
    recipe = [item.split("=", 1)[1] for item in overrides if item.startswith("+experiment=")]
    rest = [item for item in overrides if not item.startswith(("+experiment=", "train.resume="))]
    return " ".join(["bash scripts/recipe.sh", *recipe[:1], *rest]) if recipe else None


def _hardware(device: str) -> str:
    """The GPU's name, or the CPU model and core count, of the machine that ran ``test``."""
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(torch.device(device))} (CUDA)"
    cpu_info = Path("/proc/cpuinfo")
    lines = cpu_info.read_text().splitlines() if cpu_info.is_file() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "CPU")
    return f"{model}, {os.cpu_count()} cores"


def _table_rows(summary: dict[str, Any]) -> list[str]:
    """Markdown rows for the README's results table, one per test set."""
    direction = summary["direction"].replace("-", "→")
    seconds = summary["training"].get("seconds")
    hours = "?" if seconds is None else f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"
    command = f"`{summary['command']}`" if summary["command"] else "?"
    rows = []
    for name, scores in summary["test"].items():
        cells = [f"{scores[key]['score']:.2f}" if key in scores else "-" for key in ("BLEU", PAPER_BLEU, "chrF")]
        rows.append(
            f"| {direction} | {name} | {' | '.join(cells)} | {summary['parameters'] / 1e6:.1f}M "
            f"| {hours} | {summary['hardware']} | {command} |"
        )
    return rows


if __name__ == "__main__":
    main()
