"""The state transition: apply_tx as pre-state → tx → post-state, apply_block and build_block.

Pre-states are built like genesis (an empty State plus set_account and
init_validator_state) and then committed, so a State's write set afterwards holds
exactly what the tx or block changed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.address import address_from_public_key
from chain.codec import encode
from chain.crypto import SigningKey
from chain.hashing import sha256
from chain.records import (
    DENOM_GPU,
    DENOM_STABLE,
    EMPTY_ACCOUNT,
    RECEIPT_FAILED,
    RECEIPT_OK,
    VOTE_PRECOMMIT,
    Account,
    Block,
    Commit,
    DuplicateVoteEvidence,
    Lock,
    SignedTx,
    Transfer,
    Tx,
    Validator,
    ValidatorSet,
    Vote,
    block_hash,
    commit_hash,
    evidence_root,
    results_root,
    tx_hash,
    tx_root,
)
from chain.signing import sign_tx, sign_vote
from chain.state import (
    EVIDENCE_PREFIX,
    MODULE_NAMES,
    SUPPLY_KEY,
    State,
    account_key,
    module_address,
    next_app_hash,
    validators_since_key,
)
from chain.store import Head
from chain.types import UINT64_MAX, ZERO_HASH
from consensus.commit import EMPTY_COMMIT, sign_commit
from consensus.context import CODE_MODULE_ACCOUNT, ChainRules
from consensus.errors import (
    BadNonce,
    CannotPayFee,
    FeeBelowMinimum,
    InvalidBlockTx,
    InvalidCommit,
    InvalidEvidence,
    InvalidHeader,
    InvalidSignature,
    InvalidTransaction,
    WrongChainId,
)
from consensus.evidence import (
    CommittedEvidence,
    evidence_committed_at,
    offence_key,
    offence_of,
    validate_evidence,
)
from consensus.params import FeeParams, NetworkParams
from consensus.producer import BuiltBlock, build_block, next_block_time
from consensus.transition import (
    CODE_INSUFFICIENT_FUNDS,
    CODE_OK,
    CODE_OVERFLOW,
    CODE_UNKNOWN_DENOM,
    BlockContext,
    apply_block,
    apply_tx,
)
from consensus.validators import ValidatorSetSince, init_validator_state

CHAIN = "gannet-test"
MIN_FEE = 10
RULES = ChainRules(CHAIN, dataclasses.replace(NetworkParams(), fee=FeeParams(min_fee=MIN_FEE)))
HEIGHT = 5


def key(i: int) -> SigningKey:
    return SigningKey.from_seed(bytes([i]) * 32)


def addr(k: SigningKey) -> bytes:
    return address_from_public_key(k.public_key)


ALICE_KEY, BOB_KEY, CAROL_KEY, VAL_KEY, VAL2_KEY, VAL3_KEY = (key(i) for i in (1, 2, 3, 9, 10, 11))
ALICE, BOB, CAROL, VAL, VAL2, VAL3 = (
    addr(k) for k in (ALICE_KEY, BOB_KEY, CAROL_KEY, VAL_KEY, VAL2_KEY, VAL3_KEY))
OPERATOR = bytes([0xEE]) * 20  # the validator's operator account: it collects fees
VSET = ValidatorSet(validators=(
    Validator(address=VAL, public_key=VAL_KEY.public_key, power=100, operator=OPERATOR),
))
CTX = BlockContext(chain_id=CHAIN, height=HEIGHT, fee_recipient=OPERATOR, min_fee=MIN_FEE)


def acct(gpu: int = 0, stable: int = 0, nonce: int = 0,
         locks: tuple[tuple[int, int], ...] = ()) -> Account:
    return Account(gpu=gpu, stable=stable, nonce=nonce, licences=0,
                   locks=tuple(Lock(amount=a, release_height=h) for a, h in locks))


def genesis_writes(accounts: dict[bytes, Account], vset: ValidatorSet = VSET) -> dict:
    """The write set of a genesis-like State: accounts and the validator state."""
    state = State(lambda key: None)
    for address, account in accounts.items():
        state.set_account(address, account)
    init_validator_state(state, vset)
    return state.write_set()


def committed(writes: dict[bytes, bytes]) -> State:
    """A fresh State over committed values (b"" = deleted)."""
    return State(lambda key: writes.get(key) or None)


def merged(writes: dict[bytes, bytes], more: dict[bytes, bytes]) -> dict[bytes, bytes]:
    return {**writes, **more}


def transfer(sender: SigningKey = ALICE_KEY, to: bytes = BOB, amount: int = 1,
             denom: int = DENOM_GPU, nonce: int = 0, fee: int = MIN_FEE,
             chain: bytes = CHAIN.encode()) -> SignedTx:
    tx = Tx(chain_id=chain, sender=sender.public_key, nonce=nonce, fee=fee,
            body=Transfer(to=to, amount=amount, denom=denom))
    return sign_tx(sender, tx)


def bad_signature(stx: SignedTx) -> SignedTx:
    sig = bytearray(stx.signature)
    sig[0] ^= 1
    return replace(stx, signature=bytes(sig))


def signed_by(signer: SigningKey, stx: SignedTx) -> SignedTx:
    """`stx` carrying `signer`'s signature over its signing bytes (not the sender's)."""
    forged = sign_tx(signer, replace(stx.tx, sender=signer.public_key))
    return replace(stx, signature=forged.signature)


# --- apply_tx: pre-state → tx → post-state --------------------------------------------


@dataclass(frozen=True)
class TxCase:
    """Accounts before; the tx; the accounts it changes (and nothing else) or the error."""

    name: str
    pre: dict[bytes, Account]
    tx: SignedTx
    post: dict[bytes, Account] = field(default_factory=dict)
    code: int | None = None  # receipt code; None when `error` is raised
    error: type[Exception] | None = None


LOCKED = ((600, HEIGHT + 1),)  # 600 GPU locked until after HEIGHT

TX_CASES = [
    TxCase("gpu-transfer", {ALICE: acct(1000)}, transfer(amount=300),
           {ALICE: acct(690, nonce=1), BOB: acct(300), OPERATOR: acct(10)}, CODE_OK),
    TxCase("stable-transfer", {ALICE: acct(100, stable=500)},
           transfer(amount=200, denom=DENOM_STABLE),
           {ALICE: acct(90, 300, 1), BOB: acct(stable=200), OPERATOR: acct(10)}, CODE_OK),
    TxCase("to-existing-account", {ALICE: acct(100, nonce=7), BOB: acct(5, 6, 2)},
           transfer(amount=40, nonce=7),
           {ALICE: acct(50, nonce=8), BOB: acct(45, 6, 2), OPERATOR: acct(10)}, CODE_OK),
    TxCase("self-transfer-gpu", {ALICE: acct(1000)}, transfer(to=ALICE, amount=500),
           {ALICE: acct(990, nonce=1), OPERATOR: acct(10)}, CODE_OK),
    TxCase("self-transfer-stable", {ALICE: acct(100, stable=50)},
           transfer(to=ALICE, amount=50, denom=DENOM_STABLE),
           {ALICE: acct(90, 50, 1), OPERATOR: acct(10)}, CODE_OK),
    TxCase("whole-balance", {ALICE: acct(100)}, transfer(amount=90),
           {ALICE: acct(0, nonce=1), BOB: acct(90), OPERATOR: acct(10)}, CODE_OK),
    TxCase("zero-amount", {ALICE: acct(100)}, transfer(amount=0),
           {ALICE: acct(90, nonce=1), BOB: EMPTY_ACCOUNT, OPERATOR: acct(10)}, CODE_OK),
    TxCase("fee-to-existing-operator", {ALICE: acct(100), OPERATOR: acct(7, 8)},
           transfer(amount=1, fee=25),
           {ALICE: acct(74, nonce=1), BOB: acct(1), OPERATOR: acct(32, 8)}, CODE_OK),
    TxCase("insufficient-balance", {ALICE: acct(100)}, transfer(amount=500),
           {ALICE: acct(90, nonce=1), OPERATOR: acct(10)}, CODE_INSUFFICIENT_FUNDS),
    TxCase("insufficient-after-fee", {ALICE: acct(100)}, transfer(amount=91),
           {ALICE: acct(90, nonce=1), OPERATOR: acct(10)}, CODE_INSUFFICIENT_FUNDS),
    TxCase("insufficient-stable", {ALICE: acct(100, stable=5)},
           transfer(amount=6, denom=DENOM_STABLE),
           {ALICE: acct(90, 5, 1), OPERATOR: acct(10)}, CODE_INSUFFICIENT_FUNDS),
    TxCase("locked-gpu-not-spendable", {ALICE: acct(1000, locks=LOCKED)}, transfer(amount=391),
           {ALICE: acct(990, nonce=1, locks=LOCKED), OPERATOR: acct(10)},
           CODE_INSUFFICIENT_FUNDS),
    TxCase("unlocked-gpu-spendable", {ALICE: acct(1000, locks=LOCKED)}, transfer(amount=390),
           {ALICE: acct(600, nonce=1, locks=LOCKED), BOB: acct(390), OPERATOR: acct(10)},
           CODE_OK),
    TxCase("lock-released-at-its-height", {ALICE: acct(1000, locks=((600, HEIGHT),))},
           transfer(amount=990),
           {ALICE: acct(0, nonce=1, locks=((600, HEIGHT),)), BOB: acct(990),
            OPERATOR: acct(10)}, CODE_OK),
    TxCase("locked-gpu-stable-spendable",
           {ALICE: acct(1010, stable=50, locks=((1000, 10**9),))},
           transfer(amount=50, denom=DENOM_STABLE),
           {ALICE: acct(1000, 0, 1, locks=((1000, 10**9),)), BOB: acct(stable=50),
            OPERATOR: acct(10)}, CODE_OK),
    TxCase("recipient-gpu-overflow", {ALICE: acct(100), BOB: acct(UINT64_MAX - 5)},
           transfer(amount=10), {ALICE: acct(90, nonce=1), OPERATOR: acct(10)}, CODE_OVERFLOW),
    TxCase("recipient-stable-overflow", {ALICE: acct(100, stable=10), BOB: acct(stable=UINT64_MAX)},
           transfer(amount=1, denom=DENOM_STABLE),
           {ALICE: acct(90, 10, 1), OPERATOR: acct(10)}, CODE_OVERFLOW),
    TxCase("recipient-exactly-max", {ALICE: acct(100), BOB: acct(UINT64_MAX - 5)},
           transfer(amount=5),
           {ALICE: acct(85, nonce=1), BOB: acct(UINT64_MAX), OPERATOR: acct(10)}, CODE_OK),
    TxCase("unknown-denom", {ALICE: acct(100, stable=100)}, transfer(amount=1, denom=2),
           {ALICE: acct(90, 100, 1), OPERATOR: acct(10)}, CODE_UNKNOWN_DENOM),
    # Not includable: the state does not change at all.
    TxCase("nonce-too-low", {ALICE: acct(100, nonce=3)}, transfer(nonce=2), error=BadNonce),
    TxCase("nonce-too-high", {ALICE: acct(100, nonce=3)}, transfer(nonce=4), error=BadNonce),
    TxCase("bad-signature", {ALICE: acct(100)}, bad_signature(transfer()),
           error=InvalidSignature),
    TxCase("signed-by-another-key", {ALICE: acct(100)}, signed_by(BOB_KEY, transfer()),
           error=InvalidSignature),
    TxCase("wrong-chain-id", {ALICE: acct(100)}, transfer(chain=b"gannet-other"),
           error=WrongChainId),
    TxCase("fee-below-minimum", {ALICE: acct(100)}, transfer(fee=MIN_FEE - 1),
           error=FeeBelowMinimum),
    TxCase("cannot-pay-fee", {ALICE: acct(9)}, transfer(amount=0), error=CannotPayFee),
    TxCase("fee-only-from-locked", {ALICE: acct(1000, locks=((995, HEIGHT + 1),))},
           transfer(amount=0), error=CannotPayFee),
    TxCase("unknown-sender", {}, transfer(amount=0), error=CannotPayFee),
    TxCase("fee-recipient-overflow", {ALICE: acct(100), OPERATOR: acct(UINT64_MAX - 9)},
           transfer(amount=1), error=InvalidTransaction),
]


def expected_writes(post: dict[bytes, Account]) -> dict[bytes, bytes]:
    return {account_key(a): b"" if v == EMPTY_ACCOUNT else encode(v) for a, v in post.items()}


@pytest.mark.parametrize("case", TX_CASES, ids=[case.name for case in TX_CASES])
def test_apply_tx(case: TxCase) -> None:
    """Each case: exactly the listed accounts change, as listed; or an error and no change."""
    state = committed(genesis_writes(case.pre))
    if case.error is not None:
        with pytest.raises(case.error) as info:
            apply_tx(state, case.tx, CTX)
        assert isinstance(info.value, InvalidTransaction)
        assert state.write_set() == {}
        post = case.pre
    else:
        receipt = apply_tx(state, case.tx, CTX)
        assert receipt.code == case.code
        assert receipt.status == (RECEIPT_OK if case.code == CODE_OK else RECEIPT_FAILED)
        assert receipt.fee_paid == case.tx.tx.fee
        assert (receipt.reason == b"") == (case.code == CODE_OK)
        assert state.write_set() == expected_writes(case.post)
        post = {**case.pre, **case.post}
    for address in {ALICE, BOB, CAROL, OPERATOR, *post}:
        assert state.get_account(address) == post.get(address, EMPTY_ACCOUNT), address.hex()


def test_failed_receipt_says_why() -> None:
    state = committed(genesis_writes({ALICE: acct(100)}))
    receipt = apply_tx(state, transfer(amount=500), CTX)
    assert receipt.reason == b"insufficient gpu balance: have 90, need 500"


def test_operator_paying_its_own_fee() -> None:
    """When the sender is the fee recipient the fee goes out and comes back."""
    op_key = key(20)
    op = addr(op_key)
    ctx = replace(CTX, fee_recipient=op)
    state = committed(genesis_writes({op: acct(100)}))
    receipt = apply_tx(state, transfer(sender=op_key, amount=30, fee=15), ctx)
    assert receipt.status == RECEIPT_OK
    assert state.get_account(op) == acct(70, nonce=1)
    assert state.get_account(BOB) == acct(30)


def test_verified_skips_the_signature_check() -> None:
    """`verified=True` means the caller already checked the signature (the mempool did)."""
    stx = bad_signature(transfer(amount=5))
    state = committed(genesis_writes({ALICE: acct(100)}))
    with pytest.raises(InvalidSignature):
        apply_tx(state, stx, CTX, verified=False)
    assert apply_tx(state, stx, CTX, verified=True).status == RECEIPT_OK


def test_nonce_overflow_is_rejected() -> None:
    """The last nonce can't be used: overflow is rejected, never stored (DESIGN: amounts)."""
    state = committed(genesis_writes({ALICE: acct(100, nonce=UINT64_MAX)}))
    with pytest.raises(InvalidTransaction):
        apply_tx(state, transfer(nonce=UINT64_MAX), CTX)
    assert state.write_set() == {}


# --- supply invariant ---------------------------------------------------------------------

PARTIES = [ALICE_KEY, BOB_KEY, CAROL_KEY]
EVERYONE = [ALICE, BOB, CAROL, OPERATOR]
balances = st.one_of(st.integers(0, 10**6), st.integers(UINT64_MAX - 10**6, UINT64_MAX))
tx_plans = st.tuples(
    st.integers(0, 2),  # sender
    st.integers(0, 3),  # recipient (3 = the fee recipient)
    st.one_of(st.integers(0, 2 * 10**6), st.just(UINT64_MAX)),  # amount
    st.sampled_from([DENOM_GPU, DENOM_STABLE, DENOM_STABLE + 1]),
    st.integers(0, 2000),  # fee
    st.sampled_from([0, 0, 0, 0, 1, -1]),  # nonce offset
    st.sampled_from([True, True, True, False]),  # signed correctly?
)


@settings(max_examples=60, deadline=None)
@given(gpu=st.lists(balances, min_size=4, max_size=4),
       stable=st.lists(balances, min_size=4, max_size=4),
       locked=st.lists(st.integers(0, 10**6), min_size=3, max_size=3),
       plans=st.lists(tx_plans, max_size=12))
def test_transfers_conserve_supply(gpu: list[int], stable: list[int], locked: list[int],
                                   plans: list[tuple]) -> None:
    """Whatever transfers run (valid, failing or invalid), total GPU and stable never change."""
    pre = {a: acct(g, s) for a, g, s in zip(EVERYONE, gpu, stable, strict=True)}
    for address, amount in zip(EVERYONE, locked, strict=False):
        lock = Lock(amount=amount, release_height=HEIGHT + 1)
        pre[address] = replace(pre[address], locks=(lock,))
    state = committed(genesis_writes(pre))
    total_gpu, total_stable = sum(gpu), sum(stable)
    included = [0, 0, 0]
    for sender, to, amount, denom, fee, offset, honest in plans:
        nonce = max(state.get_account(addr(PARTIES[sender])).nonce + offset, 0)
        stx = transfer(PARTIES[sender], EVERYONE[to], amount, denom, nonce, fee)
        if not honest:
            stx = bad_signature(stx)
        try:
            apply_tx(state, stx, replace(CTX, min_fee=0))
        except InvalidTransaction:
            continue
        included[sender] += 1
        assert sum(state.get_account(a).gpu for a in EVERYONE) == total_gpu
        assert sum(state.get_account(a).stable for a in EVERYONE) == total_stable
    assert [state.get_account(addr(k)).nonce for k in PARTIES] == included
    # The write set commits what the overlay says.
    after = committed(merged(genesis_writes(pre), state.write_set()))
    assert [after.get_account(a) for a in EVERYONE] == [state.get_account(a) for a in EVERYONE]


# --- apply_block ------------------------------------------------------------------------

GENESIS_ACCOUNTS = {ALICE: acct(10_000, stable=500), BOB: acct(2_000)}


def genesis(vset: ValidatorSet = VSET) -> tuple[dict[bytes, bytes], Head]:
    writes = genesis_writes(GENESIS_ACCOUNTS, vset)
    head = Head(height=0, block_hash=sha256(b"genesis"), time_ms=1_000,
                app_hash=next_app_hash(ZERO_HASH, writes), results_hash=ZERO_HASH)
    return writes, head


def head_after(built: BuiltBlock) -> Head:
    return Head(height=built.block.header.height, block_hash=block_hash(built.block),
                time_ms=built.block.header.time_ms, app_hash=built.result.app_hash,
                results_hash=built.result.results_hash)


@dataclass(frozen=True)
class Chain:
    """Genesis and two blocks built by the single validator."""

    writes0: dict[bytes, bytes]
    head0: Head
    built1: BuiltBlock
    writes1: dict[bytes, bytes]
    head1: Head
    built2: BuiltBlock


def make_chain() -> Chain:
    writes0, head0 = genesis()
    txs1 = [transfer(amount=100), transfer(to=CAROL, amount=50, denom=DENOM_STABLE, nonce=1),
            transfer(sender=BOB_KEY, to=ALICE, amount=5_000)]  # the last one fails
    built1 = build_block(committed(writes0), head0, RULES, VAL, 2_000, EMPTY_COMMIT,
                         txs1)
    writes1 = merged(writes0, built1.result.writes)
    head1 = head_after(built1)
    commit1 = sign_commit(CHAIN, VAL_KEY, VAL, 1, 0, block_hash(built1.block))
    txs2 = [transfer(amount=1, nonce=2), transfer(sender=BOB_KEY, to=CAROL, amount=7, nonce=1)]
    built2 = build_block(committed(writes1), head1, RULES, VAL, 3_000, commit1, txs2)
    return Chain(writes0, head0, built1, writes1, head1, built2)


CHAIN_FIXTURE = make_chain()


def apply2(block: Block, vset_writes: dict[bytes, bytes] | None = None) -> None:
    """Apply a variant of block 2 on the state after block 1."""
    c = CHAIN_FIXTURE
    apply_block(committed(vset_writes or c.writes1), block, c.head1, RULES)


def test_built_blocks_replay_identically() -> None:
    """apply_block on a fresh copy of the pre-state reproduces what the proposer computed."""
    c = CHAIN_FIXTURE
    assert c.built1.rejected == () and len(c.built1.block.txs) == 3
    assert c.built2.rejected == () and len(c.built2.block.txs) == 2
    replay1 = apply_block(committed(c.writes0), c.built1.block, c.head0, RULES)
    assert replay1 == c.built1.result
    assert [r.status for r in replay1.receipts] == [RECEIPT_OK, RECEIPT_OK, RECEIPT_FAILED]
    assert replay1.tx_hashes == tuple(tx_hash(stx) for stx in c.built1.block.txs)
    assert replay1.results_hash == results_root(list(replay1.receipts))
    assert replay1.app_hash == next_app_hash(c.head0.app_hash, replay1.writes)
    replay2 = apply_block(committed(c.writes1), c.built2.block, c.head1, RULES)
    assert replay2 == c.built2.result
    # Fees of block 1 went to the proposer's operator; the failed tx paid its fee too.
    after1 = committed(c.writes1)
    assert after1.get_account(OPERATOR) == acct(3 * MIN_FEE)
    assert after1.get_account(ALICE) == acct(10_000 - 100 - 2 * MIN_FEE, 450, 2)
    assert after1.get_account(BOB) == acct(2_000 + 100 - MIN_FEE, nonce=1)
    assert after1.get_account(CAROL) == acct(stable=50)


def test_block_headers_chain() -> None:
    """Block 2 names block 1, the state after genesis and block 1's results."""
    c = CHAIN_FIXTURE
    h1, h2 = c.built1.block.header, c.built2.block.header
    assert (h1.height, h2.height) == (1, 2)
    assert h1.prev_hash == c.head0.block_hash and h2.prev_hash == block_hash(c.built1.block)
    assert h1.app_hash == c.head0.app_hash and h2.app_hash == c.built1.result.app_hash
    assert h2.results_hash == c.built1.result.results_hash
    assert h1.last_commit_hash == commit_hash(EMPTY_COMMIT)


def with_header(block: Block, **changes: object) -> Block:
    return replace(block, header=replace(block.header, **changes))


JUNK = sha256(b"junk")
HEADER_BREAKS = [
    ("version", {"version": 2}, "wrong version"),
    ("chain-id", {"chain_id": b"gannet-other"}, "wrong chain id"),
    ("height-ahead", {"height": 3}, "wrong height: expected 2, got 3"),
    ("height-repeat", {"height": 1}, "wrong height"),
    ("prev-hash", {"prev_hash": JUNK}, "wrong prev hash"),
    ("last-commit-hash", {"last_commit_hash": JUNK}, "wrong last commit hash"),
    ("tx-root", {"tx_root": JUNK}, "wrong tx root"),
    ("app-hash", {"app_hash": JUNK}, "wrong app hash"),
    ("results-hash", {"results_hash": JUNK}, "wrong results hash"),
    ("validators-hash", {"validators_hash": JUNK}, "wrong validators hash"),
    ("next-validators-hash", {"next_validators_hash": JUNK}, "wrong next validators hash"),
    ("evidence-hash", {"evidence_hash": JUNK}, "wrong evidence hash"),
    ("time-equal", {"time_ms": 2_000}, "time must increase"),
    ("time-earlier", {"time_ms": 1_999}, "time must increase"),
    ("proposer-not-validator", {"proposer": ALICE}, "is not a validator"),
]


@pytest.mark.parametrize(("changes", "message"), [row[1:] for row in HEADER_BREAKS],
                         ids=[row[0] for row in HEADER_BREAKS])
def test_one_broken_header_field(changes: dict, message: str) -> None:
    """Each header field that disagrees with the chain raises InvalidHeader saying which."""
    c = CHAIN_FIXTURE
    state = committed(c.writes1)
    with pytest.raises(InvalidHeader, match=message):
        apply_block(state, with_header(c.built2.block, **changes), c.head1, RULES)
    assert state.write_set() == {}


def test_header_checked_against_the_body() -> None:
    """Changing the txs or the last commit without the header breaks its roots."""
    block = CHAIN_FIXTURE.built2.block
    with pytest.raises(InvalidHeader, match="wrong tx root"):
        apply2(replace(block, txs=block.txs[:1]))
    other_commit = replace(block.last_commit, round=1)
    with pytest.raises(InvalidHeader, match="wrong last commit hash"):
        apply2(replace(block, last_commit=other_commit))


def test_wrong_chain_id_argument() -> None:
    c = CHAIN_FIXTURE
    with pytest.raises(InvalidHeader, match="wrong chain id"):
        apply_block(committed(c.writes1), c.built2.block, c.head1,
                    ChainRules("gannet-other", RULES.params))


def with_commit(block: Block, commit: Commit) -> Block:
    """`block` carrying `commit` as its last commit, with the header's commit hash to match."""
    return with_header(replace(block, last_commit=commit), last_commit_hash=commit_hash(commit))


def test_first_block_must_carry_an_empty_commit() -> None:
    c = CHAIN_FIXTURE
    commit = sign_commit(CHAIN, VAL_KEY, VAL, 0, 0, c.head0.block_hash)
    with pytest.raises(InvalidHeader, match="empty last commit"):
        apply_block(committed(c.writes0), with_commit(c.built1.block, commit), c.head0, RULES)


def _commit1(**changes: object) -> Commit:
    c = CHAIN_FIXTURE
    return replace(c.built2.block.last_commit, **changes)


def _flip(sig: bytes) -> bytes:
    return bytes([sig[0] ^ 1]) + sig[1:]


B1 = block_hash(CHAIN_FIXTURE.built1.block)
COMMIT_BREAKS = [
    ("height-ahead", sign_commit(CHAIN, VAL_KEY, VAL, 2, 0, B1), "commit height"),
    ("height-zero", sign_commit(CHAIN, VAL_KEY, VAL, 0, 0, B1), "commit height"),
    ("other-block", sign_commit(CHAIN, VAL_KEY, VAL, 1, 0, sha256(b"other")), "commit block"),
    ("nil-block", sign_commit(CHAIN, VAL_KEY, VAL, 1, 0, b""), "commit block"),
    ("bad-signature", _commit1(signatures=tuple(
        replace(s, signature=_flip(s.signature)) for s in _commit1().signatures)),
     "does not verify"),
    ("signed-for-other-round", _commit1(round=1), "does not verify"),
    ("signed-for-other-chain", sign_commit("gannet-other", VAL_KEY, VAL, 1, 0, B1),
     "does not verify"),
    ("unknown-signer", sign_commit(CHAIN, ALICE_KEY, ALICE, 1, 0, B1), "is not a validator"),
    ("duplicate-signer", _commit1(signatures=_commit1().signatures * 2), "signs twice"),
    ("no-signatures", _commit1(signatures=()), "not more than 2/3"),
]


@pytest.mark.parametrize(("commit", "message"), [row[1:] for row in COMMIT_BREAKS],
                         ids=[row[0] for row in COMMIT_BREAKS])
def test_bad_last_commit(commit: Commit, message: str) -> None:
    """A last commit that does not finalise the parent with +2/3 raises InvalidCommit."""
    with pytest.raises(InvalidCommit, match=message):
        apply2(with_commit(CHAIN_FIXTURE.built2.block, commit))


def test_the_good_commit_still_applies_when_reattached() -> None:
    """with_commit itself does not break a block (the breaks above are the commits)."""
    block = CHAIN_FIXTURE.built2.block
    apply2(with_commit(block, block.last_commit))


def _multi_validator_block2(powers: list[int], signers: list[int]) -> tuple[Block, dict, Head]:
    keys = [VAL_KEY, VAL2_KEY, VAL3_KEY, key(12)][: len(powers)]
    vset = ValidatorSet(validators=tuple(sorted(
        (Validator(address=addr(k), public_key=k.public_key, power=p, operator=OPERATOR)
         for k, p in zip(keys, powers, strict=True)),
        key=lambda v: v.address)))
    writes0, head0 = genesis(vset)
    built1 = build_block(committed(writes0), head0, RULES, VAL, 2_000, EMPTY_COMMIT, [])
    b1 = block_hash(built1.block)
    sigs = tuple(s for i in signers
                 for s in sign_commit(CHAIN, keys[i], addr(keys[i]), 1, 0, b1).signatures)
    commit = Commit(height=1, round=0, block_hash=b1, signatures=sigs)
    writes1 = merged(writes0, built1.result.writes)
    head1 = head_after(built1)
    built2 = build_block(committed(writes1), head1, RULES, VAL, 3_000, commit, [])
    return built2.block, writes1, head1


@pytest.mark.parametrize(("powers", "signers", "enough"), [
    ([50, 50], [0], False),       # half is not +2/3
    ([50, 50], [0, 1], True),
    ([50, 50], [1, 0], True),     # signature order does not matter
    ([10, 10, 10], [0, 1], False),  # exactly 2/3 is not more than 2/3
    ([10, 10, 10, 10], [0, 1, 3], True),
    ([67, 33], [0], True),        # 67 of 100 > 2/3
    ([66, 34], [0], False),
])
def test_commit_needs_more_than_two_thirds(powers: list[int], signers: list[int],
                                           enough: bool) -> None:
    block, writes1, head1 = _multi_validator_block2(powers, signers)
    if enough:
        apply_block(committed(writes1), block, head1, RULES)
    else:
        with pytest.raises(InvalidCommit, match="not more than 2/3"):
            apply_block(committed(writes1), block, head1, RULES)


def with_txs(block: Block, txs: tuple[SignedTx, ...]) -> Block:
    return with_header(replace(block, txs=txs), tx_root=tx_root(txs))


@pytest.mark.parametrize(("position", "bad", "cause"), [
    (1, transfer(amount=1, nonce=9), BadNonce),
    (0, bad_signature(transfer(amount=1, nonce=2)), InvalidSignature),
    (1, transfer(amount=1, nonce=3, fee=MIN_FEE - 1), FeeBelowMinimum),
    (1, transfer(sender=key(30), amount=0), CannotPayFee),
    (1, transfer(amount=1, nonce=3, chain=b"gannet-other"), WrongChainId),
])
def test_block_with_an_invalid_tx(position: int, bad: SignedTx, cause: type) -> None:
    """One unincludable tx makes the whole block invalid, and the error says which."""
    good = transfer(amount=1, nonce=2)
    txs = (good, bad) if position == 1 else (bad, good)
    with pytest.raises(InvalidBlockTx) as info:
        apply2(with_txs(CHAIN_FIXTURE.built2.block, txs))
    assert info.value.index == position
    assert info.value.tx_hash == tx_hash(bad)
    assert isinstance(info.value.cause, cause)


def test_a_tx_replayed_in_the_next_block_is_invalid() -> None:
    """A tx already included (its nonce used) can't be included again."""
    replayed = CHAIN_FIXTURE.built1.block.txs[0]
    with pytest.raises(InvalidBlockTx) as info:
        apply2(with_txs(CHAIN_FIXTURE.built2.block, (replayed,)))
    assert isinstance(info.value.cause, BadNonce)


def _double_sign(height: int) -> DuplicateVoteEvidence:
    votes = sorted((sign_vote(VAL_KEY, CHAIN, Vote(vote_type=VOTE_PRECOMMIT, height=height,
                                                   round=0, block_hash=h, validator=VAL))
                    for h in (sha256(b"a"), sha256(b"b"))), key=lambda v: v.vote.block_hash)
    return DuplicateVoteEvidence(vote_a=votes[0], vote_b=votes[1])


def test_block_with_evidence_records_the_offence() -> None:
    """Pre-state after block 1; block 2 carries evidence of a height-1 double sign; the
    post-state records the offence (committed at 2) and nothing else changes for it."""
    c = CHAIN_FIXTURE
    evidence = (_double_sign(1),)
    block = with_header(replace(c.built2.block, evidence=evidence),
                        evidence_hash=evidence_root(evidence))
    plain = apply_block(committed(c.writes1), c.built2.block, c.head1, RULES)
    state = committed(c.writes1)
    result = apply_block(state, block, c.head1, RULES)
    key_ = EVIDENCE_PREFIX + offence_key(offence_of(evidence[0]))
    assert result.writes == {**plain.writes, key_: encode(CommittedEvidence(
        committed_at=2, evidence_hash=sha256(encode(evidence[0]))))}
    assert evidence_committed_at(state, offence_of(evidence[0])) == 2
    # Committed once, refused from then on.
    writes2 = merged(c.writes1, result.writes)
    with pytest.raises(InvalidEvidence, match="already committed at height 2"):
        validate_evidence(CHAIN, committed(writes2), evidence[0], 3, 100)


def test_block_with_invalid_evidence_is_invalid() -> None:
    """Evidence in the wrong order is refused with the reason, even with a matching hash."""
    good = _double_sign(1)
    evidence = (replace(good, vote_a=good.vote_b, vote_b=good.vote_a),)
    block = with_header(replace(CHAIN_FIXTURE.built2.block, evidence=evidence),
                        evidence_hash=evidence_root(evidence))
    with pytest.raises(InvalidEvidence, match=r"evidence 0 is invalid: .*canonical order"):
        apply2(block)


def test_build_block_includes_valid_evidence_and_reports_the_rest() -> None:
    c = CHAIN_FIXTURE
    good = _double_sign(1)
    swapped = replace(good, vote_a=good.vote_b, vote_b=good.vote_a)
    built = build_block(committed(c.writes1), c.head1, RULES, VAL, 3_000,
                        c.built2.block.last_commit, [], evidence=(swapped, good, good))
    assert built.block.evidence == (good,)
    assert built.block.header.evidence_hash == evidence_root((good,))
    reasons = [reason for _, reason in built.rejected_evidence]
    assert "canonical order" in reasons[0] and "duplicate" in reasons[1]
    assert [h for h, _ in built.rejected_evidence] == [sha256(encode(swapped)),
                                                       sha256(encode(good))]
    replay = apply_block(committed(c.writes1), built.block, c.head1, RULES)
    assert replay == built.result


# --- build_block ----------------------------------------------------------------------


@pytest.mark.parametrize(("invalid", "reason"), [
    (transfer(amount=10, nonce=5), "bad nonce"),
    (bad_signature(transfer(amount=11, nonce=1)), "signature"),
    (transfer(amount=12, nonce=1, chain=b"gannet-other"), "chain id"),
])
def test_build_block_drops_invalid_candidates(invalid: SignedTx, reason: str) -> None:
    """Unincludable candidates are left out and reported; failing ones are included."""
    writes0, head0 = genesis()
    ok0 = transfer(amount=10)
    failing = transfer(sender=BOB_KEY, to=CAROL, amount=10**9)
    ok1 = transfer(sender=BOB_KEY, to=CAROL, amount=5, nonce=1)
    built = build_block(committed(writes0), head0, RULES, VAL, 2_000, EMPTY_COMMIT,
                        [ok0, invalid, failing, ok1])
    assert built.block.txs == (ok0, failing, ok1)
    assert [h for h, _ in built.rejected] == [tx_hash(invalid)]
    assert reason in built.rejected[0][1]
    assert [r.status for r in built.result.receipts] == [RECEIPT_OK, RECEIPT_FAILED, RECEIPT_OK]
    replay = apply_block(committed(writes0), built.block, head0, RULES)
    assert replay == built.result


def test_build_block_refuses_a_proposer_outside_the_set() -> None:
    writes0, head0 = genesis()
    with pytest.raises(ValueError, match="not in the validator set"):
        build_block(committed(writes0), head0, RULES, ALICE, 2_000, EMPTY_COMMIT, [])


def test_is_verified_is_trusted() -> None:
    """A tx the caller marks verified skips the signature check in both builder and replay."""
    writes0, head0 = genesis()
    forged = bad_signature(transfer(amount=10))
    trusted = {tx_hash(forged)}
    built = build_block(committed(writes0), head0, RULES, VAL, 2_000, EMPTY_COMMIT,
                        [forged], is_verified=trusted.__contains__)
    assert built.block.txs == (forged,)
    assert apply_block(committed(writes0), built.block, head0, RULES,
                       is_verified=trusted.__contains__) == built.result
    with pytest.raises(InvalidBlockTx) as info:
        apply_block(committed(writes0), built.block, head0, RULES)
    assert isinstance(info.value.cause, InvalidSignature)


def test_empty_block_changes_only_the_validator_history_and_the_economy_books() -> None:
    """An empty block records that its set also signs height 3, mints its emission into the
    rewards module, and updates the supply, distribution and buyback books; nothing else."""
    writes0, head0 = genesis()
    built = build_block(committed(writes0), head0, RULES, VAL, 2_000, EMPTY_COMMIT, [])
    since_genesis = encode(ValidatorSetSince(height=1))
    assert built.result.writes[validators_since_key(3)] == since_genesis
    assert set(built.result.writes) == {
        validators_since_key(3), account_key(module_address("rewards")), SUPPLY_KEY,
        b"dc", b"de", b"dt", b"xb"}
    assert built.result.receipts == ()
    assert built.result.results_hash == ZERO_HASH
    assert built.result.app_hash == next_app_hash(head0.app_hash, built.result.writes)


def test_next_block_time_always_moves_forward() -> None:
    head = CHAIN_FIXTURE.head1
    assert next_block_time(head, head.time_ms + 500) == head.time_ms + 500
    assert next_block_time(head, head.time_ms) == head.time_ms + 1
    assert next_block_time(head, 0) == head.time_ms + 1


def test_build_block_skips_a_senders_later_txs_after_a_rejection() -> None:
    """After a sender's tx is rejected, its later nonces are left out, not rejected."""
    writes0, head0 = genesis()
    first = transfer(nonce=0, fee=MIN_FEE - 1)  # below the minimum: rejected
    later = transfer(nonce=1)
    other = transfer(sender=BOB_KEY, to=CAROL)
    built = build_block(committed(writes0), head0, RULES, VAL, 2_000, EMPTY_COMMIT,
                        [first, later, other])
    assert [tx_hash(stx) for stx in built.block.txs] == [tx_hash(other)]
    assert [h for h, _ in built.rejected] == [tx_hash(first)]


def test_a_forged_tx_does_not_stall_the_sender_it_names() -> None:
    """A bad-signature tx claiming a sender's key and nonce leaves its real tx includable."""
    writes0, head0 = genesis()
    forged = bad_signature(transfer(amount=99))
    real = transfer(amount=10)
    built = build_block(committed(writes0), head0, RULES, VAL, 2_000, EMPTY_COMMIT,
                        [forged, real])
    assert built.block.txs == (real,)
    assert [h for h, _ in built.rejected] == [tx_hash(forged)]


@pytest.mark.parametrize("module", MODULE_NAMES)
def test_transfers_to_module_accounts_fail_and_pay_only_the_fee(module: str) -> None:
    """Module accounts take money only through their own rules."""
    state = committed(genesis_writes({ALICE: acct(gpu=10_000, stable=10)}))
    receipt = apply_tx(state, transfer(to=module_address(module), amount=5), CTX)
    assert (receipt.status, receipt.code) == (RECEIPT_FAILED, CODE_MODULE_ACCOUNT)
    assert state.get_account(ALICE) == acct(gpu=10_000 - MIN_FEE, stable=10, nonce=1)
    assert state.get_account(module_address(module)).gpu == 0


def test_a_tx_kind_without_a_rule_is_never_includable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kind the codec admits but no rule applies is refused before its fee is charged."""
    from chain.records import PayRevenue
    from consensus import economy
    from consensus.errors import UnknownTxKind

    monkeypatch.delitem(economy.TX_HANDLERS, PayRevenue)
    state = committed(genesis_writes({ALICE: acct(gpu=10_000, stable=10)}))
    tx = Tx(chain_id=CHAIN.encode(), sender=ALICE_KEY.public_key, nonce=0, fee=MIN_FEE,
            body=PayRevenue(amount=1))
    with pytest.raises(UnknownTxKind, match="PayRevenue"):
        apply_tx(state, sign_tx(ALICE_KEY, tx), CTX)
    assert state.write_set() == {}
