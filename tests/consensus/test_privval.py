"""The double-sign-safe signer: the (height, round, step) rule, persistence before
release, the state file's integrity, and the start-up check against the store.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from chain.address import address_from_public_key
from chain.crypto import CryptoError, SigningKey
from chain.records import (
    NO_POL_ROUND,
    STEP_PRECOMMIT,
    STEP_PREVOTE,
    STEP_PROPOSE,
    VOTE_PRECOMMIT,
    VOTE_PREVOTE,
    Block,
    Commit,
    CommitSig,
    Header,
    Proposal,
    Vote,
)
from chain.signing import verify_proposal_signature, verify_vote_signature
from chain.store import BlockStore, Head
from consensus import privval
from consensus.errors import DoubleSignRefused, SignStateBehind, SignStateCorrupted
from consensus.privval import (
    ZERO_SIGN_STATE,
    FileSigner,
    SignState,
    check_double_sign_risk,
    init_sign_state,
    load_sign_state,
    own_signed_heights,
    save_sign_state,
)

CHAIN = "gannet-privval"
KEY = SigningKey.from_seed(bytes(range(32)))
ADDR = address_from_public_key(KEY.public_key)
OTHER = address_from_public_key(SigningKey.from_seed(bytes(32)).public_key)


def vote(height: int, round_: int, vote_type: int = VOTE_PREVOTE, block: int = 1) -> Vote:
    return Vote(vote_type=vote_type, height=height, round=round_,
                block_hash=bytes([block]) * 32, validator=ADDR)


def proposal(height: int, round_: int, block: int = 1) -> Proposal:
    return Proposal(height=height, round=round_, pol_round=NO_POL_ROUND,
                    block_hash=bytes([block]) * 32, proposer=ADDR)


def sign(signer: FileSigner, request) -> bytes:
    if isinstance(request, Vote):
        return signer.sign_vote(request).signature
    return signer.sign_proposal(request).signature


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "sign_state.json"


# --- the rule -----------------------------------------------------------------------

LAST = vote(10, 2)  # the signer last signed a prevote at height 10, round 2

RULE_TABLE = [
    ("same prevote again", LAST, "same"),
    ("prevote for another block, same step", vote(10, 2, block=2), "refuse"),
    ("nil prevote, same step", replace(LAST, block_hash=b""), "refuse"),
    ("precommit, same round", vote(10, 2, VOTE_PRECOMMIT), "sign"),
    ("proposal, next round", proposal(10, 3), "sign"),
    ("prevote, next round", vote(10, 3, block=2), "sign"),
    ("proposal, next height round 0", proposal(11, 0), "sign"),
    ("proposal, same round (lower step)", proposal(10, 2), "refuse"),
    ("precommit, earlier round", vote(10, 1, VOTE_PRECOMMIT), "refuse"),
    ("precommit, earlier height later round", vote(9, 5, VOTE_PRECOMMIT), "refuse"),
]


@pytest.mark.parametrize(("name", "request_", "outcome"), RULE_TABLE,
                         ids=[row[0] for row in RULE_TABLE])
def test_rule_table(state_path: Path, name: str, request_, outcome: str) -> None:
    signer = FileSigner(KEY, CHAIN, state_path)
    first = sign(signer, LAST)
    before = load_sign_state(state_path)
    if outcome == "refuse":
        with pytest.raises(DoubleSignRefused):
            sign(signer, request_)
        assert load_sign_state(state_path) == before
        return
    signature = sign(signer, request_)
    if outcome == "same":
        assert signature == first
        assert load_sign_state(state_path) == before
    else:
        assert signature != first
        after = load_sign_state(state_path)
        assert after is not None and after.signature == signature
        assert (after.height, after.round) == (request_.height, request_.round)


def test_steps_order_propose_prevote_precommit(state_path: Path) -> None:
    signer = FileSigner(KEY, CHAIN, state_path)
    steps = []
    for request in (proposal(1, 0), vote(1, 0), vote(1, 0, VOTE_PRECOMMIT)):
        sign(signer, request)
        steps.append(signer.state.step)
    assert steps == [STEP_PROPOSE, STEP_PREVOTE, STEP_PRECOMMIT]
    with pytest.raises(DoubleSignRefused):
        sign(signer, vote(1, 0, block=2))  # a different prevote below the last step


def test_earlier_signatures_of_the_height_are_handed_out_again_after_a_restart(
        state_path: Path) -> None:
    """Killed after signing a prevote and a precommit in one engine step, before either
    reached the WAL: the restarted node must get that prevote again, or it can never
    prevote at this height (the others wait for exactly its vote)."""
    first = FileSigner(KEY, CHAIN, state_path)
    prevote = sign(first, vote(4, 0))
    sign(first, vote(4, 0, VOTE_PRECOMMIT))
    again = FileSigner(KEY, CHAIN, state_path)
    assert sign(again, vote(4, 0)) == prevote
    with pytest.raises(DoubleSignRefused):
        sign(again, vote(4, 0, block=7))
    sign(again, vote(5, 0))  # a new height forgets the old one's signatures
    with pytest.raises(DoubleSignRefused):
        sign(again, vote(4, 0))
    assert again.state.recent == ()


def test_a_sign_state_file_without_recent_signatures_still_loads(state_path: Path) -> None:
    import json

    signer = FileSigner(KEY, CHAIN, state_path)
    sign(signer, vote(2, 0))
    doc = json.loads(state_path.read_text())
    assert doc.pop("recent") == []
    state_path.write_text(json.dumps(doc))
    assert load_sign_state(state_path) == signer.state


def test_signatures_verify(state_path: Path) -> None:
    signer = FileSigner(KEY, CHAIN, state_path)
    sp = signer.sign_proposal(proposal(3, 0))
    sv = signer.sign_vote(vote(3, 0))
    assert verify_proposal_signature(CHAIN, sp, KEY.public_key)
    assert verify_vote_signature(CHAIN, sv, KEY.public_key)
    assert not verify_vote_signature("other-chain", sv, KEY.public_key)
    assert signer.address == ADDR


def test_refuses_to_sign_for_another_validator(state_path: Path) -> None:
    signer = FileSigner(KEY, CHAIN, state_path)
    with pytest.raises(CryptoError):
        signer.sign_vote(replace(vote(1, 0), validator=OTHER))
    with pytest.raises(ValueError, match="vote type"):
        signer.sign_vote(replace(vote(1, 0), vote_type=9))
    assert load_sign_state(state_path) is None


# --- persistence ----------------------------------------------------------------------


def test_state_survives_a_new_signer(state_path: Path) -> None:
    first = FileSigner(KEY, CHAIN, state_path).sign_vote(vote(5, 1, VOTE_PRECOMMIT))
    restarted = FileSigner(KEY, CHAIN, state_path)
    assert restarted.sign_vote(vote(5, 1, VOTE_PRECOMMIT)) == first
    with pytest.raises(DoubleSignRefused):
        restarted.sign_vote(vote(5, 1, VOTE_PRECOMMIT, block=2))
    with pytest.raises(DoubleSignRefused):
        restarted.sign_vote(vote(5, 0, VOTE_PRECOMMIT))
    assert restarted.sign_proposal(proposal(6, 0)).proposal.height == 6


def test_state_is_on_disk_when_the_signature_is_returned(state_path: Path,
                                                         monkeypatch) -> None:
    seen_on_disk = []

    def writer(path, data, mode=0o644):
        real_write(path, data, mode)
        seen_on_disk.append(load_sign_state(state_path))

    real_write = privval.write_file_atomic
    monkeypatch.setattr(privval, "write_file_atomic", writer)
    signed = FileSigner(KEY, CHAIN, state_path).sign_vote(vote(7, 0))
    assert len(seen_on_disk) == 1
    assert seen_on_disk[0] == load_sign_state(state_path)
    assert seen_on_disk[0].signature == signed.signature
    assert (seen_on_disk[0].height, seen_on_disk[0].round, seen_on_disk[0].step) == (7, 0, 2)


def test_a_failed_write_returns_no_signature(state_path: Path, monkeypatch) -> None:
    signer = FileSigner(KEY, CHAIN, state_path)
    signer.sign_vote(vote(7, 0))
    before = state_path.read_bytes()

    def failing(path, data, mode=0o644):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(privval, "write_file_atomic", failing)
    with pytest.raises(OSError, match="No space"):
        signer.sign_vote(vote(7, 0, VOTE_PRECOMMIT))
    assert state_path.read_bytes() == before
    assert signer.state == load_sign_state(state_path)
    monkeypatch.undo()
    # With the disk back, the same request is signed (nothing was ever released).
    assert signer.sign_vote(vote(7, 0, VOTE_PRECOMMIT)).vote.vote_type == VOTE_PRECOMMIT


def test_init_writes_the_zero_state(state_path: Path) -> None:
    init_sign_state(state_path)
    assert load_sign_state(state_path) == ZERO_SIGN_STATE
    assert oct(state_path.stat().st_mode & 0o777) == "0o600"
    assert FileSigner(KEY, CHAIN, state_path).sign_vote(vote(1, 0)).vote.height == 1


# --- a damaged file is refused ------------------------------------------------------


def saved_doc(state_path: Path) -> dict:
    FileSigner(KEY, CHAIN, state_path).sign_vote(vote(12, 1))
    return json.loads(state_path.read_text())


def tamper_height(doc: dict) -> dict:
    return {**doc, "height": 3}


CORRUPTIONS = [
    ("torn", lambda raw, doc: raw[: len(raw) // 2]),
    ("empty", lambda raw, doc: b""),
    ("not utf-8", lambda raw, doc: b"\xff\xfe" + raw),
    ("lower height, old checksum", lambda raw, doc: json.dumps(tamper_height(doc)).encode()),
    ("missing field", lambda raw, doc: json.dumps(
        {k: v for k, v in doc.items() if k != "signature"}).encode()),
    ("extra field", lambda raw, doc: json.dumps({**doc, "x": 1}).encode()),
    ("string height", lambda raw, doc: json.dumps({**doc, "height": "12"}).encode()),
    ("bad hex", lambda raw, doc: json.dumps({**doc, "sign_bytes": "zz"}).encode()),
    ("short digest", lambda raw, doc: json.dumps({**doc, "sign_bytes": "abcd"}).encode()),
    ("negative round", lambda raw, doc: json.dumps({**doc, "round": -1}).encode()),
    ("a list", lambda raw, doc: b"[1, 2]"),
]


@pytest.mark.parametrize(("name", "damage"), CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_damaged_state_file_is_refused(state_path: Path, name: str, damage) -> None:
    doc = saved_doc(state_path)
    state_path.write_bytes(damage(state_path.read_bytes(), doc))
    with pytest.raises(SignStateCorrupted, match="sign state"):
        load_sign_state(state_path)
    with pytest.raises(SignStateCorrupted):
        FileSigner(KEY, CHAIN, state_path)


def test_state_file_round_trips_through_its_checksum(state_path: Path) -> None:
    state = SignState(height=2**64 - 1, round=2**32 - 1, step=3, sign_bytes=b"\x01" * 32,
                      signature=b"\x02" * 64)
    save_sign_state(state_path, state)
    assert load_sign_state(state_path) == state
    assert load_sign_state(state_path.parent / "absent.json") is None


# --- start-up check against the store --------------------------------------------------


def test_missing_state_with_an_empty_chain_is_fine() -> None:
    check_double_sign_risk(None, 0, [])


def test_missing_state_with_blocks_is_behind() -> None:
    with pytest.raises(SignStateBehind, match="--unsafe-skip-double-sign-check") as caught:
        check_double_sign_risk(None, 4, [])
    assert "height 4" in str(caught.value)


def test_state_behind_own_signatures_in_the_store() -> None:
    state = replace(ZERO_SIGN_STATE, height=10, step=STEP_PRECOMMIT)
    check_double_sign_risk(state, 30, [8, 9, 10])
    check_double_sign_risk(state, 30, [])
    with pytest.raises(SignStateBehind, match="height 12") as caught:
        check_double_sign_risk(state, 30, [9, 12, 11])
    assert "--unsafe-skip-double-sign-check" in str(caught.value)


def fake_block(height: int) -> Block:
    """A block the store accepts (it checks nothing): only its height matters here."""
    zero = bytes(32)
    header = Header(version=1, chain_id=CHAIN.encode(), height=height, time_ms=height,
                    prev_hash=zero, last_commit_hash=zero, tx_root=zero, app_hash=zero,
                    results_hash=zero, validators_hash=zero, next_validators_hash=zero,
                    evidence_hash=zero, proposer=ADDR)
    return Block(header=header, txs=(), evidence=(),
                 last_commit=Commit(height=0, round=0, block_hash=b"", signatures=()))


def commit_fake_blocks(store: BlockStore, signers_by_height: dict[int, tuple[bytes, ...]]) -> None:
    """Commit one fake block per height whose commit is signed by the given addresses."""
    for height in sorted(signers_by_height):
        block = fake_block(height)
        sigs = tuple(CommitSig(validator=a, signature=bytes(64))
                     for a in signers_by_height[height])
        commit = Commit(height=height, round=0, block_hash=bytes(32), signatures=sigs)
        head = Head(height=height, block_hash=bytes(32), time_ms=height, app_hash=bytes(32),
                    results_hash=bytes(32))
        store.commit_block(block, commit, [], {}, head)


def test_own_signed_heights_reads_the_last_commits(tmp_path: Path) -> None:
    store = BlockStore(str(tmp_path / "store"))
    try:
        assert own_signed_heights(store, ADDR) == []
        commit_fake_blocks(store, {h: (OTHER, ADDR) if h % 3 == 0 else (OTHER,)
                                   for h in range(1, 13)})
        assert own_signed_heights(store, ADDR) == [3, 6, 9, 12]
        assert own_signed_heights(store, ADDR, last_n=5) == [9, 12]
        assert own_signed_heights(store, OTHER, last_n=2) == [11, 12]
    finally:
        store.close()
