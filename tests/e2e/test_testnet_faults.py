"""A 4-validator testnet under faults: crashed nodes, partitions, a double signer,
crashes between signing and sending.

The safety rules checked after each: every node holds the same blocks (hash and
app hash) at every common height, and no evidence exists against an honest
validator. The liveness rules: with 3 of 4 validators connected the chain
commits; with 2 of 4 it halts; once the quorum is back it resumes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from node.consensus import CRASH_ENV, CRASH_EXIT_CODE, EQUIVOCATE_ENV
from tests.e2e.checks import (
    check_no_evidence,
    check_same_chain,
    committed_evidence,
    head_heights,
    node_urls,
    wait_converged,
    wait_halted,
)
from tests.e2e.cluster import Cluster

pytestmark = pytest.mark.e2e

BLOCK_TIME_MS = 250
TIMEOUT_S = 60.0
RESUME_S = 10.0  # a chain whose quorum is back commits again within this
QUIET_S = 3.0  # a halted chain commits nothing for this long
EVIDENCE_WITHIN = 5  # heights between an offence and its evidence in a block


def settle(cluster: Cluster) -> None:
    """After a fault: the nodes agree on one head and one chain, nobody is accused."""
    urls = node_urls(cluster)
    wait_converged(urls, timeout_s=TIMEOUT_S)
    check_same_chain(urls)
    check_no_evidence(urls)


def test_one_validator_down_the_chain_goes_on_two_down_it_halts(tmp_path: Path) -> None:
    with Cluster(tmp_path, n=4, block_time_ms=BLOCK_TIME_MS) as cluster:
        cluster.wait_height(3, timeout_s=TIMEOUT_S)
        cluster.kill9(3)
        three = [0, 1, 2]
        height = max(head_heights(node_urls(cluster, three)))
        cluster.wait_height(height + 5, nodes=three, timeout_s=TIMEOUT_S)

        cluster.kill9(2)
        halted = wait_halted(node_urls(cluster, [0, 1]), quiet_s=QUIET_S)
        check_same_chain(node_urls(cluster, [0, 1]))

        cluster.start(2)
        cluster.wait_height(max(halted) + 1, nodes=three, timeout_s=RESUME_S)
        cluster.start(3)
        cluster.wait_height(max(halted) + 4, timeout_s=TIMEOUT_S)
        settle(cluster)


def test_a_2_2_partition_halts_and_heals(tmp_path: Path) -> None:
    with Cluster(tmp_path, n=4, block_time_ms=BLOCK_TIME_MS) as cluster:
        cluster.wait_height(3, timeout_s=TIMEOUT_S)
        cluster.partition([[0, 1], [2, 3]])
        halted = wait_halted(node_urls(cluster), quiet_s=QUIET_S)
        check_same_chain(node_urls(cluster))  # neither half committed alone

        cluster.heal()
        cluster.wait_height(max(halted) + 3, timeout_s=TIMEOUT_S)
        settle(cluster)


def test_a_1_3_partition_the_majority_goes_on_the_minority_catches_up(tmp_path: Path) -> None:
    with Cluster(tmp_path, n=4, block_time_ms=BLOCK_TIME_MS) as cluster:
        cluster.wait_height(3, timeout_s=TIMEOUT_S)
        majority = [0, 1, 2]
        cluster.partition([majority, [3]])
        (alone,) = wait_halted(node_urls(cluster, [3]), quiet_s=1.0)
        cluster.wait_height(alone + 5, nodes=majority, timeout_s=TIMEOUT_S)
        assert head_heights(node_urls(cluster, [3])) == [alone], "the minority committed"
        check_same_chain(node_urls(cluster))

        cluster.heal()
        target = max(head_heights(node_urls(cluster, majority)))
        cluster.wait_height(target, nodes=[3], timeout_s=TIMEOUT_S)
        settle(cluster)


def test_a_double_signer_is_caught_once_per_offence(tmp_path: Path) -> None:
    """Node 3 double-signs at three consecutive heights while node 2 is down, so every
    height waits for node 3's votes: its conflicting votes then arrive while the height
    is still open (a vote for a height already committed is stale and dropped unseen,
    so with all four up a slow double signer can go unnoticed). The first evidence
    tombstones node 3, which leaves the set two heights after the block carrying it:
    the offences fall before that, and node 2 comes back then (without it the three
    left could not reach +2/3) and must learn the evidence from the blocks."""
    with Cluster(tmp_path, n=4, block_time_ms=BLOCK_TIME_MS) as cluster:
        cluster.wait_height(2, timeout_s=TIMEOUT_S)
        cluster.kill9(2)
        cluster.stop(3)
        start = max(wait_halted(node_urls(cluster, [0, 1]), quiet_s=1.0))
        offences = [start + 2, start + 3, start + 4]
        cluster.start(3, env={EQUIVOCATE_ENV: ",".join(map(str, offences))})
        cluster.wait_height(offences[-1], nodes=[0, 1], timeout_s=TIMEOUT_S)
        cluster.start(2)
        cluster.wait_height(offences[-1] + EVIDENCE_WITHIN + 3, timeout_s=TIMEOUT_S)

        byzantine = cluster.summary["nodes"][3]["validator_address"]
        honest = node_urls(cluster, [0, 1, 2])
        lists = [committed_evidence(url) for url in honest]
        assert all(found == lists[0] for found in lists), "honest nodes disagree on evidence"
        found = lists[0]
        assert {e["validator"] for e in found} == {byzantine}, found
        keys = Counter((e["validator"], e["height"], e["round"], e["vote_type"]) for e in found)
        assert all(count == 1 for count in keys.values()), f"evidence twice: {keys}"
        assert {e["height"] for e in found} == set(offences), found
        late = [e for e in found if not e["height"] < e["committed_at"] <= e["height"]
                + EVIDENCE_WITHIN]
        assert not late, f"evidence not committed within {EVIDENCE_WITHIN} heights: {late}"
        assert "TEST FAULT: equivocating" in cluster.node(3).log_of_this_run()
        check_same_chain(node_urls(cluster))
        tombstoned = [v for v in cluster.rpc(0, "gannet_getValidators")["validators"]
                      if v["address"] == byzantine]
        assert not tombstoned, "the tombstoned double signer is still in the set"


@pytest.mark.parametrize("point", ["after-sign", "after-wal"])
def test_a_crash_between_signing_and_sending_signs_nothing_twice(tmp_path: Path,
                                                                  point: str) -> None:
    """Node 3 dies at its first vote of height H, while node 2 is down too: the chain
    halts until node 3 is back, so it must vote at H again, and never differently."""
    with Cluster(tmp_path, n=4, block_time_ms=BLOCK_TIME_MS) as cluster:
        cluster.wait_height(2, timeout_s=TIMEOUT_S)
        cluster.kill9(2)
        cluster.stop(3)
        crash_height = max(wait_halted(node_urls(cluster, [0, 1]), quiet_s=1.0)) + 1
        cluster.start(3, env={CRASH_ENV: f"{point}:{crash_height}"})
        assert cluster.wait_exit(3, timeout_s=TIMEOUT_S) == CRASH_EXIT_CODE
        assert f"TEST FAULT: crashing at {point} height={crash_height}" in \
            cluster.node(3).log_of_this_run()
        assert max(head_heights(node_urls(cluster, [0, 1]))) < crash_height

        cluster.start(3)
        three = [0, 1, 3]
        cluster.wait_height(crash_height + 3, nodes=three, timeout_s=TIMEOUT_S)
        cluster.start(2)
        cluster.wait_height(crash_height + 6, timeout_s=TIMEOUT_S)
        settle(cluster)  # no evidence at all: node 3 above all
