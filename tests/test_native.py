"""The compiled point-wise kernel: built where a compiler is, skipped cleanly where it is not."""

from __future__ import annotations

import shutil

import pytest
import torch

from lstm_mt.lstm import LSTM, native


@pytest.fixture
def fresh_build(monkeypatch, tmp_path):
    """Forget the loaded kernel and build into an empty cache; restore the real one afterwards."""
    monkeypatch.setenv("LSTM_MT_CACHE", str(tmp_path))
    native._library.cache_clear()
    yield tmp_path
    native._library.cache_clear()


@pytest.mark.skipif(not any(shutil.which(cc) for cc in ("cc", "gcc", "clang")), reason="no C compiler")
def test_kernel_builds_into_the_cache_and_passes_its_check(fresh_build):
    assert native.available()
    built = [p.name for p in (fresh_build / "kernels").iterdir()]
    assert len(built) == 1 and built[0].startswith("lstm_cell_") and built[0].endswith(".so"), "no temporary left"


@pytest.mark.parametrize(
    "setting",
    [{"CC": "false"}, {"CC": "", "PATH": "/nonexistent"}, {"LSTM_MT_NATIVE": "0"}],
    ids=["failing-compiler", "no-compiler", "switched-off"],
)
def test_without_a_working_compiler_the_tensor_operations_run(fresh_build, monkeypatch, setting):
    for key, value in setting.items():
        monkeypatch.setenv(key, value)
    assert not native.available()
    torch.manual_seed(0)
    reference = torch.nn.LSTM(4, 6)
    x = torch.randn(3, 2, 4)
    with torch.no_grad():
        assert torch.allclose(LSTM.from_torch(reference)(x)[0], reference(x)[0], atol=1e-5)


def test_kernel_leaves_unsupported_tensors_alone():
    """float64, rows that are not contiguous, mismatched shapes: the caller must run the tensor operations."""
    pre, c_prev = torch.randn(2, 12, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    c, h = torch.zeros_like(c_prev), torch.zeros_like(c_prev)
    assert not native.forward(pre, c_prev, c, h)
    assert c.abs().sum() == 0 and h.abs().sum() == 0
    strided = torch.randn(12, 2).t()
    assert not native.forward(strided, torch.randn(2, 3), torch.zeros(2, 3), torch.zeros(2, 3))
    # shapes that do not fit together: the C code would read past the end, so nothing runs
    assert not native.forward(torch.randn(2, 11), torch.randn(2, 3), torch.zeros(2, 3), torch.zeros(2, 3))
    assert not native.forward(torch.randn(3, 12), torch.randn(2, 3), torch.zeros(2, 3), torch.zeros(2, 3))


@pytest.mark.skipif(not native.available(), reason="compiled kernel not built here")
def test_kernel_propagates_nan_and_saturates_like_torch():
    pre = torch.tensor([[float("nan"), 0.0, 0.0, 0.0], [200.0, -200.0, 200.0, 200.0], [-200.0, 200.0, -200.0, -200.0]])
    c_prev = torch.tensor([[1.0], [1.0], [1.0]])
    c, h = torch.empty_like(c_prev), torch.empty_like(c_prev)
    assert native.forward(pre, c_prev, c, h)
    i, f, g, o = pre.chunk(4, dim=1)
    c_ref = f.sigmoid() * c_prev + i.sigmoid() * g.tanh()
    h_ref = o.sigmoid() * c_ref.tanh()
    assert torch.isnan(c[0]) and torch.isnan(h[0])
    assert torch.allclose(c[1:], c_ref[1:], atol=1e-6) and torch.allclose(h[1:], h_ref[1:], atol=1e-6)
