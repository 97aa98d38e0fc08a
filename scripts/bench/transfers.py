#!/usr/bin/env python
"""Transfer throughput of a node, as a ratio to raw Ed25519 verifies/s on this machine.

    .venv/bin/python scripts/bench/transfers.py [--txs 20000] [--accounts 1000]
        [--block-txs N] [--batch 500] [--workers N] [--json] [--profile]

The limit: libsodium (PyNaCl) Ed25519 verifies/s of the workload's own
(public key, message, signature) checks through `SignatureVerifier.verify_many`
on all cores, best of 3. Every transfer must pass one such check, so no node
can admit transfers faster than this; the ratio says how close the node gets.

The pipeline (timed; everything before it is setup and is not):

1. admission: the encoded SignedTxs arrive in batches of `--batch` (like an RPC
   or gossip layer hands them over) and go through `Mempool.add_many` with a
   real `SignatureVerifier` on `--workers` threads: decode, hash, chain id,
   signatures, nonce and fee checks, insert;
2. whenever a block's worth is pending (or the input is exhausted): reap it,
   then `Node._build_and_commit` (build_block over `State` on the real store,
   block hash, sign_commit, `BlockStore.commit_block` with sync=True), then
   `Node._after_commit` (`Mempool.update_after_block`), exactly as a producing
   node does in `Node.produce_block`, on a real `Node` over a temp-dir store;
3. until every transfer is committed.

Setup writes the genesis state straight into the store (one encoded funded
account reused for every address), so 10^6 accounts take seconds; only the
senders actually drawn get Ed25519 keys (derived from their index), the other
accounts get plain addresses. For up to 10^4 accounts the writes are checked
against `genesis.state.genesis_state`.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import pstats
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import plyvel
from _common import cpu_count, machine, print_table, verify_limit

from chain.address import address_from_public_key
from chain.codec import encode
from chain.crypto import SignatureVerifier, SigningKey, VerifyItem
from chain.mempool import Mempool
from chain.records import DENOM_GPU, Account, Transfer, Tx
from chain.signing import sign_tx, tx_verify_item
from chain.state import account_key, next_app_hash
from chain.store import BlockStore, GenesisMark
from chain.types import BASE_UNITS_PER_GPU, Address
from consensus.params import NetworkParams
from genesis.document import Genesis, GenesisAccount, GenesisValidator, genesis_hash
from genesis.state import genesis_head, genesis_state
from node.config import HomePaths, NodeConfig
from node.service import Node

CHAIN_ID = "gannet-bench"
GENESIS_TIME_MS = 1_700_000_000_000
FUNDS = 1_000_000 * BASE_UNITS_PER_GPU  # per account: far more than any run spends
VALIDATOR_POWER = 1_000_000 * BASE_UNITS_PER_GPU
DEFAULT_BLOCK_TXS = 5000
GOAL = 0.7
CHECKED_GENESIS_MAX = 10_000


# --- workload -------------------------------------------------------------------


@dataclass
class Workload:
    """Pre-generated, pre-signed transfers and the accounts they move funds between."""

    addresses: list[Address]  # account index -> address
    raws: list[bytes]  # encoded SignedTxs in arrival order
    items: list[VerifyItem]  # their signature checks, for the limit
    sent: dict[Address, int]  # sender address -> txs sent (= its final nonce)


def account_seed(index: int) -> bytes:
    """The Ed25519 seed of account `index` (deterministic, so keys need no storing)."""
    return hashlib.sha256(b"gannet-bench-key" + index.to_bytes(8, "big")).digest()


def plain_address(index: int) -> Address:
    """The address of an account that never signs in this run (no key derived)."""
    return Address(hashlib.sha256(b"gannet-bench-addr" + index.to_bytes(8, "big")).digest()[:20])


def make_workload(txs: int, accounts: int, min_fee: int, seed: int) -> Workload:
    """`txs` signed transfers between random funded accounts, with correct nonces."""
    rng = random.Random(seed)
    senders = [rng.randrange(accounts) for _ in range(txs)]
    keys = {i: SigningKey(account_seed(i)) for i in sorted(set(senders))}
    addresses = [
        address_from_public_key(keys[i].public_key) if i in keys else plain_address(i)
        for i in range(accounts)
    ]
    chain_id = CHAIN_ID.encode()
    nonces: dict[int, int] = {}
    raws: list[bytes] = []
    items: list[VerifyItem] = []
    for sender in senders:
        to = rng.randrange(accounts - 1)
        to += to >= sender  # anyone but the sender
        key = keys[sender]
        nonce = nonces.get(sender, 0)
        nonces[sender] = nonce + 1
        body = Transfer(to=addresses[to], amount=rng.randrange(1, 1000) * 1000, denom=DENOM_GPU)
        tx = Tx(chain_id=chain_id, sender=key.public_key, nonce=nonce, fee=min_fee, body=body)
        stx = sign_tx(key, tx)
        raw = encode(stx)
        raws.append(raw)
        items.append(tx_verify_item(stx, raw))
    sent = {addresses[i]: n for i, n in nonces.items()}
    return Workload(addresses=addresses, raws=raws, items=items, sent=sent)


# --- genesis straight into the store -------------------------------------------------


def bench_genesis(validator_key: SigningKey, operator: Address, block_txs: int) -> Genesis:
    """The genesis the node checks its store against: params and the one validator.

    Its accounts are written by `init_store` directly (a genesis document with
    10^6 accounts would take minutes to hash), so they are not listed here.
    """
    params = NetworkParams()
    if block_txs > params.block.max_block_txs:
        params = replace(params, block=replace(params.block, max_block_txs=block_txs))
    validator = GenesisValidator("bench", validator_key.public_key, VALIDATOR_POWER, operator)
    return Genesis(chain_id=CHAIN_ID, genesis_time_ms=GENESIS_TIME_MS, initial_height=1,
                   params=params, validators=(validator,))


def genesis_state_writes(genesis: Genesis, addresses: list[Address]) -> dict[bytes, bytes]:
    """The state writes of `genesis` plus a funded account at every address."""
    funded = encode(Account(gpu=FUNDS, stable=0, nonce=0, licences=0, locks=()))
    writes = dict.fromkeys(map(account_key, addresses), funded)
    writes.update(genesis_state(replace(genesis, accounts=())).write_set())  # validator state
    if len(addresses) <= CHECKED_GENESIS_MAX:
        full = replace(genesis, accounts=tuple(GenesisAccount(a, FUNDS) for a in addresses))
        if genesis_state(full).write_set() != writes:
            raise SystemExit("setup bug: direct genesis writes differ from genesis_state")
    return writes


def init_store(paths: HomePaths, genesis: Genesis, addresses: list[Address]) -> None:
    """Initialise the node's store with the genesis state, as `open_store` would."""
    writes = genesis_state_writes(genesis, addresses)
    gh = genesis_hash(genesis)
    mark = GenesisMark(genesis_hash=gh, app_hash=next_app_hash(gh, writes))
    paths.store_dir.mkdir(parents=True)
    store = BlockStore(str(paths.store_dir))
    try:
        store.init_genesis(mark, writes, genesis_head(genesis, mark))
    finally:
        store.close()
    # A node that has run a while holds its state in compacted tables, not in a
    # replayed log and a pile of overlapping level-0 files (each read would probe
    # them all, and compaction would run on a background thread during the timing).
    db = plyvel.DB(str(paths.store_dir))
    try:
        db.compact_range()
    finally:
        db.close()


def start_node(home: Path, workload: Workload, block_txs: int, workers: int) -> Node:
    """A producing node on a fresh store in `home`, its mempool on `workers` threads."""
    validator_key = SigningKey(hashlib.sha256(b"gannet-bench-validator").digest())
    operator = Address(hashlib.sha256(b"gannet-bench-operator").digest()[:20])
    genesis = bench_genesis(validator_key, operator, block_txs)
    paths = HomePaths(home)
    init_store(paths, genesis, workload.addresses)
    default = NodeConfig()
    config = replace(
        default,
        consensus=replace(default.consensus, max_block_txs=block_txs),
        mempool=replace(default.mempool, max_txs=max(default.mempool.max_txs, 2 * block_txs)),
    )
    node = Node(paths, config, genesis, validator_key)
    if node.verifier.workers != workers:
        node.verifier.close()
        node.verifier = SignatureVerifier(workers=workers)
        pool = node.mempool  # the same pool as the node's, on another verifier
        node.mempool = Mempool(node.chain_id, node.committed_account, node.verifier,
                               pool.limits, min_fee=pool.min_fee)
    return node


# --- the timed pipeline ------------------------------------------------------------------


PHASES = {
    "verify": "admission: signature verify (verify_many)",
    "admit": "admission: decode, hash, checks, insert",
    "reap": "reap (Mempool.reap_pending)",
    "build": "build_block + block hash + sign_commit",
    "commit": "commit_block (encode + LevelDB, sync)",
    "after": "after commit (update_after_block)",
}


class Clock:
    """Wall and CPU time (the whole process: every thread) spent per pipeline phase."""

    def __init__(self) -> None:
        self.wall = dict.fromkeys(PHASES, 0.0)
        self.cpu = dict.fromkeys(PHASES, 0.0)
        self.total_wall = self.total_cpu = 0.0
        self._mark = (0.0, 0.0)

    @staticmethod
    def now() -> tuple[float, float]:
        """(wall, process CPU) now."""
        return time.perf_counter(), time.process_time()

    def start(self) -> None:
        """Open the current phase."""
        self._mark = self.now()

    def add(self, phase: str) -> None:
        """Charge the time since the last mark to `phase`; mark now."""
        wall0, cpu0 = self._mark
        wall, cpu = self.now()
        self.wall[phase] += wall - wall0
        self.cpu[phase] += cpu - cpu0
        self._mark = (wall, cpu)


def timed_method(obj: object, name: str, clock: Clock, phase: str, outer: str) -> None:
    """Wrap `obj.name` (on the instance only) to charge its time to `phase`, not `outer`."""
    method = getattr(obj, name)

    def timed(*args, **kwargs):
        started = Clock.now()
        try:
            return method(*args, **kwargs)
        finally:
            wall, cpu = Clock.now()
            clock.wall[phase] += wall - started[0]
            clock.cpu[phase] += cpu - started[1]
            clock.wall[outer] -= wall - started[0]
            clock.cpu[outer] -= cpu - started[1]

    setattr(obj, name, timed)


def run_pipeline(node: Node, raws: list[bytes], batch: int) -> tuple[Clock, int]:
    """Admit, build, execute and commit every tx; the time taken and the block count."""
    clock = Clock()
    timed_method(node.verifier, "verify_many", clock, "verify", "admit")
    timed_method(node.store, "commit_block", clock, "commit", "build")
    mempool = node.mempool
    limit = min(node.config.consensus.max_block_txs, node.genesis.params.block.max_block_txs)
    max_bytes = node.config.mempool.max_bytes
    position = committed = blocks = 0
    started = Clock.now()
    clock.start()
    while committed < len(raws):
        while position < len(raws) and len(mempool) < limit:
            for result in mempool.add_many(raws[position : position + batch]):
                if isinstance(result, Exception):
                    raise SystemExit(f"admission refused a valid tx: {result!r}")
            position += batch
        clock.add("admit")
        candidates = mempool.reap_pending(limit, max_bytes)
        clock.add("reap")
        if not candidates:
            raise SystemExit(f"nothing to build on: {len(mempool)} pending, none ready")
        built, done = node._build_and_commit(candidates, time.time_ns() // 1_000_000)
        clock.add("build")
        node._after_commit(built, done)
        clock.add("after")
        if built.rejected:
            raise SystemExit(f"the block left out valid txs: {built.rejected[:3]!r}")
        committed += len(done.tx_hashes)
        blocks += 1
    wall, cpu = Clock.now()
    clock.total_wall, clock.total_cpu = wall - started[0], cpu - started[1]
    return clock, blocks


def run_overlapped(node: Node, raws: list[bytes], batch: int) -> tuple[float, int]:
    """Admit while the previous block builds and commits on a worker thread, as the
    node does (`produce_block` runs `_build_and_commit` in `asyncio.to_thread` while
    the event loop keeps admitting RPC txs). Returns (wall seconds, blocks)."""
    mempool = node.mempool
    limit = min(node.config.consensus.max_block_txs, node.genesis.params.block.max_block_txs)
    max_bytes = node.config.mempool.max_bytes
    ahead = max(limit, mempool.limits.max_txs - batch)  # what may wait while a block builds
    position = committed = blocks = 0
    in_flight = None
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1) as producer:
        while committed < len(raws):
            if position < len(raws) and len(mempool) + batch <= ahead:
                for result in mempool.add_many(raws[position : position + batch]):
                    if isinstance(result, Exception):
                        raise SystemExit(f"admission refused a valid tx: {result!r}")
                position += batch
                building = in_flight is not None and not in_flight.done()
                if building or (in_flight is None and len(mempool) < limit):
                    continue  # keep admitting: a block is building, or too few txs yet
            if in_flight is not None:
                built, done = in_flight.result()
                node._after_commit(built, done)
                if built.rejected:
                    raise SystemExit(f"the block left out valid txs: {built.rejected[:3]!r}")
                committed += len(done.tx_hashes)
                blocks += 1
                in_flight = None
            candidates = mempool.reap_pending(limit, max_bytes)
            if candidates:
                in_flight = producer.submit(node._build_and_commit, candidates,
                                            time.time_ns() // 1_000_000)
            elif position >= len(raws) and committed < len(raws):
                raise SystemExit(f"nothing to build on: {len(mempool)} pending, none ready")
    return time.perf_counter() - started, blocks


def check_outcome(node: Node, workload: Workload, blocks: int, min_fee: int) -> None:
    """The store holds every transfer: head height, sender nonces, fees collected."""
    if node.head.height != blocks or len(node.mempool) != 0:
        raise SystemExit(f"head {node.head.height} != {blocks} blocks or mempool not empty")
    for address, count in list(workload.sent.items())[:200]:
        if node.committed_account(address).nonce != count:
            raise SystemExit(f"sender {address.hex()} did not commit its {count} txs")
    operator = node.committed_account(node.genesis.validators[0].operator)
    if operator.gpu != min_fee * len(workload.raws):
        raise SystemExit(f"fees collected {operator.gpu} != {min_fee * len(workload.raws)}")


# --- the run ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Parse the options, set up, measure the limit and the pipeline, report."""
    args = parse_args(argv)
    params = NetworkParams()
    block_txs = args.block_txs or min(params.block.max_block_txs, DEFAULT_BLOCK_TXS)
    min_fee = params.fee.min_fee
    note = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))

    setup_started = time.perf_counter()
    note(f"setup: {args.txs} signed transfers over {args.accounts} accounts ...")
    workload = make_workload(args.txs, args.accounts, min_fee, args.seed)
    note(f"limit: Ed25519 verify_many on {cpu_count()} threads (all cores), best of 3 ...")
    limit, verify_cpu = verify_limit(workload.items, cpu_count())
    with tempfile.TemporaryDirectory(prefix="gannet-bench-") as home:
        note("setup: genesis state into the store ...")
        node = start_node(Path(home), workload, block_txs, args.workers)
        setup_s = time.perf_counter() - setup_started
        try:
            note("pipeline ...")
            profiler = cProfile.Profile() if args.profile else None
            if profiler is not None:
                profiler.enable()
            clock, blocks = run_pipeline(node, workload.raws, args.batch)
            if profiler is not None:
                profiler.disable()
            check_outcome(node, workload, blocks, min_fee)
        finally:
            node.close()
    with tempfile.TemporaryDirectory(prefix="gannet-bench-") as home:
        note("pipeline, overlapped as in the node ...")
        node = start_node(Path(home), workload, block_txs, args.workers)
        try:
            overlapped_s, overlapped_blocks = run_overlapped(node, workload.raws, args.batch)
            check_outcome(node, workload, overlapped_blocks, min_fee)
        finally:
            node.close()

    n = len(workload.raws)
    w = clock.wall
    executed = w["reap"] + w["build"] + w["commit"] + w["after"]
    figures = {
        "machine": machine(),
        "txs": n,
        "accounts": args.accounts,
        "block_txs": block_txs,
        "blocks": blocks,
        "batch": args.batch,
        "workers": args.workers,
        "profiled": args.profile,
        "verifies_per_s": limit,
        "admission_per_s": n / (w["verify"] + w["admit"]),
        "execution_commit_per_s": n / executed,
        "sequential_transfers_per_s": n / clock.total_wall,
        "sequential_ratio": n / clock.total_wall / limit,
        "transfers_per_s": n / overlapped_s,
        "ratio": n / overlapped_s / limit,
        "cpu_us_per_verify": 1e6 * verify_cpu,
        "cpu_us_per_transfer": 1e6 * clock.total_cpu / n,
        "ratio_ceiling": verify_cpu * n / clock.total_cpu,
        "ratio_idle_projection": idle_projection(clock, verify_cpu, n, args.workers, args.batch),
        "wall_s": {**clock.wall, "total": clock.total_wall},
        "cpu_s": {**clock.cpu, "total": clock.total_cpu},
        "setup_s": setup_s,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        report(figures)
    if profiler is not None:
        print_profile(profiler, args.profile_lines)
    return 0


def idle_projection(clock: Clock, verify_cpu: float, n: int, workers: int, batch: int) -> float:
    """The ratio an idle machine would show, from the load-insensitive CPU times.

    Idle, the limit is `cores / verify_cpu` and the pipeline (which runs its
    phases one after another) takes the verify CPU spread over its verifier
    threads plus every other phase's CPU on the one thread that holds the GIL.
    """
    cores = cpu_count()
    # SignatureVerifier splits a batch into chunks of >= 64 checks (its min_chunk),
    # one per thread: a batch of under 128 is checked on the calling thread alone.
    threads = min(workers, cores, max(1, batch // 64))
    verify = clock.cpu["verify"] / threads
    others = clock.total_cpu - clock.cpu["verify"]
    return (n * verify_cpu / cores) / (verify + others)


def report(f: dict) -> None:
    """The human-readable tables."""
    ratio = f["ratio"]
    verdict = "meets" if ratio >= GOAL else "below"
    title = (f"transfers: {f['txs']} txs, {f['accounts']} accounts, {f['blocks']} blocks of "
             f"<= {f['block_txs']}, admission batches of {f['batch']}, {f['workers']} verify "
             f"threads ({f['machine']})" + (" [UNDER cProfile]" if f["profiled"] else ""))
    print_table(title, [
        ("verifies/s (limit)", f"{f['verifies_per_s']:,.0f}",
         "libsodium, one thread per core, best of 3"),
        ("admission/s", f"{f['admission_per_s']:,.0f}", "decode + verify + mempool insert"),
        ("execution+commit/s", f"{f['execution_commit_per_s']:,.0f}",
         "reap + build_block + commit_block + mempool update"),
        ("sequential transfers/s", f"{f['sequential_transfers_per_s']:,.0f}",
         f"admit, then build: ratio {f['sequential_ratio']:.3f} (the breakdown below)"),
        ("end-to-end transfers/s", f"{f['transfers_per_s']:,.0f}",
         "overlapped as in the node: the next block admits while one builds"),
        ("ratio", f"{ratio:.3f}", f"transfers/s / verifies/s ({verdict} the {GOAL} goal)"),
        ("CPU per verify", f"{f['cpu_us_per_verify']:.1f} us", "all threads, in the limit"),
        ("CPU per transfer", f"{f['cpu_us_per_transfer']:.1f} us",
         "all threads, in the pipeline"),
        ("ratio ceiling (CPU)", f"{f['ratio_ceiling']:.3f}",
         "CPU per verify / CPU per transfer: the best ratio any overlap could reach"),
        ("ratio, idle projection", f"{f['ratio_idle_projection']:.3f}",
         "from CPU times: what an idle machine would show (no overlap, as now)"),
    ])
    wall, cpu, n = f["wall_s"], f["cpu_s"], f["txs"]
    rows = [
        (label, f"{wall[key]:.3f} s",
         f"{100 * wall[key] / wall['total']:5.1f} %  {1e6 * wall[key] / n:6.1f} us/tx  "
         f"CPU {1e6 * cpu[key] / n:6.1f} us/tx")
        for key, label in [*PHASES.items(), ("total", "total")]
    ]
    print_table("where the time goes, sequential run (wall; CPU = all threads)", rows)
    print(f"setup (not timed): {f['setup_s']:.1f} s")


def print_profile(profiler: cProfile.Profile, lines: int) -> None:
    """The pipeline's profile (main thread only), by cumulative and by own time."""
    for key in ("cumulative", "tottime"):
        print(f"\n--- profile of the pipeline by {key} (main thread) ---")
        pstats.Stats(profiler, stream=sys.stdout).strip_dirs().sort_stats(key).print_stats(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=20_000, help="transfers (default 20000)")
    parser.add_argument("--accounts", type=int, default=1000,
                        help="funded accounts in genesis; senders and recipients are drawn "
                             "uniformly from them (default 1000; try 1000000)")
    parser.add_argument("--block-txs", type=int, default=0,
                        help="txs per block (default min(params max_block_txs, 5000))")
    parser.add_argument("--batch", type=int, default=500,
                        help="txs per Mempool.add_many call, like an RPC/gossip batch "
                             "(default 500)")
    parser.add_argument("--workers", type=int, default=cpu_count(),
                        help="signature verifier threads (default: all cores)")
    parser.add_argument("--seed", type=int, default=1, help="workload random seed")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--profile", action="store_true",
                        help="run the pipeline under cProfile and print the hot spots")
    parser.add_argument("--profile-lines", type=int, default=30, help="profile rows per sort")
    args = parser.parse_args(argv)
    if args.txs < 1 or args.accounts < 2 or args.block_txs < 0 or args.batch < 1:
        parser.error("need --txs >= 1, --accounts >= 2, --block-txs >= 0, --batch >= 1")
    if args.workers < 1:
        parser.error("need --workers >= 1")
    return args


if __name__ == "__main__":
    sys.exit(main())
