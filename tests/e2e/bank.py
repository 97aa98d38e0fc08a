"""A Jepsen-style bank workload for a running testnet, and its checker.

`Bank(seed, accounts, funding, amount_max, fee)` is N accounts whose keys come
from the seed. `fund` gives each `funding` GPU from a faucet, so the bank
holds N * funding; from then on its accounts only transfer among themselves.
The transfer an account signs at a nonce is a function of (seed, account,
nonce): a resend after a crash, or to another node, is the same tx, never a
second one competing for the nonce.

`BankLoad` sends those transfers from worker threads (each owns some accounts
and talks to one node, the next one when that node stops answering) at a
total rate; `Acks` polls the nodes and records every tx a node reported as
committed ("acknowledged"), with its height and index. `BankLoad.finish`
resends what a crash lost until every nonce a node ever accepted is in the
chain.

`check_bank` then reads every node's chain over RPC and checks:
- the same block hash and app hash at every height on every node;
- every acknowledged tx is in every node's chain exactly once, where it was
  acknowledged, and no tx is anywhere twice;
- each bank account's txs carry nonces 0, 1, ... in chain order and its
  committed nonce counts them;
- each account's balance is what replaying the chain's bank txs (from their
  receipts) gives, and the bank's total (balances + fees paid) is N * funding.
"""

from __future__ import annotations

import hashlib
import http.client
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from chain.crypto import SigningKey
from tests.e2e.checks import check_same_chain, fetch_blocks, wait_converged
from tests.e2e.harness import (
    DevSigner,
    RpcError,
    hash_hex,
    raw_hex,
    read_at_one_height,
    rpc_batch,
    rpc_batch_chunked,
    rpc_call,
    wait_included,
    wait_until,
)

SEND_TIMEOUT_S = 2.0  # a node slower than this is treated as down; the worker moves on
TICK_S = 0.2
MAX_OUTSTANDING = 8  # txs of one account accepted but not yet committed
ACK_PAUSE_S = 0.3
ACK_POLL_MAX = 2000  # hashes polled per round
FINISH_TIMEOUT_S = 90.0
# A resend after a kill, or to a node gossip has not reached yet, meets these.
BENIGN_REJECTION = re.compile(r"already known|nonce too low|nonce gap")
NODE_DOWN = (OSError, http.client.HTTPException, ValueError)


class BankError(AssertionError):
    """The bank's books or its txs' placement in the chain break an invariant."""


@dataclass(frozen=True)
class Transfer:
    """One planned transfer of the bank: `sender` pays `amount` to `to` at `nonce`."""

    sender: int
    nonce: int
    to: int
    amount: int


class Bank:
    """N accounts with keys drawn from `seed`; planned transfers, signed on demand."""

    def __init__(self, seed: int, accounts: int, funding: int, amount_max: int, fee: int,
                 chain_id: str) -> None:
        if accounts < 2:
            raise ValueError(f"a bank needs at least 2 accounts, got {accounts}")
        self.seed = seed
        self.funding = funding
        self.amount_max = amount_max
        self.fee = fee
        self.signers = [DevSigner(SigningKey.from_seed(_derive(seed, "key", i)), chain_id)
                        for i in range(accounts)]
        self.addresses = [s.address for s in self.signers]
        self.index = {a: i for i, a in enumerate(self.addresses)}

    @property
    def total(self) -> int:
        """What the bank holds from funding on: balances plus every fee it paid."""
        return len(self.signers) * self.funding

    def planned(self, sender: int, nonce: int) -> Transfer:
        """The one transfer `sender` signs at `nonce` (a function of the seed)."""
        rng = random.Random(_derive(self.seed, "tx", sender, nonce))
        to = rng.randrange(len(self.signers) - 1)
        return Transfer(sender, nonce, to + (to >= sender), rng.randint(1, self.amount_max))

    def raw(self, sender: int, nonce: int) -> str:
        """The signed tx of `planned(sender, nonce)`, hex-encoded for sendRawTransaction."""
        t = self.planned(sender, nonce)
        return raw_hex(self.signers[sender].transfer(self.addresses[t.to], t.amount, nonce,
                                                     self.fee))

    def fund(self, url: str, faucet: DevSigner, timeout_s: float = 30.0) -> None:
        """Pay `funding` from the faucet to every account and wait until all is in."""
        start = rpc_call(url, "gannet_getAccount", faucet.address)["pending_nonce"]
        txs = [faucet.transfer(a, self.funding, start + k, self.fee)
               for k, a in enumerate(self.addresses)]
        sent = rpc_batch(url, [("gannet_sendRawTransaction", [raw_hex(t)]) for t in txs])
        failed = [r for r in sent if isinstance(r, RpcError)]
        if failed:
            raise BankError(f"funding txs rejected: {failed[:3]}")
        wait_included(url, [hash_hex(t) for t in txs], timeout_s)
        _, accounts = read_at_one_height(url, [("gannet_getAccount", [a])
                                               for a in self.addresses])
        wrong = [a["address"] for a in accounts if int(a["gpu"]) != self.funding or a["nonce"]]
        if wrong:
            raise BankError(f"bank accounts not fresh after funding: {wrong}")


def _derive(seed: int, *parts: object) -> bytes:
    """32 bytes that depend only on the seed and the parts."""
    return hashlib.sha256(":".join(map(str, (seed, *parts))).encode()).digest()


# --- load ---------------------------------------------------------------------------------


class BankLoad:
    """Worker threads sending the bank's planned transfers at about `rate` txs per second."""

    def __init__(self, bank: Bank, urls: Sequence[str], rate: float, workers: int) -> None:
        self.bank = bank
        self.urls = list(urls)
        self.rate = rate
        self.accepted: list[str] = []  # tx hashes some node accepted into its mempool
        self.rejections: list[str] = []
        self.errors: list[str] = []  # unexpected failures of a worker thread
        self.end_nonce = [0] * len(bank.signers)  # one past the highest accepted nonce
        self.stopping = threading.Event()
        count = max(1, min(workers, len(bank.signers)))
        self.threads = [threading.Thread(target=self._work, args=(w, count), daemon=True,
                                         name=f"bank-load-{w}") for w in range(count)]
        self._lock = threading.Lock()

    def start(self) -> BankLoad:
        """Start the workers."""
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop the workers and wait for them."""
        self.stopping.set()
        for thread in self.threads:
            thread.join(2 * SEND_TIMEOUT_S + 5)

    def _work(self, w: int, count: int) -> None:
        mine = list(range(w, len(self.bank.signers), count))
        share = self.rate / count
        node, budget, turn = w % len(self.urls), 0.0, 0
        try:
            while not self.stopping.is_set():
                began = time.monotonic()
                budget = min(budget + share * TICK_S, max(1.0, share))
                try:
                    sent = self._send_round(self.urls[node], mine, int(budget), turn)
                    budget -= sent
                    turn += 1
                except NODE_DOWN:
                    node = (node + 1) % len(self.urls)
                self.stopping.wait(max(0.0, TICK_S - (time.monotonic() - began)))
        except Exception as exc:  # recorded for the checker: a dead worker is a finding
            self.errors.append(f"worker {w}: {type(exc).__name__}: {exc}")

    def _send_round(self, url: str, mine: list[int], budget: int, turn: int) -> int:
        """Send up to `budget` next transfers of `mine` that this node lacks; how many."""
        if budget <= 0:
            return 0
        infos = rpc_batch(url, [("gannet_getAccount", [self.bank.addresses[i]]) for i in mine],
                          timeout=SEND_TIMEOUT_S)
        room: dict[int, tuple[int, int]] = {}
        for i, info in zip(mine, infos, strict=True):
            if isinstance(info, RpcError):
                raise BankError(f"gannet_getAccount failed: {info}")
            room[i] = (info["pending_nonce"], MAX_OUTSTANDING - (info["pending_nonce"]
                                                                 - info["nonce"]))
        plan: list[tuple[int, int]] = []
        order = mine[turn % len(mine):] + mine[:turn % len(mine)]
        while len(plan) < budget and any(room[i][1] > 0 for i in order):
            for i in order:
                nonce, left = room[i]
                if left > 0 and len(plan) < budget:
                    plan.append((i, nonce))
                    room[i] = (nonce + 1, left - 1)
        plan.sort()
        results = rpc_batch(url, [("gannet_sendRawTransaction", [self.bank.raw(i, n)])
                                  for i, n in plan], timeout=SEND_TIMEOUT_S) if plan else []
        refused: set[int] = set()
        for (i, nonce), result in zip(plan, results, strict=True):
            if i in refused:
                continue
            if isinstance(result, RpcError):
                self.rejections.append(f"account {i} nonce {nonce}: {result.message}")
                refused.add(i)  # its later nonces in this round were gaps
                continue
            with self._lock:
                self.accepted.append(result)
                self.end_nonce[i] = max(self.end_nonce[i], nonce + 1)
        return len(plan)

    def unexpected_rejections(self) -> list[str]:
        """Rejections a correct node would not give this load."""
        return [r for r in self.rejections if not BENIGN_REJECTION.search(r)]

    def finish(self, urls: Sequence[str], timeout_s: float = FINISH_TIMEOUT_S) -> None:
        """After the load stopped: resend whatever a crash lost until every nonce any node
        accepted is committed (so no mempool keeps a tx waiting on a lost one)."""
        ends = list(self.end_nonce)

        def all_in() -> bool:
            for url in urls:
                try:
                    return self._resend_missing(url, ends)
                except NODE_DOWN:
                    continue
            return False

        wait_until(all_in, timeout_s, f"the bank's accepted nonces {ends} in the chain",
                   interval_s=0.3)

    def _resend_missing(self, url: str, ends: list[int]) -> bool:
        infos = rpc_batch(url, [("gannet_getAccount", [a]) for a in self.bank.addresses],
                          timeout=SEND_TIMEOUT_S)
        calls = []
        for i, info in enumerate(infos):
            if isinstance(info, RpcError):
                raise BankError(f"gannet_getAccount failed: {info}")
            last = min(ends[i], info["pending_nonce"] + MAX_OUTSTANDING)
            calls += [("gannet_sendRawTransaction", [self.bank.raw(i, n)])
                      for n in range(info["pending_nonce"], last)]
        for result in rpc_batch_chunked(url, calls):
            if isinstance(result, RpcError):
                self.rejections.append(f"resend: {result.message}")
        return all(info["nonce"] >= end for info, end in zip(infos, ends, strict=True))


class Acks(threading.Thread):
    """Records each accepted tx that some node reports committed: hash -> (height, index)."""

    def __init__(self, urls: Sequence[str], load: BankLoad) -> None:
        super().__init__(name="bank-acks", daemon=True)
        self.urls, self.load = list(urls), load
        self.committed: dict[str, tuple[int, int]] = {}
        self.failed_receipts: dict[str, str] = {}
        self.errors: list[str] = []
        self.stopping = threading.Event()
        self._node = 0
        self._taken = 0
        self._pending: set[str] = set()

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                self.poll_once()
                self.stopping.wait(ACK_PAUSE_S)
        except Exception as exc:  # recorded for the checker
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def stop(self) -> None:
        """Stop polling and wait for the thread."""
        self.stopping.set()
        self.join(30)

    def poll_once(self, limit: int = ACK_POLL_MAX) -> int:
        """Ask one node about up to `limit` accepted, not yet acknowledged txs; how many
        are still waiting."""
        accepted = self.load.accepted[self._taken:]
        self._taken += len(accepted)
        self._pending.update(h for h in accepted if h not in self.committed)
        hashes = sorted(self._pending)[:limit]
        url = self.urls[self._node]
        try:
            infos = rpc_batch_chunked(url, [("gannet_getTransaction", [h]) for h in hashes])
        except NODE_DOWN:
            self._node = (self._node + 1) % len(self.urls)
            return len(self._pending)
        for h, info in zip(hashes, infos, strict=True):
            if isinstance(info, RpcError) or info["status"] != "included":
                continue
            self.committed[h] = (info["height"], info["index"])
            if info["receipt"]["status"] != "ok":
                self.failed_receipts[h] = info["receipt"]["reason"]
            self._pending.discard(h)
        return len(self._pending)

    def drain(self) -> None:
        """Poll (after the load finished) until every accepted tx is acknowledged."""
        wait_until(lambda: self.poll_once(limit=10**9) == 0, FINISH_TIMEOUT_S,
                   "every accepted bank tx to be acknowledged", interval_s=0.3)


# --- checker ----------------------------------------------------------------------------


@dataclass
class BankResult:
    """What the checker found: figures for the report."""

    height: int = 0
    txs_in_chain: int = 0
    bank_txs: int = 0
    acknowledged: int = 0
    failed_receipts: int = 0
    fees_paid: int = 0
    balances: list[int] = field(default_factory=list)


def check_bank(urls: Sequence[str], bank: Bank, acks: dict[str, tuple[int, int]],
               timeout_s: float = 60.0) -> BankResult:
    """Every invariant of the module docstring over the nodes `urls`, all up and
    connected (with the load stopped and its txs finished); the figures."""
    wait_until(lambda: all(rpc_call(u, "gannet_status")["mempool_size"] == 0 for u in urls),
               timeout_s, "empty mempools")
    wait_converged(urls, timeout_s=timeout_s)
    height, accounts = read_at_one_height(urls[0], [("gannet_getAccount", [a])
                                                    for a in bank.addresses])
    wait_until(lambda: min(_heads(urls)) >= height, timeout_s, f"every node at {height}")
    check_same_chain(urls)
    result = BankResult(height=height, acknowledged=len(acks))
    for url in urls:
        result.txs_in_chain = _check_acknowledged(url, height, acks)
    txs = _bank_txs(urls[0], bank, height)
    result.bank_txs = len(txs)
    receipts = _receipts(urls[0], [t["hash"] for t in txs])
    result.failed_receipts = sum(r["status"] != "ok" for r in receipts)
    result.balances, result.fees_paid = _replay(bank, txs, receipts)
    chain = [int(a["gpu"]) for a in accounts]
    nonces = [a["nonce"] for a in accounts]
    counted = Counter(bank.index[t["from"]] for t in txs)
    if nonces != [counted[i] for i in range(len(nonces))]:
        raise BankError(f"at height {height} the nonces {nonces} do not count the bank's "
                        f"txs in the chain {[counted[i] for i in range(len(nonces))]}")
    if chain != result.balances:
        raise BankError(f"at height {height} the balances {chain} differ from the chain's "
                        f"replay {result.balances}")
    if sum(chain) + result.fees_paid != bank.total:
        raise BankError(f"bank total changed: balances {sum(chain)} + fees "
                        f"{result.fees_paid} != {bank.total}")
    return result


def _heads(urls: Sequence[str]) -> list[int]:
    return [int(rpc_call(u, "gannet_status")["height"]) for u in urls]


def _check_acknowledged(url: str, height: int, acks: dict[str, tuple[int, int]]) -> int:
    """On one node: no tx twice in blocks 1..height, each acknowledged tx where it was
    acknowledged; the number of txs there."""
    where: dict[str, tuple[int, int]] = {}
    counts: Counter[str] = Counter()
    for block in fetch_blocks(url, 1, height):
        for index, h in enumerate(block["txs"]):
            counts[h] += 1
            where[h] = (block["height"], index)
    twice = [h for h, c in counts.items() if c > 1]
    if twice:
        raise BankError(f"{url}: txs in the chain more than once: {twice[:5]}")
    moved = [(h, place, where.get(h)) for h, place in sorted(acks.items())
             if where.get(h) != place]
    if moved:
        raise BankError(f"{url}: acknowledged txs missing or elsewhere (hash, acknowledged "
                        f"at, chain has): {moved[:5]} of {len(moved)}")
    return sum(counts.values())


def _bank_txs(url: str, bank: Bank, height: int) -> list[dict[str, Any]]:
    """The bank accounts' txs in blocks 1..height in chain order; each account's nonces
    must run 0, 1, 2, ..."""
    calls = [("gannet_getBlockByNumber", [k, True]) for k in range(1, height + 1)]
    txs: list[dict[str, Any]] = []
    for block in rpc_batch_chunked(url, calls):
        if isinstance(block, RpcError):
            raise BankError(f"{url}: block unreadable: {block}")
        txs += [t for t in block["txs"] if t["from"] in bank.index]
    next_nonce = [0] * len(bank.signers)
    for t in txs:
        i = bank.index[t["from"]]
        if t["nonce"] != next_nonce[i] or t["kind"] != "transfer" or int(t["fee"]) != bank.fee:
            raise BankError(f"unexpected bank tx in the chain (account {i} expected nonce "
                            f"{next_nonce[i]}): {t}")
        next_nonce[i] += 1
    return txs


def _receipts(url: str, hashes: list[str]) -> list[dict[str, Any]]:
    infos = rpc_batch_chunked(url, [("gannet_getTransaction", [h]) for h in hashes])
    bad = [i for i in infos if isinstance(i, RpcError) or i["status"] != "included"]
    if bad:
        raise BankError(f"{url}: txs of its blocks not found as included: {bad[:3]}")
    return [i["receipt"] for i in infos]


def _replay(bank: Bank, txs: list[dict[str, Any]], receipts: list[dict[str, Any]]
            ) -> tuple[list[int], int]:
    """Balances from funding plus the chain's bank txs (a failed one only pays its fee),
    checking each against the planned transfer; (balances, fees paid)."""
    balances = [bank.funding] * len(bank.signers)
    fees = 0
    for t, receipt in zip(txs, receipts, strict=True):
        i = bank.index[t["from"]]
        plan = bank.planned(i, t["nonce"])
        if (bank.addresses[plan.to], plan.amount) != (t["to"], int(t["amount"])):
            raise BankError(f"a bank tx that was never planned is in the chain: {t}")
        fee = int(receipt["fee_paid"])
        balances[i] -= fee
        fees += fee
        if receipt["status"] == "ok":
            balances[i] -= plan.amount
            balances[plan.to] += plan.amount
    return balances, fees
