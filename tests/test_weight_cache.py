"""`PackedWeights`: weights packed for a kernel library, kept until they change."""

from __future__ import annotations

import torch

from lstm_mt.lstm.weight_cache import PackedWeights


def test_packed_weights_are_repacked_only_when_a_weight_changes():
    """Parameters are packed once per change (version counter, storage); temporaries at every call."""
    packs: list[torch.Tensor] = []
    packed = PackedWeights(lambda joined: packs.append(joined) or joined.clone())
    a, b = torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(3, 4))
    first = packed(a, b)
    assert torch.equal(first, torch.cat([a, b], 1)) and packed(a, b) is first and len(packs) == 1
    with torch.no_grad():
        a.add_(1.0)
    assert torch.equal(packed(a, b), torch.cat([a, b], 1)) and len(packs) == 2
    a.data = torch.zeros(3, 2)  # new storage
    assert torch.equal(packed(a, b)[:, :2], torch.zeros(3, 2)) and len(packs) == 3
    temporary = torch.randn(3, 2)
    packed(temporary)
    packed(temporary)
    assert len(packs) == 5
