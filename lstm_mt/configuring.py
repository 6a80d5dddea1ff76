"""Typed configs: plain values (a dict or an OmegaConf DictConfig) checked against a dataclass schema.

Every command reads its options, and every checkpoint its saved ``config.*`` sections, through
`typed_config`, so a typo, a wrongly typed value or a missing value is one `LstmMtError` that
names the key, wherever it came from (command line, YAML file, checkpoint).
"""

from __future__ import annotations

from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lstm_mt.errors import LstmMtError
from lstm_mt.ranges import check_ranges

__all__ = ["typed_config"]

T = TypeVar("T")


def typed_config(schema: type[T], values: Any, what: str, key_prefix: str = "") -> T:
    """``values`` checked against the dataclass ``schema`` and returned as an instance of it.

    An instance of ``schema`` is returned as is. Interpolations are resolved first. Hydra
    refuses unknown keys itself, except those added with ``+key=value``; merging into a fresh
    schema refuses those too. Unknown keys, wrong types and missing values are an `LstmMtError`
    like ``<what> key train.lr: Value 'fast' of type 'str' could not be converted to Float``.
    Every number must lie in the range its field declares (`lstm_mt.ranges`); one outside is an
    `LstmMtError` like ``<key_prefix>train.lr=inf: must be a finite number > 0``.
    """
    if not isinstance(values, schema):
        values = _merged_into_schema(schema, values, what)
    check_ranges(values, key_prefix)
    return values


def _merged_into_schema(schema: type[T], values: Any, what: str) -> T:
    try:
        if isinstance(values, DictConfig):
            _check_nothing_missing(values, what)
            values = OmegaConf.to_container(values, resolve=True)
        merged = OmegaConf.merge(OmegaConf.structured(schema), values or {})
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as error:
        reason = str(error).strip().splitlines()[0]
        key = getattr(error, "full_key", None)
        raise LstmMtError(f"{what} key {key}: {reason}" if key else f"{what}: {reason}") from None


def _check_nothing_missing(values: DictConfig, what: str) -> None:
    """Top-level ``???`` values as one message listing them all, with how to set the first."""
    missing = sorted(str(key) for key in values if OmegaConf.is_missing(values, key))
    if missing:
        raise LstmMtError(f"{what}: {', '.join(missing)} must be set (e.g. {missing[0]}=...)")
