"""Shared helpers of the benchmarks in scripts/bench (not a test module).

Every benchmark prints its figure as a ratio to a physical limit measured in
the same run on the same machine; the usual limit is how many Ed25519
signatures libsodium verifies per second on all cores (`verify_limit`).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence

from chain.crypto import SignatureVerifier, VerifyItem


def cpu_count() -> int:
    """The number of cores the benchmarks use by default."""
    return os.cpu_count() or 1


def verify_limit(
    items: Sequence[VerifyItem], workers: int, rounds: int = 3
) -> tuple[float, float]:
    """Raw libsodium Ed25519 verifies/s of `items` on `workers` threads, best of `rounds`,
    and the CPU seconds (all threads) one verify costs in that best round.

    This is the physical limit of any pipeline that must check one signature
    per item: the same `SignatureVerifier.verify_many` the mempool uses, with
    nothing else around it. Every item must verify (the check keeps a broken
    setup from producing a flattering figure).
    """
    with SignatureVerifier(workers=workers) as verifier:
        verdicts = verifier.verify_many(items)
        if not all(verdicts):
            raise SystemExit(f"{verdicts.count(False)} of the limit's signatures do not verify")
        best = (float("inf"), 0.0)
        for _ in range(rounds):
            wall, cpu = time.perf_counter(), time.process_time()
            verifier.verify_many(items)
            best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return len(items) / best[0], best[1] / len(items)


def machine() -> str:
    """One line naming the machine the figures come from."""
    return f"{platform.machine()}, {cpu_count()} cores, Python {platform.python_version()}"


def print_table(title: str, rows: Sequence[tuple[str, str, str]]) -> None:
    """A three-column table: label, value, note."""
    width = max(len(label) for label, _, _ in rows)
    value_width = max(len(value) for _, value, _ in rows)
    print(title)
    for label, value, note in rows:
        line = f"  {label:<{width}}  {value:>{value_width}}"
        print(f"{line}  {note}" if note else line)
