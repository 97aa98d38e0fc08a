"""Block sync against an in-memory network of scripted peers serving a really signed chain.

The replica verifies every commit and applies every block as the node does, so a
sync that ends at the source chain's head applied exactly the right blocks.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.codec import encode
from chain.errors import StoreError
from chain.records import TxLocation
from chain.store import BlockStore
from genesis.state import genesis_writes
from p2p import sync
from p2p.messages import BlockRequest, BlockResponse, NoBlock, StatusMsg
from p2p.sync import BlockSyncer, SyncConfig, SyncRejected, check_response, serve_block_request
from tests.p2p.sync_fakes import (
    CHAIN_LENGTH,
    FakeNet,
    Replica,
    SignedChain,
    forging,
    honest,
    no_block,
    signed_chain,
    silent,
    undecodable,
)

A, B, C = (bytes([i]) * 32 for i in (1, 2, 3))  # peer ids; the first request goes to the lowest
SETTLE_S = 0.02
DEADLINE_S = 10.0  # a sync that has not finished by then is stuck
DEFAULT_CONFIG = SyncConfig()


@pytest.fixture(scope="module")
def chain() -> SignedChain:
    return signed_chain()


def make(chain: SignedChain, config: SyncConfig = DEFAULT_CONFIG, show_progress: bool = False,
         ) -> tuple[FakeNet, Replica, BlockSyncer]:
    net, replica = FakeNet(), Replica(chain)
    syncer = BlockSyncer(net.send, net.penalise, replica.apply, replica.height, config,
                         show_progress=show_progress)
    return net, replica, net.attach(syncer)


def run_sync(syncer: BlockSyncer, settle_s: float = SETTLE_S) -> int:
    async def go() -> int:
        return await asyncio.wait_for(syncer.sync_until_caught_up(settle_s), DEADLINE_S)
    return asyncio.run(go())


def assert_synced_to(replica: Replica, chain: SignedChain, height: int) -> None:
    assert replica.applied == list(range(1, height + 1))
    assert replica.head == chain.heads[height - 1]


# --- catching up -------------------------------------------------------------------------


def test_catches_up_200_blocks_from_three_peers(chain: SignedChain) -> None:
    net, replica, syncer = make(chain)
    for peer in (A, B, C):
        net.add(peer, honest(chain), CHAIN_LENGTH)
    assert run_sync(syncer) == CHAIN_LENGTH
    assert_synced_to(replica, chain, CHAIN_LENGTH)
    assert net.bans == []
    asked = [net.peers[p].asked for p in (A, B, C)]
    assert all(len(a) >= CHAIN_LENGTH // 4 for a in asked)  # the load is spread
    assert sorted(h for a in asked for h in a) == list(range(1, CHAIN_LENGTH + 1))


def test_requests_stay_within_the_window_and_the_per_peer_limit(chain: SignedChain) -> None:
    config = SyncConfig(window=10, max_per_peer=3)
    net, replica, syncer = make(chain, config)
    net.add(A, honest(chain), 60)
    net.add(B, honest(chain), 60)
    seen = []

    def check(height: int) -> None:
        pending = syncer._pending
        seen.append(len(pending))
        assert all(height < h <= height + config.window for h in pending)
        for peer in (A, B):
            assert sum(r.peer == peer for r in pending.values()) <= config.max_per_peer

    replica.on_apply = check
    assert run_sync(syncer) == 60
    assert_synced_to(replica, chain, 60)
    assert max(seen) > 1  # requests really were in flight concurrently


def test_status_target_and_is_behind(chain: SignedChain) -> None:
    net, replica, syncer = make(chain)
    assert (syncer.target_height, syncer.syncing, syncer.is_behind()) == (0, False, False)
    net.add(A, honest(chain), 1)
    assert (syncer.target_height, syncer.is_behind(), syncer.is_behind(margin=0)) == (
        1, False, True)
    net.add(B, honest(chain), 50)
    assert syncer.is_behind() and syncer.is_behind(margin=49) and not syncer.is_behind(50)
    during = []
    replica.on_apply = lambda h: during.append((syncer.syncing, syncer.target_height))
    assert run_sync(syncer) == 50
    assert set(during) == {(True, 50)}
    assert (syncer.syncing, syncer.target_height, syncer.is_behind(margin=0)) == (
        False, 50, False)


def test_no_peers_ahead_returns_after_settling(chain: SignedChain) -> None:
    _, replica, syncer = make(chain)
    assert run_sync(syncer, settle_s=0.05) == 0
    assert replica.applied == []


def test_waits_for_a_peer_that_reports_later(chain: SignedChain) -> None:
    net, replica, syncer = make(chain)

    async def go() -> int:
        task = asyncio.create_task(syncer.sync_until_caught_up(settle_s=0.3))
        await asyncio.sleep(0)
        net.add(A, honest(chain), 20)  # a status arriving while sync settles
        return await asyncio.wait_for(task, DEADLINE_S)

    # The peer shows up within the settle time, so sync fetches its blocks first.
    net.add(B, honest(chain), 0)
    assert asyncio.run(go()) == 20
    assert_synced_to(replica, chain, 20)


# --- out-of-order responses --------------------------------------------------------------


def test_out_of_order_responses_are_applied_in_height_order(chain: SignedChain) -> None:
    net, replica, syncer = make(chain, SyncConfig(window=8, max_per_peer=8))
    net.add(A, honest(chain), 40, order=lambda batch: batch[::-1])
    assert run_sync(syncer) == 40
    delivered = [h for _, h in net.delivered]
    assert delivered != sorted(delivered)
    assert_synced_to(replica, chain, 40)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32), window=st.integers(1, 12), per_peer=st.integers(1, 6),
       peers=st.integers(1, 3))
def test_any_delivery_order_applies_the_chain_in_order(seed: int, window: int, per_peer: int,
                                                       peers: int) -> None:
    rng = random.Random(seed)

    def shuffled(batch: list) -> list:
        return rng.sample(batch, len(batch))

    chain = signed_chain()
    net, replica, syncer = make(chain, SyncConfig(window=window, max_per_peer=per_peer))
    for peer in (A, B, C)[:peers]:
        net.add(peer, honest(chain), 30, order=shuffled)
    assert run_sync(syncer) == 30
    assert_synced_to(replica, chain, 30)
    assert net.bans == []


# --- misbehaving peers ---------------------------------------------------------------------


def test_forged_commit_penalises_the_peer_and_sync_completes(chain: SignedChain) -> None:
    net, replica, syncer = make(chain)
    net.add(A, forging(chain), CHAIN_LENGTH)  # lowest id: it is asked for height 1
    net.add(B, honest(chain), CHAIN_LENGTH)
    net.add(C, honest(chain), CHAIN_LENGTH)
    assert run_sync(syncer) == CHAIN_LENGTH
    assert_synced_to(replica, chain, CHAIN_LENGTH)
    # Once: everything else the forger had sent was dropped, not applied and rejected.
    assert len(net.bans) == 1
    peer, reason = net.bans[0]
    assert peer == A and "block 1 rejected" in reason and "does not verify" in reason


def test_undecodable_block_penalises_the_peer(chain: SignedChain) -> None:
    net, replica, syncer = make(chain)
    net.add(A, undecodable(chain), 30)
    net.add(B, honest(chain), 30)
    assert run_sync(syncer) == 30
    assert_synced_to(replica, chain, 30)
    assert [p for p, _ in net.bans] == [A]
    assert "does not decode" in net.bans[0][1]


def test_commit_for_another_block_penalises_before_apply(chain: SignedChain) -> None:
    def wrong_block(h: int) -> BlockResponse:
        other = chain.commits[h % CHAIN_LENGTH]  # validly signed, for another block
        return replace(chain.response(h), commit=replace(other, height=h))

    net, replica, syncer = make(chain)
    net.add(A, wrong_block, 30)
    net.add(B, honest(chain), 30)
    assert run_sync(syncer) == 30
    assert_synced_to(replica, chain, 30)
    assert [p for p, _ in net.bans] == [A]
    assert "names another block" in net.bans[0][1]


def test_silent_peer_times_out_and_its_heights_go_elsewhere(chain: SignedChain) -> None:
    net, replica, syncer = make(chain, SyncConfig(request_timeout_s=0.1))
    mute = net.add(A, silent, 30)
    net.add(B, honest(chain), 30)
    assert run_sync(syncer) == 30
    assert_synced_to(replica, chain, 30)
    assert mute.asked and set(mute.asked) <= set(net.peers[B].asked)
    assert net.bans == []


def test_no_block_asks_another_peer(chain: SignedChain) -> None:
    net, replica, syncer = make(chain, SyncConfig(request_timeout_s=60.0))
    lacking = net.add(A, no_block, 30)
    net.add(B, honest(chain), 30)
    assert run_sync(syncer) == 30  # no waiting for a timeout: NoBlock answers at once
    assert_synced_to(replica, chain, 30)
    assert lacking.asked and set(lacking.asked) <= set(net.peers[B].asked)
    assert len(set(lacking.asked)) == len(lacking.asked)  # not asked again for a height
    assert net.bans == []


def test_a_sole_peer_is_asked_again_after_no_block(chain: SignedChain) -> None:
    refused: set[int] = set()

    def first_refuses(h: int) -> BlockResponse | NoBlock:
        if h in refused:
            return chain.response(h)
        refused.add(h)
        return NoBlock(height=h)

    net, replica, syncer = make(chain, SyncConfig(request_timeout_s=0.05))
    flaky = net.add(A, first_refuses, 10)
    assert run_sync(syncer) == 10
    assert_synced_to(replica, chain, 10)
    assert sorted(flaky.asked) == sorted(list(range(1, 11)) * 2)


def test_peer_gone_hands_its_requests_to_others(chain: SignedChain) -> None:
    net, replica, syncer = make(chain, SyncConfig(request_timeout_s=60.0))

    def leaves(h: int) -> None:
        net.disconnect(A)  # the link drops while our requests are in flight

    net.add(A, leaves, 30)
    net.add(B, honest(chain), 30)
    assert run_sync(syncer) == 30  # well before the 60 s request timeout
    assert_synced_to(replica, chain, 30)
    assert net.peers[A].asked


def test_unreachable_peer_is_skipped(chain: SignedChain) -> None:
    net, replica, syncer = make(chain, SyncConfig(request_timeout_s=60.0))
    gone = net.add(A, honest(chain), 30)
    gone.connected = False  # the switch refuses to send, and has not reported it gone yet
    net.add(B, honest(chain), 30)
    assert run_sync(syncer) == 30
    assert_synced_to(replica, chain, 30)
    assert gone.asked == [] and net.bans == []


def test_pruned_peer_is_not_asked_below_its_base(chain: SignedChain) -> None:
    net, replica, syncer = make(chain)
    pruned = net.add(A, honest(chain), 40, base=20)
    net.add(B, honest(chain), 40)
    assert run_sync(syncer) == 40
    assert_synced_to(replica, chain, 40)
    assert pruned.asked and min(pruned.asked) >= 20


def test_unasked_responses_are_ignored_not_penalised(chain: SignedChain) -> None:
    net, replica, syncer = make(chain)
    net.add(A, honest(chain), 30)
    syncer.on_block_response(A, replace(chain.response(1), block=b"\xc1"))
    syncer.on_block_response(B, chain.response(1))
    syncer.on_no_block(A, NoBlock(height=1))
    assert net.bans == [] and syncer._fetched == {}
    assert run_sync(syncer) == 30
    # Late answers after sync ended are not asked for either.
    syncer.on_block_response(A, replace(chain.response(31), block=b"\xc1"))
    assert net.bans == [] and replica.applied == list(range(1, 31))


def test_other_apply_failures_end_sync(chain: SignedChain) -> None:
    net, replica, syncer = make(chain)
    net.add(A, honest(chain), 30)

    def store_fails(height: int) -> None:
        if height == 5:
            raise StoreError("disk full")

    replica.on_apply = store_fails
    with pytest.raises(StoreError):
        run_sync(syncer)
    assert not syncer.syncing and net.bans == []


# --- checking and serving one block ---------------------------------------------------------


def test_check_response_accepts_the_right_block(chain: SignedChain) -> None:
    assert check_response(7, chain.response(7)) == chain.blocks[6]


@pytest.mark.parametrize(("name", "height", "breaks", "message"), [
    ("undecodable", 7, lambda r, c: replace(r, block=b"\x93\x01"), "does not decode"),
    ("trailing bytes", 7, lambda r, c: replace(r, block=r.block + b"\x00"), "does not decode"),
    ("other block", 7, lambda r, c: replace(r, block=c.raws[7]), "block height"),
    ("commit height", 7, lambda r, c: replace(r, commit=replace(r.commit, height=8)),
     "commit height"),
    ("commit block", 7, lambda r, c: replace(r, commit=replace(r.commit, block_hash=b"\1" * 32)),
     "names another block"),
    ("asked for another height", 8, lambda r, c: r, "block height"),
])
def test_check_response_rejects(chain: SignedChain, name: str, height: int, breaks,
                                message: str) -> None:
    with pytest.raises(SyncRejected, match=message):
        check_response(height, breaks(chain.response(7), chain))


def store_with(chain: SignedChain, path: str, height: int) -> BlockStore:
    store = BlockStore(path)
    mark, writes = genesis_writes(chain.genesis)
    store.init_genesis(mark, writes, chain.genesis_head)
    for h in range(1, height + 1):
        result = chain.results[h - 1]
        locations = [(th, TxLocation(height=h, index=i, receipt=r))
                     for i, (th, r) in enumerate(zip(result.tx_hashes, result.receipts,
                                                     strict=True))]
        store.commit_block(chain.blocks[h - 1], chain.commits[h - 1], locations, result.writes,
                           chain.heads[h - 1], block_bytes=chain.raws[h - 1])
    return store


def test_serve_block_request_from_a_store(chain: SignedChain, tmp_path) -> None:
    store = store_with(chain, str(tmp_path / "store"), 5)
    try:
        for h in range(1, 6):
            response = serve_block_request(store, BlockRequest(height=h))
            assert response == chain.response(h)
            assert check_response(h, response) == chain.blocks[h - 1]
        assert serve_block_request(store, BlockRequest(height=0)) == NoBlock(height=0)
        assert serve_block_request(store, BlockRequest(height=6)) == NoBlock(height=6)
    finally:
        store.close()


def test_sync_from_a_store_backed_peer(chain: SignedChain, tmp_path) -> None:
    store = store_with(chain, str(tmp_path / "store"), 12)
    try:
        net, replica, syncer = make(chain)
        net.add(A, lambda h: serve_block_request(store, BlockRequest(height=h)), 12)
        assert run_sync(syncer) == 12
        assert_synced_to(replica, chain, 12)
        assert encode(chain.blocks[11]) == store.get_block_raw(12)
    finally:
        store.close()


# --- progress ---------------------------------------------------------------------------------


def test_progress_log_lines(chain: SignedChain, caplog, monkeypatch) -> None:
    monkeypatch.setattr(sync, "PROGRESS_LOG_S", 0.0)
    net, _, syncer = make(chain, show_progress=False)
    net.add(A, honest(chain), 10)
    with caplog.at_level(logging.INFO, logger="gannet.sync"):
        assert run_sync(syncer) == 10
    lines = [r.getMessage() for r in caplog.records if r.name == "gannet.sync"]
    assert lines[0] == "sync started height=0 target=10 peers=1"
    assert "syncing height=10 target=10 blocks_per_s=" in "\n".join(lines)
    assert lines[-1].startswith("sync done height=10 applied=10 blocks_per_s=")


def test_progress_bar_on_request(chain: SignedChain, capsys) -> None:
    net, _, syncer = make(chain, show_progress=True)
    net.add(A, honest(chain), 10)
    assert run_sync(syncer) == 10
    err = capsys.readouterr().err
    assert "sync" in err and "10/10" in err


def test_status_messages_from_any_peer_are_kept(chain: SignedChain) -> None:
    _, _, syncer = make(chain)
    syncer.on_status(A, StatusMsg(height=9, round=0, step=1, base=1))
    syncer.on_status(A, StatusMsg(height=3, round=0, step=1, base=1))
    assert syncer.target_height == 3
    syncer.on_peer_gone(A)
    assert syncer.target_height == 0
