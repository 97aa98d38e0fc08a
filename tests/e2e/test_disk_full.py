"""A full disk stops the node cleanly, with a message, and loses nothing committed.

The node runs under RLIMIT_FSIZE: once LevelDB's files reach the limit, its
writes fail with EFBIG (CPython ignores SIGXFSZ), exactly as on a full disk.
Its output goes to a pipe, which the limit does not touch, so the operator's
message can be read.
"""

from __future__ import annotations

import resource
import subprocess
import threading
from pathlib import Path

import pytest

from chain.store import BlockStore
from node.config import HomePaths
from tests.e2e.harness import DevnetProcess, free_port, gannet_executable

pytestmark = pytest.mark.e2e

FILE_LIMIT_BYTES = 192 * 1024
EXIT_TIMEOUT_S = 60


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT_BYTES, FILE_LIMIT_BYTES))


def _run_until_disk_full(home: Path, port: int) -> tuple[int, str]:
    proc = subprocess.Popen(
        [gannet_executable(), "devnet", "--home", str(home), "--rpc-port", str(port),
         "--block-time", "10"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        preexec_fn=_limit_file_size, start_new_session=True,
    )
    chunks: list[bytes] = []
    drain = threading.Thread(target=lambda: chunks.extend(iter(proc.stdout.readline, b"")))
    drain.start()
    try:
        code = proc.wait(timeout=EXIT_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
        drain.join(timeout=10)
    return code, b"".join(chunks).decode(errors="replace")


def _last_committed_height(output: str) -> int:
    heights = [int(line.split("height=")[1].split()[0])
               for line in output.splitlines() if "committed block height=" in line]
    assert heights, f"the node committed nothing before the disk filled:\n{output[-2000:]}"
    return heights[-1]


def test_full_disk_stops_the_node_and_loses_nothing(tmp_path: Path) -> None:
    home, port = tmp_path / "devnet", free_port()
    code, output = _run_until_disk_full(home, port)
    tail = output[-3000:]
    assert code != 0, f"the node did not stop when the disk filled:\n{tail}"
    assert "store failure" in output, f"no operator message about the store:\n{tail}"
    assert "Traceback" not in output, f"the node crashed instead of stopping:\n{tail}"
    last = _last_committed_height(output)

    store = BlockStore(str(HomePaths(home).store_dir))
    try:
        head = store.head()
        assert head.height == last, "the store is not at the last block the node logged"
        for height in range(1, head.height + 1):
            assert store.get_block(height) is not None
            assert store.get_commit(height) is not None
    finally:
        store.close()

    with DevnetProcess(home, block_time_ms=50) as node:  # space is back: it resumes
        node_height = node.rpc("gannet_status")["height"]
        assert node_height >= last
        block = node.rpc("gannet_getBlockByNumber", last, False)
        assert block["height"] == last
