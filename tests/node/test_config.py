"""Node config: defaults round-trip; unknown keys and wrong types are errors."""

from pathlib import Path

import pytest

from node.config import (
    ConfigError,
    ConsensusConfig,
    NodeConfig,
    RpcConfig,
    config_from_dict,
    load_config,
    save_config,
)


def test_round_trip(tmp_path: Path) -> None:
    config = NodeConfig(moniker="n1", rpc=RpcConfig(port=9999),
                        consensus=ConsensusConfig(block_time_ms=250))
    save_config(tmp_path / "config.toml", config)
    assert load_config(tmp_path / "config.toml") == config


def test_missing_keys_take_defaults() -> None:
    assert config_from_dict({"rpc": {"port": 1}}) == NodeConfig(rpc=RpcConfig(port=1))


@pytest.mark.parametrize(("doc", "message"), [
    ({"rpcx": {}}, "unknown config key"),
    ({"rpc": {"prot": 1}}, r"unknown key\(s\) in \[rpc\]: prot"),
    ({"rpc": {"port": "80"}}, "rpc.port: expected int"),
    ({"rpc": {"port": True}}, "rpc.port: expected int"),
    ({"rpc": {"port": -1}}, "must not be negative"),
    ({"rpc": 5}, r"\[rpc\] must be a table"),
    ({"moniker": 3}, "moniker: expected str"),
])
def test_rejects_bad_config(doc: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(doc)


def test_missing_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="gannet node init"):
        load_config(tmp_path / "nope.toml")


def test_unparsable_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[rpc\nport=")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(path)


def test_every_p2p_key_reaches_the_switch_under_its_own_name() -> None:
    from dataclasses import fields

    from node.config import P2PConfig
    from node.service import switch_config

    custom = P2PConfig(port=0, persistent_peers=("ab@127.0.0.1:1",), max_inbound=3, ban_s=7,
                       pex=False)
    switch = switch_config(NodeConfig(p2p=custom))
    for f in fields(P2PConfig):
        assert getattr(switch, f.name) == getattr(custom, f.name)
