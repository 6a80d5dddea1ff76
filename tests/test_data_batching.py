"""Tests for lstm_mt.data.batching: padded batches, token-bounded seeded samplers (resume, shards), inference order."""

from __future__ import annotations

import pytest
import torch

from lstm_mt.data import (
    DataConfig,
    EncodedDataset,
    FilterReport,
    InferenceBatchSampler,
    PreparedData,
    TokenBatchSampler,
    collate,
    collate_source,
)
from lstm_mt.errors import LstmMtError

pytestmark = pytest.mark.usefixtures("offline")  # no test here may use the network or $LSTM_MT_DATA_MIRROR


def test_collate_layout():
    batch = collate([[5, 6], [7]], [[8], [9, 10, 11]], [4, 2])
    assert batch.src.tolist() == [[5, 6, 3], [7, 3, 0]]
    assert batch.src_lengths.tolist() == [3, 2]
    assert batch.tgt_in.tolist() == [[2, 8, 0, 0], [2, 9, 10, 11]]
    assert batch.tgt_out.tolist() == [[8, 3, 0, 0], [9, 10, 11, 3]]
    assert batch.indices == [4, 2] and batch.num_tgt_tokens == 6
    moved = batch.to("meta")
    assert moved.src.device.type == "meta" and moved.src_lengths.device.type == "meta"
    assert batch.src.device.type == "cpu"
    source_only = collate_source([[5, 6], [7]], [0, 1])
    assert source_only.src.tolist() == batch.src.tolist() and source_only.tgt_in.shape == (2, 0)
    assert source_only.num_tgt_tokens == 0


def random_lengths(n: int, seed: int = 0) -> tuple[list[int], list[int]]:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(1, 60, (n,), generator=g)
    tgt = (src.float() * (0.7 + 0.6 * torch.rand(n, generator=g))).long().clamp(min=1)
    return src.tolist(), tgt.tolist()


def test_sampler_batches_respect_max_tokens_and_cover_each_epoch_once():
    src, tgt = random_lengths(5000)
    sampler = TokenBatchSampler(src, tgt, max_tokens=1000, seed=1)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        seen = []
        real = padded = 0
        for indices in sampler:
            width = max(max(src[i], tgt[i]) + 1 for i in indices)
            assert len(indices) * width <= 1000
            seen += indices
            real += sum(max(src[i], tgt[i]) + 1 for i in indices)
            padded += len(indices) * width
        assert sorted(seen) == list(range(5000))
        assert real / padded > 0.9, "length bucketing should keep padding low"


def test_same_seed_same_batches_and_epochs_differ():
    src, tgt = random_lengths(3000)
    a, b = (TokenBatchSampler(src, tgt, 800, seed=5) for _ in range(2))
    assert a.batches_for_epoch(0) == b.batches_for_epoch(0)
    assert a.batches_for_epoch(3) == b.batches_for_epoch(3)
    assert a.batches_for_epoch(0) != a.batches_for_epoch(1)
    assert TokenBatchSampler(src, tgt, 800, seed=6).batches_for_epoch(0) != a.batches_for_epoch(0)
    assert list(a) == a.batches_for_epoch(0) and a.epoch == 1, "iterating an epoch moves to the next"


def test_resumed_sampler_continues_exactly():
    src, tgt = random_lengths(2000)
    reference = TokenBatchSampler(src, tgt, 700, seed=2)
    expected = list(reference) + list(reference)  # epochs 0 and 1
    first = TokenBatchSampler(src, tgt, 700, seed=2)
    taken = []
    for indices in first:
        taken.append(indices)
        if len(taken) == 17:
            break
    state = first.state_dict()
    assert state["epoch"] == 0 and state["position"] == 17
    resumed = TokenBatchSampler(src, tgt, 700, seed=2)
    resumed.load_state_dict(state)
    resumed.set_epoch(0)  # a training loop calls this at the start of the epoch: must not restart
    taken += list(resumed)
    resumed.set_epoch(1)
    taken += list(resumed)
    assert taken == expected


def test_resume_with_other_settings_is_refused():
    src, tgt = random_lengths(100)
    state = TokenBatchSampler(src, tgt, 500, seed=2).state_dict()
    with pytest.raises(LstmMtError, match="checkpoint has max_tokens=500, now 600"):
        TokenBatchSampler(src, tgt, 600, seed=2).load_state_dict(state)
    with pytest.raises(LstmMtError, match="checkpoint has num_examples=100, now 99"):
        TokenBatchSampler(src[:99], tgt[:99], 500, seed=2).load_state_dict(state)


def test_unshuffled_batches_are_length_sorted_and_fixed():
    src, tgt = random_lengths(500)
    sampler = TokenBatchSampler(src, tgt, 600, shuffle=False)
    batches = sampler.batches_for_epoch(0)
    assert batches == sampler.batches_for_epoch(7)
    widths = [max(src[i], tgt[i]) for b in batches for i in b]
    assert widths == sorted(widths)


def test_shards_split_batches_evenly_and_disjointly():
    src, tgt = random_lengths(1000)
    shards = [TokenBatchSampler(src, tgt, 500, seed=1, num_shards=2, shard=k) for k in range(2)]
    b0, b1 = (s.batches_for_epoch(0) for s in shards)
    assert len(b0) == len(b1) > 0
    assert not {i for b in b0 for i in b} & {i for b in b1 for i in b}


def test_max_tokens_below_longest_example_is_an_error():
    with pytest.raises(LstmMtError, match=r"max_tokens=50 is smaller than the longest example \(61 padded"):
        TokenBatchSampler([10, 60], [5, 20], max_tokens=50)


def test_inference_batches_are_longest_first_and_order_is_restored():
    src, _ = random_lengths(300)
    sampler = InferenceBatchSampler(src, max_tokens=400, max_sentences=16)
    flat = [i for b in sampler for i in b]
    assert sorted(flat) == list(range(300))
    assert [src[i] for i in flat] == sorted(src, reverse=True)
    assert all(len(b) <= 16 and len(b) * (max(src[i] for i in b) + 1) <= 400 for b in sampler)
    assert sampler.restore_order([f"out{i}" for i in flat]) == [f"out{i}" for i in range(300)]


def test_a_long_validation_line_names_its_line_and_not_data_max_len():
    """Validation is never filtered, so the advice for a too-long valid pair is train.max_tokens, with its line."""
    lines = ["kurz", "ein Satz", "lang " * 40]
    valid = EncodedDataset(
        "valid",
        [[5] * len(line.split()) for line in lines],
        [[6] * len(line.split()) for line in lines],
        lines,
        lines,
        line_numbers=[1, 2, 3],
    )
    data = PreparedData(DataConfig(), None, valid, valid, [], FilterReport(3, 0, 0, 0, 3), {}, 0.0)  # type: ignore[arg-type]
    with pytest.raises(LstmMtError) as error:
        data.valid_batches(20)
    message = str(error.value)
    assert "line 3" in message and "train.max_tokens" in message
    assert "lower data.max_len" not in message
    with pytest.raises(LstmMtError, match="lower data.max_len"):
        data.train_batches(20)
