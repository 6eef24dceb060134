"""Done-when table (MoE issue): Qwen3-30B-A3B on 1-8 H100 and Qwen3-235B-A22B on 8 H100, uniform vs zipf:1.2.

    python benchmarks/moe_table.py
"""
import time

import energylens

B, P, OUT = 64, 1024, 256
cases = [("qwen3-30b-a3b", dict())]
for n in (2, 4, 8):
    cases += [("qwen3-30b-a3b", dict(tp=n)), ("qwen3-30b-a3b", dict(tp=n, ep=n)), ("qwen3-30b-a3b", dict(dp=n, ep=n))]
cases += [("qwen3-235b-a22b", dict(tp=8)), ("qwen3-235b-a22b", dict(tp=8, ep=8)), ("qwen3-235b-a22b", dict(dp=8, ep=8))]
energylens.predict("qwen3-30b-a3b", "h100-sxm", batch=B, prompt_len=P, output_len=OUT)  # imports, caches
print(f"batch {B}, prompt {P}, output {OUT}, h100-sxm, bf16")
print("| model | layout | routing | prefill J | prefill s | decode J | decode s | J/output token | decode J/token "
      "| imbalance prefill / decode step | experts hit/layer (decode step) | MoE idle wait J (pre/dec) | fits | predict s |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for model, kw in cases:
    for routing in ("uniform", "zipf:1.2"):
        t0 = time.perf_counter()
        p = energylens.predict(model, "h100-sxm", batch=B, prompt_len=P, output_len=OUT, routing=routing, **kw)
        dt = time.perf_counter() - t0
        m = p.moe
        lay = " ".join(f"{k}={v}" for k, v in kw.items()) or "1 GPU"
        print(f"| {model} | {lay} | {routing} | {p.prefill.energy_j:,.0f} | {p.prefill.latency_s:.3f} | "
              f"{p.decode.energy_j:,.0f} | {p.decode.latency_s:.2f} | {p.total_energy_j / (B * OUT):.3f} | "
              f"{p.decode.energy_per_token_j:.3f} | {m.prefill.imbalance:.2f} / {m.decode.imbalance:.2f} | "
              f"{m.decode.experts_hit:.0f} ({m.decode.experts_hit_per_rank_max:.1f} on busiest rank) | "
              f"{m.prefill.idle_wait_j:,.0f} / {m.decode.idle_wait_j:,.0f} | {'yes' if p.memory.fits else 'NO'} | {dt:.2f} |")
