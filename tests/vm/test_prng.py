"""The job-input PRNG: fixed vectors, NumPy against plain ints, CUDA source against NumPy."""

import hashlib
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.vm.cuda_host import source as host_source
from vm import prng
from vm.backend import NumpyBackend
from vm.kernels import MATMUL_CUDA_SOURCE

CHECKS = settings(max_examples=60, deadline=None)
U64 = (1 << 64) - 1
keys = st.integers(0, U64)
seeds = st.binary(min_size=32, max_size=32)


def _splitmix64(state: int, count: int) -> list[int]:
    """Vigna's splitmix64.c next() loop, written out independently with Python ints."""
    out = []
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) % 2**64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
        out.append(z ^ (z >> 31))
    return out


def test_splitmix64_published_vectors() -> None:
    """The first outputs of splitmix64.c for seeds 0 and 1234567, as published."""
    assert _splitmix64(0, 2) == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]
    assert _splitmix64(1234567, 3) == [
        6457827717110365317,
        3203168211198807973,
        9817491932198370423,
    ]


def test_words_follow_splitmix64_stream() -> None:
    """word(key, i) is the i-th output of splitmix64 seeded with key, in NumPy and plain ints."""
    for key in (0, 1, 1234567, U64, 0x0123456789ABCDEF):
        expected = _splitmix64(key, 40)
        got = prng.words(key, np.arange(40, dtype=np.uint64))
        assert got.tolist() == expected
        assert prng.references(key, range(40)) == expected


def test_stream_key_is_sha256_of_domain_seed_stream() -> None:
    """key = SHA-256(b"gannet/prng/v1" || seed || stream u32 BE)[:8] little-endian."""
    seed = bytes(range(32))
    digest = hashlib.sha256(b"gannet/prng/v1" + seed + b"\x00\x00\x00\x01").digest()
    assert prng.stream_key(seed, 1) == int.from_bytes(digest[:8], "little")
    assert prng.stream_key(seed, 0) != prng.stream_key(seed, 1)


def test_draw_fixed_vector() -> None:
    """A job's first words and elements, derived by hand from the rule."""
    seed = b"\x07" * 32
    key = int.from_bytes(
        hashlib.sha256(b"gannet/prng/v1" + seed + (0).to_bytes(4, "big")).digest()[:8], "little"
    )
    expected = _splitmix64(key, 5)
    assert prng.draw(seed, 0, 5).tolist() == expected
    assert prng.draw(seed, 0, 3, start=2).tolist() == expected[2:]
    low = [w & 0xFF for w in expected]
    assert prng.to_int8(np.array(expected, dtype=np.uint64)).tolist() == [
        v - 256 if v > 127 else v for v in low
    ]


@CHECKS
@given(key=keys, start=st.integers(0, U64 - 64), count=st.integers(0, 64))
def test_numpy_words_match_plain_ints(key: int, start: int, count: int) -> None:
    """The vectorised uint64 generator equals the plain-int rule at any counter."""
    counters = np.arange(count, dtype=np.uint64) + np.uint64(start)
    assert prng.words(key, counters).tolist() == prng.references(key, range(start, start + count))


@CHECKS
@given(words=st.lists(st.integers(0, U64), max_size=50))
def test_element_mappings_match_plain_ints(words: list[int]) -> None:
    """int8 = low byte two's complement; float32 = ((w >> 40) - 2^23) / 2^23, exactly."""
    block = np.array(words, dtype=np.uint64)
    assert prng.to_int8(block).tolist() == [prng.int8_reference(w) for w in words]
    floats = prng.to_float32(block)
    assert floats.dtype == np.float32
    for value, word in zip(floats.tolist(), words, strict=True):
        numerator = prng.float32_reference_numerator(word)
        assert -(2**23) <= numerator < 2**23
        assert value * 2**23 == numerator  # exact: no rounding anywhere


@CHECKS
@given(
    key=keys,
    base=st.integers(0, 10**6),
    rows=st.integers(0, 6),
    cols=st.integers(0, 6),
    stride=st.integers(0, 10),
)
def test_block_counters_rule(key: int, base: int, rows: int, cols: int, stride: int) -> None:
    """Element (r, c) of a block comes from counter base + r * stride + c."""
    got = prng.words(key, prng.block_counters(base, rows, cols, stride))
    assert got.shape == (rows, cols)
    for r in range(rows):
        for c in range(cols):
            assert int(got[r, c]) == prng.word_reference(key, base + r * stride + c)


def test_bad_inputs_raise_prng_error() -> None:
    """Seeds are 32 bytes, streams u32, counters uint64 that stay below 2^64."""
    with pytest.raises(prng.PrngError, match="32 bytes"):
        prng.stream_key(b"short", 0)
    with pytest.raises(prng.PrngError, match="stream"):
        prng.stream_key(bytes(32), 2**32)
    with pytest.raises(prng.PrngError, match="uint64"):
        prng.words(1, np.arange(3, dtype=np.int64))
    with pytest.raises(prng.PrngError, match="2\\^64"):
        prng.block_counters(U64, 1, 2, 0)


def test_cuda_source_matches_numpy_on_host(host_kernels) -> None:
    """The CUDA generator's arithmetic (words, int8, float32) equals NumPy's, element for element.

    Batches of blocks with different bases and strides, including a key and counters that
    wrap mod 2^64 and a block wider than one thread block.
    """
    numpy = NumpyBackend()
    cases = [
        (0x0123456789ABCDEF, [0, 7, 1000], 3, 300, 311),
        (U64, [U64 - 5000, 2**40], 5, 17, 1000),
        (prng.stream_key(b"\x01" * 32, 1), [5], 64, 16, 1024),
    ]
    for key, bases, rows, cols, stride in cases:
        host_words = host_kernels.blocks(key, bases, rows, cols, stride, "words")
        for z, base in enumerate(bases):
            counters = prng.block_counters(base, rows, cols, stride)
            assert np.array_equal(host_words[z], prng.words(key, counters))
        for element in ("i8", "f32"):
            host = host_kernels.blocks(key, bases, rows, cols, stride, element)
            expected = numpy.blocks(key, bases, rows, cols, stride, element)
            assert host.tobytes() == expected.tobytes()


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_cuda_source_compiles_with_nvcc(tmp_path) -> None:
    """The generator and matmul kernels compile as CUDA (to PTX), the host shim aside."""
    path = tmp_path / "kernels.cu"
    path.write_text(prng.CUDA_SOURCE + MATMUL_CUDA_SOURCE)
    ptx = tmp_path / "kernels.ptx"
    subprocess.run(["nvcc", "--ptx", "-o", str(ptx), str(path)], check=True, capture_output=True)
    text = ptx.read_text()
    for name in ("gannet_words", "gannet_block_i8", "gannet_block_f32", "gannet_matmul_i8"):
        assert f".entry {name}(" in text
    assert "gannet_words" in host_source()


@pytest.mark.gpu
def test_cupy_generator_matches_numpy() -> None:
    """On a device, cupy.RawKernel over the CUDA source produces NumPy's arrays bit for bit."""
    pytest.importorskip("cupy")
    from vm.backend import BackendUnavailable, get_backend

    try:
        gpu = get_backend("cupy")
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    numpy = NumpyBackend()
    for seed in (bytes(32), b"\xff" * 32, bytes(range(32))):
        for stream in (prng.STREAM_A, prng.STREAM_B):
            key = prng.stream_key(seed, stream)
            for element in ("i8", "f32"):
                args = (key, [0, 12345, 2**33], 33, 1000, 4096, element)
                got = gpu.to_host(gpu.blocks(*args))
                assert got.tobytes() == numpy.blocks(*args).tobytes()
