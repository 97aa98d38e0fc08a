"""kill -9 random validators of a loaded 4-validator testnet, one at a time, many times.

A load thread sends transfers from a faucet account to whichever node answers
(the tx for a nonce is always the same bytes, so a resend after a kill is the
same tx); a watcher thread records every tx an RPC reported as included, with
its height and index. Meanwhile a random validator is killed with SIGKILL,
restarted after a short random pause, and waited for until it has caught up;
never more than one is down. Afterwards, on every node:

- the same block hash and app hash at every height (no fork, one state);
- every tx reported included is in the chain exactly once, where it was reported;
- no evidence against anyone (every validator is honest, crashes included);
- GPU is conserved: the genesis accounts (the faucet, the validators' operators,
  who receive the fees) plus the recipients hold what genesis gave out, and the
  faucet's nonce equals the number of txs in the chain (it is the only sender).

`GANNET_TESTNET_KILLS` sets the kills of the default run (20), the slow soak
does 100; `GANNET_TESTNET_SEED` replays a run's kill schedule.
"""

from __future__ import annotations

import http.client
import os
import random
import re
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.checks import (
    check_no_evidence,
    check_same_chain,
    fetch_blocks,
    node_urls,
    total_gpu,
    wait_converged,
)
from tests.e2e.cluster import Cluster
from tests.e2e.harness import (
    DevSigner,
    RpcError,
    genesis_account_total,
    random_address,
    raw_hex,
    read_genesis,
    rpc_batch,
    rpc_batch_chunked,
    rpc_call,
    wait_until,
)

pytestmark = pytest.mark.e2e

KILLS = int(os.environ.get("GANNET_TESTNET_KILLS", "20"))
SOAK_KILLS = 100
BLOCK_TIME_MS = 200
DOWN_S = (0.1, 0.8)  # how long a killed node stays down
UP_S = (0.0, 0.5)  # how long all four run between a catch-up and the next kill
CATCH_UP_S = 30.0
AFTER_RESTART = 2  # heights all four commit after a restart, before the next kill
TIMEOUT_S = 60.0
N_RECIPIENTS = 4
SEND_BATCH = 5
MAX_OUTSTANDING = 40
SEND_PAUSE_S = 0.05
WATCH_PAUSE_S = 0.2
# A resend after a kill, or to a node gossip has not reached yet, meets these.
BENIGN_REJECTION = re.compile(r"already known|nonce too low|nonce gap")


class Load(threading.Thread):
    """Sends faucet transfers in nonce order to the first node that answers.

    Each batch starts at the node's pending nonce, so a node that lost txs in a
    kill (or has not got them by gossip yet) is given them again.
    """

    def __init__(self, urls: list[str], signer: DevSigner, recipients: list[str],
                 fee: int) -> None:
        super().__init__(name="testnet-load", daemon=True)
        self.urls, self.signer, self.recipients, self.fee = urls, signer, recipients, fee
        self.accepted: list[str] = []
        self.rejections: list[str] = []
        self.end_nonce = 0  # one past the highest nonce a node accepted
        self.stopping = threading.Event()
        self._node = 0

    def raw_for(self, nonce: int) -> str:
        to = self.recipients[nonce % len(self.recipients)]
        return raw_hex(self.signer.transfer(to, 1 + nonce % 997, nonce, self.fee))

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.send_batch(self.urls[self._node], None)
            except (OSError, http.client.HTTPException, ValueError):
                self._node = (self._node + 1) % len(self.urls)  # that node is down
            time.sleep(SEND_PAUSE_S)

    def send_batch(self, url: str, end: int | None) -> bool:
        """Send the next nonces this node lacks (below `end` if given); True when the
        chain holds every nonce below `end`."""
        account = rpc_call(url, "gannet_getAccount", self.signer.address, timeout=2)
        first, committed = account["pending_nonce"], account["nonce"]
        if end is not None and committed >= end:
            return True
        if first - committed >= MAX_OUTSTANDING:
            return False
        last = first + SEND_BATCH if end is None else min(first + SEND_BATCH, end)
        nonces = range(first, last)
        results = rpc_batch(url, [("gannet_sendRawTransaction", [self.raw_for(n)])
                                  for n in nonces], timeout=2) if nonces else []
        for nonce, result in zip(nonces, results, strict=True):
            if isinstance(result, RpcError):
                self.rejections.append(f"nonce {nonce}: {result.message}")
                break
            self.accepted.append(result)
            self.end_nonce = max(self.end_nonce, nonce + 1)
        return False

    def finish(self, url: str) -> None:
        """After the kills: make sure every nonce ever accepted gets into the chain."""
        end = self.end_nonce
        wait_until(lambda: self.send_batch(url, end), TIMEOUT_S,
                   f"the faucet's txs below nonce {end} in the chain", interval_s=0.2)


class Watcher(threading.Thread):
    """Records each accepted tx that a node reports as included: hash -> (height, index)."""

    def __init__(self, urls: list[str], load: Load) -> None:
        super().__init__(name="testnet-watcher", daemon=True)
        self.urls, self.load = urls, load
        self.included: dict[str, tuple[int, int]] = {}
        self.stopping = threading.Event()
        self._node = 0
        self._taken = 0
        self._pending: set[str] = set()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.poll_once()
            time.sleep(WATCH_PAUSE_S)

    def poll_once(self) -> None:
        accepted = self.load.accepted[self._taken:]
        self._taken += len(accepted)
        self._pending.update(accepted)
        hashes = sorted(self._pending)[:500]
        url = self.urls[self._node]
        try:
            infos = rpc_batch_chunked(url, [("gannet_getTransaction", [h]) for h in hashes])
        except (OSError, http.client.HTTPException, ValueError):
            self._node = (self._node + 1) % len(self.urls)
            return
        for h, info in zip(hashes, infos, strict=True):
            if not isinstance(info, RpcError) and info["status"] == "included":
                assert info["receipt"]["status"] == "ok", info
                self.included[h] = (info["height"], info["index"])
                self._pending.discard(h)


def kill_and_restart(cluster: Cluster, i: int, rng: random.Random) -> None:
    """kill -9 node i, start it again after a pause, and wait until it has caught up
    and the chain has committed again with all four up (else the next kill would
    take a second node out of a round still in progress)."""
    cluster.kill9(i)
    time.sleep(rng.uniform(*DOWN_S))  # the fault's length, not a wait for a condition
    cluster.start(i)
    others = [j for j in range(cluster.n) if j != i]
    target = max(h for h in cluster.heights(others) if h is not None)
    cluster.wait_height(target + AFTER_RESTART, timeout_s=CATCH_UP_S)


def check_included_txs(urls: list[str], height: int, included: dict[str, tuple[int, int]]
                       ) -> int:
    """On every node each reported tx is in blocks 1..height once, where reported; the
    number of txs in those blocks."""
    total = 0
    for url in urls:
        blocks = fetch_blocks(url, 1, height)
        where = {}
        counts: Counter[str] = Counter()
        for block in blocks:
            for index, h in enumerate(block["txs"]):
                counts[h] += 1
                where[h] = (block["height"], index)
        twice = [h for h, c in counts.items() if c > 1]
        assert not twice, f"{url}: txs included more than once: {twice[:5]}"
        for h, place in included.items():
            assert where.get(h) == place, f"{url}: tx {h} reported at {place}, " \
                                          f"chain has it at {where.get(h)}"
        total = sum(counts.values())
    return total


def check_supply(cluster: Cluster, recipients: list[str], faucet: str) -> None:
    """Genesis accounts plus recipients hold the genesis total; faucet nonce = chain txs."""
    genesis = read_genesis(cluster.home(0))
    supply = genesis_account_total(genesis)
    accounts = [a["address"] for a in genesis["accounts"]] + recipients
    url = cluster.node(0).url

    def consistent() -> bool:
        height, total = total_gpu(url, accounts)
        assert total == supply, f"at height {height} the accounts hold {total}, genesis " \
                                f"gave {supply} (difference {total - supply})"
        nonce = rpc_call(url, "gannet_getAccount", faucet)["nonce"]
        txs = sum(b["tx_count"] for b in fetch_blocks(url, 1, height))
        return nonce == txs  # false only when a block landed between the reads

    wait_until(consistent, TIMEOUT_S, "the faucet nonce to equal the txs in the chain")


def run_kills(tmp_path: Path, kills: int) -> None:
    seed = int(os.environ.get("GANNET_TESTNET_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    context = f"(GANNET_TESTNET_SEED={seed}; logs in {tmp_path})"
    with Cluster(tmp_path, n=4, block_time_ms=BLOCK_TIME_MS) as cluster:
        urls = node_urls(cluster)
        cluster.wait_height(2, timeout_s=TIMEOUT_S)
        fee = int(cluster.rpc(0, "gannet_estimateFee")["min_fee"])
        signer = cluster.faucet_signer()
        recipients = [random_address() for _ in range(N_RECIPIENTS)]
        load = Load(urls, signer, recipients, fee)
        watcher = Watcher(urls, load)
        load.start()
        watcher.start()
        try:
            started = max(h for h in cluster.heights() if h is not None)
            for _ in range(kills):
                kill_and_restart(cluster, rng.randrange(cluster.n), rng)
                time.sleep(rng.uniform(*UP_S))
        except AssertionError as exc:
            raise AssertionError(f"{exc} {context}") from exc
        finally:
            load.stopping.set()
            load.join(10)
            watcher.stopping.set()
            watcher.join(10)
        # Every accepted nonce gets in, the mempools drain; a last look at what got in.
        load.finish(cluster.node(0).url)
        wait_until(lambda: all(cluster.rpc(i, "gannet_status")["mempool_size"] == 0
                               for i in range(cluster.n)), TIMEOUT_S, "empty mempools")
        head = wait_converged(urls, timeout_s=TIMEOUT_S)
        watcher.poll_once()

        height = check_same_chain(urls)
        assert height >= head["height"] > started, context
        in_chain = check_included_txs(urls, height, watcher.included)
        check_no_evidence(urls)
        check_supply(cluster, recipients, signer.address)
        odd = [r for r in load.rejections if not BENIGN_REJECTION.search(r)]
        assert not odd, f"transfers rejected: {odd[:5]} {context}"
        assert len(watcher.included) >= kills, f"too little load got in {context}"
        print(f"testnet soak: {kills} kills, heights {started}..{height}, "
              f"{len(watcher.included)} txs seen included of {in_chain} in the chain, "
              f"{len(load.rejections)} benign rejections {context}")


@pytest.mark.timeout(max(300, 10 * KILLS))
def test_kill9_random_validators_under_load(tmp_path: Path) -> None:
    run_kills(tmp_path, KILLS)


@pytest.mark.slow
@pytest.mark.timeout(10 * SOAK_KILLS)
def test_kill9_soak(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if "slow" not in request.config.getoption("markexpr", "").replace("not slow", ""):
        pytest.skip("soak run: select it with -m slow")
    run_kills(tmp_path, SOAK_KILLS)
