"""Proof-of-compute costs: verifier vs provider, exact int8 matmul vs BLAS, GPU re-execution.

A benchmark, not a test. Each figure is a ratio to a limit measured in the same
run on the same machine (best of --rounds timings each):

(a) verifier / provider for one matmul_i8 job at P = 0.99, f = 0.1 (k tiles from
    consensus.params.compute_challenge_samples). Provider: the whole job from the
    seed (`Kernel.compute`: generate A and B, multiply, cut into tiles) plus the
    Merkle root. Verifier: re-execute the k sampled tiles from the seed
    (`Kernel.compute_tiles`), compare them (`tiles_match`) and check their Merkle
    proofs. Goal <= 0.01.
(b) our exact int8 matmul (`vm.backend.exact_int8_matmul`: int8 -> float64, BLAS,
    -> int32) / a raw float64 matmul of float64 operands of the same shape. Goal
    >= 0.8. NumPy's native integer matmul (int32 operands) is printed beside it.
(c) on a device: CuPy re-execution of the sampled tiles (multiply-adds/s) / CuPy's
    own float32 matmul (cupy.matmul) on the job's shape. Goal >= 0.5. Skipped, with
    a line saying so, without cupy and a device.

    .venv/bin/python scripts/bench/compute.py                      # 1024^3, tile 16
    .venv/bin/python scripts/bench/compute.py --size 2048 --size 4096
    .venv/bin/python scripts/bench/compute.py --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

import numpy as np
from _common import machine

from consensus.params import ComputeParams, compute_challenge_samples
from vm import merkle
from vm.backend import NumpyBackend, cupy_unavailable_reason, exact_int8_matmul
from vm.kernels import MATMUL_I8, Kernel, Params
from vm.sampler import sample

SEED = bytes(range(32))
BEACON = b"\xbe" * 32
JOB_ID = b"bench-job"


def best_of(rounds: int, run: Callable[[], object]) -> float:
    """The fastest of `rounds` timed calls, in seconds (one untimed warm-up call first)."""
    run()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def verifier_vs_provider(kernel: Kernel, params: Params, samples: int, rounds: int) -> dict:
    """(a): one job's provider time and the verifier's time for `samples` tiles."""
    backend = NumpyBackend()
    tiles = kernel.compute(SEED, params, backend)
    root = merkle.root(tiles)
    picks = sample(BEACON, JOB_ID, len(tiles), samples)
    proofs = [merkle.proof(tiles, i) for i in picks]
    revealed = [tiles[i] for i in picks]

    def provider() -> None:
        merkle.root(kernel.compute(SEED, params, backend))

    def verifier() -> None:
        expected = kernel.compute_tiles(SEED, params, picks, backend)
        for index, want, got, siblings in zip(picks, expected, revealed, proofs, strict=True):
            if not kernel.tiles_match(params, want, got):
                raise SystemExit(f"tile {index} does not match: the benchmark is broken")
            if not merkle.verify(root, index, len(tiles), got, siblings):
                raise SystemExit(f"tile {index}'s proof fails: the benchmark is broken")

    provider_s, verifier_s = best_of(rounds, provider), best_of(rounds, verifier)
    gen_s = best_of(rounds, lambda: kernel.inputs(SEED, params, backend))
    return {
        "samples": len(picks),
        "tiles": len(tiles),
        "provider_s": provider_s,
        "provider_inputs_s": gen_s,
        "verifier_s": verifier_s,
        "ratio": verifier_s / provider_s,
        "verifier_elements": 2 * len(picks) * params["tile"] * params["k"],
        "provider_elements": (params["m"] + params["n"]) * params["k"],
    }


def exact_vs_blas(size: int, rounds: int, int_max: int) -> dict:
    """(b): exact int8 matmul vs raw float64 BLAS, size^3; NumPy's integer matmul beside it.

    NumPy's integer matmul (no BLAS) is timed once, at min(size, int_max)^3, as a rate.
    """
    rng = np.random.default_rng(1)
    a = rng.integers(-128, 128, size=(size, size), dtype=np.int8)
    b = rng.integers(-128, 128, size=(size, size), dtype=np.int8)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    exact_s = best_of(rounds, lambda: exact_int8_matmul(a, b))
    blas_s = best_of(rounds, lambda: a64 @ b64)
    side = min(size, int_max)
    a32, b32 = a[:side, :side].astype(np.int32), b[:side, :side].astype(np.int32)
    start = time.perf_counter()
    native = a32 @ b32
    native_s = time.perf_counter() - start
    if not np.array_equal(exact_int8_matmul(a[:side, :side], b[:side, :side]), native):
        raise SystemExit("exact int8 matmul differs from NumPy's integer matmul")
    macs = size**3
    return {
        "exact_macs_per_s": macs / exact_s,
        "float64_macs_per_s": macs / blas_s,
        "int_matmul_side": side,
        "int_matmul_macs_per_s": side**3 / native_s,
        "ratio": blas_s / exact_s,
        "speedup_over_int_matmul": (macs / exact_s) / (side**3 / native_s),
    }


def gpu_reexecution(kernel: Kernel, params: Params, samples: int, rounds: int) -> dict | None:
    """(c): CuPy tile re-execution rate / cupy.matmul's float32 rate, or None without a GPU."""
    if cupy_unavailable_reason() is not None:
        return None
    import cupy

    from vm.backend import get_backend

    gpu = get_backend("cupy")
    count = kernel.tile_count(params)
    picks = sample(BEACON, JOB_ID, count, samples)
    m, n, k, t = params["m"], params["n"], params["k"], params["tile"]
    reexec_s = best_of(rounds, lambda: kernel.compute_tiles(SEED, params, picks, gpu))
    a = cupy.asarray(np.random.default_rng(2).random((m, k), dtype=np.float32))
    b = cupy.asarray(np.random.default_rng(3).random((k, n), dtype=np.float32))

    def cupy_matmul() -> None:
        cupy.matmul(a, b)
        cupy.cuda.Device().synchronize()

    matmul_s = best_of(rounds, cupy_matmul)
    provider_s = best_of(rounds, lambda: kernel.compute(SEED, params, gpu))
    reexec_rate = len(picks) * t * t * k / reexec_s
    matmul_rate = m * n * k / matmul_s
    return {
        "reexec_macs_per_s": reexec_rate,
        "cupy_matmul_macs_per_s": matmul_rate,
        "ratio": reexec_rate / matmul_rate,
        "gpu_provider_s": provider_s,
        "gpu_verifier_s": reexec_s,
    }


def run_size(size: int, tile: int, rounds: int, samples: int, int_max: int) -> dict:
    """All three figures for one m = n = k = size job."""
    params = MATMUL_I8.validate_params({"m": size, "n": size, "k": size, "tile": tile})
    return {
        "size": size,
        "tile": tile,
        "a": verifier_vs_provider(MATMUL_I8, params, samples, rounds),
        "b": exact_vs_blas(size, rounds, int_max),
        "c": gpu_reexecution(MATMUL_I8, params, samples, rounds),
    }


def report(result: dict) -> None:
    """Print one size's figures, each as a ratio to its limit."""
    a, b, c = result["a"], result["b"], result["c"]
    size = result["size"]
    print(f"matmul_i8 {size}^3, tile {result['tile']}, {a['tiles']} tiles, k = {a['samples']}")
    print(
        f"  (a) verifier / provider       {a['ratio']:8.4f}   goal <= 0.01   "
        f"verifier {a['verifier_s'] * 1e3:.1f} ms, provider {a['provider_s'] * 1e3:.1f} ms "
        f"(inputs {a['provider_inputs_s'] * 1e3:.1f} ms); generated elements "
        f"{a['verifier_elements']:,} vs {a['provider_elements']:,}"
    )
    print(
        f"  (b) exact int8 / float64 BLAS {b['ratio']:8.4f}   goal >= 0.8    "
        f"{b['exact_macs_per_s'] / 1e9:.2f} vs {b['float64_macs_per_s'] / 1e9:.2f} GMAC/s; "
        f"NumPy integer matmul {b['int_matmul_macs_per_s'] / 1e9:.3f} GMAC/s "
        f"(at {b['int_matmul_side']}^3, "
        f"{b['speedup_over_int_matmul']:.0f}x slower than the exact path)"
    )
    if c is None:
        print(f"  (c) skipped: no GPU ({cupy_unavailable_reason()})")
    else:
        print(
            f"  (c) CuPy re-exec / cupy.matmul {c['ratio']:8.4f}   goal >= 0.5    "
            f"{c['reexec_macs_per_s'] / 1e9:.2f} vs {c['cupy_matmul_macs_per_s'] / 1e9:.2f} "
            f"GMAC/s; GPU provider {c['gpu_provider_s'] * 1e3:.1f} ms, "
            f"verifier {c['gpu_verifier_s'] * 1e3:.1f} ms"
        )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark for each --size and print (or --json) the figures."""
    args = parse_args(argv)
    samples = compute_challenge_samples(ComputeParams())
    results = [
        run_size(size, args.tile, args.rounds, samples, args.int_matmul_max)
        for size in args.size or [1024]
    ]
    if args.json:
        print(json.dumps({"machine": machine(), "results": results}, indent=2))
        return 0
    print(f"{machine()}, NumPy {np.__version__}; best of {args.rounds}")
    for result in results:
        report(result)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, action="append", help="m = n = k (default 1024)")
    parser.add_argument("--tile", type=int, default=16, help="tile side (default 16)")
    parser.add_argument("--rounds", type=int, default=3, help="timings per figure, best kept")
    parser.add_argument(
        "--int-matmul-max",
        type=int,
        default=1024,
        help="largest side at which NumPy's (slow) integer matmul is timed (default 1024)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
