"""Invariants of a running testnet, checked over JSON-RPC on every node.

- `check_same_chain`: every node holds the same block (hash, app hash, parent
  link) at every height up to the lowest head: no fork, no divergent state.
- `wait_converged`: all nodes report one head (height, hash, app hash) at once.
- `check_commit_quorum`: a commit carries distinct signers of the height's
  validator set holding more than 2/3 of its power.
- `committed_evidence` / `check_no_evidence`: double-sign evidence in the chain.
- `wait_halted`: heights stop moving (a chain without quorum commits nothing).
- `total_gpu`: GPU held by a list of accounts, read at one height.
- `check_no_uncaught_exceptions` / `uncaught_in_logs`: tracebacks and ERROR lines in
  node logs; `read_rss_kib` / `check_rss`: resident memory under a bound, no growth.

Reads are not snapshots (blocks commit between two calls), so checks that need
one height either bound what they read by the lowest head or retry until two
head reads agree.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from chain.types import ZERO_HASH
from tests.e2e.cluster import Cluster
from tests.e2e.harness import RpcError, account_gpu, rpc_batch, rpc_batch_chunked, rpc_call

POLL_S = 0.05
SNAPSHOT_ATTEMPTS = 50


def node_urls(cluster: Cluster, nodes: Iterable[int] | None = None) -> list[str]:
    """The RPC URLs of cluster nodes (default: all validators)."""
    chosen = range(cluster.n) if nodes is None else nodes
    return [cluster.node(i).url for i in chosen]


def head_heights(urls: Sequence[str]) -> list[int]:
    """Each node's committed height."""
    return [int(rpc_call(url, "gannet_status", timeout=5)["height"]) for url in urls]


def fetch_blocks(url: str, low: int, high: int) -> list[dict[str, Any]]:
    """Blocks low..high of one node (tx hashes only); each must be there."""
    calls = [("gannet_getBlockByNumber", [k, False]) for k in range(low, high + 1)]
    blocks = rpc_batch_chunked(url, calls)
    for k, block in zip(range(low, high + 1), blocks, strict=True):
        if isinstance(block, RpcError):
            raise AssertionError(f"{url}: block {k} of {high} unreadable: {block}")
        assert block["height"] == k, f"{url}: asked for block {k}, got {block['height']}"
    return blocks


def check_same_chain(urls: Sequence[str]) -> int:
    """Blocks 1..(lowest head) are identical on every node and linked; the lowest head.

    Identical means the same block hash, app hash and parent; the block hash
    covers the whole header, so state, validators and evidence agree as well.
    """
    low = min(head_heights(urls))
    chains = [fetch_blocks(url, 1, low) for url in urls]
    previous = "0x" + ZERO_HASH.hex()
    for k in range(1, low + 1):
        reference = chains[0][k - 1]
        for url, chain in zip(urls[1:], chains[1:], strict=True):
            block = chain[k - 1]
            assert (block["hash"], block["app_hash"]) == (reference["hash"],
                                                          reference["app_hash"]), (
                f"fork at height {k}: {urls[0]} has {reference['hash']} "
                f"(app {reference['app_hash']}), {url} has {block['hash']} "
                f"(app {block['app_hash']})")
        assert reference["prev_hash"] == previous, f"block {k} does not link to block {k - 1}"
        previous = reference["hash"]
    return low


def wait_converged(urls: Sequence[str], timeout_s: float = 30.0) -> dict[str, Any]:
    """Wait until every node reports the same head height, hash and app hash; that head."""
    deadline = time.monotonic() + timeout_s
    while True:
        heads = []
        for url in urls:
            try:
                status = rpc_call(url, "gannet_status", timeout=2)
            except (OSError, RpcError):
                status = None
            heads.append(None if status is None else
                         (status["height"], status["head_hash"], status["app_hash"]))
        if heads[0] is not None and all(h == heads[0] for h in heads):
            height, head_hash, app_hash = heads[0]
            return {"height": height, "head_hash": head_hash, "app_hash": app_hash}
        if time.monotonic() > deadline:
            raise AssertionError(f"nodes did not converge on one head in {timeout_s:g} s: "
                                 f"{[h and h[:2] for h in heads]}")
        time.sleep(POLL_S)


def check_commit_quorum(url: str, height: int) -> dict[str, Any]:
    """The commit of `height` names the block there, by distinct signers of the height's
    validator set with more than 2/3 of its power; the commit."""
    commit = rpc_call(url, "gannet_getCommit", height)
    block = rpc_call(url, "gannet_getBlockByNumber", height, False)
    validators = rpc_call(url, "gannet_getValidators", height)
    assert (commit["height"], commit["block_hash"]) == (height, block["hash"]), commit
    power = {v["address"]: int(v["power"]) for v in validators["validators"]}
    signers = [s["validator"] for s in commit["signatures"]]
    assert len(set(signers)) == len(signers), f"a validator signed twice: {signers}"
    assert set(signers) <= set(power), f"signers outside the set: {set(signers) - set(power)}"
    signed = sum(power[s] for s in signers)
    total = int(validators["total_power"])
    assert total == sum(power.values()) and 3 * signed > 2 * total, (
        f"commit {height}: signers hold {signed} of {total}")
    return commit


def committed_evidence(url: str, validator: str | None = None) -> list[dict[str, Any]]:
    """The double-sign offences committed in the chain a node holds."""
    params = [] if validator is None else [validator]
    return rpc_call(url, "gannet_getEvidence", *params)["committed"]


def check_no_evidence(urls: Sequence[str]) -> None:
    """No node's chain holds evidence against anyone."""
    for url in urls:
        found = committed_evidence(url)
        assert not found, f"{url}: evidence committed against honest validators: {found}"


def wait_halted(urls: Sequence[str], quiet_s: float = 3.0,
                timeout_s: float = 15.0) -> list[int]:
    """Wait until no node's height changes for `quiet_s`; those heights.

    A block in flight when the quorum went away may still commit, so the quiet
    period starts at the last change; a chain that keeps committing fails.
    """
    deadline = time.monotonic() + timeout_s
    heights = head_heights(urls)
    since = time.monotonic()
    while time.monotonic() - since < quiet_s:
        if time.monotonic() > deadline:
            raise AssertionError(f"heights still change after {timeout_s:g} s: {heights}")
        time.sleep(POLL_S * 4)
        now = head_heights(urls)
        if now != heights:
            heights, since = now, time.monotonic()
    return heights


def total_gpu(url: str, addresses: Sequence[str]) -> tuple[int, int]:
    """(height, GPU held by `addresses`: balances plus locks), read at one height."""
    calls = [("gannet_blockNumber", []),
             *(("gannet_getAccount", [a]) for a in addresses),
             ("gannet_blockNumber", [])]
    for _ in range(SNAPSHOT_ATTEMPTS):
        first, *accounts, last = rpc_batch(url, calls)
        if first == last:
            return last, sum(account_gpu(a) for a in accounts)
        time.sleep(POLL_S)
    raise AssertionError(f"{url}: no two head reads agreed in {SNAPSHOT_ATTEMPTS} attempts")


# --- logs and memory (appended for the reliability scenarios) -------------------------------

# What an uncaught exception or a logged failure leaves in a node's log.
UNCAUGHT_MARKERS = ("Traceback (most recent call last)", "Task exception was never retrieved",
                    "Exception in callback", "Fatal Python error", " ERROR ", " CRITICAL ")
KIB = 1024


def uncaught_in_logs(paths: Iterable[Any],
                     markers: Sequence[str] = UNCAUGHT_MARKERS) -> list[str]:
    """Every log line (as 'file:line: text') carrying one of `markers`; [] for clean logs.

    A node's log holds every run since its home was made (each start appends),
    so one scan covers the runs before kills and restarts too.
    """
    found: list[str] = []
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as log:
                text = log.read()
        except FileNotFoundError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if any(marker in line for marker in markers):
                found.append(f"{path}:{number}: {line[:300]}")
    return found


def check_no_uncaught_exceptions(cluster: Cluster, nodes: Iterable[int] | None = None) -> None:
    """No honest node's log (default: every validator) shows an uncaught exception or an
    ERROR/CRITICAL line."""
    chosen = range(cluster.n) if nodes is None else nodes
    found = uncaught_in_logs(cluster.node(i).log_path for i in chosen)
    assert not found, f"{len(found)} exception/error line(s) in honest logs:\n" + \
        "\n".join(found[:20])


def read_rss_kib(pid: int) -> int | None:
    """Resident memory of a process (VmRSS of /proc/PID/status) in KiB; None once it is gone
    (or a zombie without memory)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def rss_growth_kib(samples: Sequence[int]) -> int:
    """How much a run's memory grew: the median of its last third minus the median of its
    first third (samples in time order; 0 for fewer than 3)."""
    third = len(samples) // 3
    if third == 0:
        return 0
    first, last = sorted(samples[:third]), sorted(samples[-third:])
    return last[len(last) // 2] - first[len(first) // 2]


def check_rss(series: dict[tuple[int, int], Sequence[int]], bound_kib: int,
              growth_bound_kib: int, min_samples: int = 30) -> None:
    """Memory stayed bounded: every sample of every (node, pid) series under `bound_kib`,
    and no series of at least `min_samples` grew by more than `growth_bound_kib`
    (last third's median over first third's)."""
    over = {key: max(s) for key, s in series.items() if s and max(s) > bound_kib}
    assert not over, f"RSS above {bound_kib // KIB} MiB: " + ", ".join(
        f"node {node} pid {pid}: {kib // KIB} MiB" for (node, pid), kib in sorted(over.items()))
    grew = {key: rss_growth_kib(s) for key, s in series.items() if len(s) >= min_samples}
    grew = {key: g for key, g in grew.items() if g > growth_bound_kib}
    assert not grew, f"RSS grew more than {growth_bound_kib // KIB} MiB over a run: " + \
        ", ".join(f"node {node} pid {pid}: +{g // KIB} MiB"
                  for (node, pid), g in sorted(grew.items()))
