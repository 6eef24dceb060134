"""Single-configuration API speed: ``energylens.predict`` calls per second on one core.

    python benchmarks/bench_predict.py [--calls 200] [--model llama3-70b]

Each call builds the full per-op, per-collective and per-GPU result (what ``energylens predict``
prints). Configurations vary (tp, batch, prompt and output length) so no result is reused; the
model, GPU profile and communication tables are loaded once before timing (as in a session).
Compare with ``bench_sweep.py`` (the same numbers for a whole grid in one vectorised call).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import energylens  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--model", default="llama3-70b")
    ap.add_argument("--gpu", default="h100-sxm")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    energylens.predict(args.model, args.gpu, tp=8)  # warm-up: model, GPU, tables, program cache
    rates = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        for i in range(args.calls):
            energylens.predict(args.model, args.gpu, tp=(1, 2, 4, 8)[i % 4], batch=1 + i % 64,
                               prompt_len=512 + 64 * (i % 32), output_len=64 + 64 * (i % 16))
        rates.append(args.calls / (time.perf_counter() - t0))
    print(f"single-config API: {args.model} on {args.gpu}, {args.calls} predict() calls x {args.repeat}, one core")
    print(f"  predictions/s   best {max(rates):,.1f}, median {statistics.median(rates):,.1f}")
    print(f"  per call        best {1e3 / max(rates):.2f} ms, median {1e3 / statistics.median(rates):.2f} ms")


if __name__ == "__main__":
    main()
