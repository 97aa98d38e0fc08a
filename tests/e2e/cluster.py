"""A local multi-validator cluster of real `gannet` processes, links through fault proxies.

    with Cluster(tmp_path, n=4) as cluster:
        cluster.wait_height(3)
        cluster.partition([[0, 1], [2, 3]])
        cluster.kill9(2); cluster.start(2)
        cluster.heal()

`Cluster` runs `gannet testnet` (with `params={...}`: `--params`, genesis
parameter overrides), gives every node fresh ports, and (with
`proxies=True`) points node i's persistent peer j at the `ProxyMesh` link i→j,
with peer exchange off so nodes never learn each other's real ports and go
around the proxies. Nodes run as `harness.NodeProcess` (own process group, log
in DIR/nodeI.log). Leaving the context always stops every node (SIGCONT for
paused ones, SIGTERM, SIGKILL after a grace period) and every proxy, also
when the test failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from chain.keystore import load_keystore
from node.config import HomePaths, NodeConfig, load_config, save_config
from tests.e2e.harness import (
    PORT_ATTEMPTS,
    READY_TIMEOUT_S,
    STOP_TIMEOUT_S,
    DevSigner,
    NodeProcess,
    RpcError,
    free_port,
    rpc_call,
    run_gannet,
)
from tests.e2e.proxy import ProxyMesh

HOST = "127.0.0.1"
STATUS_TIMEOUT_S = 1.0
SKIP_DOUBLE_SIGN_FLAG = "--unsafe-skip-double-sign-check"

Configure = Callable[[int, NodeConfig], NodeConfig]


class ClusterError(Exception):
    """The cluster cannot do what was asked (a node in the wrong state, no proxies, ...)."""


class Cluster:
    """N validator nodes of one `gannet testnet` under test control."""

    def __init__(self, tmp_path: Path, n: int = 4, block_time_ms: int = 200,
                 proxies: bool = True, funded_accounts: int = 1,
                 configure: Configure | None = None,
                 ready_timeout_s: float = READY_TIMEOUT_S,
                 params: Mapping[str, Any] | None = None) -> None:
        self.dir = Path(tmp_path) / "testnet"
        self.params = params  # genesis parameter overrides (`gannet testnet --params`)
        self.n = n
        self.block_time_ms = block_time_ms
        self.proxies = proxies
        self.funded_accounts = funded_accounts
        self.configure = configure
        self.ready_timeout_s = ready_timeout_s
        self.summary: dict[str, Any] = {}
        self.mesh: ProxyMesh | None = None
        self.procs: list[NodeProcess] = []
        self.p2p_ports: list[int] = []
        self.paused: set[int] = set()
        self.full_nodes: list[NodeProcess] = []
        self._skip_double_sign: set[int] = set()
        self._pids: list[int] = []
        self._start_args: list[list[str]] = []

    # --- life cycle ---------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        try:
            self.setup()
            self.start_all()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def setup(self) -> None:
        """Generate the testnet, start the proxies, write each node's ports and peers."""
        extra: list[str] = []
        if self.params is not None:
            params_file = self.dir.parent / "testnet-params.json"
            params_file.write_text(json.dumps(self.params))
            extra = ["--params", str(params_file)]
        result = run_gannet(["testnet", "-n", str(self.n), "--output", str(self.dir),
                             "--block-time", str(self.block_time_ms),
                             "--funded-accounts", str(self.funded_accounts), *extra])
        if result.returncode != 0:
            raise ClusterError(f"gannet testnet failed ({result.returncode}): "
                               f"{result.stderr or result.stdout}")
        self.summary = json.loads((self.dir / "testnet.json").read_text())
        ports = _distinct_free_ports(2 * self.n)
        self.p2p_ports = ports[:self.n]
        if self.proxies:
            self.mesh = ProxyMesh([(HOST, port) for port in self.p2p_ports]).start()
        self.procs = [NodeProcess(self.home(i), ports[self.n + i],
                                  ready_timeout_s=self.ready_timeout_s) for i in range(self.n)]
        self._start_args = [list(proc.args) for proc in self.procs]
        for i in range(self.n):
            self._write_config(i)

    def start_all(self) -> None:
        """Start every node at once; returns when every RPC answers."""
        with ThreadPoolExecutor(self.n) as pool:
            for future in [pool.submit(self.start, i) for i in range(self.n)]:
                future.result()

    def close(self) -> None:
        """Stop every node (paused ones too) and every proxy; safe to call twice."""
        try:
            for i in sorted(self.paused):
                self._signal(i, signal.SIGCONT)
            self.paused.clear()
            procs = [*self.procs, *self.full_nodes]
            running = [p for p in procs if p.returncode is None and p.proc is not None]
            for proc in running:  # all at once, so the grace periods overlap
                _killpg(proc, signal.SIGTERM)
            for proc in procs:
                proc.terminate(STOP_TIMEOUT_S)
        finally:
            if self.mesh is not None:
                self.mesh.stop()

    # --- one node -------------------------------------------------------------------------

    def home(self, i: int) -> Path:
        """Node i's home directory."""
        return self.dir / f"node{i}"

    def node(self, i: int) -> NodeProcess:
        """Node i's process (`.url`, `.rpc(...)`, `.proc`, `.log_tail()`)."""
        return self.procs[i]

    def rpc(self, i: int, method: str, *params: Any) -> Any:
        """Call a JSON-RPC method on node i."""
        return self.procs[i].rpc(method, *params)

    def pids(self) -> list[int]:
        """Every process id this cluster started, in start order (for leak checks)."""
        return list(self._pids)

    def start(self, i: int, skip_double_sign_check: bool = False,
              env: Mapping[str, str] | None = None) -> None:
        """Start node i (again) and wait until its RPC answers.

        After `wipe(i, keep_sign_state=False)` the start passes
        `--unsafe-skip-double-sign-check` once, as an operator would have to.
        `env` adds variables (test faults such as GANNET_FAULT_CRASH) to this
        start only; the next start without it runs without them.
        """
        proc = self.procs[i]
        if proc.proc is not None and proc.returncode is None:
            raise ClusterError(f"node {i} is already running")
        flag = skip_double_sign_check or i in self._skip_double_sign
        proc.args = [*self._start_args[i], *([SKIP_DOUBLE_SIGN_FLAG] if flag else [])]
        proc.env = dict(env or {})
        for attempt in range(PORT_ATTEMPTS):
            proc.proc = None
            try:
                proc.start()
                break
            except AssertionError:
                lost_race = "address already in use" in proc.log_of_this_run()
                if not lost_race or attempt == PORT_ATTEMPTS - 1:
                    raise
                self._move_ports(i)
        self._pids.append(proc.proc.pid)
        self._skip_double_sign.discard(i)

    def wait_exit(self, i: int, timeout_s: float = 30.0) -> int:
        """Wait until node i's process exits on its own; its exit status."""
        proc = self.procs[i]
        if proc.proc is None:
            raise ClusterError(f"node {i} was never started")
        try:
            return proc.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"node {i} still runs after {timeout_s:g} s; "
                                 f"log tail:\n{proc.log_tail()}") from None

    def stop(self, i: int) -> int | None:
        """SIGTERM node i and wait for it (SIGKILL after a grace period); its exit status."""
        self.resume(i)
        return self.procs[i].terminate(STOP_TIMEOUT_S)

    def kill9(self, i: int) -> None:
        """SIGKILL node i's process group: no shutdown code runs."""
        self.procs[i].kill9()
        self.paused.discard(i)

    def pause(self, i: int) -> None:
        """SIGSTOP node i: it keeps its sockets but answers nothing (a hung node)."""
        self._signal(i, signal.SIGSTOP)
        self.paused.add(i)

    def resume(self, i: int) -> None:
        """SIGCONT a paused node."""
        if i in self.paused:
            self._signal(i, signal.SIGCONT)
            self.paused.discard(i)

    def wipe(self, i: int, keep_sign_state: bool = True) -> None:
        """Delete node i's data (store, WAL) but keep its keys and config; node i must be down.

        `keep_sign_state` keeps the record of what the validator signed, so it
        resyncs without risk of signing twice; without it the next `start(i)`
        needs (and passes) `--unsafe-skip-double-sign-check`.
        """
        if self.procs[i].proc is not None and self.procs[i].returncode is None:
            raise ClusterError(f"node {i} is running; stop or kill9 it before wiping")
        paths = HomePaths(self.home(i))
        data = paths.store_dir.parent
        kept = paths.sign_state_file.read_bytes() \
            if keep_sign_state and paths.sign_state_file.exists() else None
        shutil.rmtree(data, ignore_errors=True)
        if kept is not None:
            data.mkdir(parents=True)
            paths.sign_state_file.write_bytes(kept)
        if not keep_sign_state:
            self._skip_double_sign.add(i)

    def add_full_node(self, name: str = "full0") -> NodeProcess:
        """Start a node without a validator key that follows the chain; returns its process.

        Its home is made as an operator would: the testnet's genesis copied in,
        `gannet node init` (which keeps that genesis), the validator key it made
        deleted, the validators as persistent peers (their real ports: a
        follower sits outside the proxied mesh). Leaving the cluster stops it.
        """
        paths = HomePaths(self.dir / name)
        paths.genesis_file.parent.mkdir(parents=True)
        shutil.copyfile(HomePaths(self.home(0)).genesis_file, paths.genesis_file)
        rpc_port, p2p_port = _distinct_free_ports(2)
        result = run_gannet(["node", "init", "--home", str(paths.home), "--moniker", name,
                             "--rpc-port", str(rpc_port), "--p2p-port", str(p2p_port)])
        if result.returncode != 0:
            raise ClusterError(f"gannet node init failed ({result.returncode}): "
                               f"{result.stderr or result.stdout}")
        paths.validator_key_file.unlink()
        config = load_config(paths.config_file)
        peers = tuple(f"{self.summary['nodes'][j]['node_id']}@{HOST}:{self.p2p_ports[j]}"
                      for j in range(self.n))
        config = replace(config, p2p=replace(config.p2p, host=HOST, persistent_peers=peers,
                                             pex=False),
                         consensus=replace(config.consensus, block_time_ms=self.block_time_ms))
        save_config(paths.config_file, config)
        proc = NodeProcess(paths.home, rpc_port, ready_timeout_s=self.ready_timeout_s)
        self.full_nodes.append(proc)
        proc.start()
        self._pids.append(proc.proc.pid)
        return proc

    # --- the network ----------------------------------------------------------------------

    def partition(self, groups: Sequence[Sequence[int]]) -> None:
        """Cut every link between groups (a node in no group is isolated)."""
        self._require_mesh().partition(groups)

    def heal(self) -> None:
        """Restore every link."""
        self._require_mesh().heal_all()

    def ring(self) -> None:
        """Keep only each node's links to its two ring neighbours (i - 1 and i + 1 mod n),
        cut every other; `heal()` restores the full mesh."""
        self._require_mesh().connect_only([(i, (i + 1) % self.n) for i in range(self.n)])

    def _require_mesh(self) -> ProxyMesh:
        if self.mesh is None:
            raise ClusterError("this cluster runs without proxies (proxies=False)")
        return self.mesh

    # --- observing --------------------------------------------------------------------------

    def heights(self, nodes: Iterable[int] | None = None) -> list[int | None]:
        """Each node's committed height (None where the RPC does not answer in time)."""
        return [self._height(i) for i in self._nodes(nodes)]

    def _height(self, i: int) -> int | None:
        proc = self.procs[i]
        if proc.proc is None or proc.returncode is not None or i in self.paused:
            return None
        try:
            return int(rpc_call(proc.url, "gannet_status", timeout=STATUS_TIMEOUT_S)["height"])
        except (OSError, RpcError):
            return None

    def wait_height(self, height: int, nodes: Iterable[int] | None = None,
                    timeout_s: float = 30.0) -> list[int]:
        """Wait until every node in `nodes` (default all) is at `height` or above."""
        chosen = self._nodes(nodes)
        deadline = time.monotonic() + timeout_s
        while True:
            heights = self.heights(chosen)
            if all(h is not None and h >= height for h in heights):
                return heights  # type: ignore[return-value]
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"nodes {chosen} did not reach height {height} within {timeout_s:g} s; "
                    f"heights {heights}; logs in {self.dir}")
            time.sleep(0.05)

    def faucet_signer(self, index: int = 0) -> DevSigner:
        """A signer for faucet account `index` (funded at genesis)."""
        keystore = self.summary["faucets"][index]["keystore"]
        return DevSigner(load_keystore(keystore, ""), self.summary["chain_id"])

    # --- helpers ------------------------------------------------------------------------------

    def _nodes(self, nodes: Iterable[int] | None) -> list[int]:
        return list(range(self.n)) if nodes is None else list(nodes)

    def _signal(self, i: int, sig: int) -> None:
        proc = self.procs[i]
        if proc.proc is None or proc.returncode is not None:
            raise ClusterError(f"node {i} is not running")
        _killpg(proc, sig)

    def _write_config(self, i: int) -> None:
        """Node i's ports and its peers (through the proxies when there are any)."""
        paths = HomePaths(self.home(i))
        config = load_config(paths.config_file)
        peers = tuple(f"{self.summary['nodes'][j]['node_id']}@{HOST}:{self._peer_port(i, j)}"
                      for j in range(self.n) if j != i)
        p2p = replace(config.p2p, host=HOST, port=self.p2p_ports[i], persistent_peers=peers,
                      pex=config.p2p.pex and not self.proxies)
        config = replace(config, rpc=replace(config.rpc, port=self.procs[i].rpc_port), p2p=p2p)
        if self.configure is not None:
            config = self.configure(i, config)
        save_config(paths.config_file, config)

    def _peer_port(self, i: int, j: int) -> int:
        return self.mesh.port(i, j) if self.mesh is not None else self.p2p_ports[j]

    def _move_ports(self, i: int) -> None:
        """Node i lost a race for its ports: new ones, and every config and proxy told."""
        self.p2p_ports[i] = free_port()
        self.procs[i].set_port(free_port())
        if self.mesh is not None:
            self.mesh.retarget(i, HOST, self.p2p_ports[i])
            self._write_config(i)
        else:  # the others learn the new port at their next start
            for j in range(self.n):
                self._write_config(j)


def _distinct_free_ports(count: int) -> list[int]:
    """`count` different ports that were free a moment ago."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _killpg(proc: NodeProcess, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.proc.pid, sig)
