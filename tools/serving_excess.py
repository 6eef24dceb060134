"""What the measured serving time beyond the calibrated kernels is: GPU work or host time, and does it scale
with the vocabulary (a sampler kernel over every running request's logits)? Tests on the ML.ENERGY
development rows (model-free in the measured columns; nothing is written or fitted into the shipped data).

    PYTHONPATH=. python tools/serving_excess.py        # ~40 s

For every supported row that passes the GPU-pacing screen (``energylens.validate.not_gpu_limited``):

* measured mean iteration ``tau = avg_batch_size / output_throughput`` (s) and the costed kernel time of
  a mean iteration ``t`` (no serving coefficients); the excess ``tau - t``;
* (1) per-cell slopes: the excess against the running requests per replica, per (GPU, model, task,
  layout) with at least four rows: intercept (s per iteration) and slope (s per request per iteration),
  next to the model's vocabulary;
* (2) the vocabulary test: leave-one-model-out error of the mean iteration when the excess per GPU type is
  ``c0 + c1 B`` (constant per request), ``c0 + k B V`` (proportional to batch x vocabulary, as a
  sampler over every request's logits would be) or both (non-negative least squares on relative error);
* (3) the power test: measured energy of a mean iteration per GPU minus the costed kernel energy (which
  holds idle power while the kernels run) and collective energy, regressed on the kernels' active time
  (busy static power above idle), the per-iteration excess and the per-request excess (least squares on
  relative error): the last two coefficients are the average power (W) the GPU draws while the excess
  runs. Host time leaves the GPU waiting at idle power; GPU work draws at least busy static power
  (idle + active power fraction x (limit - idle));
* (4) the excess by running batch: measured median ITL minus the costed median iteration (no coefficients; MoE
  rows routed as the shipped prediction routes them), median per (family, GPU) and batch bin, in ms and per
  request: is it paced by the GPU (shorter on the faster GPU) and linear in the batch?
"""

from __future__ import annotations

import sys

import numpy as np
from scipy.optimize import lsq_linear

from energylens.calibration.serving_fit import ServingFit
from energylens.serving import ServingCoefficients, load_coefficient_table
from energylens.validate import read_rows, shipped_dev_csv

FORMS = ("constant per request", "batch x vocabulary", "both")


def row_table(fit: ServingFit, raw: list[dict]) -> list[dict]:
    """One dict per supported row: measured mean iteration, costed kernel time and energy, vocabulary."""
    out = []
    for key, idx in fit.groups.items():
        model, gpu, layout = fit.context[key]
        p = fit.parts[key]
        for j, i in enumerate(idx):
            r = fit.results[i]

            def at(a, j=j) -> float:
                a = np.asarray(a, dtype=float).reshape(-1)
                return float(a[j] if a.size > 1 else a[0])

            batch = float(r.row["_batch"])
            tau = batch / float(raw[i]["output_throughput_tokens_per_sec"])
            out.append({"row": i, "model": key[0], "gpu": gpu.key, "task": r.row["task"], "tp": int(layout.tp),
                        "screened": bool(r.not_gpu_limited), "br": batch / int(layout.dp), "tau": tau,
                        "t": at(p.mean.time_s), "kernel_j": at(p.mean.kernel_j) + at(p.mean.collective_j),
                        "active_s": at(p.mean.active_s), "vocab": float(model.dims["v"]),
                        "gpu_energy_j": float(raw[i]["avg_power_watts"]) / p.num_gpus * tau,
                        "idle_w": gpu.idle_power_w, "limit_w": gpu.power_limit_w})
    return out


def features(r: dict, form: str) -> list[float]:
    b, bv = r["br"], r["br"] * r["vocab"] / 1.5e5
    return {"constant per request": [1.0, b], "batch x vocabulary": [1.0, bv], "both": [1.0, b, bv]}[form]


def fit_excess(rows: list[dict], form: str) -> dict[str, np.ndarray]:
    """Non-negative least squares of the excess per GPU type (relative to the measured iteration)."""
    out = {}
    for g in sorted({r["gpu"] for r in rows}):
        rg = [r for r in rows if r["gpu"] == g]
        a = np.array([features(r, form) for r in rg])
        w = 1.0 / np.array([r["tau"] for r in rg])
        y = np.array([r["tau"] - r["t"] for r in rg])
        out[g] = lsq_linear(a * w[:, None], y * w, bounds=(0.0, np.inf)).x
    return out


def lomo(rows: list[dict], fitted: list[dict], form: str) -> dict[str, float]:
    errs: dict[str, list[float]] = {}
    for m in sorted({r["model"] for r in rows}):
        c = fit_excess([r for r in fitted if r["model"] != m], form)
        for r in rows:
            if r["model"] == m:
                pred = r["t"] + float(np.dot(features(r, form), c[r["gpu"]]))
                errs.setdefault(r["gpu"], []).append(abs(pred / r["tau"] - 1.0))
    return {"all": float(np.mean([e for v in errs.values() for e in v])), **{g: float(np.mean(v)) for g, v in errs.items()}}


def power_test(fitted: list[dict], active_fraction: float) -> dict[str, dict[str, float]]:
    c = fit_excess(fitted, FORMS[0])
    out = {}
    for g, (c0, c1) in c.items():
        rg = [r for r in fitted if r["gpu"] == g]
        x0 = np.full(len(rg), c0)
        x1 = np.array([r["tau"] - r["t"] - c0 for r in rg])  # the per-request part and what is left
        e = np.array([r["gpu_energy_j"] for r in rg])
        base = np.array([r["kernel_j"] for r in rg])
        act = np.array([r["active_s"] for r in rg])
        w = 1.0 / e
        free = np.linalg.lstsq(np.stack([act, x0, x1], 1) * w[:, None], (e - base) * w, rcond=None)[0]
        idle, limit = rg[0]["idle_w"], rg[0]["limit_w"]
        fixed_busy = active_fraction * (limit - idle)
        fixed = np.linalg.lstsq(np.stack([x0, x1], 1) * w[:, None], (e - base - fixed_busy * act) * w, rcond=None)[0]
        out[g] = {"rows": len(rg), "idle_w": idle, "busy_static_w": idle + fixed_busy, "c0_s": c0, "c1_s": c1,
                  "free_active_w": free[0], "free_per_request_w": free[2], "fixed_per_request_w": fixed[1]}
    return out


BATCH_BINS = ((0, 12), (12, 24), (24, 48), (48, 100), (100, 200), (200, 300), (300, 600), (600, 1200), (1200, 5000))


def excess_by_batch(fit: ServingFit, skew: float) -> dict[str, list[tuple]]:
    """(family/GPU) -> [(bin, rows, median excess s, median excess per request s)] over the GPU-paced rows."""
    parts = fit.parts_at(skew)
    cells: dict[str, list[tuple[float, float]]] = {}
    for key, idx in fit.groups.items():
        p = parts[key]
        median = np.broadcast_to(np.asarray(p.median.time_s, dtype=float), p.batch.shape).reshape(-1)
        for j, i in enumerate(idx):
            r = fit.results[i]
            if r.status == "ok" and not r.not_gpu_limited:
                b = float(r.row["_batch"])
                cells.setdefault(f"{r.family}/{r.gpu}", []).append(
                    (b, r.measured["decode_step_latency_s"] - float(median[j])))
    out = {}
    for cell, pts in sorted(cells.items()):
        out[cell] = []
        for lo, hi in BATCH_BINS:
            sel = [(b, e) for b, e in pts if lo <= b < hi]
            if sel:
                out[cell].append(((lo, hi), len(sel), float(np.median([e for _, e in sel])),
                                  float(np.median([e / b for b, e in sel]))))
    return out


def main() -> int:
    raw = read_rows(shipped_dev_csv())
    fit = ServingFit(raw)
    fit.predict(ServingCoefficients())
    rows = row_table(fit, raw)
    fitted = [r for r in rows if not r["screened"]]
    print(f"{len(rows)} supported rows, {len(fitted)} GPU-paced (used below)")
    print("(1) excess = c0 + c1 x running requests, per cell (>= 4 GPU-paced rows)")
    cells: dict[tuple, list[dict]] = {}
    for r in fitted:
        cells.setdefault((r["gpu"], r["model"], r["task"], r["tp"]), []).append(r)
    for (g, m, task, tp), rs in sorted(cells.items()):
        if len(rs) < 4:
            continue
        b = np.array([r["br"] for r in rs])
        y = np.array([r["tau"] - r["t"] for r in rs])
        c0, c1 = np.linalg.lstsq(np.stack([np.ones_like(b), b], 1), y, rcond=None)[0]
        print(f"  {g:9s} {m:50s} {task:14s} tp{tp}  vocab {rs[0]['vocab']:7.0f}  c0 {1e3 * c0:6.2f} ms  "
              f"c1 {1e6 * c1:6.1f} us")
    print("(2) leave-one-model-out MAPE of the mean iteration, excess per GPU type as:")
    for form in FORMS:
        errs = lomo(rows, fitted, form)
        coeffs = {g: [round(1e6 * float(v), 1) for v in c] for g, c in fit_excess(fitted, form).items()}
        print(f"  {form:22s} " + "  ".join(f"{k} {100 * v:5.1f}%" for k, v in errs.items())
              + f"   coefficients (us; vocabulary term per 150k tokens): {coeffs}")
    frac = load_coefficient_table().pooled.active_power_fraction
    print(f"(3) average power per GPU while the excess runs (busy static power at the shipped fraction {frac:.3f}):")
    for g, d in power_test(fitted, frac).items():
        print(f"  {g:9s} {d['rows']} rows: idle {d['idle_w']:.0f} W, busy static {d['busy_static_w']:.0f} W; "
              f"excess {1e3 * d['c0_s']:.2f} ms + {1e6 * d['c1_s']:.1f} us/request; per-request part draws "
              f"{d['fixed_per_request_w']:.0f} W (fraction fixed), {d['free_per_request_w']:.0f} W (busy power "
              f"free: {d['free_active_w']:.0f} W above idle while kernels run)")
    skew = load_coefficient_table().pooled.routing_skew
    print(f"(4) measured median ITL - costed median iteration (no coefficients; MoE at the shipped routing, skew {skew:g},"
          " bias-balanced routers uniform), median per batch bin: ms (us per request)")
    for cell, bins in excess_by_batch(fit, skew).items():
        print(f"  {cell:15s} " + "  ".join(f"[{lo},{hi}) n{n} {1e3 * e:5.2f} ({1e6 * per:4.0f})"
                                         for (lo, hi), n, e, per in bins))
    return 0


if __name__ == "__main__":
    sys.exit(main())
