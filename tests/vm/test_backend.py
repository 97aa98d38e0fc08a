"""Backends: exact int8 matmul through float64 BLAS, the K bound, and how a backend is chosen."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vm import backend
from vm.backend import (
    MAX_EXACT_K,
    MAX_FLOAT64_EXACT_K,
    BackendError,
    BackendUnavailable,
    ExactnessError,
    NumpyBackend,
    exact_int8_matmul,
    get_backend,
)

CHECKS = settings(max_examples=60, deadline=None)
int8s = st.integers(-128, 127)


@st.composite
def int8_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Two int8 matrices (m x k) and (k x n), often full of the extreme values -128 and 127."""
    m, k, n = draw(st.integers(1, 9)), draw(st.integers(1, 300)), draw(st.integers(1, 9))
    elements = st.one_of(int8s, st.sampled_from([-128, 127]))
    a = draw(hnp.arrays(np.int8, (m, k), elements=elements))
    b = draw(hnp.arrays(np.int8, (k, n), elements=elements))
    return a, b


@CHECKS
@given(pair=int8_pairs())
def test_exact_int8_matmul_equals_int64_reference(pair: tuple[np.ndarray, np.ndarray]) -> None:
    """float64 BLAS over int8 values gives the int64 product exactly, as int32."""
    a, b = pair
    got = exact_int8_matmul(a, b)
    assert got.dtype == np.int32
    assert np.array_equal(got.astype(np.int64), a.astype(np.int64) @ b.astype(np.int64))


def test_exact_int8_matmul_at_the_extremes() -> None:
    """All -128 (the largest products, 2^14 each) at a large K and all 127 x -128: still exact."""
    k = 4096
    a = np.full((3, k), -128, dtype=np.int8)
    assert (exact_int8_matmul(a, a.T.copy()) == k * 2**14).all()
    b = np.full((k, 2), 127, dtype=np.int8)
    assert (exact_int8_matmul(a, b) == -k * 128 * 127).all()


def test_exact_int8_matmul_batched() -> None:
    """A batch (z, m, k) x (z, k, n) is exact slice by slice."""
    rng = np.random.default_rng(5)
    a = rng.integers(-128, 128, size=(4, 16, 700), dtype=np.int8)
    b = rng.integers(-128, 128, size=(4, 700, 16), dtype=np.int8)
    assert np.array_equal(exact_int8_matmul(a, b), a.astype(np.int64) @ b.astype(np.int64))


def test_k_past_the_bound_is_refused() -> None:
    """K * 2^14 must stay inside int32 (which also keeps float64 exact); larger K is refused."""
    assert MAX_EXACT_K * 2**14 <= 2**31 - 1 < (MAX_EXACT_K + 1) * 2**14
    assert MAX_EXACT_K < MAX_FLOAT64_EXACT_K == 2**39
    ok = np.ones((1, MAX_EXACT_K), dtype=np.int8)
    assert exact_int8_matmul(ok, ok.T.copy())[0, 0] == MAX_EXACT_K
    big = np.ones((1, MAX_EXACT_K + 1), dtype=np.int8)
    with pytest.raises(ExactnessError, match=f"K = {MAX_EXACT_K + 1}"):
        exact_int8_matmul(big, big.T.copy())


def test_exact_int8_matmul_wants_int8() -> None:
    """Other dtypes are refused rather than silently converted."""
    with pytest.raises(BackendError, match="int8"):
        exact_int8_matmul(np.ones((2, 2), np.int16), np.ones((2, 2), np.int8))


def test_env_selects_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """GANNET_COMPUTE_BACKEND=numpy (any case, spaces) gives the NumPy backend."""
    monkeypatch.setenv(backend.ENV_VAR, " NumPy ")
    assert isinstance(get_backend(), NumpyBackend)
    assert get_backend("numpy") is get_backend("numpy")  # made once


def test_unknown_backend_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name that is neither numpy nor cupy is a BackendUnavailable naming it."""
    monkeypatch.setenv(backend.ENV_VAR, "opencl")
    with pytest.raises(BackendUnavailable, match="'opencl'"):
        get_backend()


def test_cupy_asked_for_without_cupy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a usable CuPy, asking for it fails with a one-line reason; auto picks NumPy."""
    reason = backend.cupy_unavailable_reason()
    if reason is None:
        pytest.skip("cupy and a device are present here")
    assert "\n" not in reason
    monkeypatch.setenv(backend.ENV_VAR, "cupy")
    with pytest.raises(BackendUnavailable, match="cupy") as caught:
        get_backend()
    assert "\n" not in str(caught.value)
    monkeypatch.delenv(backend.ENV_VAR)
    assert get_backend().name == "numpy"


def test_cupy_is_not_imported_by_the_vm_modules() -> None:
    """Importing vm never imports cupy (it is an optional extra, loaded on first use)."""
    import subprocess
    import sys

    code = "import sys, vm.kernels, vm.backend, vm.prng, vm.tiles; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_numpy_blocks_chunking_is_invisible(monkeypatch: pytest.MonkeyPatch) -> None:
    """Generating a block in many chunks gives the same array as in one."""
    whole = NumpyBackend().blocks(99, [0, 40], 37, 11, 13, "i8")
    monkeypatch.setattr(backend, "CHUNK_WORDS", 20)
    assert np.array_equal(NumpyBackend().blocks(99, [0, 40], 37, 11, 13, "i8"), whole)
