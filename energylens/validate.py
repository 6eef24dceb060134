"""Validation of the serving model against measured serving runs (ML.ENERGY column format).

``validate_csv(path)`` reads a CSV with the ML.ENERGY Benchmark v3 columns (see
``energylens/data/validation/mlenergy-v3/SOURCE.md``), predicts every row with
:func:`energylens.serving.serve_arrays` (rows of the same model, GPU, layout and precision are
costed in one vectorised call) and compares:

=============================  ===========================  =========
prediction                     measured column              unit
=============================  ===========================  =========
``decode_step_latency_s``      ``median_itl_ms``            ms -> s
``avg_power_w``                ``avg_power_watts``          W
``energy_per_output_token_j``  ``energy_per_token_joules``  J
=============================  ===========================  =========

Prompt lengths are not in the data: each task's mean prompt length comes from the documented
assumption table ``energylens/data/validation/assumptions.yaml``. A row whose model is unknown,
whose architecture has no builder yet, whose task has no assumption or whose layout is invalid is
reported as skipped with the reason, never dropped.

Prediction intervals: for each (architecture family, GPU, metric) the quantiles of the residual
``log(predicted / measured)`` on the development data (``serving_intervals.yaml``, written by
``tools/fit_serving.py``) turn a prediction into an interval ``[pred * exp(-q_hi), pred *
exp(-q_lo)]``. ``validate`` reports how often the measured value falls inside: on the development
data that coverage is in-sample; the honest, leave-one-model-out coverage is stored next to the
quantiles and printed as well.

GPU-pacing screen (:func:`not_gpu_limited`): a run that is slower on a GPU that is at least as fast on
the datasheet than another GPU's run of the same configuration is marked ``not_gpu_limited`` (with the
reason). It is still predicted and scored; ``tools/fit_serving.py`` leaves it out of the coefficient
fit, and the overall table shows the MAPE with and without such rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from energylens.errors import EnergyLensError, SpecError, UnknownNameError, UnsupportedModelError
from energylens.intervals import (
    interval_for,
    load_intervals,
    model_family,
)
from energylens.serving import (
    CoefficientTable,
    ServingCoefficients,
    bias_balanced,
    data_file,
    load_coefficient_table,
    resolve_coefficients,
    resolve_layout,
    serving_parts,
)

# predicted field -> (measured column, factor turning the column into the field's unit)
METRICS: dict[str, tuple[str, float]] = {
    "decode_step_latency_s": ("median_itl_ms", 1e-3),
    "avg_power_w": ("avg_power_watts", 1.0),
    "energy_per_output_token_j": ("energy_per_token_joules", 1.0),
}
SHORT = {"decode_step_latency_s": "ITL", "avg_power_w": "power", "energy_per_output_token_j": "energy/token"}
ID_COLUMNS = ("model_id", "task", "gpu_model", "num_gpus", "tensor_parallel", "expert_parallel", "data_parallel",
              "weight_precision", "max_num_seqs", "avg_batch_size", "avg_output_len")
REQUIRED_COLUMNS = ID_COLUMNS + tuple(col for col, _ in METRICS.values())
# weight_precision column -> the weight format a row's deployment ran (checkpoint formats are read by the
# model registry; a row whose precision differs from the checkpoint's converts its weights, --weight-dtype style)
PRECISIONS = {"bfloat16": "bf16", "bf16": "bf16", "float16": "fp16", "fp16": "fp16", "fp8": "fp8", "mxfp4": "mxfp4",
              "nvfp4": "nvfp4", "int4": "int4", "int8": "int8"}


def shipped_dev_csv() -> Path:
    """The shipped development subset of ML.ENERGY v3 (287 rows)."""
    return Path(str(data_file("mlenergy-v3/dev.csv")))


@cache
def load_assumptions() -> dict:
    """The task table of ``assumptions.yaml``: task -> {input_len, source, ...}."""
    import yaml

    data = yaml.safe_load(data_file("assumptions.yaml").read_text()) or {}
    tasks = data.get("tasks") or {}
    for task, entry in tasks.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("input_len"), (int, float)) \
                or entry["input_len"] <= 0 or not entry.get("source"):
            raise SpecError(f"assumptions.yaml: tasks.{task}", entry, "{input_len: <positive number>, source: ...}")
    return dict(tasks)


@dataclass
class RowResult:
    index: int  # 0-based data row of the CSV
    row: dict  # identifying columns
    status: str  # "ok" | "skipped"
    reason: str = ""
    family: str = ""
    gpu: str = ""
    parallelism: str = ""
    input_len: float = 0.0
    predicted: dict = field(default_factory=dict)
    measured: dict = field(default_factory=dict)
    interval: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    not_gpu_limited: str = ""  # reason when the run fails the GPU-pacing screen (excluded from the fit)

    def error(self, metric: str) -> float:
        """Signed relative error (predicted / measured - 1)."""
        return self.predicted[metric] / self.measured[metric] - 1.0

    def covered(self, metric: str) -> bool | None:
        iv = self.interval.get(metric)
        if not iv:
            return None
        return iv["low"] <= self.measured[metric] <= iv["high"]

    def to_dict(self) -> dict:
        d = {"row": self.index, **self.row, "status": self.status}
        if self.status != "ok":
            d["reason"] = self.reason
            return d
        d.update({"family": self.family, "gpu": self.gpu, "parallelism": self.parallelism,
                  "assumed_input_len": self.input_len})
        for metric in METRICS:
            d[f"predicted_{metric}"] = self.predicted[metric]
            d[f"measured_{metric}"] = self.measured[metric]
            d[f"error_{metric}"] = self.error(metric)
            iv = self.interval.get(metric)
            if iv:
                d[f"interval_{metric}"] = [iv["low"], iv["high"]]
                d[f"covered_{metric}"] = self.covered(metric)
        if self.notes:
            d["notes"] = list(self.notes)
        if self.not_gpu_limited:
            d["not_gpu_limited"] = self.not_gpu_limited
        return d


@dataclass
class Validation:
    rows: list[RowResult]
    coefficients: ServingCoefficients | CoefficientTable
    interval_level: float
    source: str

    @property
    def ok(self) -> list[RowResult]:
        return [r for r in self.rows if r.status == "ok"]

    @property
    def skipped(self) -> list[RowResult]:
        return [r for r in self.rows if r.status != "ok"]

    def mape(self, rows: Iterable[RowResult] | None = None) -> dict[str, float]:
        rows = list(self.ok if rows is None else rows)
        out = {}
        for m in METRICS:
            errs = [abs(r.error(m)) for r in rows]
            out[m] = float(np.mean(errs)) if errs else float("nan")
        return out

    def coverage(self, rows: Iterable[RowResult] | None = None) -> dict[str, float]:
        rows = list(self.ok if rows is None else rows)
        out = {}
        for m in METRICS:
            cov = [r.covered(m) for r in rows if r.covered(m) is not None]
            out[m] = float(np.mean(cov)) if cov else float("nan")
        return out

    def groups(self, key) -> dict[str, list[RowResult]]:
        out: dict[str, list[RowResult]] = {}
        for r in self.ok:
            out.setdefault(key(r), []).append(r)
        return dict(sorted(out.items()))

    def tables(self) -> dict[str, dict[str, dict]]:
        """MAPE and coverage per group, like the paper's tables."""
        keys = {
            "model × GPU × parallelism": lambda r: f"{r.row['model_id']} · {r.row['gpu_model']} · {r.parallelism}",
            "model": lambda r: r.row["model_id"],
            "GPU": lambda r: r.row["gpu_model"],
            "parallelism": lambda r: r.parallelism,
            "family × GPU": lambda r: f"{r.family} · {r.row['gpu_model']}",
            "task": lambda r: r.row["task"],
        }
        out = {}
        for title, key in keys.items():
            out[title] = {name: {"n": len(rows), "mape": self.mape(rows), "coverage": self.coverage(rows)}
                          for name, rows in self.groups(key).items()}
        out["overall"] = {"all": {"n": len(self.ok), "mape": self.mape(), "coverage": self.coverage()}}
        paced = [r for r in self.ok if not r.not_gpu_limited]
        if len(paced) < len(self.ok):
            out["overall"]["GPU-paced rows (pass the not_gpu_limited screen)"] = {
                "n": len(paced), "mape": self.mape(paced), "coverage": self.coverage(paced)}
        return out

    def worst(self, n: int = 10, metric: str = "energy_per_output_token_j") -> list[RowResult]:
        return sorted(self.ok, key=lambda r: -abs(r.error(metric)))[:n]

    def to_dict(self) -> dict:
        iv = load_intervals()
        return {
            "source": self.source,
            "coefficients": self.coefficients.to_dict(),
            "interval_level": self.interval_level,
            "rows_total": len(self.rows),
            "rows_predicted": len(self.ok),
            "rows_skipped": len(self.skipped),
            "tables": self.tables(),
            "leave_one_model_out": iv.get("leave_one_model_out", {}),
            "rows": [r.to_dict() for r in self.rows],
        }


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a CSV in the ML.ENERGY column format; missing columns raise ``SpecError``."""
    from energylens.checks import read_csv_rows

    return read_csv_rows(path, REQUIRED_COLUMNS, "ML.ENERGY column format")


def _parallelism(num_gpus: int, tp: int, ep: int, dp: int) -> str:
    if num_gpus == 1:
        return "1 GPU"
    parts = [f"{name}{v}" for name, v in (("TP", tp), ("EP", ep), ("DP", dp)) if v > 1]
    return " ".join(parts) or f"{num_gpus} GPUs"


def _number(row: dict, col: str, *, integer: bool = False) -> float:
    raw = row.get(col, "")
    try:
        v = float(raw)
    except (TypeError, ValueError):
        raise SpecError(col, raw, "a number") from None
    if not math.isfinite(v) or v <= 0:
        raise SpecError(col, raw, "a positive finite number")
    if integer and v != int(v):
        raise SpecError(col, raw, "a positive integer")
    return v


def load_model_offline(model_id: str):
    """(model, None) or (None, the reason a validation row is skipped). Offline: the Hugging Face Hub is not
    asked, so validation does not depend on the network. Shared by the ML.ENERGY and silicon readers."""
    from energylens.models.registry import load_model

    try:
        return load_model(model_id, hub=False), None
    except UnsupportedModelError as exc:
        return None, f"architecture not supported ({exc.value}): {exc.allowed.removeprefix('not supported: ')}"
    except UnknownNameError:
        return None, f"unknown model {model_id!r}: no shipped config.json (and none can be fetched offline)"
    except SpecError as exc:
        if exc.field.endswith("model_type"):
            return None, f"architecture not yet supported (model_type {exc.value!r} has no builder)"
        return None, f"model config not usable: {exc}"


def _load_row_model(model_id: str, precision: str):
    """(model with the row's weight precision, None) or (None, skip reason)."""
    p = precision.strip().lower()
    if p not in PRECISIONS:
        return None, f"unknown weight_precision {precision!r} (known: {', '.join(PRECISIONS)})"
    model, why = load_model_offline(model_id)
    if model is None:
        return None, why
    if model.weight_dtype == PRECISIONS[p]:
        return model, None
    return model.with_dtypes(weight_dtype=PRECISIONS[p]), None


SCREEN_KEY = ("model_id", "task", "weight_precision", "expert_parallel", "data_parallel", "max_num_seqs")
SCREEN_BATCH_TOLERANCE = 1.05  # the faster GPU's run may hold at most 5 % more running requests


def not_gpu_limited(rows: list[dict]) -> dict[int, str]:
    """Rows whose measured run was demonstrably not paced by the GPU (a model-free consistency screen).

    Two runs of the same model, task, precision, expert and data parallelism and ``max_num_seqs`` on different
    GPUs, where run A's deployment is at least as fast as run B's: A's GPU is at least as fast as B's on both
    datasheet figures that pace inference (HBM bandwidth and dense bf16 tensor FLOP/s) and faster on one,
    A uses no more GPUs and no more tensor parallelism (no more communication per step), and A's GPUs together
    have at least B's total bandwidth and FLOP/s (the same number of GPUs: always; one B200 against two H100s
    at TP 2: 8.0 vs 6.7 TB/s, 2.25 vs 1.98 PFLOP/s). If A's run shows a longer median inter-token latency at
    (nearly) the same running batch, its iteration time is set by something other than the GPU (host,
    software stack), which no GPU cost model describes. The row is returned (index -> reason).
    ``tools/fit_serving.py`` leaves such rows out of the coefficient fit; validation still predicts and
    scores them. Uses only measured columns and GPU datasheet numbers, never a prediction."""
    from energylens.hardware.profile import load_gpu

    speed: dict[str, tuple[float, float] | None] = {}
    cells: dict[tuple, list[tuple[int, str, float, float, float, float]]] = {}
    for i, row in enumerate(rows):
        name = str(row.get("gpu_model", ""))
        if name not in speed:
            try:
                g = load_gpu(name)
                speed[name] = (g.hbm_bandwidth_bytes_per_s, g.peak_flops("bf16"))
            except EnergyLensError:
                speed[name] = None
        try:
            itl = _number(row, "median_itl_ms")
            batch = _number(row, "avg_batch_size")
            n_gpus = _number(row, "num_gpus")
            tp = _number(row, "tensor_parallel")
        except SpecError:
            continue
        if speed[name] is None:
            continue
        cells.setdefault(tuple(str(row.get(c, "")).strip() for c in SCREEN_KEY), []).append(
            (i, name, itl, batch, n_gpus, tp))
    out: dict[int, str] = {}
    for runs in cells.values():
        for i, gpu_a, itl_a, b_a, n_a, tp_a in runs:
            sa = speed[gpu_a]
            for _, gpu_b, itl_b, b_b, n_b, tp_b in runs:
                sb = speed[gpu_b]
                faster = sa[0] >= sb[0] and sa[1] >= sb[1] and (sa[0] > sb[0] or sa[1] > sb[1])
                no_bigger = n_a <= n_b and tp_a <= tp_b and n_a * sa[0] >= n_b * sb[0] and n_a * sa[1] >= n_b * sb[1]
                if faster and no_bigger and itl_a > itl_b and b_a <= SCREEN_BATCH_TOLERANCE * b_b:
                    where = "the same layout" if (n_a, tp_a) == (n_b, tp_b) else \
                        f"{n_a:g} x {gpu_a} at TP {tp_a:g} against {n_b:g} x {gpu_b} at TP {tp_b:g}"
                    out[i] = (f"median ITL {itl_a:.1f} ms on {gpu_a} exceeds {itl_b:.1f} ms on the slower {gpu_b} "
                              f"(same model, task and max_num_seqs; {where}): not paced by the GPU")
                    break
    return out


def prepare_rows(rows: list[dict], input_lens: dict[str, float] | None = None
                 ) -> tuple[list[RowResult], dict[tuple, list[int]], dict]:
    """Resolve each row (model, GPU, layout, prompt length) or mark it skipped; group the rest.
    ``input_lens`` (task -> tokens) overrides the assumption table (sensitivity checks)."""
    from energylens.hardware.profile import load_gpu

    assumptions = {k: dict(v) for k, v in load_assumptions().items()}
    for task, n in (input_lens or {}).items():
        assumptions.setdefault(task, {})["input_len"] = float(n)
    results: list[RowResult] = []
    groups: dict[tuple, list[int]] = {}
    context: dict[tuple, tuple] = {}
    for i, row in enumerate(rows):
        ident = {c: row.get(c, "") for c in ID_COLUMNS}
        res = RowResult(i, ident, "skipped")
        results.append(res)
        try:
            num_gpus, tp, ep, dp = (int(_number(row, c, integer=True)) for c in
                                    ("num_gpus", "tensor_parallel", "expert_parallel", "data_parallel"))
            batch = _number(row, "avg_batch_size")
            out_len = _number(row, "avg_output_len")
            measured = {m: _number(row, col) * f for m, (col, f) in METRICS.items()}
        except SpecError as exc:
            res.reason = f"bad value: {exc}"
            continue
        task = row.get("task", "")
        if task not in assumptions:
            res.reason = f"no prompt-length assumption for task {task!r} (assumptions.yaml lists " \
                         + ", ".join(sorted(assumptions)) + ")"
            continue
        try:
            gpu = load_gpu(row.get("gpu_model", ""))
        except EnergyLensError as exc:
            res.reason = f"unknown GPU: {exc}"
            continue
        model, why = _load_row_model(row.get("model_id", ""), row.get("weight_precision", ""))
        if model is None:
            res.reason = why
            continue
        try:
            gpu.peak_flops(model.act_dtype)
            layout, notes = resolve_layout(model, num_gpus=num_gpus, tp=tp, ep=ep, dp=dp, pp=1)
        except EnergyLensError as exc:
            res.reason = f"invalid layout or precision: {exc}"
            continue
        if batch < dp:
            res.reason = f"avg_batch_size {batch} below data_parallel {dp}"
            continue
        res.status = "ok"
        res.family = model_family(model)
        res.gpu = gpu.key
        res.parallelism = _parallelism(num_gpus, tp, ep, dp)
        res.input_len = float(assumptions[task]["input_len"])
        res.measured = measured
        res.notes = notes
        key = (row["model_id"], row["weight_precision"], gpu.key, layout.tp, layout.ep, layout.dp)
        groups.setdefault(key, []).append(i)
        context[key] = (model, gpu, layout)
        res.row["_batch"] = batch  # internal, removed below
        res.row["_out"] = out_len
    for i, reason in not_gpu_limited(rows).items():
        if results[i].status == "ok":
            results[i].not_gpu_limited = reason
    return results, groups, context


def cost_groups(results: list[RowResult], groups: dict, context: dict, progress=None, routing=None,
                only=None) -> dict[tuple, object]:
    """``ServingParts`` per group (the coefficient-free, expensive part), vectorised per group, with MoE
    ``routing`` (None: uniform; a bias-balanced router is always uniform, :func:`energylens.serving.bias_balanced`);
    ``only(model)`` picks the groups to cost (default all)."""
    parts = {}
    for key, idx in groups.items():
        model, gpu, layout = context[key]
        if only is not None and not only(model):
            continue
        b = np.array([results[i].row["_batch"] for i in idx])
        o = np.array([results[i].row["_out"] for i in idx])
        p = np.array([results[i].input_len for i in idx])
        parts[key] = serving_parts(model, gpu, layout, b, p, o, routing=None if bias_balanced(model) else routing)
        if progress:
            progress(len(idx))
    return parts


def apply(results: list[RowResult], groups: dict, parts: dict, coefficients: ServingCoefficients | CoefficientTable,
          context: dict, *, level: float = 0.8, intervals: Mapping | None = None) -> None:
    """Fill each row's predictions (and intervals) from the costed parts and the coefficients."""
    from energylens.serving import combine

    for key, idx in groups.items():
        model, gpu, _ = context[key]
        arr = combine(parts[key], resolve_coefficients(coefficients, gpu.key))
        for j, i in enumerate(idx):
            r = results[i]
            r.predicted = {m: float(np.asarray(getattr(arr, m)).reshape(-1)[j]) for m in METRICS}
            r.interval = interval_for(model, gpu.key, r.predicted, level, intervals)


def validate_rows(rows: list[dict], *, coefficients: ServingCoefficients | CoefficientTable | None = None, level: float = 0.8,
                  source: str = "", progress=None) -> Validation:
    coeffs = coefficients or load_coefficient_table()
    results, groups, context = prepare_rows(rows)
    parts = cost_groups(results, groups, context, progress, routing=resolve_coefficients(coeffs, None).routing())
    apply(results, groups, parts, coeffs, context, level=level)
    for r in results:
        r.row.pop("_batch", None)
        r.row.pop("_out", None)
    return Validation(results, coeffs, level, source)


def validate_csv(path: str | Path, *, coefficients: ServingCoefficients | CoefficientTable | None = None, level: float = 0.8,
                 progress=None) -> Validation:
    """Predict every row of an ML.ENERGY-format CSV and compare with its measurements."""
    return validate_rows(read_rows(path), coefficients=coefficients, level=level, source=str(path),
                         progress=progress)
