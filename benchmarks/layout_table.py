"""Llama-3-70B on 8x H100: every tp x pp layout that fits, prefill 2048 tokens and decode 256 tokens.

    python benchmarks/layout_table.py [--model llama3-70b] [--gpu h100-sxm]

Prints energy_j, latency_s and J/token per phase at batch 1, 16 and 64, whether the layout fits in
memory, and how long each prediction took (each is one call of energylens.predict).
"""

from __future__ import annotations

import argparse
import time

import energylens
from energylens.errors import EnergyLensError


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="llama3-70b")
    ap.add_argument("--gpu", default="h100-sxm")
    ap.add_argument("--prompt-len", type=int, default=2048)
    ap.add_argument("--output-len", type=int, default=256)
    args = ap.parse_args()
    energylens.predict(args.model, args.gpu, tp=8)  # warm caches
    print(f"{args.model} on {args.gpu}, prefill {args.prompt_len} tokens, decode {args.output_len} tokens")
    print("| tp | pp | batch | fits | prefill J | prefill s | prefill J/token | decode J | decode s | decode J/token | predict ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for tp in (1, 2, 4, 8):
        for pp in (1, 2, 4):
            if tp * pp > 8:
                continue
            for batch in (1, 16, 64):
                t0 = time.perf_counter()
                try:
                    p = energylens.predict(args.model, args.gpu, tp=tp, pp=pp, batch=batch,
                                           prompt_len=args.prompt_len, output_len=args.output_len)
                except EnergyLensError as exc:
                    print(f"| {tp} | {pp} | {batch} | invalid: {exc} |")
                    continue
                ms = (time.perf_counter() - t0) * 1e3
                pf, dc = p.prefill, p.decode
                print(f"| {tp} | {pp} | {batch} | {'yes' if p.memory.fits else 'no'} | {pf.energy_j:.0f} | "
                      f"{pf.latency_s:.3f} | {pf.energy_per_token_j:.4f} | {dc.energy_j:.0f} | {dc.latency_s:.2f} | "
                      f"{dc.energy_per_token_j:.3f} | {ms:.0f} |")


if __name__ == "__main__":
    main()
