"""The kernel registry: what a job may run, and how one tile of it is re-executed.

A kernel declares its name, a parameter schema (named ints with bounds), its CUDA
source (run through cupy.RawKernel), a NumPy reference, how its output splits
into tiles (vm.tiles), the inputs one tile needs, and its comparison class.

Both kernels shipped are C = A x B with A (m x k) and B (k x n) drawn from the
job seed (vm.prng: A is stream 0, B stream 1). Output tile i (row-major, T x T)
needs only rows [r0, r0 + T) of A and columns [c0, c0 + T) of B, which the
counter-based generator produces without the rest, so a verifier re-executes one
tile with 2 * T * k generated elements and T * T * k multiply-adds.

- matmul_i8: int8 x int8 -> int32, comparison `exact`: the tile bytes (int32
  little-endian) must be equal bit for bit. Exact on both backends (int32
  accumulation on the GPU, float64 BLAS on the CPU, see vm.backend).
- matmul_f32: float32 x float32 -> float32 with fp32 accumulation (no TF32, no
  fp16), comparison `tolerance`: every element must satisfy
  |got - ref| <= k^2 * 2^-22. Why that bound: inputs lie in [-1, 1), so
  sum_j |a_ij * b_jk| <= k, and a float32 dot product of length k evaluated in
  any order, with or without FMA, is within gamma_k * sum|a * b| of the exact
  value (Higham, Accuracy and Stability, eq. 3.5), gamma_k = k*u / (1 - k*u),
  u = 2^-24. With k <= 4096, k*u <= 2^-12 and gamma_k <= 2*k*u, so an honest
  result and the verifier's are each within 2*k^2*u of the exact product and
  within 4*k^2*u = k^2 * 2^-22 of each other. An honest provider is never
  failed; the bound (0.25 at k = 1024, against entries of typical size
  sqrt(k)/3 ~ 10) catches wrong or skipped work, not small precision cuts.

Tile size: T <= 16, so a tile is at most 16 * 16 * 4 = 1 KiB. A reveal of the
44 sampled tiles (P = 0.99, f = 0.1) of a 1024 x 1024 output (4096 tiles, proofs
of 12 hashes) is 44 * (1024 + 12 * 32) = 61,952 bytes, inside a 64 KiB tx;
bigger outputs have longer proofs, so `reveal_bytes` gives the size for the chain
to check against its tx limit.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from vm import prng
from vm.backend import Backend, Program, exact_int8_matmul, float32_matmul, get_backend
from vm.merkle import HASH_SIZE, MAX_TILES
from vm.tiles import TileError, TileGrid, decode_tile, split

Comparison = Literal["exact", "tolerance"]
MAX_TILE_SIDE = 16
MAX_TILE_BYTES = MAX_TILE_SIDE * MAX_TILE_SIDE * 4  # 1 KiB
MAX_DIM = 16384  # m, n and (matmul_i8) k
MAX_F32_K = 4096  # the tolerance argument needs k * 2^-24 <= 2^-12


class KernelError(ValueError):
    """A kernel was asked for by an unknown name, or with bad params, seed or tile index."""


class UnknownKernel(KernelError):
    """No kernel of that name is registered."""


class ParamError(KernelError):
    """A parameter is missing, unknown, not an int, out of bounds, or breaks a cross rule."""


class TileIndexError(KernelError):
    """A tile index is outside [0, tile count)."""


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One named integer parameter with inclusive bounds."""

    name: str
    low: int
    high: int
    doc: str


@dataclass(frozen=True, slots=True)
class Params:
    """Validated parameters of one job, as (name, value) pairs in schema order."""

    values: tuple[tuple[str, int], ...]

    def __getitem__(self, name: str) -> int:
        for key, value in self.values:
            if key == name:
                return value
        raise KeyError(name)

    def as_dict(self) -> dict[str, int]:
        """The parameters as a plain dict."""
        return dict(self.values)


@dataclass(frozen=True, slots=True)
class TileInputs:
    """The inputs one output tile needs: rows of A and columns of B (half-open ranges)."""

    a_rows: range
    b_cols: range


def _matmul_i8_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """int8 x int8 -> int32, exact (float64 BLAS)."""
    return exact_int8_matmul(a, b)


def _matmul_f32_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float32 x float32 -> float32 (float32 BLAS)."""
    return float32_matmul(a, b)


@dataclass(frozen=True, slots=True)
class Kernel:
    """A registered kernel: schema, element and output types, programs, comparison class."""

    name: str
    schema: tuple[ParamSpec, ...]
    element: str  # input element of vm.prng / vm.backend: "i8" or "f32"
    out_dtype: str  # tile element type, little-endian: "<i4" or "<f4"
    comparison: Comparison
    program: Program

    @property
    def cuda_source(self) -> str:
        """The CUDA C of the kernel's product (run through cupy.RawKernel)."""
        return self.program.cuda_source

    @property
    def reference(self) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """The NumPy reference of the kernel's product."""
        return self.program.reference

    def validate_params(self, raw: Mapping[str, int]) -> Params:
        """Params from a name -> int mapping; ParamError names the first bad parameter."""
        unknown = sorted(set(raw) - {spec.name for spec in self.schema})
        if unknown:
            raise ParamError(f"{self.name}: unknown parameter {unknown[0]!r}")
        values = tuple((spec.name, _validate_value(self.name, spec, raw)) for spec in self.schema)
        params = Params(values)
        _validate_tiling(self.name, params)
        return params

    def tile_grid(self, params: Params) -> TileGrid:
        """The output's tile grid."""
        return TileGrid(params["m"], params["n"], params["tile"])

    def tile_count(self, params: Params) -> int:
        """How many tiles the output has (the Merkle tree's leaf count)."""
        return self.tile_grid(params).count

    def tile_bytes(self, params: Params) -> int:
        """The size of every tile of a job, in bytes."""
        return params["tile"] ** 2 * np.dtype(self.out_dtype).itemsize

    def reveal_bytes(self, params: Params, samples: int) -> int:
        """Bytes of `samples` tiles plus their Merkle proofs, at the deepest proof length."""
        depth = (self.tile_count(params) - 1).bit_length()
        return samples * (self.tile_bytes(params) + depth * HASH_SIZE)

    def tile_inputs(self, params: Params, index: int) -> TileInputs:
        """The rows of A and columns of B that output tile `index` needs."""
        row0, col0 = self._origin(params, index)
        t = params["tile"]
        return TileInputs(a_rows=range(row0, row0 + t), b_cols=range(col0, col0 + t))

    def inputs(self, seed: bytes, params: Params, backend: Backend | None = None):
        """The whole input matrices (A, B) of a job, as backend arrays."""
        be = backend or get_backend()
        m, n, k = params["m"], params["n"], params["k"]
        key_a, key_b = _keys(seed)
        a = be.blocks(key_a, [0], m, k, k, self.element)
        b = be.blocks(key_b, [0], k, n, n, self.element)
        return a, b

    def compute(self, seed: bytes, params: Params, backend: Backend | None = None) -> list[bytes]:
        """The provider's whole job: every output tile's bytes, in tile-index order."""
        be = backend or get_backend()
        a, b = self.inputs(seed, params, be)
        output = be.to_host(be.matmul(a, b, self.program))[0]
        return split(output, self.tile_grid(params), self.out_dtype)

    def compute_tiles(
        self, seed: bytes, params: Params, indices: Sequence[int], backend: Backend | None = None
    ) -> list[bytes]:
        """The verifier's re-execution of some tiles from the seed, without the whole output."""
        if not indices:
            return []
        be = backend or get_backend()
        m_k, n, t = params["k"], params["n"], params["tile"]
        origins = [self._origin(params, index) for index in indices]
        key_a, key_b = _keys(seed)
        a = be.blocks(key_a, [row0 * m_k for row0, _ in origins], t, m_k, m_k, self.element)
        b = be.blocks(key_b, [col0 for _, col0 in origins], m_k, t, n, self.element)
        out = be.to_host(be.matmul(a, b, self.program))
        return [np.ascontiguousarray(tile, dtype=self.out_dtype).tobytes() for tile in out]

    def compute_tile(
        self, seed: bytes, params: Params, index: int, backend: Backend | None = None
    ) -> bytes:
        """The verifier's re-execution of one tile."""
        return self.compute_tiles(seed, params, [index], backend)[0]

    def tolerance(self, params: Params) -> float:
        """The largest |got - ref| an element may show: 0 for exact, k^2 * 2^-22 otherwise."""
        return 0.0 if self.comparison == "exact" else float(params["k"] ** 2) * 2.0**-22

    def tiles_match(self, params: Params, expected: bytes, got: bytes) -> bool:
        """Whether a revealed tile `got` passes against the re-executed `expected`."""
        if len(got) != len(expected) or len(expected) != self.tile_bytes(params):
            return False
        if self.comparison == "exact":
            return got == expected
        t = params["tile"]
        ref = decode_tile(expected, t, self.out_dtype).astype(np.float64)
        value = decode_tile(got, t, self.out_dtype).astype(np.float64)
        return bool(np.all(np.abs(value - ref) <= self.tolerance(params)))

    def check_tile(
        self,
        seed: bytes,
        params: Params,
        index: int,
        got: bytes,
        backend: Backend | None = None,
    ) -> bool:
        """Re-execute tile `index` and compare it with the revealed `got`."""
        return self.tiles_match(params, self.compute_tile(seed, params, index, backend), got)

    def _origin(self, params: Params, index: int) -> tuple[int, int]:
        """The top-left output element of tile `index` (TileIndexError outside the grid)."""
        if isinstance(index, bool) or not isinstance(index, int):
            raise TileIndexError(f"a tile index is an int, got {type(index).__name__}")
        try:
            return self.tile_grid(params).origin(index)
        except TileError as exc:
            raise TileIndexError(f"{self.name}: {exc}") from exc


def _keys(seed: bytes) -> tuple[int, int]:
    """The PRNG keys of A (stream 0) and B (stream 1) of a job seed (KernelError if bad)."""
    if not isinstance(seed, bytes) or len(seed) != prng.SEED_SIZE:
        raise KernelError(f"a job seed is {prng.SEED_SIZE} bytes, got {seed!r:.80}")
    return prng.stream_key(seed, prng.STREAM_A), prng.stream_key(seed, prng.STREAM_B)


def _validate_value(kernel: str, spec: ParamSpec, raw: Mapping[str, int]) -> int:
    """The value of `spec` in `raw`: present, an int (not a bool), within bounds."""
    if spec.name not in raw:
        raise ParamError(f"{kernel}: missing parameter {spec.name!r}")
    value = raw[spec.name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParamError(f"{kernel}: parameter {spec.name!r} must be an int, got {value!r}")
    if not spec.low <= value <= spec.high:
        raise ParamError(
            f"{kernel}: parameter {spec.name!r} must be in [{spec.low}, {spec.high}], got {value}"
        )
    return value


def _validate_tiling(kernel: str, params: Params) -> None:
    """tile divides m and n, and the output has at most MAX_TILES tiles."""
    m, n, t = params["m"], params["n"], params["tile"]
    if m % t or n % t:
        raise ParamError(f"{kernel}: parameter 'tile' ({t}) must divide m ({m}) and n ({n})")
    if (m // t) * (n // t) > MAX_TILES:
        raise ParamError(
            f"{kernel}: parameter 'tile' ({t}) gives {(m // t) * (n // t)} tiles, "
            f"more than {MAX_TILES}"
        )


def _schema(max_k: int) -> tuple[ParamSpec, ...]:
    """The matmul schema: output m x n, inner dimension k, tile side."""
    return (
        ParamSpec("m", 1, MAX_DIM, "rows of A and of the output"),
        ParamSpec("n", 1, MAX_DIM, "columns of B and of the output"),
        ParamSpec("k", 1, max_k, "columns of A, rows of B"),
        ParamSpec("tile", 1, MAX_TILE_SIDE, "tile side; divides m and n"),
    )


# One thread per output element, one (m x n) product per blockIdx.z; a and b are
# (z, m, k) and (z, k, n) row-major, out (z, m, n). Plain loops, so any compiler
# (nvcc, or a host C++ compiler with a shim in the tests) runs the same arithmetic.
MATMUL_CUDA_SOURCE = r"""
extern "C" __global__ void gannet_matmul_i8(
    const signed char* a, const signed char* b, int* out, int m, int n, int k) {
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    int row = blockIdx.y * blockDim.y + threadIdx.y;
    long long z = blockIdx.z;
    if (row >= m || col >= n) return;
    const signed char* a_row = a + z * m * k + (long long)row * k;
    const signed char* b_col = b + z * k * n + col;
    int acc = 0;
    for (int j = 0; j < k; ++j) {
        acc += (int)a_row[j] * (int)b_col[(long long)j * n];
    }
    out[z * m * n + (long long)row * n + col] = acc;
}

extern "C" __global__ void gannet_matmul_f32(
    const float* a, const float* b, float* out, int m, int n, int k) {
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    int row = blockIdx.y * blockDim.y + threadIdx.y;
    long long z = blockIdx.z;
    if (row >= m || col >= n) return;
    const float* a_row = a + z * m * k + (long long)row * k;
    const float* b_col = b + z * k * n + col;
    float acc = 0.0f;
    for (int j = 0; j < k; ++j) {
        acc = fmaf(a_row[j], b_col[(long long)j * n], acc);
    }
    out[z * m * n + (long long)row * n + col] = acc;
}
"""

MATMUL_I8 = Kernel(
    name="matmul_i8",
    schema=_schema(MAX_DIM),
    element="i8",
    out_dtype="<i4",
    comparison="exact",
    program=Program(_matmul_i8_reference, MATMUL_CUDA_SOURCE, "gannet_matmul_i8", np.int32),
)

MATMUL_F32 = Kernel(
    name="matmul_f32",
    schema=_schema(MAX_F32_K),
    element="f32",
    out_dtype="<f4",
    comparison="tolerance",
    program=Program(_matmul_f32_reference, MATMUL_CUDA_SOURCE, "gannet_matmul_f32", np.float32),
)

KERNELS: dict[str, Kernel] = {kernel.name: kernel for kernel in (MATMUL_I8, MATMUL_F32)}


def get_kernel(name: str) -> Kernel:
    """The registered kernel `name` (UnknownKernel otherwise)."""
    if name not in KERNELS:
        raise UnknownKernel(f"no kernel named {name!r}; registered: {sorted(KERNELS)}")
    return KERNELS[name]


def kernel_names() -> tuple[str, ...]:
    """The registered kernels' names, sorted."""
    return tuple(sorted(KERNELS))
