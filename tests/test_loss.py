"""Tests for lstm_mt.loss: label-smoothed cross-entropy against torch's (padding ignored), and the fused
generator loss against the plain one on full logits.

The reference for the fused loss is `label_smoothed_nll` over ``generator(hidden)`` with autograd's
gradients (itself checked against ``F.cross_entropy`` by the first test). Tolerances: float64 1e-10,
float32 1e-5 (relative), bf16 autocast as stated at the test.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lstm_mt import loss as loss_module
from lstm_mt.loss import generator_loss, label_smoothed_nll
from lstm_mt.vocab import PAD_ID

torch.set_num_threads(1)


def test_label_smoothed_loss_matches_torch_and_ignores_padding():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11)
    targets = torch.randint(4, 11, (3, 5))
    targets[0, 3:] = 0
    targets[2, 1:] = 0
    for smoothing in (0.0, 0.1, 0.3):
        loss, nll = label_smoothed_nll(logits, targets, smoothing)
        expected = F.cross_entropy(
            logits.flatten(0, 1), targets.flatten(), ignore_index=0, label_smoothing=smoothing, reduction="sum"
        )
        torch.testing.assert_close(loss, expected)
        torch.testing.assert_close(
            nll, F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=0, reduction="sum")
        )


def problem(vocab: int = 50, dim: int = 16, bias: bool = True, dtype=torch.float32, seed: int = 0):
    """A generator, h̃ ``[3, 7, dim]`` that needs gradients and targets with padding in two rows."""
    torch.manual_seed(seed)
    generator = nn.Linear(dim, vocab, bias=bias).to(dtype)
    with torch.no_grad():
        generator.weight.mul_(4.0)  # peaked softmaxes, not near-uniform ones
    hidden = torch.randn(3, 7, dim, dtype=dtype, requires_grad=True)
    targets = torch.randint(4, vocab, (3, 7))
    targets[0, 5:] = PAD_ID
    targets[2, 2:] = PAD_ID
    return generator, hidden, targets


def losses_and_grads(fn, generator, hidden, targets, smoothing, autocast=False):
    """Loss and NLL sums, then the gradients of ``loss`` for hidden, weight and bias."""
    hidden.grad = None
    generator.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        result = fn(generator, hidden, targets, smoothing)
    (result.loss * 0.37).backward()  # an upstream factor, as training's 1/tokens
    bias_grad = None if generator.bias is None else generator.bias.grad
    return result.loss.detach(), result.nll.detach(), hidden.grad, generator.weight.grad, bias_grad


def fused(generator, hidden, targets, smoothing):
    return generator_loss(hidden, generator, targets, smoothing)


def reference(generator, hidden, targets, smoothing):
    return label_smoothed_nll(generator(hidden), targets, smoothing)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("chunk_rows", [1, 4, 1000])
def test_fused_loss_and_gradients_equal_the_reference(monkeypatch, dtype, tolerance, smoothing, bias, chunk_rows):
    generator, hidden, targets = problem(bias=bias, dtype=dtype)
    monkeypatch.setattr(loss_module, "CHUNK_ELEMENTS", chunk_rows * 50)  # chunks of chunk_rows tokens
    got = losses_and_grads(fused, generator, hidden, targets, smoothing)
    expected = losses_and_grads(reference, generator, hidden, targets, smoothing)
    for name, g, e in zip(("loss", "nll", "d hidden", "d weight", "d bias"), got, expected):
        if e is None:
            assert g is None, name
            continue
        torch.testing.assert_close(g.to(e.dtype), e, rtol=tolerance, atol=tolerance * e.abs().max().item(), msg=name)
    assert got[2].dtype == hidden.dtype and got[3].dtype == generator.weight.dtype
    assert torch.all(got[2][targets == PAD_ID] == 0)  # padding gets no gradient


def test_fused_loss_under_bf16_autocast_is_the_reference_within_bf16_rounding(monkeypatch):
    """Same bf16 products, float32 softmax: the sums agree to 1e-3 relative; the gradients to 2 % of their
    largest entry (bf16 keeps 8 bits; the reference rounds the weight gradient once, the fused path per chunk)."""
    generator, hidden, targets = problem(vocab=300, dim=32)
    monkeypatch.setattr(loss_module, "CHUNK_ELEMENTS", 4 * 300)
    got = losses_and_grads(fused, generator, hidden, targets, 0.1, autocast=True)
    expected = losses_and_grads(reference, generator, hidden, targets, 0.1, autocast=True)
    torch.testing.assert_close(got[0], expected[0], rtol=1e-3, atol=0)
    torch.testing.assert_close(got[1], expected[1], rtol=1e-3, atol=0)
    for g, e in zip(got[2:], expected[2:]):
        assert g.dtype == e.dtype
        torch.testing.assert_close(g.float(), e.float(), rtol=0, atol=0.02 * e.abs().max().item())
    fp32 = losses_and_grads(reference, generator, hidden, targets, 0.1)
    torch.testing.assert_close(got[0], fp32[0], rtol=2e-2, atol=0)  # and near the float32 loss


def test_without_gradients_only_the_sums_are_computed():
    generator, hidden, targets = problem()
    with torch.no_grad():
        got = generator_loss(hidden, generator, targets, 0.0)
        expected = label_smoothed_nll(generator(hidden), targets, 0.0)
    assert not got.loss.requires_grad
    torch.testing.assert_close(got.loss, expected.loss)
    torch.testing.assert_close(got.nll, got.loss)


def test_all_padding_gives_zero_loss_and_zero_gradients():
    generator, hidden, targets = problem()
    result = generator_loss(hidden, generator, torch.full_like(targets, PAD_ID), 0.1)
    result.loss.backward()
    assert result.loss.item() == 0.0 and result.nll.item() == 0.0
    assert torch.all(hidden.grad == 0) and torch.all(generator.weight.grad == 0)
