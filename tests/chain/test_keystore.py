"""Keystore files: encrypt/decrypt round trips, wrong passwords, malformed documents, files."""

import copy
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.address import address_from_public_key, encode_address
from chain.crypto import SigningKey
from chain.keystore import (
    DEFAULT_SCRYPT_N,
    KeystoreError,
    WrongPassword,
    decrypt_key,
    encrypt_key,
    load_keystore,
    save_keystore,
)

FAST_N = 2**10
KEY = SigningKey.from_seed(bytes(range(32)))
ADDRESS = encode_address(address_from_public_key(KEY.public_key))


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    """A valid keystore for KEY under password 'hunter2'."""
    return encrypt_key(KEY, "hunter2", scrypt_n=FAST_N)


def test_document_layout(doc: dict[str, Any]) -> None:
    """version, bech32 address, AEAD cipher fields and scrypt parameters, all JSON-able."""
    assert doc["version"] == 1 and doc["address"] == ADDRESS
    crypto = doc["crypto"]
    assert crypto["cipher"] == "aes-256-gcm" and crypto["kdf"] == "scrypt"
    assert len(bytes.fromhex(crypto["nonce"])) == 12
    assert len(bytes.fromhex(crypto["ciphertext"])) == 32 + 16
    params = crypto["kdfparams"]
    assert (params["n"], params["r"], params["p"], params["dklen"]) == (FAST_N, 8, 1, 32)
    assert len(bytes.fromhex(params["salt"])) == 32
    assert json.loads(json.dumps(doc)) == doc
    assert KEY.seed.hex() not in json.dumps(doc)


@pytest.mark.parametrize("cipher", ["aes-256-gcm", "chacha20-poly1305"])
def test_round_trip(cipher: str) -> None:
    """The password opens the key it encrypted, with either cipher."""
    doc = encrypt_key(KEY, "correct horse", scrypt_n=FAST_N, cipher=cipher)
    assert doc["crypto"]["cipher"] == cipher
    assert decrypt_key(doc, "correct horse") == KEY


def test_default_scrypt_cost() -> None:
    """Without scrypt_n the file uses n = 2^15, r = 8, p = 1 and still opens."""
    doc = encrypt_key(KEY, "pw")
    assert doc["crypto"]["kdfparams"]["n"] == DEFAULT_SCRYPT_N == 2**15
    assert decrypt_key(doc, "pw") == KEY


def test_salt_and_nonce_are_fresh() -> None:
    """Two encryptions of one key share no salt, nonce or ciphertext."""
    first = encrypt_key(KEY, "pw", scrypt_n=FAST_N)["crypto"]
    second = encrypt_key(KEY, "pw", scrypt_n=FAST_N)["crypto"]
    assert first["kdfparams"]["salt"] != second["kdfparams"]["salt"]
    assert first["nonce"] != second["nonce"]
    assert first["ciphertext"] != second["ciphertext"]


def test_wrong_password(doc: dict[str, Any]) -> None:
    """A wrong password raises WrongPassword naming the keystore's address."""
    with pytest.raises(WrongPassword, match=f"wrong password for keystore {ADDRESS}"):
        decrypt_key(doc, "hunter3")


@settings(max_examples=20, deadline=None)
@given(password=st.text(max_size=20), other=st.text(max_size=20))
def test_only_the_password_opens(password: str, other: str) -> None:
    """Any password round-trips; any different password is refused."""
    doc = encrypt_key(KEY, password, scrypt_n=16)
    assert decrypt_key(doc, password) == KEY
    if other != password:
        with pytest.raises(WrongPassword):
            decrypt_key(doc, other)


def test_password_is_unicode_normalised() -> None:
    """A composed and a decomposed 'é' are the same password (NFKD)."""
    doc = encrypt_key(KEY, "caf\u00e9", scrypt_n=FAST_N)
    assert decrypt_key(doc, "cafe\u0301") == KEY


@pytest.mark.parametrize("field", ["ciphertext", "nonce"])
def test_tampered_ciphertext_fails_like_a_wrong_password(doc: dict[str, Any], field: str) -> None:
    """The AEAD tag covers the seed: any changed byte fails authentication."""
    broken = copy.deepcopy(doc)
    raw = bytearray(bytes.fromhex(broken["crypto"][field]))
    raw[0] ^= 1
    broken["crypto"][field] = raw.hex()
    with pytest.raises(WrongPassword):
        decrypt_key(broken, "hunter2")


def test_address_must_match_the_key(doc: dict[str, Any]) -> None:
    """A file whose address field names another account is refused."""
    other = encode_address(address_from_public_key(SigningKey.from_seed(bytes(32)).public_key))
    broken = copy.deepcopy(doc)
    broken["address"] = other
    with pytest.raises(KeystoreError, match="address mismatch") as caught:
        decrypt_key(broken, "hunter2")
    assert not isinstance(caught.value, WrongPassword)


DELETE = object()  # as a value below: remove the field instead of setting it

MALFORMED = [
    ("version", 3, "version: expected 1, got 3"),
    ("version", "1", "version: expected int, got str"),
    ("version", True, "version: expected int, got bool"),
    ("version", DELETE, "version is missing"),
    ("address", DELETE, "address is missing"),
    ("address", "cosmos1qqqq", "field address: wrong address prefix"),
    ("address", 7, "address: expected str, got int"),
    ("crypto", [], "crypto: expected dict, got list"),
    ("crypto.cipher", "aes-128-ctr", "crypto.cipher: unsupported cipher"),
    ("crypto.kdf", "pbkdf2", "crypto.kdf: expected 'scrypt'"),
    ("crypto.nonce", "zz", "crypto.nonce is not hex"),
    ("crypto.nonce", "00" * 11, "crypto.nonce: expected 12 bytes, got 11"),
    ("crypto.ciphertext", "00" * 32, "crypto.ciphertext: expected 48 bytes, got 32"),
    ("crypto.ciphertext", DELETE, "crypto.ciphertext is missing"),
    ("crypto.kdfparams", DELETE, "crypto.kdfparams is missing"),
    ("crypto.kdfparams.n", 2**30, "kdfparams.n: need a power of 2 <= 2\\^20"),
    ("crypto.kdfparams.n", 1000, "kdfparams.n: need a power of 2"),
    ("crypto.kdfparams.n", 1.5, "kdfparams.n: expected int, got float"),
    ("crypto.kdfparams.r", 0, "kdfparams.r: need 1..32, got 0"),
    ("crypto.kdfparams.r", 1024, "kdfparams.r: need 1..32"),
    ("crypto.kdfparams.p", 17, "kdfparams.p: need 1..16"),
    ("crypto.kdfparams.dklen", 16, "kdfparams.dklen: expected 32, got 16"),
    ("crypto.kdfparams.salt", "00" * 8, "kdfparams.salt: need 16..64 bytes, got 8"),
    ("crypto.kdfparams.salt", DELETE, "kdfparams.salt is missing"),
]


@pytest.mark.parametrize(("field", "value", "message"), MALFORMED)
def test_malformed_documents_name_the_field(
    doc: dict[str, Any], field: str, value: Any, message: str
) -> None:
    """Start from a valid file, break one (dotted) field, expect a KeystoreError naming it."""
    broken = copy.deepcopy(doc)
    *parents, leaf = field.split(".")
    target = broken
    for name in parents:
        target = target[name]
    if value is DELETE:
        del target[leaf]
    else:
        target[leaf] = value
    with pytest.raises(KeystoreError, match=message) as caught:
        decrypt_key(broken, "hunter2")
    assert not isinstance(caught.value, WrongPassword)


@pytest.mark.parametrize("value", [None, [], "{}", 5])
def test_document_must_be_an_object(value: Any) -> None:
    """A keystore is a JSON object."""
    with pytest.raises(KeystoreError, match="must be a JSON object"):
        decrypt_key(value, "pw")


def test_bad_encrypt_arguments() -> None:
    """An unknown cipher or an unusable scrypt cost is refused when writing too."""
    with pytest.raises(KeystoreError, match="unknown cipher"):
        encrypt_key(KEY, "pw", scrypt_n=FAST_N, cipher="rot13")
    with pytest.raises(KeystoreError, match="power of 2"):
        encrypt_key(KEY, "pw", scrypt_n=1000)


# --- files --------------------------------------------------------------------------------------


def test_save_and_load(tmp_path: Path) -> None:
    """A saved file is private (0o600), complete, leaves no temp file, and loads back."""
    path = tmp_path / "validator.json"
    doc = save_keystore(path, KEY, "pw", scrypt_n=FAST_N)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == doc
    assert os.listdir(tmp_path) == ["validator.json"]
    assert load_keystore(path, "pw") == KEY
    assert load_keystore(str(path), "pw") == KEY


def test_save_never_clobbers_by_default(tmp_path: Path) -> None:
    """An existing key file is kept unless overwrite is asked for."""
    path = tmp_path / "key.json"
    save_keystore(path, KEY, "pw", scrypt_n=FAST_N)
    other = SigningKey.from_seed(bytes(32))
    with pytest.raises(KeystoreError, match="already exists"):
        save_keystore(path, other, "pw", scrypt_n=FAST_N)
    assert load_keystore(path, "pw") == KEY
    save_keystore(path, other, "pw", scrypt_n=FAST_N, overwrite=True)
    assert load_keystore(path, "pw") == other
    assert os.listdir(tmp_path) == ["key.json"]


def test_load_wrong_password(tmp_path: Path) -> None:
    """Loading with the wrong password raises WrongPassword."""
    path = tmp_path / "key.json"
    save_keystore(path, KEY, "pw", scrypt_n=FAST_N)
    with pytest.raises(WrongPassword, match=ADDRESS):
        load_keystore(path, "nope")


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"{not json", "not valid JSON"), (b"\xff\xfe", "cannot read"), (b"[]", "JSON object")],
)
def test_load_unreadable_files(tmp_path: Path, content: bytes, message: str) -> None:
    """A file that is not a JSON keystore is a KeystoreError."""
    path = tmp_path / "key.json"
    path.write_bytes(content)
    with pytest.raises(KeystoreError, match=message):
        load_keystore(path, "pw")


def test_load_missing_file(tmp_path: Path) -> None:
    """A missing file is a KeystoreError naming the path."""
    with pytest.raises(KeystoreError, match="cannot read keystore"):
        load_keystore(tmp_path / "absent.json", "pw")
