"""Torn and damaged files on a real validator: its WAL, its sign state.

The WAL (consensus/wal.py) promises that a crash can tear only the unsynced end of
its newest segment and that such a tail - a bad frame with no good frame after it -
is cut away at start with a warning. Here the last record of a stopped validator's
newest segment is cut at a random offset (seeded) and garbage appended; the node
must start, cut exactly those bytes, and never sign anything at or below the
(height, round, step) its sign state holds that it had not signed before. Node 2 is
down throughout, so the chain needs node 3 at the very height it was stopped in.

The sign state (consensus/privval.py) is written atomically with a checksum, so a
damaged file is tampering or disk trouble: the node must refuse to start, exiting
non-zero with one clear line naming the file, and start again once it is restored.

Figures are printed (`pytest -s`); the slow variant tears more often.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from chain.address import parse_address
from consensus.errors import WalFrameError
from consensus.privval import load_sign_state
from consensus.wal import WalTimeout, decode_frame, encode_frame, segment_paths
from node.config import HomePaths
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
from tests.e2e.harness import run_gannet, wait_until

pytestmark = pytest.mark.e2e

BLOCK_TIME_MS = 250
TIMEOUT_S = 60.0
SEED = 6
VICTIM, DOWN, OTHERS = 3, 2, [0, 1]
MAX_GARBAGE = 300
REFUSE_WITHIN_S = 30.0


# --- the WAL ---------------------------------------------------------------------------------


def tear_last_record(wal_dir: Path, rng: random.Random, height: int) -> tuple[int, str]:
    """Cut the newest segment's last frame at a random offset and append garbage; the
    number of bytes from the cut frame's start on (the torn tail the node must drop) and
    what was torn. An empty newest segment (just rotated) gets a torn first frame."""
    segment = segment_paths(wal_dir)[-1]
    data = segment.read_bytes()
    starts, offset = [], 0
    while offset < len(data):
        try:
            entry, end = decode_frame(data, offset)
        except WalFrameError as exc:
            raise AssertionError(f"{segment} is damaged before the test tore it") from exc
        starts.append((offset, end, entry))
        offset = end
    if starts:
        start, end, entry = starts[-1]
        frame = data[start:end]
        what = f"{type(entry).__name__}{' own' if getattr(entry, 'own', 0) else ''}"
    else:
        start, frame, what = len(data), encode_frame(WalTimeout(height=height, round=0,
                                                                step=1)), "first frame"
    cut = rng.randrange(0, len(frame))
    garbage = rng.randbytes(rng.randrange(1, MAX_GARBAGE))
    segment.write_bytes(data[:start] + frame[:cut] + garbage)
    return cut + len(garbage), f"{what} cut at {cut}/{len(frame)} + {len(garbage)} garbage"


def sign_key(home: Path) -> tuple[int, int, int]:
    """The (height, round, step) a home's sign state holds."""
    state = load_sign_state(HomePaths(home).sign_state_file)
    assert state is not None
    return state.height, state.round, state.step


def run_tears(tmp_path: Path, tears: int) -> None:
    rng = random.Random(SEED)
    with Cluster(tmp_path, n=4, block_time_ms=BLOCK_TIME_MS) as cluster:
        homes = [cluster.home(i) for i in range(cluster.n)]
        victim = parse_address(cluster.summary["nodes"][VICTIM]["validator_address"])
        wal_dir = HomePaths(homes[VICTIM]).wal_dir
        cluster.wait_height(2, timeout_s=TIMEOUT_S)
        cluster.kill9(DOWN)
        ledger = SignLedger()
        durable: list[tuple[tuple[int, int, int], int]] = []  # (sign-state key, epoch)
        figures = []
        for _ in range(tears):
            # A commit leaves a fresh, empty segment; wait for the next height's first
            # record, so the tear hits a real one.
            wait_until(lambda: segment_paths(wal_dir)[-1].stat().st_size > 0, TIMEOUT_S,
                       "a record in node 3's newest WAL segment")
            cluster.kill9(VICTIM)
            halted = max(wait_halted(node_urls(cluster, OTHERS), quiet_s=0.5))
            check_no_double_signing(node_urls(cluster, OTHERS), homes, ledger)
            durable.append((sign_key(homes[VICTIM]), ledger.epoch - 1))
            torn, what = tear_last_record(wal_dir, rng, halted + 1)

            started = time.monotonic()
            cluster.start(VICTIM)
            rpc_s = time.monotonic() - started
            assert f"dropping a torn tail of {torn} bytes" in \
                cluster.node(VICTIM).log_of_this_run(), f"the torn tail ({what}) was not cut"
            cluster.wait_height(halted + 2, nodes=[*OTHERS, VICTIM], timeout_s=TIMEOUT_S)
            figures.append((what, rpc_s, time.monotonic() - started))

        cluster.start(DOWN)
        cluster.wait_height(max(head_heights(node_urls(cluster, OTHERS))) + 3,
                            timeout_s=TIMEOUT_S)
        urls = node_urls(cluster)
        wait_converged(urls, timeout_s=TIMEOUT_S)
        check_same_chain(urls)
        check_no_double_signing(urls, homes, ledger)
        check_no_uncaught_exceptions(cluster)
        # Anything node 3 signed at or below its durable step, in the two heights its WAL
        # and sign state fully record, was on record before the tear (older heights are
        # only partly seen: a commit holds the first +2/3 precommits, not every one).
        for key, epoch in durable:
            new_below = [k for k in ledger.keys_of(victim)
                         if key[0] - 1 <= k[1] and k[1:] <= key
                         and min(ledger.epochs[k]) > epoch]
            assert not new_below, f"signed at or below its durable step {key}: {new_below}"
        print(f"\n[torn-wal] {tears} tears (seed {SEED}): " + "; ".join(
            f"{w}: rpc={r:.2f}s caught-up={c:.2f}s" for w, r, c in figures))


def test_a_torn_wal_tail_is_cut_and_nothing_is_signed_below_the_durable_step(
        tmp_path: Path) -> None:
    run_tears(tmp_path, tears=3)


@pytest.mark.slow
def test_a_torn_wal_tail_many_times(tmp_path: Path) -> None:
    run_tears(tmp_path, tears=20)


# --- the sign state --------------------------------------------------------------------------


def damage(good: bytes, how: str, rng: random.Random) -> bytes:
    """`good` sign-state bytes damaged one way (seeded)."""
    if how == "truncated":
        return good[:rng.randrange(0, len(good))]
    if how == "hex-digit-changed":  # still JSON, the checksum no longer matches
        text = good.decode()
        start = text.index('"signature": "') + len('"signature": "')
        i = start + rng.randrange(0, 128)
        digit = "0" if text[i] != "0" else "1"
        return (text[:i] + digit + text[i + 1:]).encode()
    if how == "garbage-appended":
        return good + rng.randbytes(rng.randrange(1, MAX_GARBAGE))
    if how == "byte-overwritten":
        i = rng.randrange(0, len(good))
        return good[:i] + b"\xff" + good[i + 1:]
    raise ValueError(how)


DAMAGES = ("truncated", "hex-digit-changed", "garbage-appended", "byte-overwritten")


def test_a_damaged_sign_state_is_refused_in_one_line_and_accepted_once_restored(
        tmp_path: Path) -> None:
    rng = random.Random(SEED)
    with Cluster(tmp_path, n=4, block_time_ms=BLOCK_TIME_MS) as cluster:
        homes = [cluster.home(i) for i in range(cluster.n)]
        victim = cluster.summary["nodes"][VICTIM]["validator_address"]
        cluster.wait_height(3, timeout_s=TIMEOUT_S)
        cluster.kill9(DOWN)  # from here on every commit needs node 3's precommit
        cluster.stop(VICTIM)
        path = HomePaths(homes[VICTIM]).sign_state_file
        good = path.read_bytes()
        refusals = []
        for how in DAMAGES:
            bad = damage(good, how, rng)
            path.write_bytes(bad)
            started = time.monotonic()
            result = run_gannet(["node", "start", "--home", str(homes[VICTIM])],
                                timeout_s=REFUSE_WITHIN_S)
            refusals.append((how, time.monotonic() - started))
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert result.returncode != 0, f"{how}: the node started on a damaged sign state"
            assert lines and lines[-1].startswith("Error: ") and str(path) in lines[-1] \
                and "sign state" in lines[-1], f"{how}: unclear error: {lines[-3:]}"
            assert "rpc listening" not in result.stderr + result.stdout, how
            assert path.read_bytes() == bad, f"{how}: the node rewrote the damaged file"

        path.write_bytes(good)
        halted = max(wait_halted(node_urls(cluster, OTHERS), quiet_s=0.5))
        cluster.start(VICTIM)
        cluster.wait_height(halted + 3, nodes=[*OTHERS, VICTIM], timeout_s=TIMEOUT_S)
        signed = signed_heights_after(cluster, victim, halted)
        assert signed[:3] == [halted + 1, halted + 2, halted + 3], (
            f"node 3 did not sign the commits after {halted} once its file was back: {signed}")
        cluster.start(DOWN)
        cluster.wait_height(halted + 5, timeout_s=TIMEOUT_S)
        urls = node_urls(cluster)
        wait_converged(urls, timeout_s=TIMEOUT_S)
        check_same_chain(urls)
        check_no_double_signing(urls, homes, SignLedger())
        print("\n[torn-sign-state] refused: " + "; ".join(
            f"{how} in {s:.2f}s" for how, s in refusals) + f"; signed again at {signed[:3]}")


def signed_heights_after(cluster: Cluster, address: str, height: int) -> list[int]:
    """Heights above `height` whose commit (on node 0) holds `address`'s precommit."""
    head = max(head_heights(node_urls(cluster, [0])))
    return [k for k in range(height + 1, head + 1)
            if any(s["validator"] == address
                   for s in cluster.rpc(0, "gannet_getCommit", k)["signatures"])]
