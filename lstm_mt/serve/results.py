"""Translations, attention and gate traces as the plain JSON values of a `SentenceResult`.

Arrays are rounded to ``DIGITS`` decimals: the answer stays readable and a fraction of the
size, and nothing a person or a plot can see changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lstm_mt.inspection import LayerTrace, cell_state_norm, top_variance_units, trace_translation
from lstm_mt.inspection.tracing import STEP_ARRAYS, decoded_ids, source_pieces, target_pieces
from lstm_mt.search import Translation
from lstm_mt.translate import Translator

DIGITS = 5


def sentence_result(
    translator: Translator, text: str, nbest: Sequence[Translation], attention: bool, gates: bool, gate_units: int
) -> dict[str, Any]:
    """The JSON of one sentence's n-best list; with ``attention`` / ``gates``, those of the best translation.

    ``gate_units``: units per array, those that vary most (0: all, in order).
    """
    best = nbest[0]
    result: dict[str, Any] = {
        "text": best.text,
        "score": best.score,
        "nbest": [{"text": t.text, "score": t.score} for t in nbest],
    }
    if not (attention or gates):
        return result
    if best.attention is None:  # an empty input is never decoded
        result.update(source_pieces=[], target_pieces=[])
        result.update({key: [] for key, wanted in (("attention", attention), ("gates", gates)) if wanted})
        return result
    result["source_pieces"] = source_pieces(translator.tokenizer, text, best.source_ids)
    result["target_pieces"] = target_pieces(translator.tokenizer, decoded_ids(best))
    if attention:
        result["attention"] = rounded(best.attention.float().cpu().numpy())
    if gates:
        result["gates"] = [layer_gates(layer, gate_units) for layer in trace_translation(translator, text, best).layers]
    return result


def layer_gates(layer: LayerTrace, units: int) -> dict[str, Any]:
    """One layer's `LayerGates` JSON: ‖c_t‖ and, per array, the ``units`` most varying units (0: all)."""
    result: dict[str, Any] = {
        "name": layer.name,
        "side": layer.id.side,
        "layer": layer.id.layer,
        "direction": layer.id.direction,
        "c_norm": rounded(cell_state_norm(layer.arrays["c"])),
    }
    for key in STEP_ARRAYS:
        values = layer.arrays[key]
        chosen = top_variance_units(values, units) if units else np.arange(values.shape[1])
        result[key] = {"units": chosen.tolist(), "values": rounded(values[:, chosen])}
    return result


def rounded(values: np.ndarray) -> list:
    """``values`` as nested lists of floats rounded to ``DIGITS`` decimals."""
    return np.round(values.astype(np.float64), DIGITS).tolist()
