"""An in-memory committed state for tests that apply blocks without a store."""

from __future__ import annotations

from collections.abc import Mapping


def commit_writes(committed: dict[bytes, bytes], writes: Mapping[bytes, bytes]) -> None:
    """Fold a block's write set into `committed` as the store's batch does: an empty
    value deletes the key."""
    for key, value in writes.items():
        if value:
            committed[key] = value
        else:
            committed.pop(key, None)
