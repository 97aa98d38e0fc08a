"""Stateful property tests of the token economy: random txs and blocks through the real rules.

Hypothesis drives `tests.consensus.economy_model.EconomyChain` (compressed
genesis, no headers or signatures) with blocks of random txs, quiet stretches
of background traffic, validators going offline, and blocks carrying unsigned
double-sign evidence (real `DuplicateVoteEvidence` records; the slashing rule
reads the offence from them, signatures are checked only by `apply_block`).
Every block checks each phase and then the whole committed books (see the
model's docstring); a failure names the block, the invariant and the txs.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from consensus import distribution, staking
from tests.consensus.economy_model import (
    KINDS,
    PROFILE_CHANGES,
    BlockInput,
    EconomyChain,
    EconomyInvariantBroken,
    Intent,
    random_intent,
)

intents = st.lists(st.builds(
    Intent,
    kind=st.integers(0, len(KINDS) - 1),
    who=st.integers(0, 7),
    pick=st.integers(0, 7),
    permille=st.sampled_from((0, 1, 10, 100, 500, 999, 1000)) | st.integers(0, 1000),
    variant=st.integers(0, 3),
), max_size=6)


class EconomyMachine(RuleBasedStateMachine):
    """Blocks of random txs, quiet stretches, outages and double signs over the real rules."""

    blocks_applied = 0  # across every example of a run

    @initialize(profile=st.integers(0, len(PROFILE_CHANGES) - 1))
    def start(self, profile: int) -> None:
        self.chain = EconomyChain(profile)

    @rule(txs=intents, absent=st.frozensets(st.integers(0, 6), max_size=2),
          proposer=st.integers(0, 7))
    def block(self, txs: list[Intent], absent: frozenset[int], proposer: int) -> None:
        self.chain.apply_block(BlockInput(intents=tuple(txs), absent=absent, proposer=proposer))
        EconomyMachine.blocks_applied += 1

    @rule(count=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
    def quiet_blocks(self, count: int, seed: int) -> None:
        self.chain.apply_quiet_blocks(count, seed)
        EconomyMachine.blocks_applied += count

    @rule(pick=st.integers(0, 6))
    def toggle_offline(self, pick: int) -> None:
        validators = self.chain.validators()
        self.chain.offline ^= {validators[pick % len(validators)]}

    @precondition(lambda self: sum(staking.is_candidate(v)
                                   for v in self.chain.books.validators.values()) >= 3)
    @rule(member=st.integers(0, 6), age=st.integers(0, 40), txs=intents)
    def double_sign(self, member: int, age: int, txs: list[Intent]) -> None:
        self.chain.apply_block(BlockInput(intents=tuple(txs), evidence=((member, age),)))
        EconomyMachine.blocks_applied += 1


def run_machine(max_examples: int, steps: int) -> int:
    """Run the machine derandomized; the blocks it applied."""
    EconomyMachine.blocks_applied = 0
    run_state_machine_as_test(EconomyMachine, settings=settings(
        max_examples=max_examples, stateful_step_count=steps, deadline=None,
        derandomize=True, database=None, suppress_health_check=list(HealthCheck)))
    return EconomyMachine.blocks_applied


def test_random_blocks_keep_the_books() -> None:
    assert run_machine(max_examples=80, steps=50) >= 10_000


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_random_blocks_keep_the_books_soak() -> None:
    assert run_machine(max_examples=600, steps=50) >= 100_000


# --- every mechanism fires, and the books catch a broken rule ------------------------


def drive(chain: EconomyChain, blocks: int, seed: int) -> None:
    """`blocks` blocks of seeded traffic with outages and now and then a double sign."""
    rng = random.Random(seed)
    while chain.height < blocks:
        chain.apply_quiet_blocks(rng.randrange(1, 12), rng.randrange(2**32))
        evidence = ((rng.randrange(7), rng.randrange(40)),) if rng.random() < 0.04 else ()
        chain.apply_block(BlockInput(intents=tuple(random_intent(rng) for _ in range(8)),
                                     evidence=evidence, proposer=rng.randrange(8)))
        if rng.random() < 0.25:
            validators = chain.validators()
            chain.offline ^= {validators[rng.randrange(len(validators))]}


MECHANISMS = ("unbondings_paid", "downtime_jails", "double_signs", "bought_back",
              "halved_emission", "capped_emission", "validators_created", "set_changes",
              "epochs_with_licences", "epochs_with_queens")


@pytest.mark.parametrize("profile", [0, 1])
def test_every_mechanism_and_tx_kind_fires_within_a_few_hundred_blocks(profile: int) -> None:
    chain = EconomyChain(profile)
    drive(chain, 400, seed=profile)
    missing = [m for m in MECHANISMS if not chain.stats[m]]
    bodies = ("Transfer", "LicenceTransfer", "CreateValidator", "EditValidator", "Delegate",
              "Undelegate", "Redelegate", "WithdrawRewards", "Unjail", "Swap", "AddLiquidity",
              "RemoveLiquidity", "IssueStable", "PayRevenue")
    missing += [f"{b}:{outcome}" for b in bodies for outcome in ("ok", "failed")
                if not chain.stats[f"{b}:{outcome}"]]
    assert not missing, f"never happened in 400 blocks: {missing}"
    ok = sum(n for k, n in chain.stats.items() if k.endswith(":ok"))
    failed = sum(n for k, n in chain.stats.items() if k.endswith(":failed"))
    assert ok > failed


def test_the_books_catch_an_unbonding_paid_one_unit_short(monkeypatch) -> None:
    real_move = staking.move

    def short_move(state, source, target, gpu=0, stable=0):
        short = source == staking.UNBONDING and gpu > 0
        real_move(state, source, target, gpu=gpu - short, stable=stable)

    monkeypatch.setattr(staking, "move", short_move)
    with pytest.raises(EconomyInvariantBroken, match="matured unbondings pay their balance"):
        drive(EconomyChain(1), 200, seed=1)


def test_the_books_catch_emission_off_the_schedule(monkeypatch) -> None:
    real = distribution.block_emission
    monkeypatch.setattr(distribution, "block_emission",
                        lambda tok, first, h, minted_before: real(tok, first, h, minted_before)
                        + (h == 5))
    with pytest.raises(EconomyInvariantBroken, match="block 5: block mints the schedule"):
        drive(EconomyChain(0), 10, seed=0)


def test_the_books_catch_a_slash_that_spares_unbonding_entries(monkeypatch) -> None:
    from consensus import slashing
    monkeypatch.setattr(slashing, "slash_unbondings", lambda *args: 0)
    with pytest.raises(EconomyInvariantBroken, match="slash burns what it removes"):
        drive(EconomyChain(1), 400, seed=1)
