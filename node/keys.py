"""Plain key files of a node home: the validator's consensus key and the node key.

The node key names the node to its peers (its public key is the node id the
p2p handshake proves); it signs nothing a chain keeps, so a fresh one is made
whenever a home lacks it.

Like CometBFT's priv_validator_key.json, the file is plaintext (the node must
sign unattended) and readable by its owner only; wallets use `chain.keystore`.
"""

from __future__ import annotations

import json
from pathlib import Path

from chain.address import address_from_public_key, encode_address
from chain.crypto import CryptoError, SigningKey
from chain.files import write_file_atomic
from consensus.privval import init_sign_state


class KeyFileError(Exception):
    """A key file is missing, unreadable or malformed."""


def save_key_file(path: Path, key: SigningKey) -> None:
    """Write a key file (mode 0600) atomically; refuse to overwrite one."""
    if path.exists():
        raise KeyFileError(f"{path} already exists; refusing to overwrite a key")
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"address": encode_address(address_from_public_key(key.public_key)),
           "public_key": key.public_key.hex(), "seed": key.seed.hex()}
    write_file_atomic(path, json.dumps(doc, indent=2).encode() + b"\n", 0o600)


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


def load_or_create_node_key(path: Path) -> SigningKey:
    """The node key at `path`; a missing file gets a fresh key, written before it is used."""
    if path.exists():
        return load_key_file(path)
    key = SigningKey.generate()
    save_key_file(path, key)
    return key


def create_validator_files(key_file: Path, sign_state_file: Path, key: SigningKey) -> None:
    """Write a new validator's key file and its zero sign state (nothing signed yet).

    A validator home always has both: a node finding the key without the sign state
    cannot know what the key signed before, and refuses to validate.
    """
    save_key_file(key_file, key)
    init_sign_state(sign_state_file)
