"""A 4-validator testnet on a degraded network: a ring, lost messages, a hung node, a restart.

- Ring: every link cut except i - (i + 1) mod 4, so each node talks to its two
  neighbours only and hears the node opposite it through them (gossip relays
  every vote and proposal it checked). Expected: the chain is as live as on the
  full mesh (every vote still reaches every node, one hop later); asserted: it
  commits at >= half the rate of the full mesh measured in the same test.
- 20 % drop: every WebSocket message on every link (both directions, past each
  connection's handshake) is lost with probability 0.2, cut out of the TCP
  stream at its frame boundary (`LinkProxy.set_message_drop`); connections stay
  up, pings pass. Expected (Tendermint's rounds, relays and the round catch-up
  make up for lost votes): the same chain everywhere and >= half the block rate
  of the unperturbed network measured just before.
- Pause and restart: one validator SIGSTOPped for 10 s, then another SIGTERMed
  and started again. The three others keep committing; the perturbed node
  answers RPC within 20 s and has caught up within 30 s of the fault ending.

After each: one chain on every node (hash and app hash at every height), no
evidence against anyone. `GANNET_FAULT_WINDOW_S` lengthens the measuring
windows (the slow variants use 60 s).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.e2e.checks import (
    check_no_evidence,
    check_same_chain,
    head_heights,
    node_urls,
    wait_converged,
)
from tests.e2e.cluster import Cluster
from tests.e2e.harness import RpcError, rpc_call, wait_until
from tests.e2e.proxy import SPARED_MESSAGES, _WebSocketFilter

pytestmark = pytest.mark.e2e

BLOCK_TIME_MS = 250
TIMEOUT_S = 60.0
WINDOW_S = float(os.environ.get("GANNET_FAULT_WINDOW_S", "8"))
SLOW_WINDOW_S = 60.0
DROP = 0.2
MIN_RATE_FRACTION = 0.5  # the bound: >= half the unperturbed block rate
PAUSE_S = 10.0
RPC_WITHIN_S = 20.0
CAUGHT_UP_WITHIN_S = 30.0
WITH_THREE = 3  # heights the three others commit while the fourth is out


def block_rate(cluster: Cluster, window_s: float) -> tuple[float, int, int]:
    """(blocks per second, first height, last height) of the highest head over a window."""
    urls = node_urls(cluster)
    first, start = max(head_heights(urls)), time.monotonic()
    time.sleep(window_s)  # the measuring window itself, not a wait for a condition
    last, end = max(head_heights(urls)), time.monotonic()
    return (last - first) / (end - start), first, last


def settle(cluster: Cluster) -> int:
    """One head, one chain, nobody accused; the common height."""
    urls = node_urls(cluster)
    wait_converged(urls, timeout_s=TIMEOUT_S)
    check_no_evidence(urls)
    return check_same_chain(urls)


def peer_counts(cluster: Cluster) -> list[int]:
    """How many peers each node has."""
    return [int(cluster.rpc(i, "gannet_status")["peers"]) for i in range(cluster.n)]


# --- the message filter (no nodes) ----------------------------------------------------


def ws_frame(opcode: int, payload: bytes, final: bool = True, masked: bool = True) -> bytes:
    """One WebSocket frame (RFC 6455), masked as a client sends it."""
    first = (0x80 if final else 0) | opcode
    mask_bit = 0x80 if masked else 0
    if len(payload) < 126:
        header = bytes([first, mask_bit | len(payload)])
    elif len(payload) < 1 << 16:
        header = bytes([first, mask_bit | 126]) + len(payload).to_bytes(2, "big")
    else:
        header = bytes([first, mask_bit | 127]) + len(payload).to_bytes(8, "big")
    if not masked:
        return header + payload
    return header + bytes([1, 2, 3, 4]) + payload  # the filter never unmasks: any bytes do


MESSAGE = st.tuples(st.sampled_from([1, 2]), st.integers(0, 70_000), st.integers(1, 3))


@settings(max_examples=60, deadline=None)
@given(messages=st.lists(MESSAGE, max_size=12), pings=st.lists(st.booleans(), max_size=12),
       drops=st.sets(st.integers(0, 11)), cuts=st.lists(st.integers(1, 70_000), max_size=8),
       masked=st.booleans())
def test_the_filter_cuts_out_whole_messages_at_any_chunking(
        messages: list[tuple[int, int, int]], pings: list[bool], drops: set[int],
        cuts: list[int], masked: bool) -> None:
    head = (b"GET /p2p HTTP/1.1\r\nUpgrade: websocket\r\n\r\n" if masked else
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
    stream, expected = bytearray(head), bytearray(head)
    for index, (opcode, size, parts) in enumerate(messages):
        payload = bytes([index]) * size
        pieces = [payload[k * size // parts:(k + 1) * size // parts] for k in range(parts)]
        lost = index >= SPARED_MESSAGES and index in drops
        for k, piece in enumerate(pieces):
            frame = ws_frame(opcode if k == 0 else 0, piece, final=k == parts - 1,
                             masked=masked)
            stream += frame
            expected += b"" if lost else frame
            if index < len(pings) and pings[index]:  # a control frame inside a message
                ping = ws_frame(9, b"ping", masked=masked)
                stream += ping
                expected += ping
    asked = iter(range(SPARED_MESSAGES, len(messages)))
    frames = _WebSocketFilter(lambda: next(asked) in drops)
    out = bytearray()
    at = 0
    for cut in sorted({min(c, len(stream)) for c in cuts} | {len(stream)}):
        out += frames.feed(bytes(stream[at:cut]))
        at = cut
    assert bytes(out) == bytes(expected)
    assert next(asked, None) is None  # asked once per message past the handshake


def test_a_stream_that_is_no_websocket_passes_untouched() -> None:
    frames = _WebSocketFilter(lambda: True)
    data = os.urandom(1000)
    assert frames.feed(b"x") + frames.feed(data) == b"x" + data
    refused = _WebSocketFilter(lambda: True)
    answer = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope"
    assert refused.feed(answer[:7]) + refused.feed(answer[7:]) == answer


# --- a ring --------------------------------------------------------------------------


def run_ring(tmp_path: Path, window_s: float) -> None:
    with Cluster(tmp_path, n=4, block_time_ms=BLOCK_TIME_MS) as cluster:
        cluster.wait_height(2, timeout_s=TIMEOUT_S)
        wait_until(lambda: peer_counts(cluster) == [3] * 4, TIMEOUT_S, "a full mesh")
        base, _, _ = block_rate(cluster, window_s)

        cluster.ring()
        wait_until(lambda: peer_counts(cluster) == [2] * 4, TIMEOUT_S, "a ring of peers")
        ring, first, last = block_rate(cluster, window_s)
        assert peer_counts(cluster) == [2] * 4, "a cut link came back during the ring"
        heights = head_heights(node_urls(cluster))
        assert min(heights) > first, f"a node of the ring stalled: {heights} from {first}"
        check_same_chain(node_urls(cluster))
        diagonals = [cluster.mesh.link(i, (i + 2) % 4).stats for i in range(4)]
        assert all(s.active == 0 for s in diagonals), diagonals

        cluster.heal()
        wait_until(lambda: peer_counts(cluster) == [3] * 4, TIMEOUT_S, "the mesh back")
        height = settle(cluster)
        print(f"ring of 4: full mesh {base:.2f} blocks/s, ring {ring:.2f} blocks/s "
              f"(heights {first}..{last} in {window_s:g} s), {height} heights identical")
        assert ring >= MIN_RATE_FRACTION * base, (
            f"the ring commits {ring:.2f} blocks/s, the full mesh {base:.2f}")


def test_a_ring_keeps_one_chain_and_commits(tmp_path: Path) -> None:
    run_ring(tmp_path, WINDOW_S)


@pytest.mark.slow
def test_a_ring_for_a_minute(tmp_path: Path) -> None:
    run_ring(tmp_path, SLOW_WINDOW_S)


# --- 20 % of messages lost ------------------------------------------------------------


def run_drop(tmp_path: Path, window_s: float) -> None:
    with Cluster(tmp_path, n=4, block_time_ms=BLOCK_TIME_MS) as cluster:
        cluster.wait_height(2, timeout_s=TIMEOUT_S)
        wait_until(lambda: peer_counts(cluster) == [3] * 4, TIMEOUT_S, "a full mesh")
        base, _, _ = block_rate(cluster, window_s)

        mesh = cluster.mesh
        before = mesh.stats()
        mesh.set_message_drop(DROP)
        lossy, first, last = block_rate(cluster, window_s)
        mesh.set_message_drop(0.0)
        after = mesh.stats()
        seen = after.messages - before.messages
        lost = after.messages_dropped - before.messages_dropped
        assert after.killed == 0 and seen > 500, after
        assert abs(lost / seen - DROP) < 0.05, f"{lost} of {seen} messages lost"
        height = settle(cluster)
        print(f"{DROP:.0%} message drop: unperturbed {base:.2f} blocks/s, lossy "
              f"{lossy:.2f} blocks/s (heights {first}..{last} in {window_s:g} s), "
              f"{lost} of {seen} messages lost, {height} heights identical")
        assert lossy >= MIN_RATE_FRACTION * base, (
            f"with {DROP:.0%} loss {lossy:.2f} blocks/s, unperturbed {base:.2f}")


def test_20_percent_message_loss_keeps_one_chain_and_half_the_rate(tmp_path: Path) -> None:
    """A node that falls a block behind catches up by block sync, which sends a lost
    request again after a round-trip estimate (p2p/sync.py `RoundTrips`), not after the
    5 s request timeout; with that timeout alone this failed 2 of 10 loaded runs."""
    run_drop(tmp_path, WINDOW_S)


@pytest.mark.slow
def test_20_percent_message_loss_for_a_minute(tmp_path: Path) -> None:
    run_drop(tmp_path, SLOW_WINDOW_S)


# --- a hung validator, a restarted one ------------------------------------------------


def answers_rpc(cluster: Cluster, i: int) -> bool:
    try:
        rpc_call(cluster.node(i).url, "gannet_status", timeout=1.0)
    except (OSError, RpcError):
        return False
    return True


def recover(cluster: Cluster, i: int, fault_end: float, target: int) -> tuple[float, float]:
    """(seconds until node i answers RPC, seconds until it reaches `target`), both since
    `fault_end`; each within the issue's bound."""
    wait_until(lambda: answers_rpc(cluster, i), RPC_WITHIN_S, f"node {i} to answer RPC",
               log=cluster.node(i))
    rpc_s = time.monotonic() - fault_end
    cluster.wait_height(target, nodes=[i], timeout_s=CAUGHT_UP_WITHIN_S - rpc_s)
    caught_s = time.monotonic() - fault_end
    assert rpc_s <= RPC_WITHIN_S and caught_s <= CAUGHT_UP_WITHIN_S, (rpc_s, caught_s)
    return rpc_s, caught_s


def others(cluster: Cluster, i: int) -> list[int]:
    return [j for j in range(cluster.n) if j != i]


def run_pause_and_restart(tmp_path: Path, pause_s: float, rounds: int, seed: int) -> None:
    rng = random.Random(seed)
    with Cluster(tmp_path, n=4, block_time_ms=BLOCK_TIME_MS) as cluster:
        cluster.wait_height(3, timeout_s=TIMEOUT_S)
        figures = []
        for _ in range(rounds):
            hung, restarted = rng.sample(range(cluster.n), 2)
            # SIGSTOP: the others go on; after SIGCONT it answers and catches up.
            cluster.pause(hung)
            rest = others(cluster, hung)
            start = max(head_heights(node_urls(cluster, rest)))
            time.sleep(pause_s)  # the fault's length
            went_on = max(head_heights(node_urls(cluster, rest)))
            assert went_on >= start + WITH_THREE, f"three did not commit: {start}->{went_on}"
            cluster.resume(hung)
            fault_end = time.monotonic()
            pause_rpc, pause_caught = recover(cluster, hung, fault_end, went_on + 1)

            # SIGTERM and start: a clean exit, the others go on meanwhile, it catches up.
            assert cluster.stop(restarted) == 0, cluster.node(restarted).log_tail()
            rest = others(cluster, restarted)
            down_at = max(head_heights(node_urls(cluster, rest)))
            cluster.wait_height(down_at + WITH_THREE, nodes=rest, timeout_s=TIMEOUT_S)
            target = max(head_heights(node_urls(cluster, rest)))
            fault_end = time.monotonic()
            cluster.start(restarted)
            restart_rpc, restart_caught = recover(cluster, restarted, fault_end, target + 1)
            figures.append((hung, pause_rpc, pause_caught, restarted, restart_rpc,
                            restart_caught))
        height = settle(cluster)
        for hung, p_rpc, p_up, restarted, r_rpc, r_up in figures:
            print(f"SIGSTOP node {hung} {pause_s:g} s: RPC after {p_rpc:.2f} s, caught up "
                  f"after {p_up:.2f} s; SIGTERM+start node {restarted}: RPC after "
                  f"{r_rpc:.2f} s, caught up after {r_up:.2f} s")
        print(f"{height} heights identical on all four (seed {seed})")


def test_a_hung_validator_and_a_restarted_one_recover_in_time(tmp_path: Path) -> None:
    run_pause_and_restart(tmp_path, PAUSE_S, rounds=1, seed=6)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_pause_and_restart_ten_times(tmp_path: Path) -> None:
    run_pause_and_restart(tmp_path, PAUSE_S, rounds=10, seed=random.randrange(2**32))
