"""Fit the serving coefficients (pooled, per platform) and the prediction-interval residual table (reproducible).

    python tools/fit_serving.py            # writes energylens/data/validation/serving_{coefficients,intervals}.yaml
    python tools/fit_serving.py --dry-run  # prints the fit and the split / leave-one-model-out results only

What it does, on the shipped ML.ENERGY v3 development subset (``energylens/data/validation/mlenergy-v3/dev.csv``):

1. Costs every supported row once with the per-op model (``energylens.validate.cost_groups``); the
   coefficients (``energylens.serving.ServingCoefficients``) are applied afterwards, so the fit
   never re-runs the cost model.
2. Screen (``energylens.validate.not_gpu_limited``, model-free): a run that is slower on a GPU that
   is at least as fast on the datasheet (HBM bandwidth, bf16 FLOP/s) than another GPU's run of the
   same model, task, layout and ``max_num_seqs`` is not paced by the GPU; such rows are left out of
   every fit below (FIT half, leave-one-model-out) but are predicted and scored in every MAPE.
3. Split by model: the model ids of the whole file (supported or not) are sorted and alternately
   assigned to the FIT half and the TEST half (``split_models``). Coefficients are fitted on the
   FIT half only and reported on both halves and overall.
4. Fit: ``scipy.optimize.least_squares`` over the log residuals ``log(pred / measured)`` of the three
   validated columns (median ITL, average power, energy per token) of every FIT row, robust loss
   ``soft_l1`` with ``f_scale = 0.1`` (residuals beyond ~10 % count linearly, so a few anomalous
   runs do not dominate), bounds: overheads >= 0 s, 0 <= active_power_fraction <= 1. Two stages:
   (a) the shared active power fraction and one (iteration, per-sequence) overhead pair per serving
   platform (GPU type) present in the FIT rows; (b) with that fraction fixed, one pooled overhead
   pair over all FIT rows, used for GPUs with no development data of their own.
5. Leave-one-model-out (LOMO): for each supported model, refit the coefficients without it,
   predict it, and take the prediction-interval quantiles from the other models' residuals:
   out-of-sample MAPE and interval coverage.
6. Interval table shipped with the package: quantiles of ``log(pred / measured)`` of all supported
   dev rows under the shipped coefficients, per (family, GPU), (family, any GPU) and overall.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from energylens.intervals import INTERVAL_LEVELS
from energylens.serving import COEFFICIENT_NAMES, OVERHEAD_NAMES, CoefficientTable, ServingCoefficients
from energylens.validate import (
    METRICS,
    apply,
    cost_groups,
    prepare_rows,
    read_rows,
    shipped_dev_csv,
)

QUANTILES = sorted({q for pair in INTERVAL_LEVELS.values() for q in pair})
UNITS = {"iteration_overhead_s": "s", "per_sequence_overhead_s": "s", "active_power_fraction": "1"}
MEANING = {
    "iteration_overhead_s": "host time per engine iteration not overlapped with GPU work (GPUs at idle power)",
    "per_sequence_overhead_s": "GPU-busy time per running request per iteration not described by the op graph "
                               "(sampling, logits processing, paged-KV metadata)",
    "active_power_fraction": "static power of a busy GPU above its context-held idle power, as a fraction of "
                             "(power_limit - idle_power)",
}
X0_OVERHEADS = np.array([1e-3, 2e-5])
UPPER_OVERHEADS = np.array([0.05, 1e-3])
X0_FRACTION = 0.2


_LOSS = "scipy least_squares, soft_l1 loss (f_scale 0.1) on log(pred/measured) of median ITL, average power and " \
        "energy per token; bounds overheads >= 0, fraction in [0, 1]"
METHOD = {
    "active_power_fraction": _LOSS + "; fitted jointly with the per-platform overheads (stage a)",
    "iteration_overhead_s": _LOSS + "; pooled over all GPU types with the fraction fixed (stage b)",
    "per_sequence_overhead_s": _LOSS + "; pooled over all GPU types with the fraction fixed (stage b)",
    "platform": _LOSS + "; fitted jointly with the shared active power fraction (stage a)",
}


def split_models(model_ids) -> tuple[list[str], list[str]]:
    """Sorted unique ids, alternately FIT (even positions) and TEST (odd positions)."""
    ids = sorted(set(model_ids))
    return ids[0::2], ids[1::2]


class Problem:
    def __init__(self, rows: list[dict]) -> None:
        self.results, self.groups, self.context = prepare_rows(rows)
        self.parts = cost_groups(self.results, self.groups, self.context)
        self.ok = [r for r in self.results if r.status == "ok"]
        self.fittable = [r for r in self.ok if not r.not_gpu_limited]  # rows the coefficients may be fitted on

    def predict(self, coeffs: ServingCoefficients, intervals=None) -> None:
        apply(self.results, self.groups, self.parts, coeffs, self.context, intervals=intervals or {})

    def residuals(self, coeffs, rows) -> np.ndarray:
        self.predict(coeffs)
        return np.array([np.log(r.predicted[m] / r.measured[m]) for r in rows for m in METRICS])

    def fit(self, rows) -> CoefficientTable:
        """Stage (a): shared fraction + per-platform overheads; stage (b): pooled overheads, fraction fixed."""
        from scipy.optimize import least_squares

        platforms = sorted({r.gpu for r in rows})
        n = len(platforms)
        x0 = np.concatenate([[X0_FRACTION], np.tile(X0_OVERHEADS, n)])
        upper = np.concatenate([[1.0], np.tile(UPPER_OVERHEADS, n)])

        def table(x, pooled=(0.0, 0.0)) -> CoefficientTable:
            f = float(x[0])
            plat = {g: ServingCoefficients(float(x[1 + 2 * i]), float(x[2 + 2 * i]), f, source="tools/fit_serving.py")
                    for i, g in enumerate(platforms)}
            return CoefficientTable(ServingCoefficients(*pooled, f, source="tools/fit_serving.py"), plat)

        kw = dict(loss="soft_l1", f_scale=0.1)
        sol = least_squares(lambda x: self.residuals(table(x), rows), x0, bounds=(np.zeros_like(x0), upper),
                            x_scale=x0, **kw)
        f = float(sol.x[0])
        pooled = least_squares(lambda x: self.residuals(ServingCoefficients(x[0], x[1], f), rows), X0_OVERHEADS,
                               bounds=(np.zeros(2), UPPER_OVERHEADS), x_scale=X0_OVERHEADS, **kw)
        return table(sol.x, (float(pooled.x[0]), float(pooled.x[1])))


def flat(t: CoefficientTable) -> dict:
    """Plain numbers of a table (for printing and the YAML)."""
    return {"pooled": {n: getattr(t.pooled, n) for n in COEFFICIENT_NAMES},
            **{g: {n: getattr(c, n) for n in OVERHEAD_NAMES} for g, c in sorted(t.platforms.items())}}


def mape(rows) -> dict[str, float]:
    return {m: float(np.mean([abs(r.predicted[m] / r.measured[m] - 1) for r in rows])) if rows else float("nan")
            for m in METRICS}


def quantile_table(rows) -> dict:
    """Residual quantiles per (family, GPU), (family, *) and (*, *)."""
    cells: dict[str, list] = {}
    for r in rows:
        for key in (f"{r.family}/{r.gpu}", f"{r.family}/*", "*/*"):
            cells.setdefault(key, []).append(r)
    out = {}
    for key, rs in sorted(cells.items()):
        out[key] = {}
        for m in METRICS:
            res = np.array([np.log(r.predicted[m] / r.measured[m]) for r in rs])
            out[key][m] = {"n": len(rs), "quantiles": {str(q): round(float(np.quantile(res, q)), 5) for q in QUANTILES}}
    return out


def covered(r, m, table, level) -> bool | None:
    from energylens.intervals import interval_for

    model = r._model
    iv = interval_for(model, r.gpu, {m: r.predicted[m]}, level, table)
    if m not in iv:
        return None
    return iv[m]["low"] <= r.measured[m] <= iv[m]["high"]


def fmt(d: dict) -> str:
    return "  ".join(f"{k.split('_')[0] if k != 'energy_per_output_token_j' else 'energy'}={100 * v:5.1f}%"
                     for k, v in d.items())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(shipped_dev_csv()))
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--floor", action="store_true",
                    help="also print the noise floor: the three coefficients refitted per (model, GPU) on that "
                         "cell's own rows -- a per-model correction the shipped model never uses")
    args = ap.parse_args(argv)
    rows = read_rows(args.data)
    prob = Problem(rows)
    for key, idx in prob.groups.items():
        for i in idx:
            prob.results[i]._model = prob.context[key][0]
    fit_ids, test_ids = split_models(r["model_id"] for r in rows)
    fit_rows = [r for r in prob.ok if r.row["model_id"] in fit_ids]
    test_rows = [r for r in prob.ok if r.row["model_id"] in test_ids]
    fit_used = [r for r in fit_rows if not r.not_gpu_limited]
    screened = [r for r in prob.ok if r.not_gpu_limited]
    print(f"rows: {len(rows)}, supported: {len(prob.ok)} (FIT {len(fit_rows)}, TEST {len(test_rows)}); "
          f"not GPU-paced (left out of every fit, still scored): {len(screened)} "
          f"({len([r for r in screened if r in fit_rows])} in the FIT half)")
    print("FIT models :", ", ".join(fit_ids))
    print("TEST models:", ", ".join(test_ids))

    prob.predict(ServingCoefficients())
    base = {"fit": mape(fit_rows), "test": mape(test_rows), "all": mape(prob.ok)}
    print("no coefficients   FIT ", fmt(base["fit"]), "| TEST", fmt(base["test"]), "| ALL", fmt(base["all"]))
    coeffs = prob.fit(fit_used)
    prob.predict(coeffs)
    split = {"fit": mape(fit_rows), "test": mape(test_rows), "all": mape(prob.ok),
             "all_gpu_paced": mape(prob.fittable)}
    print("fitted on FIT     FIT ", fmt(split["fit"]), "| TEST", fmt(split["test"]), "| ALL", fmt(split["all"]))
    print("                  ALL GPU-paced rows", fmt(split["all_gpu_paced"]))
    print("coefficients:", flat(coeffs))
    prob.predict(coeffs.pooled)
    split["all_pooled_only"] = mape(prob.ok)
    split["test_pooled_only"] = mape(test_rows)
    print("pooled overheads on every GPU  TEST", fmt(split["test_pooled_only"]), "| ALL", fmt(split["all_pooled_only"]))
    # leave one platform out: a GPU type with no development data gets the pooled coefficients fitted on
    # the other platforms' rows (FIT and TEST halves, GPU-paced) -- the honest figure for a new GPU
    lopo = {}
    for g in sorted(coeffs.platforms):
        others = [r for r in prob.fittable if r.gpu != g]
        c = prob.fit(others).pooled
        prob.predict(c)
        lopo[g] = mape([r for r in prob.ok if r.gpu == g])
        print(f"leave-platform-out {g:9s} (pooled fit on the other GPUs)", fmt(lopo[g]))

    # leave one model out: refit without the model, intervals from the other models' residuals
    lomo_rows = []
    cov: dict[float, dict[str, list]] = {lv: {m: [] for m in METRICS} for lv in INTERVAL_LEVELS}
    lomo_coeffs = {}
    for mid in sorted({r.row["model_id"] for r in prob.ok}):
        others = [r for r in prob.ok if r.row["model_id"] != mid]  # residual quantiles: all rows, as shipped
        mine = [r for r in prob.ok if r.row["model_id"] == mid]
        c = prob.fit([r for r in others if not r.not_gpu_limited])
        lomo_coeffs[mid] = flat(c)
        prob.predict(c)
        table = {"cells": quantile_table(others)}
        for r in mine:
            snap = replace(r, predicted=dict(r.predicted))
            snap._model = r._model
            lomo_rows.append(snap)
            for lv in INTERVAL_LEVELS:
                for m in METRICS:
                    ok = covered(r, m, table, lv)
                    if ok is not None:
                        cov[lv][m].append(ok)
    lomo = {"mape": mape(lomo_rows),
            "coverage": {str(lv): {m: float(np.mean(v)) if v else None for m, v in d.items()} for lv, d in cov.items()},
            "rows": len(lomo_rows)}
    print("leave-one-model-out MAPE       ", fmt(lomo["mape"]))
    print("leave-one-model-out coverage 80%", fmt(lomo["coverage"]["0.8"]))

    if args.floor:
        print_floor(prob)
    prob.predict(coeffs)
    table = quantile_table(prob.ok)
    insample = {m: float(np.mean([covered(r, m, {"cells": table}, 0.8) for r in prob.ok])) for m in METRICS}
    print("in-sample coverage 80%         ", fmt(insample))
    if args.dry_run:
        return 0
    write(coeffs, fit_ids, test_ids, fit_used, test_rows, prob, base, split, lomo, table, insample, lomo_coeffs,
          args.data, screened, lopo)
    return 0


def print_floor(prob: Problem) -> None:
    """In-sample MAPE when every (model, GPU) cell gets its own three coefficients: what this model form
    could reach with a per-model correction (forbidden in the shipped model). A floor, not a result."""
    from scipy.optimize import least_squares

    x0 = np.append(X0_OVERHEADS, 0.4)
    upper = np.append(UPPER_OVERHEADS, 1.0)
    cells: dict[tuple, list] = {}
    for r in prob.ok:
        cells.setdefault((r.row["model_id"], r.gpu), []).append(r)
    snap = {}
    for rs in cells.values():
        sol = least_squares(lambda x, rs=rs: prob.residuals(ServingCoefficients(*x), rs), x0,
                            bounds=(np.zeros(3), upper), loss="soft_l1", f_scale=0.1, x_scale=x0)
        prob.predict(ServingCoefficients(*sol.x))
        snap.update({r.index: dict(r.predicted) for r in rs})
    for r in prob.ok:
        r.predicted = snap[r.index]
    print("floor: per-(model, GPU) coefficients, in sample   ALL", fmt(mape(prob.ok)))
    for g in sorted({r.gpu for r in prob.ok}):
        print(f"                                       {g:9s}", fmt(mape([r for r in prob.ok if r.gpu == g])))


def _pct(d: dict) -> dict:
    return {k: round(100 * v, 2) if v is not None else None for k, v in d.items()}


def write(coeffs, fit_ids, test_ids, fit_rows, test_rows, prob, base, split, lomo, table, insample, lomo_coeffs,
          data, screened=(), lopo=None) -> None:
    import yaml

    root = Path(__file__).resolve().parents[1] / "energylens" / "data" / "validation"
    today = _dt.date.today().isoformat()
    data_rel = "energylens/data/validation/mlenergy-v3/dev.csv" if Path(data).resolve() == shipped_dev_csv().resolve() \
        else str(data)
    coeff_doc = {
        "schema_version": 1,
        "written_by": "tools/fit_serving.py",
        "date": today,
        "note": "Serving coefficients: the same for every model (no per-model correction exists). The two "
                "overheads describe the serving platform, so each GPU type with development data has its own "
                "pair (platforms:); every other GPU uses the pooled pair (coefficients:). The active power "
                "fraction is shared. Re-run the tool to refit (it also rewrites serving_intervals.yaml).",
        "coefficients": {
            n: {"value": float(f"{getattr(coeffs.pooled, n):.6g}"), "unit": UNITS[n], "kind": "fitted",
                "meaning": MEANING[n],
                "fitted_on": f"{data_rel}: FIT half = rows of models {', '.join(fit_ids)} "
                             f"({len(fit_rows)} supported rows that pass the GPU-pacing screen), all GPU types",
                "method": METHOD[n]}
            for n in COEFFICIENT_NAMES
        },
        "platforms": {
            g: {n: {"value": float(f"{getattr(c, n):.6g}"), "unit": UNITS[n], "kind": "fitted", "meaning": MEANING[n],
                    "fitted_on": f"{data_rel}: FIT-half rows on {g} "
                                 f"({len([r for r in fit_rows if r.gpu == g])} rows)",
                    "method": METHOD["platform"]}
                for n in OVERHEAD_NAMES}
            for g, c in sorted(coeffs.platforms.items())
        },
        "split": {"rule": "sorted model ids of the file, alternately FIT / TEST", "fit_models": fit_ids,
                  "test_models": test_ids},
        "not_gpu_paced": {
            "rule": "energylens.validate.not_gpu_limited: a run slower (median ITL) on a GPU at least as fast on "
                    "the datasheet (HBM bandwidth and bf16 FLOP/s) than the same model/task/layout/max_num_seqs "
                    "run on another GPU, at no more than 5 % more running requests; model-free (measured columns "
                    "and datasheet numbers only)",
            "use": "left out of every fit (FIT half and leave-one-model-out); predicted and scored in every MAPE",
            "rows": [{"row": r.index, "model_id": r.row["model_id"], "task": r.row["task"],
                      "gpu": r.row["gpu_model"], "max_num_seqs": r.row["max_num_seqs"], "reason": r.not_gpu_limited}
                     for r in screened],
        },
        "mape_percent": {
            "no_coefficients": {k: _pct(v) for k, v in base.items()},
            "fitted_on_fit_half": {k: _pct(v) for k, v in split.items()},
            "leave_one_model_out": _pct(lomo["mape"]),
            "leave_one_platform_out": {g: _pct(v) for g, v in (lopo or {}).items()},
        },
        "leave_one_model_out_coefficients": lomo_coeffs,
    }
    iv_doc = {
        "schema_version": 1,
        "written_by": "tools/fit_serving.py",
        "date": today,
        "residual": "log(predicted / measured) under the shipped coefficients, all supported rows of " + data_rel,
        "interval": "measured in [pred * exp(-q_hi), pred * exp(-q_lo)]; level 0.8 uses q0.1/q0.9, 0.5 uses "
                    "q0.25/q0.75, 0.9 uses q0.05/q0.95; cells with fewer than 8 rows fall back to family/* then */*",
        "in_sample_coverage_80": {k: round(v, 3) for k, v in insample.items()},
        "leave_one_model_out": {"coverage": lomo["coverage"], "mape_percent": _pct(lomo["mape"]), "rows": lomo["rows"],
                                "how": "coefficients refitted without the model; quantiles from the other models' "
                                       "residuals; coverage of the held-out model's rows"},
        "cells": table,
    }
    (root / "serving_coefficients.yaml").write_text(yaml.safe_dump(coeff_doc, sort_keys=False, width=110))
    (root / "serving_intervals.yaml").write_text(yaml.safe_dump(iv_doc, sort_keys=False, width=110))
    print("wrote", root / "serving_coefficients.yaml", "and", root / "serving_intervals.yaml")


if __name__ == "__main__":
    sys.exit(main())
