"""Password-encrypted key files, in the spirit of Ethereum's keystore v3.

scrypt stretches the password (NFKD-normalised, utf-8) into a 32-byte key; an
AEAD cipher (AES-256-GCM by default, or ChaCha20-Poly1305) encrypts the 32-byte
Ed25519 seed. The AEAD tag replaces v3's separate MAC, so a wrong password is
detected before any key material is used. A file looks like:

    {"version": 1, "address": "gnt1...",
     "crypto": {"cipher": "aes-256-gcm", "ciphertext": "<hex seed+tag>",
                "nonce": "<hex 12 bytes>", "kdf": "scrypt",
                "kdfparams": {"n": 32768, "r": 8, "p": 1, "salt": "<hex>", "dklen": 32}}}

Decryption bounds the scrypt parameters, so a hostile file cannot make the
node allocate gigabytes.
"""

import json
import os
import unicodedata
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from chain.address import AddressError, address_from_public_key, decode_address, encode_address
from chain.crypto import SEED_LEN, SigningKey
from chain.errors import ChainError
from chain.files import write_file_atomic

KEYSTORE_VERSION = 1
DEFAULT_SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
MAX_SCRYPT_N = 2**20
MAX_SCRYPT_R = 32
MAX_SCRYPT_P = 16
DKLEN = 32
SALT_LEN = 32
NONCE_LEN = 12
TAG_LEN = 16
CIPHERS = {"aes-256-gcm": AESGCM, "chacha20-poly1305": ChaCha20Poly1305}
DEFAULT_CIPHER = "aes-256-gcm"


class KeystoreError(ChainError):
    """A keystore document or file is malformed or unusable; the message names the field."""


class WrongPassword(KeystoreError):
    """The password does not open the keystore (the AEAD tag did not verify)."""


def encrypt_key(
    key: SigningKey,
    password: str,
    *,
    scrypt_n: int = DEFAULT_SCRYPT_N,
    cipher: str = DEFAULT_CIPHER,
) -> dict[str, Any]:
    """The keystore document holding `key` encrypted under `password`.

    A fresh random salt and nonce are drawn for every call.
    """
    if cipher not in CIPHERS:
        raise KeystoreError(f"unknown cipher {cipher!r}, expected one of {sorted(CIPHERS)}")
    salt = os.urandom(SALT_LEN).hex()
    kdfparams = {"n": scrypt_n, "r": SCRYPT_R, "p": SCRYPT_P, "salt": salt, "dklen": DKLEN}
    _validate_kdfparams(kdfparams)
    nonce = os.urandom(NONCE_LEN)
    derived = _derive_key(password, kdfparams)
    ciphertext = CIPHERS[cipher](derived).encrypt(nonce, key.seed, None)
    return {
        "version": KEYSTORE_VERSION,
        "address": encode_address(address_from_public_key(key.public_key)),
        "crypto": {
            "cipher": cipher,
            "ciphertext": ciphertext.hex(),
            "nonce": nonce.hex(),
            "kdf": "scrypt",
            "kdfparams": kdfparams,
        },
    }


def decrypt_key(doc: dict[str, Any], password: str) -> SigningKey:
    """The key a keystore document holds; the decrypted key must match its address.

    Raises WrongPassword when the password does not open it, KeystoreError
    naming the field when the document is malformed.
    """
    # Validate the document's shape before any expensive work.
    _validate_version(doc)
    address_text = _field(doc, "address", str)
    address = _decoded_address(address_text)
    crypto = _field(doc, "crypto", dict)
    _validate_algorithms(crypto)
    kdfparams = _field(crypto, "kdfparams", dict, "crypto.")
    _validate_kdfparams(kdfparams)
    nonce = _hex_field(crypto, "nonce", NONCE_LEN)
    ciphertext = _hex_field(crypto, "ciphertext", SEED_LEN + TAG_LEN)
    # Open the seed; a failed tag means the password (or the kdf params) is wrong.
    aead = CIPHERS[crypto["cipher"]](_derive_key(password, kdfparams))
    try:
        seed = aead.decrypt(nonce, ciphertext, None)
    except InvalidTag:
        raise WrongPassword(f"wrong password for keystore {address_text}") from None
    key = SigningKey.from_seed(seed)
    # The address field is not authenticated: check it against the key.
    if address_from_public_key(key.public_key) != address:
        got = encode_address(address_from_public_key(key.public_key))
        raise KeystoreError(f"keystore address mismatch: file says {address_text}, key is {got}")
    return key


def save_keystore(
    path: str | os.PathLike[str],
    key: SigningKey,
    password: str,
    *,
    scrypt_n: int = DEFAULT_SCRYPT_N,
    cipher: str = DEFAULT_CIPHER,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write `key` encrypted to `path` atomically, mode 0o600; returns the document.

    The file appears complete or not at all: a temp file in the same folder is
    written, fsynced, renamed over `path`, and the folder fsynced. An existing
    file is never replaced unless `overwrite` is set (a lost key is lost funds).
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise KeystoreError(f"keystore {target} already exists")
    doc = encrypt_key(key, password, scrypt_n=scrypt_n, cipher=cipher)
    write_file_atomic(target, json.dumps(doc, indent=2).encode("utf-8") + b"\n", 0o600)
    return doc


def load_keystore(path: str | os.PathLike[str], password: str) -> SigningKey:
    """The key in the keystore file at `path`, opened with `password`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeystoreError(f"cannot read keystore {path}: {exc}") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeystoreError(f"keystore {path} is not valid JSON: {exc}") from exc
    return decrypt_key(doc, password)


def _derive_key(password: str, kdfparams: dict[str, Any]) -> bytes:
    """scrypt(NFKD(password) as utf-8, salt, n, r, p) -> dklen bytes."""
    if not isinstance(password, str):
        raise KeystoreError(f"password must be a str, got {type(password).__name__}")
    secret = unicodedata.normalize("NFKD", password).encode("utf-8")
    kdf = Scrypt(
        salt=bytes.fromhex(kdfparams["salt"]),
        length=kdfparams["dklen"],
        n=kdfparams["n"],
        r=kdfparams["r"],
        p=kdfparams["p"],
    )
    return kdf.derive(secret)


def _validate_version(doc: dict[str, Any]) -> None:
    """The document must be a keystore of the version this code writes."""
    version = _field(doc, "version", int)
    if version != KEYSTORE_VERSION:
        raise KeystoreError(f"keystore field version: expected {KEYSTORE_VERSION}, got {version}")


def _validate_algorithms(crypto: dict[str, Any]) -> None:
    """The cipher and kdf must be ones this code supports."""
    cipher = _field(crypto, "cipher", str, "crypto.")
    if cipher not in CIPHERS:
        raise KeystoreError(f"keystore field crypto.cipher: unsupported cipher {cipher!r}")
    kdf = _field(crypto, "kdf", str, "crypto.")
    if kdf != "scrypt":
        raise KeystoreError(f"keystore field crypto.kdf: expected 'scrypt', got {kdf!r}")


def _validate_kdfparams(params: dict[str, Any]) -> None:
    """n a power of two in 2..2^20, r in 1..32, p in 1..16, dklen 32, salt 16..64 bytes."""
    prefix = "crypto.kdfparams."
    n = _field(params, "n", int, prefix)
    if n < 2 or n > MAX_SCRYPT_N or n & (n - 1):
        raise KeystoreError(f"keystore field {prefix}n: need a power of 2 <= 2^20, got {n}")
    _bounded_int(params, "r", MAX_SCRYPT_R)
    _bounded_int(params, "p", MAX_SCRYPT_P)
    dklen = _field(params, "dklen", int, prefix)
    if dklen != DKLEN:
        raise KeystoreError(f"keystore field {prefix}dklen: expected {DKLEN}, got {dklen}")
    salt = _hex_field(params, "salt", None, prefix)
    if not 16 <= len(salt) <= 64:
        raise KeystoreError(f"keystore field {prefix}salt: need 16..64 bytes, got {len(salt)}")


def _bounded_int(params: dict[str, Any], name: str, maximum: int) -> int:
    """An int kdf parameter in 1..maximum."""
    value = _field(params, name, int, "crypto.kdfparams.")
    if not 1 <= value <= maximum:
        field = f"crypto.kdfparams.{name}"
        raise KeystoreError(f"keystore field {field}: need 1..{maximum}, got {value}")
    return value


def _field(container: Any, name: str, kind: type, prefix: str = "") -> Any:
    """container[name], which must exist and be of type `kind` (bool is not an int)."""
    if not isinstance(container, dict):
        where = prefix.rstrip(".") or "document"
        raise KeystoreError(f"keystore {where} must be a JSON object")
    if name not in container:
        raise KeystoreError(f"keystore field {prefix}{name} is missing")
    value = container[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        got = type(value).__name__
        raise KeystoreError(f"keystore field {prefix}{name}: expected {kind.__name__}, got {got}")
    return value


def _hex_field(
    container: dict[str, Any], name: str, length: int | None, prefix: str = "crypto."
) -> bytes:
    """container[name] decoded from hex; exactly `length` bytes unless length is None."""
    text = _field(container, name, str, prefix)
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise KeystoreError(f"keystore field {prefix}{name} is not hex") from None
    if length is not None and len(value) != length:
        got = len(value)
        raise KeystoreError(f"keystore field {prefix}{name}: expected {length} bytes, got {got}")
    return value


def _decoded_address(text: str) -> bytes:
    """The address field's bytes; a bad address is a malformed keystore."""
    try:
        return decode_address(text)
    except AddressError as exc:
        raise KeystoreError(f"keystore field address: {exc}") from None
