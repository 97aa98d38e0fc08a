"""Ed25519 keys, the pinned acceptance rule, signing bytes and batch verification.

The vector tests read /work/shared/vectors/ed25519 (the `shared/` folder beside
the repository root), or `$GANNET_VECTORS_DIR/ed25519` when that variable is
set. Without the folder they skip; with the variable set they must find it.
"""

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain.crypto import (
    CryptoError,
    SignatureVerifier,
    SigningKey,
    sign_bytes,
    verify,
    verify_batch,
)

GROUP_ORDER = 2**252 + 27742317777372353535851937790883648493

# --- test vectors -----------------------------------------------------------------------------


def _vectors_dir() -> Path | None:
    """The ed25519 vector folder, or None when it is absent and not required."""
    configured = os.environ.get("GANNET_VECTORS_DIR")
    if configured:
        folder = Path(configured) / "ed25519"
        if not folder.is_dir():
            pytest.fail(f"GANNET_VECTORS_DIR is set but {folder} does not exist")
        return folder
    folder = Path(__file__).resolve().parents[2].parent / "shared" / "vectors" / "ed25519"
    return folder if folder.is_dir() else None


@pytest.fixture(scope="module")
def vectors_dir() -> Path:
    """The vector folder; skips the test when the shared vectors are not checked out."""
    folder = _vectors_dir()
    if folder is None:
        pytest.skip("shared/vectors/ed25519 not found beside the repo; set GANNET_VECTORS_DIR")
    return folder


@pytest.fixture(scope="module")
def cctv(vectors_dir: Path) -> list[dict[str, Any]]:
    """C2SP CCTV 'Taming the many EdDSAs' edge-case vectors."""
    return json.loads((vectors_dir / "cctv_ed25519vectors.json").read_text())


@pytest.fixture(scope="module")
def wycheproof(vectors_dir: Path) -> list[tuple[bytes, bytes, bytes, bool]]:
    """Wycheproof EdDSA verify vectors as (key, message, signature, valid)."""
    doc = json.loads((vectors_dir / "wycheproof_ed25519_test.json").read_text())
    cases = []
    for group in doc["testGroups"]:
        key = bytes.fromhex(group["publicKey"]["pk"])
        for test in group["tests"]:
            assert test["result"] in ("valid", "invalid"), test
            valid = test["result"] == "valid"
            cases.append((key, bytes.fromhex(test["msg"]), bytes.fromhex(test["sig"]), valid))
    return cases


# Flags under which the pinned rule rejects a CCTV vector (all CCTV vectors satisfy the
# cofactored equation and have canonical S):
#   low_order_A / low_order_R    - small-order key or R: rejected outright.
#   non_canonical_A / _R         - A must be canonical; R is compared as bytes with a
#                                  canonical encoding, so a non-canonical R never matches.
#   low_order_residue            - [S]B - R - [k]A is a non-zero torsion point: the
#                                  cofactorless equation fails.
# Not rejecting: low_order_component_A / _R (mixed-order points whose torsion parts cancel
# in the cofactorless equation). `reencoded_k` only occurs with a non-canonical A or R,
# so it never decides a verdict. The flags decide every one of the 914 vectors; no
# vector needs pinning by number.
REJECTING_FLAGS = frozenset(
    {"low_order_A", "low_order_R", "non_canonical_A", "non_canonical_R", "low_order_residue"}
)
KNOWN_FLAGS = REJECTING_FLAGS | {
    "low_order_component_A",
    "low_order_component_R",
    "reencoded_k",
}


def expected_accept(flags: list[str] | None) -> bool:
    """The pinned rule's verdict on a CCTV vector, from its flags alone."""
    return not REJECTING_FLAGS.intersection(flags or ())


def _cctv_item(vector: dict[str, Any]) -> tuple[bytes, bytes, bytes]:
    """(public_key, message, signature) of a CCTV vector."""
    return bytes.fromhex(vector["key"]), vector["msg"].encode(), bytes.fromhex(vector["sig"])


def test_cctv_flags_are_all_known(cctv: list[dict[str, Any]]) -> None:
    """A new flag in the vectors would need a decision in expected_accept."""
    assert len(cctv) == 914
    seen = {flag for vector in cctv for flag in vector["flags"] or ()}
    assert seen <= KNOWN_FLAGS


def test_cctv_verdicts_follow_the_pinned_rule(cctv: list[dict[str, Any]]) -> None:
    """All 914 verdicts agree with the rule derived from flags; exactly 43 accept."""
    disagreements = [
        (vector["number"], vector["flags"])
        for vector in cctv
        if verify(*_cctv_item(vector)) != expected_accept(vector["flags"])
    ]
    assert disagreements == []
    assert sum(expected_accept(vector["flags"]) for vector in cctv) == 43


def test_cctv_verdicts_through_the_thread_pool(cctv: list[dict[str, Any]]) -> None:
    """Batch verification on a pool gives the same verdicts, in order."""
    items = [_cctv_item(vector) for vector in cctv]
    with SignatureVerifier(workers=2, min_chunk=1) as verifier:
        verdicts = verifier.verify_many(items)
    assert verdicts == [expected_accept(vector["flags"]) for vector in cctv]


def test_wycheproof_all_151_match(wycheproof: list[tuple[bytes, bytes, bytes, bool]]) -> None:
    """libsodium agrees with every Wycheproof verdict (S >= L, bad encodings, truncations)."""
    assert len(wycheproof) == 151
    mismatches = [
        (index, valid)
        for index, (key, message, signature, valid) in enumerate(wycheproof)
        if verify(key, message, signature) != valid
    ]
    assert mismatches == []


# --- the rule, without vector files ----------------------------------------------------------


def test_rfc8032_test_1() -> None:
    """RFC 8032 section 7.1 TEST 1: the empty message."""
    key = SigningKey.from_seed(
        bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    )
    assert key.public_key.hex() == (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    )
    signature = key.sign(b"")
    assert signature.hex() == (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065"
        "224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    assert verify(key.public_key, b"", signature)


def test_non_canonical_s_is_rejected() -> None:
    """S + L satisfies the same equation, but S must be below L: no malleability."""
    key = SigningKey.from_seed(bytes(range(32)))
    signature = key.sign(b"pay 5 GPU")
    s = int.from_bytes(signature[32:], "little")
    malleated = signature[:32] + (s + GROUP_ORDER).to_bytes(32, "little")
    assert verify(key.public_key, b"pay 5 GPU", signature)
    assert not verify(key.public_key, b"pay 5 GPU", malleated)


def test_small_order_key_is_rejected() -> None:
    """The identity key with R = identity and S = 0 satisfies the equation; it is rejected."""
    identity = (1).to_bytes(32, "little")
    assert not verify(identity, b"anything", identity + bytes(32))


# --- keys and signatures -----------------------------------------------------------------------


@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=256))
def test_sign_verify_round_trip(seed: bytes, message: bytes) -> None:
    """A key's signature verifies under its public key, deterministically."""
    key = SigningKey.from_seed(seed)
    signature = key.sign(message)
    assert len(signature) == 64 and len(key.public_key) == 32
    assert signature == key.sign(message)
    assert verify(key.public_key, message, signature)
    assert verify_batch([(key.public_key, message, signature)]) == [True]


@given(
    seed=st.binary(min_size=32, max_size=32),
    message=st.binary(min_size=1, max_size=64),
    part=st.sampled_from(["message", "signature", "key"]),
    bit=st.integers(min_value=0),
)
def test_any_single_bit_flip_fails(seed: bytes, message: bytes, part: str, bit: int) -> None:
    """Flipping any one bit of the message, signature or key makes verification fail."""
    key = SigningKey.from_seed(seed)
    fields = {"key": key.public_key, "message": message, "signature": key.sign(message)}
    target = bytearray(fields[part])
    index = bit % (8 * len(target))
    target[index // 8] ^= 1 << (index % 8)
    fields[part] = bytes(target)
    assert not verify(fields["key"], fields["message"], fields["signature"])


_garbage = st.one_of(
    st.binary(max_size=100),
    st.none(),
    st.integers(),
    st.text(max_size=70),
    st.lists(st.integers(0, 255), max_size=70),
    st.builds(bytearray, st.binary(max_size=70)),
    st.builds(memoryview, st.binary(max_size=70)),
)


@given(public_key=_garbage, message=_garbage, signature=_garbage)
def test_garbage_never_raises(public_key: Any, message: Any, signature: Any) -> None:
    """verify answers False for any malformed input and never raises."""
    assert verify(public_key, message, signature) is False


@given(
    public_key=st.binary(min_size=32, max_size=32),
    message=st.binary(max_size=64),
    signature=st.binary(min_size=64, max_size=64),
)
def test_random_signatures_fail(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Right-sized random bytes are not a valid signature."""
    assert verify(public_key, message, signature) is False


def test_repr_hides_the_seed() -> None:
    """The repr names the public key and never the seed."""
    seed = bytes(range(100, 132))
    key = SigningKey.from_seed(seed)
    assert seed.hex() not in repr(key) and seed.hex() not in str(key)
    assert key.public_key.hex() in repr(key)


def test_keys_are_values() -> None:
    """Equal seeds make equal, hashable keys; generate() makes distinct keys."""
    assert SigningKey.from_seed(bytes(32)) == SigningKey.from_seed(bytes(32))
    assert len({SigningKey.from_seed(bytes(32)), SigningKey.from_seed(bytes(32))}) == 1
    assert SigningKey.generate() != SigningKey.generate()
    assert SigningKey.from_seed(bytes(32)).seed == bytes(32)


@pytest.mark.parametrize("seed", [b"", bytes(31), bytes(33), "00" * 32, None, 7])
def test_bad_seed_is_rejected(seed: Any) -> None:
    """A seed must be exactly 32 bytes."""
    with pytest.raises(CryptoError, match="seed must be 32 bytes"):
        SigningKey.from_seed(seed)


def test_sign_rejects_non_bytes() -> None:
    """Only bytes are signed."""
    with pytest.raises(CryptoError, match="message must be bytes"):
        SigningKey.generate().sign("text")  # type: ignore[arg-type]


# --- signing bytes ------------------------------------------------------------------------------


def test_sign_bytes_layout() -> None:
    """SHA-256(u8 len || chain id || u8 len || tag || body), pinned by a known answer."""
    expected = hashlib.sha256(b"\x0dgannet-devnet" + b"\x04vote" + b"\x01\x02").digest()
    digest = sign_bytes("gannet-devnet", b"vote", b"\x01\x02")
    assert digest == expected
    assert digest.hex() == "fe6629f65b7e4ba816d31072357b1b961d98b4ce9ee0a2311ef88628936bebbb"


@given(
    a=st.tuples(st.text(min_size=1, max_size=16), st.binary(min_size=1, max_size=8), st.binary()),
    b=st.tuples(st.text(min_size=1, max_size=16), st.binary(min_size=1, max_size=8), st.binary()),
)
def test_sign_bytes_separates_domains(
    a: tuple[str, bytes, bytes], b: tuple[str, bytes, bytes]
) -> None:
    """Different (chain id, tag, body) triples never share signing bytes."""
    if a != b:
        assert sign_bytes(*a) != sign_bytes(*b)


@pytest.mark.parametrize(
    ("chain_id", "tag", "body", "message"),
    [
        ("x" * 65, b"vote", b"", "chain id must be 1..64"),
        ("é" * 33, b"vote", b"", "chain id must be 1..64"),
        ("", b"vote", b"", "chain id must be 1..64"),
        (b"gannet", b"vote", b"", "chain id must be str"),
        ("gannet", b"t" * 33, b"", "type tag must be 1..32"),
        ("gannet", b"", b"", "type tag must be 1..32"),
        ("gannet", "vote", b"", "type tag must be bytes"),
        ("gannet", b"vote", "body", "body must be bytes"),
    ],
)
def test_sign_bytes_rejects_bad_domains(chain_id: Any, tag: Any, body: Any, message: str) -> None:
    """Chain ids over 64 bytes, tags over 32 bytes, empty or mistyped values are refused."""
    with pytest.raises(CryptoError, match=message):
        sign_bytes(chain_id, tag, body)


def test_sign_bytes_accepts_the_limits() -> None:
    """A 64-byte chain id and a 32-byte tag are allowed."""
    assert len(sign_bytes("x" * 64, b"t" * 32, b"")) == 32


# --- batch verification ------------------------------------------------------------------------


def _mixed_batch(count: int) -> tuple[list[tuple[bytes, bytes, bytes]], list[bool]]:
    """`count` checks, every third one with a corrupted message."""
    key = SigningKey.from_seed(bytes([9]) * 32)
    items, expected = [], []
    for index in range(count):
        message = index.to_bytes(4, "big")
        signature = key.sign(message)
        valid = index % 3 != 0
        items.append((key.public_key, message if valid else message + b"!", signature))
        expected.append(valid)
    return items, expected


@pytest.mark.parametrize("workers", [1, 2, 3, 8])
@pytest.mark.parametrize("count", [0, 1, 5, 64, 257])
def test_verify_many_keeps_order(workers: int, count: int) -> None:
    """Verdicts come back one per item, in input order, however the items are chunked."""
    items, expected = _mixed_batch(count)
    with SignatureVerifier(workers=workers, min_chunk=4) as verifier:
        assert verifier.verify_many(items) == expected
        assert verify_batch(items, verifier) == expected
    assert verify_batch(items) == expected


def test_verify_many_tolerates_garbage_items() -> None:
    """Malformed keys or signatures inside a batch are just False."""
    items: list[Any] = [(b"", b"m", b""), (None, b"m", 5), ("k" * 32, "m", "s" * 64)]
    with SignatureVerifier(workers=2, min_chunk=1) as verifier:
        assert verifier.verify_many(items) == [False, False, False]


def test_closed_verifier_refuses_work() -> None:
    """A closed verifier raises a typed error instead of hanging."""
    verifier = SignatureVerifier(workers=2)
    verifier.close()
    with pytest.raises(CryptoError, match="closed"):
        verifier.verify_many([])


def test_default_workers_is_cpu_count() -> None:
    """Without an argument the pool has one worker per CPU."""
    with SignatureVerifier() as verifier:
        assert verifier.workers == (os.cpu_count() or 1)


@pytest.mark.parametrize("workers", [0, -1])
def test_bad_worker_count_is_rejected(workers: int) -> None:
    """A pool needs at least one worker."""
    with pytest.raises(CryptoError, match="workers"):
        SignatureVerifier(workers=workers)
