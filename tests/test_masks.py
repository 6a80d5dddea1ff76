"""Dropout and zoneout masks (`lstm_mt.lstm.masks`): the compiled hash, torch's draws in 16-bit lanes, dropout."""

from __future__ import annotations

import pytest
import torch

from lstm_mt.lstm import masks, native


@pytest.fixture(params=["compiled", "lanes"])
def fill(request, monkeypatch):
    """Run a test with the compiled fill and with torch's generator in 16-bit lanes."""
    if request.param == "lanes":
        monkeypatch.setattr(native, "bernoulli16_fill", lambda *args: False)
    elif not native.available():
        pytest.skip("no compiled kernel on this machine")
    return request.param


@pytest.mark.parametrize("p", [0.02, 0.5, 0.97])
def test_bernoulli_is_p_and_repeats_with_the_seed(p, fill):
    """0s and 1s only, a fraction p of 1s within 5 standard deviations over 200k units, float32 and float64;
    the same seed draws the same mask, the next draw another."""
    for dtype in (torch.float32, torch.float64):
        like = torch.empty(0, dtype=dtype)
        torch.manual_seed(3)
        first, second = masks.bernoulli(p, (400, 500), like), masks.bernoulli(p, (400, 500), like)
        torch.manual_seed(3)
        again = masks.bernoulli(p, (400, 500), like)
        assert first.dtype == dtype and first.shape == (400, 500)
        assert torch.equal(first, first.clamp(0, 1).round())
        assert abs(first.mean().item() - p) < 5 * (p * (1 - p) / first.numel()) ** 0.5
        assert torch.equal(first, again) and not torch.equal(first, second)


def test_dropout_zeroes_p_and_scales_the_rest(fill):
    """Training: a fraction p of zeros, the rest x/(1 − p), and the gradient the same mask; evaluation and
    p = 0 return x itself; bf16 stays bf16."""
    p = 0.3
    x = torch.rand(300, 400).add_(0.5).requires_grad_()
    y = masks.dropout(x, p)
    kept = y != 0
    assert abs(1 - kept.double().mean().item() - p) < 0.01
    assert torch.allclose(y[kept], x[kept] / (1 - p))
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(grad, kept / (1 - p))
    assert masks.dropout(x, p, training=False) is x and masks.dropout(x, 0.0) is x
    assert masks.dropout(x.detach().bfloat16(), p).dtype == torch.bfloat16
    layer = masks.Dropout(p)
    assert layer.eval()(x) is x and isinstance(layer, torch.nn.Dropout) and layer.state_dict() == {}


def test_compiled_fill_is_splitmix64_in_16_bit_lanes():
    """The compiled fill against the hash written out in Python (splitmix64's finalizer of seed + word
    index, four 16-bit lanes per word, lowest first), over 4 full words and a partial one."""
    if not native.available():
        pytest.skip("no compiled kernel on this machine")
    mask64 = 2**64 - 1

    def mix(seed: int, word: int) -> int:
        z = (seed + (word + 1) * 0x9E3779B97F4A7C15) & mask64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask64
        return z ^ (z >> 31)

    seed, p = 2**63 + 12345, 0.4
    threshold = round(p * 2**16)
    expected = [float((mix(seed, i // 4) >> (16 * (i % 4))) & 0xFFFF < threshold) for i in range(18)]
    out = torch.empty(18)
    assert native.bernoulli16_fill(out, p, seed)
    assert out.tolist() == expected
    assert 0 < sum(expected) < 18
