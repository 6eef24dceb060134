"""Validation against end-to-end closed-loop serving runs in the AIConfigurator silicon column format.

``validate_silicon_csv(path)`` reads a CSV with NVIDIA AIConfigurator's silicon columns (``isl``,
``osl``, ``batch_size`` = concurrency, ``tp_size``, ``pp_size``, ``attention_dp_size``, ``moe_tp_size``,
``moe_ep_size``, ``precision``, ``system``, ``model_path``, ``mode``, ``silicon_ttft_ms``,
``silicon_tpot_ms``; see ``shared/reference/aiconfigurator/SOURCE.md``), predicts every row with
:func:`energylens.serving_load.serve_closed_loop_arrays` (the benchmark: ``batch_size`` clients with
prompts of exactly ``isl`` and outputs of exactly ``osl`` tokens; rows of the same model, GPU, precision
and layout in one vectorised call) and compares mean TTFT and TPOT. A run is finite: its clients start
together (the first wave) and then reach the synchronised steady state (:mod:`energylens.closed_loop`); the runs do not record
how many requests they sent, so ``requests_per_client`` (requests per run = that x ``batch_size``) is
an assumption of ``energylens/data/validation/assumptions.yaml`` (``silicon``, with its source),
overridable (``requests_per_client=inf``: the steady state alone; ``num_requests``: the same number
for every row, at least ``batch_size``).

Layout: vLLM runs ``tp_size x pp_size x attention_dp_size`` GPUs; attention is tensor-parallel over
``tp_size`` inside each of ``attention_dp_size`` replicas; the experts are sharded ``moe_ep_size``
ways (expert parallel) and ``moe_tp_size`` ways (tensor parallel inside an expert), so the layout is
``tp = tp_size, pp = pp_size, dp = attention_dp_size, ep = moe_ep_size``. Rows that cannot be predicted
are reported as skipped with the reason: disaggregated runs, GPUs without a profile, models without a
shipped config, weight formats the builders do not model, and deployments that do not fit in memory.
The silicon data is validation data: nothing is ever fitted on it.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from energylens.errors import EnergyLensError, SpecError

COLUMNS = ("model_path", "system", "precision", "mode", "isl", "osl", "batch_size", "tp_size", "pp_size",
           "attention_dp_size", "moe_tp_size", "moe_ep_size", "silicon_ttft_ms", "silicon_tpot_ms")
ID_COLUMNS = ("id", "model_path", "system", "precision", "mode", "isl", "osl", "batch_size", "tp_size", "pp_size",
              "attention_dp_size", "moe_tp_size", "moe_ep_size")
METRICS = {"ttft_s": "silicon_ttft_ms", "tpot_s": "silicon_tpot_ms"}
SHORT = {"ttft_s": "TTFT", "tpot_s": "TPOT"}
SYSTEMS = {"h100_sxm": "h100-sxm", "h200_sxm": "h200", "b200_sxm": "b200", "a100_sxm": "a100-sxm-80gb",
           "l40s": "l40s"}
# silicon precision -> weight dtype energylens builds; "native" keeps the builder's own checkpoint format
PRECISIONS = {"bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16"}  # served unquantised: weights converted
# quantised precisions: the checkpoint formats that satisfy them, and the published variant tag naming the
# quantised checkpoint of a model that is not natively so (resolved offline: a shipped sibling such as
# nvidia/MiniMax-M2.5-NVFP4, or the publisher's recipe; the model carries a note)
QUANTISED = {"fp8": (("fp8",), "-FP8"), "fp4": (("nvfp4", "mxfp4"), "-NVFP4"), "nvfp4": (("nvfp4",), "-NVFP4"),
             "mxfp4": (("mxfp4",), "-MXFP4"), "int4": (("int4",), "-AWQ")}


def is_silicon_csv(path: str | Path) -> bool:
    """Whether the CSV header carries the AIConfigurator silicon columns."""
    from energylens.checks import is_file

    p = Path(str(path))
    if not is_file(p):  # never raises (over-long names, NUL bytes); FIFOs and devices are not files
        return False
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), [])
    except (UnicodeDecodeError, csv.Error, OSError):
        return False  # the ML.ENERGY reader reports what is wrong with the file
    return "silicon_ttft_ms" in header and "isl" in header


def read_silicon_rows(path: str | Path) -> list[dict]:
    from energylens.checks import read_csv_rows

    return read_csv_rows(path, COLUMNS, "AIConfigurator silicon format")


@dataclass
class SiliconRow:
    index: int
    row: dict
    status: str = "skipped"
    reason: str = ""
    gpu: str = ""
    family: str = ""
    predicted: dict = field(default_factory=dict)
    measured: dict = field(default_factory=dict)
    running_batch: float = 0.0

    def error(self, metric: str) -> float:
        return self.predicted[metric] / self.measured[metric] - 1.0

    def to_dict(self) -> dict:
        d = {"row": self.index, **self.row, "status": self.status}
        if self.status != "ok":
            d["reason"] = self.reason
            return d
        d["gpu"], d["family"] = self.gpu, self.family
        for m in METRICS:
            d[f"predicted_{m}"] = self.predicted[m]
            d[f"measured_{m}"] = self.measured[m]
            d[f"error_{m}"] = self.error(m)
        d["predicted_running_batch"] = self.running_batch
        return d


@dataclass
class SiliconValidation:
    rows: list[SiliconRow]
    source: str
    coefficients: object = None
    run: dict = field(default_factory=dict)  # requests per run: the assumption used (or the override)

    @property
    def ok(self) -> list[SiliconRow]:
        return [r for r in self.rows if r.status == "ok"]

    @property
    def skipped(self) -> list[SiliconRow]:
        return [r for r in self.rows if r.status != "ok"]

    def mape(self, rows=None) -> dict[str, float]:
        rows = list(self.ok if rows is None else rows)
        return {m: float(np.mean([abs(r.error(m)) for r in rows])) if rows else float("nan") for m in METRICS}

    def tables(self) -> dict[str, dict[str, dict]]:
        keys = {
            "model × GPU × precision": lambda r: f"{r.row['model_path']} · {r.gpu} · {r.row['precision']}",
            "model": lambda r: r.row["model_path"],
            "GPU": lambda r: r.gpu,
            "isl × osl": lambda r: f"{int(float(r.row['isl']))} × {int(float(r.row['osl']))}",
            "concurrency": lambda r: f"{int(float(r.row['batch_size'])):>4d}",
        }
        out = {}
        for title, key in keys.items():
            groups: dict[str, list] = {}
            for r in self.ok:
                groups.setdefault(key(r), []).append(r)
            out[title] = {k: {"n": len(v), "mape": self.mape(v)} for k, v in sorted(groups.items())}
        out["overall"] = {"all": {"n": len(self.ok), "mape": self.mape()}}
        return out

    def worst(self, n: int = 10, metric: str = "tpot_s") -> list[SiliconRow]:
        return sorted(self.ok, key=lambda r: -abs(r.error(metric)))[:n]

    def to_dict(self) -> dict:
        c = self.coefficients
        return {"source": self.source, "format": "aiconfigurator-silicon",
                "coefficients": c.to_dict() if c is not None else None, "run": self.run, "rows_total": len(self.rows),
                "rows_predicted": len(self.ok), "rows_skipped": len(self.skipped), "tables": self.tables(),
                "rows": [r.to_dict() for r in self.rows]}


def _int(row: dict, col: str, default: int | None = None) -> int:
    """A positive integer column; empty (or 0, how the data marks 'no experts' on dense models) gives
    ``default`` where one is allowed."""
    raw = row.get(col, "")
    if default is not None and (raw is None or str(raw).strip() in ("", "0", "0.0")):
        return default
    try:
        v = float(raw)
    except (TypeError, ValueError):
        raise SpecError(col, raw, "a positive integer") from None
    if not math.isfinite(v) or v < 1 or v != int(v):
        raise SpecError(col, raw, "a positive integer")
    return int(v)


def _positive(row: dict, col: str) -> float:
    try:
        v = float(row.get(col, ""))
    except (TypeError, ValueError):
        raise SpecError(col, row.get(col), "a positive number") from None
    if not math.isfinite(v) or v <= 0:
        raise SpecError(col, row.get(col), "a positive number")
    return v


def _model(model_path: str, precision: str):
    """(model with the row's precision, None) or (None, reason). Offline: the Hugging Face Hub is not asked."""
    from energylens.validate import load_model_offline

    model, why = load_model_offline(model_path)
    p = precision.strip().lower()
    if model is None or p in ("", "nan"):  # not recorded: the checkpoint's own formats
        return model, why
    if p in PRECISIONS:
        return model.with_dtypes(weight_dtype=PRECISIONS[p]), None
    if p not in QUANTISED:
        return None, f"precision {precision!r} not modelled (known: {', '.join(list(PRECISIONS) + list(QUANTISED))})"
    formats, tag = QUANTISED[p]
    if model.weight_dtype in formats:
        return model, None
    return load_model_offline(model_path + tag)


def prepare(rows: list[dict]):
    from energylens.hardware.profile import load_gpu
    from energylens.serving import resolve_layout
    from energylens.validate import model_family

    results, groups, context = [], {}, {}
    for i, row in enumerate(rows):
        res = SiliconRow(i, {c: row.get(c, "") for c in ID_COLUMNS})
        results.append(res)
        if str(row.get("mode", "")).strip() != "agg":
            res.reason = f"mode {row.get('mode')!r}: disaggregated runs are not validated here (aggregated only)"
            continue
        try:
            isl, osl, conc = (_positive(row, c) for c in ("isl", "osl", "batch_size"))
            tp, pp, adp = _int(row, "tp_size"), _int(row, "pp_size", 1), _int(row, "attention_dp_size", 1)
            ep = _int(row, "moe_ep_size", 1)
            res.measured = {m: _positive(row, col) * 1e-3 for m, col in METRICS.items()}
        except SpecError as exc:
            res.reason = f"bad value: {exc}"
            continue
        system = str(row.get("system", "")).strip().lower()
        if system not in SYSTEMS:
            res.reason = f"no GPU profile for system {system!r} (profiles: {', '.join(sorted(SYSTEMS))})"
            continue
        try:
            gpu = load_gpu(SYSTEMS[system])
        except EnergyLensError as exc:
            res.reason = f"unknown GPU: {exc}"
            continue
        model, why = _model(str(row.get("model_path", "")), str(row.get("precision", "")))
        if model is None:
            res.reason = why
            continue
        try:
            gpu.peak_flops(model.act_dtype)
            layout, _ = resolve_layout(model, num_gpus=None, tp=tp, ep=ep, dp=adp, pp=pp)
        except EnergyLensError as exc:
            res.reason = f"invalid layout or precision: {exc}"
            continue
        if conc < adp * pp:
            res.reason = f"batch_size {conc:g} below attention_dp_size x pp_size = {adp * pp}"
            continue
        res.status, res.gpu, res.family = "ok", gpu.key, model_family(model)
        key = (row["model_path"], row["precision"], gpu.key, layout.tp, layout.pp, layout.dp, layout.ep)
        groups.setdefault(key, []).append((i, conc, isl, osl))
        context[key] = (model, gpu, layout)
    return results, groups, context


def run_assumption() -> dict:
    """The ``silicon`` entry of the validation assumptions: ``requests_per_client`` (>= 1), the clients'
    ``arrangement`` after the first wave (staggered or synchronised) and the source."""
    import yaml

    from energylens.serving_coefficients import data_file

    entry = (yaml.safe_load(data_file("assumptions.yaml").read_text()) or {}).get("silicon")
    rpc = entry.get("requests_per_client") if isinstance(entry, dict) else None
    if isinstance(rpc, bool) or not isinstance(rpc, (int, float)) or not rpc >= 1 or not entry.get("source") \
            or entry.get("arrangement") not in ("staggered", "synchronised"):
        raise SpecError("assumptions.yaml: silicon", entry, "{requests_per_client: <number >= 1>, arrangement: "
                        "staggered | synchronised, source: ...}")
    return dict(entry)


def run_requests(concurrency, requests_per_client=None, num_requests=None):
    """Requests per run of each row: ``num_requests`` (the same for every row; a row whose concurrency
    is larger runs one wave of it) or ``requests_per_client x concurrency`` (default: the assumption);
    None for the steady state (``requests_per_client`` infinite)."""
    c = np.asarray(concurrency, dtype=float)
    if num_requests is not None:
        if isinstance(num_requests, bool) or not isinstance(num_requests, (int, float, np.integer, np.floating)) \
                or not math.isfinite(num_requests) or num_requests < 1:
            raise SpecError("num_requests", num_requests, "a finite number of requests >= 1")
        return np.maximum(float(num_requests), c)
    rpc = run_assumption()["requests_per_client"] if requests_per_client is None else requests_per_client
    if isinstance(rpc, bool) or not isinstance(rpc, (int, float, np.integer, np.floating)) or not rpc >= 1:
        raise SpecError("requests_per_client", rpc, "a number >= 1 (inf: the steady state)")
    return None if math.isinf(rpc) else float(rpc) * c


def validate_silicon_rows(rows: list[dict], *, coefficients=None, source: str = "", progress=None,
                          staggered: bool | None = None, gpu_memory_utilization: float | None = None,
                          requests_per_client: float | None = None,
                          num_requests: float | None = None) -> SiliconValidation:
    """Predict every supported row (closed loop: a finite run of ``requests_per_client`` x concurrency
    requests, default the assumption, or ``num_requests``; ``requests_per_client=inf``: the steady state,
    clients starting together unless ``staggered``); ``gpu_memory_utilization`` overrides vLLM's default
    memory fraction (the runs do not record it)."""
    run_requests(1.0, requests_per_client, num_requests)  # refuses a bad value before any work
    if staggered is None:
        staggered = run_assumption()["arrangement"] == "staggered"
    from energylens.kv_capacity import kv_capacity
    from energylens.serving import load_coefficient_table, resolve_coefficients
    from energylens.serving_load import serve_closed_loop_arrays

    coeffs = coefficients or load_coefficient_table()
    memory = {}
    if gpu_memory_utilization is not None:
        from energylens.kv_capacity import check_utilization

        memory["gpu_memory_utilization"] = check_utilization(gpu_memory_utilization)
    results, groups, context = prepare(rows)
    for key, items in groups.items():
        model, gpu, layout = context[key]
        idx = [t[0] for t in items]
        c, i, o = (np.array([t[k] for t in items]) for k in (1, 2, 3))
        cap = kv_capacity(model, gpu, layout, **memory)
        if not cap.fits:
            for j in idx:
                results[j].status = "skipped"
                results[j].reason = (f"does not fit: weights {cap.weights_bytes / 2**30:.1f} GiB + workspace "
                                     f"{cap.workspace_bytes / 2**30:.1f} GiB per GPU exceed "
                                     f"{cap.usable_bytes / 2**30:.1f} GiB usable")
            continue
        arr = serve_closed_loop_arrays(model, gpu, layout, c, i, o, coefficients=resolve_coefficients(coeffs, gpu.key),
                                       capacity=cap, staggered=staggered,
                                       num_requests=run_requests(c, requests_per_client, num_requests))
        for j, k in enumerate(idx):
            r = results[k]
            if not bool(arr.fits[j]):
                r.status = "skipped"
                r.reason = (f"a request of {i[j] + o[j]:.0f} tokens does not fit the KV cache "
                            f"({cap.kv_tokens:.0f} tokens per replica)")
                continue
            r.predicted = {"ttft_s": float(arr.ttft_s[j]), "tpot_s": float(arr.tpot_s[j])}
            r.running_batch = float(arr.running_batch[j])
        if progress:
            progress(len(idx))
    if num_requests is not None:
        run = {"num_requests": float(num_requests), "source": "given"}
    elif requests_per_client is not None:
        run = {"requests_per_client": float(requests_per_client), "source": "given"}
    else:
        run = {k: v for k, v in run_assumption().items() if k in ("requests_per_client", "source")}
    run["arrangement"] = "staggered" if staggered else "synchronised"
    if run.get("requests_per_client") == float("inf"):
        run["steady_state"] = True
    return SiliconValidation(results, source, coeffs, run)


def validate_silicon_csv(path: str | Path, *, coefficients=None, progress=None, staggered: bool | None = None,
                         gpu_memory_utilization: float | None = None, requests_per_client: float | None = None,
                         num_requests: float | None = None) -> SiliconValidation:
    """Predict every row of an AIConfigurator silicon CSV (closed loop) and compare TTFT and TPOT."""
    return validate_silicon_rows(read_silicon_rows(path), coefficients=coefficients, source=str(path),
                                 progress=progress, staggered=staggered, gpu_memory_utilization=gpu_memory_utilization,
                                 requests_per_client=requests_per_client, num_requests=num_requests)
