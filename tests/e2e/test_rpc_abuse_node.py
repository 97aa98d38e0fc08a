"""JSON-RPC abuse against running node processes, and evidence submitted over RPC.

- Slowloris and stalled bodies on a devnet: 200 connections dribbling header
  bytes (one every 0.5 s, never finishing) and 200 that send headers announcing
  a body, a few bytes of it, then nothing. Each must be closed within 10 s of its
  first byte (the node's header and body deadlines are 5 s) while valid
  requests, sent every 100 ms on fresh connections, answer within 1 s and the
  chain keeps committing. The node's default RPC cap is 256 connections, so the
  test's devnet config raises `rpc.max_connections` to 1024 (400 attackers plus
  the valid clients); nothing else is changed. Close times and latencies are
  printed (`-s`).
- The hypothesis campaign of tests/node/test_rpc_abuse.py against the devnet
  process (its config loaded from disk, consensus running): no 500, spec codes.
- `gannet_submitEvidence` on a 4-validator testnet with a full node: evidence
  built by signing two conflicting prevotes with validator 3's key from its
  home is submitted to the full node (which never proposes, so a commit proves
  it gossiped the evidence); it is committed on every node, slashes validator 3
  by `slash_fraction_double_sign` and tombstones it, and the three others go on.
  Invalid evidence (wrong chain, not a validator, the same vote twice,
  different heights, bad signature, too old, already committed) is refused
  with -32002 and its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chain.address import address_from_public_key
from chain.codec import encode
from chain.crypto import SigningKey
from chain.hashing import sha256
from chain.records import VOTE_PREVOTE, DuplicateVoteEvidence, Vote
from chain.signing import sign_vote
from consensus.params import from_json
from node.api import NodeApi
from node.cli_node import make_devnet_home
from node.config import HomePaths, load_config, save_config
from node.keys import load_key_file
from tests.e2e.checks import check_same_chain, committed_evidence, node_urls
from tests.e2e.cluster import Cluster
from tests.e2e.harness import (
    DevnetProcess,
    RpcError,
    address_of,
    free_port,
    read_genesis,
    rpc_call,
    wait_until,
)
from tests.node.test_rpc_abuse import MIN_REQUESTS, check_campaign, run_campaign

pytestmark = pytest.mark.e2e

BLOCK_TIME_MS = 200
MAX_CONNECTIONS = 1024  # the test's rpc.max_connections (the default 256 < 400 attackers)
SLOWLORIS = 200
STALLED = 200
CLOSE_BOUND_S = 10.0
LATENCY_BOUND_S = 1.0
DRIBBLE_S = 0.5
PROBE_EVERY_S = 0.1
ATTACK_WAIT_S = 15.0
CAMPAIGN_BODIES = 300
SLOW_CAMPAIGN_BODIES = 10_000
MAX_AGE = 30  # params.staking.evidence_max_age_blocks of the evidence testnet (6 s)
TIMEOUT_S = 60.0
VALID = b'{"jsonrpc":"2.0","id":1,"method":"gannet_blockNumber"}'


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevnetProcess]:
    """A devnet whose config admits MAX_CONNECTIONS RPC connections."""
    home = tmp_path_factory.mktemp("rpc-abuse") / "devnet"
    paths = HomePaths(home)
    port = free_port()
    make_devnet_home(paths, port, BLOCK_TIME_MS, 0, with_provider=False)
    config = load_config(paths.config_file)
    save_config(paths.config_file, dataclasses.replace(
        config, rpc=dataclasses.replace(config.rpc, max_connections=MAX_CONNECTIONS)))
    with DevnetProcess(home, rpc_port=port, block_time_ms=BLOCK_TIME_MS) as process:
        yield process


# --- slowloris and stalled bodies ------------------------------------------------------------


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _until_closed(reader: asyncio.StreamReader, started: float) -> float:
    """Seconds from `started` until the server closes the connection (or ATTACK_WAIT_S)."""
    with contextlib.suppress(ConnectionError, TimeoutError):
        async with asyncio.timeout(ATTACK_WAIT_S):
            while await reader.read(4096):
                pass
    return time.monotonic() - started


async def _slowloris(port: int) -> float:
    """Headers one byte every DRIBBLE_S, never finished; seconds until the node closes."""
    reader, writer = await _open(port)
    started = time.monotonic()
    head = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: " + b"a" * 1000

    async def dribble() -> None:
        with contextlib.suppress(ConnectionError):
            for byte in head:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(DRIBBLE_S)

    sender = asyncio.create_task(dribble())
    try:
        return await _until_closed(reader, started)
    finally:
        sender.cancel()
        writer.close()


async def _stalled_body(port: int) -> float:
    """Headers announcing 1000 bytes, 10 of them, then silence; seconds until closed."""
    reader, writer = await _open(port)
    started = time.monotonic()
    writer.write(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n" + b'{"jsonrpc"')
    try:
        return await _until_closed(reader, started)
    finally:
        writer.close()


async def _probe(port: int) -> float:
    """One valid request on a fresh connection; seconds until its full answer."""
    started = time.monotonic()
    reader, writer = await _open(port)
    try:
        writer.write(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(VALID) + VALID)
        async with asyncio.timeout(5):
            answer = await reader.read()
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200") and b'"result":' in answer, answer[:300]
    return time.monotonic() - started


async def _attack(port: int) -> tuple[list[float], list[float], list[float]]:
    """Close times of the slowloris and stalled connections, and the probes' latencies."""
    attackers = [asyncio.create_task(_slowloris(port)) for _ in range(SLOWLORIS)]
    attackers += [asyncio.create_task(_stalled_body(port)) for _ in range(STALLED)]
    latencies: list[float] = []
    while not all(task.done() for task in attackers):
        latencies.append(await _probe(port))
        await asyncio.sleep(PROBE_EVERY_S)
    closes = [task.result() for task in attackers]
    return closes[:SLOWLORIS], closes[SLOWLORIS:], latencies


def _figures(name: str, values: list[float]) -> str:
    return (f"{name}: n={len(values)} median={statistics.median(values):.2f} s "
            f"max={max(values):.2f} s")


def test_slowloris_and_stalled_bodies_are_closed_and_valid_requests_answer(
        devnet: DevnetProcess) -> None:
    height_before = devnet.rpc("gannet_blockNumber")
    slowloris, stalled, latencies = asyncio.run(_attack(devnet.rpc_port))
    print(f"\n{_figures('slowloris close', slowloris)}\n{_figures('stalled-body close', stalled)}"
          f"\n{_figures('valid request latency under attack', latencies)}")
    assert max(slowloris) < CLOSE_BOUND_S, _figures("slowloris", slowloris)
    assert max(stalled) < CLOSE_BOUND_S, _figures("stalled", stalled)
    assert len(latencies) >= 20 and max(latencies) < LATENCY_BOUND_S, _figures("probe", latencies)
    assert devnet.rpc("gannet_blockNumber") > height_before, "the chain stalled under attack"
    assert devnet.returncode is None, devnet.log_tail()


# --- the campaign against the process -------------------------------------------------------


def _campaign(devnet: DevnetProcess, bodies: int, min_requests: int) -> None:
    methods = sorted(NodeApi(None).methods())  # the node's method table, by name
    height_before = devnet.rpc("gannet_blockNumber")
    stats = run_campaign(devnet.rpc_port, methods, bodies)
    check_campaign(stats, methods, bodies, min_requests)
    assert devnet.rpc("gannet_blockNumber") > height_before
    assert devnet.returncode is None, devnet.log_tail()
    assert "Traceback" not in devnet.log_of_this_run(), devnet.log_tail()


def test_abuse_campaign_against_a_devnet_process(devnet: DevnetProcess) -> None:
    _campaign(devnet, CAMPAIGN_BODIES, 2_000)


@pytest.mark.slow
def test_abuse_campaign_of_ten_thousand_bodies_against_a_devnet_process(
        devnet: DevnetProcess) -> None:
    _campaign(devnet, SLOW_CAMPAIGN_BODIES, MIN_REQUESTS)


# --- gannet_submitEvidence on a testnet --------------------------------------------------------


def _evidence(key: SigningKey, chain_id: str, height: int,
              hashes: tuple[bytes, bytes] | None = None) -> DuplicateVoteEvidence:
    """Two prevotes of `key` for different blocks at (height, round 0), canonical order."""
    a, b = hashes if hashes is not None else sorted(
        (sha256(b"block a %d" % height), sha256(b"block b %d" % height)))
    voter = address_from_public_key(key.public_key)
    votes = [sign_vote(key, chain_id, Vote(vote_type=VOTE_PREVOTE, height=height, round=0,
                                           block_hash=h, validator=voter))
             for h in (a, b)]
    return DuplicateVoteEvidence(vote_a=votes[0], vote_b=votes[1])


def _hex(evidence: DuplicateVoteEvidence) -> str:
    return "0x" + encode(evidence).hex()


def _refused(url: str, evidence: DuplicateVoteEvidence, words: str) -> str:
    with pytest.raises(RpcError) as caught:
        rpc_call(url, "gannet_submitEvidence", _hex(evidence))
    error = caught.value
    assert error.code == -32002 and words in str(error), error
    return str(error)


def _validator(url: str, address: str) -> dict[str, Any]:
    answer = rpc_call(url, "gannet_getValidators")
    for entry in [*answer["validators"], *answer["candidates"]]:
        if entry["address"] == address:
            return entry
    raise AssertionError(f"{url}: no staking record for {address}")


def test_submitted_evidence_is_gossiped_committed_and_slashes_invalid_is_refused(
        tmp_path: Path) -> None:
    params = {"staking": {"evidence_max_age_blocks": MAX_AGE}}
    with Cluster(tmp_path, n=4, block_time_ms=BLOCK_TIME_MS, params=params) as cluster:
        chain_id = cluster.summary["chain_id"]
        key = load_key_file(HomePaths(cluster.home(3)).validator_key_file)
        byzantine = address_of(key)
        staking = from_json(read_genesis(cluster.home(0))["params"]).staking
        assert staking.evidence_max_age_blocks == MAX_AGE
        full = cluster.add_full_node()
        validators = node_urls(cluster)
        cluster.wait_height(MAX_AGE + 3, timeout_s=TIMEOUT_S)
        wait_until(lambda: rpc_call(full.url, "gannet_blockNumber") >= MAX_AGE + 3, TIMEOUT_S,
                   "the full node to catch up", 0.1)
        tokens_before = int(_validator(validators[0], byzantine)["tokens"])
        slashed = staking.slash_fraction_double_sign.floor_mul(tokens_before)
        assert slashed > 0

        def recent() -> int:
            """A committed height well inside the evidence age (read afresh per case)."""
            return rpc_call(full.url, "gannet_blockNumber") - 1

        def bad_signature() -> DuplicateVoteEvidence:
            evidence = _evidence(key, chain_id, recent())
            signature = bytearray(evidence.vote_b.signature)
            signature[0] ^= 1
            return dataclasses.replace(evidence, vote_b=dataclasses.replace(
                evidence.vote_b, signature=bytes(signature)))

        def two_heights() -> DuplicateVoteEvidence:
            h = recent()
            return DuplicateVoteEvidence(vote_a=_evidence(key, chain_id, h).vote_a,
                                         vote_b=_evidence(key, chain_id, h - 1).vote_b)

        stranger = SigningKey.from_seed(b"\x42" * 32)
        same = sha256(b"one block")
        reasons = [
            _refused(full.url, _evidence(key, "another-chain", recent()),
                     f"vote_a signature does not verify for chain {chain_id}"),
            _refused(full.url, _evidence(stranger, chain_id, recent()),
                     "is not a validator at height"),
            _refused(full.url, _evidence(key, chain_id, recent(), hashes=(same, same)),
                     "votes do not conflict: same block hash"),
            _refused(full.url, two_heights(), "votes differ in height"),
            _refused(full.url, bad_signature(), "vote_b signature does not verify"),
            _refused(full.url, _evidence(key, chain_id, 1), "evidence is too old: height 1"),
        ]
        assert rpc_call(full.url, "gannet_getEvidence")["pending"] == 0

        height = recent()
        valid = _evidence(key, chain_id, height)
        submitted = rpc_call(full.url, "gannet_submitEvidence", _hex(valid))
        assert submitted["status"] == "added", submitted
        found = wait_until(lambda: committed_evidence(validators[0], byzantine), TIMEOUT_S,
                           "the submitted evidence in a block", 0.1)
        assert len(found) == 1 and found[0]["height"] == height, found
        assert found[0]["evidence_hash"] == submitted["hash"]
        committed_at = found[0]["committed_at"]
        honest = node_urls(cluster, [0, 1, 2])
        cluster.wait_height(committed_at + 3, nodes=[0, 1, 2], timeout_s=TIMEOUT_S)
        for url in [*validators, full.url]:
            wait_until(lambda u=url: rpc_call(u, "gannet_blockNumber") > committed_at,
                       TIMEOUT_S, f"{url} past height {committed_at}", 0.1)
            assert committed_evidence(url, byzantine) == found, url
            entry = _validator(url, byzantine)
            assert int(entry["tokens"]) == tokens_before - slashed, (url, entry)
            assert entry["tombstoned"] and entry["jailed"], (url, entry)
            supply = rpc_call(url, "gannet_getSupply")
            assert int(supply["burned"]) == slashed, (url, supply)
        reasons.append(_refused(full.url, valid,
                                f"offence already committed at height {committed_at}"))
        print("\n" + "\n".join(reasons))
        check_same_chain([*honest, full.url])
