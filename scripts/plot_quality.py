"""Quality at a budget: val BLEU against wall-clock training minutes, from runs' metrics.jsonl.

    python scripts/plot_quality.py runs/multi30k_de_en [label=runs/other ...] --output docs/quality.png

Prints a Markdown table (the best val BLEU each run had reached after every ``--every`` minutes,
and its last validation) and, with ``--output``, draws the curves (matplotlib: `lstm-mt[plot]`).
A run is a folder, or ``label=folder`` to name its line. Errors are one line, exit status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from lstm_mt.errors import LstmMtError
from lstm_mt.plotting import save_quality_plot
from lstm_mt.runlog import CurvePoint, best_bleu_by, valid_curve


def parse_run(text: str) -> tuple[str, Path]:
    """``label=folder`` or ``folder`` (labelled by its name)."""
    label, _, folder = text.rpartition("=")
    path = Path(folder)
    return label or path.name, path


def table(curves: dict[str, list[CurvePoint]], every: float) -> list[str]:
    """Markdown rows: best val BLEU reached by each ``every`` minutes, then each run's last validation."""
    end = max(point.minutes for curve in curves.values() for point in curve)
    marks = [every * k for k in range(1, math.ceil(end / every) + 1)]
    rows = ["| minutes | " + " | ".join(curves) + " |", "|---:|" + "---:|" * len(curves)]
    for mark in marks:
        cells = [best_bleu_by(curve, mark) for curve in curves.values()]
        rows.append(f"| {mark:g} | " + " | ".join("-" if c is None else f"{c:.2f}" for c in cells) + " |")
    last = [curve[-1] for curve in curves.values()]
    rows.append(
        "| last | " + " | ".join(f"{p.bleu:.2f} ({p.minutes:.1f} min, epoch {p.epoch:.1f})" for p in last) + " |"
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders, or label=folder")
    parser.add_argument("--output", type=Path, help="PNG to draw the curves into")
    parser.add_argument("--every", type=float, default=5.0, help="table step in minutes (default 5)")
    parser.add_argument("--title", default="", help="the plot's title")
    args = parser.parse_args()
    try:
        curves = {label: valid_curve(folder) for label, folder in map(parse_run, args.runs)}
        print("\n".join(table(curves, args.every)))
        if args.output:
            points = {label: [(p.minutes, p.bleu) for p in curve] for label, curve in curves.items()}
            print(f"plot: {save_quality_plot(args.output, points, args.title)}")
    except LstmMtError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
