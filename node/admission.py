"""Transaction admission from RPC and peers: concurrent submissions share one batch.

Every `submit` that arrives within one turn of the event loop joins the same
`Mempool.add_many` call, so their signatures are checked together on the
verifier's threads instead of one by one on the event loop. Newly admitted txs
are handed to `on_admitted` (the node gossips them to its peers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from chain.errors import ChainError
from chain.mempool import Mempool

MAX_BATCH = 1024


class TxAdmission:
    """Collects raw txs submitted in one loop turn and admits them as one batch."""

    def __init__(self, mempool: Mempool, max_batch: int = MAX_BATCH,
                 on_admitted: Callable[[list[bytes]], None] | None = None) -> None:
        self._mempool = mempool
        self._max_batch = max_batch
        self._on_admitted = on_admitted
        self._waiting: list[tuple[bytes, asyncio.Future[bytes]]] = []

    async def submit(self, raw: bytes) -> bytes:
        """Admit `raw`; its tx hash, or the `ChainError` that says why not."""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting.append((raw, future))
        if len(self._waiting) == 1:
            asyncio.get_running_loop().call_soon(self._flush)
        elif len(self._waiting) >= self._max_batch:
            self._flush()
        return await future

    def _flush(self) -> None:
        batch, self._waiting = self._waiting, []
        if not batch:
            return
        results = self._mempool.add_many([raw for raw, _ in batch])
        if self._on_admitted is not None:
            admitted = [raw for (raw, _), result in zip(batch, results, strict=True)
                        if not isinstance(result, ChainError)]
            if admitted:
                self._on_admitted(admitted)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # the submitter was cancelled (client went away)
                continue
            if isinstance(result, ChainError):
                future.set_exception(result)
            else:
                future.set_result(result)
