#!/usr/bin/env python
"""Transfer throughput of a node, as a ratio to raw Ed25519 verifies/s on this machine.

    .venv/bin/python scripts/bench/transfers.py [--txs 20000] [--accounts 1000]
        [--block-txs N] [--batch 500] [--workers N] [--json] [--profile]

The limit: libsodium (PyNaCl) Ed25519 verifies/s of the workload's own
(public key, message, signature) checks through `SignatureVerifier.verify_many`
on all cores, best of 3. Every transfer must pass one such check, so no node
can admit transfers faster than this; the ratio says how close the node gets.

The pipeline (timed; everything before it is setup and is not), on a real
`Node` over a temp-dir store, as its single validator:

1. admission: the encoded SignedTxs arrive in batches of `--batch` (like an RPC
   or gossip layer hands them over) and go through `Mempool.add_many` with a
   real `SignatureVerifier` on `--workers` threads: decode, hash, chain id,
   signatures, nonce and fee checks, insert;
2. whenever a block's worth is pending (or the input is exhausted), what the
   BFT engine does for a one-validator set: `ChainApp.propose_block` on a
   worker thread (it reaps the mempool on the event loop, then `build_block`
   over `State` on the real store: the per-block economy rules before and
   after the txs, the txs, app hash; block hash and encoding), the validator's
   precommit through its `FileSigner` (that one signature is the commit), then
   `Node.commit_decided` (the executed proposal written by `commit_block` in
   one synced store batch on a worker thread, then `_after_commit` on the
   loop: `Mempool.update_after_block`, the committed-account cache);
3. until every transfer is committed.

It runs twice on fresh stores: sequential (admit a block's worth, then decide
it; the phases are timed) and overlapped as in the node (the loop keeps
admitting while a block builds and commits on worker threads).

Left out: the engine's other per-block work (signing the proposal and the
prevote, the WAL's synced writes of the proposal and both own votes, vote
gossip): per block, not per transfer, and not part of a node's transfer path.

Setup writes the genesis state straight into the store (one encoded funded
account reused for every address), so 10^6 accounts take seconds; only the
senders actually drawn get Ed25519 keys (derived from their index), the other
accounts get plain addresses. For up to 10^4 accounts the writes are checked
against `genesis.state.genesis_state`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import json
import pstats
import random
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import plyvel
from _common import cpu_count, machine, print_table, verify_limit

from chain.address import address_from_public_key
from chain.codec import decode, encode
from chain.crypto import SignatureVerifier, SigningKey, VerifyItem
from chain.mempool import Mempool
from chain.records import (
    DENOM_GPU,
    VOTE_PRECOMMIT,
    Account,
    Commit,
    CommitSig,
    Transfer,
    Tx,
    Vote,
    block_hash,
)
from chain.signing import sign_tx, tx_verify_item
from chain.state import account_key, module_address, next_app_hash
from chain.store import BlockStore, GenesisMark
from chain.types import BASE_UNITS_PER_GPU, Address
from consensus import producer, transition
from consensus.params import NetworkParams
from genesis.document import Genesis, GenesisAccount, GenesisValidator, genesis_hash
from genesis.state import genesis_head, genesis_state
from node.config import HomePaths, NodeConfig
from node.service import Node

CHAIN_ID = "gannet-bench"
GENESIS_TIME_MS = 1_700_000_000_000
FUNDS = 100 * BASE_UNITS_PER_GPU  # per account: far more than any run spends; 10^6 fit the supply
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
    # The funded accounts come out of the unallocated reserve, as genesis_state does it.
    reserve_key = account_key(module_address("reserve"))
    reserve = decode(Account, writes[reserve_key])
    writes[reserve_key] = encode(replace(reserve, gpu=reserve.gpu - FUNDS * len(addresses)))
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
    """The validator node of a fresh chain in `home`, its mempool on `workers` threads."""
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
    node = Node(paths, config, genesis, validator_key, skip_double_sign_check=True)  # new chain
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
    "reap": "reap (Mempool.reap_pending, on the loop)",
    "rules": "block rules (begin_block + end_block, economy)",
    "balances": "end_block: track_balances (per account)",
    "build": "propose_block: txs, app hash, block hash",
    "decide": "precommit (FileSigner) + commit_decided",
    "commit": "commit_block (encode + LevelDB, sync)",
    "after": "after commit (_after_commit: mempool)",
}
PROPOSE_THREAD = "the engine thread: propose_block and _write_block run off the loop"


class Clock:
    """Wall and CPU time (the whole process: every thread) spent per pipeline phase."""

    def __init__(self) -> None:
        self.wall = dict.fromkeys(PHASES, 0.0)
        self.cpu = dict.fromkeys(PHASES, 0.0)
        self.total_wall = self.total_cpu = 0.0
        self.rules_calls = 0
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


def timed(fn, clock: Clock, phase: str, outer: str):
    """`fn`, charging its time to `phase` instead of `outer` (the phase it runs inside).

    Only for the sequential run: one phase runs at a time, so process CPU over a
    call is that call's CPU.
    """

    def call(*args, **kwargs):
        started = Clock.now()
        try:
            return fn(*args, **kwargs)
        finally:
            wall, cpu = Clock.now()
            clock.wall[phase] += wall - started[0]
            clock.cpu[phase] += cpu - started[1]
            clock.wall[outer] -= wall - started[0]
            clock.cpu[outer] -= cpu - started[1]

    return call


def timed_method(obj: object, name: str, clock: Clock, phase: str, outer: str) -> None:
    """Wrap `obj.name` (on the instance only) to charge its time to `phase`, not `outer`."""
    setattr(obj, name, timed(getattr(obj, name), clock, phase, outer))


@contextmanager
def timed_block_rules(clock: Clock):
    """Charge the block rules `build_block` runs to "rules" while the block is built.

    `consensus.producer` calls `begin_block` (liveness and slashing, epochs,
    matured unbondings, the pool oracle) and `end_block` (emission and its
    distribution, the buyback slice, the active set, validator updates, balance
    tracking, the supply invariant) once per block. Inside `end_block`,
    `track_balances` (one committed read and decode per changed account, so it
    grows with the block's txs) is charged to "balances" instead. The wrappers
    are installed for the sequential run only, and removed after it.
    """
    saved = [(producer, "begin_block"), (producer, "end_block"),
             (transition, "track_balances")]
    originals = [getattr(module, name) for module, name in saved]

    def counted(fn):
        def call(*args, **kwargs):
            clock.rules_calls += 1
            return fn(*args, **kwargs)
        return call

    try:
        producer.begin_block = counted(timed(originals[0], clock, "rules", "build"))
        producer.end_block = counted(timed(originals[1], clock, "rules", "build"))
        transition.track_balances = timed(originals[2], clock, "balances", "rules")
        yield
    finally:
        for (module, name), fn in zip(saved, originals, strict=True):
            setattr(module, name, fn)


class WorkerProfile:
    """One cProfile of the calls the node runs on worker threads (asyncio.to_thread).

    cProfile sees only the thread that enables it, so a profile of the event-loop
    thread misses block building and the store write; this one is enabled inside
    each worker call (one at a time in the sequential run).
    """

    def __init__(self) -> None:
        self.profiler = cProfile.Profile()

    def wrap(self, fn):
        """`fn`, profiled while it runs on whatever thread calls it."""
        def call(*args, **kwargs):
            self.profiler.enable()
            try:
                return fn(*args, **kwargs)
            finally:
                self.profiler.disable()
        return call


def block_limit(node: Node) -> tuple[int, int]:
    """(txs, bytes) a proposal may carry: what `ChainApp.propose_block` reaps."""
    return node.app.limits.max_txs, node.app.limits.max_bytes


async def decide_own_block(node: Node, propose) -> int:
    """Propose the next block as the single validator, precommit it, commit it.

    As the engine does it: `propose_block` on a worker thread (it reaps the
    mempool on the event loop), the validator's precommit through its
    `FileSigner` (the commit of a one-validator set is that one signature), then
    `Node.commit_decided` (the executed proposal written in one synced store
    batch on a worker thread, then `_after_commit` on the loop: mempool update,
    account cache). Returns the block's tx count; exits if a tx was left out.
    """
    height = node.head.height + 1
    block = await asyncio.to_thread(propose, height, 0)
    bh = block_hash(block)
    vote = Vote(vote_type=VOTE_PRECOMMIT, height=height, round=0, block_hash=bh,
                validator=node.validator_address)
    signed = node.signer.sign_vote(vote)
    commit = Commit(height=height, round=0, block_hash=bh,
                    signatures=(CommitSig(validator=node.validator_address,
                                          signature=signed.signature),))
    await node.commit_decided(block, commit)
    if node.rejected:
        raise SystemExit(f"the block left out valid txs: {list(node.rejected.items())[:3]!r}")
    return len(block.txs)


def check_admitted(results: list) -> None:
    """Every tx of the workload is valid: admission must take each one."""
    for result in results:
        if isinstance(result, Exception):
            raise SystemExit(f"admission refused a valid tx: {result!r}")


async def run_pipeline(node: Node, raws: list[bytes], batch: int,
                       profile: WorkerProfile | None) -> tuple[Clock, int]:
    """Admit a block's worth, then propose, decide and commit it; repeat until every
    tx is committed. The time taken per phase and the block count."""
    node._loop = asyncio.get_running_loop()  # Node.run sets it; the reap hops onto it
    clock = Clock()
    timed_method(node.verifier, "verify_many", clock, "verify", "admit")
    timed_method(node.mempool, "reap_pending", clock, "reap", "build")
    timed_method(node.store, "commit_block", clock, "commit", "decide")
    timed_method(node, "_after_commit", clock, "after", "decide")
    propose = node.app.propose_block
    if profile is not None:
        propose = profile.wrap(propose)
        node._write_block = profile.wrap(node._write_block)
    mempool = node.mempool
    limit, _ = block_limit(node)
    position = committed = blocks = 0
    started = Clock.now()
    clock.start()
    with timed_block_rules(clock):
        while committed < len(raws):
            while position < len(raws) and len(mempool) < limit:
                check_admitted(mempool.add_many(raws[position : position + batch]))
                position += batch
            clock.add("admit")
            included = await decide_own_block(node, timed(propose, clock, "build", "decide"))
            clock.add("decide")
            if not included:
                raise SystemExit(f"nothing to build on: {len(mempool)} pending, none ready")
            committed += included
            blocks += 1
    if clock.rules_calls != 2 * blocks:
        raise SystemExit(f"block rules ran {clock.rules_calls} times for {blocks} blocks")
    wall, cpu = Clock.now()
    clock.total_wall, clock.total_cpu = wall - started[0], cpu - started[1]
    return clock, blocks


async def run_overlapped(node: Node, raws: list[bytes], batch: int) -> tuple[float, int]:
    """Admit on the event loop while blocks are proposed and committed, as the node
    runs: admission batches (`TxAdmission` calls `add_many` on the loop) between
    which the loop serves the engine's reap and the commit's `_after_commit`, while
    `propose_block` and the store write run on worker threads. A block is proposed
    once a block's worth is pending (or the input is exhausted), right after the
    previous commit. Returns (wall seconds, blocks)."""
    node._loop = asyncio.get_running_loop()
    mempool = node.mempool
    limit, _ = block_limit(node)
    ahead = max(limit, mempool.limits.max_txs - batch)  # what may wait while a block builds
    progress = asyncio.Event()  # admitted a batch, or committed a block
    position = 0

    async def admit() -> None:
        nonlocal position
        while position < len(raws):
            if len(mempool) + batch > ahead:
                progress.clear()
                await progress.wait()  # full: wait for a commit to make room
                continue
            check_admitted(mempool.add_many(raws[position : position + batch]))
            position += batch
            progress.set()
            await asyncio.sleep(0)  # one batch per loop turn, as RPC and gossip hand them

    async def produce() -> int:
        committed = blocks = 0
        while committed < len(raws):
            while len(mempool) < limit and position < len(raws):
                progress.clear()
                await progress.wait()
            included = await decide_own_block(node, node.app.propose_block)
            if not included:
                raise SystemExit(f"nothing to build on: {len(mempool)} pending, none ready")
            committed += included
            blocks += 1
            progress.set()
        return blocks

    started = time.perf_counter()
    _, blocks = await asyncio.gather(admit(), produce())
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
            workers = WorkerProfile() if args.profile else None
            if profiler is not None:
                profiler.enable()
            clock, blocks = asyncio.run(run_pipeline(node, workload.raws, args.batch, workers))
            if profiler is not None:
                profiler.disable()
            check_outcome(node, workload, blocks, min_fee)
        finally:
            node.close()
    with tempfile.TemporaryDirectory(prefix="gannet-bench-") as home:
        note("pipeline, overlapped as in the node ...")
        node = start_node(Path(home), workload, block_txs, args.workers)
        try:
            overlapped_s, overlapped_blocks = asyncio.run(
                run_overlapped(node, workload.raws, args.batch))
            check_outcome(node, workload, overlapped_blocks, min_fee)
        finally:
            node.close()

    n = len(workload.raws)
    w = clock.wall
    executed = sum(w[k] for k in ("reap", "rules", "build", "decide", "commit", "after"))
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
        "rules_us_per_block": 1e6 * w["rules"] / blocks,
        "rules_cpu_us_per_block": 1e6 * clock.cpu["rules"] / blocks,
        "rules_calls": clock.rules_calls,
        "wall_s": {**clock.wall, "total": clock.total_wall},
        "cpu_s": {**clock.cpu, "total": clock.total_cpu},
        "setup_s": setup_s,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        report(figures)
    if profiler is not None:
        print_profile(profiler, "the event-loop thread: admission, reap, _after_commit",
                      args.profile_lines)
        print_profile(workers.profiler, PROPOSE_THREAD, args.profile_lines)
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
         "propose_block (reap, block rules, txs) + precommit + commit_decided"),
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
        ("block rules per block", f"{f['rules_us_per_block'] / 1000:.2f} ms",
         f"begin_block + end_block but track_balances (economy, validator sets, supply "
         f"check), CPU {f['rules_cpu_us_per_block'] / 1000:.2f} ms"),
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


def print_profile(profiler: cProfile.Profile, what: str, lines: int) -> None:
    """One profile of the sequential pipeline, by cumulative and by own time."""
    for key in ("cumulative", "tottime"):
        print(f"\n--- profile of {what}, by {key} ---")
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
