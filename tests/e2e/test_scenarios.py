"""Testnet descriptions, the bank workload and the reliability scenarios.

The fast tests check the description parser, the seeded plan, the bank's
planned transfers and replay, and the log and memory checks on made-up input.
`test_ci_scenario` plays tests/e2e/scenarios/ci.toml (every kind of fault on a
loaded 4-validator testnet, ~40 s); `test_soak` (-m slow) plays soak.toml:
random faults for GANNET_SOAK_S seconds (default 3600) and prints its figures.
`GANNET_SCENARIO_SEED` replays a run.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.e2e import checks
from tests.e2e.bank import Bank, BankError, _replay
from tests.e2e.cluster import Cluster
from tests.e2e.scenario import (
    KINDS,
    ScenarioError,
    load_scenario,
    parse_scenario,
    plan,
    run_scenario,
)

SCENARIOS = Path(__file__).parent / "scenarios"
SOAK_S = float(os.environ.get("GANNET_SOAK_S", "3600"))
CHAIN_ID = "gannet-test"


# --- descriptions and plans ----------------------------------------------------------------


def test_the_shipped_descriptions_parse() -> None:
    ci = load_scenario(SCENARIOS / "ci.toml")
    soak = load_scenario(SCENARIOS / "soak.toml")
    assert {e.kind for e in ci.events} == set(KINDS), "the CI scenario misses a kind"
    assert soak.random is not None and soak.random.duration_s == 3600
    assert {k for k, _ in soak.random.weights} == set(KINDS)


@pytest.mark.parametrize(("data", "message"), [
    ({"name": "x", "colour": 1}, "unknown keys"),
    ({"name": "x", "load": {"acounts": 3}}, "unknown keys"),
    ({"name": "x", "schedule": {"events": [{"kind": "explode", "duration_s": 1}]}},
     "unknown kind"),
    ({"name": "x", "schedule": {"events": [{"kind": "kill", "duration_s": 0}]}},
     "duration_s > 0"),
    ({"name": "x", "schedule": {"events": [{"kind": "kill"}]}}, "duration_s"),
    ({"name": "x", "schedule": {"gap_s": [2, 1]}}, "low <= high"),
    ({"name": "x", "schedule": {"random": {"weights": {"kill": 1}}}}, "exactly one"),
    ({"name": "x", "schedule": {"random": {"weights": {"kill": 0}, "count": 3}}},
     "positive integers"),
    ({"name": "x", "schedule": {"events": [{"kind": "kill", "duration_s": 1}],
                                "random": {"weights": {"kill": 1}, "count": 3}}}, "not both"),
    ({"name": "x", "nodes": 3}, "at least 4"),
    ({"seed": 1}, "name"),
])
def test_a_malformed_description_is_refused_with_its_problem(data: dict, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(data)


def test_a_bad_toml_file_is_a_scenario_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("name = \n")
    with pytest.raises(ScenarioError, match=r"bad\.toml"):
        load_scenario(path)


def test_the_plan_is_a_function_of_the_seed() -> None:
    ci = load_scenario(SCENARIOS / "ci.toml")
    assert list(plan(ci, 7)) == list(plan(ci, 7))
    assert sum(e.repeat for e in ci.events) == len(list(plan(ci, 7)))
    soak = load_scenario(SCENARIOS / "soak.toml")
    first = list(itertools.islice(plan(soak, 7), 50))
    assert first == list(itertools.islice(plan(soak, 7), 50))
    assert first != list(itertools.islice(plan(soak, 8), 50))


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_drawn_events_have_the_shape_of_their_kind(seed: int) -> None:
    soak = load_scenario(SCENARIOS / "soak.toml")
    for event in itertools.islice(plan(soak, seed), 40):
        low, high = soak.gap_s
        assert low <= event.gap_s <= high
        if event.kind == "pause":
            assert event.duration_s == soak.random.pause_s
        else:
            assert soak.random.fault_s[0] <= event.duration_s <= soak.random.fault_s[1]
        if event.kind in ("kill", "pause", "restart", "partition_1_3"):
            assert len(event.nodes) == 1 and 0 <= event.nodes[0] < 4
        else:
            assert event.nodes == (0, 1, 2, 3)
        if event.kind == "partition_1_3":
            assert event.groups[0] == event.nodes
            assert sorted(event.groups[0] + event.groups[1]) == [0, 1, 2, 3]
        if event.kind == "partition_2_2":
            assert [len(g) for g in event.groups] == [2, 2]
            assert sorted(event.groups[0] + event.groups[1]) == [0, 1, 2, 3]
        if event.kind == "ring":
            assert sorted(event.groups[0]) == [0, 1, 2, 3]
        if event.kind.startswith("drop"):
            assert event.fraction == soak.random.drop_fraction


def test_a_count_schedule_ends_and_given_nodes_are_kept() -> None:
    scenario = parse_scenario({"name": "x", "schedule": {
        "random": {"weights": {"kill": 1, "ring": 2}, "count": 5}}})
    assert len(list(plan(scenario, 1))) == 5
    fixed = parse_scenario({"name": "x", "schedule": {"events": [
        {"kind": "kill", "duration_s": 1, "node": 2},
        {"kind": "partition_2_2", "duration_s": 1, "groups": [[3, 0], [1, 2]]},
        {"kind": "ring", "duration_s": 1, "groups": [[2, 0, 3, 1]]}]}})
    kill, split, ring = plan(fixed, 1)
    assert kill.nodes == (2,)
    assert split.groups == ((0, 3), (1, 2))
    assert ring.groups == ((2, 0, 3, 1),)


# --- the bank ---------------------------------------------------------------------------------


def make_bank(seed: int = 3, accounts: int = 5) -> Bank:
    return Bank(seed, accounts, funding=10**9, amount_max=1000, fee=10, chain_id=CHAIN_ID)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**64), sender=st.integers(0, 4), nonce=st.integers(0, 10**6))
def test_a_planned_transfer_is_fixed_by_seed_account_and_nonce(seed: int, sender: int,
                                                                nonce: int) -> None:
    bank = make_bank(seed)
    t = bank.planned(sender, nonce)
    assert t == bank.planned(sender, nonce)
    assert t.to != sender and 0 <= t.to < 5 and 1 <= t.amount <= 1000
    assert bank.raw(sender, nonce) == bank.raw(sender, nonce)  # a resend is the same tx


def test_bank_keys_come_from_the_seed() -> None:
    assert make_bank(3).addresses == make_bank(3).addresses
    assert len(set(make_bank(3).addresses + make_bank(4).addresses)) == 10


def chain_tx(bank: Bank, sender: int, nonce: int, amount: int | None = None) -> dict:
    t = bank.planned(sender, nonce)
    return {"from": bank.addresses[sender], "nonce": nonce, "to": bank.addresses[t.to],
            "amount": str(t.amount if amount is None else amount)}


def test_the_replay_moves_money_only_for_ok_receipts_and_keeps_the_total() -> None:
    bank = make_bank()
    txs = [chain_tx(bank, 0, 0), chain_tx(bank, 1, 0), chain_tx(bank, 0, 1)]
    receipts = [{"status": "ok", "fee_paid": "10"}, {"status": "failed", "fee_paid": "10"},
                {"status": "ok", "fee_paid": "10"}]
    balances, fees = _replay(bank, txs, receipts)
    assert fees == 30 and sum(balances) + fees == bank.total
    paid = bank.planned(0, 0).amount + bank.planned(0, 1).amount
    assert balances[0] == bank.funding - 20 - paid
    assert balances[1] == bank.funding - 10 + sum(
        bank.planned(0, n).amount for n in (0, 1) if bank.planned(0, n).to == 1)


def test_the_replay_refuses_a_transfer_that_was_never_planned() -> None:
    bank = make_bank()
    forged = chain_tx(bank, 2, 0, amount=bank.planned(2, 0).amount + 1)
    with pytest.raises(BankError, match="never planned"):
        _replay(bank, [forged], [{"status": "ok", "fee_paid": "10"}])


# --- logs and memory ----------------------------------------------------------------------------


def test_the_log_scan_finds_tracebacks_and_error_lines(tmp_path: Path) -> None:
    clean = tmp_path / "node0.log"
    clean.write_text("2026-12-04T10:00:00.000 INFO node committed height=3\n")
    dirty = tmp_path / "node1.log"
    dirty.write_text("x INFO a\nTraceback (most recent call last):\n  File ...\n"
                     "2026-12-04T10:00:00.000 ERROR p2p p2p task failed\n"
                     "Task exception was never retrieved\n")
    assert checks.uncaught_in_logs([clean, tmp_path / "missing.log"]) == []
    found = checks.uncaught_in_logs([clean, dirty])
    assert [f.split(":")[1] for f in found] == ["2", "4", "5"]


def test_rss_is_read_from_proc_and_gone_processes_read_none() -> None:
    assert checks.read_rss_kib(os.getpid()) > 1000
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert checks.read_rss_kib(proc.pid) is None


def test_the_memory_check_catches_a_high_peak_and_a_growing_run() -> None:
    mib = checks.KIB
    flat = [100 * mib + (k % 3) for k in range(60)]
    growing = [100 * mib + k * mib for k in range(60)]
    checks.check_rss({(0, 1): flat}, bound_kib=600 * mib, growth_bound_kib=10 * mib)
    assert checks.rss_growth_kib(growing) == 40 * mib
    with pytest.raises(AssertionError, match="grew more than 10 MiB"):
        checks.check_rss({(0, 1): flat, (1, 2): growing}, 600 * mib, 10 * mib)
    with pytest.raises(AssertionError, match="above 150 MiB"):
        checks.check_rss({(1, 2): growing}, 150 * mib, 100 * mib)
    checks.check_rss({(1, 2): growing[:20]}, 600 * mib, 10 * mib)  # too short for a trend


# --- the scenarios -----------------------------------------------------------------------------


@pytest.mark.e2e
def test_a_node_stopped_while_peers_redial_it_logs_no_exception(tmp_path: Path) -> None:
    """The soak's first finding: peers redial a SIGSTOPped node (its links were cut and
    healed), give up after their handshake timeout (5 s), and the node, resumed, found
    their upgrades dead; it returned half-prepared WebSockets, which aiohttp logged as
    unhandled exceptions with tracebacks (p2p/switch.py `_on_http`)."""
    with Cluster(tmp_path, n=4, block_time_ms=200) as cluster:
        cluster.wait_height(3)
        cluster.pause(0)
        cluster.partition([[1, 2, 3], [0]])
        cluster.heal()  # the others dial node 0 again, through the proxies, and wait
        time.sleep(7)  # the fault's length: past the dialers' 5 s handshake timeout
        cluster.resume(0)
        cluster.wait_height(max(h for h in cluster.heights() if h is not None) + 2)
        checks.check_no_uncaught_exceptions(cluster)


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_ci_scenario(tmp_path: Path) -> None:
    report = run_scenario(load_scenario(SCENARIOS / "ci.toml"), tmp_path)
    print(report.summary())
    report.raise_if_failed()
    assert set(report.counts()) == set(KINDS)
    assert report.figures["txs_acknowledged"] >= 100, report.summary()


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(int(SOAK_S) + 900)
def test_soak(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if "slow" not in request.config.getoption("markexpr", "").replace("not slow", ""):
        pytest.skip("soak run: select it with -m slow")
    report = run_scenario(load_scenario(SCENARIOS / "soak.toml"), tmp_path, duration_s=SOAK_S)
    print(report.summary())
    report.raise_if_failed()
    assert len(report.outcomes) >= SOAK_S / 30, report.summary()
