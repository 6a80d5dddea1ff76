"""The files `lstm-mt inspect` writes for each sentence, and the index page linking them.

One folder per sentence::

    report.html                      source, translation, statistics, all figures
    attention.png                    target subwords × source subwords
    gates_<layer>.png                per layer and direction (gates_encoder_layer0_forward.png, ...):
                                     input, forget and output gates, top-k units × time
    cell_state_norm.png              ‖c_t‖ over time, encoder and decoder
    arrays.npz                       every array behind the figures (`SentenceTrace.arrays`)
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lstm_mt.inspection import figures
from lstm_mt.inspection.analysis import (
    SATURATION_HIGH,
    SATURATION_LOW,
    LayerSummary,
    MemorySpan,
    summarize_layer,
)
from lstm_mt.inspection.tracing import SentenceTrace
from lstm_mt.plotting import save_attention_heatmap

PAGE_FILE = "report.html"
ARRAYS_FILE = "arrays.npz"
INDEX_FILE = "index.html"

_STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.text { font-size: 1.2em; }
code { background: #f4f4f4; padding: 0 0.2em; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
"""


def write_sentence_report(trace: SentenceTrace, folder: Path, title: str, top_k: int) -> Path:
    """Write the figures, ``arrays.npz`` and ``report.html`` of one sentence into ``folder``; returns the page."""
    folder.mkdir(parents=True, exist_ok=True)
    write_arrays(trace, folder / ARRAYS_FILE)
    with figures.unicode_labels():
        attention = save_attention_heatmap(
            folder / "attention.png",
            torch.from_numpy(trace.attention),
            trace.src_pieces,
            trace.tgt_pieces,
            trace.translation,
        )
    gates = []
    for layer in trace.layers:
        file = folder / f"gates_{layer.name.replace('.', '_')}.png"
        gates.append(figures.gates_figure(layer, trace.pieces(layer), top_k, file))
    norms = figures.cell_norm_figure(trace, folder / "cell_state_norm.png")
    summaries = [summarize_layer(layer.name, layer.arrays) for layer in trace.layers]
    page = render_page(title, trace, summaries, attention.name, [path.name for path in gates], norms.name)
    path = folder / PAGE_FILE
    path.write_text(page, encoding="utf-8")
    return path


def write_arrays(trace: SentenceTrace, path: Path) -> Path:
    """Save `SentenceTrace.arrays` as a compressed ``.npz`` (strings as unicode arrays: no pickle needed)."""
    arrays: dict[str, Any] = trace.arrays()
    np.savez_compressed(path, **arrays)
    return path


def write_index(pages: Sequence[tuple[SentenceTrace, Path]], folder: Path) -> Path:
    """``index.html`` in ``folder``: one line per sentence (source → translation) linking its page."""
    items = "\n".join(
        f'<li><a href="{html.escape(page.relative_to(folder).as_posix())}">{html.escape(trace.source)}</a>'
        f" → {html.escape(trace.translation)}</li>"
        for trace, page in pages
    )
    path = folder / INDEX_FILE
    path.write_text(_document("lstm-mt inspect", f"<h1>lstm-mt inspect</h1>\n<ol>\n{items}\n</ol>"), encoding="utf-8")
    return path


def render_page(
    title: str,
    trace: SentenceTrace,
    summaries: Sequence[LayerSummary],
    attention_png: str,
    gate_pngs: Sequence[str],
    norm_png: str,
) -> str:
    """The HTML page of one sentence; image arguments are file names relative to the page."""
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="text"><b>Source:</b> {html.escape(trace.source)}</p>',
        f'<p class="text"><b>Translation (greedy):</b> {html.escape(trace.translation)}</p>',
        f"<p><b>Source subwords:</b> {_pieces(trace.src_pieces)}<br>"
        f"<b>Target subwords:</b> {_pieces(trace.tgt_pieces)}</p>",
        "<h2>Attention</h2>",
        _image(attention_png, "attention weights"),
        "<h2>Gates, layer by layer</h2>",
        _gate_table(summaries),
        "<h2>Long-term memory units</h2>",
        f"<p>Units whose forget gate stays above {SATURATION_HIGH} for the most consecutive steps: "
        "they carry their cell state across that stretch of the sentence.</p>",
        _memory_list(trace, summaries),
        "<h2>Gate activations</h2>",
        "<p>Per layer, the units whose activation varies most over the sentence (rows) at each step (columns).</p>",
        *(_image(png, png) for png in gate_pngs),
        "<h2>Cell state</h2>",
        _image(norm_png, "cell state norm"),
        "<h2>Raw arrays</h2>",
        _arrays_help(trace),
    ]
    return _document(title, "\n".join(sections))


def _gate_table(summaries: Sequence[LayerSummary]) -> str:
    header = (
        "<tr><th rowspan=2>layer</th><th rowspan=2>steps × units</th>"
        + "".join(f"<th colspan=3>{gate} gate</th>" for gate in summaries[0].gates)
        + "</tr>\n<tr>"
        + f"<th>mean</th><th>&lt; {SATURATION_LOW}</th><th>&gt; {SATURATION_HIGH}</th>" * len(summaries[0].gates)
        + "</tr>"
    )
    rows = []
    for summary in summaries:
        cells = "".join(
            f"<td>{stats.mean:.2f}</td><td>{stats.closed:.0%}</td><td>{stats.open:.0%}</td>"
            for stats in summary.gates.values()
        )
        rows.append(f"<tr><td>{summary.name}</td><td>{summary.steps} × {summary.units}</td>{cells}</tr>")
    caption = (
        "<caption>mean openness, and saturation: the share of activations nearly closed "
        f"(&lt; {SATURATION_LOW}) or nearly open (&gt; {SATURATION_HIGH})</caption>"
    )
    return f"<table>{caption}\n{header}\n" + "\n".join(rows) + "\n</table>"


def _memory_list(trace: SentenceTrace, summaries: Sequence[LayerSummary]) -> str:
    items = []
    for layer, summary in zip(trace.layers, summaries):
        spans = ", ".join(_span(span, trace.pieces(layer)) for span in summary.memory_units) or "none"
        items.append(f"<li><b>{summary.name}</b>: {spans}</li>")
    return "<ul>\n" + "\n".join(items) + "\n</ul>"


def _span(span: MemorySpan, labels: Sequence[str]) -> str:
    first, last = html.escape(labels[span.start]), html.escape(labels[span.end])
    return f"unit {span.unit}: {span.length} steps ({first} … {last})"


def _arrays_help(trace: SentenceTrace) -> str:
    layer = trace.layers[-1].name
    return (
        f'<p><a href="{ARRAYS_FILE}">{ARRAYS_FILE}</a> holds everything above: <code>attention</code> '
        "[target steps, source steps], <code>src_pieces</code>, <code>tgt_pieces</code>, "
        "<code>src_ids</code>, <code>tgt_ids</code>, and per layer <code>&lt;layer&gt;.i</code>, "
        "<code>.f</code>, <code>.g</code> (candidate C̃), <code>.o</code>, <code>.c</code>, "
        "<code>.h</code> [steps, units] and the initial state <code>.c0</code>, <code>.h0</code>. Layers: "
        + ", ".join(f"<code>{layer_trace.name}</code>" for layer_trace in trace.layers)
        + f'.</p>\n<pre>import numpy as np\narrays = np.load("{ARRAYS_FILE}")\n'
        f'forget = arrays["{layer}.f"]  # [steps, units]</pre>'
    )


def _pieces(pieces: Sequence[str]) -> str:
    return " ".join(f"<code>{html.escape(piece)}</code>" for piece in pieces)


def _image(file: str, alt: str) -> str:
    return f'<p><img src="{html.escape(file)}" alt="{html.escape(alt)}"></p>'


def _document(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
