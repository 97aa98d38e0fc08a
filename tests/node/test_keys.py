"""Validator key files: owner-only, never overwritten, checked on load."""

import json
import stat
from pathlib import Path

import pytest

from chain.crypto import SigningKey
from node.keys import KeyFileError, load_key_file, save_key_file


def test_round_trip_and_mode(tmp_path: Path) -> None:
    key = SigningKey.generate()
    path = tmp_path / "config" / "validator_key.json"
    save_key_file(path, key)
    assert load_key_file(path).public_key == key.public_key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_refuses_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    save_key_file(path, SigningKey.generate())
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        save_key_file(path, SigningKey.generate())


def test_mismatched_public_key(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    save_key_file(path, SigningKey.generate())
    doc = json.loads(path.read_text())
    doc["public_key"] = SigningKey.generate().public_key.hex()
    path.write_text(json.dumps(doc))
    with pytest.raises(KeyFileError, match="does not match"):
        load_key_file(path)


@pytest.mark.parametrize("text", ["", "{}", '{"seed": "zz"}', '{"seed": "00"}', "[1]"])
def test_malformed(tmp_path: Path, text: str) -> None:
    path = tmp_path / "k.json"
    path.write_text(text)
    with pytest.raises(KeyFileError, match="malformed key file"):
        load_key_file(path)


def test_missing(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no key file"):
        load_key_file(tmp_path / "absent.json")
