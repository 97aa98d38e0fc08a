"""The kernel registry: params, tiles from the seed, one-tile re-execution, comparison classes."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vm import prng
from vm.backend import NumpyBackend
from vm.kernels import (
    MATMUL_F32,
    MATMUL_I8,
    MAX_TILE_BYTES,
    KernelError,
    ParamError,
    Params,
    TileIndexError,
    UnknownKernel,
    get_kernel,
    kernel_names,
)
from vm.merkle import MAX_TILES
from vm.tiles import TileGrid, decode_tile, split

CHECKS = settings(max_examples=25, deadline=None)
seeds = st.binary(min_size=32, max_size=32)
NUMPY = NumpyBackend()


@st.composite
def small_params(draw: st.DrawFn, kernel=MATMUL_I8) -> Params:
    """Small valid params: tile side 1-4, up to 4 x 4 tiles, k up to 40."""
    t = draw(st.integers(1, 4))
    m, n = t * draw(st.integers(1, 4)), t * draw(st.integers(1, 4))
    return kernel.validate_params({"m": m, "n": n, "k": draw(st.integers(1, 40)), "tile": t})


def _reference_inputs(seed: bytes, params: Params) -> tuple[list[list[int]], list[list[int]]]:
    """A and B as word lists from the plain-int PRNG rule (A: stream 0, B: stream 1)."""
    m, n, k = params["m"], params["n"], params["k"]
    key_a, key_b = prng.stream_key(seed, 0), prng.stream_key(seed, 1)
    a = [[prng.word_reference(key_a, i * k + j) for j in range(k)] for i in range(m)]
    b = [[prng.word_reference(key_b, i * n + j) for j in range(n)] for i in range(k)]
    return a, b


def test_registry() -> None:
    """matmul_i8 is exact, matmul_f32 is tolerance; unknown names are UnknownKernel."""
    assert kernel_names() == ("matmul_f32", "matmul_i8")
    assert get_kernel("matmul_i8") is MATMUL_I8 and MATMUL_I8.comparison == "exact"
    assert get_kernel("matmul_f32") is MATMUL_F32 and MATMUL_F32.comparison == "tolerance"
    assert [spec.name for spec in MATMUL_I8.schema] == ["m", "n", "k", "tile"]
    assert "gannet_matmul_i8" in MATMUL_I8.cuda_source
    with pytest.raises(UnknownKernel, match="'conv2d'"):
        get_kernel("conv2d")


VALID = {"m": 64, "n": 32, "k": 100, "tile": 16}


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"m": None}, "'m'"),  # missing
        ({"extra": 1}, "'extra'"),
        ({"k": True}, "'k'"),
        ({"k": 3.0}, "'k'"),
        ({"m": 0}, "'m'"),
        ({"n": 16400}, "'n'"),
        ({"k": 0}, "'k'"),
        ({"k": 16385}, "'k'"),
        ({"tile": 17}, "'tile'"),
        ({"tile": 0}, "'tile'"),
        ({"tile": 5}, "'tile'"),  # does not divide 64
        ({"m": 16384, "n": 16384, "tile": 8}, "'tile'"),  # 2^22 tiles
    ],
)
def test_bad_params_name_the_parameter(change: dict, name: str) -> None:
    """Each broken field gives a ParamError naming that field."""
    raw = {**VALID, **change}
    raw = {key: value for key, value in raw.items() if value is not None}
    with pytest.raises(ParamError, match=name):
        MATMUL_I8.validate_params(raw)


def test_f32_k_is_bounded_for_its_tolerance() -> None:
    """matmul_f32 allows k up to 4096 (its tolerance argument needs k * 2^-24 <= 2^-12)."""
    assert MATMUL_F32.validate_params({**VALID, "k": 4096})["k"] == 4096
    with pytest.raises(ParamError, match="'k'"):
        MATMUL_F32.validate_params({**VALID, "k": 4097})


def test_sizes_counts_and_reveal() -> None:
    """Tiles are at most 1 KiB; 44 tiles of a 1024^2 output with proofs fit in 64 KiB."""
    params = MATMUL_I8.validate_params({"m": 1024, "n": 1024, "k": 1024, "tile": 16})
    assert MATMUL_I8.tile_count(params) == 4096
    assert MATMUL_I8.tile_bytes(params) == 1024 == MAX_TILE_BYTES
    assert MATMUL_I8.reveal_bytes(params, 44) == 44 * (1024 + 12 * 32) <= 65536
    biggest = MATMUL_I8.validate_params({"m": 16384, "n": 16384, "k": 1, "tile": 16})
    assert MATMUL_I8.tile_count(biggest) == MAX_TILES
    assert MATMUL_I8.reveal_bytes(biggest, 1) == 1024 + 20 * 32
    one = MATMUL_I8.validate_params({"m": 1, "n": 1, "k": 1, "tile": 1})
    assert MATMUL_I8.reveal_bytes(one, 1) == 4


@CHECKS
@given(seed=seeds, params=small_params())
def test_i8_tiles_equal_plain_int_reference(seed: bytes, params: Params) -> None:
    """The provider's tiles are the int64 product of the plain-int inputs, tile by tile."""
    a_words, b_words = _reference_inputs(seed, params)
    a = np.array([[prng.int8_reference(w) for w in row] for row in a_words], dtype=np.int64)
    b = np.array([[prng.int8_reference(w) for w in row] for row in b_words], dtype=np.int64)
    grid = TileGrid(params["m"], params["n"], params["tile"])
    assert MATMUL_I8.compute(seed, params, NUMPY) == split(a @ b, grid, "<i4")


@CHECKS
@given(seed=seeds, params=small_params(), data=st.data())
def test_i8_one_tile_equals_the_whole_jobs_tile(seed: bytes, params: Params, data) -> None:
    """A verifier's re-executed tiles (any order, repeats) are the provider's bytes exactly."""
    tiles = MATMUL_I8.compute(seed, params, NUMPY)
    count = MATMUL_I8.tile_count(params)
    indices = data.draw(st.lists(st.integers(0, count - 1), min_size=1, max_size=6))
    assert MATMUL_I8.compute_tiles(seed, params, indices, NUMPY) == [tiles[i] for i in indices]
    assert MATMUL_I8.compute_tile(seed, params, indices[0], NUMPY) == tiles[indices[0]]
    assert MATMUL_I8.compute_tiles(seed, params, [], NUMPY) == []


def test_tile_needs_only_its_rows_and_columns() -> None:
    """Tile i is A[rows] @ B[:, cols] for the ranges tile_inputs names."""
    seed = bytes(range(32))
    params = MATMUL_I8.validate_params({"m": 48, "n": 32, "k": 300, "tile": 16})
    a, b = (x[0].astype(np.int64) for x in MATMUL_I8.inputs(seed, params, NUMPY))
    for index in range(MATMUL_I8.tile_count(params)):
        need = MATMUL_I8.tile_inputs(params, index)
        assert len(need.a_rows) == len(need.b_cols) == 16
        expected = (
            a[need.a_rows.start : need.a_rows.stop] @ b[:, need.b_cols.start : need.b_cols.stop]
        )
        tile = MATMUL_I8.compute_tile(seed, params, index, NUMPY)
        assert np.array_equal(decode_tile(tile, 16, "<i4"), expected)


def test_i8_fixed_vector() -> None:
    """A 2 x 2 x 3 job with tile side 1 and seed 0^32: tile 0 is C[0][0], derived by hand.

    The pinned bytes guard the rule itself (key domain, streams, counters, mapping): a
    change to any of them changes every job's output, which must be a deliberate fork.
    """
    seed = bytes(32)
    params = MATMUL_I8.validate_params({"m": 2, "n": 2, "k": 3, "tile": 1})
    key_a, key_b = prng.stream_key(seed, 0), prng.stream_key(seed, 1)
    a0 = [prng.int8_reference(prng.word_reference(key_a, j)) for j in range(3)]
    b0 = [prng.int8_reference(prng.word_reference(key_b, j * 2)) for j in range(3)]
    expected = sum(x * y for x, y in zip(a0, b0, strict=True))
    tile0 = MATMUL_I8.compute_tile(seed, params, 0, NUMPY)
    assert tile0 == expected.to_bytes(4, "little", signed=True)
    assert key_a == 0xD42EC0FA9FC5061F
    tiles = MATMUL_I8.compute(seed, params, NUMPY)
    assert [tile.hex() for tile in tiles] == ["14ebffff", "d3f3ffff", "2485ffff", "9deaffff"]


def test_exact_comparison() -> None:
    """Exact tiles match only bit for bit and only at the job's tile size."""
    params = MATMUL_I8.validate_params({"m": 32, "n": 32, "k": 64, "tile": 16})
    tile = MATMUL_I8.compute_tile(b"\x01" * 32, params, 3, NUMPY)
    assert MATMUL_I8.tiles_match(params, tile, tile)
    flipped = bytearray(tile)
    flipped[517] ^= 0x01
    assert not MATMUL_I8.tiles_match(params, tile, bytes(flipped))
    assert not MATMUL_I8.tiles_match(params, tile, tile[:-4])
    assert not MATMUL_I8.tiles_match(params, tile + b"\x00" * 4, tile + b"\x00" * 4)
    assert MATMUL_I8.tolerance(params) == 0.0


@CHECKS
@given(seed=seeds, params=small_params(MATMUL_F32))
def test_f32_tiles_within_bound_of_exact_product(seed: bytes, params: Params) -> None:
    """Each f32 element is within 2 * k^2 * 2^-24 of the exact product of the exact inputs."""
    a_words, b_words = _reference_inputs(seed, params)
    num = prng.float32_reference_numerator
    a = np.array([[num(w) for w in row] for row in a_words], dtype=np.int64)
    b = np.array([[num(w) for w in row] for row in b_words], dtype=np.int64)
    exact = a @ b  # the product times 2^46, exact: k * 2^46 < 2^63
    k, t = params["k"], params["tile"]
    tiles = MATMUL_F32.compute(seed, params, NUMPY)
    got = np.concatenate([decode_tile(tile, t, "<f4").ravel() for tile in tiles])
    want = np.concatenate(
        [
            decode_tile(tile, t, "<f8").ravel()
            for tile in split(exact / 2.0**46, _grid(params), "<f8")
        ]
    )
    assert np.all(np.abs(got.astype(np.float64) - want) <= 2 * k * k * 2.0**-24)
    for index in range(len(tiles)):
        assert MATMUL_F32.check_tile(seed, params, index, tiles[index], NUMPY)


def _grid(params: Params) -> TileGrid:
    return TileGrid(params["m"], params["n"], params["tile"])


def test_tolerance_comparison() -> None:
    """Within k^2 * 2^-22 per element passes; past it, NaN, or a wrong size fails."""
    params = MATMUL_F32.validate_params({"m": 16, "n": 16, "k": 1024, "tile": 16})
    assert MATMUL_F32.tolerance(params) == 0.25
    tile = MATMUL_F32.compute_tile(b"\x02" * 32, params, 0, NUMPY)
    ref = decode_tile(tile, 16, "<f4")
    assert MATMUL_F32.tiles_match(params, tile, tile)
    for delta, ok in ((0.125, True), (-0.25, True), (0.375, False), (-1.0, False)):
        changed = ref.copy()
        changed[7, 9] += np.float32(delta)
        assert MATMUL_F32.tiles_match(params, tile, changed.tobytes()) is ok
    changed = ref.copy()
    changed[0, 0] = np.nan
    assert not MATMUL_F32.tiles_match(params, tile, changed.tobytes())
    assert not MATMUL_F32.tiles_match(params, tile, tile[:8])
    # A provider who skips the last 10 % of k is far outside the bound.
    short = MATMUL_F32.validate_params({"m": 16, "n": 16, "k": 922, "tile": 16})
    assert not MATMUL_F32.tiles_match(
        params, tile, MATMUL_F32.compute_tile(b"\x02" * 32, short, 0, NUMPY)
    )


def test_bad_seed_and_index() -> None:
    """Seeds are 32 bytes; tile indices are ints inside the grid."""
    params = MATMUL_I8.validate_params({"m": 4, "n": 4, "k": 4, "tile": 2})
    with pytest.raises(KernelError, match="32 bytes"):
        MATMUL_I8.compute(b"\x00" * 31, params, NUMPY)
    for index in (-1, 4, True):
        with pytest.raises(TileIndexError):
            MATMUL_I8.compute_tile(bytes(32), params, index, NUMPY)
    with pytest.raises(TileIndexError):
        MATMUL_I8.tile_inputs(params, 4)


def test_cuda_matmul_source_matches_numpy_on_host(host_kernels) -> None:
    """The kernels' CUDA matmuls, run on the host, give NumPy's tiles (i8 exact, f32 in bound)."""
    seed = bytes(range(1, 33))
    for kernel in (MATMUL_I8, MATMUL_F32):
        params = kernel.validate_params({"m": 48, "n": 32, "k": 333, "tile": 16})
        a, b = kernel.inputs(seed, params, NUMPY)
        got = split(host_kernels.matmul(a, b)[0], _grid(params), kernel.out_dtype)
        expected = kernel.compute(seed, params, NUMPY)
        if kernel is MATMUL_I8:
            assert got == expected
        else:
            assert all(map(kernel.tiles_match, [params] * len(got), expected, got))
        # batched: the verifier's per-tile blocks through the same source
        indices = [5, 0, 5]
        tiles = kernel.compute_tiles(seed, params, indices, NUMPY)
        t, k, n = 16, 333, 32
        origins = [_grid(params).origin(i) for i in indices]
        key_a, key_b = prng.stream_key(seed, 0), prng.stream_key(seed, 1)
        blocks_a = host_kernels.blocks(key_a, [r * k for r, _ in origins], t, k, k, kernel.element)
        blocks_b = host_kernels.blocks(key_b, [c for _, c in origins], k, t, n, kernel.element)
        out = host_kernels.matmul(blocks_a, blocks_b)
        for tile, block in zip(tiles, out, strict=True):
            assert kernel.tiles_match(params, tile, block.astype(kernel.out_dtype).tobytes())


@pytest.mark.gpu
def test_cupy_kernels_match_numpy() -> None:
    """On a device: the whole job and sampled tiles through CuPy pass against NumPy."""
    pytest.importorskip("cupy")
    from vm.backend import BackendUnavailable, get_backend

    try:
        gpu = get_backend("cupy")
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    seed = b"\x42" * 32
    for kernel in (MATMUL_I8, MATMUL_F32):
        params = kernel.validate_params({"m": 256, "n": 128, "k": 1024, "tile": 16})
        gpu_tiles = kernel.compute(seed, params, gpu)
        cpu_tiles = kernel.compute(seed, params, NUMPY)
        indices = list(range(0, kernel.tile_count(params), 7))
        sampled = kernel.compute_tiles(seed, params, indices, gpu)
        for index, tile in zip(indices, sampled, strict=True):
            assert kernel.tiles_match(params, cpu_tiles[index], tile)
        assert all(map(kernel.tiles_match, [params] * len(gpu_tiles), cpu_tiles, gpu_tiles))
        if kernel.comparison == "exact":
            assert gpu_tiles == cpu_tiles
    assert math.isfinite(MATMUL_F32.tolerance(params))
