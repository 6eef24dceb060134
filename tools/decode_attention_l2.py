"""Test whether decode-attention power errors come from L2-resident KV caches (counted bytes that are not HBM
bytes under CUDA-graph replay): the shipped kernel power model's error on the power-table rows, binned by the
KV bytes a call reads over the GPU's L2 capacity. L2 residency predicts over-prediction for KV <= L2 and none
far above it.

    PYTHONPATH=. python tools/decode_attention_l2.py
"""

from __future__ import annotations

import numpy as np

from energylens.calibration.power import MIN_LATENCY_S, _parts, predicted_power_w, profile_power
from energylens.hardware.profile import load_gpu

BINS = ((0, 0.25), (0.25, 0.5), (0.5, 1), (1, 2), (2, 4), (4, 16), (16, np.inf))


def main() -> None:
    for key in ("h200", "b200"):
        gpu = load_gpu(key)
        fit = profile_power(gpu)
        for p in _parts(gpu, 1):
            if p.family != "generation_attention":
                continue
            use = p.latency_s >= MIN_LATENCY_S
            pred, meas = predicted_power_w(fit, p), p.table["avg_power_w"]
            ratio = p.bytes / gpu.q("l2_capacity")
            bw = p.bytes / p.latency_s / gpu.hbm_bandwidth_bytes_per_s
            print(f"{key}: decode-attention rows >= 0.1 ms: {int(use.sum())}")
            for lo, hi in BINS:
                m = use & (ratio >= lo) & (ratio < hi)
                if m.any():
                    print(f"  KV/L2 {lo:>5g}-{hi:<5g} n={int(m.sum()):5d}  median log(pred/meas) "
                          f"{np.median(np.log(pred[m] / meas[m])):+.3f}  median APE {np.median(np.abs(pred[m] / meas[m] - 1)):.3f}"
                          f"  HBM share {np.median(bw[m]):.2f}  measured {np.median(meas[m]):.0f} W  predicted "
                          f"{np.median(pred[m]):.0f} W")


if __name__ == "__main__":
    main()
