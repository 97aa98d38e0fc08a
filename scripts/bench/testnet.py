#!/usr/bin/env python
"""Finalized transfers/s and submit-to-final latency of a 4-validator loopback testnet.

    .venv/bin/python scripts/bench/testnet.py [--seconds 30] [--block-time 1000]
        [--rate TX/S] [--senders 2000] [--p2p-max-frames-per-s N] [--json] [--keep]
        [--profile-node]

The limit: libsodium (PyNaCl) Ed25519 verifies/s of the workload's own
signature checks through `SignatureVerifier.verify_many` on all cores, best of
3, divided by 4: every validator verifies every tx and the 4 validators share
this machine, so no 4-node testnet here finalizes transfers faster. It is
measured, and the whole load signed, before any node starts.

The run:

1. `gannet testnet -n 4` into a temp dir (free ports, `--block-time`), then
   `gannet node start` for each home, each in its own process group, until
   every node has committed a block;
2. the faucets fund `--senders` fresh accounts by transfers;
3. the transfers of the load are signed locally beforehand (`sign_tx`), each
   sender pinned to one node; then `--connections` clients per node post them
   as JSON-RPC batches of `gannet_sendRawTransaction` at `--rate` tx/s, never
   with more than `--max-in-flight` accepted but not yet finalized;
4. a `newHeads` WebSocket subscription on every node stamps each height with
   the client's clock the first time any node announces it; the block's tx
   hashes come from `gannet_getBlockByNumber`;
5. after `--warmup` seconds the window of `--seconds` starts: finalized tx/s
   is the tx count of the blocks first seen inside the window over the time
   between the last block seen before it and the last block seen in it; a
   latency is the time from posting a tx's batch to first seeing its block,
   over the txs posted inside the window;
6. beside them: the nodes' CPU time over the window (/proc) per finalized tx,
   and the peer bans their logs show;
7. after the load, the txs still in flight may finalize (bounded wait), then
   all 4 nodes must report the same head hash; the nodes always stop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
from _common import cpu_count, machine, print_table, verify_limit

from chain.address import address_from_public_key, encode_address
from chain.codec import encode
from chain.crypto import SigningKey, VerifyItem
from chain.hashing import sha256
from chain.keystore import load_keystore
from chain.records import DENOM_GPU, SignedTx, Transfer, Tx
from chain.signing import sign_tx, tx_verify_item
from chain.types import BASE_UNITS_PER_GPU
from genesis.document import load_genesis
from node.config import HomePaths, load_config, save_config

NODES = 4
CHAIN_ID = "gannet-bench"
GOAL_RATIO = 0.6
GOAL_LATENCY_INTERVALS = 1.5
PORTS_PER_NODE = 2
LIMIT_ITEMS = 20_000
FUNDING_WAVE = 200  # funding transfers pending per faucet (the mempool allows 256)
SENDER_FUNDS = BASE_UNITS_PER_GPU
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
RPC_TIMEOUT_S = 30.0
POLL_S = 0.05


class BenchError(Exception):
    """The testnet could not be set up or did not behave (a node exited, no progress)."""


# --- processes --------------------------------------------------------------------


def gannet_executable() -> str:
    """The `gannet` console script beside this interpreter."""
    beside = Path(sys.executable).parent / "gannet"
    if not beside.exists():
        raise BenchError(f"no gannet console script at {beside} (pip install -e .)")
    return str(beside)


def free_base_port(attempts: int = 50) -> int:
    """A port P such that P .. P + 2*NODES - 1 were all free on 127.0.0.1 a moment ago."""
    for _ in range(attempts):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + PORTS_PER_NODE * NODES > 65535:
            continue
        if all(_port_free(port) for port in range(base, base + PORTS_PER_NODE * NODES)):
            return base
    raise BenchError("found no run of free ports for the testnet")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class NodeProc:
    """A running `gannet node start`, leader of its own process group."""

    moniker: str
    url: str
    ws_url: str
    log_path: Path
    proc: subprocess.Popen[bytes]

    def stop(self) -> int | None:
        """SIGTERM the group, SIGKILL it after STOP_TIMEOUT_S; the exit status."""
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait()
        self._signal(signal.SIGKILL)  # stragglers of the group
        return self.proc.returncode

    def cpu_seconds(self) -> float:
        """User + system CPU time of the node process so far, all threads (Linux /proc)."""
        try:
            fields_ = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return math.nan
        return (int(fields_[11]) + int(fields_[12])) / os.sysconf("SC_CLK_TCK")

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)


def generate_testnet(out: Path, block_time_ms: int, faucets: int) -> dict[str, Any]:
    """`gannet testnet -n 4` into `out`; its testnet.json."""
    args = [gannet_executable(), "testnet", "-n", str(NODES), "--output", str(out),
            "--base-port", str(free_base_port()), "--chain-id", CHAIN_ID,
            "--block-time", str(block_time_ms), "--funded-accounts", str(faucets)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise BenchError(f"gannet testnet failed: {done.stderr.strip()}")
    return json.loads((out / "testnet.json").read_text())


def set_p2p_frame_limit(summary: dict[str, Any], frames_per_s: int) -> None:
    """Rewrite every node's config.toml with this inbound p2p frame rate per peer."""
    for node in summary["nodes"]:
        path = HomePaths(Path(node["home"])).config_file
        config = load_config(path)
        save_config(path, replace(config, p2p=replace(config.p2p,
                                                      max_frames_per_s=frames_per_s)))


def peer_bans(procs: list[NodeProc]) -> tuple[int, str]:
    """How many peer bans the nodes logged, and the reason of the last one."""
    count, last = 0, ""
    for node in procs:
        for line in node.log_path.read_text(errors="replace").splitlines():
            if " banned for " in line:
                count += 1
                last = line.split("(last offence: ", 1)[-1].rstrip(")")
    return count, last


def start_nodes(summary: dict[str, Any], logs: Path, profile_dir: Path | None) -> list[NodeProc]:
    """Start every node of `summary` (node0 under cProfile when `profile_dir` is set)."""
    procs = []
    for index, node in enumerate(summary["nodes"]):
        args = [gannet_executable(), "node", "start", "--home", node["home"]]
        if profile_dir is not None and index == 0:
            args = [sys.executable, "-m", "cProfile", "-o",
                    str(profile_dir / "node0.prof"), *args]
        log_path = logs / f"{node['moniker']}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        port = node["rpc_port"]
        procs.append(NodeProc(node["moniker"], f"http://127.0.0.1:{port}/",
                              f"ws://127.0.0.1:{port}/ws", log_path, proc))
    return procs


def check_alive(procs: list[NodeProc]) -> None:
    """Raise BenchError naming the first node that has exited, with its log's tail."""
    for node in procs:
        if node.proc.poll() is not None:
            tail = node.log_path.read_text(errors="replace")[-2000:]
            raise BenchError(f"{node.moniker} exited with {node.proc.returncode}:\n{tail}")


# --- JSON-RPC ----------------------------------------------------------------------


class RpcFailed(Exception):
    """A node answered a JSON-RPC call with an error object."""


async def rpc(session: aiohttp.ClientSession, url: str, method: str, *params: Any) -> Any:
    """One JSON-RPC call; its result, or RpcFailed."""
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
    async with session.post(url, json=body) as reply:
        answer = await reply.json(content_type=None)
    if "error" in answer:
        raise RpcFailed(f"{method}: {answer['error'].get('message')}")
    return answer["result"]


async def send_batch(session: aiohttp.ClientSession, url: str, raws: list[str]) -> list[Any]:
    """Post `raws` as one batch of gannet_sendRawTransaction; per tx a hash or an error."""
    body = [{"jsonrpc": "2.0", "id": i, "method": "gannet_sendRawTransaction", "params": [raw]}
            for i, raw in enumerate(raws)]
    async with session.post(url, json=body) as reply:
        answers = await reply.json(content_type=None)
    if not isinstance(answers, list):  # the whole batch was refused
        return [answers.get("error", {}).get("message", "refused")] * len(raws)
    by_id = {a.get("id"): a for a in answers}
    return [by_id.get(i, {}).get("result") or by_id.get(i, {}).get("error", {}).get("message")
            for i in range(len(raws))]


async def wait_committed(session: aiohttp.ClientSession, procs: list[NodeProc],
                         height: int, timeout_s: float) -> None:
    """Wait until every node reports a committed height >= `height`."""
    deadline = time.monotonic() + timeout_s
    while True:
        check_alive(procs)
        heights = []
        for node in procs:
            try:
                heights.append((await rpc(session, node.url, "gannet_status"))["height"])
            except (TimeoutError, aiohttp.ClientError, RpcFailed):
                heights.append(-1)
        if min(heights) >= height:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"nodes did not reach height {height} in {timeout_s:g} s: "
                             f"heights {heights}")
        await asyncio.sleep(0.2)


# --- workload ---------------------------------------------------------------------


@dataclass
class Signed:
    """A pre-signed transfer: its wire hex and its hash."""

    hex: str
    hash: bytes


def signed_transfer(key: SigningKey, to: bytes, nonce: int, fee: int, amount: int) -> SignedTx:
    """A GPU transfer, signed locally."""
    tx = Tx(chain_id=CHAIN_ID.encode(), sender=key.public_key, nonce=nonce, fee=fee,
            body=Transfer(to=to, amount=amount, denom=DENOM_GPU))
    return sign_tx(key, tx)


class LoadBuilder:
    """Transfers round-robin over the senders, sender i pinned to node i mod 4.

    Each sender pays the next sender (existing accounts, so the state does not
    grow); a sender's nonces count up from 0 in the order its node's list is sent.
    """

    def __init__(self, senders: list[SigningKey], fee: int) -> None:
        self.senders = senders
        self.addresses = [address_from_public_key(k.public_key) for k in senders]
        self.fee = fee
        self.nonces = [0] * len(senders)
        self.per_node: list[list[Signed]] = [[] for _ in range(NODES)]
        self.count = 0

    def extend(self, txs: int) -> list[VerifyItem]:
        """Sign `txs` more transfers; their signature checks."""
        items = []
        for n in range(self.count, self.count + txs):
            s = n % len(self.senders)
            stx = signed_transfer(self.senders[s], self.addresses[(s + 1) % len(self.senders)],
                                  self.nonces[s], self.fee, 1)
            raw = encode(stx)
            self.nonces[s] += 1
            self.per_node[s % NODES].append(Signed("0x" + raw.hex(), sha256(raw)))
            items.append(tx_verify_item(stx, raw))
        self.count += txs
        return items


async def fund_senders(session: aiohttp.ClientSession, procs: list[NodeProc],
                       faucets: list[SigningKey], senders: list[SigningKey], amount: int,
                       fee: int, timeout_s: float) -> None:
    """Each faucet pays its share of the senders, FUNDING_WAVE txs pending at a time."""
    shares = [senders[i::len(faucets)] for i in range(len(faucets))]
    deadline = time.monotonic() + timeout_s

    async def fund(index: int, faucet: SigningKey, share: list[SigningKey]) -> None:
        url = procs[index % NODES].url
        address = encode_address(address_from_public_key(faucet.public_key))
        nonce = (await rpc(session, url, "gannet_getAccount", address))["nonce"]
        start = nonce
        for first in range(0, len(share), FUNDING_WAVE):
            wave = share[first:first + FUNDING_WAVE]
            raws = ["0x" + encode(signed_transfer(faucet, address_from_public_key(k.public_key),
                                                  start + first + i, fee, amount)).hex()
                    for i, k in enumerate(wave)]
            for chunk in range(0, len(raws), 100):
                for answer in await send_batch(session, url, raws[chunk:chunk + 100]):
                    if not (isinstance(answer, str) and answer.startswith("0x")
                            and len(answer) == 66):
                        raise BenchError(f"a funding transfer was refused: {answer}")
            while nonce < start + first + len(wave):
                check_alive(procs)
                if time.monotonic() > deadline:
                    raise BenchError(f"funding did not finalize within {timeout_s:g} s")
                await asyncio.sleep(0.2)
                nonce = (await rpc(session, url, "gannet_getAccount", address))["nonce"]

    await asyncio.gather(*(fund(i, f, share) for i, (f, share)
                           in enumerate(zip(faucets, shares, strict=True))))


# --- the load and its observation ----------------------------------------------------


@dataclass
class Observed:
    """What the client saw: first-seen time and tx hashes per height, and its own txs."""

    seen_at: dict[int, float] = field(default_factory=dict)
    tx_counts: dict[int, int] = field(default_factory=dict)
    included_at: dict[bytes, int] = field(default_factory=dict)  # tx hash -> height
    submitted_at: dict[bytes, float] = field(default_factory=dict)  # accepted txs only
    rejected: Counter[str] = field(default_factory=Counter)
    submitted: int = 0
    outstanding: int = 0  # accepted, not yet seen in a block
    top: int = 0
    fetches: set[asyncio.Task[None]] = field(default_factory=set)


async def watch_heads(session: aiohttp.ClientSession, node: NodeProc, seen: Observed,
                      stop: asyncio.Event) -> None:
    """Stamp every height the first time any node announces it, then fetch its tx hashes."""
    async with session.ws_connect(node.ws_url, max_msg_size=0) as ws:
        await ws.send_json({"jsonrpc": "2.0", "id": 1, "method": "gannet_subscribe",
                            "params": ["newHeads"]})
        while not stop.is_set():
            try:
                message = await ws.receive(timeout=0.5)
            except TimeoutError:
                continue
            if message.type != aiohttp.WSMsgType.TEXT:
                print(f"  {node.moniker}: newHeads subscription ended ({message.type.name})",
                      file=sys.stderr)
                return
            data = json.loads(message.data)
            if data.get("method") != "gannet_subscription":
                continue
            height = data["params"]["result"]["height"]
            now = time.perf_counter()
            for h in range(seen.top + 1, height + 1):  # heights this client had not seen
                seen.seen_at[h] = now
                task = asyncio.create_task(fetch_block(session, node.url, h, seen))
                seen.fetches.add(task)
                task.add_done_callback(seen.fetches.discard)
            seen.top = max(seen.top, height)


async def first_head(seen: Observed, procs: list[NodeProc], timeout_s: float) -> None:
    """Wait until the subscriptions have announced a block (so the window has a start)."""
    deadline = time.monotonic() + timeout_s
    while not seen.seen_at:
        check_alive(procs)
        if time.monotonic() > deadline:
            raise BenchError(f"no newHeads notification within {timeout_s:g} s")
        await asyncio.sleep(POLL_S)


async def fetch_block(session: aiohttp.ClientSession, url: str, height: int,
                      seen: Observed) -> None:
    """Record the tx count of block `height` and where each of our txs landed."""
    try:
        block = await rpc(session, url, "gannet_getBlockByNumber", height, False)
    except (TimeoutError, aiohttp.ClientError, RpcFailed) as exc:
        print(f"  block {height} could not be fetched: {exc!r}", file=sys.stderr)
        return
    seen.tx_counts[height] = block["tx_count"]
    for hex_hash in block["txs"]:
        h = bytes.fromhex(hex_hash[2:])
        if h in seen.submitted_at and h not in seen.included_at:
            seen.included_at[h] = height
            seen.outstanding -= 1


@dataclass
class LoadPlan:
    """How hard and how long to push."""

    rate: float
    seconds: float
    max_in_flight: int
    batch: int
    connections: int


async def generate(session: aiohttp.ClientSession, procs: list[NodeProc],
                   load: list[list[Signed]], plan: LoadPlan, seen: Observed) -> None:
    """Post each node's transfers in order at `plan.rate` for `plan.seconds`.

    Every client takes the next batch of its node's list when the schedule and
    the in-flight cap allow; each tx's submit time is when its batch was posted.
    """
    start = time.perf_counter()
    end = start + plan.seconds
    cursors = [0] * NODES

    async def client(index: int) -> None:
        node, txs = procs[index], load[index]
        while (now := time.perf_counter()) < end and cursors[index] < len(txs):
            due = int(plan.rate * (now - start)) - seen.submitted
            room = plan.max_in_flight - seen.outstanding
            take = min(plan.batch, due, room, len(txs) - cursors[index])
            if take <= 0:
                await asyncio.sleep(0.005)
                continue
            chunk = txs[cursors[index]:cursors[index] + take]
            cursors[index] += take
            seen.submitted += take
            seen.outstanding += take  # refused ones are taken back below
            posted = time.perf_counter()
            for tx in chunk:
                seen.submitted_at[tx.hash] = posted
            answers = await send_batch(session, node.url, [tx.hex for tx in chunk])
            for tx, answer in zip(chunk, answers, strict=True):
                if not (isinstance(answer, str) and answer == "0x" + tx.hash.hex()):
                    seen.rejected[str(answer)[:60]] += 1
                    if tx.hash not in seen.included_at:
                        del seen.submitted_at[tx.hash]
                        seen.outstanding -= 1

    await asyncio.gather(*(client(i) for i in range(NODES) for _ in range(plan.connections)))


def cpu_now(procs: list[NodeProc]) -> list[float]:
    """CPU seconds used so far by each node, then by this process."""
    return [n.cpu_seconds() for n in procs] + [time.process_time()]


async def sample_cpu_after(procs: list[NodeProc], delay_s: float) -> list[float]:
    """`cpu_now` once the warmup is over (the start of the window)."""
    await asyncio.sleep(delay_s)
    return cpu_now(procs)


async def same_head(session: aiohttp.ClientSession, procs: list[NodeProc],
                    timeout_s: float) -> tuple[bool, int, str]:
    """Whether all nodes agree on the block hash at the lowest head among them.

    Polls until all report the same head (they may be one block apart for a
    moment); at the deadline compares the hash at the lowest of their heights.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = [await rpc(session, n.url, "gannet_status") for n in procs]
        heads = {(s["height"], s["head_hash"]) for s in statuses}
        if len(heads) == 1:
            height, head = heads.pop()
            return True, height, head
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(POLL_S)
    low = min(s["height"] for s in statuses)
    hashes = {(await rpc(session, n.url, "gannet_getBlockByNumber", low, False))["hash"]
              for n in procs}
    return len(hashes) == 1, low, ",".join(sorted(hashes))


# --- figures ----------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile `q` (0..100) of an ascending list (nan when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def figures(observed: tuple[Observed, tuple[float, float]], limit: float,
            block_time_ms: int, cpu: list[float], cpu_per_verify: float) -> dict[str, Any]:
    """Throughput over the window's blocks and latency of the txs posted in it."""
    seen, (t0, t1) = observed
    before = [h for h, t in seen.seen_at.items() if t <= t0]
    inside = sorted(h for h, t in seen.seen_at.items() if t0 < t <= t1)
    if not before:
        raise BenchError("no block was committed before the measurement window")
    h0 = max(before)
    h1 = inside[-1] if inside else h0
    # A stalled chain finalizes nothing: its window runs to the end of the load.
    span = seen.seen_at[h1] - seen.seen_at[h0] if inside else t1 - seen.seen_at[h0]
    missing = [h for h in inside if h not in seen.tx_counts]
    if missing:
        raise BenchError(f"blocks {missing} of the window could not be fetched")
    txs = sum(seen.tx_counts[h] for h in inside)
    interval = span / len(inside) if inside else math.nan
    latencies = sorted(seen.seen_at[seen.included_at[h]] - t
                       for h, t in seen.submitted_at.items()
                       if t0 <= t < t1 and h in seen.included_at)
    posted = sum(1 for t in seen.submitted_at.values() if t0 <= t < t1)
    tps = txs / span
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    return {
        "finalized_tps": tps, "limit_tps": limit, "ratio": tps / limit,
        "window_s": span, "blocks": len(inside), "first_height": h0 + 1, "last_height": h1,
        "empty_blocks": sum(1 for h in inside if seen.tx_counts[h] == 0),
        "window_txs": txs, "block_interval_ms": 1000 * interval,
        "configured_block_time_ms": block_time_ms,
        "latency_p50_ms": 1000 * p50, "latency_p99_ms": 1000 * p99,
        "latency_p50_intervals": p50 / interval, "latency_p99_intervals": p99 / interval,
        "window_posted_accepted": posted, "window_not_finalized": posted - len(latencies),
        "submitted": seen.submitted, "rejected": sum(seen.rejected.values()),
        "rejections": dict(seen.rejected.most_common(5)),
        "node_cpu_us_per_tx": 1e6 * sum(cpu[:NODES]) / txs if txs else math.nan,
        "client_cpu_us_per_tx": 1e6 * cpu[NODES] / txs if txs else math.nan,
        "node_cpu_share": sum(cpu[:NODES]) / (t1 - t0) / cpu_count(),
        "verify_cpu_us": 1e6 * cpu_per_verify,
        "max_txs_in_block": max((seen.tx_counts[h] for h in inside), default=0),
    }


def report(f: dict[str, Any], setup: dict[str, Any]) -> None:
    """The human-readable result."""
    rows = [
        ("machine", setup["machine"], ""),
        ("verifies/s, all cores", f"{setup['verifies_per_s']:,.0f}", "libsodium, best of 3"),
        ("limit (÷ 4 validators)", f"{f['limit_tps']:,.0f}", "tx/s"),
        ("offered load", f"{setup['rate']:,.0f}",
         f"tx/s asked; {setup['senders']} senders, in flight <= {setup['max_in_flight']}"),
        ("finalized", f"{f['finalized_tps']:,.0f}",
         f"tx/s over {f['window_s']:.1f} s, " + (
             f"heights {f['first_height']}..{f['last_height']}" if f["blocks"]
             else f"no block after height {f['last_height']}: the chain stalled")),
        ("ratio", f"{f['ratio']:.3f}", f"goal >= {GOAL_RATIO}"),
        ("latency p50", f"{f['latency_p50_ms']:,.0f} ms",
         f"{f['latency_p50_intervals']:.2f} block intervals "
         f"(goal <= {GOAL_LATENCY_INTERVALS})"),
        ("latency p99", f"{f['latency_p99_ms']:,.0f} ms",
         f"{f['latency_p99_intervals']:.2f} block intervals"),
        ("block interval", f"{f['block_interval_ms']:,.0f} ms",
         f"measured; configured block time {f['configured_block_time_ms']} ms"),
        ("blocks committed", f"{f['blocks']}",
         f"{f['empty_blocks']} empty, largest {f['max_txs_in_block']} txs"),
        ("CPU per finalized tx", f"{f['node_cpu_us_per_tx']:,.0f} µs",
         f"4 nodes together (4 verifies = {4 * f['verify_cpu_us']:,.0f} µs); client "
         f"{f['client_cpu_us_per_tx']:,.0f} µs; nodes used {100 * f['node_cpu_share']:.0f}% "
         f"of the cores"),
        ("txs posted (window)", f"{f['window_posted_accepted']:,}",
         f"{f['window_not_finalized']} not finalized by the end"),
        ("rejected (whole run)", f"{f['rejected']:,}",
         "; ".join(f"{n}x {r}" for r, n in f["rejections"].items())),
        ("peer bans", f"{setup['peer_bans']}",
         f"p2p.max_frames_per_s {setup['p2p_max_frames_per_s']}"
         + (f"; last: {setup['last_ban_reason']}" if setup["peer_bans"] else "")),
        ("same head on 4 nodes", "yes" if setup["same_head"] else "NO",
         f"height {setup['head_height']} {setup['head_hash'][:18]}"),
    ]
    print_table("4-validator loopback testnet", rows)


# --- main ---------------------------------------------------------------------------


async def run_bench(args: argparse.Namespace, work: Path, note: Any) -> tuple[dict, dict]:
    """Generate, sign, measure the limit, then start, fund, load, observe, check.

    The limit is measured and the load signed before any node runs, so neither
    competes with the nodes for the cores; the nodes always stop.
    """
    summary = generate_testnet(work / "net", args.block_time, args.faucets)
    if args.p2p_max_frames_per_s:
        set_p2p_frame_limit(summary, args.p2p_max_frames_per_s)
    genesis = load_genesis(HomePaths(Path(summary["nodes"][0]["home"])).genesis_file)
    fee = max(args.fee, genesis.params.fee.min_fee)
    faucets = [load_keystore(f["keystore"], "") for f in summary["faucets"]]
    senders = [SigningKey.generate() for _ in range(args.senders)]
    builder = LoadBuilder(senders, fee)
    note("measuring the limit")
    verifies, cpu_per_verify = verify_limit(builder.extend(LIMIT_ITEMS), cpu_count())
    limit = verifies / NODES
    rate = args.rate if args.rate else GOAL_RATIO * limit
    seconds = args.warmup + args.seconds
    total = math.ceil(rate * seconds)
    note(f"limit {limit:,.0f} tx/s; signing {total:,} transfers")
    builder.extend(max(0, total - builder.count))
    plan = LoadPlan(rate, seconds, args.max_in_flight, args.batch, args.connections)
    profile_dir = work if args.profile_node else None
    procs = start_nodes(summary, work, profile_dir)
    try:
        result, setup = await drive(args, procs, faucets, builder, plan, note)
    finally:
        for node in procs:
            node.stop()
        if profile_dir is not None:
            print_profile(profile_dir / "node0.prof", args.profile_lines)
    result_figures = figures(result, limit, args.block_time, setup["window_cpu_s"],
                             cpu_per_verify)
    return result_figures, {**setup, "verifies_per_s": verifies}


async def drive(args: argparse.Namespace, procs: list[NodeProc], faucets: list[SigningKey],
                builder: LoadBuilder, plan: LoadPlan, note: Any
                ) -> tuple[tuple[Observed, tuple[float, float]], dict[str, Any]]:
    """Everything that talks to the running nodes: what was seen, the window, the setup."""
    timeout = aiohttp.ClientTimeout(total=RPC_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await wait_committed(session, procs, 1, READY_TIMEOUT_S)
        note(f"nodes up; funding {len(builder.senders)} senders from {len(faucets)} faucets")
        funds = max(SENDER_FUNDS, 2 * (builder.fee + 1) * max(builder.nonces))
        await fund_senders(session, procs, faucets, builder.senders, funds, builder.fee,
                           timeout_s=120 + 2 * len(builder.senders) / FUNDING_WAVE)
        note(f"offering {plan.rate:,.0f} tx/s for {plan.seconds:g} s")
        seen = Observed()
        stop = asyncio.Event()
        watchers = [asyncio.create_task(watch_heads(session, n, seen, stop)) for n in procs]
        await first_head(seen, procs, READY_TIMEOUT_S)  # the window's reference block
        started = time.perf_counter()
        sampler = asyncio.create_task(sample_cpu_after(procs, args.warmup))
        await generate(session, procs, builder.per_node, plan, seen)
        ended = time.perf_counter()
        cpu = [b - a for a, b in zip(await sampler, cpu_now(procs), strict=True)]
        check_alive(procs)
        drain_until = time.monotonic() + max(10.0, 5 * args.block_time / 1000)
        while seen.outstanding > 0 and time.monotonic() < drain_until:
            await asyncio.sleep(POLL_S)
        same, height, head = await same_head(session, procs, timeout_s=10.0)
        bans, ban_reason = peer_bans(procs)
        stop.set()
        await asyncio.gather(*watchers, return_exceptions=True)
        await asyncio.gather(*seen.fetches, return_exceptions=True)
    setup = {"machine": machine(), "rate": plan.rate, "senders": len(builder.senders),
             "max_in_flight": plan.max_in_flight, "same_head": same, "head_height": height,
             "head_hash": head, "window_cpu_s": cpu, "peer_bans": bans,
             "last_ban_reason": ban_reason,
             "p2p_max_frames_per_s": args.p2p_max_frames_per_s or "node default"}
    return (seen, (started + args.warmup, ended)), setup


def print_profile(path: Path, lines: int) -> None:
    """The top of node0's cProfile by cumulative and by own time."""
    import pstats

    if not path.exists():
        print(f"no profile at {path} (node0 did not exit cleanly)", file=sys.stderr)
        return
    stats = pstats.Stats(str(path), stream=sys.stderr)
    stats.sort_stats("cumulative").print_stats(lines)
    stats.sort_stats("tottime").print_stats(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 if the nodes disagree on the head."""
    args = parse_args(argv)
    note = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))
    work = Path(tempfile.mkdtemp(prefix="gannet-bench-testnet-"))
    try:
        result, setup = asyncio.run(run_bench(args, work, note))
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps({**result, **setup}, indent=2))
    else:
        report(result, setup)
    return 0 if setup["same_head"] else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="measurement window after the warmup (default 30)")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="seconds of load before the window (default 3)")
    parser.add_argument("--block-time", type=int, default=1000,
                        help="block time in ms, as gannet testnet --block-time (default 1000)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help=f"offered tx/s (default {GOAL_RATIO} x the limit: the goal's load)")
    parser.add_argument("--senders", type=int, default=2000,
                        help="funded sender accounts (default 2000)")
    parser.add_argument("--faucets", type=int, default=4,
                        help="faucet accounts that fund the senders (default 4)")
    parser.add_argument("--max-in-flight", type=int, default=8000,
                        help="accepted but not finalized txs at most (default 8000; "
                             "the mempool holds 10000)")
    parser.add_argument("--batch", type=int, default=50,
                        help="txs per JSON-RPC batch (default 50; nodes allow 100)")
    parser.add_argument("--connections", type=int, default=4,
                        help="concurrent clients per node (default 4)")
    parser.add_argument("--p2p-max-frames-per-s", type=int, default=0,
                        help="set p2p.max_frames_per_s in every config.toml (default: leave "
                             "the node default; each gossiped tx is one frame)")
    parser.add_argument("--fee", type=int, default=0, help="fee (default: the network minimum)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (homes, logs)")
    parser.add_argument("--profile-node", action="store_true",
                        help="run node0 under cProfile and print the top of it at the end")
    parser.add_argument("--profile-lines", type=int, default=25, help="profile rows per sort")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.warmup < 0 or args.senders < 2 or args.faucets < 1:
        parser.error("--seconds > 0, --warmup >= 0, --senders >= 2, --faucets >= 1")
    if not 1 <= args.batch <= 100 or args.connections < 1 or args.max_in_flight < 1:
        parser.error("--batch 1..100, --connections >= 1, --max-in-flight >= 1")
    return args


if __name__ == "__main__":
    sys.exit(main())
