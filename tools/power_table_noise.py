"""Measurement noise of the kernel power tables: the same kernel read twice.

An attention row whose sliding window covers every key it reads (``window_size >= step + 1`` for decode,
``>= isl`` for prefill) runs the same work as the row with no window (latencies agree within ~0.3 %), but
was collected as a separate configuration. The spread of their two NVML readings is the tables' own
noise: for two readings with independent errors, the median |log ratio| is sqrt(2) times the median
|error| of one reading, so ``median |log ratio| / sqrt(2)`` is the held-out median APE a perfect power
model would still score (the floor under ``python tools/calibrate_tables.py``'s energy-per-call errors).

    PYTHONPATH=. python tools/power_table_noise.py                 # the shipped power tables (subset)
    PYTHONPATH=. python tools/power_table_noise.py --reference /work/shared/reference/aiconfigurator/kernels-power
                                                                   # the full NVIDIA tables (more pairs)
"""

from __future__ import annotations

import argparse
import csv
import gzip
from pathlib import Path

import numpy as np

from energylens.calibration.power import MIN_LATENCY_S
from energylens.calibration.tables import POWER_VERSION, load_table

FAMILIES = {"generation_attention": "step", "context_attention": "isl"}
KEY = ("batch_size", "num_heads", "num_key_value_heads", "head_dim", "kv_cache_dtype")
BANDS_S = ((MIN_LATENCY_S, 1.0 / 3000), (1.0 / 3000, np.inf))  # replays shorter / longer than 1 s (3000 calls)


def _columns(gpu: str, family: str, reference: Path | None) -> dict[str, np.ndarray]:
    if reference is None:
        return load_table(gpu, family, power=True).columns
    path = reference / f"{gpu}_sxm_vllm_{POWER_VERSION}_{family}.csv.gz"
    with gzip.open(path, "rt", newline="") as fh:
        rows = list(csv.DictReader(fh))
    names = KEY + (FAMILIES[family], "window_size", "latency_ms", "avg_power_w")
    return {n: np.asarray([r[n] for r in rows], dtype=str if n == "kv_cache_dtype" else float) for n in names}


def pairs(cols: dict[str, np.ndarray], family: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(latency s, log power ratio, log latency ratio) of every (no window, covering window) pair."""
    pos = FAMILIES[family]
    reach = cols[pos] + (1.0 if family == "generation_attention" else 0.0)
    key = [tuple(str(cols[k][i]) for k in KEY + (pos,)) for i in range(len(cols[pos]))]
    plain = {key[i]: i for i in np.flatnonzero(cols["window_size"] == 0)}
    lat, dp, dl = [], [], []
    for i in np.flatnonzero((cols["window_size"] > 0) & (cols["window_size"] >= reach)):
        j = plain.get(key[i])
        if j is not None:
            lat.append(cols["latency_ms"][j] * 1e-3)
            dp.append(np.log(cols["avg_power_w"][i] / cols["avg_power_w"][j]))
            dl.append(np.log(cols["latency_ms"][i] / cols["latency_ms"][j]))
    return np.asarray(lat), np.asarray(dp), np.asarray(dl)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, help="folder with the full <gpu>_sxm_vllm_0.22.0_<family>.csv.gz tables")
    args = ap.parse_args()
    print("| GPU | family | latency | pairs | median abs log latency ratio | median abs log power ratio | "
          "floor of one reading (median APE) |")
    print("|---|---|---|---:|---:|---:|---:|")
    for gpu in ("h200", "b200"):
        for family in FAMILIES:
            lat, dp, dl = pairs(_columns(gpu, family, args.reference), family)
            for lo, hi in BANDS_S:
                m = (lat >= lo) & (lat < hi)
                if m.sum() >= 3:
                    band = f"{lo * 1e3:.2f}-{hi * 1e3:.2f} ms" if np.isfinite(hi) else f">= {lo * 1e3:.2f} ms"
                    print(f"| {gpu} | {family} | {band} | {int(m.sum())} | {np.median(np.abs(dl[m])):.3f} | "
                          f"{np.median(np.abs(dp[m])):.3f} | {100 * np.median(np.abs(dp[m])) / np.sqrt(2):.1f} % |")


if __name__ == "__main__":
    main()
