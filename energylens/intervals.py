"""How sure a prediction is: 80 % (or 50 / 90 %) intervals from measured/predicted residuals.

Two interval services, both read from shipped data (never computed from the prediction itself):

* :func:`interval_for` — serving figures (``serve``): per (architecture family, GPU, metric) the
  quantiles of ``log(predicted / measured)`` on the development serving runs
  (``energylens/data/validation/serving_intervals.yaml``, written by ``tools/fit_serving.py``);
* :func:`runtime_interval` — static-batch ``predict`` totals: measured/predicted ratios of public
  vLLM static batches (``energylens/data/validation/static_batch_ratios.yaml``).

A prediction module imports this one; this module imports no prediction and no validator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import cache, lru_cache

from energylens.datafiles import data_path, safe_load
from energylens.errors import SpecError

INTERVAL_LEVELS = {0.5: (0.25, 0.75), 0.8: (0.1, 0.9), 0.9: (0.05, 0.95)}
MIN_ROWS_PER_CELL = 8


@cache
def load_intervals() -> dict:
    path = data_path("validation", "serving_intervals.yaml")
    if not path.is_file():
        return {}
    return safe_load(path.read_text()) or {}


def model_family(model) -> str:
    """Architecture class used to pool residuals: ``dense``, ``moe`` or ``hybrid``."""
    arch = str(model.info.get("architecture", "")).lower() if model.info else ""
    if "moe" in arch or "e" in model.dims:
        return "moe"
    if "hybrid" in arch or "mamba" in arch:
        return "hybrid"
    return "dense"


def _cell(intervals: Mapping, family: str, gpu: str, metric: str) -> tuple[dict | None, str]:
    cells = intervals.get("cells") or {}
    for key in (f"{family}/{gpu}", f"{family}/*", "*/*"):
        entry = (cells.get(key) or {}).get(metric)
        if entry and entry.get("n", 0) >= MIN_ROWS_PER_CELL:
            return entry, key
    return None, ""


def factors(family: str, gpu_key: str, metric: str, level: float = 0.8,
            intervals: Mapping | None = None) -> tuple[float, float, str] | None:
    """``(low, high, basis)``: the multiplicative 80 % (or 50 / 90 %) range of ``metric`` for a model
    family on a GPU (``measured in [pred x low, pred x high]``), or ``None`` without a residual cell."""
    table = load_intervals() if intervals is None else intervals
    entry, key = _cell(table, family, gpu_key, metric) if table else (None, "")
    if entry is None:
        return None
    lo_q, hi_q = INTERVAL_LEVELS[level]
    q = entry["quantiles"]
    return (math.exp(-float(q[str(hi_q)])), math.exp(-float(q[str(lo_q)])),
            f"residual quantiles of {key} ({entry['n']} dev rows)")


def interval_for(model, gpu_key: str, values: Mapping[str, float], level: float = 0.8,
                 intervals: Mapping | None = None) -> dict:
    """``{metric: {low, high, level, basis}}`` around each predicted value; empty when no residual
    table is shipped. ``level`` is one of 0.5, 0.8, 0.9."""
    from energylens.checks import choice

    choice("interval_level", level, INTERVAL_LEVELS, error=SpecError)  # never hashes an array
    table = load_intervals() if intervals is None else intervals
    if not table:
        return {}
    family = model_family(model)
    out = {}
    for metric, value in values.items():
        f = factors(family, gpu_key, metric, level, table)
        if f is not None:
            out[metric] = {"low": value * f[0], "high": value * f[1], "level": level, "basis": f[2]}
    return out


@lru_cache(maxsize=1)
def _static_batch_ratios() -> dict:
    path = data_path("validation", "static_batch_ratios.yaml")
    return safe_load(path.read_text()) if path.is_file() else {}


@lru_cache(maxsize=4)
def _median_ratio(key: str) -> float:
    fig = (_static_batch_ratios().get("figures") or {})[key.removeprefix("total_")]
    ratios = [float(r) for r in fig.get("ratios") or []]
    if not ratios:
        return (float(fig["q10"]) + float(fig["q90"])) / 2.0
    # The median, as np.median computes it, without np.median's first-call import of numpy.ma (cold start).
    ordered, mid = sorted(ratios), len(ratios) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


def runtime_interval(energy_j: float, latency_s: float) -> dict:
    """How sure: the range a real serving stack measured around this per-op prediction.

    ``predict`` models the kernels and collectives; a serving engine adds host time, sampling and
    busier clocks. Against public vLLM static-batch measurements (``tools/compare_public.py --write``,
    ``energylens/data/validation/static_batch_ratios.yaml``) the measured/predicted ratios give an 80 %
    interval for what such a run would measure, around ``estimate`` (the prediction times the median ratio),
    so the interval always contains its own estimate; the per-op figure itself (kernels only) is below it.
    For serving-level numbers use ``energylens serve``."""
    data = _static_batch_ratios()
    out: dict = {}
    for key, value in (("total_energy_j", energy_j), ("total_latency_s", latency_s)):
        fig = (data.get("figures") or {}).get(key.removeprefix("total_"))
        if not fig:
            continue
        mid = _median_ratio(key)
        out[key] = {"estimate": value * mid, "low": value * float(fig["q10"]), "high": value * float(fig["q90"]),
                    "level": float(data.get("level", 0.8)),
                    "basis": f"measured/predicted of {fig['n']} vLLM static-batch runs (LLM-Inference-Bench): "
                             f"estimate = the per-op figure x the median ratio {mid:.3g}; the per-op figure "
                             "(kernels only, no serving runtime) lies below the interval"}
    return out
