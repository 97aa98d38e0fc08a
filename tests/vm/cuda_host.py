"""Run the kernels' CUDA C on the host: the same source, compiled by a host C++ compiler.

A shim defines CUDA's qualifiers and blockIdx/threadIdx/blockDim as globals, and
each launcher walks the grid and the threads one after another with the launch
geometry vm.backend.CupyBackend uses. The kernels use no shared memory and no
__syncthreads, so running the threads in sequence computes what the GPU does; the
arithmetic (uint64 wrapping, int8 and float32 conversions, int32 accumulation) is
the source's own. Tests use it to check the CUDA source against NumPy on machines
without a GPU; `compile_host_kernels` returns None when no compiler is there.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np

from vm import prng
from vm.backend import MATMUL_BLOCK, THREADS
from vm.kernels import MATMUL_CUDA_SOURCE

SHIM = r"""
#include <math.h>
struct gannet_dim3 { unsigned int x, y, z; };
static gannet_dim3 blockIdx, threadIdx, blockDim;
#define __global__
#define __device__
#define __forceinline__ inline
"""

LAUNCHERS = r"""
#define GANNET_LAUNCH(gx, gy, gz, bx, by, call)                                   \
    blockDim.x = (bx); blockDim.y = (by); blockDim.z = 1;                         \
    for (unsigned int gz_ = 0; gz_ < (unsigned int)(gz); ++gz_)                   \
    for (unsigned int gy_ = 0; gy_ < (unsigned int)(gy); ++gy_)                   \
    for (unsigned int gx_ = 0; gx_ < (unsigned int)(gx); ++gx_) {                 \
        blockIdx.x = gx_; blockIdx.y = gy_; blockIdx.z = gz_;                     \
        for (unsigned int ty_ = 0; ty_ < (unsigned int)(by); ++ty_)               \
        for (unsigned int tx_ = 0; tx_ < (unsigned int)(bx); ++tx_) {             \
            threadIdx.x = tx_; threadIdx.y = ty_; threadIdx.z = 0; call;          \
        }                                                                         \
    }

#define GANNET_BLOCK_LAUNCHER(host_name, kernel, type)                            \
extern "C" void host_name(gannet_u64 key, const gannet_u64* bases, int count,    \
        gannet_u64 stride, long long rows, long long cols, type* out) {           \
    long long blocks = (rows * cols + THREADS - 1) / THREADS;                     \
    GANNET_LAUNCH(blocks, count, 1, THREADS, 1,                                   \
                  kernel(key, bases, stride, rows, cols, out))                    \
}
GANNET_BLOCK_LAUNCHER(host_words, gannet_words, gannet_u64)
GANNET_BLOCK_LAUNCHER(host_block_i8, gannet_block_i8, signed char)
GANNET_BLOCK_LAUNCHER(host_block_f32, gannet_block_f32, float)

#define GANNET_MATMUL_LAUNCHER(host_name, kernel, in_type, out_type)              \
extern "C" void host_name(const in_type* a, const in_type* b, out_type* out,     \
        int z, int m, int n, int k) {                                             \
    GANNET_LAUNCH((n + MATMUL_BLOCK - 1) / MATMUL_BLOCK,                          \
                  (m + MATMUL_BLOCK - 1) / MATMUL_BLOCK, z,                       \
                  MATMUL_BLOCK, MATMUL_BLOCK, kernel(a, b, out, m, n, k))         \
}
GANNET_MATMUL_LAUNCHER(host_matmul_i8, gannet_matmul_i8, signed char, int)
GANNET_MATMUL_LAUNCHER(host_matmul_f32, gannet_matmul_f32, float, float)
"""

_U64P = ctypes.POINTER(ctypes.c_uint64)
_ELEMENT_C = {"words": np.uint64, "i8": np.int8, "f32": np.float32}


def source() -> str:
    """The whole host translation unit: shim, the kernels' CUDA C, launchers."""
    geometry = f"#define THREADS {THREADS}\n#define MATMUL_BLOCK {MATMUL_BLOCK}\n"
    return SHIM + prng.CUDA_SOURCE + MATMUL_CUDA_SOURCE + geometry + LAUNCHERS


def compile_host_kernels(workdir: Path) -> HostKernels | None:
    """The kernels built as a shared library in `workdir`, or None without a C++ compiler."""
    compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        return None
    src, lib = workdir / "kernels.cpp", workdir / "kernels.so"
    src.write_text(source())
    # -ffp-contract=off keeps float a*b+c as written; the f32 kernel calls fmaf itself.
    command = [compiler, "-O1", "-ffp-contract=off", "-shared", "-fPIC", "-o", lib, src]
    subprocess.run(command, check=True, capture_output=True)
    return HostKernels(ctypes.CDLL(str(lib)))


class HostKernels:
    """ctypes launchers of the host-compiled kernels, taking and returning NumPy arrays."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib

    def blocks(
        self, key: int, bases: list[int], rows: int, cols: int, stride: int, element: str
    ) -> np.ndarray:
        """`gannet_words` / `gannet_block_i8` / `gannet_block_f32` over a batch of blocks."""
        name = {"words": "host_words", "i8": "host_block_i8", "f32": "host_block_f32"}[element]
        out = np.zeros((len(bases), rows, cols), dtype=_ELEMENT_C[element])
        base_arr = np.ascontiguousarray(bases, dtype=np.uint64)
        getattr(self._lib, name)(
            ctypes.c_uint64(key),
            base_arr.ctypes.data_as(_U64P),
            ctypes.c_int(len(bases)),
            ctypes.c_uint64(stride),
            ctypes.c_longlong(rows),
            ctypes.c_longlong(cols),
            ctypes.c_void_p(out.ctypes.data),
        )
        return out

    def matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """`gannet_matmul_i8` or `gannet_matmul_f32` (by dtype) over (z, m, k) x (z, k, n)."""
        z, m, k = a.shape
        n = b.shape[2]
        is_i8 = a.dtype == np.int8
        out = np.zeros((z, m, n), dtype=np.int32 if is_i8 else np.float32)
        a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
        launcher = self._lib.host_matmul_i8 if is_i8 else self._lib.host_matmul_f32
        launcher(
            ctypes.c_void_p(a.ctypes.data),
            ctypes.c_void_p(b.ctypes.data),
            ctypes.c_void_p(out.ctypes.data),
            *(ctypes.c_int(v) for v in (z, m, n, k)),
        )
        return out
