"""The counter-based PRNG that turns a job's 32-byte seed into its input matrices.

Generator: SplitMix64 (Steele, Lea and Flood 2014; Vigna's splitmix64.c), read as a
counter-based generator. We chose it over Philox because word i is one closed
formula of (key, i) with a 64-bit add, two 64-bit multiplies and three xor-shifts,
all wrapping mod 2^64: NumPy's uint64 arithmetic and CUDA's `unsigned long long`
compute it identically, with no 32x32->64 high-half multiplies or round keys to
get wrong. Any element is reachable by its counter, so a verifier generates only
the rows and columns one tile needs. Its output passes BigCrush; the inputs only
need to be fixed by the seed, not secret, so a non-cryptographic mixer is enough.

The rule (stated so another implementation can match it):
- key(seed, stream) = the first 8 bytes, little-endian, of
  SHA-256(b"gannet/prng/v1" || seed || stream as 4 bytes big-endian); seed is
  32 bytes, so the input is unambiguous.
- word(key, i) = mix(key + (i + 1) * 0x9E3779B97F4A7C15 mod 2^64), where
  mix(z): z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) *
  0x94D049BB133111EB; return z ^ (z >> 31) (all mod 2^64). With key = s this is
  the i-th output of splitmix64.c seeded with s.
- int8 element: the low 8 bits of the word as a two's-complement int8 (-128..127).
- float32 element: ((word >> 40) - 2^23) / 2^23, an integer over 2^23 in [-1, 1);
  every such value is exactly a float32, so both backends produce the same bits.
- A block of rows x cols elements with counter base b and row stride s holds, at
  (r, c), the element of counter b + r * s + c. Matrix A (m x k) of a job is
  stream 0 with counter i * k + j at (i, j); B (k x n) is stream 1 with counter
  i * n + j.

Streams of different keys are the same cycle at offsets that are random in 2^64,
so they do not overlap for any job size the kernels allow (< 2^30 elements).
"""

import hashlib
from collections.abc import Iterable

import numpy as np

SEED_SIZE = 32
GAMMA = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
WORD_MASK = (1 << 64) - 1
KEY_DOMAIN = b"gannet/prng/v1"
FLOAT_BITS = 24  # the float32 element uses the top 24 bits of its word
FLOAT_SCALE = 1 << (FLOAT_BITS - 1)  # elements are integers over 2^23
MAX_STREAM = (1 << 32) - 1

STREAM_A = 0
STREAM_B = 1

_GAMMA = np.uint64(GAMMA)
_MIX1 = np.uint64(MIX1)
_MIX2 = np.uint64(MIX2)
_ONE = np.uint64(1)
_S30, _S27, _S31, _S40 = (np.uint64(s) for s in (30, 27, 31, 40))


class PrngError(ValueError):
    """A key or block was asked for with a bad seed, stream, shape or counter range."""


def stream_key(seed: bytes, stream: int) -> int:
    """The 64-bit key of one stream of a seed: SHA-256(domain || seed || stream)[:8], LE."""
    if len(seed) != SEED_SIZE:
        raise PrngError(f"a seed is {SEED_SIZE} bytes, got {len(seed)}")
    if not 0 <= stream <= MAX_STREAM:
        raise PrngError(f"a stream is in [0, 2^32), got {stream}")
    digest = hashlib.sha256(KEY_DOMAIN + seed + stream.to_bytes(4, "big")).digest()
    return int.from_bytes(digest[:8], "little")


def word_reference(key: int, counter: int) -> int:
    """word(key, counter) in plain Python ints: the rule as written in the module docstring."""
    z = (key + (counter + 1) * GAMMA) & WORD_MASK
    z = ((z ^ (z >> 30)) * MIX1) & WORD_MASK
    z = ((z ^ (z >> 27)) * MIX2) & WORD_MASK
    return z ^ (z >> 31)


def words(key: int, counters: np.ndarray) -> np.ndarray:
    """word(key, c) for every counter c of a uint64 array, vectorised (uint64 wraps)."""
    if counters.dtype != np.uint64:
        raise PrngError(f"counters must be uint64, got {counters.dtype}")
    with np.errstate(over="ignore"):
        z = (counters + _ONE) * _GAMMA
        z += np.uint64(key & WORD_MASK)
        z ^= z >> _S30
        z *= _MIX1
        z ^= z >> _S27
        z *= _MIX2
        z ^= z >> _S31
    return z


def block_counters(base: int, rows: int, cols: int, row_stride: int) -> np.ndarray:
    """The rows x cols uint64 counters base + r * row_stride + c of a block."""
    if rows < 0 or cols < 0 or base < 0 or row_stride < 0:
        raise PrngError(f"bad block: base {base}, {rows}x{cols}, row stride {row_stride}")
    last = base + max(rows - 1, 0) * row_stride + max(cols - 1, 0)
    if last > WORD_MASK:
        raise PrngError(f"block counters run past 2^64: last would be {last}")
    r = np.arange(rows, dtype=np.uint64)[:, None] * np.uint64(row_stride)
    return r + (np.arange(cols, dtype=np.uint64) + np.uint64(base))[None, :]


def to_int8(block: np.ndarray) -> np.ndarray:
    """int8 elements: the low 8 bits of each word, two's complement."""
    return (block & np.uint64(0xFF)).astype(np.uint8).view(np.int8)


def to_float32(block: np.ndarray) -> np.ndarray:
    """float32 elements ((word >> 40) - 2^23) / 2^23, exact integers over 2^23 in [-1, 1)."""
    top = (block >> _S40).astype(np.int32) - np.int32(FLOAT_SCALE)
    return top.astype(np.float32) * np.float32(1.0 / FLOAT_SCALE)


def int8_reference(word: int) -> int:
    """The int8 element of one word, in plain ints."""
    low = word & 0xFF
    return low - 256 if low >= 128 else low


def float32_reference_numerator(word: int) -> int:
    """The float32 element of one word times 2^23, in plain ints."""
    return (word >> (64 - FLOAT_BITS)) - FLOAT_SCALE


def draw(seed: bytes, stream: int, count: int, start: int = 0) -> np.ndarray:
    """`count` words of a seed's stream from counter `start`: the flat form of a block."""
    key = stream_key(seed, stream)
    return words(key, block_counters(start, 1, count, 0).reshape(count))


def references(key: int, counters: Iterable[int]) -> list[int]:
    """word_reference over many counters (the pure-Python oracle for tests)."""
    return [word_reference(key, c) for c in counters]


# The same generator and element mappings in CUDA C, compiled by cupy.RawKernel.
# Each thread writes one element of a batch of blocks: block z of a launch uses
# counter base bases[z]; element (r, c) has counter bases[z] + r * row_stride + c.
CUDA_SOURCE = r"""
typedef unsigned long long gannet_u64;

__device__ __forceinline__ gannet_u64 gannet_word(gannet_u64 key, gannet_u64 counter) {
    gannet_u64 z = key + (counter + 1ULL) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

extern "C" __global__ void gannet_words(
    gannet_u64 key, const gannet_u64* bases, gannet_u64 row_stride,
    long long rows, long long cols, gannet_u64* out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long per_block = rows * cols;
    if (i >= per_block) return;
    long long z = blockIdx.y;
    gannet_u64 counter = bases[z] + (gannet_u64)(i / cols) * row_stride + (gannet_u64)(i % cols);
    out[z * per_block + i] = gannet_word(key, counter);
}

extern "C" __global__ void gannet_block_i8(
    gannet_u64 key, const gannet_u64* bases, gannet_u64 row_stride,
    long long rows, long long cols, signed char* out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long per_block = rows * cols;
    if (i >= per_block) return;
    long long z = blockIdx.y;
    gannet_u64 counter = bases[z] + (gannet_u64)(i / cols) * row_stride + (gannet_u64)(i % cols);
    out[z * per_block + i] = (signed char)(unsigned char)(gannet_word(key, counter) & 0xFFULL);
}

extern "C" __global__ void gannet_block_f32(
    gannet_u64 key, const gannet_u64* bases, gannet_u64 row_stride,
    long long rows, long long cols, float* out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long per_block = rows * cols;
    if (i >= per_block) return;
    long long z = blockIdx.y;
    gannet_u64 counter = bases[z] + (gannet_u64)(i / cols) * row_stride + (gannet_u64)(i % cols);
    int top = (int)(gannet_word(key, counter) >> 40) - 8388608;
    out[z * per_block + i] = (float)top * (1.0f / 8388608.0f);
}
"""
