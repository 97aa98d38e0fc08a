"""Proof of compute as consensus rules (consensus.compute, consensus.compute_providers).

Every block here runs the real block rules (`economy.begin_block`,
`transition.apply_tx`, `transition.end_block` with its supply invariant) over a
real genesis, with a distinct beacon per height, so each scenario also checks
that no rule creates or loses a base unit. Tiles come from the real kernel
(vm.kernels, NumPy) and proofs from vm.merkle; the "verifier" re-executes tiles
the way a committee member does.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from math import sqrt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.address import address_from_public_key
from chain.codec import encode
from chain.crypto import SigningKey
from chain.hashing import sha256
from chain.records import (
    RECEIPT_OK,
    VERDICT_FAIL,
    VERDICT_PASS,
    Attest,
    CommitResult,
    DeregisterProvider,
    Receipt,
    RegisterProvider,
    RevealedTile,
    RevealTiles,
    SignedTx,
    StakingValidator,
    SubmitJob,
    Tx,
)
from chain.state import State, module_address, staking_validator_key
from consensus import compute, compute_providers, economy, staking, transition
from consensus.compute import (
    FAULT_NO_COMMIT,
    FAULT_NO_REVEAL,
    FAULT_VERDICT,
    JOB_CHALLENGE,
    STATUS_EXPIRED,
    STATUS_FAILED,
    STATUS_PASSED,
    STATUS_REVEALED,
    STATUS_SAMPLED,
    Job,
)
from consensus.compute_providers import (
    PROVIDER_DEREGISTERING,
    PROVIDER_RELEASED,
)
from consensus.context import BlockContext
from consensus.distribution import compute_block_payouts, get_distribution_stats
from consensus.params import NetworkParams, Ratio, default_params, params_with_overrides
from consensus.supply import get_supply
from genesis.document import add_account, add_validator, new_genesis, set_stable_issuer
from genesis.state import genesis_writes
from tests.committed import commit_writes
from vm import merkle
from vm.kernels import MATMUL_I8, get_kernel
from vm.sampler import sample

CHAIN_ID = "gannet-compute-test"
SIGNATURE = bytes(64)
USER_KEYS = tuple(SigningKey.from_seed(sha256(b"compute-user-%d" % i)) for i in range(6))
USERS = tuple(address_from_public_key(k.public_key) for k in USER_KEYS)
VALIDATOR_KEYS = tuple(SigningKey.from_seed(sha256(b"compute-validator-%d" % i))
                       for i in range(4))
VALIDATORS = tuple(address_from_public_key(k.public_key) for k in VALIDATOR_KEYS)
OPERATORS = USERS[2:6]  # USERS[2 + i] operates VALIDATORS[i]
CLIENT, PROVIDER = USERS[0], USERS[1]
ALL_KEYS = {address_from_public_key(k.public_key): k for k in (*USER_KEYS, *VALIDATOR_KEYS)}
TREASURY, ESCROW, COLLATERAL, REWARDS = (
    module_address(n) for n in ("treasury", "escrow", "collateral", "rewards"))
MIN_COLLATERAL = 1_000_000
JOB_PARAMS = (160, 160, 32, 16)  # 100 tiles of 16 x 16 int32 (1 KiB each)
SEED = sha256(b"job seed")

BASE_OVERRIDES: dict[str, Any] = {
    "block": {"epoch_blocks": 1000},
    "staking": {"min_validator_stake": 1_000_000, "unbonding_period_blocks": 12,
                "evidence_max_age_blocks": 10},
    "tokenomics": {"total_supply": 10_000_000_000, "emission_first_period": 1_800_000_000,
                   "halving_period_blocks": 400, "queen_min_stake": 20_000_000,
                   "reward_lock_blocks": 15},
    "compute": {"provider_min_collateral": MIN_COLLATERAL, "challenge_size": 32,
                "challenge_commit_blocks": 5, "reveal_window_blocks": 5,
                "attest_window_blocks": 5, "max_deadline_blocks": 50},
    "fee": {"min_fee": 10},
}


def make_params(**groups: dict[str, Any]) -> NetworkParams:
    """The test network's parameters with some groups' fields overridden."""
    overrides = {g: {**BASE_OVERRIDES.get(g, {}), **groups.get(g, {})}
                 for g in {*BASE_OVERRIDES, *groups}}
    return params_with_overrides(default_params(), overrides)


def beacon_of(height: int) -> bytes:
    """The test chain's beacon at `height` (distinct per height)."""
    return sha256(b"test beacon" + height.to_bytes(8, "big"))


class Chain:
    """The real block rules over a dict of committed writes, one beacon per height."""

    def __init__(self, params: NetworkParams | None = None, queens: bool = False) -> None:
        self.params = params or make_params()
        genesis = new_genesis(CHAIN_ID, 1_700_000_000_000, self.params)
        for i, user in enumerate(USERS):
            genesis = add_account(genesis, user, 100_000_000, stable=10_000_000 if i == 0 else 0,
                                  licences=3)
        for i, key in enumerate(VALIDATOR_KEYS):
            genesis = add_account(genesis, VALIDATORS[i], 1_000_000)
            genesis = add_validator(genesis, key.public_key, 10_000_000 * (i + 2),
                                    OPERATORS[i], f"v{i}", commission_bps=1000,
                                    queen=queens and i >= 2)
        genesis = set_stable_issuer(genesis, USERS[5])
        self.first_height = genesis.initial_height
        self.committed = {k: v for k, v in genesis_writes(genesis)[1].items() if v}
        self.height = self.first_height - 1

    @property
    def state(self) -> State:
        """A read view of committed state."""
        return State(self.committed.get)

    def context(self, height: int) -> BlockContext:
        return BlockContext(chain_id=CHAIN_ID, height=height, fee_recipient=OPERATORS[0],
                            min_fee=self.params.fee.min_fee, params=self.params,
                            first_height=self.first_height, beacon=beacon_of(height))

    def block(self, txs: list[tuple[bytes, Any]] = (), before_end=None) -> list[Receipt]:
        """Apply one block of (sender, body) txs; commit its writes."""
        h = self.height + 1
        state = State(self.committed.get)
        ctx = self.context(h)
        signers = (None if h == self.first_height else
                   frozenset(v.address for v in state.get_validator_set().validators))
        economy.begin_block(state, ctx, signers, ())
        receipts = []
        for sender, body in txs:
            account = state.get_account(sender)
            tx = Tx(chain_id=CHAIN_ID.encode(), sender=ALL_KEYS[sender].public_key,
                    nonce=account.nonce, fee=self.params.fee.min_fee, body=body)
            receipts.append(transition.apply_tx(state, SignedTx(tx=tx, signature=SIGNATURE),
                                                ctx, verified=True, sender=sender))
        if before_end is not None:
            before_end(state)
        transition.end_block(state, ctx)
        commit_writes(self.committed, state.write_set())
        self.height = h
        return receipts

    def ok(self, sender: bytes, body: Any) -> Receipt:
        """Apply a one-tx block; the tx must succeed."""
        receipt = self.block([(sender, body)])[0]
        assert receipt.status == RECEIPT_OK, receipt.reason.decode()
        return receipt

    def fails(self, sender: bytes, body: Any, code: int, words: str = "") -> Receipt:
        """Apply a one-tx block; the tx must fail with `code` (and say `words`)."""
        receipt = self.block([(sender, body)])[0]
        assert receipt.code == code, (receipt.code, receipt.reason.decode())
        assert words in receipt.reason.decode()
        return receipt

    def run_to(self, height: int) -> None:
        """Apply empty blocks until `height` is the last applied."""
        while self.height < height:
            self.block()

    def job(self, job_id: int) -> Job:
        return compute.get_job(self.state, job_id)

    def provider(self, address: bytes = PROVIDER) -> compute_providers.Provider:
        return compute_providers.get_provider(self.state, address)

    def balance(self, address: bytes) -> tuple[int, int]:
        account = self.state.get_account(address)
        return account.gpu, account.stable


# --- tiles, proofs and the verifier ---------------------------------------------------


def honest_tiles(params: tuple[int, ...] = JOB_PARAMS, seed: bytes = SEED) -> list[bytes]:
    kernel = MATMUL_I8
    return kernel.compute(seed, kernel.validate_params(dict(zip(
        ("m", "n", "k", "tile"), params, strict=True))))


_HONEST = honest_tiles()


def corrupt(tile: bytes) -> bytes:
    """A tile with its first byte changed."""
    return bytes([tile[0] ^ 0xFF]) + tile[1:]


def tree_levels(tiles: list[bytes]) -> list[list[bytes]]:
    """Every level of the vm.merkle tree, leaves first (to cut proofs without rehashing)."""
    level = [merkle.leaf_hash(t) for t in tiles]
    levels = [level]
    while len(level) > 1:
        upper = [merkle.node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            upper.append(level[-1])
        level = upper
        levels.append(level)
    return levels


def proof_from_levels(levels: list[list[bytes]], index: int) -> tuple[bytes, ...]:
    siblings = []
    for level in levels[:-1]:
        if index ^ 1 < len(level):
            siblings.append(level[index ^ 1])
        index //= 2
    return tuple(siblings)


def reveal(job: Job, tiles: list[bytes], indices=None) -> RevealTiles:
    """A RevealTiles body for `job`'s sampled tiles (or `indices`) with real proofs."""
    levels = tree_levels(tiles)
    chosen = job.sampled if indices is None else indices
    return RevealTiles(job=job.id, tiles=tuple(
        RevealedTile(index=i, data=tiles[i], proof=proof_from_levels(levels, i))
        for i in chosen))


def verify_job(state: State, job: Job) -> int:
    """A committee member's verdict: re-execute each revealed tile from the seed."""
    kernel, params = compute.job_kernel_params(job)
    got = compute.revealed_tiles(state, job)
    assert [i for i, _ in got] == sorted(job.sampled)
    expected = kernel.compute_tiles(job.seed, params, [i for i, _ in got])
    ok = all(kernel.tiles_match(params, e, data) for e, (_, data) in zip(expected, got,
                                                                           strict=True))
    return VERDICT_PASS if ok else VERDICT_FAIL


def attest_all(chain: Chain, job_id: int, verdict: int, members=(3, 2, 1)) -> list[Receipt]:
    """Attestations by validators `members` (the last one signs with its validator key)."""
    txs = [(OPERATORS[i], Attest(job=job_id, validator=VALIDATORS[i], verdict=verdict))
           for i in members[:-1]]
    last = members[-1]
    txs.append((VALIDATORS[last], Attest(job=job_id, validator=VALIDATORS[last],
                                         verdict=verdict)))
    return chain.block(txs)


def register(chain: Chain, who: bytes = PROVIDER, collateral: int = 2 * MIN_COLLATERAL,
             licences: int = 1) -> None:
    chain.ok(who, RegisterProvider(collateral=collateral, licences=licences, gpu=b"1x H200"))


def submit(chain: Chain, price: int = 1000, deadline_in: int = 10, seed: bytes = SEED,
           params: tuple[int, ...] = JOB_PARAMS, client: bytes = CLIENT) -> int:
    job_id = compute.get_counters(chain.state).next_job
    chain.ok(client, SubmitJob(kernel=b"matmul_i8", params=params, seed=seed, price=price,
                               deadline=chain.height + 1 + deadline_in))
    return job_id


def commit_and_sample(chain: Chain, job_id: int, tiles: list[bytes]) -> Job:
    chain.ok(PROVIDER, CommitResult(job=job_id, root=merkle.root(tiles), tiles=len(tiles)))
    chain.run_to(chain.job(job_id).sample_height)
    return chain.job(job_id)


# --- providers ------------------------------------------------------------------------


def test_register_binds_collateral_and_licences():
    chain = Chain()
    gpu_before, _ = chain.balance(PROVIDER)
    register(chain)
    provider = chain.provider()
    assert (provider.collateral, provider.licences, provider.gpu) == (
        2 * MIN_COLLATERAL, 1, b"1x H200")
    assert chain.balance(COLLATERAL)[0] == 2 * MIN_COLLATERAL
    assert chain.balance(PROVIDER)[0] == gpu_before - 2 * MIN_COLLATERAL - 10
    assert chain.state.get_account(PROVIDER).licences == 2
    assert [p.address for p in compute_providers.list_providers(chain.state)] == [PROVIDER]


def test_register_failures():
    chain = Chain()
    body = RegisterProvider(collateral=MIN_COLLATERAL - 1, licences=0, gpu=b"")
    chain.fails(PROVIDER, body, compute_providers.CODE_COLLATERAL_TOO_LOW, "below the minimum")
    chain.fails(PROVIDER, replace(body, collateral=10**12),
                compute_providers.CODE_INSUFFICIENT_GPU, "spendable")
    chain.fails(PROVIDER, replace(body, collateral=MIN_COLLATERAL, licences=4),
                compute_providers.CODE_TOO_FEW_LICENCES, "holds 3")
    register(chain)
    chain.fails(PROVIDER, replace(body, collateral=MIN_COLLATERAL),
                compute_providers.CODE_PROVIDER_EXISTS, "already")


def test_deregister_waits_for_unbonding_and_open_jobs():
    chain = Chain()
    register(chain)
    chain.fails(CLIENT, DeregisterProvider(provider=PROVIDER), compute_providers.CODE_NOT_PROVIDER)
    chain.fails(CLIENT, DeregisterProvider(provider=CLIENT),
                compute_providers.CODE_UNKNOWN_PROVIDER)
    job_id = submit(chain, deadline_in=40)
    chain.ok(PROVIDER, DeregisterProvider(provider=PROVIDER))
    due = chain.provider().release_height
    assert due == chain.height + 12
    chain.fails(PROVIDER, DeregisterProvider(provider=PROVIDER),
                compute_providers.CODE_ALREADY_DEREGISTERING)
    # no new jobs for a deregistering provider
    chain.fails(CLIENT, SubmitJob(kernel=b"matmul_i8", params=JOB_PARAMS, seed=SEED, price=1,
                                  deadline=chain.height + 5), compute.CODE_NO_PROVIDER)
    chain.run_to(due)
    assert chain.provider().status == PROVIDER_DEREGISTERING  # job still open
    gpu_before, _ = chain.balance(PROVIDER)
    job = commit_and_sample(chain, job_id, _HONEST)
    chain.ok(PROVIDER, reveal(job, _HONEST))
    attest_all(chain, job_id, VERDICT_PASS)
    provider = chain.provider()
    assert provider.status == PROVIDER_RELEASED and provider.collateral == 0
    assert chain.balance(PROVIDER)[0] == gpu_before + 2 * MIN_COLLATERAL - 2 * 10
    assert chain.state.get_account(PROVIDER).licences == 3
    assert chain.balance(COLLATERAL)[0] == 0
    register(chain)  # a released provider may register again; its figures carry over
    assert chain.provider().jobs_passed == 1


def test_deregister_without_jobs_releases_at_the_due_height():
    chain = Chain()
    register(chain)
    chain.ok(PROVIDER, DeregisterProvider(provider=PROVIDER))
    due = chain.provider().release_height
    chain.run_to(due - 1)
    assert chain.provider().status == PROVIDER_DEREGISTERING
    chain.block()
    assert chain.provider().status == PROVIDER_RELEASED


# --- submitting --------------------------------------------------------------------------


def test_submit_escrows_and_assigns():
    chain = Chain()
    register(chain)
    job_id = submit(chain, price=1234)
    job = chain.job(job_id)
    assert (job.provider, job.client, job.price, job.tiles) == (PROVIDER, CLIENT, 1234, 100)
    assert chain.balance(ESCROW)[1] == 1234
    assert chain.balance(CLIENT)[1] == 10_000_000 - 1234
    assert [j.id for j in compute.provider_open_jobs(chain.state, PROVIDER)] == [job_id]


def test_submit_failures():
    chain = Chain()
    body = SubmitJob(kernel=b"matmul_i8", params=JOB_PARAMS, seed=SEED, price=10, deadline=5)
    chain.fails(CLIENT, body, compute.CODE_NO_PROVIDER, "no eligible provider")
    register(chain, who=CLIENT)  # a client is never assigned its own job
    chain.fails(CLIENT, replace(body, deadline=chain.height + 3), compute.CODE_NO_PROVIDER)
    register(chain)
    escrow = chain.balance(ESCROW)
    d = chain.height + 3
    cases = [
        (replace(body, kernel=b"nope"), compute.CODE_UNKNOWN_KERNEL, "unknown kernel"),
        (replace(body, kernel=b"\xff"), compute.CODE_UNKNOWN_KERNEL, "unknown kernel"),
        (replace(body, params=(160, 160, 32)), compute.CODE_BAD_PARAMS, "takes 4 parameters"),
        (replace(body, params=(160, 160, 32, 15)), compute.CODE_BAD_PARAMS, "must divide"),
        (replace(body, params=(16384, 16384, 1, 16)), compute.CODE_JOB_TOO_LARGE,
         "job too large to reveal"),
        (replace(body, price=0), compute.CODE_ZERO_PRICE, "positive"),
        (replace(body, price=10**9), compute.CODE_INSUFFICIENT_STABLE, "insufficient stable"),
        (replace(body, deadline=0), compute.CODE_BAD_DEADLINE, "deadline"),
    ]
    for case, code, words in cases:
        chain.fails(CLIENT, replace(case, deadline=case.deadline and d), code, words)
        d += 1
    h = chain.height + 1
    chain.fails(CLIENT, replace(body, deadline=h), compute.CODE_BAD_DEADLINE)
    chain.fails(CLIENT, replace(body, deadline=chain.height + 52), compute.CODE_BAD_DEADLINE)
    assert chain.balance(ESCROW) == escrow


def test_the_largest_reveal_fits_the_size_estimate():
    params = MATMUL_I8.validate_params({"m": 1024, "n": 1024, "k": 1, "tile": 16})
    k = 44
    size = MATMUL_I8.tile_bytes(params)
    tile = RevealedTile(index=2**32 - 1, data=bytes(size), proof=(bytes(32),) * 12)
    body = RevealTiles(job=2**64 - 1, tiles=(tile,) * k)
    tx = SignedTx(tx=Tx(chain_id=b"x" * 64, sender=bytes(32), nonce=2**64 - 1, fee=2**64 - 1,
                        body=body), signature=bytes(64))
    assert len(encode(tx)) <= compute.compute_reveal_size(MATMUL_I8, params, k)
    assert compute.compute_reveal_size(MATMUL_I8, params, k) <= NetworkParams().block.max_tx_bytes


def test_assignment_spreads_over_eligible_providers():
    chain = Chain()
    for who in USERS[1:4]:
        register(chain, who=who)
    counts: dict[bytes, int] = {}
    for _ in range(30):
        job = chain.job(submit(chain, price=1))
        counts[job.provider] = counts.get(job.provider, 0) + 1
    assert set(counts) == set(USERS[1:4])


# --- the honest cycle ------------------------------------------------------------------


def test_honest_cycle_pays_the_treasury_and_credits_the_provider():
    chain = Chain()
    register(chain)
    treasury = chain.balance(TREASURY)[1]
    job_id = submit(chain, price=5000)
    chain.ok(PROVIDER, CommitResult(job=job_id, root=merkle.root(_HONEST), tiles=100))
    job = chain.job(job_id)
    assert job.sample_height == job.commit_height + 2
    chain.run_to(job.sample_height - 1)
    assert chain.job(job_id).sampled == ()
    chain.block()
    job = chain.job(job_id)
    k = 44
    assert job.status == STATUS_SAMPLED
    assert job.sampled == sample(beacon_of(job.sample_height), job_id.to_bytes(8, "big"),
                                 100, k)
    # a reveal split over two txs
    chain.ok(PROVIDER, reveal(job, _HONEST, job.sampled[:20]))
    assert chain.job(job_id).status == STATUS_SAMPLED
    chain.ok(PROVIDER, reveal(job, _HONEST, job.sampled[20:]))
    job = chain.job(job_id)
    assert job.status == STATUS_REVEALED
    assert [m.validator for m in job.committee] == sorted(VALIDATORS)
    assert {j.id for j in compute.jobs_awaiting_attestation(chain.state, VALIDATORS[0])} == {
        job_id}
    assert verify_job(chain.state, job) == VERDICT_PASS
    attest_all(chain, job_id, VERDICT_PASS, members=(3, 2))  # 90M of 140M: not yet
    assert chain.job(job_id).status == STATUS_REVEALED
    chain.ok(VALIDATORS[1], Attest(job=job_id, validator=VALIDATORS[1], verdict=VERDICT_PASS))
    job = chain.job(job_id)
    assert job.status == STATUS_PASSED and job.verdict == VERDICT_PASS
    assert chain.balance(TREASURY)[1] == treasury + 5000
    assert chain.balance(ESCROW)[1] == 0
    provider = chain.provider()
    assert (provider.credit_total, provider.credit_epoch, provider.jobs_passed) == (100, 100, 1)
    assert provider.open_jobs == ()
    # a late attestation inside the window is still taken
    chain.ok(OPERATORS[0], Attest(job=job_id, validator=VALIDATORS[0], verdict=VERDICT_FAIL))
    assert compute.jobs_awaiting_attestation(chain.state, VALIDATORS[0]) == []


def test_committee_penalty_is_exact():
    chain = Chain()
    register(chain)
    job_id = submit(chain)
    job = commit_and_sample(chain, job_id, _HONEST)
    chain.ok(PROVIDER, reveal(job, _HONEST))
    # V3, V2, V1 pass (settles); V0 says FAIL: against the verdict. Then nobody else.
    attest_all(chain, job_id, VERDICT_PASS, members=(3, 2, 1))
    chain.ok(OPERATORS[0], Attest(job=job_id, validator=VALIDATORS[0], verdict=VERDICT_FAIL))
    deadline = chain.job(job_id).attest_deadline
    chain.run_to(deadline - 1)
    seen: dict[str, Any] = {}

    def snapshot(state: State) -> None:
        seen["rewards"] = {v: staking.get_validator(state, v).operator_rewards
                           for v in VALIDATORS}
        seen["burned"] = get_supply(state).burned

    chain.block(before_end=snapshot)
    job = chain.job(job_id)
    want = Ratio(1, 100).floor_mul(seen["rewards"][VALIDATORS[0]])
    assert want > 0
    assert job.closed == 1 and job.penalties == want
    assert get_supply(chain.state).burned - seen["burned"] == want
    assert compute.get_revealed_tile(chain.state, job_id, job.sampled[0]) is None
    chain.fails(OPERATORS[0], Attest(job=job_id, validator=VALIDATORS[0], verdict=0),
                compute.CODE_ATTEST_CLOSED)


def test_penalise_member_burns_a_fraction_of_operator_rewards():
    chain = Chain()
    state = chain.state
    address = VALIDATORS[2]
    validator: StakingValidator = staking.get_validator(state, address)
    state.put(staking_validator_key(address), replace(validator, operator_rewards=12_345))
    from consensus import supply

    supply.mint(state, REWARDS, 12_345)
    ctx = chain.context(5)
    assert compute.penalise_member(state, ctx, address) == 123
    assert staking.get_validator(state, address).operator_rewards == 12_222
    assert get_supply(state).burned == 123
    assert compute.penalise_member(state, ctx, bytes(20)) == 0


def test_expired_job_is_refunded_without_slash_and_silent_members_penalised():
    chain = Chain()
    register(chain)
    job_id = submit(chain, price=700)
    job = commit_and_sample(chain, job_id, _HONEST)
    chain.ok(PROVIDER, reveal(job, _HONEST))
    attest_all(chain, job_id, VERDICT_PASS, members=(3, 0))  # 70M of 140M
    chain.run_to(chain.job(job_id).attest_deadline)
    job = chain.job(job_id)
    assert job.status == STATUS_EXPIRED and job.slashed == 0
    assert chain.balance(CLIENT)[1] == 10_000_000
    assert chain.provider().collateral == 2 * MIN_COLLATERAL
    assert compute.is_penalised(job, VALIDATORS[1]) and not compute.is_penalised(
        job, VALIDATORS[3])


# --- cheating and timeouts ----------------------------------------------------------------


def test_cheating_provider_is_caught_slashed_and_the_client_refunded():
    chain = Chain()
    register(chain)
    job_id = submit(chain, price=900)
    bad = [corrupt(t) for t in _HONEST]
    job = commit_and_sample(chain, job_id, bad)
    chain.ok(PROVIDER, reveal(job, bad))  # proofs are fine: the root commits to bad tiles
    job = chain.job(job_id)
    assert verify_job(chain.state, job) == VERDICT_FAIL
    burned = get_supply(chain.state).burned
    attest_all(chain, job_id, VERDICT_FAIL)
    job = chain.job(job_id)
    assert (job.status, job.fault, job.verdict) == (STATUS_FAILED, FAULT_VERDICT, VERDICT_FAIL)
    slash = 2 * MIN_COLLATERAL // 10
    assert job.slashed == slash
    assert get_supply(chain.state).burned - burned >= slash
    provider = chain.provider()
    assert (provider.collateral, provider.jobs_failed, provider.slashed_total) == (
        2 * MIN_COLLATERAL - slash, 1, slash)
    assert chain.balance(CLIENT)[1] == 10_000_000
    assert chain.balance(COLLATERAL)[0] == 2 * MIN_COLLATERAL - slash


def test_missing_commit_fails_at_the_deadline():
    chain = Chain()
    register(chain)
    job_id = submit(chain, price=300, deadline_in=3)
    deadline = chain.job(job_id).deadline
    chain.run_to(deadline - 1)
    assert chain.job(job_id).status == compute.STATUS_ASSIGNED
    chain.block()
    job = chain.job(job_id)
    assert (job.status, job.fault) == (STATUS_FAILED, FAULT_NO_COMMIT)
    assert chain.balance(CLIENT)[1] == 10_000_000
    assert chain.provider().collateral == 2 * MIN_COLLATERAL * 9 // 10
    chain.fails(PROVIDER, CommitResult(job=job_id, root=merkle.root(_HONEST), tiles=100),
                compute.CODE_COMMIT_LATE, "late")


def test_missing_reveal_fails_at_the_window_end_and_late_reveals_are_refused():
    chain = Chain()
    register(chain)
    job_id = submit(chain)
    job = commit_and_sample(chain, job_id, _HONEST)
    chain.ok(PROVIDER, reveal(job, _HONEST, job.sampled[:5]))  # only part of it
    chain.run_to(job.reveal_deadline)
    job = chain.job(job_id)
    assert (job.status, job.fault) == (STATUS_FAILED, FAULT_NO_REVEAL)
    assert job.slashed == 2 * MIN_COLLATERAL // 10
    chain.fails(PROVIDER, reveal(job, _HONEST, job.sampled[5:]), compute.CODE_REVEAL_LATE,
                "late")


def test_commit_failures():
    chain = Chain()
    register(chain)
    register(chain, who=USERS[2])
    job_id = submit(chain, deadline_in=20)
    job = chain.job(job_id)
    other = USERS[2] if job.provider == PROVIDER else PROVIDER
    body = CommitResult(job=job_id, root=merkle.root(_HONEST), tiles=100)
    chain.fails(job.provider, replace(body, job=99), compute.CODE_UNKNOWN_JOB)
    chain.fails(other, body, compute.CODE_NOT_ASSIGNED)
    chain.fails(job.provider, replace(body, tiles=99), compute.CODE_WRONG_TILE_COUNT, "100")
    chain.ok(job.provider, body)
    chain.fails(job.provider, body, compute.CODE_NOT_AWAITING_COMMIT)


def test_bad_reveals_are_refused_with_reasons():
    chain = Chain(make_params(compute={"reveal_window_blocks": 30}))
    register(chain)
    job_a = submit(chain)
    other_seed = sha256(b"another seed")
    other_tiles = honest_tiles(seed=other_seed)
    job_b = submit(chain, seed=other_seed)
    chain.fails(PROVIDER, reveal(chain.job(job_a), _HONEST, (0,)), compute.CODE_NOT_SAMPLED_YET)
    chain.ok(PROVIDER, CommitResult(job=job_a, root=merkle.root(_HONEST), tiles=100))
    chain.ok(PROVIDER, CommitResult(job=job_b, root=merkle.root(other_tiles), tiles=100))
    chain.run_to(chain.job(job_b).sample_height)
    a, b = chain.job(job_a), chain.job(job_b)
    first = a.sampled[0]
    unsampled = next(i for i in range(100) if i not in a.sampled)
    good = reveal(a, _HONEST, (first,)).tiles[0]
    levels = tree_levels(_HONEST)
    cases = [
        (replace(good, proof=proof_from_levels(levels, a.sampled[1])), compute.CODE_BAD_PROOF,
         "wrong proof"),
        (replace(good, data=good.data[:-4]), compute.CODE_WRONG_TILE_SIZE, "wrong size"),
        (replace(good, data=corrupt(good.data)), compute.CODE_BAD_PROOF, "wrong proof"),
        (reveal(a, _HONEST, (unsampled,)).tiles[0], compute.CODE_TILE_NOT_SAMPLED,
         "not sampled"),
    ]
    for tile, code, words in cases:
        # the bad tile spoils a tx that also carries a good one
        chain.fails(PROVIDER, RevealTiles(job=job_a, tiles=(reveal(a, _HONEST, (a.sampled[2],))
                                                            .tiles[0], tile)), code, words)
    assert chain.job(job_a).revealed == ()
    chain.fails(PROVIDER, RevealTiles(job=job_a, tiles=()), compute.CODE_EMPTY_REVEAL)
    chain.fails(USERS[2], RevealTiles(job=job_a, tiles=(good,)), compute.CODE_NOT_ASSIGNED)
    chain.fails(PROVIDER, RevealTiles(job=job_a, tiles=(good, good)),
                compute.CODE_TILE_ALREADY_REVEALED)
    chain.ok(PROVIDER, RevealTiles(job=job_a, tiles=(good,)))
    assert compute.get_revealed_tile(chain.state, job_a, first) == _HONEST[first]
    chain.fails(PROVIDER, RevealTiles(job=job_a, tiles=(good,)),
                compute.CODE_TILE_ALREADY_REVEALED, "already revealed")
    # job A's revealed tiles, with A's proofs, at indices job B sampled: never count for B
    replay = reveal(a, _HONEST, b.sampled[:3])
    chain.fails(PROVIDER, replace(replay, job=job_b), compute.CODE_BAD_PROOF)
    assert chain.job(job_b).revealed == ()


def test_attest_failures():
    chain = Chain(make_params(compute={"attest_window_blocks": 30}))
    register(chain)
    job_id = submit(chain)
    attest = Attest(job=job_id, validator=VALIDATORS[0], verdict=VERDICT_PASS)
    chain.fails(OPERATORS[0], attest, compute.CODE_NOT_REVEALED)
    job = commit_and_sample(chain, job_id, _HONEST)
    chain.ok(PROVIDER, reveal(job, _HONEST))
    chain.fails(OPERATORS[0], replace(attest, job=77), compute.CODE_UNKNOWN_JOB)
    chain.fails(OPERATORS[0], replace(attest, verdict=2), compute.CODE_BAD_VERDICT)
    chain.fails(OPERATORS[0], replace(attest, validator=USERS[0]), compute.CODE_NOT_COMMITTEE)
    chain.fails(OPERATORS[1], attest, compute.CODE_NOT_MEMBER_SIGNER)
    chain.ok(OPERATORS[0], attest)
    chain.fails(VALIDATORS[0], attest, compute.CODE_ALREADY_ATTESTED)
    chain.run_to(chain.job(job_id).attest_deadline)
    chain.fails(OPERATORS[1], replace(attest, validator=VALIDATORS[1]),
                compute.CODE_ATTEST_CLOSED)


def test_committee_is_the_queens_when_there_are_some():
    chain = Chain(queens=True)
    chain.block()  # the epoch snapshot picks the queens
    register(chain)
    job_id = submit(chain)
    job = commit_and_sample(chain, job_id, _HONEST)
    chain.ok(PROVIDER, reveal(job, _HONEST))
    job = chain.job(job_id)
    queens = sorted(VALIDATORS[2:])
    assert [m.validator for m in job.committee] == queens
    assert [m.power for m in job.committee] == [
        staking.get_validator(chain.state, v).tokens for v in queens]
    chain.fails(OPERATORS[0], Attest(job=job_id, validator=VALIDATORS[0], verdict=1),
                compute.CODE_NOT_COMMITTEE)
    attest_all(chain, job_id, VERDICT_PASS, members=(3, 2))
    assert chain.job(job_id).status == STATUS_PASSED


# --- availability challenges and the providers' emission share -----------------------------


def run_challenge(chain: Chain, who: bytes, honest: bool) -> Job:
    """Find the provider's challenge of this epoch and run it (commit, reveal, attest)."""
    open_jobs = compute.provider_open_jobs(chain.state, who)
    job = next(j for j in open_jobs if j.kind == JOB_CHALLENGE)
    kernel, params = compute.job_kernel_params(job)
    tiles = kernel.compute(job.seed, params)
    if not honest:
        return job
    chain.ok(who, CommitResult(job=job.id, root=merkle.root(tiles), tiles=len(tiles)))
    chain.run_to(chain.job(job.id).sample_height)
    chain.ok(who, reveal(chain.job(job.id), tiles))
    attest_all(chain, job.id, verify_job(chain.state, chain.job(job.id)))
    return chain.job(job.id)


def test_challenges_qualify_providers_for_the_emission_share():
    chain = Chain(make_params(block={"epoch_blocks": 40}))
    register(chain)
    register(chain, who=USERS[2], collateral=MIN_COLLATERAL)
    chain.run_to(40)  # the next block starts epoch 1
    chain.block()
    jobs = {who: compute.provider_open_jobs(chain.state, who) for who in (PROVIDER, USERS[2])}
    for who, found in jobs.items():
        (job,) = found
        assert (job.kind, job.price, job.provider, job.tiles) == (JOB_CHALLENGE, 0, who, 4)
        assert job.seed == compute.challenge_seed(beacon_of(41), who, 1)
        assert job.params == (32, 32, 32, 16)
    passed = run_challenge(chain, PROVIDER, honest=True)
    assert passed.status == STATUS_PASSED
    provider = chain.provider()
    assert (provider.challenges_passed, provider.credit_epoch) == (1, 4)
    weights = compute_providers.provider_reward_weights(chain.state, chain.context(
        chain.height + 1))
    assert weights == [(PROVIDER, 4)]
    # from now on the provider part of each block goes to the qualifying provider
    accrued_before = compute_providers.get_epoch_earnings(chain.state).entries[0].accrued
    chain.block()
    stats = get_distribution_stats(chain.state)
    entry = next(e for e in compute_providers.get_epoch_earnings(chain.state).entries
                 if e.provider == PROVIDER)
    assert entry.accrued - accrued_before == stats.provider_paid > 0
    # the silent one fails its challenge at the commit deadline and is slashed
    other = compute_providers.get_provider(chain.state, USERS[2])
    assert other.challenges_failed == 1 and other.collateral == MIN_COLLATERAL * 9 // 10
    # at the next epoch start the accrued reward is paid, locked
    chain.run_to(80)
    accrued = next(e for e in compute_providers.get_epoch_earnings(chain.state).entries
                   if e.provider == PROVIDER).accrued
    gpu_before = chain.balance(PROVIDER)[0]
    chain.block()
    account = chain.state.get_account(PROVIDER)
    assert account.gpu == gpu_before + accrued
    assert any(lock.amount >= accrued for lock in account.locks)
    assert chain.provider().rewards_total == accrued
    # only the provider with collateral above the minimum was challenged again
    assert [j.provider for j in compute.provider_open_jobs(chain.state, PROVIDER)] == [PROVIDER]
    assert compute.provider_open_jobs(chain.state, USERS[2]) == []


@settings(max_examples=50, deadline=None)
@given(total=st.integers(0, 10**12),
       works=st.lists(st.integers(0, 10**6), min_size=0, max_size=5))
def test_provider_payouts_are_exact(total, works):
    providers = [(bytes([i]) * 20, w) for i, w in enumerate(works)]
    payouts = compute_block_payouts(total, [], NetworkParams().tokenomics, providers)
    paid = sum(a for _, a in payouts.provider) + sum(a for _, a in payouts.validators)
    assert paid + payouts.carry == total
    assert payouts.to_providers == any(works)
    if any(works):
        part = total // 2
        for address, amount in payouts.provider:
            assert amount == part * dict(providers)[address] // sum(works)


# --- many jobs: the catch rate ------------------------------------------------------------------


def corrupt_pattern(job_id: int, count: int) -> list[bool]:
    """Each tile independently corrupt with probability 1/10, from the job id (reproducible)."""
    out = []
    for i in range(count):
        digest = hashlib.sha256(b"cheat" + job_id.to_bytes(8, "big") + i.to_bytes(4, "big"))
        out.append(int.from_bytes(digest.digest()[:8], "big") % 10 == 0)
    return out


def test_catch_rate_over_a_thousand_jobs_matches_the_sampling_bound():
    params = make_params(compute={"provider_slash_fraction": {"num": 1, "den": 100_000}})
    chain = Chain(params)
    register(chain, collateral=4 * MIN_COLLATERAL)
    burned_before = get_supply(chain.state).burned
    k = 44
    honest_digests = list(_HONEST)
    jobs, batch = 1000, 100
    caught = passed = 0
    for _ in range(0, jobs, batch):
        first = compute.get_counters(chain.state).next_job
        chain.block([(CLIENT, SubmitJob(kernel=b"matmul_i8", params=JOB_PARAMS, seed=SEED,
                                        price=10, deadline=chain.height + 20))] * batch)
        ids = range(first, first + batch)
        outputs = {}
        for job_id in ids:
            bad = corrupt_pattern(job_id, 100)
            outputs[job_id] = [corrupt(t) if b else t for t, b in zip(honest_digests, bad,
                                                                      strict=True)]
        chain.block([(PROVIDER, CommitResult(job=j, root=merkle.root(outputs[j]), tiles=100))
                     for j in ids])
        chain.run_to(chain.job(first).sample_height)
        chain.block([(PROVIDER, reveal(chain.job(j), outputs[j])) for j in ids])
        attests = []
        for j in ids:
            job = chain.job(j)
            got = dict(compute.revealed_tiles(chain.state, job))
            verdict = int(all(got[i] == _HONEST[i] for i in job.sampled))
            caught += verdict == VERDICT_FAIL
            passed += verdict == VERDICT_PASS
            attests += [(OPERATORS[m], Attest(job=j, validator=VALIDATORS[m], verdict=verdict))
                        for m in (3, 2, 1)]
        receipts = chain.block(attests)
        assert all(r.status == RECEIPT_OK for r in receipts)
        for j in ids:
            assert chain.job(j).status == (STATUS_FAILED if not all(
                t == _HONEST[i] for i, t in enumerate(outputs[j]) if i in chain.job(j).sampled)
                else STATUS_PASSED)
    assert len(compute.provider_open_jobs(chain.state, PROVIDER)) == 0
    p = 1 - 0.9**k  # each sampled tile is corrupt independently with probability 1/10
    assert abs(caught - jobs * p) <= 5 * sqrt(jobs * p * (1 - p))
    assert passed + caught == jobs
    provider = chain.provider()
    assert (provider.jobs_failed, provider.jobs_passed) == (caught, passed)
    assert chain.balance(CLIENT)[1] == 10_000_000 - 10 * passed
    assert chain.balance(ESCROW)[1] == 0
    # burned: the slashes, and the silent member's penalties once every window has closed
    chain.run_to(chain.job(jobs - 1).attest_deadline)
    penalties = sum(chain.job(j).penalties for j in range(jobs))
    assert all(chain.job(j).closed for j in range(jobs)) and penalties > 0
    assert provider.slashed_total + penalties == get_supply(chain.state).burned - burned_before
    # every base unit accounted for: transition.end_block checked the supply every block


def test_verifier_re_execution_matches_the_provider_tiles():
    kernel = get_kernel("matmul_i8")
    params = kernel.validate_params(dict(zip(("m", "n", "k", "tile"), JOB_PARAMS, strict=True)))
    assert kernel.compute_tiles(SEED, params, [0, 57, 99]) == [_HONEST[0], _HONEST[57],
                                                              _HONEST[99]]


@pytest.mark.parametrize("field", ["attest_penalty", "challenge_size", "max_deadline_blocks"])
def test_new_compute_params_are_validated(field):
    from consensus.params import ParamsError

    bad = {"attest_penalty": {"num": 2, "den": 1}, "challenge_size": 33,
           "max_deadline_blocks": 0}[field]
    with pytest.raises(ParamsError, match=field):
        make_params(compute={field: bad})
