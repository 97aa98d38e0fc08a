"""A full disk on one validator of a loaded 4-validator testnet.

Validator 3 is stopped, then started by hand under RLIMIT_FSIZE (as in
test_disk_full: a write past the limit fails with EFBIG, as on a full disk;
its output goes to a pipe the limit does not touch), with every file of its
home allowed `HEADROOM_BYTES` more than it holds. A load thread sends
transfers through validator 3 and records each one it reports included. When
its store fills, the node must:

- stop signing within one block: with S its store's head after the exit, no
  commit of a height above S + 1 carries its signature (it may have
  precommitted S + 1, the block it failed to save);
- exit non-zero with the operator's message ("store failure") and no
  traceback;
- lose nothing it acknowledged: its store holds every block it logged as
  committed, and every transfer it reported included is in the others'
  chain at the height and index it reported;
- once space is back (a plain restart, no limit), answer RPC and catch up from
  its peers within 30 s: the same chain on all four, no evidence.

Meanwhile the three others keep committing.
"""

from __future__ import annotations

import http.client
import os
import resource
import subprocess
import threading
import time
from pathlib import Path

import pytest

from chain.store import BlockStore
from node.config import HomePaths
from tests.e2e.checks import (
    check_no_evidence,
    check_same_chain,
    fetch_blocks,
    head_heights,
    node_urls,
    wait_converged,
)
from tests.e2e.cluster import Cluster
from tests.e2e.harness import (
    DevSigner,
    RpcError,
    gannet_executable,
    random_address,
    raw_hex,
    rpc_batch,
    rpc_call,
    wait_until,
)

pytestmark = pytest.mark.e2e

BLOCK_TIME_MS = 200
HEADROOM_BYTES = 96 << 10
FULL = 3  # the validator whose disk fills
EXIT_TIMEOUT_S = 60.0
TIMEOUT_S = 60.0
CAUGHT_UP_WITHIN_S = 30.0
SEND_BATCH = 20


def file_limit(home: Path) -> int:
    """The largest file of the home plus the headroom: every file may grow that much."""
    sizes = [p.stat().st_size for p in home.rglob("*") if p.is_file()]
    return max(sizes) + HEADROOM_BYTES


class Load(threading.Thread):
    """Sends transfers through one node and records those it reports included:
    tx hash -> (height, index)."""

    def __init__(self, url: str, signer: DevSigner, fee: int) -> None:
        super().__init__(name="disk-full-load", daemon=True)
        self.url, self.signer, self.fee = url, signer, fee
        self.to = random_address()
        self.accepted: list[str] = []
        self.included: dict[str, tuple[int, int]] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        nonce = 0
        while not self.stopping.is_set():
            try:
                account = rpc_call(self.url, "gannet_getAccount", self.signer.address,
                                   timeout=2)
                nonce = max(nonce, account["pending_nonce"])
                raws = [raw_hex(self.signer.transfer(self.to, 1, n, self.fee))
                        for n in range(nonce, nonce + SEND_BATCH)]
                for result in rpc_batch(self.url, [("gannet_sendRawTransaction", [r])
                                                   for r in raws], timeout=2):
                    if not isinstance(result, RpcError):
                        self.accepted.append(result)
                self.poll()
            except (OSError, http.client.HTTPException, ValueError):
                return  # the node is gone
            time.sleep(0.1)

    def poll(self) -> None:
        """Ask the node which accepted txs it has included."""
        pending = [h for h in self.accepted if h not in self.included][:100]  # batch limit
        infos = rpc_batch(self.url, [("gannet_getTransaction", [h]) for h in pending],
                          timeout=2)
        for h, info in zip(pending, infos, strict=True):
            if not isinstance(info, RpcError) and info["status"] == "included":
                self.included[h] = (info["height"], info["index"])


def run_until_disk_full(cluster: Cluster, limit: int) -> tuple[int, str, Load]:
    """Start validator FULL under the file size limit with a load through it; its exit
    status, its output and the load."""
    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    node = cluster.node(FULL)
    proc = subprocess.Popen(
        [gannet_executable(), "node", "start", "--home", str(cluster.home(FULL))],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        preexec_fn=limit_file_size, start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    chunks: list[bytes] = []
    drain = threading.Thread(target=lambda: chunks.extend(iter(proc.stdout.readline, b"")))
    drain.start()
    load: Load | None = None
    try:
        wait_until(lambda: proc.poll() is not None or _answers(node.url), TIMEOUT_S,
                   "the limited node's RPC")
        fee = int(rpc_call(node.url, "gannet_estimateFee")["min_fee"])
        load = Load(node.url, cluster.faucet_signer(), fee)
        load.start()
        code = proc.wait(timeout=EXIT_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
        if load is not None:
            load.stopping.set()
            load.join(10)
        drain.join(timeout=10)
    assert load is not None
    return code, b"".join(chunks).decode(errors="replace"), load


def _answers(url: str) -> bool:
    try:
        rpc_call(url, "gannet_status", timeout=1)
    except (OSError, RpcError):
        return False
    return True


def logged_commits(output: str) -> list[int]:
    """The heights the node logged as committed."""
    return [int(line.split("height=")[1].split()[0])
            for line in output.splitlines() if "committed block height=" in line]


def signers(url: str, low: int, high: int) -> dict[int, set[str]]:
    """Height -> the validators whose precommits are in its commit."""
    return {h: {s["validator"] for s in rpc_call(url, "gannet_getCommit", h)["signatures"]}
            for h in range(low, high + 1)}


def test_a_full_disk_stops_one_validator_cleanly_and_it_catches_up(tmp_path: Path) -> None:
    with Cluster(tmp_path, n=4, block_time_ms=BLOCK_TIME_MS) as cluster:
        rest = [0, 1, 2]
        address = cluster.summary["nodes"][FULL]["validator_address"]
        cluster.wait_height(3, timeout_s=TIMEOUT_S)
        assert cluster.stop(FULL) == 0
        limit = file_limit(cluster.home(FULL))
        code, output, load = run_until_disk_full(cluster, limit)
        tail = output[-3000:]
        assert code != 0, f"the node did not stop when the disk filled:\n{tail}"
        assert "store failure" in output, f"no operator message about the store:\n{tail}"
        assert "Traceback" not in output, f"the node crashed instead of stopping:\n{tail}"
        exited_at = max(head_heights(node_urls(cluster, rest)))

        store = BlockStore(str(HomePaths(cluster.home(FULL)).store_dir))
        try:
            stored = store.head().height
            assert all(store.get_block(h) is not None and store.get_commit(h) is not None
                       for h in range(1, stored + 1))
        finally:
            store.close()
        committed = logged_commits(output)
        assert committed and max(committed) <= stored, (
            f"logged commits up to {max(committed, default=None)}, the store holds {stored}")

        # The others went on; none of their commits above stored + 1 holds its vote.
        cluster.wait_height(exited_at + 3, nodes=rest, timeout_s=TIMEOUT_S)
        head = min(head_heights(node_urls(cluster, rest)))
        late = {h: s for h, s in signers(cluster.node(0).url, stored + 2, head).items()
                if address in s}
        assert not late, f"signed after the disk filled at {stored + 1}: {sorted(late)}"

        # Space is back: a plain restart answers and catches up from its peers.
        restart = time.monotonic()
        cluster.start(FULL)
        rpc_s = time.monotonic() - restart
        target = max(head_heights(node_urls(cluster, rest)))
        cluster.wait_height(target, nodes=[FULL], timeout_s=CAUGHT_UP_WITHIN_S - rpc_s)
        caught_s = time.monotonic() - restart
        urls = node_urls(cluster)
        wait_converged(urls, timeout_s=TIMEOUT_S)
        height = check_same_chain(urls)
        check_no_evidence(urls)
        for url in urls:
            where = {h: (b["height"], i) for b in fetch_blocks(url, 1, height)
                     for i, h in enumerate(b["txs"])}
            wrong = {h: (p, where.get(h)) for h, p in load.included.items() if where.get(h) != p}
            assert not wrong, f"{url}: acknowledged txs not where reported: {wrong}"
        assert load.included, "the load got nothing included before the disk filled"
        print(f"full disk (files limited to {limit} bytes): node {FULL} exited {code} with its "
              f"store at height {stored} (logged {max(committed)}), the others at "
              f"{exited_at}; no vote from it above {stored + 1} (checked to {head}); "
              f"{len(load.included)} of {len(load.accepted)} acknowledged txs seen included, "
              f"all in the chain; restart: RPC after {rpc_s:.2f} s, caught up to {target} "
              f"after {caught_s:.2f} s; {height} heights identical")
