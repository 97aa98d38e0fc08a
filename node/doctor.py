"""`gannet doctor`: check a node home before (or instead of) starting it.

Each check gives one line `ok|warn|FAIL <check>: <detail>`. A FAIL is something
the node would refuse to start with, or would do harm with; a warn is worth
knowing but harmless. Nothing in the home is changed: a missing store is not
created, a torn WAL tail is reported, not cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from chain.address import address_from_public_key, encode_address
from chain.crypto import SigningKey
from chain.errors import ChainError
from chain.store import BlockStore
from consensus.errors import ConsensusError
from consensus.privval import check_double_sign_risk, load_sign_state, own_signed_heights
from consensus.wal import check_wal
from genesis.document import Genesis, GenesisError, genesis_hash, load_genesis
from node.config import ConfigError, HomePaths, load_config
from node.keys import KeyFileError, load_key_file

OK, WARN, FAIL = "ok", "warn", "FAIL"
# LevelDB writes this file in every database it creates.
_STORE_MARKER = "CURRENT"
# How LevelDB says another process (or this one) holds the database's LOCK file.
_LOCKED = ("LOCK: Resource temporarily unavailable", "LOCK: already held by process")


@dataclass(frozen=True, slots=True)
class Check:
    """One finding: status (ok, warn or FAIL), what was checked, what was found."""

    status: str
    name: str
    detail: str

    def line(self) -> str:
        return f"{self.status} {self.name}: {self.detail}"


def run_doctor(home: Path) -> list[Check]:
    """Every check of a node home, in a fixed order."""
    paths = HomePaths(home)
    checks = [check_config(paths)]
    genesis, check = check_genesis(paths)
    checks.append(check)
    store, store_check = open_store_readonly(paths)
    store_failed = store_check is not None and store_check.status == FAIL
    try:
        checks.append(check_store(paths, store, genesis) if store is not None else store_check)
        key, check = check_validator_key(paths)
        checks.append(check)
        checks.append(check_node_key(paths))
        if key is not None and genesis is not None:
            checks.append(check_validator_in_genesis(key, genesis))
        checks.append(check_wal_integrity(paths))
        checks.append(check_sign_state(paths, key, store, store_failed))
    finally:
        if store is not None:
            store.close()
    return checks


def check_config(paths: HomePaths) -> Check:
    """config.toml parses and holds only known keys of the right types."""
    try:
        config = load_config(paths.config_file)
    except ConfigError as exc:
        return Check(FAIL, "config", str(exc))
    return Check(OK, "config", f"{paths.config_file} (moniker {config.moniker})")


def check_genesis(paths: HomePaths) -> tuple[Genesis | None, Check]:
    """genesis.json parses and validates."""
    try:
        genesis = load_genesis(paths.genesis_file)
    except GenesisError as exc:
        return None, Check(FAIL, "genesis", _one_line(str(exc)))
    detail = (f"chain {genesis.chain_id}, {len(genesis.validators)} validator(s), "
              f"hash {genesis_hash(genesis).hex()}")
    return genesis, Check(OK, "genesis", detail)


def open_store_readonly(paths: HomePaths) -> tuple[BlockStore | None, Check | None]:
    """The existing store, opened without creating one; else None and why there is none
    to check (no data yet: ok; locked by a running node or unreadable: FAIL).
    """
    if not (paths.store_dir / _STORE_MARKER).is_file():
        return None, Check(OK, "store", f"no data yet ({paths.store_dir} has no database)")
    try:
        store = BlockStore(str(paths.store_dir), cache_bytes=1 << 20)
    except ChainError as exc:
        if any(sign in str(exc) for sign in _LOCKED):
            return None, Check(FAIL, "store", f"store is locked: is the node running? ({exc})")
        return None, Check(FAIL, "store", str(exc))
    return store, None


def check_store(paths: HomePaths, store: BlockStore, genesis: Genesis | None) -> Check:
    """The store was initialised from this genesis; report its height."""
    try:
        mark, head = store.genesis_mark(), store.head()
    except ChainError as exc:
        return Check(FAIL, "store", str(exc))
    if mark is None or head is None:
        return Check(OK, "store", "store not initialised yet (the node will do it)")
    if genesis is None:
        return Check(WARN, "store",
                     f"store at height {head.height}; genesis unreadable, not compared")
    want = genesis_hash(genesis)
    if mark.genesis_hash != want:
        return Check(FAIL, "store",
                     f"genesis mismatch: the data in {paths.store_dir} was created with genesis "
                     f"{mark.genesis_hash.hex()}, but {paths.genesis_file} has hash {want.hex()}")
    return Check(OK, "store", f"store at height {head.height}, genesis matches")


def check_validator_key(paths: HomePaths) -> tuple[SigningKey | None, Check]:
    """The validator key loads, or is absent (a full node)."""
    if not paths.validator_key_file.exists():
        return None, Check(OK, "validator-key", "none: this is a full node")
    try:
        key = load_key_file(paths.validator_key_file)
    except KeyFileError as exc:
        return None, Check(FAIL, "validator-key", str(exc))
    return key, Check(OK, "validator-key", _bech32(key))


def check_node_key(paths: HomePaths) -> Check:
    """The node key (the node's p2p identity) exists and loads."""
    if not paths.node_key_file.exists():
        return Check(FAIL, "node-key", f"missing {paths.node_key_file} (`gannet node init` "
                     "writes one)")
    try:
        key = load_key_file(paths.node_key_file)
    except KeyFileError as exc:
        return Check(FAIL, "node-key", str(exc))
    return Check(OK, "node-key", f"node id {key.public_key.hex()}")


def check_validator_in_genesis(key: SigningKey, genesis: Genesis) -> Check:
    """The validator key is one of the genesis validators (else it only joins by staking)."""
    address = address_from_public_key(key.public_key)
    if any(address_from_public_key(v.public_key) == address for v in genesis.validators):
        return Check(OK, "validator-set", f"{_bech32(key)} is a genesis validator")
    return Check(WARN, "validator-set", f"{_bech32(key)} is not in the genesis validator set "
                 "(it signs only once it is bonded)")


def check_wal_integrity(paths: HomePaths) -> Check:
    """Every WAL segment reads back; a torn tail is harmless (cut at the next start)."""
    report = check_wal(paths.wal_dir)
    if report.corruption is not None:
        return Check(FAIL, "wal", report.corruption)
    if not report.exists:
        return Check(OK, "wal", "no WAL yet")
    ended = "none" if report.last_ended_height is None else str(report.last_ended_height)
    summary = (f"{report.segments} segment(s), {report.entries} entries, "
               f"last ended height {ended}")
    if report.torn_bytes:
        return Check(WARN, "wal", f"torn tail of {report.torn_bytes} bytes (an unfinished "
                     f"write before a crash; dropped at the next start); {summary}")
    return Check(OK, "wal", summary)


def check_sign_state(paths: HomePaths, key: SigningKey | None, store: BlockStore | None,
                     store_failed: bool) -> Check:
    """The signer's state is readable and not behind this validator's signatures on chain."""
    if key is None:
        return Check(OK, "sign-state", "no validator key: nothing signs")
    if store_failed:
        try:
            load_sign_state(paths.sign_state_file)
        except ConsensusError as exc:
            return Check(FAIL, "sign-state", str(exc))
        return Check(WARN, "sign-state", "readable, but not compared with the chain: the "
                     "store could not be opened")
    try:
        state = load_sign_state(paths.sign_state_file)
        head = store.head() if store is not None else None
        height = head.height if head is not None else 0
        signed = own_signed_heights(store, address_from_public_key(key.public_key)) \
            if store is not None else []
        check_double_sign_risk(state, height, signed)
    except (ConsensusError, ChainError) as exc:
        return Check(FAIL, "sign-state", str(exc))
    if state is None:
        return Check(OK, "sign-state", "none yet: nothing signed, the chain is empty")
    return Check(OK, "sign-state", f"last signed height {state.height} round {state.round} "
                 f"step {state.step}")


def _bech32(key: SigningKey) -> str:
    return encode_address(address_from_public_key(key.public_key))


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())
