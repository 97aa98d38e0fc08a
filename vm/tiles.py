"""How a kernel's output matrix splits into tiles, and how a tile is written as bytes.

The rule: an M x N output with tile side T (T divides M and N) has
(M / T) * (N / T) tiles, indexed row-major: tile i covers output rows
[(i // (N / T)) * T, +T) and columns [(i % (N / T)) * T, +T). Its bytes are its
T * T elements, row-major, each little-endian in the kernel's output type
(int32 or float32), so every tile of a job has the same size, T * T * 4 bytes.
"""

from dataclasses import dataclass

import numpy as np


class TileError(ValueError):
    """A tile grid or a tile index does not fit the output it describes."""


@dataclass(frozen=True, slots=True)
class TileGrid:
    """An M x N output cut into T x T tiles."""

    rows: int
    cols: int
    tile: int

    def __post_init__(self) -> None:
        if min(self.rows, self.cols, self.tile) < 1:
            raise TileError(f"a tile grid needs positive sizes, got {self}")
        if self.rows % self.tile or self.cols % self.tile:
            raise TileError(f"tile {self.tile} must divide rows {self.rows} and cols {self.cols}")

    @property
    def tile_rows(self) -> int:
        """Tiles down the output."""
        return self.rows // self.tile

    @property
    def tile_cols(self) -> int:
        """Tiles across the output."""
        return self.cols // self.tile

    @property
    def count(self) -> int:
        """Tiles in all."""
        return self.tile_rows * self.tile_cols

    def origin(self, index: int) -> tuple[int, int]:
        """The (row, col) of tile `index`'s top-left element."""
        if not 0 <= index < self.count:
            raise TileError(f"tile index {index} is outside [0, {self.count})")
        return (index // self.tile_cols) * self.tile, (index % self.tile_cols) * self.tile


def split(output: np.ndarray, grid: TileGrid, dtype: str) -> list[bytes]:
    """The bytes of every tile of `output`, in tile-index order, elements as `dtype`."""
    if output.shape != (grid.rows, grid.cols):
        raise TileError(f"output is {output.shape}, the grid is {grid.rows}x{grid.cols}")
    t = grid.tile
    blocks = output.astype(dtype, copy=False).reshape(grid.tile_rows, t, grid.tile_cols, t)
    data = np.ascontiguousarray(blocks.transpose(0, 2, 1, 3)).tobytes()
    size = t * t * np.dtype(dtype).itemsize
    return [data[i * size : (i + 1) * size] for i in range(grid.count)]


def encode_tile(block: np.ndarray, dtype: str) -> bytes:
    """One tile's bytes: its elements row-major, as `dtype`."""
    return np.ascontiguousarray(block, dtype=dtype).tobytes()


def decode_tile(data: bytes, tile: int, dtype: str) -> np.ndarray:
    """A tile's T x T elements from its bytes (TileError if the size is wrong)."""
    itemsize = np.dtype(dtype).itemsize
    if len(data) != tile * tile * itemsize:
        raise TileError(f"a {tile}x{tile} {dtype} tile is {tile * tile * itemsize} bytes")
    return np.frombuffer(data, dtype=dtype).reshape(tile, tile)


def join(tiles: list[bytes], grid: TileGrid, dtype: str) -> np.ndarray:
    """The output matrix back from its tiles (the inverse of `split`)."""
    if len(tiles) != grid.count:
        raise TileError(f"the grid has {grid.count} tiles, got {len(tiles)}")
    t = grid.tile
    stacked = np.stack([decode_tile(data, t, dtype) for data in tiles])
    blocks = stacked.reshape(grid.tile_rows, grid.tile_cols, t, t).transpose(0, 2, 1, 3)
    return blocks.reshape(grid.rows, grid.cols)
