"""Plain key files of a node home: the validator's consensus key.

Like CometBFT's priv_validator_key.json, the file is plaintext (the node must
sign unattended) and readable by its owner only; wallets use `chain.keystore`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from chain.address import address_from_public_key, encode_address
from chain.crypto import CryptoError, SigningKey


class KeyFileError(Exception):
    """A key file is missing, unreadable or malformed."""


def save_key_file(path: Path, key: SigningKey) -> None:
    """Write a key file (mode 0600) atomically; refuse to overwrite one."""
    if path.exists():
        raise KeyFileError(f"{path} already exists; refusing to overwrite a key")
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"address": encode_address(address_from_public_key(key.public_key)),
           "public_key": key.public_key.hex(), "seed": key.seed.hex()}
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_key_file(path: Path) -> SigningKey:
    """Read a key file and check that its public key matches its seed."""
    try:
        doc = json.loads(path.read_text())
        key = SigningKey.from_seed(bytes.fromhex(doc["seed"]))
    except FileNotFoundError as exc:
        raise KeyFileError(f"no key file at {path}") from exc
    except (OSError, ValueError, KeyError, TypeError, CryptoError) as exc:
        raise KeyFileError(f"malformed key file {path}: {exc}") from exc
    if "public_key" in doc and doc["public_key"] != key.public_key.hex():
        raise KeyFileError(f"key file {path}: public_key does not match its seed")
    return key
