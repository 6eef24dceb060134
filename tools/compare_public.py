"""Compare energylens predictions with public measurements that were never used to fit anything.

    python tools/compare_public.py [--write]

1. LLM-Inference-Bench (Argonne, vLLM, static batch, input = output = 1024, one H100 / A100):
   batch latency, GPU-0 power and energy of Llama-3-8B (energylens/data/validation/public, a subset of
   shared/reference/llm-inference-bench).
2. Splitwise (ISCA'24) DGX-H100 Llama-2-70B TP 2/4/8: prefill time and time per decode iteration
   (energylens/data/validation/public, a subset of shared/reference/splitwise-perf). Llama-2-70B has Llama-3-70B's layer shapes with a 32000 vocabulary.
Each row is predicted twice: by the per-op cost model alone ("kernels"), and with the vLLM serving
coefficients of `energylens/data/validation/serving_coefficients.yaml` (the GPU's platform) applied per engine
iteration ("+runtime": host overhead per iteration at idle power, per-sequence GPU work, busy static
power). Those coefficients were fitted on ML.ENERGY v3 data only, so this is an out-of-sample check.
Prints per-row errors and the MAPE per source.
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

import energylens
from energylens.hardware import load_gpu
from energylens.models.dense import build_dense
from energylens.models.hf_config import HFConfig
from energylens.serving import MAX_BATCHED_TOKENS, load_coefficients

# row-for-row subsets of the workspace reference data, shipped so the tool runs from any checkout
PUBLIC = Path(__file__).resolve().parents[1] / "energylens" / "data" / "validation" / "public"
LIB_CSV = PUBLIC / "llm_inference_bench_power_vllm_llama3_8b.csv"
SPLITWISE_CSV = PUBLIC / "splitwise_perf_h100_llama2_70b.csv"
LLAMA2_70B = {  # public architecture facts (Llama 2 paper, Table 1 / HF config): same layer as Llama-3-70B
    "model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672, "num_attention_heads": 64,
    "num_key_value_heads": 8, "num_hidden_layers": 80, "vocab_size": 32000, "torch_dtype": "float16",
}


def with_runtime(pred, batch: int, prompt_len: int, output_len: int) -> tuple[float, float]:
    """(latency_s, energy_j) of a static batch with the serving coefficients applied per iteration:
    prefill in chunks of MAX_BATCHED_TOKENS, then one iteration per decode step."""
    gpu = load_gpu(pred.gpu)
    c = load_coefficients(gpu.key)
    n_gpus = pred.layout["num_gpus"]
    iters = np.ceil(batch * prompt_len / MAX_BATCHED_TOKENS) + output_len
    seq_s = c.per_sequence_overhead_s * batch * iters
    host_s = c.iteration_overhead_s * iters
    active_w = c.active_power_fraction * (gpu.power_limit_w - gpu.idle_power_w)
    busy_s = pred.total_latency_s
    latency = busy_s + seq_s + host_s
    energy = (pred.total_energy_j + n_gpus * (active_w * busy_s + (gpu.idle_power_w + active_w) * seq_s
                                             + gpu.idle_power_w * host_s))
    energy = min(energy, pred.total_energy_j + n_gpus * (gpu.power_limit_w * (busy_s + seq_s) - pred.total_energy_j
                                                         / n_gpus) + n_gpus * gpu.idle_power_w * host_s)
    return latency, energy


RATIOS_FILE = Path(__file__).resolve().parents[1] / "energylens" / "data" / "validation" / "static_batch_ratios.yaml"


def llm_inference_bench(ratios: dict | None = None) -> dict:
    """MAPE (%) of latency and energy, per-op model alone ("kernels") and with the serving runtime."""
    path = LIB_CSV
    errs, errs_rt, lat_errs, lat_errs_rt = [], [], [], []
    gpus = {"Nvidia H100 GPU": "h100-sxm", "Nvidia A100 GPU": "a100-sxm-80gb"}
    print("LLM-Inference-Bench, vLLM static batch, Llama-3-8B, input=output=1024 (GPU-0 NVML power)")
    print(f"{'gpu':14} {'batch':>5} {'latency s: meas / kernels / +runtime':>38} {'energy J: meas / kernels / +runtime':>38}")
    for r in csv.DictReader(path.open()):
        if r["framework"] != "vLLM" or r["model"] != "meta-llama/Meta-Llama-3-8B" or r["hardware"] not in gpus:
            continue
        b = int(r["batch_size"])
        p = energylens.predict("llama3-8b", gpus[r["hardware"]], batch=b, prompt_len=1024, output_len=1024)
        lat, e = p.total_latency_s, p.total_energy_j
        lat_rt, e_rt = with_runtime(p, b, 1024, 1024)
        ml, mp = float(r["batch_latency_s"]), float(r["avg_power_w_gpu0"])
        me = ml * mp
        errs.append(abs(e / me - 1))
        errs_rt.append(abs(e_rt / me - 1))
        if ratios is not None:
            ratios.setdefault("energy_j", []).append(me / e)
            ratios.setdefault("latency_s", []).append(ml / lat)
        lat_errs.append(abs(lat / ml - 1))
        lat_errs_rt.append(abs(lat_rt / ml - 1))
        print(f"{gpus[r['hardware']]:14} {b:5d} {ml:12.2f} / {lat:8.2f} / {lat_rt:8.2f} {me:14.0f} / {e:8.0f} / {e_rt:8.0f}"
              f"   energy {e / me - 1:+.0%} / {e_rt / me - 1:+.0%}")
    print(f"MAPE over {len(errs)} rows: latency kernels {np.mean(lat_errs) * 100:.1f}% / +runtime "
          f"{np.mean(lat_errs_rt) * 100:.1f}%; energy kernels {np.mean(errs) * 100:.1f}% / +runtime "
          f"{np.mean(errs_rt) * 100:.1f}%\n")
    return {"latency_kernels": 100 * float(np.mean(lat_errs)), "latency_runtime": 100 * float(np.mean(lat_errs_rt)),
            "energy_kernels": 100 * float(np.mean(errs)), "energy_runtime": 100 * float(np.mean(errs_rt))}


def splitwise() -> dict:
    path = SPLITWISE_CSV
    model = build_dense(HFConfig(LLAMA2_70B, "Llama-2-70B (public architecture)"), "llama2-70b")
    groups: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    for r in csv.DictReader(path.open()):
        if r["hardware"] == "h100-80gb" and r["model"] == "llama2-70b" and int(r["batch_size"]) <= 32:
            key = (int(r["tensor_parallel"]), int(r["prompt_size"]), int(r["batch_size"]), int(r["token_size"]))
            groups[key].append((float(r["prompt_time"]), float(r["token_time"])))
    pe, te, pe_rt, te_rt = defaultdict(list), defaultdict(list), defaultdict(list), defaultdict(list)
    c = load_coefficients("h100-sxm")
    for (tp, prompt, batch, tokens), vals in sorted(groups.items()):
        mp = np.mean([v[0] for v in vals]) / 1e3
        mt = np.mean([v[1] for v in vals]) / 1e3
        p = energylens.predict(model, "h100-sxm", tp=tp, batch=batch, prompt_len=prompt, output_len=tokens)
        pe[tp].append(abs(p.prefill.latency_s / mp - 1))
        te[tp].append(abs(p.decode.latency_s / tokens / mt - 1))
        chunks = np.ceil(batch * prompt / MAX_BATCHED_TOKENS)
        over = c.iteration_overhead_s + c.per_sequence_overhead_s * batch
        pe_rt[tp].append(abs((p.prefill.latency_s + chunks * over) / mp - 1))
        te_rt[tp].append(abs((p.decode.latency_s / tokens + over) / mt - 1))
    print("Splitwise DGX-H100, Llama-2-70B (batch <= 32; batch-64 rows are flagged suspect in SOURCE.md)")
    for tp in sorted(pe):
        print(f"  TP{tp}: prefill-time MAPE kernels {np.mean(pe[tp]) * 100:.1f}% / +runtime {np.mean(pe_rt[tp]) * 100:.1f}%;"
              f"  decode-iteration MAPE kernels {np.mean(te[tp]) * 100:.1f}% / +runtime {np.mean(te_rt[tp]) * 100:.1f}%"
              f"  ({len(pe[tp])} configurations)")
    return {tp: {"prefill_kernels": 100 * float(np.mean(pe[tp])), "decode_kernels": 100 * float(np.mean(te[tp]))}
            for tp in sorted(pe)}


def write_ratios(ratios: dict) -> None:
    """measured / predicted ratios of the per-op model -> the interval `energylens predict` reports."""
    import yaml

    out = {
        "schema_version": 1,
        "written_by": "tools/compare_public.py --write",
        "source": "shared/reference/llm-inference-bench/power_static_batch.csv (Argonne LLM-Inference-Bench, "
                  "commit 4211f5d4; vLLM static batches, Llama-3-8B, input = output = 1024, 1x H100 / A100)",
        "meaning": "measured / predicted of energylens.predict (per-op model, no serving runtime) per row; "
                   "predict() reports [q10, q90] of these ratios times its prediction as an 80 % interval",
        "level": 0.8,
        "figures": {},
    }
    for key, vals in ratios.items():
        v = np.asarray(vals, dtype=float)
        out["figures"][key] = {"n": int(v.size), "ratios": [round(float(x), 4) for x in v],
                               "q10": round(float(np.quantile(v, 0.1)), 4),
                               "q90": round(float(np.quantile(v, 0.9)), 4)}
    RATIOS_FILE.write_text(yaml.safe_dump(out, sort_keys=False, width=110))
    print(f"wrote {RATIOS_FILE}")


def main() -> int:
    for path in (LIB_CSV, SPLITWISE_CSV):
        if not path.is_file():
            print(f"error: data={str(path)!r} is not valid: the shipped public subset (see {PUBLIC}/SOURCE.md)",
                  file=sys.stderr)
            return 2
    ratios: dict = {}
    llm_inference_bench(ratios)
    splitwise()
    if "--write" in sys.argv[1:]:
        write_ratios(ratios)
    return 0


if __name__ == "__main__":
    sys.exit(main())
