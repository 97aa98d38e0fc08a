"""Which tiles a provider must reveal: k distinct indices drawn from the beacon.

The rule (integers only, so every node draws the same tiles):
- Word stream: block n = SHA-256(beacon || job_id || n as 8 bytes big-endian) for
  n = 0, 1, 2, ...; each block gives four 64-bit words, big-endian, in order. The
  beacon is 32 bytes and the counter 8, so beacon || job_id || n is unambiguous.
- A draw below m takes words until one is below 2^64 - (2^64 mod m) and returns
  that word mod m (rejection sampling: no modulo bias).
- Indices are picked by a partial Fisher-Yates shuffle of [0, count): for
  i = 0 .. k-1, draw r below count - i and swap positions i and i + r; position i
  is the i-th pick. Every k-subset is equally likely, picks are distinct by
  construction, and it costs k draws however close k is to count.
- The result is sorted ascending; when k >= count it is every index.
"""

import hashlib
from collections.abc import Collection, Iterator
from fractions import Fraction
from math import comb

BEACON_SIZE = 32
WORD_SPACE = 1 << 64


class SamplerError(ValueError):
    """Sampling was asked for with a bad beacon, tile count or sample size."""


def sample(beacon: bytes, job_id: bytes, count: int, k: int) -> tuple[int, ...]:
    """k distinct tile indices in [0, count), sorted; all of them when k >= count."""
    _validate(beacon, count, k)
    if k >= count:
        return tuple(range(count))
    words = sample_words(beacon, job_id)
    moved: dict[int, int] = {}  # position -> index, for positions a swap has touched
    picks = []
    for i in range(k):
        j = i + draw_below(words, count - i)
        picks.append(moved.get(j, j))
        moved[j] = moved.get(i, i)
    return tuple(sorted(picks))


def sample_words(beacon: bytes, job_id: bytes) -> Iterator[int]:
    """The endless stream of 64-bit words from SHA-256(beacon || job_id || counter)."""
    counter = 0
    while True:
        block = hashlib.sha256(beacon + job_id + counter.to_bytes(8, "big")).digest()
        for offset in range(0, 32, 8):
            yield int.from_bytes(block[offset : offset + 8], "big")
        counter += 1


def draw_below(words: Iterator[int], bound: int) -> int:
    """A uniform integer in [0, bound): the first word below the largest multiple of bound."""
    if not 1 <= bound <= WORD_SPACE:
        raise SamplerError(f"a draw bound must be in [1, 2^64], got {bound}")
    limit = WORD_SPACE - WORD_SPACE % bound
    for word in words:
        if word < limit:
            return word % bound
    raise SamplerError("the word stream ended before a draw was accepted")


def is_caught(picks: Collection[int], corrupt: Collection[int]) -> bool:
    """Whether a sample hits at least one corrupt tile."""
    return not set(picks).isdisjoint(corrupt)


def compute_catch_probability(count: int, corrupt: int, k: int) -> Fraction:
    """Exact chance that k distinct uniform tiles of `count` hit one of `corrupt` bad ones.

    1 - C(count - corrupt, k) / C(count, k): the sample misses only if all k picks
    come from the good tiles. With k >= count every tile is checked.
    """
    if not (0 <= corrupt <= count and count >= 1 and k >= 0):
        raise SamplerError(
            f"need 0 <= corrupt <= count, count >= 1, k >= 0; "
            f"got corrupt={corrupt}, count={count}, k={k}"
        )
    k = min(k, count)
    return 1 - Fraction(comb(count - corrupt, k), comb(count, k))


def simulate_catches(jobs: int, count: int, corrupt: int, k: int) -> int:
    """How many of `jobs` simulated jobs a k-sample catches, each with `corrupt` bad tiles.

    Job n (n = 0 .. jobs-1) has job id n as 8 bytes big-endian, its beacon is
    SHA-256("beacon" || job id), and its corrupt tiles are themselves a sample,
    drawn with beacon SHA-256("corrupt" || job id). Everything is derived from the
    job number, so the result is reproducible.
    """
    caught = 0
    for n in range(jobs):
        job_id = n.to_bytes(8, "big")
        beacon = hashlib.sha256(b"beacon" + job_id).digest()
        bad = sample(hashlib.sha256(b"corrupt" + job_id).digest(), job_id, count, corrupt)
        caught += is_caught(sample(beacon, job_id, count, k), bad)
    return caught


def _validate(beacon: bytes, count: int, k: int) -> None:
    """A beacon is 32 bytes, a job has at least one tile, a sample size is not negative."""
    if len(beacon) != BEACON_SIZE:
        raise SamplerError(f"beacon must be {BEACON_SIZE} bytes, got {len(beacon)}")
    if not 1 <= count <= WORD_SPACE:
        raise SamplerError(f"tile count must be in [1, 2^64], got {count}")
    if k < 0:
        raise SamplerError(f"sample size must not be negative, got {k}")
