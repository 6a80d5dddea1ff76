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


@pytest.mark.skipif(not native.available(), reason="compiled kernel not built here")
def test_variant_kernels_leave_unsupported_tensors_alone():
    """The variant step and the whole-buffer kernels refuse what the C code would misread: nothing is written."""
    rows, H = 3, 4
    fields = {
        "peepholes": torch.zeros(3 * H),
        "pre": torch.randn(rows, 4 * H),
        **{name: torch.randn(rows, H) for name in ("c_prev", "h_prev")},
        **{name: torch.zeros(1, H) for name in ("keep_c", "keep_h")},
        **{name: torch.zeros(rows, H) for name in ("c_tilde", "c", "h")},
    }
    assert native.variant_forward(False, **fields) and fields["h"].abs().sum() > 0
    for change in (
        {"c": torch.zeros(rows, H, dtype=torch.float64)},  # float64
        {"pre": torch.randn(rows, 4 * H + 1)},  # a row too wide
        {"keep_c": torch.zeros(2, H)},  # neither one row for all nor one per sequence
        {"h": torch.zeros(H, rows).t()},  # rows not contiguous
        {"peepholes": None},  # always needed
        {"gates": torch.zeros(rows, 4 * H)},  # gates without tanh_c
        {"gain_c": torch.ones(H), "bias_c": torch.zeros(H)},  # layer norm of C without its outputs
    ):
        given = {**fields, "c": torch.zeros(rows, H), **change}
        assert not native.variant_forward(False, **given)
        assert given["c"].abs().sum() == 0
    with pytest.raises(TypeError, match="unknown fields"):
        native.variant_forward(False, **fields, gate=torch.zeros(rows, 4 * H))
    out = torch.zeros(5)
    assert not native.column_dot(torch.ones(2, 5), torch.ones(2, 5, dtype=torch.float64), out)
    assert not native.column_dot(torch.ones(2, 5), torch.ones(3, 5), out) and out.sum() == 0
    assert native.column_dot(torch.ones(2, 5), torch.full((2, 5), 3.0), out) and torch.equal(out, torch.full((5,), 6.0))
    x, y = torch.randn(2, 8), torch.zeros(2, 8)
    assert not native.block_norm_forward(x, torch.ones(8), None, y, torch.zeros(2, 8), torch.zeros(2, 3))
    assert y.abs().sum() == 0
