"""Plots: attention heatmaps (one PNG per sentence, source subword pieces across, target pieces
down) and quality curves (val BLEU against training minutes, one line per run).

matplotlib is optional (``pip install 'lstm-mt[plot]'``): it is imported only when a plot
is drawn, with the Agg backend, so no display is needed.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import Tensor

from lstm_mt.errors import LstmMtError
from lstm_mt.search import Translation
from lstm_mt.tokenizer import Tokenizer

EOS_LABEL = "</s>"


def save_attention_heatmap(
    path: Path, attention: Tensor, src_labels: Sequence[str], tgt_labels: Sequence[str], title: str = ""
) -> Path:
    """Draw ``attention`` ``[T, S]`` (row t: where target piece t looked) into the PNG ``path``."""
    rows, columns = attention.shape
    size = (max(4.0, 0.35 * columns + 2), max(3.0, 0.3 * rows + 1.5))
    with warnings.catch_warnings(), _drawing(path, "attention_plots", size, title) as axes:
        warnings.filterwarnings("ignore", message=".*[Gg]lyph.*missing")  # CJK, emoji: boxes, not noise
        axes.imshow(attention.float().numpy(), cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
        axes.set_xticks(range(columns), labels=list(src_labels), rotation=90, fontsize=8)
        axes.set_yticks(range(rows), labels=list(tgt_labels), fontsize=8)
        axes.set_xlabel("source")
        axes.set_ylabel("translation")
    return path


def save_attention_plots(
    folder: Path, sentences: Sequence[str], translations: Sequence[Translation], tokenizer: Tokenizer, limit: int
) -> list[Path]:
    """Heatmaps of the first ``limit`` inputs' translations, ``<folder>/line-<N>.png`` (N: the input line).

    The translations must carry their attention; empty inputs have none and are skipped
    (but count towards ``limit``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    width = len(str(len(sentences)))
    paths = []
    for index, (text, translation) in enumerate(zip(sentences[:limit], translations[:limit])):
        attention = translation.attention
        if attention is None:
            continue
        src_labels = tokenizer.pieces_src(text)[: len(translation.source_ids)] + [EOS_LABEL]
        ended = attention.shape[0] > len(translation.target_ids)
        tgt_labels = tokenizer.tgt_id_pieces(translation.target_ids) + ([EOS_LABEL] if ended else [])
        path = folder / f"line-{index + 1:0{width}d}.png"
        paths.append(save_attention_heatmap(path, attention, src_labels, tgt_labels, translation.text))
    return paths


def save_quality_plot(path: Path, curves: Mapping[str, Sequence[tuple[float, float]]], title: str = "") -> Path:
    """Draw val BLEU (y) against training minutes (x), one line per named run, into the PNG ``path``."""
    with _drawing(path, "the quality plot", (7.0, 4.5), title) as axes:
        for label, points in curves.items():
            axes.plot([minutes for minutes, _ in points], [bleu for _, bleu in points], marker=".", label=label)
        axes.set_xlabel("training minutes (wall clock)")
        axes.set_ylabel("val BLEU (greedy)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    return path


@contextmanager
def _drawing(path: Path, what: str, size: tuple[float, float], title: str) -> Iterator[Any]:
    """The axes of a new figure, titled, laid out and saved as the PNG ``path`` when the block ends."""
    plt = _pyplot(what)
    figure, axes = plt.subplots(figsize=size)
    try:
        yield axes
        if title:
            axes.set_title(title, fontsize=9)
        figure.tight_layout()
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)


def _pyplot(what: str) -> Any:
    try:
        import matplotlib
    except ImportError:
        raise LstmMtError(f"{what} needs matplotlib, which is not installed: pip install 'lstm-mt[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
