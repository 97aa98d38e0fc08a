"""The multi-node harness itself: start, RPC, process control, partitions, cleanup.

Multi-validator consensus is not wired into the node yet, so these tests check
what the harness controls, not block production: any height is accepted.
Starting a cluster costs about two seconds, so read-only checks share one.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from chain.address import address_from_public_key, encode_address
from node.config import HomePaths, load_config
from node.keys import load_key_file
from tests.e2e.cluster import SKIP_DOUBLE_SIGN_FLAG, Cluster, ClusterError
from tests.e2e.harness import wait_until

pytestmark = pytest.mark.e2e
TIMEOUT_S = 10.0


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def proxy_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("proxy")]


@pytest.fixture(scope="module")
def four(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A 4-node cluster for checks that change nothing (partitions are healed after)."""
    threads_before = proxy_threads()
    with Cluster(tmp_path_factory.mktemp("four"), n=4) as cluster:
        yield cluster
    assert not any(is_alive(pid) for pid in cluster.pids())
    assert proxy_threads() == threads_before


# --- a shared 4-node cluster ---------------------------------------------------------


def test_four_nodes_start_and_every_rpc_answers(four: Cluster) -> None:
    assert all(isinstance(h, int) and h >= 0 for h in four.heights())
    for i in range(4):
        status = four.rpc(i, "gannet_status")
        assert status["chain_id"] == four.summary["chain_id"] == "gannet-testnet"
        assert status["validator"] == four.summary["nodes"][i]["validator_address"]
    assert len(four.wait_height(0)) == 4
    pids = four.pids()
    assert len(set(pids)) == 4 and all(is_alive(pid) for pid in pids)


def test_peers_are_reached_through_the_proxy_of_each_link(four: Cluster) -> None:
    node_ids = [load_key_file(HomePaths(four.home(j)).node_key_file).public_key.hex()
                for j in range(4)]
    for i in range(4):
        config = load_config(HomePaths(four.home(i)).config_file)
        assert config.p2p.port == four.p2p_ports[i]
        assert config.rpc.port == four.node(i).rpc_port
        assert config.p2p.pex is False  # gossip of real ports would bypass the proxies
        expected = [f"{node_ids[j]}@127.0.0.1:{four.mesh.port(i, j)}"
                    for j in range(4) if j != i]
        assert list(config.p2p.persistent_peers) == expected
        for j in range(4):
            if j != i:
                assert four.mesh.link(i, j).target == ("127.0.0.1", four.p2p_ports[j])


def test_validator_addresses_match_the_keys(four: Cluster) -> None:
    # testnet.json is what scripts read; it must agree with the key files.
    for i, entry in enumerate(four.summary["nodes"]):
        key = load_key_file(HomePaths(four.home(i)).validator_key_file)
        assert entry["validator_address"] == encode_address(
            address_from_public_key(key.public_key))


def test_partition_toggles_the_links_between_groups(four: Cluster) -> None:
    mesh = four.mesh
    try:
        four.partition([[0, 1], [2, 3]])
        assert {pair for pair, link in mesh.links.items() if link.is_cut} == {
            (i, j) for i in range(4) for j in range(4) if (i < 2) != (j < 2)}
        four.partition([[0, 1, 2]])  # node 3 in no group: isolated
        assert {pair for pair, link in mesh.links.items() if link.is_cut} == {
            (0, 3), (1, 3), (2, 3), (3, 0), (3, 1), (3, 2)}
    finally:
        four.heal()
    assert not any(link.is_cut for link in mesh.links.values())


def test_faucet_signer_holds_a_funded_account(four: Cluster) -> None:
    signer = four.faucet_signer()
    assert signer.address == four.summary["faucets"][0]["address"]
    assert signer.chain_id == b"gannet-testnet"
    account = four.rpc(0, "gannet_getAccount", signer.address)
    assert int(account["gpu"]) > 0


# --- process control -------------------------------------------------------------------


def test_kill9_start_stop_pause_resume(tmp_path: Path) -> None:
    with Cluster(tmp_path, n=2) as cluster:
        # kill -9, then start again
        pid = cluster.node(1).proc.pid
        cluster.kill9(1)
        assert not is_alive(pid)
        assert cluster.heights()[1] is None
        assert cluster.node(1).returncode == -signal.SIGKILL
        with pytest.raises(OSError):
            cluster.rpc(1, "gannet_status")
        cluster.start(1)
        assert cluster.node(1).proc.pid != pid
        assert cluster.rpc(1, "gannet_status")["chain_id"] == "gannet-testnet"
        with pytest.raises(ClusterError, match="already running"):
            cluster.start(1)
        # SIGTERM is a clean exit
        assert cluster.stop(1) == 0
        assert "node stopped" in cluster.node(1).log_of_this_run()
        assert cluster.heights()[1] is None
        cluster.start(1)
        # SIGSTOP hangs a node, SIGCONT wakes it
        cluster.pause(0)
        with pytest.raises(OSError):  # a stopped process answers nothing: the call times out
            cluster.node(0).rpc("gannet_status", timeout=0.5)
        assert cluster.heights()[0] is None
        with pytest.raises(AssertionError, match=r"did not reach height 0 .* heights \[None\]"):
            cluster.wait_height(0, nodes=[0], timeout_s=0.3)
        cluster.resume(0)
        reached = cluster.wait_height(0, timeout_s=TIMEOUT_S)
        assert all(h is not None and h >= 0 for h in reached)  # all four answer again
        assert all(now >= then for now, then in zip(cluster.heights(), reached, strict=True))
        cluster.pause(0)  # left paused: leaving the cluster must still stop it
        pids = cluster.pids()
        assert len(pids) == 4
    assert not any(is_alive(pid) for pid in pids)


def test_wipe_with_and_without_sign_state(tmp_path: Path) -> None:
    with Cluster(tmp_path, n=1) as cluster:
        paths = HomePaths(cluster.home(0))
        with pytest.raises(ClusterError, match="running"):
            cluster.wipe(0)
        cluster.stop(0)
        assert paths.store_dir.exists()
        if not paths.sign_state_file.exists():  # the node does not write one yet
            paths.sign_state_file.write_text('{"marker": 1}')
        sign_state = paths.sign_state_file.read_bytes()
        cluster.wipe(0)
        assert not paths.store_dir.exists()
        assert paths.sign_state_file.read_bytes() == sign_state
        assert paths.validator_key_file.exists() and paths.node_key_file.exists()
        cluster.start(0)
        assert SKIP_DOUBLE_SIGN_FLAG not in cluster.node(0).args
        assert cluster.heights()[0] is not None and paths.store_dir.exists()

        cluster.kill9(0)
        cluster.wipe(0, keep_sign_state=False)
        assert not (cluster.home(0) / "data").exists()
        try:
            cluster.start(0)
        except AssertionError as exc:
            # Until the node takes the option, Node refuses the keyword; nothing else may fail.
            assert "skip_double_sign_check" in str(exc), exc
        else:
            assert cluster.heights()[0] is not None
        assert cluster.node(0).args[1:] == ["node", "start", "--home", str(cluster.home(0)),
                                            SKIP_DOUBLE_SIGN_FLAG]


def test_no_proxies_peers_dial_each_other_directly(tmp_path: Path) -> None:
    with Cluster(tmp_path, n=2, proxies=False) as cluster:
        config = load_config(HomePaths(cluster.home(0)).config_file)
        node1 = cluster.summary["nodes"][1]["node_id"]
        assert list(config.p2p.persistent_peers) == [
            f"{node1}@127.0.0.1:{cluster.p2p_ports[1]}"]
        assert cluster.mesh is None
        with pytest.raises(ClusterError, match="without proxies"):
            cluster.partition([[0], [1]])


# --- cleanup ---------------------------------------------------------------------------


def test_cleanup_runs_when_the_test_body_fails(tmp_path: Path) -> None:
    threads_before = proxy_threads()
    with pytest.raises(RuntimeError, match="boom"), Cluster(tmp_path, n=2) as cluster:
        cluster.pause(1)
        pids = cluster.pids()
        raise RuntimeError("boom")
    wait_until(lambda: not any(is_alive(pid) for pid in pids), TIMEOUT_S, "every node gone")
    assert proxy_threads() == threads_before


class _BrokenNode1(Cluster):
    """Node 1's genesis is not JSON, so node 1 exits at start while node 0 comes up."""

    def setup(self) -> None:
        super().setup()
        HomePaths(self.home(1)).genesis_file.write_text("{")


def test_a_node_that_cannot_start_stops_the_others(tmp_path: Path) -> None:
    threads_before = proxy_threads()
    cluster = _BrokenNode1(tmp_path, n=2)
    with pytest.raises(AssertionError, match=r"node start .* exited with 1"), cluster:
        pytest.fail("the cluster must not start")
    started = cluster.pids()
    assert len(started) == 1  # node 0 came up, and then went down with the rest
    assert not is_alive(started[0])
    assert all(proc.returncode is not None for proc in cluster.procs)
    assert proxy_threads() == threads_before
