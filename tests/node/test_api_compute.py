"""The proof-of-compute JSON-RPC methods (`node.api_compute`), compute txs as JSON
(`node.api.tx_json`), and the `gannet job` / `gannet provider` command lines."""

from __future__ import annotations

import json
from fractions import Fraction

import click
import pytest
from click.testing import CliRunner

from chain.address import encode_address
from chain.records import SubmitJob
from consensus.params import compute_challenge_samples
from node.api import tx_json
from node.cli import main
from node.cli_job import parse_params, parse_seed
from node.cli_provider import parse_fraction
from node.rpc.errors import InvalidParams, NotFound
from tests.node.compute_chain import CLIENT_KEY, PROVIDER_KEYS, ComputeChain, address
from tests.node.test_provider import SMALL, _run, _setup

JOB_FIELDS = {"id", "kind", "client", "provider", "kernel", "params", "param_list", "seed",
              "price", "tiles", "state", "open", "fault", "submit_height", "deadline", "root",
              "commit_height", "sample_height", "sampled", "revealed", "reveal_deadline",
              "revealed_height", "attest_deadline", "committee", "committee_power",
              "attestations", "pass_power", "fail_power", "verdict", "settled_height",
              "slashed", "penalties", "closed"}
PROVIDER_FIELDS = {"address", "status", "collateral", "licences", "gpu", "registered_height",
                   "release_height", "open_jobs", "credit_epoch", "credit_epoch_number",
                   "credit_total", "jobs_passed", "jobs_failed", "challenges_passed",
                   "challenges_failed", "slashed_total", "rewards_total"}


@pytest.fixture(scope="module")
def settled() -> tuple[ComputeChain, dict]:
    """A chain where one matmul_i8 job passed and a second one waits for its commit."""
    chain, worker, verifier = _setup()
    chain.submit(CLIENT_KEY, SubmitJob(kernel=b"matmul_i8", params=SMALL["matmul_i8"],
                                       seed=bytes(32), price=100, deadline=chain.height + 10))
    chain.apply_block()
    job = _run(chain, worker, verifier, 0)
    chain.submit(CLIENT_KEY, SubmitJob(kernel=b"matmul_f32", params=SMALL["matmul_f32"],
                                       seed=bytes(32), price=7, deadline=chain.height + 10))
    chain.apply_block()
    return chain, job


def test_get_job_shape(settled):
    chain, job = settled
    assert set(job) == JOB_FIELDS
    json.dumps(job)
    assert job["kind"] == "client" and job["client"] == encode_address(address(CLIENT_KEY))
    assert job["provider"] == encode_address(address(PROVIDER_KEYS[0]))
    assert job["params"] == {"m": 64, "n": 64, "k": 64, "tile": 16}
    assert job["price"] == "100" and job["tiles"] == 16 and job["open"] is False
    assert job["root"].startswith("0x") and len(job["root"]) == 66
    assert job["verdict"] == "pass" and job["fault"] is None
    (member,) = job["committee"]
    assert job["pass_power"] == job["committee_power"] == member["power"]
    assert job["attestations"][0]["verdict"] == "pass"
    waiting = chain.call("gannet_getJob", 1)
    assert waiting["state"] == "assigned" and waiting["root"] is None
    assert waiting["commit_height"] is None and waiting["verdict"] is None
    assert waiting["open"] is True and waiting["sampled"] == []


def test_get_job_errors(settled):
    chain, _ = settled
    with pytest.raises(NotFound, match="no job 99"):
        chain.call("gannet_getJob", 99)
    for bad in (-1, "1", 1.5, True, 2**64):
        with pytest.raises(InvalidParams):
            chain.call("gannet_getJob", bad)


def test_get_jobs_filters(settled):
    chain, _ = settled
    provider = encode_address(address(PROVIDER_KEYS[0]))
    assert [j["id"] for j in chain.call("gannet_getJobs")] == [1, 0]
    assert [j["id"] for j in chain.call("gannet_getJobs", {"limit": 1})] == [1]
    assert [j["id"] for j in chain.call("gannet_getJobs", {"state": "passed"})] == [0]
    assert [j["id"] for j in chain.call("gannet_getJobs", {"provider": provider,
                                                            "open": True})] == [1]
    assert [j["id"] for j in chain.call("gannet_getJobs", {"open": True})] == [1]
    client = encode_address(address(CLIENT_KEY))
    assert len(chain.call("gannet_getJobs", {"client": client})) == 2
    assert chain.call("gannet_getJobs", {"client": provider}) == []


@pytest.mark.parametrize("filters, message", [
    ([], "filters must be an object"),
    ({"owner": "x"}, "unknown filter 'owner'"),
    ({"state": "done"}, "state must be one of"),
    ({"limit": 0}, "limit must be"),
    ({"limit": 1001}, "limit must be"),
    ({"open": 1}, "open must be a boolean"),
    ({"provider": "gnt1nope"}, "invalid provider address"),
    ({"client": 5}, "client must be an address string"),
])
def test_get_jobs_rejects_bad_filters(settled, filters, message):
    chain, _ = settled
    with pytest.raises(InvalidParams, match=message):
        chain.call("gannet_getJobs", filters)


def test_get_providers_shape(settled):
    chain, _ = settled
    (provider,) = chain.call("gannet_getProviders")
    assert set(provider) == PROVIDER_FIELDS
    assert provider["status"] == "active" and provider["jobs_passed"] == 1
    assert provider["credit_total"] == "16" and provider["open_jobs"] == [1]
    json.dumps(provider)


def test_get_kernels_shape(settled):
    chain, _ = settled
    answer = chain.call("gannet_getKernels")
    kernels = {k["name"]: k for k in answer["kernels"]}
    assert kernels["matmul_i8"]["comparison"] == "exact"
    assert kernels["matmul_f32"]["comparison"] == "tolerance"
    assert [p["name"] for p in kernels["matmul_i8"]["params"]] == ["m", "n", "k", "tile"]
    assert answer["samples"] == compute_challenge_samples(chain.params.compute) == 44
    assert answer["max_tx_bytes"] == chain.params.block.max_tx_bytes
    assert answer["provider_min_collateral"] == str(chain.params.compute.provider_min_collateral)


def test_compute_txs_as_json():
    chain, worker, _ = _setup()
    for key, body in ((CLIENT_KEY, SubmitJob(kernel=b"matmul_i8", params=(64, 64, 64, 16),
                                             seed=bytes(32), price=3, deadline=99)),):
        doc = tx_json(chain.sign(key, body))
        assert doc["kind"] == "submit_job" and doc["kernel"] == "matmul_i8"
        assert doc["params"] == [64, 64, 64, 16] and doc["price"] == "3"
    chain.submit(CLIENT_KEY, SubmitJob(kernel=b"matmul_i8", params=(64, 64, 64, 16),
                                       seed=bytes(32), price=3, deadline=chain.height + 9))
    chain.apply_block()
    kinds = set()
    for _ in range(5):
        worker.step()
        for stx in chain.pending:
            doc = tx_json(stx)
            json.dumps(doc)
            kinds.add(doc["kind"])
            if doc["kind"] == "reveal_tiles":
                tile = doc["tiles"][0]
                assert set(tile) == {"index", "data", "proof"}
                assert all(h.startswith("0x") for h in tile["proof"])
        chain.apply_block()
    assert {"commit_result", "reveal_tiles"} <= kinds


# --- command lines -------------------------------------------------------------------------


def test_parse_params_in_schema_order_and_one_line_errors():
    assert parse_params("matmul_i8", ("tile=16", "k=32", "n=64", "m=128")) == (128, 64, 32, 16)
    for kernel, pairs, message in (
        ("nope", ("m=1",), "no kernel named 'nope'"),
        ("matmul_i8", ("m=64", "n=64", "k=64"), "missing parameter 'tile'"),
        ("matmul_i8", ("m=64", "n=64", "k=64", "tile=16", "z=1"), "unknown parameter 'z'"),
        ("matmul_i8", ("m=64", "m=64"), "'m' given twice"),
        ("matmul_i8", ("m64",), "expected NAME=VALUE"),
        ("matmul_i8", ("m=x",), "is not an integer"),
        ("matmul_i8", ("m=60", "n=64", "k=64", "tile=16"), "must divide"),
    ):
        with pytest.raises(click.BadParameter, match=message):
            parse_params(kernel, pairs)


def test_parse_seed_and_fraction():
    assert parse_seed("0x" + "ab" * 32) == b"\xab" * 32
    assert len(parse_seed(None)) == 32 and parse_seed(None) != parse_seed(None)
    for bad in ("zz", "ab" * 31):
        with pytest.raises(click.BadParameter):
            parse_seed(bad)
    assert parse_fraction("0.1") == Fraction(1, 10) and parse_fraction("1/2") == Fraction(1, 2)
    for bad in ("-0.1", "1.5", "x", "1/0"):
        with pytest.raises(click.BadParameter):
            parse_fraction(bad)


def _one_line_error(result) -> str:
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_job_cli_errors_are_one_line(tmp_path):
    runner = CliRunner()
    keystore = tmp_path / "k.json"
    line = _one_line_error(runner.invoke(main, [
        "job", "submit", "--kernel", "matmul_i8", "--param", "m=64", "--price", "1",
        "--keystore", str(keystore)]))
    assert "missing parameter" in line
    line = _one_line_error(runner.invoke(main, [
        "job", "submit", "--kernel", "matmul_i8", "--param", "m=64", "--param", "n=64",
        "--param", "k=64", "--param", "tile=16", "--price", "1gpu", "--keystore",
        str(keystore)]))
    assert "stable amounts are given in base units" in line
    url = "http://127.0.0.1:9/"
    line = _one_line_error(runner.invoke(main, ["job", "status", "3", "--rpc", url]))
    assert "cannot reach node" in line
    line = _one_line_error(runner.invoke(main, ["job", "list", "--rpc", url]))
    assert "cannot reach node" in line
    line = _one_line_error(runner.invoke(main, [
        "provider", "start", "--home", str(tmp_path), "--cheat-fraction", "2"]))
    assert "must be in [0, 1]" in line
    line = _one_line_error(runner.invoke(main, ["provider", "start", "--home", str(tmp_path)]))
    assert "does not exist" in line
