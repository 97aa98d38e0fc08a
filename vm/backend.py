"""Where kernels run: CuPy on a GPU when one is there, NumPy otherwise.

The choice is made lazily, on the first `get_backend()` call, and kept:
- GANNET_COMPUTE_BACKEND=numpy|cupy forces one (cupy asked for but not usable is
  a BackendUnavailable naming why);
- otherwise CuPy when it imports and sees at least one device, else NumPy.
CuPy is the optional `gpu` extra; this module never imports it at import time.

Both backends do the same two things, so a kernel is written once against them:
- `blocks`: fill a batch of input blocks from the counter-based PRNG (vm.prng),
  the NumPy generator on the CPU and the same generator's CUDA source on a GPU;
- `matmul`: a batched product, through a `Program` that names the kernel's NumPy
  reference and its CUDA source.

On the CPU, int8 x int8 -> int32 runs through float64 BLAS (`exact_int8_matmul`):
every product has |a * b| <= 128 * 128 = 2^14 and every partial sum of K of them
is an integer of magnitude <= K * 2^14, so while K * 2^14 <= 2^53 each float64
operation is exact, in whatever order or blocking the BLAS uses (FMA included).
The int32 result also needs K * 2^14 <= 2^31 - 1, the tighter of the two, so K
up to MAX_EXACT_K = 131071; larger K is refused with ExactnessError.
"""

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

import numpy as np

from vm import prng

ENV_VAR = "GANNET_COMPUTE_BACKEND"
BACKENDS = ("numpy", "cupy")
PRODUCT_BOUND = 128 * 128  # the largest |a * b| of two int8 values
MAX_FLOAT64_EXACT_K = (1 << 53) // PRODUCT_BOUND  # float64 holds every partial sum exactly
MAX_EXACT_K = ((1 << 31) - 1) // PRODUCT_BOUND  # and the int32 result holds the sum
CHUNK_WORDS = 1 << 20  # PRNG words generated at once on the CPU (8 MiB)
THREADS = 256  # threads per block of the CUDA element kernels
MATMUL_BLOCK = 16  # the CUDA matmul kernels run 16 x 16 threads per block

ELEMENTS: dict[str, Any] = {"i8": np.int8, "f32": np.float32}
_CONVERT: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "i8": prng.to_int8,
    "f32": prng.to_float32,
}
_CUDA_BLOCK_KERNEL = {"i8": "gannet_block_i8", "f32": "gannet_block_f32"}


class BackendError(RuntimeError):
    """A compute backend cannot do what it was asked."""


class BackendUnavailable(BackendError):
    """The backend asked for (by name or by GANNET_COMPUTE_BACKEND) cannot be used here."""


class ExactnessError(BackendError):
    """An exact int8 product was asked for with a K past the exactness bound."""


@dataclass(frozen=True, slots=True)
class Program:
    """A batched product (Z, M, K) x (Z, K, N) -> (Z, M, N) as each backend runs it.

    `reference` is the NumPy function; `cuda_name` the extern "C" kernel in
    `cuda_source`, launched with 16 x 16 threads per block over (N, M, Z) and the
    arguments (a, b, out, M, N, K).
    """

    reference: Callable[[np.ndarray, np.ndarray], np.ndarray]
    cuda_source: str
    cuda_name: str
    out_dtype: Any


class Backend(Protocol):
    """What a kernel needs from a backend."""

    name: str

    def blocks(
        self, key: int, bases: Sequence[int], rows: int, cols: int, row_stride: int, element: str
    ) -> Any:
        """Blocks (len(bases), rows, cols): element (z, r, c) from counter bases[z] + r*s + c."""
        ...

    def matmul(self, a: Any, b: Any, program: Program) -> Any:
        """The batched product of `a` and `b` by `program`."""
        ...

    def to_host(self, array: Any) -> np.ndarray:
        """A NumPy copy of a backend array."""
        ...


def exact_int8_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """int8 (..., M, K) x int8 (..., K, N) -> exact int32, through float64 BLAS."""
    if a.dtype != np.int8 or b.dtype != np.int8:
        raise BackendError(f"exact_int8_matmul needs int8 inputs, got {a.dtype} and {b.dtype}")
    validate_exact_k(a.shape[-1])
    product = np.matmul(a.astype(np.float64), b.astype(np.float64))
    return product.astype(np.int32)


def validate_exact_k(k: int) -> None:
    """Raise ExactnessError unless an int8 product over K terms is exact in int32 and float64."""
    if k > MAX_EXACT_K:
        raise ExactnessError(
            f"int8 matmul with K = {k} is not exact: K * 2^14 must stay below 2^31 "
            f"(K <= {MAX_EXACT_K})"
        )


def float32_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float32 x float32 -> float32 through NumPy's float32 BLAS (fp32 accumulation)."""
    return np.matmul(a, b).astype(np.float32, copy=False)


class NumpyBackend:
    """The CPU backend: vm.prng's NumPy generator and each program's NumPy reference."""

    name = "numpy"

    def blocks(
        self, key: int, bases: Sequence[int], rows: int, cols: int, row_stride: int, element: str
    ) -> np.ndarray:
        """Blocks from the NumPy generator, CHUNK_WORDS words at a time."""
        convert = _CONVERT[element]
        out = np.empty((len(bases), rows, cols), dtype=ELEMENTS[element])
        step = max(1, CHUNK_WORDS // max(cols, 1))
        for z, base in enumerate(bases):
            for r0 in range(0, rows, step):
                r1 = min(rows, r0 + step)
                counters = prng.block_counters(base + r0 * row_stride, r1 - r0, cols, row_stride)
                out[z, r0:r1] = convert(prng.words(key, counters))
        return out

    def matmul(self, a: np.ndarray, b: np.ndarray, program: Program) -> np.ndarray:
        """The program's NumPy reference."""
        return program.reference(a, b)

    def to_host(self, array: np.ndarray) -> np.ndarray:
        """Already on the host."""
        return array


class CupyBackend:
    """The GPU backend: the same generator and kernels as CUDA C through cupy.RawModule."""

    name = "cupy"

    def __init__(self, cupy: Any) -> None:
        self._cp = cupy
        self._functions: dict[tuple[str, str], Any] = {}

    def function(self, source: str, name: str) -> Any:
        """The compiled kernel `name` of `source` (compiled once per backend)."""
        if (source, name) not in self._functions:
            module = self._cp.RawModule(code=source)
            self._functions[(source, name)] = module.get_function(name)
        return self._functions[(source, name)]

    def blocks(
        self, key: int, bases: Sequence[int], rows: int, cols: int, row_stride: int, element: str
    ) -> Any:
        """Blocks from the CUDA generator: one thread per element, blockIdx.y = block."""
        cp = self._cp
        out = cp.empty((len(bases), rows, cols), dtype=ELEMENTS[element])
        if out.size == 0:
            return out
        bases_d = cp.asarray(np.asarray(bases, dtype=np.uint64))
        grid = ((rows * cols + THREADS - 1) // THREADS, len(bases))
        args = (np.uint64(key), bases_d, np.uint64(row_stride), np.int64(rows), np.int64(cols))
        self.function(prng.CUDA_SOURCE, _CUDA_BLOCK_KERNEL[element])(grid, (THREADS,), (*args, out))
        return out

    def matmul(self, a: Any, b: Any, program: Program) -> Any:
        """The program's CUDA kernel over a (N/16, M/16, Z) grid of 16 x 16 threads."""
        cp = self._cp
        z, m, k = a.shape
        n = b.shape[2]
        out = cp.empty((z, m, n), dtype=program.out_dtype)
        grid = (-(-n // MATMUL_BLOCK), -(-m // MATMUL_BLOCK), z)
        args = (cp.ascontiguousarray(a), cp.ascontiguousarray(b), out)
        sizes = (np.int32(m), np.int32(n), np.int32(k))
        fn = self.function(program.cuda_source, program.cuda_name)
        fn(grid, (MATMUL_BLOCK, MATMUL_BLOCK), (*args, *sizes))
        return out

    def to_host(self, array: Any) -> np.ndarray:
        """Copy to the host."""
        return self._cp.asnumpy(array)


def get_backend(name: str | None = None) -> Backend:
    """The backend `name`, else GANNET_COMPUTE_BACKEND's, else CuPy if usable, else NumPy."""
    chosen = name or os.environ.get(ENV_VAR, "").strip().lower() or None
    if chosen is None:
        return _auto_backend()
    if chosen not in BACKENDS:
        raise BackendUnavailable(f"unknown compute backend {chosen!r}; use one of {BACKENDS}")
    return _load(chosen)


def cupy_unavailable_reason() -> str | None:
    """Why CuPy cannot be used here (one line), or None when it can."""
    try:
        import cupy  # optional: imported only when asked for
    except Exception as exc:  # ImportError, or a broken CUDA install raising anything
        return f"cupy does not import: {exc}".splitlines()[0]
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"cupy sees no CUDA runtime: {exc}".splitlines()[0]
    return None if count > 0 else "cupy imports but sees no CUDA device"


@cache
def _auto_backend() -> Backend:
    """CuPy when it imports and has a device, NumPy otherwise (decided once)."""
    return _load("cupy") if cupy_unavailable_reason() is None else _load("numpy")


@cache
def _load(name: str) -> Backend:
    """One backend instance per name, made on first use."""
    if name == "numpy":
        return NumpyBackend()
    reason = cupy_unavailable_reason()
    if reason is not None:
        raise BackendUnavailable(f"compute backend 'cupy' is unavailable: {reason}")
    import cupy

    return CupyBackend(cupy)
