"""MoE predictions against public measurements (quoted, nothing fitted): ML.ENERGY v3 dev.csv rows at
max_num_seqs 64 (prompt lengths assumed) and LLM-Inference-Bench Mixtral-8x7B TP4 static batches.

    python tools/compare_moe_public.py
"""
import energylens

rows = [  # (label, model, gpu, dtype, layout, batch, prompt(assumed), output, measured ITL ms, measured J/token, W)
    ("Llama-4-Scout, 4xH100 EP4", "llama4-scout", "h100-sxm", None, dict(dp=4, ep=4), 64, 512, 404, 36.5, 1.059, 1750),
    ("Llama-4-Scout, 4xH100 EP4", "llama4-scout", "h100-sxm", None, dict(tp=4, ep=4), 64, 512, 404, 36.5, 1.059, 1750),
    ("Llama-4-Scout, 8xH100 EP8", "llama4-scout", "h100-sxm", None, dict(dp=8, ep=8), 64, 512, 402, 26.3, 1.261, 2797),
    ("Llama-4-Maverick-FP8, 8xH100 EP8", "llama4-maverick", "h100-sxm", "fp8", dict(dp=8, ep=8), 64, 512, 406, 20.7, 0.944, 2656),
    ("gpt-oss-120b, 1xH100", "gpt-oss-120b", "h100-sxm", None, dict(), 64, 256, 1739, 24.2, 0.268, 688),
    ("gpt-oss-20b, 1xH100", "gpt-oss-20b", "h100-sxm", None, dict(), 64, 256, 2091, 11.2, 0.102, 564),
    ("DeepSeek-V3.1 FP8, 8xB200 EP8", "deepseek-v3", "b200", "fp8", dict(dp=8, ep=8), 64, 512, 849, 32.6, 2.920, 5186),
]
print("| measured config (mlenergy-v3, max_num_seqs 64) | our layout | routing | ITL measured ms | decode step predicted ms | J/token measured | J/token predicted | power measured W | power predicted W (decode) | imbalance decode |")
print("|---|---|---|---|---|---|---|---|---|---|")
for label, model, gpu, dtype, lay, b, p, o, itl, jt, w in rows:
    for routing in ("uniform", "zipf:1.2"):
        pr = energylens.predict(model, gpu, batch=b, prompt_len=p, output_len=o, dtype=dtype, routing=routing, **lay)
        step = pr.decode.latency_s / o * 1e3
        jpt = pr.total_energy_j / (b * o)
        lt = " ".join(f"{k}={v}" for k, v in lay.items()) or "tp=1"
        print(f"| {label} | {lt} | {routing} | {itl} | {step:.1f} | {jt:.3f} | {jpt:.3f} | {w} | {pr.decode.avg_power_w:.0f} | "
              f"{pr.moe.decode.imbalance:.2f} |{' (does not fit)' if not pr.memory.fits else ''}")

print()
print("Mixtral-8x7B, 4xH100 TP4, static batch, input = output (llm-inference-bench, TensorRT-LLM):")
print("| batch | in=out | measured s | predicted s (uniform) | predicted s (zipf:1.2) | ratio uniform |")
print("|---|---|---|---|---|---|")
meas = {(1, 128): 0.680, (16, 128): 0.860, (64, 128): 1.145, (1, 1024): 5.885, (16, 1024): 7.382, (64, 1024): 11.277,
        (1, 2048): 12.572, (64, 2048): 26.490}
for (b, n), m in meas.items():
    u = energylens.predict("mixtral-8x7b", "h100-sxm", tp=4, batch=b, prompt_len=n, output_len=n)
    z = energylens.predict("mixtral-8x7b", "h100-sxm", tp=4, batch=b, prompt_len=n, output_len=n, routing="zipf:1.2")
    print(f"| {b} | {n} | {m:.3f} | {u.total_latency_s:.3f} | {z.total_latency_s:.3f} | {u.total_latency_s / m:.2f} |")
