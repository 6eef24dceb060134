"""Fused-MoE time per layer at decode: the cost model's plan (the experts' gate/up and down kernels of
``predict --json``) against NVIDIA AIConfigurator's measured vLLM kernel at the same shape (balanced routing,
interpolated in tokens), for the quantised MoE checkpoints of the silicon validation set.

    python tools/compare_moe_decode.py [--src /work/shared/reference/aiconfigurator/kernels-latency]

Calibration data only (kernel tables); prints one row per model x GPU x TP x batch.
"""

from __future__ import annotations

import argparse
import csv
import gzip
from pathlib import Path

import numpy as np

from energylens.predict import predict

# model, GPU key, table tag, TP, table moe_dtype, kernel_source substring, (hidden, inter, experts, top-k)
CASES = (
    ("openai/gpt-oss-120b", "h100-sxm", "h100", 2, "w4a16_mxfp4", "oaitriton", (2880, 2880, 128, 4)),
    ("openai/gpt-oss-120b", "h100-sxm", "h100", 8, "w4a16_mxfp4", "oaitriton", (2880, 2880, 128, 4)),
    ("openai/gpt-oss-120b", "h200", "h200", 1, "w4a16_mxfp4", "oaitriton", (2880, 2880, 128, 4)),
    ("openai/gpt-oss-120b", "b200", "b200", 1, "w4a16_mxfp4", "trtllm", (2880, 2880, 128, 4)),
    ("openai/gpt-oss-120b", "b200", "b200", 4, "w4a16_mxfp4", "trtllm", (2880, 2880, 128, 4)),
    ("moonshotai/Kimi-K2.5", "h200", "h200", 8, "int4_wo", "marlin", (7168, 2048, 384, 8)),
    ("moonshotai/Kimi-K2.5", "b200", "b200", 8, "int4_wo", "marlin", (7168, 2048, 384, 8)),
)
BATCHES = (1, 8, 64)


def table_s(src: Path, tag: str, dtype: str, kernel: str, shape, tp: int, tokens: float) -> float:
    hidden, inter, experts, topk = shape
    pts = []
    with gzip.open(src / f"{tag}_sxm_vllm_0.24.0_moe.csv.gz", "rt", newline="") as fh:
        for r in csv.DictReader(fh):
            if (r["moe_dtype"] == dtype and kernel in r["kernel_source"] and r["distribution"] == "balanced"
                    and (int(r["hidden_size"]), int(r["inter_size"]), int(r["num_experts"]), int(r["topk"])) == shape
                    and int(r["moe_tp_size"]) == tp and int(r["moe_ep_size"]) == 1):
                pts.append((float(r["num_tokens"]), float(r["latency"]) * 1e-3))
    if not pts:
        return float("nan")
    pts.sort()
    return float(np.interp(tokens, [p[0] for p in pts], [p[1] for p in pts]))


def plan_s(model: str, gpu: str, tp: int, batch: int) -> float:
    r = predict(model, gpu, batch=batch, prompt_len=1024, output_len=1, tp=tp)
    ops = [o for o in r.decode.ops if ".experts." in o.name and "silu" not in o.name]
    layers = sum(o.count for o in ops if o.name.endswith("gate_up")) / tp  # count: calls on all GPUs of the layout
    return sum(o.latency_s for o in ops) / layers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default="/work/shared/reference/aiconfigurator/kernels-latency")
    args = ap.parse_args()
    print("| model | GPU | TP | batch | plan us/layer | table us/layer | plan / table |\n|---|---|---:|---:|---:|---:|---:|")
    for model, gpu, tag, tp, dtype, kernel, shape in CASES:
        for b in BATCHES:
            p, t = plan_s(model, gpu, tp, b), table_s(Path(args.src), tag, dtype, kernel, shape, tp, b)
            print(f"| {model.split('/')[-1]} | {gpu} | {tp} | {b} | {p * 1e6:.1f} | {t * 1e6:.1f} | {p / t:.2f} |")


if __name__ == "__main__":
    main()
