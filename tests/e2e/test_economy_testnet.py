"""Slashing on a running 4-validator testnet, observed over JSON-RPC on every honest node.

- Double sign: the equivocating validator is slashed by `slash_fraction_double_sign`
  (floor) once, tombstoned and jailed for good, the slashed GPU is burned, and it
  leaves the set two heights after the block carrying the evidence.
- Downtime: a validator stopped for longer than its (compressed) liveness window
  allows is slashed by `slash_fraction_downtime` and jailed while the other three
  go on; after its jail time its operator tops its stake back up to the minimum
  and sends Unjail, and it is back in the set, signing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chain.address import parse_address
from chain.records import Delegate, Unjail
from consensus.params import Ratio, from_json
from node.config import HomePaths
from node.consensus import EQUIVOCATE_ENV
from node.keys import load_key_file
from tests.e2e.checks import check_same_chain, committed_evidence, node_urls, wait_halted
from tests.e2e.cluster import Cluster
from tests.e2e.harness import (
    DevSigner,
    address_of,
    hash_hex,
    raw_hex,
    read_at_one_height,
    read_genesis,
    rpc_call,
    wait_included,
    wait_until,
)

pytestmark = pytest.mark.e2e

BLOCK_TIME_MS = 200
TIMEOUT_S = 60.0
EVIDENCE_WITHIN = 10  # heights between the last offence and the evidence in a block
SET_DELAY = 2  # a set change made at the end of height H signs from H + 2
CODE_UNJAIL_STAKE_TOO_LOW = 155
DOWNTIME_PARAMS = {"staking": {"signed_blocks_window": 20, "downtime_jail_blocks": 10}}
DOWN_FOR = 13  # blocks the stopped validator misses at least


def _find(answer: dict[str, Any], address: str) -> dict[str, Any] | None:
    """A validator's entry in a getValidators answer: in the set or among the candidates."""
    for entry in [*answer["validators"], *answer["candidates"]]:
        if entry["address"] == address:
            return entry
    return None


def _in_set(url: str, address: str, height: int) -> bool:
    """Whether `address` is in the validator set that signs `height`."""
    answer = rpc_call(url, "gannet_getValidators", height)
    return any(v["address"] == address for v in answer["validators"])


def _economy(url: str, address: str) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """(height, validator entry at the head, supply) read at one height."""
    height, (validators, supply) = read_at_one_height(
        url, [("gannet_getValidators", []), ("gannet_getSupply", [])])
    entry = _find(validators, address)
    assert entry is not None, f"{url}: no staking record for {address}"
    return height, entry, supply


def _ratio(doc: dict[str, Any]) -> Ratio:
    return Ratio(int(doc["num"]), int(doc["den"]))


def _check_slashed(url: str, address: str, tokens_before: int, slashed: int) -> dict[str, Any]:
    """On one node: the validator lost exactly `slashed` and the supply burned exactly that."""
    _, entry, supply = _economy(url, address)
    assert int(entry["tokens"]) == tokens_before - slashed, (url, entry)
    assert int(supply["burned"]) == slashed, (url, supply)
    assert int(supply["total"]) == int(supply["genesis"]) + int(supply["minted"]) - slashed
    assert int(supply["bonded"]) == int(supply["modules"]["bonded"])
    return entry


def test_a_double_signer_is_slashed_tombstoned_and_leaves_the_set(tmp_path: Path) -> None:
    """Node 3 double-signs while node 2 is down (as in test_testnet_faults: its
    conflicting votes then arrive while the height is still open); node 2 returns
    before the tombstoned node 3 leaves the set, or the three left would halt."""
    with Cluster(tmp_path, n=4, block_time_ms=BLOCK_TIME_MS) as cluster:
        fraction = from_json(read_genesis(cluster.home(0))["params"]).staking \
            .slash_fraction_double_sign
        byzantine = cluster.summary["nodes"][3]["validator_address"]
        cluster.wait_height(2, timeout_s=TIMEOUT_S)
        _, entry, supply = _economy(cluster.node(0).url, byzantine)
        tokens_before = int(entry["tokens"])
        assert int(supply["burned"]) == 0 and not entry["jailed"]
        slashed = fraction.floor_mul(tokens_before)
        assert slashed > 0

        cluster.kill9(2)
        cluster.stop(3)
        start = max(wait_halted(node_urls(cluster, [0, 1]), quiet_s=1.0))
        offences = [start + 2, start + 3, start + 4]
        cluster.start(3, env={EQUIVOCATE_ENV: ",".join(map(str, offences))})
        cluster.wait_height(offences[-1], nodes=[0, 1], timeout_s=TIMEOUT_S)
        cluster.start(2)
        honest = node_urls(cluster, [0, 1, 2])
        found = wait_until(lambda: committed_evidence(honest[0], byzantine), TIMEOUT_S,
                           "evidence against node 3", 0.1)
        committed = min(e["committed_at"] for e in found)
        assert committed <= offences[-1] + EVIDENCE_WITHIN, found
        cluster.wait_height(committed + SET_DELAY, timeout_s=TIMEOUT_S)

        for url in honest:
            entry = _check_slashed(url, byzantine, tokens_before, slashed)
            assert entry["tombstoned"] and entry["jailed"], (url, entry)
            assert entry["power"] == "0", f"{url}: the tombstoned validator still has power"
            assert _in_set(url, byzantine, committed + SET_DELAY - 1), url
            assert not _in_set(url, byzantine, committed + SET_DELAY), (
                f"{url}: node 3 still signs {SET_DELAY} heights after its evidence")
        # Later evidence of its other offences slashes nothing more.
        cluster.wait_height(offences[-1] + EVIDENCE_WITHIN + 3, nodes=[0, 1, 2],
                            timeout_s=TIMEOUT_S)
        for url in honest:
            _check_slashed(url, byzantine, tokens_before, slashed)
        check_same_chain(honest)


def test_a_validator_down_too_long_is_jailed_and_unjails_after_topping_up(
        tmp_path: Path) -> None:
    with Cluster(tmp_path, n=4, block_time_ms=BLOCK_TIME_MS,
                 params=DOWNTIME_PARAMS) as cluster:
        staking = from_json(read_genesis(cluster.home(0))["params"]).staking
        assert (staking.signed_blocks_window, staking.downtime_jail_blocks) == (20, 10)
        assert staking.min_signed_per_window == Ratio(1, 2)
        down = 3
        address = cluster.summary["nodes"][down]["validator_address"]
        honest = node_urls(cluster, [0, 1, 2])
        cluster.wait_height(3, timeout_s=TIMEOUT_S)
        _, entry, supply = _economy(honest[0], address)
        tokens_before = int(entry["tokens"])
        assert int(supply["burned"]) == 0 and entry["power"] == str(tokens_before)
        slashed = staking.slash_fraction_downtime.floor_mul(tokens_before)
        assert slashed > 0

        # Down: once its window is full and more than half of it missed, it is jailed.
        cluster.stop(down)
        stopped_at = max(cluster.heights([0, 1, 2]))

        def jailed() -> dict[str, Any] | None:
            _, found, _ = _economy(honest[0], address)
            return found if found["jailed"] else None

        found = wait_until(jailed, TIMEOUT_S, "the stopped validator to be jailed", 0.1)
        jailed_at = found["jailed_until"] - staking.downtime_jail_blocks
        assert not found["tombstoned"]
        assert stopped_at < jailed_at <= stopped_at + staking.signed_blocks_window + 2, (
            stopped_at, jailed_at)
        cluster.wait_height(max(jailed_at + SET_DELAY, stopped_at + DOWN_FOR), nodes=[0, 1, 2],
                            timeout_s=TIMEOUT_S)
        for url in honest:
            entry = _check_slashed(url, address, tokens_before, slashed)
            assert entry["jailed"] and entry["jailed_until"] == found["jailed_until"], entry
            assert _in_set(url, address, jailed_at + SET_DELAY - 1), url
            assert not _in_set(url, address, jailed_at + SET_DELAY), url
        # The chain goes on with three.
        cluster.wait_height(jailed_at + SET_DELAY + 3, nodes=[0, 1, 2], timeout_s=TIMEOUT_S)

        # Back up, after the jail time: its operator (the validator key, in testnet
        # genesis) asks to unjail. The slash left its own stake under the minimum, so
        # that fails until the operator tops it up.
        cluster.start(down)
        key = load_key_file(HomePaths(cluster.home(down)).validator_key_file)
        assert found["operator"] == address_of(key) == address
        signer = DevSigner(key, cluster.summary["chain_id"])
        cluster.wait_height(found["jailed_until"], timeout_s=TIMEOUT_S)
        fee = int(rpc_call(honest[0], "gannet_estimateFee")["min_fee"])
        nonce = rpc_call(honest[0], "gannet_getAccount", address)["nonce"]
        target = parse_address(address)
        (refused,) = _submit(honest[0], [signer.sign(Unjail(validator=target), nonce, fee)])
        receipt = refused["receipt"]
        assert (receipt["status"], receipt["code"]) == ("failed", CODE_UNJAIL_STAKE_TOO_LOW), \
            refused
        topped_up, unjailed = _submit(honest[0], [
            signer.sign(Delegate(validator=target, amount=slashed), nonce + 1, fee),
            signer.sign(Unjail(validator=target), nonce + 2, fee)])
        for info in (topped_up, unjailed):
            assert info["receipt"]["status"] == "ok", info
        unjailed_at = unjailed["height"]

        cluster.wait_height(unjailed_at + SET_DELAY, timeout_s=TIMEOUT_S)
        for url in node_urls(cluster):
            _, entry, supply = _economy(url, address)
            assert not entry["jailed"] and int(entry["tokens"]) == tokens_before, (url, entry)
            assert int(supply["burned"]) == slashed
            assert not _in_set(url, address, unjailed_at + SET_DELAY - 1), url
            assert _in_set(url, address, unjailed_at + SET_DELAY), url
        wait_until(lambda: _signed_since(honest[0], address, unjailed_at + SET_DELAY),
                   TIMEOUT_S, "the unjailed validator to sign a commit", 0.1)
        check_same_chain(node_urls(cluster))


def _submit(url: str, stxs: list[Any]) -> list[dict[str, Any]]:
    """Send signed txs to a node; their getTransaction answers once included."""
    for stx in stxs:
        assert rpc_call(url, "gannet_sendRawTransaction", raw_hex(stx)) == hash_hex(stx)
    return wait_included(url, [hash_hex(stx) for stx in stxs], TIMEOUT_S)


def _signed_since(url: str, address: str, height: int) -> bool:
    """Whether `address` signed the commit of some height from `height` up to the head."""
    head = rpc_call(url, "gannet_blockNumber")
    for h in range(height, head + 1):
        commit = rpc_call(url, "gannet_getCommit", h)
        if any(s["validator"] == address for s in commit["signatures"]):
            return True
    return False
