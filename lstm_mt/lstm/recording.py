"""Gate recording: what every LSTM cell computed (gates, C, h) while a `GateRecorder` is active.

`lstm-mt inspect` reads these records. The fast path keeps no gate values it does not need,
so a layer run's gates are recomputed here from its inputs and states, with `lstm_step`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lstm_mt.lstm.equations import GateActivations, lstm_step, preactivations
from lstm_mt.lstm.padding import reverse_within_lengths
from lstm_mt.lstm.variants import CellNoise, VariantWeights, variant_step


@dataclass
class GateRecord:
    """What one LSTM cell computed, recorded by `GateRecorder`.

    For a whole-sequence layer run (encoder): tensors ``[T, B, H]`` in the sentence's own
    time order (also for the backward direction), batch rows in the caller's order,
    padded positions zero; ``lengths`` gives the real lengths. For a single step
    (decoder): ``[B, H]`` and ``lengths`` None. ``g`` is the candidate C̃.
    """

    cell: VariantWeights
    reverse: bool
    i: Tensor
    f: Tensor
    g: Tensor
    o: Tensor
    c: Tensor
    h: Tensor
    lengths: Tensor | None = None


class GateRecorder:
    """Records the gates, cell states and outputs of every LSTM call made while it is active.

        with GateRecorder() as recorder:
            model(src, src_lengths, tgt_in)
        recorder.records          # GateRecord list, in call order

    When no recorder is active the fast path pays one ``is None`` check per call: no
    extra work or memory in training and decoding.
    """

    def __init__(self) -> None:
        self.records: list[GateRecord] = []

    def __enter__(self) -> GateRecorder:
        global _ACTIVE
        if _ACTIVE is not None:
            raise RuntimeError("a GateRecorder is already active")
        _ACTIVE = self
        return self

    def __exit__(self, *exc_info: object) -> None:
        global _ACTIVE
        _ACTIVE = None

    def record_step(self, cell: VariantWeights, gates: GateActivations, c: Tensor, h: Tensor) -> None:
        """Keep one step's gates and states (detached)."""
        self.records.append(GateRecord(cell, False, *(t.detach() for t in (*gates, c, h))))

    @torch.no_grad()
    def record_layer(
        self,
        cell: VariantWeights,
        x: Tensor,
        h0: Tensor,
        c0: Tensor,
        hs: Tensor,
        cs: Tensor,
        lengths: Tensor | None,
        reverse: bool,
        unsort: Tensor | None,
        noise: CellNoise | None = None,
    ) -> None:
        """Recompute a layer run's gates from its inputs and states (one product) and keep them.

        ``x``, ``hs``, ``cs`` are time-major and length-sorted, as the recurrence saw them
        (reversed within lengths for the backward direction); ``unsort`` puts the rows back
        in the caller's order. ``noise``: a variant cell's masks and zoneout of the run.
        """
        h_prev = torch.cat([h0.unsqueeze(0), hs[:-1]])
        if cell.variant.is_plain():
            _, _, gates = lstm_step(preactivations(cell, x, h_prev).flatten(0, 1), cs.flatten(0, 1))
        else:  # all steps at once: each step's gates depend on its own h_prev and C_prev only
            _, _, gates = variant_step(cell, x, h_prev, torch.cat([c0.unsqueeze(0), cs[:-1]]), noise)
        tensors = [t.reshape(hs.shape) for t in gates] + [cs, hs]
        if lengths is not None:
            real = (torch.arange(hs.shape[0]).unsqueeze(1) < lengths.unsqueeze(0)).unsqueeze(2).to(hs.device)
            tensors = [t * real for t in tensors]
        if reverse:
            tensors = [reverse_within_lengths(t, lengths) for t in tensors]
        if unsort is not None:
            tensors = [t.index_select(1, unsort) for t in tensors]
            if lengths is not None:
                lengths = lengths.index_select(0, unsort.cpu())
        i, f, g, o, c, h = (t.detach() for t in tensors)
        self.records.append(GateRecord(cell, reverse, i, f, g, o, c, h, lengths=lengths))


_ACTIVE: GateRecorder | None = None


def active_recorder() -> GateRecorder | None:
    """The `GateRecorder` now active, or None (the common case: nothing to record)."""
    return _ACTIVE
