"""Fitting the serving coefficients on measured serving runs (the core of ``tools/fit_serving.py``).

The serving layer (:mod:`energylens.serving`) adds to the sum of costed kernels what a serving engine
adds around them; its coefficients (:class:`energylens.serving.ServingCoefficients`, the same for
every model) are fitted here on development rows in the ML.ENERGY column format:

1. every supported row is costed once with the per-op model (:func:`energylens.validate.cost_groups`);
   the coefficients are applied afterwards (:func:`energylens.validate.apply`), so a fit never re-runs
   the cost model;
2. rows that fail the model-free GPU-pacing screen (:func:`energylens.validate.not_gpu_limited`) are
   left out of every fit and still scored;
3. fit (:meth:`ServingFit.fit`): ``scipy.optimize.least_squares`` over ``log(pred / measured)`` of
   median ITL, average power and energy per token, robust loss ``soft_l1`` (``f_scale`` 0.1), bounds
   overheads >= 0 and 0 <= fraction <= 1; stage (a) the shared active power fraction with one overhead
   pair per platform (GPU type) in the rows, at each routing skew of ``SKEW_GRID`` (the MoE rows re-costed
   with ``zipf:S`` routing, :meth:`ServingFit.parts_at`; the skew of least loss is kept, 0 when the rows
   hold no MoE model); stage (b) with that fraction and skew fixed, one pooled pair for GPUs without data
   of their own;
4. held-out checks: a FIT/TEST split by model, leave-one-model-out (LOMO), leave-one-family-out
   (dense / MoE), leave-one-platform-out, and the per-(model, GPU) noise floor;
5. prediction intervals: quantiles of the LOMO residuals (each row predicted by coefficients fitted
   without its model) per (family, GPU), (family, any GPU) and overall, so an interval reflects the
   error on a model the coefficients never saw. Their coverage is checked nested: a held-out model's
   rows against the quantiles of the other models' LOMO residuals.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from energylens.intervals import INTERVAL_LEVELS, interval_for, model_family
from energylens.moe.spec import Routing
from energylens.serving import (
    COEFFICIENT_NAMES,
    OVERHEAD_NAMES,
    CoefficientTable,
    ServingCoefficients,
    bias_balanced,
)
from energylens.validate import METRICS, apply, cost_groups, prepare_rows

QUANTILES = sorted({q for pair in INTERVAL_LEVELS.values() for q in pair})
UNITS = {"iteration_overhead_s": "s", "per_sequence_overhead_s": "s", "active_power_fraction": "1",
         "routing_skew": "1"}
MEANING = {
    "iteration_overhead_s": "host time per engine iteration not overlapped with GPU work (scheduling, input "
                            "preparation, output processing); the GPUs wait at idle power. A fitted B200 value well "
                            "above the measured excess at batch 8 (0.46 ms, as on H100) stands in for an excess that "
                            "flattens at large batch on B200 (tools/serving_excess.py part 4)",
    "per_sequence_overhead_s": "GPU time per running request per iteration that the kernel sum does not "
                               "describe, costed at the iteration's mean kernel power (measured while it runs: 480 W "
                               "per GPU on H100, 390-440 W on B200, far above idle: GPU work, not host time); "
                               "independent of context length, model size and vocabulary, and up to batch ~300 the "
                               "same absolute time on H100 and B200 (not paced by HBM or FLOP/s; tools/serving_excess.py)",
    "active_power_fraction": "static power of a busy GPU above its context-held idle power, as a fraction of "
                             "(power_limit - idle_power): clocks up and SMs issuing while memory-bound",
    "routing_skew": "Zipf exponent S of expert popularity used for mixture-of-experts models when no routing is "
                    "given (routing zipf:S; 0 = uniform): within an MoE layer the expert of popularity rank i gets a "
                    "share proportional to 1/i**S of the tokens, so a decode step hits fewer distinct experts (fewer "
                    "expert weights read) and, with expert parallelism, loads the busiest rank above the mean. A "
                    "trained router is skewed; plausible 0.5-1.5 (AIConfigurator's MoE kernel tables are measured "
                    "balanced and at power-law exponents 1.01 and 1.2)",
}
# routing skew (Zipf exponent) candidates: every MoE row is re-costed at each (the kernels change)
SKEW_GRID = tuple(round(0.1 * i, 1) for i in range(21))
X0_OVERHEADS = np.array([1e-3, 2e-5])
UPPER_OVERHEADS = np.array([0.05, 1e-3])
X0_FRACTION = 0.2
LOSS = dict(loss="soft_l1", f_scale=0.1)
LOSS_TEXT = "scipy least_squares, soft_l1 loss (f_scale 0.1) on log(pred/measured) of median ITL, average power " \
            "and energy per token; bounds overheads >= 0, fraction in [0, 1]"
METHOD = {
    "active_power_fraction": LOSS_TEXT + "; fitted jointly with the per-platform overheads (stage a)",
    "iteration_overhead_s": LOSS_TEXT + "; pooled over all GPU types with the fraction fixed (stage b)",
    "per_sequence_overhead_s": LOSS_TEXT + "; pooled over all GPU types with the fraction fixed (stage b)",
    "platform": LOSS_TEXT + "; fitted jointly with the shared active power fraction (stage a)",
    "routing_skew": LOSS_TEXT + "; profiled jointly with stage (a): the MoE rows are re-costed at each S of "
                    "0, 0.1, ..., 2.0 and stage (a) refitted; the S of least loss is kept",
}
SOURCE = "energylens/calibration/serving_fit.py"


def split_models(model_ids) -> tuple[list[str], list[str]]:
    """Sorted unique ids, alternately FIT (even positions) and TEST (odd positions)."""
    ids = sorted(set(model_ids))
    return ids[0::2], ids[1::2]


class ServingFit:
    """The development rows, costed once per routing skew; predictions for any coefficients; the fit."""

    def __init__(self, rows: list[dict], input_lens: dict[str, float] | None = None,
                 skews: tuple[float, ...] = SKEW_GRID) -> None:
        self.results, self.groups, self.context = prepare_rows(rows, input_lens)
        self.parts = cost_groups(self.results, self.groups, self.context)
        self._parts_by_skew = {0.0: self.parts}
        self.skews = tuple(skews)
        self.ok = [r for r in self.results if r.status == "ok"]
        self.fittable = [r for r in self.ok if not r.not_gpu_limited]  # rows the coefficients may be fitted on
        self.models = {}
        for key, idx in self.groups.items():
            for i in idx:
                self.models[i] = self.context[key][0]

    def parts_at(self, skew: float) -> dict:
        """Costed parts with the MoE groups routed by ``zipf:skew`` (cached; dense groups do not route, and a
        bias-balanced router stays uniform at every skew)."""
        skew = round(float(skew), 9)
        if skew not in self._parts_by_skew:
            moe = cost_groups(self.results, self.groups, self.context, routing=Routing.zipf(skew),
                              only=lambda m: model_family(m) == "moe" and not bias_balanced(m))
            self._parts_by_skew[skew] = {**self.parts, **moe}
        return self._parts_by_skew[skew]

    def predict(self, coeffs, intervals=None) -> None:
        skew = (coeffs.pooled if isinstance(coeffs, CoefficientTable) else coeffs).routing_skew
        apply(self.results, self.groups, self.parts_at(skew), coeffs, self.context, intervals=intervals or {})

    def residuals(self, coeffs, rows) -> np.ndarray:
        self.predict(coeffs)
        return np.array([np.log(r.predicted[m] / r.measured[m]) for r in rows for m in METRICS])

    def fit(self, rows, profile: dict | None = None) -> CoefficientTable:
        """Stage (a): shared fraction + per-platform overheads, at each routing skew of the grid (MoE rows
        only: without them the skew is 0, uniform), keeping the skew of the least loss; stage (b):
        pooled overheads, fraction and skew fixed. ``profile`` (a dict) receives the loss per skew."""
        from scipy.optimize import least_squares

        platforms = sorted({r.gpu for r in rows})
        n = len(platforms)
        x0 = np.concatenate([[X0_FRACTION], np.tile(X0_OVERHEADS, n)])
        upper = np.concatenate([[1.0], np.tile(UPPER_OVERHEADS, n)])

        def table(x, skew: float, pooled=(0.0, 0.0)) -> CoefficientTable:
            f = float(x[0])
            plat = {g: ServingCoefficients(float(x[1 + 2 * i]), float(x[2 + 2 * i]), f, source=SOURCE,
                                           routing_skew=skew) for i, g in enumerate(platforms)}
            return CoefficientTable(ServingCoefficients(*pooled, f, source=SOURCE, routing_skew=skew), plat)

        best = None
        for skew in (self.skews if any(r.family == "moe" for r in rows) else (0.0,)):
            sol = least_squares(lambda x, s=skew: self.residuals(table(x, s), rows), x0,
                                bounds=(np.zeros_like(x0), upper), x_scale=x0, **LOSS)
            if profile is not None:
                profile[float(skew)] = float(sol.cost)
            if best is None or sol.cost < best[0].cost:
                best = (sol, float(skew))
        sol, skew = best
        f = float(sol.x[0])
        pooled = least_squares(
            lambda x: self.residuals(ServingCoefficients(x[0], x[1], f, routing_skew=skew), rows), X0_OVERHEADS,
            bounds=(np.zeros(2), UPPER_OVERHEADS), x_scale=X0_OVERHEADS, **LOSS)
        return table(sol.x, skew, (float(pooled.x[0]), float(pooled.x[1])))

    def snapshot(self, rows) -> list:
        """Copies of ``rows`` with their current predictions (and model, for intervals)."""
        out = []
        for r in rows:
            s = replace(r, predicted=dict(r.predicted))
            s._model = self.models[r.index]
            out.append(s)
        return out


def flat(t: CoefficientTable) -> dict:
    """Plain numbers of a table (for printing and the YAML)."""
    return {"pooled": {n: getattr(t.pooled, n) for n in COEFFICIENT_NAMES},
            **{g: {n: getattr(c, n) for n in OVERHEAD_NAMES} for g, c in sorted(t.platforms.items())}}


def mape(rows) -> dict[str, float]:
    return {m: float(np.mean([abs(r.predicted[m] / r.measured[m] - 1) for r in rows])) if rows else float("nan")
            for m in METRICS}


# The pooled cell only: with 6-7 models per (family, GPU) cell, a cell's quantiles are a noisy estimate of
# the spread on a new model (leave-one-model-out coverage of the 80 % interval: 67-71 % per cell, 73-79 %
# pooled over all rows; tools/fit_serving.py prints it).
INTERVAL_CELLS = ("*/*",)


def quantile_table(rows, cells_kept=INTERVAL_CELLS) -> dict:
    """Residual quantiles of ``log(pred / measured)`` per cell: (family, GPU), (family, *) and (*, *),
    keeping the cells of ``cells_kept`` (``None``: all)."""
    cells: dict[str, list] = {}
    for r in rows:
        for key in (f"{r.family}/{r.gpu}", f"{r.family}/*", "*/*"):
            if cells_kept is None or key in cells_kept:
                cells.setdefault(key, []).append(r)
    out = {}
    for key, rs in sorted(cells.items()):
        out[key] = {}
        for m in METRICS:
            res = np.array([np.log(r.predicted[m] / r.measured[m]) for r in rs])
            out[key][m] = {"n": len(rs), "quantiles": {str(q): round(float(np.quantile(res, q)), 5) for q in QUANTILES}}
    return out


def covered(r, m: str, table: dict, level: float) -> bool | None:
    iv = interval_for(r._model, r.gpu, {m: r.predicted[m]}, level, table)
    if m not in iv:
        return None
    return iv[m]["low"] <= r.measured[m] <= iv[m]["high"]


def coverage(rows, table: dict) -> dict[str, dict[str, float | None]]:
    out = {}
    for lv in INTERVAL_LEVELS:
        out[str(lv)] = {}
        for m in METRICS:
            cov = [c for c in (covered(r, m, table, lv) for r in rows) if c is not None]
            out[str(lv)][m] = float(np.mean(cov)) if cov else None
    return out


def leave_one_model_out(fit: ServingFit) -> dict:
    """Refit without each model and predict it. Returns the held-out rows (snapshots), their MAPE, the
    coefficients per held-out model, the interval table of LOMO residuals, and its nested coverage."""
    rows, coeffs = [], {}
    for mid in sorted({r.row["model_id"] for r in fit.ok}):
        c = fit.fit([r for r in fit.fittable if r.row["model_id"] != mid])
        coeffs[mid] = flat(c)
        fit.predict(c)
        rows += fit.snapshot([r for r in fit.ok if r.row["model_id"] == mid])
    cells = quantile_table(rows)
    nested: list = []
    for mid in sorted({r.row["model_id"] for r in rows}):
        table = {"cells": quantile_table([r for r in rows if r.row["model_id"] != mid])}
        mine = [r for r in rows if r.row["model_id"] == mid]
        nested.append((mine, table))
    cov = {}
    for lv in INTERVAL_LEVELS:
        cov[str(lv)] = {}
        for m in METRICS:
            hits = [c for mine, table in nested for c in (covered(r, m, table, lv) for r in mine) if c is not None]
            cov[str(lv)][m] = float(np.mean(hits)) if hits else None
    return {"rows": rows, "mape": mape(rows), "coefficients": coeffs, "cells": cells, "coverage": cov}


def leave_one_group_out(fit: ServingFit, key) -> dict[str, dict[str, float]]:
    """MAPE of each group's rows under coefficients fitted on the other groups' rows (``key(row)``)."""
    out = {}
    for g in sorted({key(r) for r in fit.ok}):
        c = fit.fit([r for r in fit.fittable if key(r) != g])
        fit.predict(c.pooled if key is _gpu else c)
        out[g] = mape([r for r in fit.ok if key(r) == g])
    return out


def _gpu(r) -> str:
    return r.gpu


def _family(r) -> str:
    return r.family


def leave_one_family_out(fit: ServingFit) -> dict[str, dict[str, float]]:
    """Dense rows predicted by coefficients fitted on MoE rows only, and the reverse."""
    return leave_one_group_out(fit, _family)


def leave_one_platform_out(fit: ServingFit) -> dict[str, dict[str, float]]:
    """A GPU type with no data of its own: the pooled coefficients fitted on the other platforms' rows."""
    return leave_one_group_out(fit, _gpu)


def grouped_mape(rows, key) -> dict[str, dict]:
    groups: dict[str, list] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    return {k: {"n": len(v), **mape(v)} for k, v in sorted(groups.items())}


def noise_floor(fit: ServingFit, routing_skew: float = 0.0) -> list:
    """Rows predicted with the three power/time coefficients refitted per (model, GPU) on that cell's own
    GPU-paced rows (the rows the pacing screen flags are predicted, never fitted), at ``routing_skew`` (the
    shipped fit's, by :func:`run`): what this model form could reach with a per-model correction (never
    shipped). Returns snapshots of every row."""
    from scipy.optimize import least_squares

    x0 = np.append(X0_OVERHEADS, 0.4)
    upper = np.append(UPPER_OVERHEADS, 1.0)
    cells: dict[tuple, list] = {}
    for r in fit.ok:
        cells.setdefault((r.row["model_id"], r.gpu), []).append(r)
    out = []
    for rs in cells.values():
        paced = [r for r in rs if not r.not_gpu_limited] or rs
        sol = least_squares(
            lambda x, rs=paced: fit.residuals(ServingCoefficients(*x, routing_skew=routing_skew), rs), x0,
            bounds=(np.zeros(3), upper), x_scale=x0, **LOSS)
        fit.predict(ServingCoefficients(*sol.x, routing_skew=routing_skew))
        out += fit.snapshot(rs)
    return out


def worst_rows(rows, n: int = 10) -> list:
    """The ``n`` rows with the largest mean absolute log error over the three metrics."""
    def err(r):
        return float(np.mean([abs(np.log(r.predicted[m] / r.measured[m])) for m in METRICS]))

    return sorted(rows, key=err, reverse=True)[:n]


def _pct(d: dict) -> dict:
    return {k: round(100 * v, 2) if v is not None else None for k, v in d.items()}


def run(rows: list[dict], *, data_name: str, floor: bool = False, input_lens: dict[str, float] | None = None,
        skews: tuple[float, ...] = SKEW_GRID) -> dict:
    """Everything ``tools/fit_serving.py`` prints and writes: the fit on the FIT half, the held-out checks
    and the two YAML documents (``serving_coefficients.yaml``, ``serving_intervals.yaml``). ``skews``:
    the routing-skew candidates (the default grid; tests pass a short one)."""
    import datetime as _dt

    fit = ServingFit(rows, input_lens, skews)
    fit_ids, test_ids = split_models(r["model_id"] for r in rows)
    fit_rows = [r for r in fit.ok if r.row["model_id"] in fit_ids]
    test_rows = [r for r in fit.ok if r.row["model_id"] in test_ids]
    fit_used = [r for r in fit_rows if not r.not_gpu_limited]
    screened = [r for r in fit.ok if r.not_gpu_limited]
    fit.predict(ServingCoefficients())
    base = {"fit": mape(fit_rows), "test": mape(test_rows), "all": mape(fit.ok)}
    profile: dict[float, float] = {}
    coeffs = fit.fit(fit_used, profile)
    fit.predict(coeffs)
    split = {"fit": mape(fit_rows), "test": mape(test_rows), "all": mape(fit.ok), "all_gpu_paced": mape(fit.fittable)}
    shipped = fit.snapshot(fit.ok)
    fit.predict(coeffs.pooled)
    split["all_pooled_only"] = mape(fit.ok)
    split["test_pooled_only"] = mape(test_rows)
    lopo = leave_one_platform_out(fit)
    lofo = leave_one_family_out(fit)
    lomo = leave_one_model_out(fit)
    out = {"fit": fit, "coefficients": coeffs, "fit_ids": fit_ids, "test_ids": test_ids, "screened": screened,
           "counts": (len(rows), len(fit.ok), len(fit_rows), len(test_rows)), "base": base, "split": split,
           "lopo": lopo, "lofo": lofo, "lomo": lomo, "shipped_rows": shipped, "skew_profile": profile,
           "lomo_by_family": grouped_mape(lomo["rows"], _family), "lomo_by_gpu": grouped_mape(lomo["rows"], _gpu),
           "lomo_by_family_gpu": grouped_mape(lomo["rows"], lambda r: f"{r.family}/{r.gpu}"),
           "worst_lomo": worst_rows(lomo["rows"])}
    paced = [r for r in lomo["rows"] if not r.not_gpu_limited]  # the same held-out predictions, screened rows out
    out["lomo_gpu_paced"] = {"all": {**mape(paced), "n": len(paced)}, **grouped_mape(paced, _gpu)}
    if floor:
        out["floor"] = noise_floor(fit, coeffs.pooled.routing_skew)
    fit.predict(coeffs)
    insample = coverage(fit.snapshot(fit.ok), {"cells": lomo["cells"]})["0.8"]
    out["insample_coverage_80"] = insample
    today = _dt.date.today().isoformat()
    fitted_on = (f"{data_name}: FIT half = rows of models {', '.join(fit_ids)} ({len(fit_used)} supported rows that "
                 "pass the GPU-pacing screen), all GPU types")
    out["coefficient_doc"] = {
        "schema_version": 1,
        "written_by": "tools/fit_serving.py (energylens/calibration/serving_fit.py)",
        "date": today,
        "note": "Serving coefficients: the same for every model (no per-model correction exists). The two "
                "overheads describe the serving platform, so each GPU type with development data has its own "
                "pair (platforms:); every other GPU uses the pooled pair (coefficients:). The active power "
                "fraction is shared. Re-run the tool to refit (it also rewrites serving_intervals.yaml).",
        "coefficients": {
            n: {"value": float(f"{getattr(coeffs.pooled, n):.6g}"), "unit": UNITS[n], "kind": "fitted",
                "meaning": MEANING[n], "fitted_on": fitted_on, "method": METHOD[n]}
            for n in COEFFICIENT_NAMES
        },
        "platforms": {
            g: {n: {"value": float(f"{getattr(c, n):.6g}"), "unit": UNITS[n], "kind": "fitted", "meaning": MEANING[n],
                    "fitted_on": f"{data_name}: FIT-half rows on {g} ({len([r for r in fit_used if r.gpu == g])} rows)",
                    "method": METHOD["platform"]}
                for n in OVERHEAD_NAMES}
            for g, c in sorted(coeffs.platforms.items())
        },
        "split": {"rule": "sorted model ids of the file, alternately FIT / TEST", "fit_models": fit_ids,
                  "test_models": test_ids},
        "not_gpu_paced": {
            "rule": "energylens.validate.not_gpu_limited: a run slower (median ITL) than the same model/task/"
                    "precision/expert- and data-parallel/max_num_seqs run on another GPU type, at no more than 5 % "
                    "more running requests, where its deployment is at least as fast on the datasheet: a GPU at "
                    "least as fast (HBM bandwidth and bf16 FLOP/s), no more GPUs, no more tensor parallelism, and "
                    "at least the other's total bandwidth and FLOP/s; model-free (measured columns and datasheet "
                    "numbers only)",
            "use": "left out of every fit (FIT half and leave-one-model-out); predicted and scored in every MAPE",
            "rows": [{"row": r.index, "model_id": r.row["model_id"], "task": r.row["task"],
                      "gpu": r.row["gpu_model"], "max_num_seqs": r.row["max_num_seqs"], "reason": r.not_gpu_limited}
                     for r in screened],
        },
        "mape_percent": {
            "no_coefficients": {k: _pct(v) for k, v in base.items()},
            "fitted_on_fit_half": {k: _pct(v) for k, v in split.items()},
            "leave_one_model_out": _pct(lomo["mape"]),
            "leave_one_model_out_by_family": {k: _pct({m: v[m] for m in METRICS}) for k, v in
                                              out["lomo_by_family"].items()},
            "leave_one_model_out_by_gpu": {k: _pct({m: v[m] for m in METRICS}) for k, v in out["lomo_by_gpu"].items()},
            "leave_one_model_out_gpu_paced_rows": {k: _pct({m: v[m] for m in METRICS}) for k, v in
                                                   out["lomo_gpu_paced"].items()},
            "leave_one_family_out": {g: _pct(v) for g, v in lofo.items()},
            "leave_one_platform_out": {g: _pct(v) for g, v in lopo.items()},
        },
        "leave_one_model_out_coefficients": lomo["coefficients"],
    }
    out["interval_doc"] = {
        "schema_version": 1,
        "written_by": "tools/fit_serving.py (energylens/calibration/serving_fit.py)",
        "date": today,
        "residual": "log(predicted / measured) of each supported row of " + data_name + " predicted by coefficients "
                    "fitted without its model (leave-one-model-out residuals: the error on a model never seen)",
        "interval": "measured in [pred * exp(-q_hi), pred * exp(-q_lo)]; level 0.8 uses q0.1/q0.9, 0.5 uses "
                    "q0.25/q0.75, 0.9 uses q0.05/q0.95; one pooled cell (*/*): per-(family, GPU) cells of 6-7 "
                    "models covered only 67-71 % of a held-out model's rows at the 80 % level",
        "in_sample_coverage_80": {k: round(v, 3) for k, v in insample.items()},
        "leave_one_model_out": {"coverage": lomo["coverage"], "mape_percent": _pct(lomo["mape"]),
                                "rows": len(lomo["rows"]),
                                "how": "coefficients refitted without the model; its rows scored against quantiles "
                                       "of the other models' leave-one-model-out residuals (nested)"},
        "cells": lomo["cells"],
    }
    return out
