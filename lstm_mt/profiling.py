"""Where the time of a training update goes: torch.profiler events sorted into categories.

`Trainer.update` marks its phases with `torch.profiler.record_function` labels (`FORWARD`,
`BACKWARD`, `OPTIMIZER`; a caller may add `DATA` around fetching batches). Each profiled
operation's self CPU time then goes to one category, by its name and the names of the
operations and labels it ran inside (see `categorize`); wall time inside no operation (Python
between operations) is reported as its own category.

    python scripts/bench_train.py --profile --precision bf16 +experiment=multi30k_de_en
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

DATA, FORWARD, BACKWARD, OPTIMIZER = "lstm_mt.data", "lstm_mt.forward", "lstm_mt.backward", "lstm_mt.optimizer"

PRODUCTS = "products"
POINTWISE_LSTM = "point-wise LSTM"
CASTS = "casts"
OUTPUT_LAYER = "output layer softmax/CE"
BOOKKEEPING = "backward bookkeeping"
OTHER = "other ops"
OPTIMIZER_STEP = "optimizer"
DATA_LOADING = "data"
UNTRACED = "Python between ops"
CATEGORIES = (
    PRODUCTS,
    POINTWISE_LSTM,
    CASTS,
    OUTPUT_LAYER,
    BOOKKEEPING,
    OTHER,
    OPTIMIZER_STEP,
    DATA_LOADING,
    UNTRACED,
)
DESCRIPTIONS = {
    PRODUCTS: "matrix products (mm, addmm, bmm, oneDNN linear), with their own copies",
    POINTWISE_LSTM: "the cell's gates, C and h and their gradients (C kernel or tensor ops), with Python",
    CASTS: "dtype conversions (autocast's weight and activation casts, forward and backward)",
    OUTPUT_LAYER: "log-softmax / cross-entropy and its gradient (fused loss: all but its products)",
    BOOKKEEPING: "autograd engine, gradient accumulation, zero fills and copies in backward",
    OTHER: "attention, embeddings, dropout, concatenation, ... forward and backward",
    OPTIMIZER_STEP: "zero_grad, gradient clipping, Adam step",
    DATA_LOADING: "batching and moving batches to the device",
    UNTRACED: "wall time inside no profiled operation (Python, the profiler's own)",
}

_PRODUCT_OPS = {
    "aten::mm",
    "aten::addmm",
    "aten::addmm_",
    "aten::bmm",
    "aten::baddbmm",
    "aten::_mkldnn_linear",
    "mkldnn::_linear_pointwise",
    "mkldnn::_linear_pointwise.binary",
}
_CAST_OPS = {"aten::_to_copy", "aten::to", "aten::_autocast_to_reduced_precision"}
_LSTM_SCOPES = ("CellStep", "LayerRecurrence", "VariantCellStep", "VariantRecurrence", "BlockNorm")
_LOSS_SCOPES = ("GeneratorLoss",)
_LOSS_OPS = (
    "aten::log_softmax",
    "aten::_log_softmax",
    "aten::_log_softmax_backward_data",
    "aten::logsumexp",
    "aten::gather",
    "aten::scatter_add_",
    "aten::masked_select",
    "aten::nll_loss",
    "LogSoftmaxBackward",
    "GatherBackward",
    "MaskedSelectBackward",
)
_BOOKKEEPING_OPS = (
    "aten::add_",
    "aten::fill_",
    "aten::zero_",
    "aten::zeros",
    "aten::zeros_like",
    "aten::new_zeros",
    "aten::copy_",
    "aten::clone",
    "aten::empty",
    "aten::empty_like",
    "aten::empty_strided",
    "AccumulateGrad",
    "torch::autograd::AccumulateGrad",
)


def categorize(name: str, ancestors: Sequence[str]) -> str:
    """The category of an operation's self time, from its ``name`` and the enclosing names (innermost first)."""
    scopes = (name, *ancestors)
    if name in (FORWARD, BACKWARD):  # a phase's own time: Python between its operations
        return UNTRACED
    if any(scope == DATA for scope in scopes):
        return DATA_LOADING
    if any(scope == OPTIMIZER or scope.startswith("Optimizer.") for scope in scopes):
        return OPTIMIZER_STEP
    if any(scope in _PRODUCT_OPS for scope in scopes):
        return PRODUCTS
    if any(scope in _CAST_OPS or scope.startswith("ToCopyBackward") for scope in scopes[:3]):
        return CASTS
    if any(scope.startswith(_LOSS_SCOPES) or scope.startswith(_LOSS_OPS) for scope in scopes):
        return OUTPUT_LAYER
    if any(scope.startswith(_LSTM_SCOPES) for scope in scopes):
        return POINTWISE_LSTM
    in_backward = any(scope == BACKWARD or scope.startswith("autograd::engine::") for scope in scopes)
    if in_backward and (name.startswith("autograd::engine::") or name.startswith(_BOOKKEEPING_OPS)):
        return BOOKKEEPING
    return OTHER


@dataclass
class Breakdown:
    """Seconds per category (`CATEGORIES` order) over ``updates`` profiled updates of ``wall`` seconds in all."""

    seconds: dict[str, float]
    wall: float
    updates: int
    top_ops: list[tuple[str, str, float]]  # (operation, category, seconds), largest first

    def rows(self) -> list[list[str]]:
        """Table rows: category, ms per update, share of the wall time, what it holds."""
        return [
            [
                category,
                f"{1e3 * self.seconds[category] / self.updates:.0f}",
                f"{100 * self.seconds[category] / self.wall:.1f} %",
                DESCRIPTIONS[category],
            ]
            for category in CATEGORIES
        ]


def breakdown(events: Iterable[Any], wall: float, updates: int, top: int = 12) -> Breakdown:
    """Sort the self CPU time of profiler ``events`` (``prof.events()``) into categories.

    ``wall`` is the measured time of the profiled updates; what no operation covers goes to `UNTRACED`.
    """
    seconds = dict.fromkeys(CATEGORIES, 0.0)
    per_op: dict[tuple[str, str], float] = {}
    for event in events:
        if getattr(event, "device_type", None) is not None and str(event.device_type) != "DeviceType.CPU":
            continue
        category = categorize(event.name, _ancestors(event))
        spent = event.self_cpu_time_total / 1e6
        seconds[category] += spent
        per_op[(event.name, category)] = per_op.get((event.name, category), 0.0) + spent
    seconds[UNTRACED] += max(0.0, wall - sum(seconds.values()))
    largest = sorted(per_op.items(), key=lambda item: -item[1])[:top]
    return Breakdown(seconds, wall, updates, [(name, category, spent) for (name, category), spent in largest])


def _ancestors(event: Any) -> list[str]:
    names = []
    parent = event.cpu_parent
    while parent is not None:
        names.append(parent.name)
        parent = parent.cpu_parent
    return names


def product_flop_counter() -> Any:
    """A `torch.utils.flop_counter.FlopCounterMode` (not displayed) that also counts the in-place products
    (``addmm_``, ``baddbmm_``), which the LSTM's backward accumulates with and torch's table leaves out."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    def in_place(self_shape: Any, a_shape: Any, b_shape: Any, *args: Any, **kwargs: Any) -> int:
        *batch, m, k = a_shape
        n = b_shape[-1]
        return 2 * m * n * k * (batch[0] if batch else 1)

    aten = torch.ops.aten
    return FlopCounterMode(display=False, custom_mapping={aten.addmm_: in_place, aten.baddbmm_: in_place})


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table with right-aligned columns."""
    table = [header, *rows]
    widths = [max(len(line[k]) for line in table) for k in range(len(header))]
    lines = []
    for i, line in enumerate(table):
        lines.append("| " + " | ".join(cell.rjust(w) for cell, w in zip(line, widths)) + " |")
        if i == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
