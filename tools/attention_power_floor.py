"""How far the attention rows of the kernel power tables are from any smooth function of what the power formula
sees: a nearest-neighbour floor, and the spread of rows doing the same work.

* **Nearest-neighbour floor**: each held-out row (``calibration/power.py``'s split) is predicted by the median
  reading of its ``k`` nearest fitted rows in (log latency, log HBM B/s, log FLOP/s as the fit counts them),
  rows of the same KV-cache dtype only (``--shape`` adds log head dim, GQA ratio and batch). No shared
  coefficient is involved, so a held-out median APE near the fit's says the rest is not in these inputs.
* **Same-work spread**: decode rows at >= 85 % of the bandwidth the fastest rows reach, per latency band and KV
  dtype: the 10th-90th percentile reading and the median |deviation| from their median.

    PYTHONPATH=. python tools/attention_power_floor.py [--k 15] [--shape]
"""

from __future__ import annotations

import argparse

import numpy as np

from energylens.calibration.power import (
    MIN_LATENCY_S,
    RUN_CAP_LATENCY_S,
    _parts,
    fit_power,
    predicted_power_w,
)
from energylens.hardware.profile import load_gpu

FAMILIES = {"generation_attention": "decode attention", "context_attention": "prefill attention"}


def knn_floor(x: np.ndarray, group: np.ndarray, reading: np.ndarray, train: np.ndarray, test: np.ndarray,
              k: int) -> np.ndarray:
    """APE of each ``test`` row predicted by the median ``reading`` of its ``k`` nearest ``train`` rows of the
    same ``group`` (features ``x`` standardised on the train rows; Euclidean)."""
    mu, sd = x[train].mean(0), x[train].std(0)
    z = (x - mu) / np.where(sd > 0, sd, 1.0)
    out = np.full(int(test.sum()), np.nan)
    for j, i in enumerate(np.flatnonzero(test)):
        pool = np.flatnonzero(train & (group == group[i]))
        if pool.size:
            near = pool[np.argsort(((z[pool] - z[i]) ** 2).sum(1))[:k]]
            out[j] = abs(np.median(reading[near]) / reading[i] - 1.0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=15, help="neighbours per held-out row")
    ap.add_argument("--shape", action="store_true", help="also head dim, GQA ratio and batch as features")
    args = ap.parse_args()
    print("| GPU | family | held-out rows | fit: median APE | nearest-neighbour floor: median APE |")
    print("|---|---|---:|---:|---:|")
    spreads = []
    for key in ("h200", "b200"):
        gpu = load_gpu(key)
        fit = fit_power(gpu)
        for p in _parts(gpu, 1):
            if p.family not in FAMILIES:
                continue
            t, lat = p.table, p.latency_s
            ok = lat >= MIN_LATENCY_S
            reading = t["avg_power_w"]
            feats = [np.log(lat), np.log(p.bytes / lat), np.log(p.flops / lat)]
            if args.shape:
                feats += [np.log(t["head_dim"]), np.log(t["num_heads"] / t["num_key_value_heads"]),
                          np.log(t["batch_size"])]
            kv = t["kv_cache_dtype"]
            floor = knn_floor(np.stack(feats, 1), kv, reading, ok & ~p.held, ok & p.held, args.k)
            model = np.abs(predicted_power_w(fit, p)[ok & p.held] / reading[ok & p.held] - 1.0)
            print(f"| {key} | {FAMILIES[p.family]} | {int((ok & p.held).sum())} | {100 * np.median(model):.1f} % | "
                  f"{100 * np.nanmedian(floor):.1f} % |")
            if p.family == "generation_attention":
                bw = p.bytes / lat
                fast = ok & (bw >= 0.85 * np.percentile(bw[ok], 99))
                for lo, hi in ((MIN_LATENCY_S, RUN_CAP_LATENCY_S), (RUN_CAP_LATENCY_S, np.inf)):
                    for dt in sorted(set(kv.tolist())):
                        m = fast & (lat >= lo) & (lat < hi) & (kv == dt)
                        if m.sum() >= 5:
                            r = reading[m]
                            spreads.append(f"| {key} | {1e3 * lo:.2f}-{1e3 * hi:.2f} ms | {dt} | {int(m.sum())} | "
                                           f"{np.median(bw[m]) / 1e12:.2f} | {np.percentile(r, 10):.0f}-"
                                           f"{np.percentile(r, 90):.0f} W | "
                                           f"{100 * np.median(np.abs(r / np.median(r) - 1)):.1f} % |")
    print("\nDecode rows at >= 85 % of the fastest rows' bandwidth (the same work per byte):\n")
    print("| GPU | latency | KV dtype | rows | median TB/s | reading p10-p90 | median abs deviation |")
    print("|---|---|---|---:|---:|---|---:|")
    print("\n".join(spreads))


if __name__ == "__main__":
    main()
