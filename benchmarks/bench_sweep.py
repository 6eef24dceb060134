"""Sweep throughput: configurations evaluated per second on one core, and time to the first Pareto front.

    python benchmarks/bench_sweep.py [--size small|large] [--repeat 3]

The sweep is Llama-3.1-70B (128k context; Llama-3-70B's 8192 tokens are shorter than the
longest prompt + output of the grid) on H100 SXM over tp x pp x dp in {1,2,4,8}^3, batch 1..512 (powers of
two), 16 prompt lengths and 16 (small: 163,840 configurations) or 64 (large: 655,360) output
lengths. "grid configs/s" counts every configuration of the product (the work the engine is
asked to do); "valid configs/s" counts the rows returned (batch divisible by dp). The
single-config figure comes from ``energylens.predict`` (see bench_predict.py).
Pinned to one CPU core and one BLAS/OpenMP thread.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

from energylens.sweep import SweepSpec, run_sweep  # noqa: E402


def spec_for(size: str) -> SweepSpec:
    n_out = 16 if size == "small" else 64
    return SweepSpec(
        models=("llama3.1-70b",), gpus=("h100-sxm",),
        tp=(1, 2, 4, 8), pp=(1, 2, 4, 8), dp=(1, 2, 4, 8),
        batch=tuple(2**i for i in range(10)),
        prompt_len=tuple(range(256, 8193, 512)),
        output_len=tuple(range(64, 64 * n_out + 1, 64)),
    )


def predict_rate(n: int = 200) -> float:
    import energylens

    energylens.predict("llama3.1-70b", "h100-sxm", tp=8)  # warm caches (model, GPU, tables)
    t0 = time.perf_counter()
    for i in range(n):
        energylens.predict("llama3.1-70b", "h100-sxm", tp=(1, 2, 4, 8)[i % 4], batch=1 + i % 64,
                           prompt_len=512 + 64 * (i % 32), output_len=64 + 64 * (i % 16))
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=("small", "large"), default="small")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--predict-calls", type=int, default=200)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    spec = spec_for(args.size)
    run_sweep(SweepSpec(models=("llama3.1-70b",), gpus=("h100-sxm",)))  # warm-up: imports, model, tables
    sweep_s, front_s, rows = [], [], 0
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        table = run_sweep(spec)
        t1 = time.perf_counter()
        front = table.pareto("decode-latency")
        t2 = time.perf_counter()
        sweep_s.append(t1 - t0)
        front_s.append(t2 - t0)
        rows = len(table)
    best, med = min(sweep_s), statistics.median(sweep_s)
    single = predict_rate(args.predict_calls)
    print(f"sweep: Llama-3.1-70B on H100, {spec.size:,} grid configurations, {rows:,} valid rows, one core")
    print(f"  sweep time            best {best:.3f} s, median {med:.3f} s ({args.repeat} runs)")
    print(f"  grid configs/s        best {spec.size / best:,.0f}, median {spec.size / med:,.0f}")
    print(f"  valid configs/s       best {rows / best:,.0f}, median {rows / med:,.0f}")
    print(f"  time to first Pareto front (decode J/token vs TPOT, {len(front)} points): "
          f"best {min(front_s):.3f} s, median {statistics.median(front_s):.3f} s")
    print(f"single-config API (energylens.predict, full per-op detail): {single:,.1f} predictions/s")
    print(f"  vectorised / single-config speed-up: {spec.size / med / single:,.0f}x")


if __name__ == "__main__":
    main()
