"""Fit GEMM latency coefficients of a GPU profile to vidur's per-operator timings (micro-benchmarks).

    python tools/fit_gemm_vidur.py            # print the fit and residuals
    python tools/fit_gemm_vidur.py --write    # also write the fitted values into the GPU profiles

Fits, per GPU, by bounded least squares on log(predicted / measured) latency of every GEMM row:
max_compute_efficiency_{fp16,bf16} (one value; same tensor rate), gemm_k_half, max_memory_efficiency
and kernel_overhead, through the exact formulas of energylens.cost.roofline.
"""

from __future__ import annotations

import argparse
import csv
import re
from importlib import resources
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from energylens.cost.roofline import gemm_efficiency, kernel_cost
from energylens.hardware.profile import GPU, Quantity, load_gpu

DATA = resources.files("energylens") / "data" / "calibration" / "vidur" / "mlp_ops_median_grid.csv"
GPUS = {"h100": "h100-sxm", "a100": "a100-sxm-80gb"}
SOURCE = "energylens/data/calibration/vidur/mlp_ops_median_grid.csv (vidur GEMM kernel timings); tools/fit_gemm_vidur.py"


def gemm_rows(gpu_tag: str) -> np.ndarray:
    """(M, N, K, measured_s) for each GEMM operator row of one GPU."""
    out = []
    with DATA.open() as fh:
        for r in csv.DictReader(fh):
            if r["gpu"] != gpu_tag:
                continue
            tp = int(r["num_tensor_parallel_workers"])
            t = float(r["num_tokens"])
            h, kv, d, f = (int(r[c]) for c in ("n_head", "n_kv_head", "n_embd", "n_expanded_embd"))
            hd = d // h
            gated = r["use_gated_mlp"] == "True"
            shapes = {
                "attn_pre_proj": (t, (h + 2 * kv) * hd / tp, d),
                "attn_post_proj": (t, d, h * hd / tp),
                "mlp_up_proj": (t, (2 if gated else 1) * f / tp, d),
                "mlp_down_proj": (t, d, f / tp),
            }
            for col, (m, n, k) in shapes.items():
                ms = float(r[f"{col}_ms_median"])
                if ms > 0:
                    out.append((m, n, k, ms * 1e-3))
    return np.array(out)


def predict(gpu: GPU, rows: np.ndarray) -> np.ndarray:
    m, n, k = rows[:, 0], rows[:, 1], rows[:, 2]
    flops = 2 * m * n * k
    bytes_ = 2.0 * (m * k + k * n + m * n)
    eff = gemm_efficiency(gpu, "fp16", m, n, k)
    return kernel_cost(gpu, "fp16", flops, bytes_, eff).latency_s


def with_params(gpu: GPU, x: np.ndarray) -> GPU:
    eff, k_half, mem_eff, overhead = x
    def q(name: str, value: float, unit: str) -> Quantity:
        return Quantity(float(value), unit, "fitted", SOURCE)
    # energy_per_flop is derived from the efficiency ((power_limit - idle) / (peak x eff)): keep it consistent
    e_flop = (gpu.power_limit_w - gpu.idle_power_w) / (gpu.peak_flops("fp16") * eff)
    return gpu.with_quantities({
        "energy_per_flop_fp16": Quantity(e_flop, "J/FLOP", "derived", "derived"),
        "energy_per_flop_bf16": Quantity(e_flop, "J/FLOP", "derived", "derived"),
        "max_compute_efficiency_fp16": q("", eff, "1"), "max_compute_efficiency_bf16": q("", eff, "1"),
        "gemm_k_half": q("", k_half, "1"), "max_memory_efficiency": q("", mem_eff, "1"),
        "kernel_overhead": q("", overhead, "s"),
    })


def fit(gpu: GPU, rows: np.ndarray):
    x0 = np.array([gpu.max_compute_efficiency("fp16"), gpu.q("gemm_k_half"), gpu.max_memory_efficiency,
                   gpu.kernel_overhead_s])

    def resid(x: np.ndarray) -> np.ndarray:
        return np.log(predict(with_params(gpu, x), rows) / rows[:, 3])

    res = least_squares(resid, x0, bounds=([0.3, 0.0, 0.4, 0.0], [0.98, 4096.0, 0.98, 5e-5]), x_scale=[0.1, 100, 0.1, 1e-6])
    return res.x, resid(x0), resid(res.x)


def write(path: Path, values: dict[str, tuple[float, str]], note: str) -> None:
    text = path.read_text()
    for name, (value, unit) in values.items():
        line = (f'  {name}: {{value: {value:.6g}, unit: "{unit}", kind: fitted, source: "{SOURCE}", '
                f'note: "{note}"}}')
        pattern = re.compile(rf"^  {re.escape(name)}:.*$", re.M)
        if pattern.search(text):
            text = pattern.sub(lambda _m, line=line: line, text)
        else:
            text = text.rstrip("\n") + "\n" + line + "\n"
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    for tag, key in GPUS.items():
        gpu = load_gpu(key)
        rows = gemm_rows(tag)
        x, r0, r1 = fit(gpu, rows)
        ape0 = np.abs(np.expm1(r0)) * 100
        ape1 = np.abs(np.expm1(r1)) * 100
        print(f"{key}: {len(rows)} GEMM rows; MAPE {ape0.mean():.1f}% -> {ape1.mean():.1f}% "
              f"(median {np.median(ape1):.1f}%, p90 {np.percentile(ape1, 90):.1f}%)")
        m = rows[:, 0]
        for lo, hi in ((1, 64), (64, 512), (512, 1e9)):
            sel = (m >= lo) & (m < hi)
            print(f"    tokens [{lo}, {hi}): n={sel.sum()}, MAPE {ape1[sel].mean():.1f}%, bias {np.mean(r1[sel]) * 100:+.1f}%")
        print(f"  max_compute_efficiency_fp16/bf16 {x[0]:.3f}, gemm_k_half {x[1]:.0f}, "
              f"max_memory_efficiency {x[2]:.3f}, kernel_overhead {x[3] * 1e6:.2f} us")
        if args.write:
            note = (f"fitted on {len(rows)} vidur fp16 GEMM kernel timings ({tag}, Llama-2/3 layer shapes, TP 1-8, "
                    f"1-32768 tokens); latency MAPE {ape1.mean():.1f}%")
            path = Path(str(resources.files("energylens") / "data" / "hardware" / "gpus" / f"{key}.yaml"))
            e_flop = (gpu.power_limit_w - gpu.idle_power_w) / (gpu.peak_flops("fp16") * x[0])
            write(path, {"max_compute_efficiency_fp16": (x[0], "1"), "max_compute_efficiency_bf16": (x[0], "1"),
                         "gemm_k_half": (x[1], "1"), "max_memory_efficiency": (x[2], "1"),
                         "kernel_overhead": (x[3], "s")}, note)
            write(path, {"energy_per_flop_fp16": (e_flop, "J/FLOP"), "energy_per_flop_bf16": (e_flop, "J/FLOP")},
                  "(power_limit - idle_power) / (peak x fitted max_compute_efficiency): a GEMM at full efficiency "
                  "runs at the power limit")


if __name__ == "__main__":
    main()
