"""Testnet descriptions (like CometBFT's e2e manifests) and the runner that plays them.

A description is a TOML file (tests/e2e/scenarios/*.toml):

    name = "ci"
    seed = 1                    # GANNET_SCENARIO_SEED or run_scenario(seed=) override it
    nodes = 4
    block_time_ms = 200

    [load]                      # the bank (tests/e2e/bank.py)
    accounts = 8                # funded from the faucet at start
    tx_rate = 20                # txs per second, all accounts together
    workers = 2                 # sending threads, each owning some accounts
    funding = 1_000_000_000_000
    amount_max = 1_000_000

    [bounds]
    rpc_s = 20                  # a perturbed node answers RPC this long after the fault
    catch_up_s = 30             # ... and has caught up with the others
    advance_s = 15              # with >= 3 of 4 up and connected a block commits within
    rss_mib = 600               # no node's resident memory above
    rss_growth_mib = 100        # no run's memory grows more (median last third - first)

    [schedule]
    gap_s = [0.5, 1.0]          # all-up time between a recovery and the next fault
    events = [                  # played in order; `node` / `groups` drawn when absent
        { kind = "pause", duration_s = 10 },
        { kind = "kill", duration_s = 1, repeat = 2 },
    ]
    # or, instead of `events`, random ones for a time or a count:
    [schedule.random]
    duration_s = 3600           # or count = 100
    fault_s = [1.0, 5.0]        # how long a fault lasts (a pause: pause_s)
    pause_s = 10
    drop_fraction = 0.2
    [schedule.random.weights]   # how often each kind is drawn
    kill = 3
    pause = 1
    ...

Kinds: `kill` (SIGKILL, start again after the fault), `pause` (SIGSTOP, SIGCONT),
`restart` (SIGTERM, which must exit 0, then start), `partition_1_3` (one node cut
from three), `partition_2_2`, `ring` (each node linked to its two neighbours in
a random order only), `drop` (every link loses each p2p message with
probability `fraction`), `drop_connections` (every link kills its connection on
a chunk with probability `fraction`; see proxy.py). Everything random (nodes,
groups, orders, durations, gaps, the bank's transfers) comes from the seed.

`run_scenario` builds a `Cluster`, funds the bank, runs its load and plays the
schedule, one fault at a time. For each event it measures:
- `advance_s`: while >= 3 of 4 are up and connected (every kind but 2|2), the
  time until they commit a new block; it must be under `advance_s`. A 2|2
  partition must commit nothing anywhere after a short settle;
- `rpc_s`: from the fault's end until the perturbed node answers RPC;
- `catch_up_s`: from the fault's end until the perturbed nodes reach the
  height the others had at that moment (2|2: until the chain commits again).
Afterwards it checks the bank (bank.check_bank: one chain and app hash
everywhere, acknowledged txs exactly once, balances and total), no double
signing, clean logs and bounded memory, and returns a `Report` of figures and
invariant results. `python -m tests.e2e.scenario FILE` (scripts/reliability)
runs a file and prints them.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tests.e2e import checks
from tests.e2e.bank import Acks, Bank, BankLoad, check_bank
from tests.e2e.cluster import Cluster
from tests.e2e.harness import RpcError, rpc_call

KINDS = ("kill", "pause", "restart", "partition_1_3", "partition_2_2", "ring", "drop",
         "drop_connections")
NODE_KINDS = ("kill", "pause", "restart", "partition_1_3")  # one node is the perturbed one
SEED_ENV = "GANNET_SCENARIO_SEED"
POLL_S = 0.1
HALT_SETTLE_S = 1.0  # a block in flight when a 2|2 partition starts may still commit
SETTLE_BLOCKS = 1  # all nodes commit one more block before the next fault
WARM_UP_BLOCKS = 3
MIB = 1024
RSS_PERIOD_S = 1.0


class ScenarioError(Exception):
    """A testnet description is malformed (unknown kind, key, bad value)."""


# --- the description ----------------------------------------------------------------------


@dataclass(frozen=True)
class LoadSpec:
    """The bank's size and rate."""

    accounts: int = 8
    tx_rate: float = 20.0
    workers: int = 2
    funding: int = 10**12
    amount_max: int = 10**6


@dataclass(frozen=True)
class Bounds:
    """What each event and the run must stay within."""

    rpc_s: float = 20.0
    catch_up_s: float = 30.0
    advance_s: float = 15.0
    rss_mib: int = 600
    rss_growth_mib: int = 100


@dataclass(frozen=True)
class EventSpec:
    """One entry of `schedule.events`; `node`/`groups` None: drawn from the seed."""

    kind: str
    duration_s: float
    repeat: int = 1
    node: int | None = None
    groups: tuple[tuple[int, ...], ...] | None = None
    fraction: float = 0.2


@dataclass(frozen=True)
class RandomSpec:
    """`schedule.random`: faults drawn by weight until `duration_s` or `count` is reached."""

    weights: tuple[tuple[str, int], ...]
    duration_s: float | None = None
    count: int | None = None
    fault_s: tuple[float, float] = (1.0, 5.0)
    pause_s: float = 10.0
    drop_fraction: float = 0.2


@dataclass(frozen=True)
class Scenario:
    """A testnet description."""

    name: str
    seed: int = 1
    nodes: int = 4
    block_time_ms: int = 200
    load: LoadSpec = LoadSpec()
    bounds: Bounds = Bounds()
    gap_s: tuple[float, float] = (0.5, 1.0)
    events: tuple[EventSpec, ...] = ()
    random: RandomSpec | None = None


@dataclass(frozen=True)
class Event:
    """A planned fault: `nodes` are the perturbed ones (all of them for network-wide
    kinds); `groups` the partition sides or the ring order."""

    kind: str
    nodes: tuple[int, ...]
    duration_s: float
    gap_s: float
    groups: tuple[tuple[int, ...], ...] = ()
    fraction: float = 0.0


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a TOML testnet description."""
    with open(path, "rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioError(f"{path}: {exc}") from exc
    return parse_scenario(data, str(path))


def parse_scenario(data: dict[str, Any], where: str = "scenario") -> Scenario:
    """A `Scenario` from decoded TOML; ScenarioError names the first problem."""
    top = dict(data)
    load = _fields(LoadSpec, top.pop("load", {}), f"{where} [load]")
    bounds = _fields(Bounds, top.pop("bounds", {}), f"{where} [bounds]")
    schedule = dict(top.pop("schedule", {}))
    gap = _pair(schedule.pop("gap_s", (0.5, 1.0)), f"{where} schedule.gap_s")
    events = tuple(_event_spec(e, f"{where} schedule.events[{k}]")
                   for k, e in enumerate(schedule.pop("events", [])))
    rand = schedule.pop("random", None)
    if schedule:
        raise ScenarioError(f"{where} [schedule]: unknown keys {sorted(schedule)}")
    scenario = _fields(Scenario, top, where)
    spec = None if rand is None else _random_spec(dict(rand), f"{where} [schedule.random]")
    if events and spec is not None:
        raise ScenarioError(f"{where}: give schedule.events or schedule.random, not both")
    if scenario.nodes < 4:
        raise ScenarioError(f"{where}: the faults need at least 4 nodes, got {scenario.nodes}")
    return replace(scenario, load=load, bounds=bounds, gap_s=gap, events=events, random=spec)


def _fields(cls: type, values: dict[str, Any], where: str) -> Any:
    names = {f for f in cls.__dataclass_fields__}  # type: ignore[attr-defined]
    unknown = set(values) - names
    if unknown:
        raise ScenarioError(f"{where}: unknown keys {sorted(unknown)}")
    try:
        return cls(**values)
    except TypeError as exc:
        raise ScenarioError(f"{where}: {exc}") from exc


def _pair(value: Any, where: str) -> tuple[float, float]:
    if not (isinstance(value, list | tuple) and len(value) == 2
            and all(isinstance(v, int | float) for v in value) and 0 <= value[0] <= value[1]):
        raise ScenarioError(f"{where}: want [low, high] with 0 <= low <= high, got {value!r}")
    return float(value[0]), float(value[1])


def _event_spec(entry: dict[str, Any], where: str) -> EventSpec:
    entry = dict(entry)
    if "groups" in entry:
        entry["groups"] = tuple(tuple(g) for g in entry["groups"])
    spec = _fields(EventSpec, entry, where)
    if spec.kind not in KINDS:
        raise ScenarioError(f"{where}: unknown kind {spec.kind!r}; kinds: {', '.join(KINDS)}")
    if spec.duration_s <= 0 or spec.repeat < 1 or not 0 <= spec.fraction <= 1:
        raise ScenarioError(f"{where}: want duration_s > 0, repeat >= 1, 0 <= fraction <= 1")
    return spec


def _random_spec(entry: dict[str, Any], where: str) -> RandomSpec:
    weights = entry.pop("weights", None)
    if not isinstance(weights, dict) or not weights or set(weights) - set(KINDS) or not all(
            type(w) is int and w > 0 for w in weights.values()):
        raise ScenarioError(f"{where}: weights must map kinds ({', '.join(KINDS)}) to "
                            f"positive integers, got {weights!r}")
    if "fault_s" in entry:
        entry["fault_s"] = _pair(entry["fault_s"], f"{where} fault_s")
    spec = _fields(RandomSpec, {**entry, "weights": tuple(sorted(weights.items()))}, where)
    if (spec.duration_s is None) == (spec.count is None):
        raise ScenarioError(f"{where}: give exactly one of duration_s and count")
    return spec


# --- the plan -------------------------------------------------------------------------------


def plan(scenario: Scenario, seed: int) -> Iterator[Event]:
    """The events of a scenario in order, every choice drawn from `seed` (a random
    schedule by time is endless: the runner stops taking events when time is up)."""
    rng = random.Random(seed)
    n = scenario.nodes
    for spec in scenario.events:
        for _ in range(spec.repeat):
            yield _draw(rng, n, spec.kind, spec.duration_s, scenario.gap_s, spec.node,
                        spec.groups, spec.fraction)
    spec = scenario.random
    if spec is None:
        return
    kinds = [k for k, _ in spec.weights]
    weights = [w for _, w in spec.weights]
    made = 0
    while spec.count is None or made < spec.count:
        kind = rng.choices(kinds, weights)[0]
        duration = spec.pause_s if kind == "pause" else round(rng.uniform(*spec.fault_s), 2)
        yield _draw(rng, n, kind, duration, scenario.gap_s, None, None, spec.drop_fraction)
        made += 1


def _draw(rng: random.Random, n: int, kind: str, duration_s: float,
          gap_s: tuple[float, float], node: int | None,
          groups: tuple[tuple[int, ...], ...] | None, fraction: float) -> Event:
    """One event: the chosen node(s) and groups, the gap after it."""
    gap = round(rng.uniform(*gap_s), 2)
    if kind in NODE_KINDS:
        i = rng.randrange(n) if node is None else node
        sides = ((i,), tuple(j for j in range(n) if j != i)) if kind == "partition_1_3" else ()
        return Event(kind, (i,), duration_s, gap, sides)
    if kind == "partition_2_2":
        order = rng.sample(range(n), n) if groups is None else [j for g in groups for j in g]
        half = n // 2 if groups is None else len(groups[0])
        sides = (tuple(sorted(order[:half])), tuple(sorted(order[half:])))
        return Event(kind, tuple(range(n)), duration_s, gap, sides)
    if kind == "ring":
        order = tuple(rng.sample(range(n), n)) if groups is None else groups[0]
        return Event(kind, tuple(range(n)), duration_s, gap, (order,))
    return Event(kind, tuple(range(n)), duration_s, gap, (), fraction)


# --- the report -----------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one event did and how the testnet recovered."""

    event: Event
    advance_s: float | None = None  # first block committed by the connected majority
    blocks: int = 0  # blocks the others committed during the fault
    rpc_s: float | None = None
    catch_up_s: float | None = None
    exit_code: int | None = None  # of a SIGTERM restart
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One line for the log of a run."""
        e = self.event
        where = "|".join(",".join(map(str, g)) for g in e.groups) if e.groups else \
            ",".join(map(str, e.nodes))
        figures = [f"{e.duration_s:g}s", f"blocks+{self.blocks}"]
        for name in ("advance_s", "rpc_s", "catch_up_s"):
            value = getattr(self, name)
            if value is not None:
                figures.append(f"{name.removesuffix('_s')} {value:.2f}s")
        problems = f"  PROBLEMS: {'; '.join(self.problems)}" if self.problems else ""
        return f"{e.kind:<14} {where:<10} {' '.join(figures)}{problems}"


@dataclass
class Report:
    """The figures and invariant results of one run."""

    name: str
    seed: int
    outcomes: list[Outcome] = field(default_factory=list)
    invariants: list[tuple[str, bool, str]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Every invariant held."""
        return all(ok for _, ok, _ in self.invariants)

    def check(self, name: str, run: Callable[[], Any]) -> Any:
        """Run one invariant check, recording whether it held (and why not)."""
        try:
            detail = run()
        except AssertionError as exc:
            self.invariants.append((name, False, str(exc)[:2000]))
            return None
        except Exception as exc:  # a node that does not answer fails the check too
            self.invariants.append((name, False, f"{type(exc).__name__}: {exc}"[:2000]))
            return None
        self.invariants.append((name, True, "" if detail is None else str(detail)))
        return detail

    def counts(self) -> Counter[str]:
        """Events per kind."""
        return Counter(o.event.kind for o in self.outcomes)

    def recovery(self) -> dict[str, dict[str, float]]:
        """Per kind: max and median of rpc_s, catch_up_s and advance_s."""
        out: dict[str, dict[str, float]] = {}
        for kind in KINDS:
            mine = [o for o in self.outcomes if o.event.kind == kind]
            for name in ("advance_s", "rpc_s", "catch_up_s"):
                values = [getattr(o, name) for o in mine if getattr(o, name) is not None]
                if values:
                    out.setdefault(kind, {})[f"{name} max"] = max(values)
                    out[kind][f"{name} median"] = statistics.median(values)
        return out

    def summary(self) -> str:
        """The figures and invariant results as text."""
        counts = self.counts()
        lines = [f"scenario {self.name} seed {self.seed}: {len(self.outcomes)} events in "
                 f"{self.elapsed_s:.0f} s (" + ", ".join(f"{k} {counts[k]}" for k in KINDS
                                                        if counts[k]) + ")"]
        lines += [f"  {k}: {v}" for k, v in self.figures.items()]
        for kind, stats in self.recovery().items():
            lines.append(f"  recovery {kind}: " + ", ".join(
                f"{name} {value:.2f}" for name, value in stats.items()))
        for name, ok, detail in self.invariants:
            lines.append(f"  [{'ok' if ok else 'FAILED'}] {name}"
                         + (f": {detail}" if detail else ""))
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        """AssertionError naming every failed invariant."""
        failed = [f"{name}: {detail}" for name, ok, detail in self.invariants if not ok]
        if failed:
            raise AssertionError(f"{len(failed)} invariant(s) failed (seed {self.seed}):\n"
                                 + "\n".join(failed) + f"\n{self.summary()}")


# --- memory ---------------------------------------------------------------------------------


class RssSampler(threading.Thread):
    """Samples every running node's VmRSS once a second: (node, pid) -> KiB samples."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.cluster = cluster
        self.series: dict[tuple[int, int], list[int]] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.sample()
            self.stopping.wait(RSS_PERIOD_S)

    def sample(self) -> None:
        """One reading of every running node."""
        for i in range(self.cluster.n):
            proc = self.cluster.node(i).proc
            if proc is None or proc.poll() is not None:
                continue
            kib = checks.read_rss_kib(proc.pid)
            if kib is not None:
                self.series.setdefault((i, proc.pid), []).append(kib)

    def stop(self) -> None:
        """Stop sampling."""
        self.stopping.set()
        self.join(5)


# --- the runner -------------------------------------------------------------------------------


class Runner:
    """Plays one scenario on a running cluster with its load going."""

    def __init__(self, cluster: Cluster, scenario: Scenario, report: Report,
                 log: Callable[[str], None]) -> None:
        self.cluster, self.scenario, self.report, self.log = cluster, scenario, report, log
        self.bounds = scenario.bounds
        self.ledger = checks.SignLedger()  # what each validator signed, fed before crashes
        self.homes = [cluster.home(i) for i in range(cluster.n)]
        self.chain_id = checks.home_chain_id(self.homes[0])
        self.public_keys = checks.home_public_keys(self.homes)

    def play(self, events: Iterator[Event], deadline: float | None) -> None:
        """Run events one at a time until they or the time run out, or one fails to recover
        (the rest would only pile faults on a broken testnet)."""
        for event in events:
            if deadline is not None and time.monotonic() + event.duration_s > deadline:
                return
            outcome = Outcome(event)
            self.report.outcomes.append(outcome)
            try:
                self.run_event(event, outcome)
            except AssertionError as exc:
                outcome.problems.append(str(exc)[:500])
            self.log(outcome.line())
            if outcome.problems and outcome.catch_up_s is None:
                self.log("stopping the schedule: the testnet did not recover")
                return
            time.sleep(event.gap_s)

    def run_event(self, event: Event, outcome: Outcome) -> None:
        """Apply the fault, hold it, end it and measure the recovery."""
        c = self.cluster
        # The nodes that stay up and connected: all but the perturbed one, or all of them.
        others = [j for j in range(c.n) if j not in event.nodes] or list(range(c.n))
        before = self._max_height(range(c.n))
        if event.kind in ("kill", "restart"):  # its WAL and sign state as they were
            self.ledger.add_home(self.homes[event.nodes[0]], self.chain_id, self.public_keys)
        self._apply(event, outcome)
        if event.kind == "partition_2_2":
            self._hold_halted(event, outcome)
        else:
            self._hold_advancing(event, outcome, others, before)
        ended = time.monotonic()
        target = self._max_height(others)
        self._end(event, outcome, ended)
        if event.kind == "partition_2_2":
            target += 1  # the chain commits again
        nodes = list(event.nodes)
        self._wait(lambda: self._min_height(nodes) >= target, ended, self.bounds.catch_up_s,
                   f"nodes {nodes} at height {target}")
        outcome.catch_up_s = time.monotonic() - ended
        settle = self._max_height(range(c.n)) + SETTLE_BLOCKS
        c.wait_height(settle, timeout_s=self.bounds.catch_up_s)

    def _apply(self, event: Event, outcome: Outcome) -> None:
        c, i = self.cluster, event.nodes[0]
        if event.kind == "kill":
            c.kill9(i)
        elif event.kind == "pause":
            c.pause(i)
        elif event.kind == "restart":
            outcome.exit_code = c.stop(i)
            if outcome.exit_code != 0:
                outcome.problems.append(f"SIGTERM exit status {outcome.exit_code}, not 0")
        elif event.kind in ("partition_1_3", "partition_2_2"):
            c.partition(event.groups)
        elif event.kind == "ring":
            order = event.groups[0]
            self._mesh().connect_only([(order[k], order[(k + 1) % len(order)])
                                       for k in range(len(order))])
        elif event.kind == "drop":
            self._mesh().set_message_drop(event.fraction)
        elif event.kind == "drop_connections":
            self._mesh().set_drop(event.fraction)

    def _end(self, event: Event, outcome: Outcome, ended: float) -> None:
        """End the fault; time until the perturbed node answers RPC."""
        c, i = self.cluster, event.nodes[0]
        if event.kind in ("kill", "restart"):
            c.start(i)  # waits until its RPC answers (ready timeout: the rpc bound)
        elif event.kind == "pause":
            c.resume(i)
        elif event.kind == "drop":
            self._mesh().set_message_drop(0.0)
        elif event.kind == "drop_connections":
            self._mesh().set_drop(0.0)
        else:
            c.heal()
        if event.kind in NODE_KINDS:
            url = c.node(i).url
            self._wait(lambda: _answers(url), ended, self.bounds.rpc_s, f"node {i}'s RPC")
            outcome.rpc_s = time.monotonic() - ended

    def _hold_advancing(self, event: Event, outcome: Outcome, others: list[int],
                        before: int) -> None:
        """Keep the fault for its duration and until the connected nodes committed a block
        (within the advance bound: else a liveness failure)."""
        began = time.monotonic()
        start = max(before, self._max_height(others))
        while True:
            now = time.monotonic()
            height = self._max_height(others)
            if outcome.advance_s is None and height > start:
                outcome.advance_s = now - began
            if now - began >= event.duration_s and (
                    outcome.advance_s is not None or now - began >= self.bounds.advance_s):
                break
            time.sleep(POLL_S)
        outcome.blocks = height - start
        if outcome.advance_s is None:
            outcome.problems.append(f"nodes {others} committed nothing in "
                                    f"{self.bounds.advance_s:g} s")

    def _hold_halted(self, event: Event, outcome: Outcome) -> None:
        """Keep a 2|2 partition for its duration; after a settle nothing may commit."""
        settle = min(HALT_SETTLE_S, event.duration_s / 2)
        time.sleep(settle)
        halted = self._max_height(range(self.cluster.n))
        time.sleep(event.duration_s - settle)
        outcome.blocks = self._max_height(range(self.cluster.n)) - halted
        if outcome.blocks:
            outcome.problems.append(f"a 2|2 partition committed {outcome.blocks} block(s)")

    def _wait(self, condition: Callable[[], bool], since: float, bound_s: float,
              what: str) -> None:
        while not condition():
            if time.monotonic() - since > bound_s:
                raise AssertionError(f"{what} not reached within {bound_s:g} s "
                                     f"(heights {self.cluster.heights()})")
            time.sleep(POLL_S)

    def _max_height(self, nodes: Sequence[int] | range) -> int:
        return max((h for h in self.cluster.heights(nodes) if h is not None), default=0)

    def _min_height(self, nodes: Sequence[int]) -> int:
        heights = self.cluster.heights(nodes)
        return -1 if None in heights else min(heights)  # type: ignore[type-var]

    def _mesh(self) -> Any:
        if self.cluster.mesh is None:
            raise AssertionError("this scenario needs the proxy mesh")
        return self.cluster.mesh


def _answers(url: str) -> bool:
    try:
        rpc_call(url, "gannet_status", timeout=1.0)
    except (OSError, RpcError):
        return False
    return True


def run_scenario(scenario: Scenario, workdir: Path, seed: int | None = None,
                 duration_s: float | None = None,
                 log: Callable[[str], None] = print) -> Report:
    """Run a scenario in `workdir` (node homes and logs stay there); the report.

    `seed` defaults to $GANNET_SCENARIO_SEED, then the description's seed;
    `duration_s` overrides a random schedule's duration.
    """
    if seed is None:
        seed = int(os.environ.get(SEED_ENV, scenario.seed))
    if duration_s is not None and scenario.random is not None:
        scenario = replace(scenario, random=replace(scenario.random, duration_s=duration_s,
                                                    count=None))
    report = Report(scenario.name, seed)
    began = time.monotonic()
    with Cluster(Path(workdir), n=scenario.nodes,
                 block_time_ms=scenario.block_time_ms) as cluster:
        rss = RssSampler(cluster)
        rss.start()
        try:
            _run(cluster, scenario, seed, report, log)
        finally:
            rss.stop()
        _check_memory(report, rss, scenario.bounds)
        report.check("no uncaught exception or ERROR line in any node's log",
                     lambda: checks.check_no_uncaught_exceptions(cluster))
    report.elapsed_s = time.monotonic() - began
    return report


def _run(cluster: Cluster, scenario: Scenario, seed: int, report: Report,
         log: Callable[[str], None]) -> None:
    urls = checks.node_urls(cluster)
    cluster.wait_height(WARM_UP_BLOCKS, timeout_s=scenario.bounds.catch_up_s)
    spec = scenario.load
    fee = int(cluster.rpc(0, "gannet_estimateFee")["min_fee"])
    bank = Bank(seed, spec.accounts, spec.funding, spec.amount_max, fee,
                cluster.summary["chain_id"])
    bank.fund(urls[0], cluster.faucet_signer())
    load = BankLoad(bank, urls, spec.tx_rate, spec.workers).start()
    acks = Acks(urls, load)
    acks.start()
    first = max(h for h in cluster.heights() if h is not None)
    played = time.monotonic()
    deadline = None
    if scenario.random is not None and scenario.random.duration_s is not None:
        deadline = played + scenario.random.duration_s
    runner = Runner(cluster, scenario, report, log)
    try:
        runner.play(plan(scenario, seed), deadline)
    finally:
        load.stop()
    report.figures["schedule_s"] = round(time.monotonic() - played, 1)
    _check_events(report, scenario.bounds)
    report.check("every nonce a node accepted is committed once the faults are over",
                 lambda: load.finish(urls))
    acks.stop()
    report.check("every accepted tx is acknowledged as committed", acks.drain)
    result = report.check("bank: one chain and app hash everywhere, acknowledged txs exactly "
                          "once, balances replay, total unchanged",
                          lambda: check_bank(urls, bank, acks.committed))
    report.check("no double signing: one message per validator and height/round/step in "
                 "every commit, WAL and sign state (also as read before each crash); no "
                 "evidence committed or pending", lambda: _check_no_double_signing(urls, runner))
    report.check("load: no unexpected rejection, no failed receipt, no worker error",
                 lambda: _check_load(load, acks))
    report.figures.update(
        heights=f"{first}..{result.height if result else '?'}",
        txs_accepted=len(set(load.accepted)), txs_acknowledged=len(acks.committed),
        bank_txs_in_chain=result.bank_txs if result else None,
        benign_rejections=len(load.rejections))


def _check_events(report: Report, bounds: Bounds) -> None:
    """Per-event results as invariants: liveness, recovery bounds, clean stops."""
    outcomes = report.outcomes

    def none_with_problems() -> str:
        bad = [o.line() for o in outcomes if o.problems]
        assert not bad, "\n".join(bad)
        return f"{len(outcomes)} events"

    report.check(f"every event: >= 3 of 4 connected commit within {bounds.advance_s:g} s, "
                 f"2|2 commits nothing, RPC within {bounds.rpc_s:g} s, caught up within "
                 f"{bounds.catch_up_s:g} s, SIGTERM exits 0", none_with_problems)


def _check_no_double_signing(urls: Sequence[str], runner: Runner) -> str:
    """checks.check_no_double_signing over every node, with what the runner read before
    each crash; the number of signed messages compared."""
    ledger = checks.check_no_double_signing(urls, runner.homes, runner.ledger)
    return f"{len(ledger.digests)} signed messages, sources {dict(ledger.sources)}"


def _check_load(load: BankLoad, acks: Acks) -> str:
    odd = load.unexpected_rejections()
    assert not odd, f"unexpected rejections: {odd[:5]}"
    assert not acks.failed_receipts, f"failed receipts: {list(acks.failed_receipts.items())[:5]}"
    errors = load.errors + acks.errors
    assert not errors, f"load thread errors: {errors}"
    assert acks.committed, "no tx of the load was acknowledged"
    return f"{len(load.rejections)} benign rejections"


def _check_memory(report: Report, rss: RssSampler, bounds: Bounds) -> None:
    series = rss.series
    peak = {i: max((max(s) for (j, _), s in series.items() if j == i and s), default=0)
            for i in range(rss.cluster.n)}
    report.figures["rss_max_mib"] = {i: round(kib / MIB) for i, kib in peak.items()}
    longest = max(series.items(), key=lambda kv: len(kv[1]), default=None)
    if longest is not None:
        (node, _), samples = longest
        report.figures["rss_growth_mib_longest_run"] = (
            f"node {node}: {checks.rss_growth_kib(samples) / MIB:+.1f} over "
            f"{len(samples)} samples")
    report.check(f"memory: RSS under {bounds.rss_mib} MiB, no run grew over "
                 f"{bounds.rss_growth_mib} MiB",
                 lambda: checks.check_rss(series, bounds.rss_mib * MIB,
                                          bounds.rss_growth_mib * MIB))


# --- command line -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run a scenario file and print its figures; exit 1 when an invariant failed, 2 for a
    bad description."""
    parser = argparse.ArgumentParser(prog="reliability", description=main.__doc__)
    parser.add_argument("scenario", type=Path, help="a testnet description (TOML)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds of random faults (overrides schedule.random)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where node homes and logs go (default: a new temp dir)")
    args = parser.parse_args(argv)
    try:
        scenario = load_scenario(args.scenario)
    except (OSError, ScenarioError) as exc:
        print(f"reliability: {exc}", file=sys.stderr)
        return 2
    workdir = args.workdir
    if workdir is None:
        import tempfile
        workdir = Path(tempfile.mkdtemp(prefix=f"gannet-{scenario.name}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"logs in {workdir}", flush=True)
    report = run_scenario(scenario, workdir, args.seed, args.duration,
                          log=lambda line: print(line, flush=True))
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
