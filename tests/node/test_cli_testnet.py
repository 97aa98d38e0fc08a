"""`gannet testnet`, node keys in `node init`/`devnet` homes, and the new node options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import node.cli_node as cli_node
import node.cli_testnet as cli_testnet
from chain.address import address_from_public_key, encode_address
from chain.keystore import load_keystore
from genesis.document import genesis_hash, load_genesis
from node.cli import main
from node.config import HomePaths, load_config
from node.keys import load_key_file, load_or_create_node_key


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def assert_one_line_failure(result: Result, words: str, code: int = 1) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.strip().splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and words in lines[0], result.output


@pytest.fixture(scope="module")
def testnet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tn") / "net"
    result = run("testnet", "-n", "3", "--output", str(out), "--base-port", "31000",
                 "--chain-id", "gannet-clitest", "--block-time", "250",
                 "--funded-accounts", "2")
    assert result.exit_code == 0, result.output
    return out


# --- gannet testnet ----------------------------------------------------------------


def test_testnet_writes_complete_homes_with_one_genesis(testnet_dir: Path) -> None:
    hashes = set()
    for index in range(3):
        paths = HomePaths(testnet_dir / f"node{index}")
        config = load_config(paths.config_file)
        assert config.moniker == f"node{index}"
        assert config.p2p.port == 31000 + 2 * index
        assert config.rpc.port == 31000 + 2 * index + 1
        assert config.consensus.block_time_ms == 250
        genesis = load_genesis(paths.genesis_file)
        hashes.add(genesis_hash(genesis))
        validator = load_key_file(paths.validator_key_file)
        assert genesis.validators[index].public_key == validator.public_key
        assert load_key_file(paths.node_key_file).public_key != validator.public_key
    assert len(hashes) == 1
    assert genesis.chain_id == "gannet-clitest"
    assert genesis.params.block.block_time_ms == 250


def test_testnet_peers_name_the_other_nodes_by_node_key(testnet_dir: Path) -> None:
    node_ids = [load_key_file(HomePaths(testnet_dir / f"node{i}").node_key_file)
                .public_key.hex() for i in range(3)]
    for index in range(3):
        peers = load_config(HomePaths(testnet_dir / f"node{index}").config_file)
        expected = [f"{node_ids[j]}@127.0.0.1:{31000 + 2 * j}" for j in range(3) if j != index]
        assert list(peers.p2p.persistent_peers) == expected


def test_testnet_summary_and_faucet_keystores(testnet_dir: Path) -> None:
    summary = json.loads((testnet_dir / "testnet.json").read_text())
    genesis = load_genesis(testnet_dir / "node0" / "config" / "genesis.json")
    assert summary["chain_id"] == "gannet-clitest"
    assert summary["genesis_hash"] == genesis_hash(genesis).hex()
    for index, node in enumerate(summary["nodes"]):
        paths = HomePaths(Path(node["home"]))
        assert paths.home == (testnet_dir / f"node{index}").resolve()
        assert node["node_id"] == load_key_file(paths.node_key_file).public_key.hex()
        assert node["rpc_url"] == f"http://127.0.0.1:{node['rpc_port']}/"
        validator = load_key_file(paths.validator_key_file)
        assert node["validator_address"] == encode_address(
            address_from_public_key(validator.public_key))
        assert genesis.validators[index].public_key == validator.public_key
    funded = {account.address.hex(): account.gpu for account in genesis.accounts}
    assert len(summary["faucets"]) == 2
    for index, faucet in enumerate(summary["faucets"]):
        assert Path(faucet["keystore"]) == (testnet_dir / "accounts" / f"faucet{index}.json"
                                            ).resolve()
        key = load_keystore(faucet["keystore"], "")
        doc = json.loads(Path(faucet["keystore"]).read_text())
        assert doc["address"] == faucet["address"]
        assert funded[address_from_public_key(key.public_key).hex()] > 0


def test_testnet_refuses_a_non_empty_directory(testnet_dir: Path) -> None:
    before = (testnet_dir / "testnet.json").read_bytes()
    result = run("testnet", "-n", "2", "--output", str(testnet_dir))
    assert_one_line_failure(result, "is not an empty directory; refusing to overwrite it")
    assert (testnet_dir / "testnet.json").read_bytes() == before


def test_testnet_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    result = run("testnet", "--output", str(tmp_path / "f"))
    assert_one_line_failure(result, "is a file", code=2)


def test_a_failed_write_leaves_no_half_testnet(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli_testnet, "save_keystore", disk_full)
    result = run("testnet", "-n", "2", "--output", str(tmp_path))
    assert_one_line_failure(result, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_testnet_accepts_an_empty_existing_directory(tmp_path: Path) -> None:
    result = run("testnet", "-n", "1", "--output", str(tmp_path), "--funded-accounts", "0")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "testnet.json").read_text())["faucets"] == []


@pytest.mark.parametrize(("args", "words", "code"), [
    (["-n", "0"], "0 is not in the range 1<=x<=100", 2),
    (["-n", "101"], "101 is not in the range 1<=x<=100", 2),
    (["--base-port", "0"], "0 is not in the range", 2),
    (["--base-port", "65535"], "outside 1..65535", 1),
    (["--chain-id", "Bad Id"], "chain_id", 1),
])
def test_testnet_rejects_bad_options(tmp_path: Path, args: list[str], words: str,
                                     code: int) -> None:
    out = tmp_path / "net"
    result = run("testnet", "--output", str(out), *args)
    assert_one_line_failure(result, words, code)
    assert not out.exists() or not any(out.iterdir())


# --- node keys ----------------------------------------------------------------------


def test_load_or_create_node_key_creates_once(tmp_path: Path) -> None:
    path = tmp_path / "config" / "node_key.json"
    first = load_or_create_node_key(path)
    assert path.exists()
    assert load_or_create_node_key(path) == first
    assert load_key_file(path) == first


def test_node_init_writes_node_key_and_p2p_port(tmp_path: Path) -> None:
    result = run("node", "init", "--home", str(tmp_path), "--p2p-port", "0")
    assert result.exit_code == 0, result.output
    paths = HomePaths(tmp_path)
    assert load_config(paths.config_file).p2p.port == 0
    node_key = load_key_file(paths.node_key_file)
    assert node_key != load_key_file(paths.validator_key_file)


def test_node_init_default_p2p_port(tmp_path: Path) -> None:
    assert run("node", "init", "--home", str(tmp_path)).exit_code == 0
    assert load_config(HomePaths(tmp_path).config_file).p2p.port == 26656


class _Captured:
    """Stands in for `run_node`: records what the command would run the node with."""

    def __init__(self) -> None:
        self.calls: list[tuple[Path, tuple]] = []

    def __call__(self, paths: HomePaths, *args: object, **options: object) -> None:
        self.calls.append((paths.home, args))


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> _Captured:
    fake = _Captured()
    monkeypatch.setattr(cli_node, "run_node", fake)
    return fake


def test_devnet_home_has_node_key_and_p2p_port(tmp_path: Path, captured: _Captured) -> None:
    home = tmp_path / "dev"
    result = run("devnet", "--home", str(home), "--p2p-port", "0")
    assert result.exit_code == 0, result.output
    paths = HomePaths(home)
    assert load_config(paths.config_file).p2p.port == 0
    node_key = load_key_file(paths.node_key_file)
    assert captured.calls == [(home, (False,))]
    # A restart keeps the node key and takes the new port.
    assert run("devnet", "--home", str(home), "--p2p-port", "4567").exit_code == 0
    assert load_config(paths.config_file).p2p.port == 4567
    assert load_key_file(paths.node_key_file) == node_key


def test_devnet_restart_gives_an_old_home_a_node_key(tmp_path: Path,
                                                     captured: _Captured) -> None:
    home = tmp_path / "dev"
    assert run("devnet", "--home", str(home)).exit_code == 0
    paths = HomePaths(home)
    assert load_config(paths.config_file).p2p.port == 26656
    paths.node_key_file.unlink()
    assert run("devnet", "--home", str(home)).exit_code == 0
    assert paths.node_key_file.exists()


def test_skip_double_sign_flag_reaches_run_node(tmp_path: Path, captured: _Captured) -> None:
    assert run("node", "init", "--home", str(tmp_path / "a")).exit_code == 0
    assert run("node", "start", "--home", str(tmp_path / "a")).exit_code == 0
    assert run("node", "start", "--home", str(tmp_path / "a"),
               "--unsafe-skip-double-sign-check").exit_code == 0
    assert run("devnet", "--home", str(tmp_path / "d"),
               "--unsafe-skip-double-sign-check").exit_code == 0
    assert [args for _, args in captured.calls] == [(False,), (True,), (True,)]


class _FakeNode:
    """Records the keywords `Node` is built with, then stops at once."""

    seen: list[dict] = []

    def __init__(self, paths, config, genesis, key, **options) -> None:
        _FakeNode.seen.append(options)

    def stop(self) -> None:
        pass

    async def run(self) -> None:
        pass


def test_node_gets_the_keyword_only_when_the_flag_is_set(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_node, "Node", _FakeNode)
    monkeypatch.setattr(cli_node, "configure_logging", lambda level: None)
    _FakeNode.seen = []
    assert run("node", "init", "--home", str(tmp_path)).exit_code == 0
    assert run("node", "start", "--home", str(tmp_path)).exit_code == 0
    assert run("node", "start", "--home", str(tmp_path),
               "--unsafe-skip-double-sign-check").exit_code == 0
    assert _FakeNode.seen == [{}, {"skip_double_sign_check": True}]


# --- parameter overrides --------------------------------------------------------------


def test_testnet_params_override_lands_in_genesis(tmp_path: Path) -> None:
    """--params replaces the named parameters in the shared genesis and keeps the rest."""
    overrides = tmp_path / "params.json"
    overrides.write_text(json.dumps({"tokenomics": {"halving_period_blocks": 50},
                                     "staking": {"signed_blocks_window": 20}}))
    out = tmp_path / "net"
    result = run("testnet", "-n", "2", "--output", str(out), "--base-port", "31200",
                 "--block-time", "250", "--params", str(overrides))
    assert result.exit_code == 0, result.output
    genesis = load_genesis(HomePaths(out / "node0").genesis_file)
    assert genesis.params.tokenomics.halving_period_blocks == 50
    assert genesis.params.staking.signed_blocks_window == 20
    assert genesis.params.block.block_time_ms == 250


@pytest.mark.parametrize(("content", "words"), [
    ("{not json", "cannot read parameter overrides"),
    ('{"tokenomics": {"halving_period_blocks": 0}}', "params.tokenomics.halving_period_blocks"),
    ('{"nope": 1}', "params.nope: unknown parameter"),
])
def test_testnet_bad_params_fail_in_one_line(tmp_path: Path, content: str, words: str) -> None:
    """A broken overrides file is refused with one line naming the problem, writing nothing."""
    overrides = tmp_path / "params.json"
    overrides.write_text(content)
    out = tmp_path / "net"
    result = run("testnet", "-n", "2", "--output", str(out), "--params", str(overrides))
    assert_one_line_failure(result, words)
    assert not out.exists() or not any(out.iterdir())


def test_devnet_params_only_for_a_new_home(tmp_path: Path) -> None:
    """A devnet home made with --params carries them; an existing home refuses new ones."""
    overrides = tmp_path / "params.json"
    overrides.write_text(json.dumps({"tokenomics": {"buyback_interval_blocks": 3}}))
    paths = HomePaths(tmp_path / "dev")
    params = cli_node.load_params_overrides(overrides, cli_node.default_params(200))
    cli_node.make_devnet_home(paths, 0, 200, 0, params)
    assert load_genesis(paths.genesis_file).params.tokenomics.buyback_interval_blocks == 3
    result = run("devnet", "--home", str(paths.home), "--params", str(overrides))
    assert_one_line_failure(result, "--params applies only to a new one")


def test_devnet_genesis_has_a_pool_an_issuer_and_licences(tmp_path: Path) -> None:
    """A devnet can swap, pay revenue and bind licences from the first block."""
    paths = HomePaths(tmp_path / "dev")
    cli_node.make_devnet_home(paths, 0, 200, 0)
    genesis = load_genesis(paths.genesis_file)
    dev = json.loads((paths.home / cli_node.DEV_KEY_NAME).read_text())["address"]
    assert encode_address(genesis.stable_issuer) == dev
    assert (genesis.pool.gpu, genesis.pool.stable) == (cli_node.DEVNET_POOL_GPU,
                                                       cli_node.DEVNET_POOL_STABLE)
    # The dev account holds every licence (the provider and validator accounts none).
    assert [a.licences for a in genesis.accounts if a.licences] == [cli_node.DEVNET_LICENCES]
    assert [encode_address(a.address) for a in genesis.accounts if a.licences] == [dev]
