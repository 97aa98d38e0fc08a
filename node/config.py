"""Node configuration: a node home directory and its `config/config.toml`.

Home layout (as CometBFT's):
  config/config.toml           this file
  config/genesis.json          the network's genesis
  config/validator_key.json    the validator's consensus key (absent on a full node)
  data/store/                  the LevelDB block store
Unknown keys and wrong types are errors: a typo never silently falls back to a
default.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import tomli_w

from chain.files import write_file_atomic


class ConfigError(Exception):
    """The configuration file is missing, unreadable or invalid."""


@dataclass(frozen=True, slots=True)
class RpcConfig:
    """JSON-RPC listener and its abuse limits."""

    host: str = "127.0.0.1"
    port: int = 8545
    max_body_bytes: int = 1 << 20
    max_batch: int = 100
    max_connections: int = 256
    header_timeout_s: int = 5
    body_timeout_s: int = 5
    keepalive_timeout_s: int = 15


@dataclass(frozen=True, slots=True)
class MempoolConfig:
    """Mempool limits."""

    max_txs: int = 10_000
    max_bytes: int = 32 << 20
    max_tx_bytes: int = 64 << 10
    max_per_account: int = 256


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """LevelDB tuning."""

    cache_mb: int = 64


@dataclass(frozen=True, slots=True)
class ConsensusConfig:
    """Local consensus timing (not a network rule).

    `block_time_ms` is the pause after a commit before the next height starts
    (CometBFT's timeout_commit). Step timeouts grow by their delta each round;
    the defaults suit validators on one machine or a LAN.
    """

    block_time_ms: int = 1000
    max_block_txs: int = 5000
    timeout_propose_ms: int = 1000
    timeout_propose_delta_ms: int = 500
    timeout_prevote_ms: int = 500
    timeout_prevote_delta_ms: int = 250
    timeout_precommit_ms: int = 500
    timeout_precommit_delta_ms: int = 250


@dataclass(frozen=True, slots=True)
class P2PConfig:
    """The peer-to-peer listener, the peers to keep, and limits on what peers may do.

    `persistent_peers` entries read `<node id hex>@<host>:<port>`; the node dials
    them at start and redials with backoff whenever a link drops.
    """

    host: str = "127.0.0.1"
    port: int = 26656
    persistent_peers: tuple[str, ...] = ()
    max_inbound: int = 40
    max_outbound: int = 10
    max_frame_bytes: int = 6 << 20
    max_frames_per_s: int = 2000
    max_bytes_per_s: int = 32 << 20
    handshake_timeout_s: int = 5
    ban_s: int = 60
    pex: bool = True


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything a node reads at start-up besides genesis and keys."""

    moniker: str = "gannet"
    log_level: str = "info"
    rpc: RpcConfig = RpcConfig()
    mempool: MempoolConfig = MempoolConfig()
    consensus: ConsensusConfig = ConsensusConfig()
    store: StoreConfig = StoreConfig()
    p2p: P2PConfig = P2PConfig()


@dataclass(frozen=True, slots=True)
class HomePaths:
    """Where a node keeps its files."""

    home: Path

    @property
    def config_file(self) -> Path:
        return self.home / "config" / "config.toml"

    @property
    def genesis_file(self) -> Path:
        return self.home / "config" / "genesis.json"

    @property
    def validator_key_file(self) -> Path:
        return self.home / "config" / "validator_key.json"

    @property
    def node_key_file(self) -> Path:
        return self.home / "config" / "node_key.json"

    @property
    def store_dir(self) -> Path:
        return self.home / "data" / "store"

    @property
    def sign_state_file(self) -> Path:
        return self.home / "data" / "sign_state.json"

    @property
    def wal_dir(self) -> Path:
        return self.home / "data" / "wal"


_SECTIONS = {"rpc": RpcConfig, "mempool": MempoolConfig, "consensus": ConsensusConfig,
             "store": StoreConfig, "p2p": P2PConfig}


def load_config(path: Path) -> NodeConfig:
    """Read and check `config.toml`; every problem is a `ConfigError` naming the key."""
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"no config at {path} (run `gannet node init`)") from exc
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return config_from_dict(doc)


def config_from_dict(doc: dict[str, Any]) -> NodeConfig:
    """Build a `NodeConfig` from parsed TOML; missing keys take defaults."""
    top = {f.name for f in fields(NodeConfig)}
    unknown = set(doc) - top
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, value in doc.items():
        cls = _SECTIONS.get(name)
        values[name] = _section(name, cls, value) if cls else _scalar(name, str, value)
    return NodeConfig(**values)


def _section(name: str, cls: type, doc: Any) -> Any:
    if not isinstance(doc, dict):
        raise ConfigError(f"[{name}] must be a table")
    types = {f.name: f.type for f in fields(cls)}
    unknown = set(doc) - set(types)
    if unknown:
        raise ConfigError(f"unknown key(s) in [{name}]: {', '.join(sorted(unknown))}")
    default = cls()
    checked = {k: _scalar(f"{name}.{k}", type(getattr(default, k)), v) for k, v in doc.items()}
    return replace(default, **checked)


def _scalar(path: str, want: type, value: Any) -> Any:
    if want is tuple:
        return _string_list(path, value)
    if type(value) is not want:
        raise ConfigError(f"{path}: expected {want.__name__}, got {value!r}")
    if want is int and value < 0:
        raise ConfigError(f"{path}: must not be negative, got {value}")
    return value


def _string_list(path: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or any(type(item) is not str for item in value):
        raise ConfigError(f"{path}: expected a list of strings, got {value!r}")
    return tuple(value)


def config_to_dict(config: NodeConfig) -> dict[str, Any]:
    """The TOML document of a config."""
    doc: dict[str, Any] = {"moniker": config.moniker, "log_level": config.log_level}
    for name in _SECTIONS:
        section = getattr(config, name)
        doc[name] = {f.name: _toml_value(getattr(section, f.name)) for f in fields(section)}
    return doc


def _toml_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def save_config(path: Path, config: NodeConfig) -> None:
    """Write `config.toml` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(path, tomli_w.dumps(config_to_dict(config)).encode())
