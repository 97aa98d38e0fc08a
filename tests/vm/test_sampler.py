"""The tile sampler: deterministic, distinct, uniform, and the catch rate it gives."""

import hashlib
import itertools
from collections import Counter
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.params import ComputeParams, compute_challenge_samples
from vm.sampler import (
    SamplerError,
    compute_catch_probability,
    draw_below,
    is_caught,
    sample,
    sample_words,
    simulate_catches,
)

CHECKS = settings(max_examples=80, deadline=None)
beacons = st.binary(min_size=32, max_size=32)
job_ids = st.binary(max_size=16)


def _beacon(n: int) -> bytes:
    return hashlib.sha256(b"test beacon" + n.to_bytes(8, "big")).digest()


def _reference(beacon: bytes, job_id: bytes, count: int, k: int) -> tuple[int, ...]:
    """The rule written plainly: Fisher-Yates over a whole list, first k positions."""
    if k >= count:
        return tuple(range(count))
    words, order = sample_words(beacon, job_id), list(range(count))
    for i in range(k):
        j = i + draw_below(words, count - i)
        order[i], order[j] = order[j], order[i]
    return tuple(sorted(order[:k]))


def test_the_word_stream_is_sha256_of_beacon_job_and_counter() -> None:
    beacon, job = _beacon(0), b"job"
    words = sample_words(beacon, job)
    for counter in range(3):
        block = hashlib.sha256(beacon + job + counter.to_bytes(8, "big")).digest()
        for offset in range(0, 32, 8):
            assert next(words) == int.from_bytes(block[offset : offset + 8], "big")


def test_a_draw_rejects_the_words_that_would_bias_the_modulo() -> None:
    # 2^64 mod 3 = 1, so 2^64 - 1 is the one word a draw below 3 must reject.
    assert draw_below(iter([2**64 - 1, 5]), 3) == 2
    assert draw_below(iter([2**64 - 2]), 3) == (2**64 - 2) % 3
    # 2^64 mod 10 = 6: the top six words are rejected.
    assert draw_below(iter([2**64 - 6, 2**64 - 1, 2**64 - 7]), 10) == (2**64 - 7) % 10
    assert draw_below(iter([2**64 - 1]), 2**64) == 2**64 - 1  # nothing to reject
    assert draw_below(iter([2**64 - 1]), 1) == 0
    with pytest.raises(SamplerError):
        draw_below(iter([2**64 - 1]), 3)  # the stream ran out
    for bad in (0, 2**64 + 1):
        with pytest.raises(SamplerError):
            draw_below(iter([0]), bad)


@CHECKS
@given(beacons, job_ids, st.integers(1, 300), st.integers(0, 320))
def test_a_sample_is_sorted_distinct_in_bounds_and_follows_the_rule(
    beacon: bytes, job_id: bytes, count: int, k: int
) -> None:
    picks = sample(beacon, job_id, count, k)
    assert len(picks) == min(k, count)
    assert list(picks) == sorted(set(picks))
    assert all(0 <= index < count for index in picks)
    assert picks == sample(beacon, job_id, count, k)  # deterministic
    assert picks == _reference(beacon, job_id, count, k)


def test_k_at_or_above_count_is_every_tile_and_zero_is_none() -> None:
    assert sample(_beacon(1), b"j", 5, 5) == (0, 1, 2, 3, 4)
    assert sample(_beacon(1), b"j", 5, 99) == (0, 1, 2, 3, 4)
    assert sample(_beacon(1), b"j", 5, 0) == ()
    assert sample(_beacon(1), b"j", 1, 1) == (0,)


def test_a_sample_of_nearly_every_tile_of_a_large_job_is_cheap_and_distinct() -> None:
    picks = sample(_beacon(2), b"j", 1 << 16, (1 << 16) - 1)
    assert len(set(picks)) == (1 << 16) - 1 and picks[-1] <= (1 << 16) - 1


def test_different_job_ids_or_beacons_give_different_samples() -> None:
    count, k = 1 << 20, 44
    samples = {sample(_beacon(n), b"job", count, k) for n in range(50)}
    samples |= {sample(_beacon(0), n.to_bytes(8, "big"), count, k) for n in range(1, 50)}
    assert len(samples) == 99


def test_bad_inputs_raise() -> None:
    for beacon in (b"", bytes(31), bytes(33)):
        with pytest.raises(SamplerError):
            sample(beacon, b"j", 10, 3)
    with pytest.raises(SamplerError):
        sample(_beacon(0), b"j", 0, 0)
    with pytest.raises(SamplerError):
        sample(_beacon(0), b"j", 10, -1)


def _within_sigmas(observed: int, trials: int, p: Fraction, sigmas: int) -> bool:
    """|observed - trials*p| <= sigmas * sqrt(trials*p*(1-p)), compared exactly (squared)."""
    return (observed - trials * p) ** 2 <= sigmas**2 * trials * p * (1 - p)


def test_each_tile_is_picked_equally_often() -> None:
    # 3000 fixed beacons, 3 of 10 tiles: each tile is picked 900 times in
    # expectation (sd 25.1); the counts are fixed by the beacons, so this cannot
    # flake, and 5 sigma still catches a sampler that favours or avoids a tile.
    trials, count, k = 3000, 10, 3
    hits = Counter(i for n in range(trials) for i in sample(_beacon(n), b"u", count, k))
    assert sorted(hits) == list(range(count))
    assert all(_within_sigmas(hits[i], trials, Fraction(k, count), 5) for i in range(count))


def test_each_subset_is_picked_equally_often() -> None:
    # 2 of 4 tiles: each of the 6 pairs has chance 1/6 (500 of 3000, sd 20.4).
    trials = 3000
    pairs = Counter(sample(_beacon(n), b"s", 4, 2) for n in range(trials))
    assert sorted(pairs) == list(itertools.combinations(range(4), 2))
    assert all(_within_sigmas(pairs[p], trials, Fraction(1, 6), 5) for p in pairs)


def test_picks_of_a_large_job_spread_over_the_whole_range() -> None:
    # 500 beacons x 44 picks of 2^20 tiles: each eighth of the range gets 1/8 of them.
    count, picks = 1 << 20, []
    for n in range(500):
        picks.extend(sample(_beacon(n), b"big", count, 44))
    octants = Counter(index >> 17 for index in picks)
    assert all(_within_sigmas(octants[o], len(picks), Fraction(1, 8), 5) for o in range(8))


def test_catch_probability_is_exact() -> None:
    assert compute_catch_probability(10, 1, 3) == Fraction(3, 10)
    assert compute_catch_probability(10, 0, 3) == 0
    assert compute_catch_probability(10, 10, 1) == 1
    assert compute_catch_probability(10, 3, 0) == 0
    assert compute_catch_probability(10, 1, 50) == 1
    with pytest.raises(SamplerError):
        compute_catch_probability(10, 11, 3)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 9), st.data())
def test_catch_probability_matches_counting_every_sample(count: int, data: st.DataObject) -> None:
    corrupt = data.draw(st.integers(0, count))
    k = data.draw(st.integers(0, count))
    bad = set(range(corrupt))  # which tiles are bad does not matter for a uniform sample
    subsets = list(itertools.combinations(range(count), k))
    caught = sum(is_caught(s, bad) for s in subsets)
    assert compute_catch_probability(count, corrupt, k) == Fraction(caught, len(subsets))


def test_simulated_catch_rate_matches_the_detection_target() -> None:
    # 2000 jobs of 1000 tiles, 100 of them corrupt, sampled with the chain's k (44).
    # The jobs are fixed by their numbers, so the count is reproducible. Bound: 5 sigma
    # of a binomial with p = 1 - 0.9^k (sd about 4.4 catches), which also covers the
    # gap between sampling without replacement (exact p = 0.99130) and 1 - 0.9^k
    # (p = 0.99030), 2.0 catches here.
    params = ComputeParams()
    k = compute_challenge_samples(params)
    f = Fraction(params.corrupt_fraction.num, params.corrupt_fraction.den)
    jobs, count = 2000, 1000
    corrupt = int(count * f)
    caught = simulate_catches(jobs, count, corrupt, k)
    assert _within_sigmas(caught, jobs, 1 - (1 - f) ** k, 5)
    assert _within_sigmas(caught, jobs, compute_catch_probability(count, corrupt, k), 5)
    assert caught < jobs  # 1 - p is about 1 %: some of 2000 jobs must slip through


def test_a_sample_that_misses_every_corrupt_tile_is_not_caught() -> None:
    assert not is_caught((1, 2, 3), {0, 4})
    assert is_caught((1, 2, 3), {3})
    assert simulate_catches(20, 100, 0, 44) == 0
    assert simulate_catches(20, 100, 100, 1) == 20
