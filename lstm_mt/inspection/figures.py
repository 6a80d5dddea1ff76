"""PNG figures of a `SentenceTrace`: gate activations per layer and cell-state norms
(the attention heatmap is `lstm_mt.plotting`'s, shared with `lstm-mt translate`).

matplotlib is an optional dependency (the ``plot`` extra), imported on first use. The
figures here are drawn with matplotlib's object API (`Figure`, saved through Agg), without
pyplot's global state.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lstm_mt.errors import LstmMtError
from lstm_mt.inspection.analysis import GATES, cell_state_norm, top_variance_units
from lstm_mt.inspection.tracing import LayerTrace, SentenceTrace

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Fonts with CJK glyphs that matplotlib can draw, tried after DejaVu Sans when installed.
FALLBACK_FONTS = (
    "Noto Sans CJK JP",
    "Noto Sans CJK SC",
    "Source Han Sans",
    "WenQuanYi Zen Hei",
    "Droid Sans Fallback",
    "Arial Unicode MS",
    "Microsoft YaHei",
    "PingFang SC",
)
INCH_PER_LABEL = 0.28  # room for one rotated subword label on a time axis


def gates_figure(layer: LayerTrace, pieces: Sequence[str], top_k: int, path: Path) -> Path:
    """Input, forget and output gates of one layer: the ``top_k`` units by variance × time steps."""
    units = min(top_k, layer.arrays["f"].shape[1])
    row_inches = 0.18 * units + 1.0
    with unicode_labels():
        figure = _figure(_axis_inches(len(pieces)) + 2.5, len(GATES) * row_inches + 1.5)
        rows = figure.subplots(len(GATES), 1, sharex=True, squeeze=False)[:, 0]
        for axes, (letter, gate) in zip(rows, GATES.items()):
            values = layer.arrays[letter]
            chosen = top_variance_units(values, top_k)
            image = axes.imshow(
                values[:, chosen].T, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest"
            )
            axes.set_yticks(range(len(chosen)), [str(unit) for unit in chosen], fontsize=6)
            axes.set_ylabel(f"{gate} gate\nunit")
        _label_time_axis(rows[-1], pieces)
        figure.colorbar(image, ax=list(rows), label="activation", fraction=0.03)
        figure.suptitle(f"{layer.name}: top {units} units by variance of each gate")
        return _save(figure, path)


def cell_norm_figure(trace: SentenceTrace, path: Path) -> Path:
    """The cell state's norm ‖c_t‖ over time: encoder layers above, decoder layers below."""
    longest = max(len(trace.src_pieces), len(trace.tgt_pieces))
    with unicode_labels():
        figure = _figure(_axis_inches(longest) + 2.5, 7)
        panels = figure.subplots(2, 1)
        for axes, side, pieces in zip(panels, ("encoder", "decoder"), (trace.src_pieces, trace.tgt_pieces)):
            for layer in trace.side(side):
                axes.plot(cell_state_norm(layer.arrays["c"]), marker=".", label=layer.name)
            _label_time_axis(axes, pieces)
            axes.set_ylabel("‖c_t‖")
            axes.set_title(f"{side} cell state norm")
            axes.legend(fontsize=7)
            axes.grid(alpha=0.3)
        return _save(figure, path)


def _axis_inches(labels: int) -> float:
    return max(3.0, INCH_PER_LABEL * labels)


def _label_time_axis(axes: Axes, pieces: Sequence[str]) -> None:
    """One tick per time step on the x axis, labelled with its subword."""
    axes.set_xticks(np.arange(len(pieces)), list(pieces), rotation=90, fontsize=7)


def require_matplotlib() -> None:
    """Raise `LstmMtError` saying how to install matplotlib when it is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise LstmMtError("lstm-mt inspect draws its figures with matplotlib: pip install 'lstm-mt[plot]'") from None


def _figure(width: float, height: float) -> Figure:
    """A new figure, not registered with pyplot."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=110, format="png")
    return path


@contextmanager
def unicode_labels() -> Iterator[None]:
    """Draw with fallback fonts for non-Latin subwords; a glyph no font has becomes a box, silently.

    Wraps a figure's creation as well as its saving: text takes its font when it is made.
    """
    require_matplotlib()
    from matplotlib import font_manager, rc_context

    installed = {font.name for font in font_manager.fontManager.ttflist}
    families = ["DejaVu Sans", *(name for name in FALLBACK_FONTS if name in installed)]
    with rc_context({"font.family": families}), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        yield
