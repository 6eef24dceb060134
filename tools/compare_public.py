"""Compare energylens predictions with public measurements that were never used to fit anything.

    python tools/compare_public.py

1. LLM-Inference-Bench (Argonne, vLLM, static batch, input = output = 1024, one H100 / A100):
   batch latency, GPU-0 power and energy of Llama-3-8B (shared/reference/llm-inference-bench).
2. Splitwise (ISCA'24) DGX-H100 Llama-2-70B TP 2/4/8: prefill time and time per decode iteration
   (shared/reference/splitwise-perf). Llama-2-70B has Llama-3-70B's layer shapes with a 32000 vocabulary.
Prints per-row errors and the MAPE per source.
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

import energylens
from energylens.models.dense import build_dense
from energylens.models.hf_config import HFConfig

REF = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
LLAMA2_70B = {  # public architecture facts (Llama 2 paper, Table 1 / HF config): same layer as Llama-3-70B
    "model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672, "num_attention_heads": 64,
    "num_key_value_heads": 8, "num_hidden_layers": 80, "vocab_size": 32000, "torch_dtype": "float16",
}


def llm_inference_bench() -> list[float]:
    path = REF / "llm-inference-bench" / "power_static_batch.csv"
    errs = []
    gpus = {"Nvidia H100 GPU": "h100-sxm", "Nvidia A100 GPU": "a100-sxm-80gb"}
    print("LLM-Inference-Bench, vLLM static batch, Llama-3-8B, input=output=1024 (GPU-0 NVML power)")
    print(f"{'gpu':14} {'batch':>5} {'latency s meas/pred':>22} {'power W meas/pred':>20} {'energy J meas/pred':>22}")
    for r in csv.DictReader(path.open()):
        if r["framework"] != "vLLM" or r["model"] != "meta-llama/Meta-Llama-3-8B" or r["hardware"] not in gpus:
            continue
        b = int(r["batch_size"])
        p = energylens.predict("llama3-8b", gpus[r["hardware"]], batch=b, prompt_len=1024, output_len=1024)
        lat, e = p.total_latency_s, p.total_energy_j
        ml, mp = float(r["batch_latency_s"]), float(r["avg_power_w_gpu0"])
        me = ml * mp
        errs.append(abs(e / me - 1))
        print(f"{gpus[r['hardware']]:14} {b:5d} {ml:9.2f} / {lat:9.2f} {mp:9.0f} / {e / lat:8.0f} {me:10.0f} / {e:9.0f}"
              f"  ({e / me - 1:+.0%} energy, {lat / ml - 1:+.0%} latency)")
    print(f"energy MAPE {np.mean(errs) * 100:.1f}% over {len(errs)} rows\n")
    return errs


def splitwise() -> None:
    path = REF / "splitwise-perf" / "perf_model.csv"
    model = build_dense(HFConfig(LLAMA2_70B, "Llama-2-70B (public architecture)"), "llama2-70b")
    groups: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    for r in csv.DictReader(path.open()):
        if r["hardware"] == "h100-80gb" and r["model"] == "llama2-70b" and int(r["batch_size"]) <= 32:
            key = (int(r["tensor_parallel"]), int(r["prompt_size"]), int(r["batch_size"]), int(r["token_size"]))
            groups[key].append((float(r["prompt_time"]), float(r["token_time"])))
    pe, te = defaultdict(list), defaultdict(list)
    for (tp, prompt, batch, tokens), vals in sorted(groups.items()):
        mp = np.mean([v[0] for v in vals]) / 1e3
        mt = np.mean([v[1] for v in vals]) / 1e3
        p = energylens.predict(model, "h100-sxm", tp=tp, batch=batch, prompt_len=prompt, output_len=tokens)
        pe[tp].append(abs(p.prefill.latency_s / mp - 1))
        te[tp].append(abs(p.decode.latency_s / tokens / mt - 1))
    print("Splitwise DGX-H100, Llama-2-70B (batch <= 32; batch-64 rows are flagged suspect in SOURCE.md)")
    for tp in sorted(pe):
        print(f"  TP{tp}: prefill-time MAPE {np.mean(pe[tp]) * 100:.1f}%  decode-iteration MAPE {np.mean(te[tp]) * 100:.1f}%"
              f"  ({len(pe[tp])} configurations)")


def main() -> int:
    if not REF.exists():
        print(f"reference data not found at {REF}", file=sys.stderr)
        return 1
    llm_inference_bench()
    splitwise()
    return 0


if __name__ == "__main__":
    sys.exit(main())
