"""Declared ranges of numeric config keys: every schema declares one for each number, and
every value outside it is refused in one line naming the key and the range."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass

import pytest

from lstm_mt.average import AverageConfig
from lstm_mt.config import TrainJobConfig
from lstm_mt.errors import LstmMtError
from lstm_mt.evaluate import EvaluateConfig
from lstm_mt.inspection.command import InspectConfig
from lstm_mt.ranges import RANGE_KEY, Range, bounded, check_ranges
from lstm_mt.serve.config import ServeConfig
from lstm_mt.translate import TranslateConfig

SCHEMAS = (TrainJobConfig, TranslateConfig, EvaluateConfig, AverageConfig, InspectConfig, ServeConfig)


def numeric_fields(schema: type, prefix: str = "") -> list[tuple[str, dataclasses.Field, type]]:
    """Every field of ``schema`` (nested dataclasses too) whose type is a number or a list of numbers."""
    hints = typing.get_type_hints(schema)
    found = []
    for spec in dataclasses.fields(schema):
        kind = hints[spec.name]
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        base = args[0] if typing.get_origin(kind) in (typing.Union, types.UnionType) else kind
        if typing.get_origin(base) is list:
            base = typing.get_args(base)[0]
        if dataclasses.is_dataclass(base):
            found += numeric_fields(base, f"{prefix}{spec.name}.")
        elif base in (int, float):
            found.append((f"{prefix}{spec.name}", spec, base))
    return found


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: s.__name__)
def test_every_number_of_every_command_declares_a_range_that_its_default_meets(schema):
    fields = numeric_fields(schema)
    assert fields
    unbounded = [key for key, spec, _ in fields if RANGE_KEY not in spec.metadata]
    assert not unbounded, f"numeric keys without a declared range: {unbounded}"
    check_ranges(schema(**({"checkpoint": "x.pt"} if schema in (TranslateConfig, ServeConfig) else {})))


def _nested_replace(config: object, key: str, value: object) -> object:
    head, _, rest = key.partition(".")
    if rest:
        return dataclasses.replace(config, **{head: _nested_replace(getattr(config, head), rest, value)})
    current = getattr(config, head)
    return dataclasses.replace(config, **{head: [value] * len(current) if isinstance(current, list) else value})


def _outside(allowed: Range, kind: type) -> list[object]:
    """Values just outside ``allowed``, and (for floats) NaN and infinity."""
    step = 1 if kind is int else 1e-9
    values: list[object] = []
    if allowed.ge is not None:
        values.append(kind(allowed.ge - step) if kind is int else allowed.ge - max(step, abs(allowed.ge) * 1e-9))
    if allowed.gt is not None:
        values.append(kind(allowed.gt))
    if allowed.le is not None:
        values.append(kind(allowed.le + step) if kind is int else allowed.le * (1 + 1e-9) + step)
    if allowed.lt is not None:
        values.append(kind(allowed.lt))
    if kind is float:
        values += [math.nan, math.inf, -math.inf]
    return values


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: s.__name__)
def test_each_value_outside_a_range_is_one_line_naming_the_key(schema):
    base = schema(**({"checkpoint": "x.pt"} if schema in (TranslateConfig, ServeConfig) else {}))
    checked = 0
    for key, spec, kind in numeric_fields(schema):
        for value in _outside(spec.metadata[RANGE_KEY], kind):
            with pytest.raises(LstmMtError) as error:
                check_ranges(_nested_replace(base, key, value))
            message = str(error.value)
            assert message.startswith(key) and "must be" in message and "\n" not in message, message
            checked += 1
    assert checked >= len(numeric_fields(schema))


def test_range_descriptions_and_bounds_are_exact():
    assert Range(gt=0).describe(1.0) == "a finite number > 0"
    assert Range(ge=1).describe(3) == "an integer >= 1"
    assert Range(ge=0, lt=1).describe(0.5) == "in [0, 1)"
    assert Range(gt=0, le=1).describe(0.5) == "in (0, 1]"
    assert Range(ge=0, lt=1).contains(0.0) and not Range(ge=0, lt=1).contains(1.0)
    assert Range(gt=0, lt=1).contains(1e-300) and not Range(gt=0, lt=1).contains(0.0)
    assert not Range().contains(math.nan) and not Range().contains(math.inf) and not Range().contains(True)


def test_lists_and_nested_dicts_are_checked_element_by_element():
    @dataclass
    class Leaf:
        size: int = bounded(1, ge=1)

    @dataclass
    class Root:
        betas: list[float] = bounded(factory=lambda: [0.5, 0.5], ge=0, lt=1)
        leaves: dict[str, Leaf] = dataclasses.field(default_factory=dict)
        optional: int | None = bounded(None, ge=1)

    check_ranges(Root(leaves={"a": Leaf()}))
    with pytest.raises(LstmMtError, match=r"^x\.betas\[1\]=1\.0: must be in \[0, 1\)$"):
        check_ranges(Root(betas=[0.5, 1.0]), "x.")
    with pytest.raises(LstmMtError, match=r"^leaves\.b\.size=0: must be an integer >= 1$"):
        check_ranges(Root(leaves={"a": Leaf(), "b": Leaf(0)}))
