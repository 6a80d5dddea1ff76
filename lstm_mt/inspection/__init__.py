"""Watch the gates and the attention work, sentence by sentence (`lstm-mt inspect`).

tracing.py   record one sentence's LSTM steps (greedy, or along a given translation): SentenceTrace
analysis.py  pure statistics of gate arrays: memory units, saturation, openness, variance
figures.py   matplotlib figures: attention, gate heatmaps per layer, cell-state norms
report.py    one folder per sentence: PNGs, report.html, arrays.npz; index.html
command.py   InspectConfig (Hydra) and `main`, the `lstm-mt inspect` subcommand
"""

from lstm_mt.inspection.analysis import (
    GateStats,
    LayerSummary,
    MemorySpan,
    cell_state_norm,
    gate_stats,
    long_memory_units,
    longest_runs_above,
    summarize_layer,
    top_variance_units,
)
from lstm_mt.inspection.command import InspectConfig, main, register_configs, run_inspection
from lstm_mt.inspection.tracing import LayerId, LayerTrace, SentenceTrace, trace_sentence, trace_translation

__all__ = [
    "GateStats",
    "InspectConfig",
    "LayerId",
    "LayerSummary",
    "LayerTrace",
    "MemorySpan",
    "SentenceTrace",
    "cell_state_norm",
    "gate_stats",
    "long_memory_units",
    "longest_runs_above",
    "main",
    "register_configs",
    "run_inspection",
    "summarize_layer",
    "top_variance_units",
    "trace_sentence",
    "trace_translation",
]
