"""Rate limits, scores, bans and bounded key sets (no sockets; time is passed in)."""

import asyncio
import contextlib
import time
from collections import OrderedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2p.limits import (
    BAN_SCORE,
    BanList,
    PeerScore,
    PendingGuard,
    RateLimiter,
    RecentKeys,
    TokenBucket,
    is_score_bannable,
)


async def read_until_cut(reader: asyncio.StreamReader) -> None:
    """Read until the server ends the connection (a FIN or, after an abort, a reset)."""
    with contextlib.suppress(ConnectionResetError):
        while await reader.read(4096):
            pass


def test_token_bucket_allows_a_burst_then_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=10, capacity=10, now=0.0)
    for _ in range(10):
        assert bucket.can_take(1, 0.0)
        bucket.take(1)
    assert not bucket.can_take(1, 0.0)
    assert bucket.can_take(1, 0.1)
    assert bucket.refill(100.0) == 10  # never above capacity


def test_token_bucket_rejects_non_positive_settings() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, capacity=1, now=0.0)


def test_rate_limiter_counts_frames_and_bytes_and_a_refusal_costs_nothing() -> None:
    limiter = RateLimiter(frames_per_s=3, bytes_per_s=1000, max_frame_bytes=100, now=0.0)
    assert [limiter.allow(10, 0.0) for _ in range(4)] == [True, True, True, False]
    limiter = RateLimiter(frames_per_s=100, bytes_per_s=1000, max_frame_bytes=100, now=0.0)
    assert limiter.allow(600, 0.0)
    assert not limiter.allow(600, 0.0)  # over the bytes budget...
    assert limiter.allow(400, 0.0)  # ...and the refusal spent neither frames nor bytes


def test_rate_limiter_admits_a_maximal_frame_even_above_the_byte_rate() -> None:
    limiter = RateLimiter(frames_per_s=10, bytes_per_s=100, max_frame_bytes=1000, now=0.0)
    assert limiter.allow(1000, 0.0)
    assert not limiter.allow(1, 0.0)


def test_score_recovers_one_point_per_second_up_to_zero() -> None:
    score = PeerScore(now=0.0)
    assert score.penalise(10, 0.0) == -10
    assert score.value(3.5) == -7
    assert score.value(4.0) == -6
    assert score.value(100.0) == 0
    assert score.penalise(1, 100.0) == -1


def test_ban_threshold() -> None:
    assert not is_score_bannable(BAN_SCORE)
    assert is_score_bannable(BAN_SCORE - 1)


def test_ban_list_expires_and_keeps_the_longer_ban() -> None:
    bans = BanList()
    bans.ban(b"a", until=10.0, now=0.0)
    bans.ban(b"a", until=5.0, now=0.0)
    assert bans.is_banned(b"a", 9.9)
    assert bans.banned_until(b"a") == 10.0
    assert not bans.is_banned(b"a", 10.0)
    assert len(bans) == 0
    bans.ban((b"a", "127.0.0.1"), until=1.0, now=0.0)
    assert not bans.is_banned(b"a", 0.5) and bans.is_banned((b"a", "127.0.0.1"), 0.5)


def test_ban_list_is_bounded() -> None:
    bans = BanList(max_size=3)
    for i in range(3):
        bans.ban(i, until=10.0 + i, now=0.0)
    bans.ban(99, until=50.0, now=0.0)
    assert len(bans) == 3
    assert not bans.is_banned(0, 1.0)  # the soonest to expire made room
    assert bans.is_banned(99, 1.0)
    bans.prune(100.0)
    assert len(bans) == 0


@given(st.lists(st.binary(min_size=1, max_size=2), max_size=60), st.integers(1, 8))
def test_recent_keys_holds_the_most_recently_added(keys: list[bytes], capacity: int) -> None:
    recent = RecentKeys(capacity)
    model: OrderedDict[bytes, None] = OrderedDict()
    for key in keys:
        was_new = key not in model
        assert recent.add(key) == was_new
        model[key] = None
        model.move_to_end(key)
        while len(model) > capacity:
            model.popitem(last=False)
    assert len(recent) == len(model) <= capacity
    assert all(key in recent for key in model)


def test_pending_guard_caps_and_aborts_unsettled_connections() -> None:
    async def scenario() -> None:
        guard = PendingGuard(max_pending=1, deadline_s=0.2)
        accepted: list[asyncio.Transport] = []

        class Inner(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                accepted.append(transport)  # type: ignore[arg-type]

        server = await asyncio.get_running_loop().create_server(
            guard.protocol_factory(Inner), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            started = time.monotonic()
            first_reader, first_writer = await asyncio.open_connection("127.0.0.1", port)
            while not accepted:
                await asyncio.sleep(0.005)
            second_reader, second_writer = await asyncio.open_connection("127.0.0.1", port)
            assert (await second_reader.read()).startswith(b"HTTP/1.1 503")
            assert guard.rejected_total == 1 and guard.pending_count == 1
            await asyncio.wait_for(read_until_cut(first_reader), 2.0)
            assert 0.15 < time.monotonic() - started < 1.5 and guard.expired_total == 1
            # A settled connection has no deadline and leaves room for another.
            _, third_writer = await asyncio.open_connection("127.0.0.1", port)
            while len(accepted) < 2:
                await asyncio.sleep(0.005)
            guard.settle(accepted[1])
            assert guard.pending_count == 0
            _, fourth_writer = await asyncio.open_connection("127.0.0.1", port)
            while len(accepted) < 3:
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.3)
            assert not accepted[1].is_closing() and guard.expired_total == 2
            for writer in (first_writer, second_writer, third_writer, fourth_writer):
                writer.close()
        finally:
            guard.close()
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())
