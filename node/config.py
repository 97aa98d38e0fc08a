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
    """Local consensus timing (not a network rule)."""

    block_time_ms: int = 1000
    max_block_txs: int = 5000


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything a node reads at start-up besides genesis and keys."""

    moniker: str = "gannet"
    log_level: str = "info"
    rpc: RpcConfig = RpcConfig()
    mempool: MempoolConfig = MempoolConfig()
    consensus: ConsensusConfig = ConsensusConfig()
    store: StoreConfig = StoreConfig()


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
    def store_dir(self) -> Path:
        return self.home / "data" / "store"


_SECTIONS = {"rpc": RpcConfig, "mempool": MempoolConfig, "consensus": ConsensusConfig,
             "store": StoreConfig}


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
    if type(value) is not want:
        raise ConfigError(f"{path}: expected {want.__name__}, got {value!r}")
    if want is int and value < 0:
        raise ConfigError(f"{path}: must not be negative, got {value}")
    return value


def config_to_dict(config: NodeConfig) -> dict[str, Any]:
    """The TOML document of a config."""
    doc: dict[str, Any] = {"moniker": config.moniker, "log_level": config.log_level}
    for name in _SECTIONS:
        section = getattr(config, name)
        doc[name] = {f.name: getattr(section, f.name) for f in fields(section)}
    return doc


def save_config(path: Path, config: NodeConfig) -> None:
    """Write `config.toml` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(path, tomli_w.dumps(config_to_dict(config)).encode())
