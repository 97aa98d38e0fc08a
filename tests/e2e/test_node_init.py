"""The operator flow without the devnet shortcut: node init, fund, validate, start."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import NodeProcess, free_port, random_address, run_gannet, wait_until

pytestmark = pytest.mark.e2e


def test_init_fund_validate_start(tmp_path: Path) -> None:
    home, port = tmp_path / "n0", free_port()
    init = run_gannet(["node", "init", "--home", str(home), "--chain-id", "op-test",
                       "--rpc-port", str(port)])
    assert init.returncode == 0, init.stderr
    assert "validator gnt1" in init.stdout
    again = run_gannet(["node", "init", "--home", str(home)])
    assert again.returncode != 0 and "already exists" in again.stderr

    funded = random_address()
    added = run_gannet(["genesis", "add-account", "--home", str(home), funded, "12.5gpu"])
    assert added.returncode == 0, added.stderr
    genesis_file = home / "config" / "genesis.json"
    checked = run_gannet(["genesis", "validate", str(genesis_file)])
    assert checked.returncode == 0 and checked.stdout.startswith("ok: "), checked.stdout

    with NodeProcess(home, port) as node:
        assert node.rpc("gannet_chainId") == "op-test"
        account = node.rpc("gannet_getAccount", funded)
        assert account["gpu"] == str(12_500_000_000)
        wait_until(lambda: node.rpc("gannet_blockNumber") >= 2, 20, "two blocks")


def test_validator_refuses_to_sign_without_a_current_sign_state(tmp_path: Path) -> None:
    home, port = tmp_path / "v0", free_port()
    assert run_gannet(["node", "init", "--home", str(home), "--rpc-port", str(port),
                       "--p2p-port", "0"]).returncode == 0
    sign_state = home / "data" / "sign_state.json"
    initial = sign_state.read_bytes()
    with NodeProcess(home, port) as node:
        wait_until(lambda: node.rpc("gannet_blockNumber") >= 3, 20, "three blocks")

    sign_state.write_bytes(initial)  # a backup from before those blocks
    stale = run_gannet(["node", "start", "--home", str(home)], timeout_s=30)
    assert stale.returncode != 0
    assert "sign state" in stale.stderr and "--unsafe-skip-double-sign-check" in stale.stderr
    assert "Traceback" not in stale.stderr

    sign_state.unlink()
    missing = run_gannet(["node", "start", "--home", str(home)], timeout_s=30)
    assert missing.returncode != 0 and "no sign state" in missing.stderr, missing.stderr

    doctor = run_gannet(["doctor", "--home", str(home)])
    assert doctor.returncode != 0 and "sign" in doctor.stdout, doctor.stdout
