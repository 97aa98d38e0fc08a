"""Tx spam at 10x the mempool size against a 4-validator testnet.

Every node runs a small mempool: nodes 0 and 1 hold at most `MAX_TXS` txs
(count binds), nodes 2 and 3 at most `MAX_BYTES` bytes (bytes bind, about 160
transfers), and blocks carry at most `MAX_BLOCK_TXS` txs, so the spam cannot
simply drain into blocks. Eight spammer accounts send `10 * MAX_TXS` txs over
`SPREAD_S` seconds in batches to all four nodes in turn: valid transfers at the
minimum fee (each spammer's next nonces at that node), duplicates of them,
transfers with a broken signature and oversize txs. Meanwhile an honest account
sends transfers one by one at twice the minimum fee, and a monitor reads every
node's `mempool_size` / `mempool_bytes` every 50 ms.

Checked: no mempool ever holds more than its limits (and the spam did fill
them); every bad signature and oversize tx is refused with its reason, every
duplicate is refused or lands once; every honest transfer is accepted
(it outbids the spam) and lands exactly once; the chain is one chain; the
median and mean block interval (header times) while the spam runs stay within
2x the target block time. `GANNET_SPAM_FACTOR` scales the spam (the slow variant sends 100x).
"""

from __future__ import annotations

import http.client
import itertools
import os
import random
import statistics
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from node.config import NodeConfig
from tests.e2e.checks import check_no_evidence, check_same_chain, fetch_blocks, node_urls
from tests.e2e.cluster import Cluster
from tests.e2e.harness import (
    DevSigner,
    RpcError,
    random_address,
    raw_hex,
    rpc_batch,
    rpc_call,
    wait_included,
)

pytestmark = pytest.mark.e2e

BLOCK_TIME_MS = 250
MAX_TXS = 200
MAX_BYTES = 24 << 10  # about 160 transfers of ~150 bytes
MAX_TX_BYTES = 2 << 10
MAX_BLOCK_TXS = 20
SPAMMERS = 8
FACTOR = int(os.environ.get("GANNET_SPAM_FACTOR", "10"))
BATCH = 100  # the RPC's batch limit
SPREAD_S = 8.0  # the spam's length in CI (pool refill outpaces the small blocks throughout)
HONEST_TXS = 20
TIMEOUT_S = 60.0
MONITOR_S = 0.05
# What a duplicate may meet: the same tx pending or already in a block, or its
# sender's pool slot taken (a duplicate of a tx the pool had no room for).
DUPLICATE_REFUSAL = ("tx already known", "nonce too low", "mempool full", "nonce gap too large")


def small_mempool(i: int, config: NodeConfig) -> NodeConfig:
    """Nodes 0, 1: the count binds; nodes 2, 3: the bytes bind. Small blocks everywhere."""
    count, size = (MAX_TXS, 64 << 10) if i < 2 else (5 * MAX_TXS, MAX_BYTES)
    mempool = replace(config.mempool, max_txs=count, max_bytes=size, max_tx_bytes=MAX_TX_BYTES)
    return replace(config, mempool=mempool,
                   consensus=replace(config.consensus, max_block_txs=MAX_BLOCK_TXS))


def limits_of(i: int) -> tuple[int, int]:
    """(max txs, max bytes) of node i."""
    return (MAX_TXS, 64 << 10) if i < 2 else (5 * MAX_TXS, MAX_BYTES)


class Monitor(threading.Thread):
    """Reads every node's mempool size and bytes; keeps each node's maxima and the
    (time, height) of node 0's head for the block intervals."""

    def __init__(self, urls: list[str]) -> None:
        super().__init__(name="mempool-monitor", daemon=True)
        self.urls = urls
        self.max_size = [0] * len(urls)
        self.max_bytes = [0] * len(urls)
        self.reads = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            for i, url in enumerate(self.urls):
                try:
                    status = rpc_call(url, "gannet_status", timeout=2)
                except (OSError, http.client.HTTPException, RpcError):
                    continue
                self.max_size[i] = max(self.max_size[i], int(status["mempool_size"]))
                self.max_bytes[i] = max(self.max_bytes[i], int(status["mempool_bytes"]))
                self.reads += 1
            time.sleep(MONITOR_S)


class Honest(threading.Thread):
    """Sends transfers one at a time, in nonce order, at twice the minimum fee."""

    def __init__(self, urls: list[str], signer: DevSigner, fee: int, spread_s: float) -> None:
        super().__init__(name="honest-sender", daemon=True)
        self.urls, self.signer, self.fee, self.spread_s = urls, signer, fee, spread_s
        self.accepted: list[str] = []
        self.refused: list[str] = []

    def run(self) -> None:
        to = random_address()
        for nonce in range(HONEST_TXS):
            url = self.urls[nonce % len(self.urls)]
            try:
                self.accepted.append(rpc_call(url, "gannet_sendRawTransaction", raw_hex(
                    self.signer.transfer(to, 1 + nonce, nonce, self.fee)), timeout=5))
            except RpcError as exc:
                self.refused.append(f"nonce {nonce}: {exc.message}")
            time.sleep(self.spread_s / HONEST_TXS)  # pacing


def bad_signature(raw: str) -> str:
    """The same tx with one bit of its signature (the last 64 bytes) flipped."""
    data = bytearray.fromhex(raw[2:])
    data[-10] ^= 0x01
    return "0x" + data.hex()


def oversize(raw: str, rng: random.Random) -> str:
    """A signed tx padded past the per-tx byte limit."""
    pad = rng.randrange(MAX_TX_BYTES, 3 * MAX_TX_BYTES)
    return raw + os.urandom(pad).hex()


class Spammer:
    """Builds batches of BATCH items: 60 % valid transfers at the minimum fee (each
    spammer's next nonces at the node the batch goes to, so a refused tx is offered
    again), 20 % duplicates of txs sent before, 15 % bad signatures, 5 % oversize."""

    MIX = {"valid": 60, "duplicate": 20, "bad-signature": 15, "oversize": 5}

    def __init__(self, signers: list[DevSigner], fee: int, rng: random.Random) -> None:
        self.signers, self.fee, self.rng = signers, fee, rng
        self.to = [random_address() for _ in signers]
        self.sent: list[str] = []
        self.kinds: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()

    def batch(self, url: str) -> list[tuple[str, str]]:
        """The next batch for the node at `url`."""
        pending = [a["pending_nonce"] for a in rpc_batch(
            url, [("gannet_getAccount", [s.address]) for s in self.signers], timeout=10)]
        batch: list[tuple[str, str]] = []
        for k in range(self.MIX["valid"]):
            s = k % len(self.signers)
            nonce = pending[s] + k // len(self.signers)
            batch.append(("valid", raw_hex(self.signers[s].transfer(self.to[s], 1, nonce,
                                                                    self.fee))))
        self.sent += [raw for _, raw in batch]
        rng = self.rng
        batch += [("duplicate", rng.choice(self.sent)) for _ in range(self.MIX["duplicate"])]
        batch += [("bad-signature", bad_signature(rng.choice(self.sent)))
                  for _ in range(self.MIX["bad-signature"])]
        batch += [("oversize", oversize(rng.choice(self.sent), rng))
                  for _ in range(self.MIX["oversize"])]
        rng.shuffle(batch)
        return batch

    def send(self, urls: list[str], total: int, spread_s: float) -> None:
        """`total` txs in batches to the nodes in turn, spread over `spread_s`."""
        batches = total // BATCH
        start = time.monotonic()
        for index in range(batches):
            url = urls[index % len(urls)]
            batch = self.batch(url)
            results = rpc_batch(url, [("gannet_sendRawTransaction", [raw])
                                      for _, raw in batch], timeout=30)
            for (kind, _), result in zip(batch, results, strict=True):
                self.kinds[kind] += 1
                outcome = _reason(result.message) if isinstance(result, RpcError) \
                    else "accepted"
                self.outcomes[f"{kind}: {outcome}"] += 1
            pause = start + spread_s * (index + 1) / batches - time.monotonic()
            time.sleep(max(0.0, pause))  # pacing the load, not waiting for a condition


def _reason(message: str) -> str:
    """The kind of a refusal: its message up to the first colon or parenthesis."""
    return message.split(":", 1)[0].split("(", 1)[0].strip()


def block_intervals_ms(url: str, low: int, high: int) -> list[int]:
    """Header time differences between consecutive blocks low..high."""
    times = [int(b["time_ms"]) for b in fetch_blocks(url, low, high)]
    return [b - a for a, b in itertools.pairwise(times)]


def run_spam(tmp_path: Path, factor: int, spread_s: float) -> None:
    total = factor * MAX_TXS
    with Cluster(tmp_path, n=4, block_time_ms=BLOCK_TIME_MS, funded_accounts=1 + SPAMMERS,
                 configure=small_mempool) as cluster:
        urls = node_urls(cluster)
        cluster.wait_height(2, timeout_s=TIMEOUT_S)
        fee = int(cluster.rpc(0, "gannet_estimateFee")["min_fee"])
        spammers = [cluster.faucet_signer(1 + k) for k in range(SPAMMERS)]
        spam = Spammer(spammers, fee, random.Random(6))
        monitor = Monitor(urls)
        honest = Honest(urls, cluster.faucet_signer(0), 2 * fee, spread_s)
        monitor.start()
        first = cluster.rpc(0, "gannet_blockNumber")
        started = time.monotonic()
        honest.start()
        try:
            spam.send(urls, total, spread_s)
            honest.join(TIMEOUT_S)
        finally:
            spam_s = time.monotonic() - started
            last = cluster.rpc(0, "gannet_blockNumber")
            time.sleep(0.5)
            monitor.stopping.set()
            monitor.join(10)

        assert not honest.refused, f"honest transfers refused: {honest.refused}"
        assert len(honest.accepted) == HONEST_TXS
        included = wait_included(urls[0], honest.accepted, timeout_s=TIMEOUT_S)
        for info in included:
            assert info["receipt"]["status"] == "ok", info
        for i in range(cluster.n):
            count, size = limits_of(i)
            assert monitor.max_size[i] <= count and monitor.max_bytes[i] <= size, (
                f"node {i}: mempool held {monitor.max_size[i]} txs / {monitor.max_bytes[i]} "
                f"bytes, limits {count} / {size}")
            assert 10 * monitor.max_size[i] >= 9 * count or 10 * monitor.max_bytes[i] >= \
                9 * size, f"node {i}: the spam never filled its mempool: " \
                          f"{monitor.max_size[i]} txs, {monitor.max_bytes[i]} bytes"
        kinds, outcomes = spam.kinds, spam.outcomes
        assert outcomes["bad-signature: invalid tx signature"] == kinds["bad-signature"], outcomes
        assert outcomes["oversize: tx too large"] == kinds["oversize"], outcomes
        odd = {k: n for k, n in outcomes.items() if k.startswith("duplicate")
               and k.split(": ", 1)[1] not in ("accepted", *DUPLICATE_REFUSAL)}
        assert not odd, f"duplicates refused for other reasons: {odd}"

        intervals = block_intervals_ms(urls[0], first + 1, last)
        median = statistics.median(intervals)
        mean = statistics.mean(intervals)
        assert median <= 2 * BLOCK_TIME_MS and mean <= 2 * BLOCK_TIME_MS, (
            f"block interval under spam: median {median} ms, mean {mean:.0f} ms")
        height = check_same_chain(urls)
        hashes = Counter(h for b in fetch_blocks(urls[0], 1, height) for h in b["txs"])
        assert max(hashes.values()) == 1, "a tx is in the chain twice"
        assert all(hashes[h] == 1 for h in honest.accepted)
        check_no_evidence(urls)
        print(f"tx spam: {total} txs ({dict(kinds)}) in {spam_s:.1f} s to mempools of "
              f"{MAX_TXS} txs (nodes 0, 1) / {MAX_BYTES} bytes (nodes 2, 3); max held "
              f"{monitor.max_size} txs, {monitor.max_bytes} bytes ({monitor.reads} reads); "
              f"outcomes {dict(sorted(outcomes.items()))}; block interval under spam "
              f"median {median} ms, mean {mean:.0f} ms, max "
              f"{max(intervals)} ms over heights {first + 1}..{last} (target {BLOCK_TIME_MS} "
              f"ms); honest: {HONEST_TXS} of {HONEST_TXS} included")


def test_spam_at_10x_the_mempool_keeps_limits_and_block_time(tmp_path: Path) -> None:
    run_spam(tmp_path, FACTOR, SPREAD_S)


@pytest.mark.slow
def test_spam_at_100x_the_mempool(tmp_path: Path) -> None:
    run_spam(tmp_path, 100, 10 * SPREAD_S)
