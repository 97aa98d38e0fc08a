"""Block sync against an in-memory network of scripted peers serving a really signed chain.

The replica verifies every commit and applies every block as the node does, so a
sync that ends at the source chain's head applied exactly the right blocks.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable
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
from p2p.sync import (
    BACKED,
    MARKED,
    UNPROVEN,
    BlockSyncer,
    SyncConfig,
    SyncRejected,
    check_response,
    serve_block_request,
)
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
                         show_progress=show_progress, verify=replica.verify,
                         on_behind=net.cue_behind)
    return net, replica, net.attach(syncer)


async def deliveries() -> None:
    """Let the fake network deliver what peers answered (it answers on the next turns)."""
    for _ in range(3):
        await asyncio.sleep(0)


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


def test_a_sole_peer_that_refuses_its_claim_is_marked_until_a_probe_shows_it_serves(
        chain: SignedChain) -> None:
    """It used to be asked again every request timeout for as long as it stayed: a peer
    that claims blocks it does not serve could keep a node in sync (off consensus) forever.
    Now its claim stops counting, the run ends, and it is asked again only by a probe,
    which makes it count again once it serves."""
    ready: list[bool] = []

    def serves_once_ready(h: int) -> BlockResponse | NoBlock:
        return chain.response(h) if ready else NoBlock(height=h)

    config = SyncConfig(request_timeout_s=0.05, probe_retry_s=0.05)
    net, replica, syncer = make(chain, config)
    flaky = net.add(A, serves_once_ready, 10)
    assert run_sync(syncer) == 0
    assert flaky.asked == list(range(1, config.max_per_peer + 1))  # the first batch only
    assert syncer.standing(A) == MARKED and not syncer.is_behind(margin=0)
    ready.append(True)

    async def probe_later() -> None:
        assert not syncer.probe(A)  # marked a moment ago
        await asyncio.sleep(config.probe_retry_s * 1.5)
        assert syncer.probe(A)
        await deliveries()

    asyncio.run(probe_later())
    assert (net.behind_cues, syncer.standing(A), syncer.is_behind()) == (1, BACKED, True)
    assert run_sync(syncer) == 10
    assert_synced_to(replica, chain, 10)
    # The first batch, the probe for 1, then the rest (the probed block 1 was kept).
    assert flaky.asked == [*range(1, 9), 1, *range(2, 11)]


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


# --- claims: backed, marked, unproven ---------------------------------------------------------


def test_a_liar_beside_a_serving_peer_holds_no_run(chain: SignedChain) -> None:
    net, replica, syncer = make(chain, SyncConfig(request_timeout_s=60.0))  # no waiting it out
    net.add(B, honest(chain), 30)
    liar = net.add(A, silent, 10**9)  # the lowest id: asked first
    assert syncer.is_behind(margin=10**8)  # nobody is backed yet: unproven claims count
    assert run_sync(syncer) == 30
    assert_synced_to(replica, chain, 30)
    asked = list(liar.asked)
    assert asked  # in the first batch, before B had served anything; then handed to B
    assert (syncer.standing(A), syncer.standing(B)) == (UNPROVEN, BACKED)
    assert (syncer.target_height, syncer.is_behind(margin=0)) == (30, False)
    net.claim(B, 60)
    assert run_sync(syncer) == 30
    assert_synced_to(replica, chain, 60)
    assert liar.asked == asked and net.bans == []


def test_a_marked_liar_stays_marked_across_runs_and_reconnects(chain: SignedChain) -> None:
    config = SyncConfig(request_timeout_s=0.05)
    net, replica, syncer = make(chain, config)
    liar = net.add(A, silent, 10**9)
    assert run_sync(syncer) == 0  # alone, it holds the run one request timeout
    assert liar.asked == list(range(1, config.max_per_peer + 1))
    assert syncer.standing(A) == MARKED and not syncer.is_behind(margin=0)
    asyncio.run(_disconnect_and_back(net, A))  # a new link, the same node id
    assert syncer.standing(A) == MARKED and run_sync(syncer) == 0
    net.add(B, honest(chain), 20)
    assert run_sync(syncer) == 20
    assert_synced_to(replica, chain, 20)
    assert liar.asked == list(range(1, config.max_per_peer + 1)) and net.bans == []


async def _disconnect_and_back(net: FakeNet, peer_id: bytes) -> None:
    net.disconnect(peer_id)
    await deliveries()
    peer = net.peers[peer_id]
    peer.connected = True
    net.syncer.on_status(peer_id, peer.status)


def test_an_unproven_claim_does_not_count_beside_a_backed_peer(chain: SignedChain) -> None:
    net, _, syncer = make(chain)
    net.add(B, honest(chain), 20)
    assert run_sync(syncer) == 20
    net.add(C, silent, 10**9)
    assert syncer.standing(C) == UNPROVEN
    assert (syncer.target_height, syncer.is_behind(margin=0)) == (20, False)
    assert run_sync(syncer) == 0 and net.peers[C].asked == []


def test_a_busy_peer_that_loses_one_request_keeps_its_standing(chain: SignedChain) -> None:
    lost: list[int] = []

    def loses_5_once(h: int) -> BlockResponse | None:
        if h == 5 and not lost:
            lost.append(h)
            return None
        return chain.response(h)

    net, replica, syncer = make(chain, SyncConfig(request_timeout_s=0.1))
    busy = net.add(A, loses_5_once, 30)
    assert run_sync(syncer) == 30
    assert_synced_to(replica, chain, 30)
    assert busy.asked.count(5) == 2 and syncer.standing(A) == BACKED


def test_a_height_a_backed_peer_failed_goes_to_a_marked_one_which_is_backed_again(
        chain: SignedChain) -> None:
    """Under message loss honest peers get marked too; when the backed peer fails a height,
    a marked one is asked rather than waiting out the retry, and serving backs it again."""
    refused: list[int] = []

    def refuses_5_once(h: int) -> BlockResponse | NoBlock:
        if h == 5 and not refused:
            refused.append(h)
            return NoBlock(height=h)
        return chain.response(h)

    lost_probe: list[int] = []

    def loses_the_probe(h: int) -> BlockResponse | NoBlock:
        if not lost_probe:
            lost_probe.append(h)
            return NoBlock(height=h)
        return chain.response(h)

    net, replica, syncer = make(chain, SyncConfig(request_timeout_s=60.0))  # no waiting it out
    marked = net.add(A, loses_the_probe, 30)

    async def probe_a() -> None:
        assert syncer.probe(A)
        await deliveries()

    asyncio.run(probe_a())
    assert syncer.standing(A) == MARKED
    net.add(B, refuses_5_once, 30)
    assert run_sync(syncer) == 30
    assert_synced_to(replica, chain, 30)
    assert marked.asked[:2] == [1, 5]  # the probe, then the height B failed; then a share
    assert (syncer.standing(A), syncer.standing(B)) == (BACKED, BACKED) and net.bans == []


def test_a_backed_peer_that_stops_serving_its_claim_is_marked(chain: SignedChain) -> None:
    net, replica, syncer = make(chain, SyncConfig(request_timeout_s=0.05))
    net.add(A, lambda h: chain.response(h) if h <= 20 else None, 10**6)  # serves 20, claims more
    assert run_sync(syncer) == 20
    assert_synced_to(replica, chain, 20)
    assert syncer.standing(A) == MARKED and not syncer.is_behind(margin=0)
    assert net.bans == []


def test_records_are_bounded(chain: SignedChain, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync, "MAX_RECORDS", 2)
    net, _, syncer = make(chain)
    for peer in (A, B, C):
        net.add(peer, no_block, 5)

    async def probe_all() -> None:
        for peer in (A, B, C):
            assert syncer.probe(peer)
            await deliveries()

    asyncio.run(probe_all())
    assert [syncer.standing(p) for p in (A, B, C)] == [UNPROVEN, MARKED, MARKED]


@settings(max_examples=8, deadline=None)
@given(honest_heights=st.lists(st.integers(1, 40), min_size=1, max_size=3),
       liars=st.lists(st.sampled_from(["silent", "no_block"]), min_size=1, max_size=2),
       claims=st.lists(st.integers(41, 2**64 - 1), min_size=2, max_size=2))
def test_any_liars_beside_honest_peers_end_marked_and_the_run_at_the_honest_head(
        honest_heights: list[int], liars: list[str], claims: list[int]) -> None:
    chain = signed_chain()
    net, replica, syncer = make(chain, SyncConfig(request_timeout_s=0.05))
    liar_ids = [bytes([0x10 + i]) * 32 for i in range(len(liars))]
    for peer_id, kind, claim in zip(liar_ids, liars, claims, strict=False):
        net.add(peer_id, silent if kind == "silent" else no_block, claim)
    for i, height in enumerate(honest_heights):
        net.add(bytes([0x20 + i]) * 32, honest(chain), height)
    assert run_sync(syncer) == max(honest_heights)
    assert_synced_to(replica, chain, max(honest_heights))
    assert not any(syncer.standing(p) == BACKED for p in liar_ids)
    assert not syncer.is_behind(margin=0) and net.bans == []
    # Once the liars are marked (here by a probe), the next run asks none of them.
    asyncio.run(_probe_each(syncer, liar_ids, wait_s=0.06))
    asked = [list(net.peers[p].asked) for p in liar_ids]
    assert all(syncer.standing(p) == MARKED for p in liar_ids)
    assert run_sync(syncer) == 0
    assert [net.peers[p].asked for p in liar_ids] == asked


async def _probe_each(syncer: BlockSyncer, peers: list[bytes], wait_s: float) -> None:
    for peer in peers:
        syncer.probe(peer)
    await asyncio.sleep(wait_s)
    await deliveries()
    syncer.expire_probes()


# --- probes: asking one peer while consensus runs ---------------------------------------------


def test_a_far_future_claim_is_probed_without_a_run_and_marked_unserved(
        chain: SignedChain) -> None:
    config = SyncConfig(request_timeout_s=0.05)
    net, replica, syncer = make(chain, config)
    net.add(B, honest(chain), 10)
    assert run_sync(syncer) == 10  # up to date, B backed
    liar = net.add(A, silent, 2**63)
    assert not syncer.is_behind(margin=0)

    async def go() -> None:
        assert syncer.probe(A) and not syncer.probe(A)  # one probe in flight per peer
        syncer.expire_probes()
        assert syncer.standing(A) == UNPROVEN  # not yet due
        await asyncio.sleep(config.request_timeout_s * 1.5)
        syncer.expire_probes()

    asyncio.run(go())
    assert liar.asked == [11] and syncer.standing(A) == MARKED
    assert net.behind_cues == 0 and not syncer.syncing and replica.applied == list(range(1, 11))


def test_a_probe_served_with_a_verified_commit_cues_catch_up(chain: SignedChain) -> None:
    net, replica, syncer = make(chain)
    ahead = net.add(B, honest(chain), 20)

    async def go() -> None:
        assert syncer.probe(B)
        await deliveries()

    asyncio.run(go())
    assert (net.behind_cues, syncer.standing(B), ahead.asked) == (1, BACKED, [1])
    assert replica.applied == []  # the probe applies nothing: the run does
    assert run_sync(syncer) == 20
    assert_synced_to(replica, chain, 20)
    assert ahead.asked.count(1) == 1  # the probed block was kept for the run


def test_a_probe_served_with_a_forged_commit_penalises(chain: SignedChain) -> None:
    net, _, syncer = make(chain)
    net.add(A, forging(chain), 20)

    async def go() -> None:
        assert syncer.probe(A)
        await deliveries()

    asyncio.run(go())
    assert net.behind_cues == 0 and [p for p, _ in net.bans] == [A]
    assert "probe" in net.bans[0][1] and "does not verify" in net.bans[0][1]
    assert syncer.target_height == 0


@pytest.mark.parametrize("case", ["cannot check now", "we moved on", "no block"])
def test_a_probe_answer_that_shows_nothing_cues_nothing(chain: SignedChain, case: str) -> None:
    net, replica, syncer = make(chain)
    net.add(B, no_block if case == "no block" else honest(chain), 20)
    replica.verifiable = case != "cannot check now"

    async def go() -> None:
        assert syncer.probe(B)
        if case == "we moved on":  # consensus committed block 1 while the probe was out
            await replica.apply(chain.blocks[0], chain.raws[0], chain.commits[0])
        await deliveries()

    asyncio.run(go())
    assert net.behind_cues == 0 and net.bans == []
    assert syncer.standing(B) == (MARKED if case == "no block" else UNPROVEN)


def test_no_probe_outside_a_claim_or_during_a_run(chain: SignedChain) -> None:
    net, replica, syncer = make(chain)
    net.add(A, honest(chain), 0)
    net.add(B, honest(chain), 30, base=5)
    during: list[bool] = []

    async def go() -> None:
        assert not syncer.probe(A) and not syncer.probe(B) and not syncer.probe(C)
        net.add(C, honest(chain), 30)
        replica.on_apply = lambda h: during.append(syncer.probe(C))
        await syncer.sync_until_caught_up(SETTLE_S)

    asyncio.run(go())
    assert during and not any(during)


# --- lost messages: resent, nobody marked ---------------------------------------------------

QUICK_RESEND = SyncConfig(request_timeout_s=60.0, resend_min_s=0.02, resend_initial_s=0.02)


def loses_first_ask_of_each_height(chain: SignedChain) -> Callable[[int], BlockResponse | None]:
    """A peer on a lossy link: the first request for each height (or its answer) is lost."""
    seen: set[int] = set()

    def serve(h: int) -> BlockResponse | None:
        if h in seen:
            return chain.response(h)
        seen.add(h)
        return None

    return serve


def test_lost_requests_are_sent_again_long_before_the_request_timeout(
        chain: SignedChain) -> None:
    net, replica, syncer = make(chain, QUICK_RESEND)
    for peer in (A, B):
        net.add(peer, loses_first_ask_of_each_height(chain), 40)
    assert run_sync(syncer) == 40  # DEADLINE_S is a sixth of the 60 s request timeout
    assert_synced_to(replica, chain, 40)
    assert (syncer.standing(A), syncer.standing(B)) == (BACKED, BACKED) and net.bans == []
    asks = Counter(h for p in (A, B) for h in net.peers[p].asked)
    assert set(asks) == set(range(1, 41)) and min(asks.values()) >= 2


def test_a_resent_request_goes_to_a_peer_not_asked_yet(chain: SignedChain) -> None:
    net, replica, syncer = make(chain, QUICK_RESEND)
    lossy = net.add(A, lambda h: None if h == 1 else chain.response(h), 10)
    net.add(B, honest(chain), 10)
    assert run_sync(syncer) == 10
    assert_synced_to(replica, chain, 10)
    assert lossy.asked.count(1) == 1 and net.peers[B].asked.count(1) == 1
    assert syncer.standing(A) == BACKED  # one lost message marks nobody


def test_an_answer_to_the_first_send_is_taken_after_a_resend(chain: SignedChain) -> None:
    """The first peer asked answers late (after the request went to another peer, which
    stays silent): its answer is still the one taken."""
    net, replica, syncer = make(chain, QUICK_RESEND)
    late: list[int] = []

    def answers_late(h: int) -> BlockResponse | None:
        if h == 1 and not late:
            late.append(h)
            loop = asyncio.get_running_loop()
            loop.call_later(0.1, syncer.on_block_response, A, chain.response(1))
            return None
        return chain.response(h)

    net.add(A, answers_late, 1)
    net.add(B, silent, 1)
    assert run_sync(syncer) == 1
    assert_synced_to(replica, chain, 1)
    assert net.peers[B].asked[0] == 1 and net.delivered == []  # A's answer came outside


def test_a_lost_probe_is_sent_again_and_cues_catch_up(chain: SignedChain) -> None:
    net, _, syncer = make(chain, QUICK_RESEND)
    ahead = net.add(B, loses_first_ask_of_each_height(chain), 20)

    async def go() -> None:
        assert syncer.probe(B)
        await deliveries()
        syncer.expire_probes()  # not due yet
        assert ahead.asked == [1]
        await asyncio.sleep(QUICK_RESEND.resend_initial_s * 1.5)
        syncer.expire_probes()
        await deliveries()

    asyncio.run(go())
    assert (ahead.asked, net.behind_cues, syncer.standing(B)) == ([1, 1], 1, BACKED)


def test_round_trips_follow_rfc_6298_with_a_floor_and_backoff() -> None:
    trips = sync.RoundTrips(floor_s=0.25, initial_s=1.0)
    assert trips.resend_after() == 1.0 and trips.resend_after(3) == 4.0
    trips.sample(0.4)  # SRTT 0.4, RTTVAR 0.2: 0.4 + 4 * 0.2
    assert trips.resend_after() == pytest.approx(1.2)
    for _ in range(200):
        trips.sample(0.001)  # a fast link: the floor holds
    assert trips.resend_after() == 0.25 and trips.resend_after(2) == 0.5
