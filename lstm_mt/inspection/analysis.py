"""Summary statistics of recorded gates: what each unit of an LSTM layer is doing.

Pure functions on numpy arrays ``[T, H]`` (time steps × units) of gate values in [0, 1],
so they can be tested on hand-made gates and reused on any recording:

- `longest_runs_above` / `long_memory_units`: units whose forget gate stays near 1 for
  the longest stretch of consecutive steps, i.e. units that carry their cell state
  across the sentence (long-term memory);
- `gate_stats`: how open a gate is on average and how often it is saturated (nearly
  closed, < 0.1, or nearly open, > 0.9), the regime where a gate acts as a switch;
- `top_variance_units`: the units whose activation changes most over the sentence,
  the ones worth plotting;
- `cell_state_norm`: the size of the cell state at every step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

SATURATION_LOW = 0.1  # below: the gate is (nearly) closed
SATURATION_HIGH = 0.9  # above: the gate is (nearly) open; also the forget threshold for memory units
GATES = {"i": "input", "f": "forget", "o": "output"}  # the sigmoid gates, by their letter in the equations


@dataclass(frozen=True)
class MemorySpan:
    """A unit whose forget gate stays above the threshold from step ``start`` for ``length`` steps."""

    unit: int
    start: int
    length: int

    @property
    def end(self) -> int:
        """The last step of the span (inclusive)."""
        return self.start + self.length - 1


@dataclass(frozen=True)
class GateStats:
    """How one gate of one layer behaves over a sentence: mean value and saturation rates."""

    mean: float  # mean openness, 0 (closed) to 1 (open)
    closed: float  # fraction of activations below SATURATION_LOW
    open: float  # fraction of activations above SATURATION_HIGH

    @property
    def saturated(self) -> float:
        """Fraction of activations that are nearly 0 or nearly 1."""
        return self.closed + self.open


@dataclass(frozen=True)
class LayerSummary:
    """The statistics of one layer (one direction) for one sentence."""

    name: str
    steps: int
    units: int
    gates: dict[str, GateStats]  # by gate name: "input", "forget", "output"
    memory_units: list[MemorySpan]  # longest forget-gate spans first


def longest_runs_above(values: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Per unit of ``values`` ``[T, H]``: the length and start of its longest run of steps > ``threshold``.

    Returns two int arrays ``[H]``; a unit that never exceeds the threshold has length 0
    and start 0. Of equally long runs, the first one counts.
    """
    steps, units = values.shape
    above = values > threshold
    current = np.zeros(units, dtype=np.int64)
    best_length = np.zeros(units, dtype=np.int64)
    best_start = np.zeros(units, dtype=np.int64)
    for t in range(steps):
        current = np.where(above[t], current + 1, 0)
        longer = current > best_length
        best_length = np.where(longer, current, best_length)
        best_start = np.where(longer, t - current + 1, best_start)
    return best_length, best_start


def long_memory_units(
    forget: np.ndarray, threshold: float = SATURATION_HIGH, count: int = 5, min_length: int = 2
) -> list[MemorySpan]:
    """The ``count`` units whose forget gate ``[T, H]`` stays above ``threshold`` the longest.

    Longest span first (ties: lower unit first); spans shorter than ``min_length`` steps
    are left out, since keeping the cell state for one step says little.
    """
    lengths, starts = longest_runs_above(forget, threshold)
    order = sorted(range(len(lengths)), key=lambda unit: (-lengths[unit], unit))
    spans = [MemorySpan(unit, int(starts[unit]), int(lengths[unit])) for unit in order]
    return [span for span in spans if span.length >= min_length][:count]


def gate_stats(values: np.ndarray, low: float = SATURATION_LOW, high: float = SATURATION_HIGH) -> GateStats:
    """Mean and saturation rates (fractions ``< low`` and ``> high``) of gate values of any shape."""
    return GateStats(
        mean=float(values.mean()),
        closed=float((values < low).mean()),
        open=float((values > high).mean()),
    )


def top_variance_units(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the (at most) ``k`` units of ``values`` ``[T, H]`` that vary most over time, most first.

    Ties keep the lower unit first, so a constant recording gives units 0..k-1.
    """
    variance = values.var(axis=0)
    return np.argsort(-variance, kind="stable")[:k]


def cell_state_norm(cell: np.ndarray) -> np.ndarray:
    """The Euclidean norm of the cell state at each step: ``[T, H]`` -> ``[T]``."""
    return np.linalg.norm(cell, axis=1)


def summarize_layer(name: str, arrays: Mapping[str, np.ndarray], memory_units: int = 5) -> LayerSummary:
    """`gate_stats` of the input, forget and output gates and the `long_memory_units` of one layer.

    ``arrays`` maps ``"i"``, ``"f"``, ``"o"`` to ``[T, H]`` gate values.
    """
    steps, units = arrays["f"].shape
    return LayerSummary(
        name=name,
        steps=steps,
        units=units,
        gates={gate: gate_stats(arrays[letter]) for letter, gate in GATES.items()},
        memory_units=long_memory_units(arrays["f"], count=memory_units),
    )
