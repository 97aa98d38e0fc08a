"""Every crash point of GANNET_FAULT_CRASH, at three heights each, on a real validator.

One 4-validator cluster per point. Node 2 is down for the whole scenario, so the
chain needs node 3 at every height: when node 3 dies the chain halts, and after its
restart it must finish the very height it crashed in, replaying its WAL and asking
its signer again. Node 3 runs with the point and the three heights still to come;
each crash is restarted without any repair (only the crash heights already passed
are dropped from the variable, as a restart with them would crash again).

At each crash, while the chain is halted and nothing moves, every home's sign state
and WAL is read into one `SignLedger`, and again at the end with every node's
commits: a message node 3 signed before a crash and a different one signed at the
same height/round/step after it is a conflict wherever the two are seen. The vote
and commit points crash at consecutive heights, so the WALs read at crash k+1 still
hold what node 3 signed after restart k (a WAL keeps the last two heights); the
proposal points crash at the heights node 3 proposes in round 0 (every 4th).

Figures (restart: RPC answering, height committed) are printed (`pytest -s`).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from chain.address import parse_address
from consensus.wal import check_wal
from node.config import HomePaths
from node.consensus import CRASH_ENV, CRASH_EXIT_CODE, CRASH_POINTS
from tests.e2e.checks import (
    SignLedger,
    check_no_double_signing,
    check_no_uncaught_exceptions,
    check_same_chain,
    head_heights,
    node_urls,
    wait_converged,
    wait_halted,
)
from tests.e2e.cluster import Cluster

pytestmark = pytest.mark.e2e

BLOCK_TIME_MS = 250
TIMEOUT_S = 60.0
CRASHES = 3
CRASHER, DOWN, OTHERS = 3, 2, [0, 1]
PROPOSAL_POINTS = ("proposal-after-sign", "proposal-after-wal")
COMMIT_POINTS = ("before-commit-batch", "after-commit-batch")
RPC_WITHIN_S = 20.0  # the bounds for a perturbed node
CAUGHT_UP_WITHIN_S = 30.0


def test_every_crash_point_is_known() -> None:
    """The scenario below runs each point the node offers (a new point needs a run here)."""
    assert set(CRASH_POINTS) == {"after-sign", "mid-wal", "after-wal", *PROPOSAL_POINTS,
                                 *COMMIT_POINTS}


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_validator_crashing_at_a_point_restarts_and_never_signs_differently(
        tmp_path: Path, point: str) -> None:
    with Cluster(tmp_path, n=4, block_time_ms=BLOCK_TIME_MS) as cluster:
        homes = [cluster.home(i) for i in range(cluster.n)]
        crasher = parse_address(cluster.summary["nodes"][CRASHER]["validator_address"])
        # Proposal points read node 3's round-0 turn from the blocks: let it come twice.
        warm_up = 2 * cluster.n if point in PROPOSAL_POINTS else 2
        cluster.wait_height(warm_up, timeout_s=TIMEOUT_S)
        cluster.kill9(DOWN)
        cluster.stop(CRASHER)
        halted = max(wait_halted(node_urls(cluster, OTHERS), quiet_s=1.0))
        heights = crash_heights(cluster, point, halted)
        ledger = SignLedger()
        figures = []
        cluster.start(CRASHER, env=crash_env(point, heights))
        for k, height in enumerate(heights):
            assert cluster.wait_exit(CRASHER, timeout_s=TIMEOUT_S) == CRASH_EXIT_CODE
            assert f"TEST FAULT: crashing at {point} height={height}" in \
                cluster.node(CRASHER).log_of_this_run()
            check_halted_by_the_crash(cluster, point, height)
            before = crash_snapshot(cluster, homes, ledger, crasher, height)
            if point == "mid-wal":
                assert before["torn_tail"], "the crash left no torn WAL tail"

            started = time.monotonic()
            cluster.start(CRASHER, env=crash_env(point, heights[k + 1:]))  # RPC answers
            rpc_s = time.monotonic() - started
            if point == "after-commit-batch":  # the block was durable before the crash
                assert head_heights(node_urls(cluster, [CRASHER]))[0] >= height
            # Nodes 0 and 1 commit past the crash only with node 3's votes (which may
            # crash it again at once, at the next height of its list).
            past = height + 1 if point in COMMIT_POINTS else height
            cluster.wait_height(past, nodes=OTHERS, timeout_s=TIMEOUT_S)
            caught_s = time.monotonic() - started
            log = cluster.node(CRASHER).log_of_this_run()
            if point == "mid-wal":
                assert "dropping a torn tail" in log, "the torn WAL tail was not cut"
            assert rpc_s < RPC_WITHIN_S and caught_s < CAUGHT_UP_WITHIN_S, (rpc_s, caught_s)
            figures.append((height, rpc_s, caught_s, before["signed"]))

        cluster.wait_height(heights[-1] + 3, nodes=[*OTHERS, CRASHER], timeout_s=TIMEOUT_S)
        cluster.start(DOWN)
        cluster.wait_height(heights[-1] + 5, timeout_s=TIMEOUT_S)
        urls = node_urls(cluster)
        wait_converged(urls, timeout_s=TIMEOUT_S)
        check_same_chain(urls)
        check_no_double_signing(urls, homes, ledger)
        check_no_uncaught_exceptions(cluster)
        compared = compared_keys(ledger, crasher, heights)
        print(f"\n[crash-points] {point}: " + "; ".join(
            f"h={h} signed-before={n} rpc={r:.2f}s caught-up={c:.2f}s"
            for h, r, c, n in figures) + f"; pre-crash messages seen again after restart: "
            f"{compared}; ledger {dict(ledger.sources)}")


def crash_env(point: str, heights: list[int]) -> dict[str, str]:
    """GANNET_FAULT_CRASH for the crashes still to come (none: no variable)."""
    return {CRASH_ENV: f"{point}:{','.join(map(str, heights))}"} if heights else {}


def crash_heights(cluster: Cluster, point: str, halted: int) -> list[int]:
    """Three heights past `halted`: the next three for a vote or commit point, the next
    three at which node 3 proposes in round 0 for a proposal point."""
    if point not in PROPOSAL_POINTS:
        return [halted + 1 + k for k in range(CRASHES)]
    slot = proposer_slot(cluster, halted, cluster.summary["nodes"][CRASHER]["validator_address"])
    first = halted + 2 + (slot - halted - 2) % cluster.n
    return [first + cluster.n * k for k in range(CRASHES)]


def proposer_slot(cluster: Cluster, upto: int, address: str) -> int:
    """h mod n for the heights `address` proposes in round 0 (equal powers: a validator
    proposes every n-th height), read from the blocks decided in round 0 so far."""
    slots = set()
    for k in range(1, upto + 1):
        commit = cluster.rpc(0, "gannet_getCommit", k)
        block = cluster.rpc(0, "gannet_getBlockByNumber", k, False)
        if commit["round"] == 0 and block["proposer"] == address:
            slots.add(k % cluster.n)
    assert len(slots) == 1, f"no single round-0 slot for {address} in blocks 1..{upto}: {slots}"
    return slots.pop()


def check_halted_by_the_crash(cluster: Cluster, point: str, height: int) -> None:
    """Nodes 0 and 1 alone cannot commit `height`: they stand just before it (or, for a
    commit point, where node 3's precommit had already let them commit it)."""
    heights = wait_halted(node_urls(cluster, OTHERS), quiet_s=0.5)
    expected = {height} if point in COMMIT_POINTS else {height - 1}
    assert set(heights) <= expected | {height - 1}, (point, height, heights)


def crash_snapshot(cluster: Cluster, homes: list[Path], ledger: SignLedger, crasher: bytes,
                   height: int) -> dict[str, object]:
    """Feed every home (node 3 dead, the chain halted) and the running nodes' commits into
    the ledger; what node 3 is on record as having signed at `height`."""
    check_no_double_signing(node_urls(cluster, OTHERS), homes, ledger)
    signed = [k for k in ledger.keys_of(crasher) if k[1] == height]
    torn = check_wal(HomePaths(homes[CRASHER]).wal_dir).torn_bytes
    return {"signed": len(signed), "torn_tail": torn}


def compared_keys(ledger: SignLedger, crasher: bytes, heights: list[int]) -> int:
    """How many of node 3's messages at the crash heights were read both in a feed before
    its restart and in one after (same digest, else the ledger holds a conflict)."""
    return sum(1 for key, epochs in ledger.epochs.items()
               if key[0] == crasher and key[1] in heights and len(epochs) > 1)
