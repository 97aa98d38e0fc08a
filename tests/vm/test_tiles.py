"""Output tiling: row-major tile indices, tile bytes, split and join."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vm.tiles import TileError, TileGrid, decode_tile, encode_tile, join, split


@settings(max_examples=50, deadline=None)
@given(
    tr=st.integers(1, 5),
    tc=st.integers(1, 5),
    t=st.integers(1, 4),
    dtype=st.sampled_from(["<i4", "<f4"]),
)
def test_split_is_row_major_and_join_inverts_it(tr: int, tc: int, t: int, dtype: str) -> None:
    """Tile i starts at row (i // tile_cols) * T, col (i % tile_cols) * T; join undoes split."""
    grid = TileGrid(tr * t, tc * t, t)
    output = np.arange(grid.rows * grid.cols).reshape(grid.rows, grid.cols).astype(dtype)
    tiles = split(output, grid, dtype)
    assert len(tiles) == grid.count == tr * tc
    for index, data in enumerate(tiles):
        row0, col0 = grid.origin(index)
        assert (row0, col0) == ((index // tc) * t, (index % tc) * t)
        assert data == encode_tile(output[row0 : row0 + t, col0 : col0 + t], dtype)
        assert len(data) == t * t * 4
    assert np.array_equal(join(tiles, grid, dtype), output)


def test_tile_bytes_are_little_endian_row_major() -> None:
    """A 2 x 2 int32 tile [[1, 2], [3, -1]] is 01000000 02000000 03000000 ffffffff."""
    data = encode_tile(np.array([[1, 2], [3, -1]]), "<i4")
    assert data.hex() == "010000000200000003000000ffffffff"
    assert decode_tile(data, 2, "<i4").tolist() == [[1, 2], [3, -1]]


@pytest.mark.parametrize(("rows", "cols", "tile"), [(0, 4, 2), (4, 4, 0), (5, 4, 2), (4, 6, 4)])
def test_bad_grids_raise(rows: int, cols: int, tile: int) -> None:
    """Sizes are positive and the tile side divides both dimensions."""
    with pytest.raises(TileError):
        TileGrid(rows, cols, tile)


def test_bad_index_and_sizes_raise() -> None:
    """Indices stay inside the grid; tiles and outputs have the grid's sizes."""
    grid = TileGrid(4, 6, 2)
    with pytest.raises(TileError, match="outside"):
        grid.origin(6)
    with pytest.raises(TileError, match="outside"):
        grid.origin(-1)
    with pytest.raises(TileError):
        split(np.zeros((4, 4)), grid, "<i4")
    with pytest.raises(TileError):
        decode_tile(b"\x00" * 15, 2, "<i4")
    with pytest.raises(TileError):
        join([b"\x00" * 16], grid, "<i4")
