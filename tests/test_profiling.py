"""Sorting profiled time into categories: known answers for `categorize`, and a real profile of a
tiny bf16 training step whose categories add up to its wall time."""

import time

import pytest
import torch
from torch.profiler import ProfilerActivity, profile, record_function

from lstm_mt import profiling as p
from lstm_mt.loss import TeacherForcedLoss
from lstm_mt.model import ModelConfig, build_model

torch.set_num_threads(1)

ENGINE = "autograd::engine::evaluate_function: "


@pytest.mark.parametrize(
    "name, ancestors, category",
    [
        ("aten::mm", ["CellStepBackward", ENGINE + "CellStepBackward", p.BACKWARD], p.PRODUCTS),
        ("aten::copy_", ["aten::addmm", "aten::linear", "CellStep", p.FORWARD], p.PRODUCTS),
        ("aten::mm", ["GeneratorLoss", p.FORWARD], p.PRODUCTS),
        ("aten::copy_", ["aten::_to_copy", "aten::to", "ToCopyBackward0", ENGINE + "ToCopyBackward0"], p.CASTS),
        ("aten::copy_", ["aten::_to_copy", "aten::to", "CellStep", p.FORWARD], p.CASTS),
        ("aten::add_", [ENGINE + "ToCopyBackward0", p.BACKWARD], p.BOOKKEEPING),
        ("aten::fill_", ["aten::zero_", "aten::zeros", "aten::embedding_dense_backward", p.BACKWARD], p.BOOKKEEPING),
        (ENGINE + "MmBackward0", [p.BACKWARD], p.BOOKKEEPING),
        ("aten::sigmoid", ["LayerRecurrence", p.FORWARD], p.POINTWISE_LSTM),
        ("aten::zero_", ["aten::new_zeros", "LayerRecurrenceBackward", p.BACKWARD], p.POINTWISE_LSTM),
        ("aten::exp_", ["GeneratorLoss", p.FORWARD], p.OUTPUT_LAYER),
        ("aten::_log_softmax_backward_data", ["LogSoftmaxBackward0", p.BACKWARD], p.OUTPUT_LAYER),
        ("aten::sqrt", ["Optimizer.step#Adam.step", p.OPTIMIZER], p.OPTIMIZER_STEP),
        ("aten::_foreach_norm", [p.OPTIMIZER], p.OPTIMIZER_STEP),
        ("aten::tanh", [p.FORWARD], p.OTHER),
        ("aten::tanh_backward", ["TanhBackward0", ENGINE + "TanhBackward0", p.BACKWARD], p.OTHER),
        ("aten::index_select", [p.DATA], p.DATA_LOADING),
        (p.FORWARD, [], p.UNTRACED),
    ],
)
def test_operations_land_in_their_category(name, ancestors, category):
    assert p.categorize(name, ancestors) == category


def test_a_profiled_bf16_training_step_adds_up_to_its_wall_time():
    torch.manual_seed(0)
    config = ModelConfig(emb_size=16, encoder_hidden=16, decoder_hidden=32, attentional_size=16, attention_hidden=16)
    model = build_model(config, 40, 40)
    objective = TeacherForcedLoss(model, smoothing=0.1)
    optimizer = torch.optim.Adam(model.parameters())
    src, tgt = torch.randint(4, 40, (8, 9)), torch.randint(4, 40, (8, 7))
    lengths = torch.full((8,), 9)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16), record_function(p.FORWARD):
            loss = objective(src, lengths, tgt, tgt)
        with record_function(p.BACKWARD):
            loss.loss.backward()
        with record_function(p.OPTIMIZER):
            optimizer.step()
        wall = time.perf_counter() - start
    result = p.breakdown(prof.events(), wall, updates=1)
    assert sum(result.seconds.values()) == pytest.approx(wall, rel=1e-6)
    for category in (p.PRODUCTS, p.POINTWISE_LSTM, p.CASTS, p.OUTPUT_LAYER, p.OPTIMIZER_STEP, p.BOOKKEEPING):
        assert result.seconds[category] > 0, category
    assert result.seconds[p.DATA_LOADING] == 0
    assert [row[0] for row in result.rows()] == list(p.CATEGORIES)
