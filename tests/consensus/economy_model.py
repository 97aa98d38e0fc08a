"""A block-by-block driver of the real token-economy rules, with the books kept beside it.

`EconomyChain` starts from a real genesis document (compressed parameters, so
unbonding, reward locks, epochs, halvings, the emission cap, liveness windows
and buyback periods all happen within a few hundred blocks) and applies
blocks the way `consensus.transition.apply_block` does, minus headers,
commits and signatures: `transition.begin_block` with a synthetic commit and
unsigned `DuplicateVoteEvidence`, `transition.apply_tx(..., verified=True)`
for each tx, `transition.end_block`, then the write set merged into a dict
of committed values.

Txs come from `Intent`s: small integers a test strategy draws, turned into a
valid-shaped body against the live state (an amount is a per-mille of what
the sender holds, a validator is picked among those that exist, ...), so
most succeed and some fail with a receipt.

Around each phase the driver checks what that phase may change, and after
each block it decodes every record it knows from the committed dict and
checks the books (`check_books`). A broken invariant raises
`EconomyInvariantBroken` naming the block, the invariant and the block's txs.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from chain.address import address_from_public_key
from chain.codec import decode
from chain.crypto import SigningKey
from chain.hashing import sha256
from chain.records import (
    DENOM_GPU,
    DENOM_STABLE,
    KEEP_U8,
    KEEP_U32,
    RECEIPT_OK,
    REWARD_ACC_SCALE,
    VOTE_PRECOMMIT,
    Account,
    AddLiquidity,
    Commit,
    CommitSig,
    CreateValidator,
    Delegate,
    Delegation,
    DuplicateVoteEvidence,
    EditValidator,
    IssueStable,
    LicenceTransfer,
    PayRevenue,
    Receipt,
    Redelegate,
    RedelegationQueue,
    RemoveLiquidity,
    SignedTx,
    SignedVote,
    StakingTotals,
    StakingValidator,
    Swap,
    Transfer,
    Tx,
    TxBody,
    UnbondingQueue,
    Undelegate,
    Unjail,
    Vote,
    WithdrawRewards,
    acc_to_int,
)
from chain.state import (
    ACCOUNT_PREFIX,
    DELEGATION_PREFIX,
    REDELEGATION_PREFIX,
    STAKING_TOTALS_KEY,
    STAKING_VALIDATOR_PREFIX,
    SUPPLY_KEY,
    UNBONDING_PREFIX,
    State,
    is_module_address,
    module_address,
)
from consensus import buyback, distribution, exchange, staking, transition
from consensus.context import BlockContext, ChainRules, spendable_gpu
from consensus.emission import block_emission, emitted_through, period_of, scheduled_emission
from consensus.params import NetworkParams, Ratio, default_params, params_with_overrides
from consensus.slashing import SigningInfo, compute_max_missed, signing_info_key
from consensus.supply import SupplyTotals, get_supply
from consensus.validators import validator_set_at
from genesis.document import (
    Genesis,
    GenesisLock,
    add_account,
    add_validator,
    new_genesis,
    set_pool,
    set_stable_issuer,
)
from genesis.state import genesis_writes
from tests.committed import commit_writes

CHAIN_ID = "gannet-economy-model"
GENESIS_TIME_MS = 1_700_000_000_000
SIGNATURE = bytes(64)  # nothing here is signed: apply_tx runs with verified=True

USER_KEYS = tuple(SigningKey.from_seed(sha256(b"economy-user-%d" % i)) for i in range(8))
USERS = tuple(address_from_public_key(k.public_key) for k in USER_KEYS)
VALIDATOR_KEYS = tuple(SigningKey.from_seed(sha256(b"economy-validator-%d" % i))
                       for i in range(7))
VALIDATOR_ADDRESSES = tuple(address_from_public_key(k.public_key) for k in VALIDATOR_KEYS)
GENESIS_VALIDATORS = 3  # VALIDATOR_KEYS[:3] start bonded, run by USERS[:3]
ISSUER, LP_OWNER = USERS[7], USERS[6]
MODULE_ADDRESS = module_address("treasury")
BONDED, UNBONDING, REWARDS, POOL, TREASURY = (
    module_address(name) for name in ("bonded", "unbonding", "rewards", "pool", "treasury"))
MINIMUM_LIQUIDITY = exchange.MINIMUM_LIQUIDITY

# Parameter profiles: every mechanism fires within a few hundred blocks.
BASE_OVERRIDES: dict[str, Any] = {
    "block": {"epoch_blocks": 10},
    "staking": {"min_validator_stake": 1_000_000, "max_validators": 4,
                "unbonding_period_blocks": 12, "evidence_max_age_blocks": 10,
                "slash_fraction_double_sign": {"num": 1, "den": 20},
                "slash_fraction_downtime": {"num": 1, "den": 100},
                "signed_blocks_window": 8, "min_signed_per_window": {"num": 1, "den": 2},
                "downtime_jail_blocks": 4},
    "tokenomics": {"total_supply": 10_000_000_000, "emission_first_period": 1_800_000_000,
                   "halving_period_blocks": 40, "queen_min_stake": 20_000_000,
                   "max_queens": 2, "reward_lock_blocks": 15, "buyback_period_blocks": 30,
                   "buyback_interval_blocks": 5, "buyback_max_slippage_bps": 100,
                   "licence_tiers": [
                       {"min_licences": 0, "factor": {"num": 1, "den": 1}},
                       {"min_licences": 3, "factor": {"num": 6, "den": 5}},
                       {"min_licences": 6, "factor": {"num": 3, "den": 2}}]},
    "compute": {"provider_min_collateral": 1_000_000},
    "fee": {"min_fee": 10},
}
PROFILE_CHANGES: tuple[dict[str, Any], ...] = (
    {},
    {"staking": {"max_validators": 3, "unbonding_period_blocks": 3, "evidence_max_age_blocks": 3,
                 "slash_fraction_double_sign": {"num": 1, "den": 3}, "signed_blocks_window": 4},
     "tokenomics": {"halving_period_blocks": 7, "buyback_period_blocks": 9,
                    "buyback_interval_blocks": 3, "buyback_max_slippage_bps": 10_000,
                    "pool_fee_bps": 0, "reward_lock_blocks": 1}},
    {"block": {"epoch_blocks": 3},
     "staking": {"max_validators": 7, "unbonding_period_blocks": 25,
                 "evidence_max_age_blocks": 25, "downtime_jail_blocks": 1,
                 "slash_fraction_double_sign": {"num": 1, "den": 1}},
     "tokenomics": {"emission_first_period": 1_000_000_000, "halving_period_blocks": 120,
                    "provider_share": {"num": 9, "den": 10}, "queen_bonus": {"num": 5, "den": 2},
                    "buyback_period_blocks": 50, "buyback_interval_blocks": 50,
                    "pool_fee_bps": 1_000, "buyback_max_slippage_bps": 2_000}},
)


def profile_params(profile: int) -> NetworkParams:
    """The network parameters of profile `profile` (the base overrides, then its changes)."""
    base = params_with_overrides(default_params(), BASE_OVERRIDES)
    return params_with_overrides(base, PROFILE_CHANGES[profile])


def make_genesis(params: NetworkParams) -> Genesis:
    """Eight funded users (some with stable, licences, a lock), three validators, the issuer
    and a seeded pool."""
    genesis = new_genesis(CHAIN_ID, GENESIS_TIME_MS, params)
    for i, user in enumerate(USERS):
        locks = (GenesisLock(50_000_000, 60),) if i == 5 else ()
        genesis = add_account(genesis, user, 100_000_000 * (i + 1), stable=5_000_000 * i,
                              licences=(0, 4, 7, 2, 0, 9, 1, 0)[i], locks=locks)
    for i in range(GENESIS_VALIDATORS):
        genesis = add_validator(genesis, VALIDATOR_KEYS[i].public_key, 10_000_000 * (i + 2),
                                USERS[i], f"v{i}", commission_bps=(500, 0, 10_000)[i],
                                queen=i != 1)
    genesis = set_stable_issuer(genesis, ISSUER)
    return set_pool(genesis, 200_000_000, 100_000_000, LP_OWNER)


# --- intents ------------------------------------------------------------------------

KINDS = ("transfer", "licence", "create", "edit", "delegate", "undelegate", "redelegate",
         "withdraw", "unjail", "swap", "add", "remove", "issue", "revenue")


class Intent(NamedTuple):
    """A tx to build: its kind, two picks, a per-mille amount and a variant (3: break it)."""

    kind: int
    who: int
    pick: int
    permille: int
    variant: int


def random_intent(rng: random.Random) -> Intent:
    """An intent drawn from `rng` (the quiet blocks' background traffic)."""
    return Intent(rng.randrange(len(KINDS)), rng.randrange(8), rng.randrange(8),
                  rng.choice((0, 1, 10, 100, 500, 999, 1000, rng.randrange(1001))),
                  rng.randrange(4))


def _part(amount: int, permille: int) -> int:
    return amount * permille // 1000


Built = tuple[bytes, TxBody] | None  # (sender, body) of an intent, or None: no tx


class EconomyInvariantBroken(AssertionError):
    """A rule of the token economy broke one of the books' invariants at some block."""


# --- the books: a full scan of committed state ---------------------------------------


@dataclass
class Books:
    """Every economy record in committed state, decoded."""

    accounts: dict[bytes, Account] = field(default_factory=dict)
    validators: dict[bytes, StakingValidator] = field(default_factory=dict)
    delegations: dict[tuple[bytes, bytes], Delegation] = field(default_factory=dict)
    unbonding: dict[bytes, UnbondingQueue] = field(default_factory=dict)
    redelegations: dict[bytes, RedelegationQueue] = field(default_factory=dict)
    lp: dict[bytes, int] = field(default_factory=dict)
    pool: exchange.Pool = exchange.EMPTY_POOL
    totals: StakingTotals = staking.EMPTY_TOTALS
    supply: SupplyTotals | None = None
    carry: int = 0
    buyback: buyback.BuybackState = buyback.EMPTY_STATE

    def account(self, address: bytes) -> Account:
        """An account (empty if absent)."""
        return self.accounts.get(address, Account(gpu=0, stable=0, nonce=0, licences=0,
                                                  locks=()))


def scan_books(committed: dict[bytes, bytes]) -> Books:
    """Decode every account and economy record of `committed` (decoding checks each range)."""
    books = Books()
    for key, raw in committed.items():
        head = key[:2]
        if key[:1] == ACCOUNT_PREFIX and len(key) == 21:
            books.accounts[key[1:]] = decode(Account, raw)
        elif head == STAKING_VALIDATOR_PREFIX:
            books.validators[key[2:]] = decode(StakingValidator, raw)
        elif head == DELEGATION_PREFIX:
            books.delegations[(key[2:22], key[22:42])] = decode(Delegation, raw)
        elif head == UNBONDING_PREFIX:
            books.unbonding[key[2:]] = decode(UnbondingQueue, raw)
        elif head == REDELEGATION_PREFIX:
            books.redelegations[key[2:]] = decode(RedelegationQueue, raw)
        elif key[:2] == exchange.LP_PREFIX:
            books.lp[key[2:]] = decode(exchange.LpShares, raw).shares
        elif key == exchange.POOL_KEY:
            books.pool = decode(exchange.Pool, raw)
        elif key == STAKING_TOTALS_KEY:
            books.totals = decode(StakingTotals, raw)
        elif key == SUPPLY_KEY:
            books.supply = decode(SupplyTotals, raw)
        elif key == distribution.CARRY_KEY:
            books.carry = decode(distribution.RewardCarry, raw).amount
        elif key == buyback.STATE_KEY:
            books.buyback = decode(buyback.BuybackState, raw)
    return books


def compute_free_gpu(account: Account, height: int) -> int:
    """GPU not under a lock still binding at `height` (may be negative if the books are off)."""
    return account.gpu - sum(lk.amount for lk in account.locks if lk.release_height > height)


def model_emission(params: NetworkParams, first_height: int, height: int,
                   minted_before: int) -> int:
    """The emission schedule written out again: period p of N blocks emits E >> p, block i of
    it E*(i+1)//N - E*i//N, never past the network allocation."""
    tok = params.tokenomics
    n = tok.halving_period_blocks
    period, index = divmod(height - first_height, n)
    total = tok.emission_first_period >> period if period < 64 else 0
    cap = tok.total_supply * tok.allocation_bps.network // 10_000
    return min(total * (index + 1) // n - total * index // n, max(cap - minted_before, 0))


@dataclass
class ModelEntry:
    """An unbonding entry as the model expects it."""

    delegator: bytes
    creation: int
    completion: int
    initial: int
    balance: int


@dataclass
class BlockInput:
    """What a block is made of: intents, who misses the parent's commit, evidence, proposer."""

    intents: tuple[Intent, ...] = ()
    absent: frozenset[int] = frozenset()  # indexes into the parent's signing set
    evidence: tuple[tuple[int, int], ...] = ()  # (member index at the offence, age)
    proposer: int = 0


class EconomyChain:
    """The real economy rules applied block by block over a dict of committed writes."""

    def __init__(self, profile: int = 0) -> None:
        self.params = profile_params(profile)
        self.genesis = make_genesis(self.params)
        _, writes = genesis_writes(self.genesis)
        self.committed = {k: v for k, v in writes.items() if v}
        self.rules = ChainRules(CHAIN_ID, self.params, self.genesis.initial_height)
        self.height = self.genesis.initial_height - 1
        self.offline: set[bytes] = set()
        self.entries: dict[bytes, list[ModelEntry]] = {}
        self.stats: Counter[str] = Counter()
        self.books = scan_books(self.committed)
        self.log: list[str] = ["genesis"]
        self.applying = 0  # the height being applied (0: genesis)
        self.last_epoch = -1
        self.last_members = {v.address for v in State(self.committed.get)
                             .get_validator_set().validators}
        self.check_books()

    # --- driving --------------------------------------------------------------------

    def apply_quiet_blocks(self, count: int, seed: int) -> None:
        """`count` blocks of light background traffic; offline validators never sign."""
        rng = random.Random(seed)
        for _ in range(count):
            members = len(self.parent_set())
            absent = frozenset(i for i in range(members) if rng.random() < 0.08)
            intents = tuple(random_intent(rng) for _ in range(rng.choice((0, 0, 0, 1, 2))))
            self.apply_block(BlockInput(intents=intents, absent=absent,
                                        proposer=rng.randrange(8)))

    def apply_block(self, block: BlockInput) -> list[Receipt]:
        """Apply one block, checking each phase and then the books."""
        h = self.applying = self.height + 1
        self.log = [f"block {h}: absent {sorted(block.absent)}, evidence {block.evidence}"]
        state = State(self.committed.get)
        vset = state.get_validator_set().validators
        ctx = self.rules.context(h, vset[block.proposer % len(vset)].operator)
        commit, signers = self.synthetic_commit(h, block.absent)
        evidence = self.build_evidence(h, block.evidence)
        self.begin(state, ctx, commit, signers, evidence)
        receipts = self.apply_txs(state, ctx, block.intents)
        self.end(state, ctx)
        commit_writes(self.committed, state.write_set())
        self.height = h
        before = self.books
        self.books = scan_books(self.committed)
        self.check_books()
        self.count_mechanisms(before, state)
        return receipts

    def count_mechanisms(self, before: Books, state: State) -> None:
        """Tally what the block did, so a test can tell every mechanism fired."""
        self.stats["blocks"] += 1
        joined = set(self.books.validators) - set(before.validators)
        self.stats["validators_created"] += len(joined)
        snapshot = distribution.get_epoch_snapshot(state)
        self.stats["epochs_with_licences"] += bool(snapshot and snapshot.licences
                                                   and snapshot.epoch != self.last_epoch)
        self.stats["epochs_with_queens"] += bool(snapshot and snapshot.queens
                                                 and snapshot.epoch != self.last_epoch)
        self.last_epoch = snapshot.epoch if snapshot else -1
        members = {v.address for v in state.get_validator_set().validators}
        self.stats["set_changes"] += members != self.last_members
        self.last_members = members

    def parent_set(self) -> tuple[bytes, ...]:
        """Addresses of the set that signed the parent height (empty before the first block)."""
        if self.height < self.genesis.initial_height:
            return ()
        vset = validator_set_at(State(self.committed.get), self.height)
        assert vset is not None
        return tuple(v.address for v in vset.validators)

    def synthetic_commit(self, h: int, absent: frozenset[int]) -> tuple[Commit, frozenset]:
        """A commit of the parent naming its set minus `absent` and the offline validators."""
        members = self.parent_set()
        signers = frozenset(a for i, a in enumerate(members)
                            if i not in absent and a not in self.offline)
        sigs = tuple(CommitSig(validator=a, signature=SIGNATURE) for a in sorted(signers))
        return Commit(height=max(h - 1, 0), round=0, block_hash=sha256(b"%d" % (h - 1)),
                      signatures=sigs), signers

    def build_evidence(self, h: int, picks: tuple[tuple[int, int], ...]
                       ) -> tuple[DuplicateVoteEvidence, ...]:
        """Two conflicting unsigned precommits of a member of the set at height h - age."""
        out = []
        state = State(self.committed.get)
        max_age = self.params.staking.evidence_max_age_blocks
        for member, age in picks:
            offence = h - 1 - age % max_age
            if offence < self.genesis.initial_height:
                continue
            vset = validator_set_at(state, offence)
            assert vset is not None
            address = vset.validators[member % len(vset.validators)].address
            votes = tuple(SignedVote(vote=Vote(vote_type=VOTE_PRECOMMIT, height=offence,
                                               round=0, block_hash=sha256(tag),
                                               validator=address), signature=SIGNATURE)
                          for tag in (b"a", b"b"))
            out.append(DuplicateVoteEvidence(vote_a=votes[0], vote_b=votes[1]))
        return tuple(out)

    def fail(self, invariant: str, detail: str) -> None:
        """Raise `EconomyInvariantBroken` naming the block, the invariant and the block's txs."""
        raise EconomyInvariantBroken(
            f"block {self.applying}: {invariant}: {detail}\n  " + "\n  ".join(self.log))

    def expect(self, ok: bool, invariant: str, detail: str) -> None:
        """Fail `invariant` with `detail` unless `ok`."""
        if not ok:
            self.fail(invariant, detail)

    # --- begin block: slashing, unbonding payouts -----------------------------------------

    def begin(self, state: State, ctx: BlockContext, commit: Commit, signers: frozenset,
              evidence: tuple[DuplicateVoteEvidence, ...]) -> None:
        """Run the begin-block rules and check slashes and matured unbondings against the model."""
        h = ctx.height
        before = dict(self.books.validators)
        supply_before = self.books.supply
        transition.begin_block(state, ctx, commit, evidence)
        after = {a: staking.get_validator(state, a) for a in before}
        slashes = self.model_slashes(state, h, before, evidence, signers)
        token_drop = sum(before[a].tokens - after[a].tokens for a in before)
        entry_slash = self.apply_model_slashes(slashes)
        if len(slashes) == 1:
            address, fraction, _ = slashes[0]
            want = fraction.floor_mul(before[address].tokens)
            got = before[address].tokens - after[address].tokens
            self.expect(got == want, "slash takes its fraction of tokens",
                        f"{address.hex()} lost {got}, expected {want}")
        burned = get_supply(state).burned - supply_before.burned
        self.expect(burned == token_drop + entry_slash, "slash burns what it removes",
                    f"burned {burned}, tokens removed {token_drop}, "
                    f"entries slashed {entry_slash}")
        self.expect(get_supply(state).minted == supply_before.minted,
                    "begin block mints nothing", "minted changed")
        self.check_payouts(state, h, entry_slash)
        self.stats["slashes"] += len(slashes)

    def model_slashes(self, state: State, h: int, before: dict[bytes, StakingValidator],
                      evidence: tuple[DuplicateVoteEvidence, ...],
                      signers: frozenset) -> list[tuple[bytes, Ratio, int]]:
        """(validator, fraction, offence height) of every slash this begin block should do.

        Downtime: a validator whose window restarted here (it was jailed for
        downtime), in address order; then each piece of evidence against a validator not
        yet tombstoned, in order.
        """
        params = self.params.staking
        out = []
        parent = frozenset(self.parent_set())
        committed = State(self.committed.get)
        window = params.signed_blocks_window
        max_missed = compute_max_missed(window, params.min_signed_per_window)
        for address in sorted(before):
            info = state.get(signing_info_key(address), SigningInfo)
            if info is not None and info.start_height == h and info.counted == 0:
                pre = committed.get(signing_info_key(address), SigningInfo)
                counted, missed = (0, 0) if pre is None else (pre.counted, pre.missed_count)
                missed += address not in signers
                self.expect(address in parent and not before[address].jailed
                            and counted + 1 >= window and missed > max_missed,
                            "downtime jail is earned",
                            f"{address.hex()} jailed for downtime: in the set "
                            f"{address in parent}, jailed {before[address].jailed}, counted "
                            f"{counted} + 1 of {window}, missed at most {missed} "
                            f"(max {max_missed})")
                out.append((address, params.slash_fraction_downtime, h - 1))
                self.stats["downtime_jails"] += 1
        tombstoned = {a for a, v in before.items() if v.tombstoned}
        for piece in evidence:
            vote = piece.vote_a.vote
            if vote.validator in before and vote.validator not in tombstoned:
                tombstoned.add(vote.validator)
                out.append((vote.validator, params.slash_fraction_double_sign, vote.height))
                self.stats["double_signs"] += 1
        for address in sorted(before):
            now = staking.get_validator(state, address)
            self.expect(bool(now.tombstoned) == (address in tombstoned),
                        "double signers are tombstoned", f"{address.hex()}: {now}")
        return out

    def apply_model_slashes(self, slashes: list[tuple[bytes, Ratio, int]]) -> int:
        """Slash the model's unbonding entries; the total they lose."""
        total = 0
        for address, fraction, offence in slashes:
            for entry in self.entries.get(address, ()):
                if entry.creation >= offence:
                    amount = min(fraction.floor_mul(entry.initial), entry.balance)
                    entry.balance -= amount
                    total += amount
        return total

    def check_payouts(self, state: State, h: int, entry_slash: int) -> None:
        """Matured entries pay exactly their (slashed) balance, free to spend, and nothing else."""
        expected: Counter[bytes] = Counter()
        for address in sorted(self.entries):
            due = [e for e in self.entries[address] if e.completion <= h]
            for entry in due:
                expected[entry.delegator] += entry.balance
            self.entries[address] = [e for e in self.entries[address] if e.completion > h]
            self.stats["unbondings_paid"] += len(due)
        paid: Counter[bytes] = Counter()
        for key in state.changed():
            if key[:1] == ACCOUNT_PREFIX and len(key) == 21 and not is_module_address(key[1:]):
                address = key[1:]
                delta = (compute_free_gpu(state.get_account(address), h)
                         - compute_free_gpu(self.books.account(address), h))
                if delta:
                    paid[address] = delta
        self.expect(+paid == +expected, "matured unbondings pay their balance",
                    f"paid {hexed(paid)}, expected {hexed(expected)}")
        drop = self.books.account(UNBONDING).gpu - state.get_account(UNBONDING).gpu
        self.expect(drop == sum(expected.values()) + entry_slash, "unbonding module outflow",
                    f"module lost {drop}, paid {sum(expected.values())} + slashed {entry_slash}")

    # --- txs ---------------------------------------------------------------------------

    def apply_txs(self, state: State, ctx: BlockContext,
                  intents: tuple[Intent, ...]) -> list[Receipt]:
        """Build and apply each intent's tx; txs mint and burn nothing, only the issuer issues."""
        supply_before = get_supply(state)
        issued = 0
        receipts = []
        for intent in intents:
            built = self.build_tx(state, ctx, intent)
            if built is None:
                continue
            sender, body = built
            account = state.get_account(sender)
            fee = ctx.min_fee + intent.variant
            if spendable_gpu(account, ctx.height) < fee:
                continue
            tx = Tx(chain_id=CHAIN_ID.encode(), sender=USER_KEYS[USERS.index(sender)].public_key,
                    nonce=account.nonce, fee=fee, body=body)
            pending = (staking.pending_rewards(state, sender, body.validator)
                       if isinstance(body, WithdrawRewards) else None)
            receipt = transition.apply_tx(state, SignedTx(tx=tx, signature=SIGNATURE), ctx,
                                          verified=True, sender=sender)
            receipts.append(receipt)
            name = type(body).__name__
            self.log.append(f"{name} by user {USERS.index(sender)}: {body} -> code "
                            f"{receipt.code} {receipt.reason.decode()}")
            self.check_reward_locks(ctx, sender, account, state.get_account(sender), receipt,
                                    pending)
            self.stats[f"{name}:{'ok' if receipt.status == RECEIPT_OK else 'failed'}"] += 1
            self.stats[f"{name}:{receipt.code}"] += 1
            if receipt.status == RECEIPT_OK:
                issued += body.amount if isinstance(body, IssueStable) else 0
                self.record_success(ctx, sender, body)
        after = get_supply(state)
        self.expect((after.minted, after.burned) == (supply_before.minted, supply_before.burned),
                    "txs neither mint nor burn", f"{supply_before} -> {after}")
        self.expect(after.stable_issued - supply_before.stable_issued == issued,
                    "only IssueStable issues stable",
                    f"issued {issued}, {supply_before} -> {after}")
        return receipts

    def check_reward_locks(self, ctx: BlockContext, sender: bytes, before: Account,
                           after: Account, receipt: Receipt, pending: int | None) -> None:
        """Rewards a tx pays its sender are locked until `reward_lock_blocks` later rounded up to
        an epoch; a withdrawal pays exactly what was pending and leaves only the fee spendable."""
        h = ctx.height
        epoch = self.params.block.epoch_blocks
        release = -(-(h + self.params.tokenomics.reward_lock_blocks) // epoch) * epoch
        locked = (before.gpu - compute_free_gpu(before, h), after.gpu - compute_free_gpu(after, h))
        at_release = [sum(lk.amount for lk in a.locks if lk.release_height == release)
                      for a in (before, after)]
        grown = locked[1] - locked[0]
        self.expect(grown == at_release[1] - at_release[0] >= 0, "rewards are paid locked",
                    f"locked GPU grew by {grown}, at release height {release} by "
                    f"{at_release[1] - at_release[0]}")
        if pending is not None and receipt.status == RECEIPT_OK:
            fee = 0 if sender == ctx.fee_recipient else receipt.fee_paid
            free = compute_free_gpu(after, h) - compute_free_gpu(before, h)
            self.expect(grown == pending > 0 and free == -fee, "withdrawal pays the pending "
                        "rewards, locked", f"pending {pending}, locked {grown}, free {free}")

    def record_success(self, ctx: BlockContext, sender: bytes, body: TxBody) -> None:
        """The model's view of a tx that succeeded: an Undelegate queues an entry."""
        if isinstance(body, Undelegate):
            entries = self.entries.setdefault(body.validator, [])
            last = entries[-1] if entries else None
            if last is not None and last.delegator == sender and last.creation == ctx.height:
                last.initial += body.amount
                last.balance += body.amount
            else:
                completion = ctx.height + self.params.staking.unbonding_period_blocks
                entries.append(ModelEntry(sender, ctx.height, completion, body.amount,
                                          body.amount))

    def build_tx(self, state: State, ctx: BlockContext, intent: Intent) -> Built:
        """(sender, body) of an intent against the live state, or None when it makes no tx."""
        builder = getattr(self, f"build_{KINDS[intent.kind % len(KINDS)]}")
        return builder(state, ctx, intent)

    def validators(self) -> list[bytes]:
        """Validators with a staking record at the start of the block, by address."""
        return sorted(self.books.validators)

    def pick_validator(self, pick: int) -> bytes:
        """The pick-th validator (cycling)."""
        found = self.validators()
        return found[pick % len(found)]

    def free(self, state: State, ctx: BlockContext, sender: bytes, intent: Intent) -> int:
        """What the sender may spend after the fee."""
        have = spendable_gpu(state.get_account(sender), ctx.height)
        return max(have - ctx.min_fee - intent.variant, 0)

    def build_transfer(self, state: State, ctx: BlockContext, intent: Intent) -> Built:
        """A share of the sender's GPU or stable to a user (variant 3: to a module)."""
        sender = USERS[intent.who]
        to = MODULE_ADDRESS if intent.variant == 3 else USERS[intent.pick]
        denom = DENOM_STABLE if intent.pick % 2 else DENOM_GPU
        have = (state.get_account(sender).stable if denom == DENOM_STABLE
                else self.free(state, ctx, sender, intent))
        return sender, Transfer(to=to, amount=_part(have, intent.permille), denom=denom)

    def build_licence(self, state: State, ctx: BlockContext, intent: Intent) -> Built:
        """Some of the sender's licences to a user (variant 3: more than it holds)."""
        sender = USERS[intent.who]
        held = state.get_account(sender).licences
        count = held + 1 if intent.variant == 3 else 1 + intent.permille % max(held, 1)
        return sender, LicenceTransfer(to=USERS[intent.pick], count=count)

    def build_create(self, state: State, ctx: BlockContext, intent: Intent) -> Built:
        """A new validator on a free key by a user running none (variant 3: stake too low)."""
        operators = {v.operator for v in self.books.validators.values()}
        users = [u for u in USERS if u not in operators or intent.variant == 3] or USERS
        sender = users[intent.who % len(users)]
        keys = [k for k, a in zip(VALIDATOR_KEYS, VALIDATOR_ADDRESSES, strict=True)
                if a not in self.books.validators or intent.variant == 3] or VALIDATOR_KEYS
        key = keys[intent.pick % len(keys)]
        minimum = self.params.staking.min_validator_stake
        have = self.free(state, ctx, sender, intent)
        stake = minimum + _part(max(have - minimum, 0), intent.permille // 4)
        if intent.variant == 3:
            stake = minimum - 1
        commission = (0, 700, 10_000, 10_001)[intent.permille % 4]
        return sender, CreateValidator(public_key=key.public_key, commission_bps=commission,
                                       self_stake=stake, queen=intent.permille % 2)

    def build_edit(self, state: State, ctx: BlockContext, intent: Intent) -> Built:
        """The operator changes commission, queen or bound licences (variant 3: someone else)."""
        validator = self.pick_validator(intent.pick)
        record = self.books.validators[validator]
        sender = USERS[intent.who] if intent.variant == 3 else record.operator
        held = state.get_account(sender).licences
        bound = (KEEP_U32, intent.permille % (held + record.bound_licences + 2))[intent.who % 2]
        commission = (KEEP_U32, intent.permille * 10)[intent.variant % 2]
        queen = (KEEP_U8, 0, 1, KEEP_U8)[intent.permille % 4]
        return sender, EditValidator(validator=validator, commission_bps=commission,
                                     queen=queen, bound_licences=bound)

    def build_delegate(self, state: State, ctx: BlockContext, intent: Intent) -> Built:
        """A share of the sender's spendable GPU to a validator."""
        sender = USERS[intent.who]
        amount = _part(self.free(state, ctx, sender, intent), intent.permille // 3)
        return sender, Delegate(validator=self.pick_validator(intent.pick), amount=amount)

    def pick_delegation(self, intent: Intent) -> tuple[bytes, bytes] | None:
        """(delegator, validator) of a delegation held by a user, picked by the intent."""
        held = sorted(k for k in self.books.delegations if k[0] in USERS)
        return held[(intent.who * 8 + intent.pick) % len(held)] if held else None

    def delegation_value(self, state: State, delegator: bytes, validator: bytes) -> int:
        """What a delegation is worth now (0 if gone)."""
        record = staking.get_validator(state, validator)
        delegation = staking.get_delegation(state, delegator, validator)
        if record is None or delegation is None:
            return 0
        return staking.delegation_tokens(record, delegation.shares)

    def build_undelegate(self, state: State, ctx: BlockContext, intent: Intent) -> Built:
        """A share of a delegation leaves (variant 3: more than it is worth)."""
        picked = self.pick_delegation(intent)
        if picked is None:
            return None
        delegator, validator = picked
        value = self.delegation_value(state, delegator, validator)
        amount = value + 1 if intent.variant == 3 else _part(value, intent.permille)
        return delegator, Undelegate(validator=validator, amount=amount)

    def build_redelegate(self, state: State, ctx: BlockContext, intent: Intent) -> Built:
        """A share of a delegation moves to another validator."""
        picked = self.pick_delegation(intent)
        if picked is None:
            return None
        delegator, source = picked
        target = self.pick_validator(self.validators().index(source) + 1 + intent.variant)
        value = self.delegation_value(state, delegator, source)
        return delegator, Redelegate(source=source, target=target,
                                     amount=_part(value, intent.permille))

    def build_withdraw(self, state: State, ctx: BlockContext, intent: Intent) -> Built:
        """A delegator withdraws its rewards (variant 3: any user from any validator)."""
        picked = self.pick_delegation(intent)
        if picked is None or intent.variant == 3:
            return USERS[intent.who], WithdrawRewards(validator=self.pick_validator(intent.pick))
        return picked[0], WithdrawRewards(validator=picked[1])

    def build_unjail(self, state: State, ctx: BlockContext, intent: Intent) -> Built:
        """The operator of a jailed validator unjails it or first tops its stake up."""
        jailed = [a for a in self.validators() if self.books.validators[a].jailed
                  and not self.books.validators[a].tombstoned]
        chosen = jailed[intent.pick % len(jailed)] if jailed else self.pick_validator(intent.pick)
        operator = self.books.validators[chosen].operator
        sender = USERS[intent.who] if intent.variant == 3 else operator
        if (intent.variant == 0 and intent.permille % 2 == 0
                and self.delegation_value(state, operator, chosen)
                < self.params.staking.min_validator_stake):
            top_up = self.params.staking.min_validator_stake
            return sender, Delegate(validator=chosen, amount=top_up)
        return sender, Unjail(validator=chosen)

    def build_swap(self, state: State, ctx: BlockContext, intent: Intent) -> Built:
        """A share of the sender's GPU or stable into the pool (variant 3: min_out too high)."""
        sender = USERS[intent.who]
        denom = DENOM_STABLE if intent.pick % 2 else DENOM_GPU
        have = (state.get_account(sender).stable if denom == DENOM_STABLE
                else self.free(state, ctx, sender, intent))
        amount = _part(have, intent.permille // 5)
        min_out = 0
        if intent.variant == 3:
            pool = exchange.get_pool(state)
            min_out = exchange.quote(pool, denom, amount, self.params.tokenomics.pool_fee_bps) + 1
        return sender, Swap(denom_in=denom, amount_in=amount, min_out=min_out)

    def build_add(self, state: State, ctx: BlockContext, intent: Intent) -> Built:
        """Liquidity at about the pool's ratio."""
        sender = USERS[intent.who]
        pool = exchange.get_pool(state)
        gpu = _part(self.free(state, ctx, sender, intent), intent.permille // 5)
        stable = gpu * pool.stable // max(pool.gpu, 1) + intent.variant
        stable = min(stable, state.get_account(sender).stable)
        return sender, AddLiquidity(gpu=gpu, stable=stable, min_shares=intent.variant // 3)

    def build_remove(self, state: State, ctx: BlockContext, intent: Intent) -> Built:
        """A share of an LP's shares redeemed (variant 3: more than it holds)."""
        holders = sorted(self.books.lp)
        sender = holders[intent.who % len(holders)] if holders else USERS[intent.who]
        held = exchange.get_lp_shares(state, sender)
        shares = held + 1 if intent.variant == 3 else _part(held, intent.permille)
        return sender, RemoveLiquidity(shares=shares, min_gpu=0, min_stable=0)

    def build_issue(self, state: State, ctx: BlockContext, intent: Intent) -> Built:
        """The issuer issues stable to a user (variant 3: someone else tries)."""
        sender = USERS[intent.who] if intent.variant == 3 else ISSUER
        return sender, IssueStable(to=USERS[intent.pick], amount=intent.permille * 100_000)

    def build_revenue(self, state: State, ctx: BlockContext, intent: Intent) -> Built:
        """A share of the sender's stable paid as revenue (variant 3: more than it holds)."""
        sender = USERS[intent.who]
        have = state.get_account(sender).stable
        amount = have + 1 if intent.variant == 3 else _part(have, intent.permille)
        return sender, PayRevenue(amount=amount)

    # --- end block: emission, distribution, buyback -------------------------------------

    def end(self, state: State, ctx: BlockContext) -> None:
        """Run the end-block rules; check the emission, its distribution and the buyback burn."""
        h, tok = ctx.height, self.params.tokenomics
        before = get_supply(state)
        carry_before = distribution.get_carry(state)
        current = {v.address for v in state.get_validator_set().validators}
        records = {a: staking.get_validator(state, a) for a in self.validators()}
        buyback_before = buyback.get_buyback_state(state)
        rewards_before = state.get_account(REWARDS).gpu
        transition.end_block(state, ctx)
        after = get_supply(state)
        minted = after.minted - before.minted
        first = self.genesis.initial_height
        want = model_emission(self.params, first, h, before.minted)
        self.expect(minted == want == block_emission(tok, first, h, before.minted),
                    "block mints the schedule", f"minted {minted}, schedule {want}")
        self.expect(after.minted == emitted_through(tok, first, h), "minted total is the schedule",
                    f"minted {after.minted}, schedule {emitted_through(tok, first, h)}")
        stats = distribution.get_distribution_stats(state)
        self.expect(stats.emission == minted and stats.height == h
                    and stats.provider_paid + stats.validators_paid + stats.carry
                    == minted + carry_before and stats.carry == distribution.get_carry(state),
                    "distributed + carry == minted + previous carry",
                    f"{stats}, minted {minted}, previous carry {carry_before}")
        self.expect(state.get_account(REWARDS).gpu - rewards_before == minted,
                    "emission is minted into the rewards module",
                    f"module grew by {state.get_account(REWARDS).gpu - rewards_before}")
        self.check_credited(state, current, records, stats)
        bought = buyback.get_buyback_state(state).burned_total - buyback_before.burned_total
        self.expect(after.burned - before.burned == bought, "the buyback burns what it buys",
                    f"burned {after.burned - before.burned}, bought {bought}")
        self.stats["bought_back"] += bool(bought)
        self.stats["halved_emission"] += bool(minted) and period_of(tok, first, h) > 0
        self.stats["capped_emission"] += minted < scheduled_emission(tok, first, h)

    def check_credited(self, state: State, current: set[bytes],
                       records: dict[bytes, StakingValidator],
                       stats: distribution.DistributionStats) -> None:
        """What the block paid is credited to the signing set, to the base unit.

        A validator's credit is its operator rewards' growth plus what its
        accumulator reserves for delegators (ceil(growth * shares / scale), as
        `allocate_validator_reward` reserves it); nobody outside the set earns.
        """
        credited = 0
        for address, record in records.items():
            now = staking.get_validator(state, address)
            growth = acc_to_int(now.reward_acc) - acc_to_int(record.reward_acc)
            earned = (now.operator_rewards - record.operator_rewards
                      + -(-growth * record.shares // REWARD_ACC_SCALE))
            self.expect(address in current or earned == 0, "only the signing set earns",
                        f"{address.hex()} earned {earned} outside it")
            credited += earned
        paid = stats.provider_paid + stats.validators_paid
        self.expect(credited == paid, "distributed == credited",
                    f"stats say {paid} paid, validators were credited {credited}")

    # --- the books after a block ------------------------------------------------------

    def check_books(self) -> None:
        """Every invariant of the committed books (a full scan), at the last applied height."""
        self.check_supply()
        self.check_staking()
        self.check_rewards()
        self.check_exchange()

    def check_supply(self) -> None:
        """Σ GPU == genesis + minted - burned and Σ stable == issued; locks fit balances."""
        b, h = self.books, self.height
        gpu = sum(a.gpu for a in b.accounts.values())
        stable = sum(a.stable for a in b.accounts.values())
        s = b.supply
        self.expect(gpu == s.genesis_gpu + s.minted - s.burned == s.balances_gpu,
                    "Σ GPU == genesis + minted - burned", f"accounts hold {gpu}, {s}")
        self.expect(stable == s.stable_issued == s.balances_stable, "Σ stable == issued",
                    f"accounts hold {stable}, {s}")
        for address, account in b.accounts.items():
            self.expect(compute_free_gpu(account, h) >= 0, "locked GPU is part of the balance",
                        f"{address.hex()}: {account}")

    def check_staking(self) -> None:
        """bonded == totals == Σ tokens; unbonding == totals == Σ entries == the model's."""
        b, h = self.books, self.height
        tokens = sum(v.tokens for v in b.validators.values())
        self.expect(b.account(BONDED).gpu == b.totals.bonded == tokens, "bonded books",
                    f"module {b.account(BONDED).gpu}, totals {b.totals.bonded}, Σ tokens {tokens}")
        entries = sum(e.balance for q in b.unbonding.values() for e in q.entries)
        self.expect(b.account(UNBONDING).gpu == b.totals.unbonding == entries, "unbonding books",
                    f"module {b.account(UNBONDING).gpu}, totals {b.totals.unbonding}, "
                    f"Σ entries {entries}")
        for address in sorted(set(b.unbonding) | set(self.entries)):
            queue = b.unbonding.get(address, UnbondingQueue(entries=()))
            got = [(e.delegator, e.creation_height, e.completion_height, e.initial_balance,
                    e.balance) for e in queue.entries]
            want = [(e.delegator, e.creation, e.completion, e.initial, e.balance)
                    for e in self.entries.get(address, ())]
            self.expect(got == want, "unbonding entries follow the model",
                        f"validator {address.hex()}: state {got}, model {want}")
        for queue in b.redelegations.values():
            for entry in queue.entries:
                self.expect(entry.completion_height > h, "redelegations mature",
                            f"{entry} still queued at {h}")
        shares: Counter[bytes] = Counter()
        for (_, validator), delegation in b.delegations.items():
            shares[validator] += delegation.shares
        for address, record in b.validators.items():
            self.expect(shares[address] == record.shares, "Σ delegation shares == shares",
                        f"{address.hex()}: Σ {shares[address]}, record {record.shares}")

    def check_rewards(self) -> None:
        """The rewards module holds at least the carry, operator rewards and what delegators
        could withdraw."""
        b = self.books
        owed = b.carry + sum(v.operator_rewards for v in b.validators.values())
        for (_, validator), delegation in b.delegations.items():
            record = b.validators[validator]
            growth = acc_to_int(record.reward_acc) - acc_to_int(delegation.reward_acc)
            self.expect(growth >= 0, "reward snapshots never run ahead", f"{delegation}")
            owed += delegation.shares * growth // REWARD_ACC_SCALE
        self.expect(b.account(REWARDS).gpu >= owed, "rewards module is solvent",
                    f"holds {b.account(REWARDS).gpu}, owes {owed}")

    def check_exchange(self) -> None:
        """Pool record == pool module; Σ LP + locked minimum == pool shares; treasury covers
        the unspent budget."""
        b = self.books
        pool_account = b.account(POOL)
        self.expect((b.pool.gpu, b.pool.stable) == (pool_account.gpu, pool_account.stable),
                    "pool reserves == pool module", f"{b.pool} vs {pool_account}")
        self.expect(sum(b.lp.values()) + MINIMUM_LIQUIDITY == b.pool.shares,
                    "LP shares sum to the pool's", f"Σ LP {sum(b.lp.values())}, pool {b.pool}")
        state = b.buyback
        self.expect(state.spent <= state.budget <= state.spent + b.account(TREASURY).stable,
                    "buyback spends within its budget", f"{state}, treasury "
                    f"{b.account(TREASURY).stable}")


def hexed(amounts: Counter[bytes]) -> dict[str, int]:
    """Amounts by hex address, for messages."""
    return {a.hex()[:8]: v for a, v in sorted(amounts.items())}

