"""`gannet doctor` on homes made by `gannet node init`: a healthy home and each failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import node.doctor
from chain.address import address_from_public_key
from chain.crypto import SigningKey
from chain.errors import StoreError
from chain.store import BlockStore
from consensus.privval import SignState, init_sign_state, save_sign_state
from consensus.wal import WAL, WalEndHeight, WalTimeout, segment_paths
from genesis.document import load_genesis
from node.cli import main
from node.cli_doctor import doctor
from node.config import HomePaths
from node.keys import load_key_file, save_key_file
from node.service import NodeError, open_store
from tests.consensus.test_privval import commit_fake_blocks

CHECKS = ["config", "genesis", "store", "validator-key", "node-key", "validator-set", "wal",
          "sign-state"]


def run_doctor(home: Path) -> Result:
    return CliRunner().invoke(doctor, ["--home", str(home)])


def lines_by_check(result: Result) -> dict[str, str]:
    """{check name: its whole line}; every line reads `<status> <check>: <detail>`."""
    assert "Traceback" not in result.output
    found = {}
    for line in result.output.strip().splitlines():
        status, rest = line.split(" ", 1)
        assert status in ("ok", "warn", "FAIL"), line
        found[rest.split(":", 1)[0]] = line
    return found


def assert_fails(result: Result, check: str, words: str) -> None:
    assert result.exit_code == 1, result.output
    line = lines_by_check(result)[check]
    assert line.startswith(f"FAIL {check}: "), line
    assert words in line, line


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh validator home from `gannet node init` (with a node key and sign state)."""
    home = tmp_path / "home"
    result = CliRunner().invoke(main, ["node", "init", "--home", str(home), "--chain-id",
                                       "doctor-test"])
    assert result.exit_code == 0, result.output
    paths = HomePaths(home)
    if not paths.node_key_file.exists():  # homes made before `node init` wrote one
        save_key_file(paths.node_key_file, SigningKey.generate())
    if not paths.sign_state_file.exists():
        init_sign_state(paths.sign_state_file)
    return home


def own_address(home: Path) -> bytes:
    key = load_key_file(HomePaths(home).validator_key_file)
    return address_from_public_key(key.public_key)


def make_store(home: Path, signed: dict[int, tuple[bytes, ...]]) -> None:
    """Initialise the store from the home's genesis and commit blocks signed by `signed`."""
    paths = HomePaths(home)
    store = open_store(paths, load_genesis(paths.genesis_file), 1 << 20)
    try:
        commit_fake_blocks(store, signed)
    finally:
        store.close()


def sign_state_at(home: Path, height: int) -> None:
    save_sign_state(HomePaths(home).sign_state_file,
                    SignState(height=height, round=0, step=3, sign_bytes=bytes(32),
                              signature=bytes(64)))


# --- healthy homes ---------------------------------------------------------------------


def test_fresh_home_is_healthy(home: Path) -> None:
    result = run_doctor(home)
    assert result.exit_code == 0, result.output
    lines = lines_by_check(result)
    assert list(lines) == CHECKS
    assert all(line.startswith("ok ") for line in lines.values()), result.output
    assert "no data yet" in lines["store"]
    assert "doctor-test" in lines["genesis"]
    assert "no WAL yet" in lines["wal"]
    assert not HomePaths(home).store_dir.exists()  # doctor never creates a store
    assert not HomePaths(home).wal_dir.exists()


def test_home_with_blocks_wal_and_current_sign_state_is_healthy(home: Path) -> None:
    me = own_address(home)
    make_store(home, {1: (me,), 2: (me,), 3: (me,)})
    sign_state_at(home, 4)
    wal = WAL.open(HomePaths(home).wal_dir)
    wal.end_height(3)
    wal.write(WalTimeout(height=4, round=0, step=1))
    wal.close()
    result = run_doctor(home)
    assert result.exit_code == 0, result.output
    lines = lines_by_check(result)
    assert "store at height 3, genesis matches" in lines["store"]
    assert "2 segment(s), 2 entries, last ended height 3" in lines["wal"]
    assert "last signed height 4" in lines["sign-state"]


def test_full_node_without_validator_key(home: Path) -> None:
    HomePaths(home).validator_key_file.unlink()
    result = run_doctor(home)
    assert result.exit_code == 0, result.output
    lines = lines_by_check(result)
    assert "full node" in lines["validator-key"]
    assert "validator-set" not in lines
    assert "nothing signs" in lines["sign-state"]


# --- failures -----------------------------------------------------------------------------


def test_broken_config(home: Path) -> None:
    HomePaths(home).config_file.write_text("[rpc]\nprot = 1\n")
    assert_fails(run_doctor(home), "config", "prot")


def test_missing_home(tmp_path: Path) -> None:
    result = run_doctor(tmp_path / "nowhere")
    assert_fails(result, "config", "no config")
    assert_fails(result, "genesis", "cannot read")
    assert_fails(result, "node-key", "missing")


def test_broken_genesis(home: Path) -> None:
    path = HomePaths(home).genesis_file
    doc = json.loads(path.read_text())
    doc["chain_id"] = ""
    path.write_text(json.dumps(doc))
    result = run_doctor(home)
    assert_fails(result, "genesis", "chain_id")
    assert len(result.output.strip().splitlines()) == len(CHECKS) - 1  # no validator-set line


def test_genesis_mismatch_with_the_store(home: Path) -> None:
    make_store(home, {})
    path = HomePaths(home).genesis_file
    doc = json.loads(path.read_text())
    doc["genesis_time_ms"] += 1
    path.write_text(json.dumps(doc))
    assert_fails(run_doctor(home), "store", "genesis mismatch")


def test_locked_store_says_the_node_may_be_running(home: Path) -> None:
    make_store(home, {})
    running = BlockStore(str(HomePaths(home).store_dir))
    try:
        result = run_doctor(home)
    finally:
        running.close()
    assert isinstance(result.exception, SystemExit)
    assert_fails(result, "store", "store is locked: is the node running?")
    assert lines_by_check(result)["sign-state"].startswith("warn sign-state: ")


def test_malformed_validator_key(home: Path) -> None:
    HomePaths(home).validator_key_file.write_text("{}")
    assert_fails(run_doctor(home), "validator-key", "malformed key file")


def test_missing_node_key(home: Path) -> None:
    HomePaths(home).node_key_file.unlink()
    assert_fails(run_doctor(home), "node-key", "missing")


def test_validator_not_in_genesis_is_a_warning(home: Path) -> None:
    paths = HomePaths(home)
    paths.validator_key_file.unlink()
    save_key_file(paths.validator_key_file, SigningKey.generate())
    result = run_doctor(home)
    assert result.exit_code == 0, result.output
    assert lines_by_check(result)["validator-set"].startswith("warn validator-set: ")


def test_torn_wal_tail_is_a_warning(home: Path) -> None:
    wal = WAL.open(HomePaths(home).wal_dir)
    wal.write(WalEndHeight(height=0))
    wal.close()
    with open(segment_paths(HomePaths(home).wal_dir)[-1], "ab") as handle:
        handle.write(b"\x00\x00\x01\x00torn")
    result = run_doctor(home)
    assert result.exit_code == 0, result.output
    line = lines_by_check(result)["wal"]
    assert line.startswith("warn wal: torn tail of 8 bytes"), line


def test_corrupt_wal_fails(home: Path) -> None:
    wal = WAL.open(HomePaths(home).wal_dir)
    wal.write(WalTimeout(height=1, round=0, step=1))
    wal.write(WalTimeout(height=1, round=0, step=2))
    wal.close()
    segment = segment_paths(HomePaths(home).wal_dir)[-1]
    data = bytearray(segment.read_bytes())
    data[10] ^= 0xFF
    segment.write_bytes(bytes(data))
    assert_fails(run_doctor(home), "wal", "corrupt at byte 0")


def test_sign_state_behind_the_chain(home: Path) -> None:
    me = own_address(home)
    make_store(home, {1: (me,), 2: (me,)})
    sign_state_at(home, 1)
    assert_fails(run_doctor(home), "sign-state", "--unsafe-skip-double-sign-check")


def test_missing_sign_state_with_blocks(home: Path) -> None:
    make_store(home, {1: (), 2: ()})
    HomePaths(home).sign_state_file.unlink()
    assert_fails(run_doctor(home), "sign-state", "no sign state file")


def test_corrupt_sign_state(home: Path) -> None:
    HomePaths(home).sign_state_file.write_text('{"height": 1')
    assert_fails(run_doctor(home), "sign-state", "unreadable")


def test_store_locked_by_another_process(home: Path, monkeypatch) -> None:
    """Across processes LevelDB words the lock differently than within one."""
    make_store(home, {})

    def locked(path: str, cache_bytes: int) -> BlockStore:
        raise StoreError(f"cannot open store at {path}: b'IO error: lock {path}/LOCK: "
                         "Resource temporarily unavailable'")

    monkeypatch.setattr(node.doctor, "BlockStore", locked)
    assert_fails(run_doctor(home), "store", "store is locked: is the node running?")


def test_unreadable_store_is_not_called_locked(home: Path, monkeypatch) -> None:
    make_store(home, {})

    def corrupt(path: str, cache_bytes: int) -> BlockStore:
        raise StoreError(f"cannot open store at {path}: b'Corruption: bad block contents'")

    monkeypatch.setattr(node.doctor, "BlockStore", corrupt)
    result = run_doctor(home)
    assert_fails(result, "store", "Corruption: bad block")
    assert "locked" not in lines_by_check(result)["store"]


def test_a_store_another_node_holds_is_refused_in_one_line(home: Path) -> None:
    """A second node on a home whose store is open elsewhere gets a NodeError, no traceback."""
    paths = HomePaths(home)
    genesis = load_genesis(paths.genesis_file)
    first = open_store(paths, genesis, 1 << 20)
    try:
        with pytest.raises(NodeError, match="is another node running on"):
            open_store(paths, genesis, 1 << 20)
    finally:
        first.close()
