"""Weights repacked into a kernel library's own layout, kept while the weights do not change.

A recurrence multiplies the same weights at every step, and inference runs many recurrences with
the same weights: packing them (oneDNN's layout in `lstm_mt.lstm.onednn`, MKL's in
`lstm_mt.lstm.mkl`) once per change, not once per call, is what makes the packed products pay.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch import Tensor, nn


class PackedWeights:
    """``packed(*weights)``: the weights joined side by side (``[W_1, W_2, ...]``) and packed by ``pack``.

    Reused until a weight changes: when its storage or its version counter (bumped by every
    in-place update: optimizer steps, ``load_state_dict``) differs. Updates through
    ``weight.data`` bypass the version counter and are not supported while the copy is cached.
    Weights that are not parameters are temporaries and are packed at every call.
    """

    def __init__(self, pack: Callable[[Tensor], Tensor]) -> None:
        self._pack = pack
        self._entries: dict[tuple[int, ...], tuple[tuple, Tensor]] = {}  # ids -> (packed from what, packed)

    def __call__(self, *weights: Tensor) -> Tensor:
        if not all(isinstance(w, nn.Parameter) for w in weights):
            return self._joined_and_packed(weights)
        try:
            source = tuple((w.data_ptr(), w._version, tuple(w.shape)) for w in weights)
        except RuntimeError:  # inference tensors have no version counter: pack every time
            return self._joined_and_packed(weights)
        key = tuple(id(w) for w in weights)
        entry = self._entries.get(key)
        if entry is None or entry[0] != source:
            if entry is None:
                for weight in weights:
                    weakref.finalize(weight, self._entries.pop, key, None)
            entry = (source, self._joined_and_packed(weights))
            self._entries[key] = entry
        return entry[1]

    def _joined_and_packed(self, weights: tuple[Tensor, ...]) -> Tensor:
        joined = weights[0] if len(weights) == 1 else torch.cat(weights, dim=1)
        return self._pack(joined.detach().contiguous())
