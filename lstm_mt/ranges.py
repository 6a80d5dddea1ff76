"""Allowed ranges of numeric config keys: declared on the schema's dataclass fields, checked in one place.

A schema field states its range where it is declared, and the config typing helper checks
every range once the config is composed, so a nonsensical number stops a command before any
work, with one line naming the key and what it allows:

    lr: float = bounded(1e-3, gt=0)                     # "train.lr=inf: must be a finite number > 0"
    dropout: float = bounded(0.2, ge=0, lt=1)           # "model.dropout=1.5: must be in [0, 1)"
    betas: list[float] = bounded(factory=lambda: [0.9, 0.999], ge=0, lt=1)   # each element

Floats with a range must also be finite (NaN and infinity are never in one); None passes
(an optional key left unset).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lstm_mt.errors import LstmMtError

__all__ = ["Range", "bounded", "check_ranges"]

RANGE_KEY = "lstm_mt.range"  # where a field's Range lives in its dataclass metadata


@dataclass(frozen=True)
class Range:
    """Bounds of a number: ``ge``/``gt`` below (inclusive/exclusive), ``le``/``lt`` above."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def contains(self, value: float) -> bool:
        """Whether ``value`` is a finite number within every bound."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )

    def describe(self, value: object) -> str:
        """What a value must be, in words: ``a finite number > 0``, ``an integer >= 1``, ``in [0, 1)``."""
        low, high = _bound(self.ge, self.gt), _bound(self.le, self.lt)
        if low is not None and high is not None:
            return f"in {'[' if self.ge is not None else '('}{low}, {high}{']' if self.le is not None else ')'}"
        kind = "an integer" if isinstance(value, int) and not isinstance(value, bool) else "a finite number"
        if low is not None:
            return f"{kind} {'>=' if self.ge is not None else '>'} {low}"
        if high is not None:
            return f"{kind} {'<=' if self.le is not None else '<'} {high}"
        return kind


def bounded(
    default: Any = dataclasses.MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A dataclass field with ``default`` (or ``factory`` for a list) whose value(s) must lie in the range."""
    metadata = {RANGE_KEY: Range(ge=ge, gt=gt, le=le, lt=lt)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def check_ranges(config: Any, prefix: str = "") -> None:
    """Raise `LstmMtError` for the first value of ``config`` (a dataclass instance) outside its range.

    Nested dataclasses, and dicts of them, are checked too; keys are reported with ``prefix``
    and their path, e.g. ``train.betas[0]=2.0: must be in [0, 1)``.
    """
    for spec in dataclasses.fields(config):
        value = getattr(config, spec.name)
        key = f"{prefix}{spec.name}"
        allowed = spec.metadata.get(RANGE_KEY)
        if allowed is not None:
            _check_value(key, value, allowed)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_ranges(value, f"{key}.")
        elif isinstance(value, dict):
            for name, item in value.items():
                if dataclasses.is_dataclass(item) and not isinstance(item, type):
                    check_ranges(item, f"{key}.{name}.")


def _check_value(key: str, value: Any, allowed: Range) -> None:
    if value is None:
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_value(f"{key}[{index}]", item, allowed)
    elif not allowed.contains(value):
        raise LstmMtError(f"{key}={value!r}: must be {allowed.describe(value)}")


def _bound(inclusive: float | None, exclusive: float | None) -> str | None:
    bound = inclusive if inclusive is not None else exclusive
    if bound is None:
        return None
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))
