"""The JSON the API reads and writes, as pydantic models: checked input, OpenAPI schema, examples.

A request is strict: unknown keys, a number where a string belongs (or the other way round),
non-finite numbers, control characters and lone surrogates in a sentence are refused with the
path of the field. Limits that depend on the server's configuration are checked by the service.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue

EXAMPLE_REQUEST: dict[str, JsonValue] = {
    "sentences": ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee."],
    "beam_size": 5,
    "nbest": 2,
}
EXAMPLE_REQUEST_WITH_INSPECTION: dict[str, JsonValue] = {
    "sentences": ["Ein Hund rennt."],
    "beam_size": 1,
    "attention": True,
    "gates": True,
    "gate_units": 4,
}


def check_sentence(text: str) -> str:
    """``text`` unchanged if it holds no control character and no lone surrogate, else ValueError."""
    for position, char in enumerate(text):
        category = unicodedata.category(char)
        if category == "Cc":
            raise ValueError(f"control character U+{ord(char):04X} at position {position}")
        if category == "Cs":
            raise ValueError(f"lone surrogate U+{ord(char):04X} at position {position} (not valid Unicode)")
    return text


Sentence = Annotated[str, AfterValidator(check_sentence)]


class TranslateRequest(BaseModel):
    """Sentences to translate and, optionally, how: options left out take the server's defaults (`GET /v1/info`)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [EXAMPLE_REQUEST, EXAMPLE_REQUEST_WITH_INSPECTION]},
    )

    sentences: list[Sentence] = Field(
        min_length=1, description="Source sentences, one string each; an empty one translates to an empty string."
    )
    beam_size: int | None = Field(None, ge=1, description="1: greedy search.")
    alpha: float | None = Field(None, ge=0, allow_inf_nan=False, description="GNMT length penalty exponent.")
    nbest: int | None = Field(None, ge=1, description="Translations per sentence, best first (at most beam_size).")
    max_len_a: float | None = Field(
        None, ge=0, allow_inf_nan=False, description="Output cap: max_len_a * source subwords + max_len_b."
    )
    max_len_b: int | None = Field(None, ge=0)
    attention: bool = Field(False, description="Return the attention weights [target x source subwords].")
    gates: bool = Field(False, description="Return every LSTM layer's gates, cell states and outputs over time.")
    gate_units: int = Field(
        0, ge=0, description="With gates: the units per array that vary most over time (0: all units, in order)."
    )


class Candidate(BaseModel):
    """One translation and its length-normalized log-probability."""

    text: str
    score: float


class UnitTrace(BaseModel):
    """One array of one layer: ``values[t][k]`` is unit ``units[k]`` at step t."""

    units: list[int]
    values: list[list[float]]


class LayerGates(BaseModel):
    """What one LSTM layer (one direction) computed, step by step.

    Encoder steps are the source subwords (``source_pieces``), decoder steps the target ones
    (``target_pieces``); a backward layer's step t still is subword t. ``i``, ``f``, ``o``: the
    input, forget and output gates; ``g``: the candidate C̃; ``c``: the cell state; ``h``: the
    output; ``c_norm``: ‖c_t‖ over all units.
    """

    name: str
    side: str
    layer: int
    direction: str
    c_norm: list[float]
    i: UnitTrace
    f: UnitTrace
    g: UnitTrace
    o: UnitTrace
    c: UnitTrace
    h: UnitTrace


class SentenceResult(BaseModel):
    """The translations of one sentence, best first; the best again as ``text`` and ``score``.

    With ``attention`` or ``gates`` asked for: the subword labels of both time axes (``</s>``
    included) and ``attention[t][s]``, the weight target step t put on source subword s.
    Gates are recorded along the best translation.
    """

    text: str
    score: float
    nbest: list[Candidate]
    source_pieces: list[str] | None = None
    target_pieces: list[str] | None = None
    attention: list[list[float]] | None = None
    gates: list[LayerGates] | None = None


class SearchOptions(BaseModel):
    """The decoding options a request was answered with."""

    beam_size: int
    alpha: float
    nbest: int
    max_len_a: float
    max_len_b: int


class TranslateResponse(BaseModel):
    """One result per request sentence, in order, and the options used."""

    translations: list[SentenceResult]
    options: SearchOptions


class ErrorResponse(BaseModel):
    """A refused request: ``field`` is the path of the faulty input (e.g. ``sentences[2]``, ``body``)."""

    error: str
    field: str
