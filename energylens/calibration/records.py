"""Fit a GPU profile's coefficients to measured records, through the predictor's own formulas.

The fitted quantities are exactly the coefficients of :mod:`energylens.cost.roofline`; predictions
for the fit and its residuals are computed by calling ``kernel_cost`` and ``gemm_efficiency`` on a
trial profile, never by re-implementing them. What is fitted from what:

==============================  ==================================================================
``idle_power``                  ``idle`` points: mean energy-counter power over the idle windows
                                (else the idle readings taken before and after each suite)
``power_limit``                 the records' enforced power limit (NVML), when it differs from the
                                base profile; power-capped points are checked against it
``max_memory_efficiency``,      ``memcpy`` latency vs bytes: t = bytes / (hbm_bandwidth * eff) + t0
``kernel_overhead``             (bounded linear least squares, relative residuals)
``energy_per_byte_hbm``         ``memcpy`` energy minus idle power x latency (minus the few FLOPs of
                                a read at the base energy per FLOP) vs bytes
``max_compute_efficiency_<dt>`` ``gemm`` latency of points that are not power-capped, compute-bound
``gemm_k_half``,                ones in practice (bounded non-linear least squares on log latency,
``gemm_tile_m``, ``gemm_tile_n``  jointly with the bf16 efficiency when K varies enough; the tiles by
                                a grid search over 64/128/256, kept only if clearly better)
``energy_per_flop_<dt>``        ``gemm`` energy minus idle power x latency minus bytes x
                                energy_per_byte_hbm vs FLOPs (points not power-capped)
==============================  ==================================================================

Attention and element-wise points are evaluated as held-out checks; model and collective points are
carried but not evaluated here (they need the whole predictor).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from energylens.calibration.results import CalibrationResult, FitSummary, FittedValue, PointResidual
from energylens.cost.roofline import gemm_efficiency, kernel_cost
from energylens.errors import EnergyLensError, MeasurementError, UnknownNameError
from energylens.hardware.profile import DTYPES, FIELDS, GPU, Quantity, load_gpu, parse_gpu
from energylens.measure.records import POWER_CAP_FRACTION, Point, Record, check_consistent, load_records

BOUNDS = {
    "max_memory_efficiency": (0.05, 1.0),
    "kernel_overhead": (0.0, 1e-3),
    "energy_per_byte_hbm": (0.0, 1e-9),
    "max_compute_efficiency": (0.05, 1.0),
    "gemm_k_half": (0.0, 8192.0),
    "energy_per_flop": (0.0, 1e-10),
}
EVALUATED_KINDS = ("idle", "memcpy", "gemm", "attention", "elementwise")
TILE_CANDIDATES = (64, 128, 256)  # gemm_tile_m / gemm_tile_n grid (wave quantisation of the tail)
TILE_IMPROVEMENT = 0.8  # change the tiles only when the latency fit's cost drops by 20%


@dataclass
class _Pt:
    file: str
    index: int
    p: Point


def _files_label(files: Sequence[str]) -> str:
    names = sorted(set(files))
    if len(names) <= 3:
        return ", ".join(names)
    return f"{', '.join(names[:3])} and {len(names) - 3} more"


def _arr(pts: Sequence[_Pt], attr: str) -> np.ndarray:
    return np.array([getattr(x.p, attr) for x in pts], dtype=float)


def _dims(pts: Sequence[_Pt], *names: str) -> list[np.ndarray]:
    out = []
    for name in names:
        vals = []
        for x in pts:
            if name not in x.p.dims:
                raise MeasurementError(
                    f"{x.file}: points[{x.index}].dims.{name}", None, f"{x.p.kind} points need it"
                )
            vals.append(float(x.p.dims[name]))
        out.append(np.array(vals))
    return out


def _capped(x: _Pt, limit: float) -> bool:
    return x.p.power_capped or x.p.avg_power_w >= POWER_CAP_FRACTION * limit


def _at_bound(value: float, lo: float, hi: float) -> bool:
    span = hi - lo
    return value <= lo + 1e-6 * span or value >= hi - 1e-6 * span


def _dtype_for(gpu: GPU, dtype: str | None) -> str:
    if dtype and gpu.has(f"peak_flops_{dtype}") and gpu.has(f"max_compute_efficiency_{dtype}"):
        return dtype
    for dt in ("bf16", "fp16", "fp32", "fp8"):
        if (
            gpu.has(f"peak_flops_{dt}")
            and gpu.has(f"max_compute_efficiency_{dt}")
            and gpu.has(f"energy_per_flop_{dt}")
        ):
            return dt
    raise MeasurementError(
        "gpu", gpu.key, "a profile with peak, efficiency and energy per FLOP for some dtype"
    )


def _unit(name: str) -> str:
    if name in FIELDS:
        return FIELDS[name][0]
    for dt in DTYPES:
        if name.endswith("_" + dt):
            return FIELDS[name[: -len(dt) - 1] + "_{dtype}"][0]
    raise KeyError(name)


def _lsq_linear(
    a: np.ndarray, y: np.ndarray, weight: np.ndarray, lo: Sequence[float], hi: Sequence[float]
) -> np.ndarray:
    from scipy.optimize import lsq_linear

    a = np.atleast_2d(a.T).T if a.ndim == 1 else a
    res = lsq_linear(
        a * weight[:, None],
        y * weight,
        bounds=(np.asarray(lo, float), np.asarray(hi, float)),
        method="bvls" if a.shape[1] <= 3 else "trf",
    )
    return np.asarray(res.x, dtype=float)


class _Fitter:
    def __init__(self, records: Sequence[Record], base: GPU) -> None:
        self.base = base
        self.records = list(records)
        self.files = [r.path or f"record[{i}]" for i, r in enumerate(records)]
        self.label = _files_label(self.files)
        self.pts = [
            _Pt(f, i, p) for f, r in zip(self.files, records, strict=True) for i, p in enumerate(r.points)
        ]
        self.current = base
        self.fitted: dict[str, Quantity] = {}
        self.values: list[FittedValue] = []
        self.notes: list[str] = []
        self.used: dict[tuple[str, int], list[str]] = {}

    def of_kind(self, kind: str) -> list[_Pt]:
        return [x for x in self.pts if x.p.kind == kind]

    def set(
        self,
        name: str,
        value: float,
        pts: Sequence[_Pt],
        data: str,
        kind: str = "fitted",
        bounds: tuple[float, float] | None = None,
        note: str = "",
    ) -> None:
        old = self.base.quantities.get(name)
        old_v = None if old is None else old.value
        at_bound = bounds is not None and _at_bound(value, *bounds)
        q = Quantity(
            float(value),
            _unit(name),
            kind,
            f"{self.label}: {data}",
            note or (f"was {old_v:.6g} ({old.kind})" if old_v is not None and old is not None else ""),
        )
        self.fitted[name] = q
        self.values.append(FittedValue(name, q.unit, old_v, float(value), len(pts), data, at_bound))
        self.current = self.current.with_quantities({name: q})
        for x in pts:
            self.used.setdefault((x.file, x.index), []).append(name)
        if at_bound:
            self.notes.append(f"{name} = {value:.6g} sits at its bound {bounds}: check the {data}")

    # -- the fits ---------------------------------------------------------------------------
    def fit_power(self) -> None:
        limit = self.records[0].power_limit_w
        if not self.base.has("power_limit") or abs(self.base.power_limit_w - limit) > 1.0:
            self.set(
                "power_limit",
                limit,
                [],
                "metadata.power_limit_w (nvmlDeviceGetEnforcedPowerLimit)",
                kind="measured",
            )
        idle = self.of_kind("idle")
        if idle:
            w = _arr(idle, "seconds_measured")
            w = np.where(w > 0, w, 1.0)
            value = float(np.average(_arr(idle, "avg_power_w"), weights=w))
            self.set(
                "idle_power", value, idle, f"{len(idle)} idle points (energy-counter power over idle windows)"
            )
        else:
            value = float(np.mean([[r.idle_power_w_before, r.idle_power_w_after] for r in self.records]))
            self.set("idle_power", value, [], f"idle_power_w_before/after of {len(self.records)} records")
        if not 0 < value < self.current.power_limit_w:
            raise MeasurementError(
                "idle_power", value, f"between 0 and the power limit {self.current.power_limit_w:g} W"
            )

    def fit_memory(self) -> None:
        limit = self.current.power_limit_w
        pts = [x for x in self.of_kind("memcpy") if not _capped(x, limit)]
        if len(pts) < 2 or len(set(_arr(pts, "bytes"))) < 2:
            self.notes.append(
                "max_memory_efficiency, kernel_overhead, energy_per_byte_hbm not fitted: "
                "needs memcpy points of at least two sizes"
            )
            return
        nbytes, t, energy, flops = (
            _arr(pts, "bytes"),
            _arr(pts, "latency_s"),
            _arr(pts, "energy_j"),
            _arr(pts, "flops"),
        )
        bw = self.current.hbm_bandwidth_bytes_per_s
        e_lo, e_hi = BOUNDS["max_memory_efficiency"]
        t_lo, t_hi = BOUNDS["kernel_overhead"]
        a = np.column_stack([nbytes / bw, np.ones_like(nbytes)])
        inv_eff, t0 = _lsq_linear(a, t, 1.0 / t, [1.0 / e_hi, t_lo], [1.0 / e_lo, t_hi])
        sizes = f"{len(pts)} memcpy points ({nbytes.min() / 2**20:.3g} MiB to {nbytes.max() / 2**30:.3g} GiB moved)"
        self.set(
            "max_memory_efficiency",
            1.0 / inv_eff,
            pts,
            f"{sizes}, latency = bytes/(bw*eff) + t0",
            bounds=BOUNDS["max_memory_efficiency"],
        )
        self.set(
            "kernel_overhead",
            t0,
            pts,
            f"{sizes}, intercept t0 of latency vs bytes",
            bounds=BOUNDS["kernel_overhead"],
        )
        idle = self.current.idle_power_w
        e_flop = np.array([self._base_e_flop(x.p.dtype) for x in pts])
        y = energy - idle * t - flops * e_flop
        (e_b,) = _lsq_linear(
            nbytes[:, None],
            y,
            1.0 / energy,
            [BOUNDS["energy_per_byte_hbm"][0]],
            [BOUNDS["energy_per_byte_hbm"][1]],
        )
        self.set(
            "energy_per_byte_hbm",
            e_b,
            pts,
            f"{sizes}, energy - idle_power*latency vs bytes",
            bounds=BOUNDS["energy_per_byte_hbm"],
        )

    def _base_e_flop(self, dtype: str | None) -> float:
        dt = dtype if dtype and self.current.has(f"energy_per_flop_{dtype}") else None
        return self.current.energy_per_flop_j(dt) if dt else 0.0

    def gemm_points(self, dtype: str) -> tuple[list[_Pt], list[_Pt]]:
        limit = self.current.power_limit_w
        pts = [x for x in self.of_kind("gemm") if x.p.dtype == dtype]
        return [x for x in pts if not _capped(x, limit)], [x for x in pts if _capped(x, limit)]

    def _uncapped_latency(
        self, gpu: GPU, dtype: str, pts: Sequence[_Pt]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m, n, k, b = _dims(pts, "m", "n", "k", "batch")
        eff = gemm_efficiency(gpu, dtype, m, n, k, b)
        kc = kernel_cost(gpu, dtype, _arr(pts, "flops"), _arr(pts, "bytes"), eff)
        return np.maximum(kc.compute_s, kc.memory_s) + gpu.kernel_overhead_s, kc.compute_s, kc.memory_s

    def fit_compute(self, dtype: str, fit_k_half: bool, fit_tiles: bool = False) -> None:
        from scipy.optimize import least_squares

        name = f"max_compute_efficiency_{dtype}"
        if not self.current.has(f"peak_flops_{dtype}"):
            if self.of_kind("gemm") and any(x.p.dtype == dtype for x in self.of_kind("gemm")):
                self.notes.append(f"{name} not fitted: the base profile has no peak_flops_{dtype}")
            return
        ok, capped = self.gemm_points(dtype)
        if not ok:
            if capped:
                self.notes.append(
                    f"{name} not fitted: all {len(capped)} {dtype} GEMM points are power-capped"
                )
            return
        start = self.current
        if not start.has(name):
            start = start.with_quantities({name: Quantity(0.7, "1", "assumed", "fit start")})
        if not start.has(f"energy_per_flop_{dtype}"):  # kernel_cost needs one; latency does not use it
            start = start.with_quantities(
                {f"energy_per_flop_{dtype}": Quantity(0.0, "J/FLOP", "assumed", "fit start")}
            )
        _, comp, mem = self._uncapped_latency(start, dtype, ok)
        bound = comp >= 1.2 * mem
        if not bound.any():
            self.notes.append(f"{name} not fitted: no compute-bound {dtype} GEMM among {len(ok)} points")
            return
        used = [x for x, c in zip(ok, bound, strict=True) if c]
        ks = set(_dims(used, "k")[0])
        fit_k = fit_k_half and len(ks) >= 3
        t_meas = _arr(used, "latency_s")
        e_lo, e_hi = BOUNDS["max_compute_efficiency"]
        k_lo, k_hi = BOUNDS["gemm_k_half"]

        def solve(base: GPU) -> tuple[np.ndarray, float]:
            def trial(theta: np.ndarray) -> GPU:
                q = {name: Quantity(float(theta[0]), "1", "fitted", "trial")}
                if fit_k:
                    q["gemm_k_half"] = Quantity(float(theta[1]), "1", "fitted", "trial")
                return base.with_quantities(q)

            def resid(theta: np.ndarray) -> np.ndarray:
                return np.log(self._uncapped_latency(trial(theta), dtype, used)[0] / t_meas)

            x0 = [float(np.clip(base.max_compute_efficiency(dtype), e_lo + 0.01, e_hi - 0.01))]
            lo, hi, scale = [e_lo], [e_hi], [0.1]
            if fit_k:
                x0.append(float(np.clip(base.q("gemm_k_half"), k_lo + 1, k_hi - 1)))
                lo.append(k_lo)
                hi.append(k_hi)
                scale.append(100.0)
            res = least_squares(resid, x0, bounds=(lo, hi), x_scale=scale, loss="soft_l1", f_scale=0.05)
            return res.x, float(res.cost)

        x, cost = solve(start)
        tiles = None
        if fit_tiles:
            old_tiles = (start.q("gemm_tile_m"), start.q("gemm_tile_n"))
            best = (cost, old_tiles, x)
            for tm in TILE_CANDIDATES:
                for tn in TILE_CANDIDATES:
                    if (tm, tn) == old_tiles:
                        continue
                    cand = start.with_quantities(
                        {
                            "gemm_tile_m": Quantity(float(tm), "1", "fitted", "trial"),
                            "gemm_tile_n": Quantity(float(tn), "1", "fitted", "trial"),
                        }
                    )
                    xc, cc = solve(cand)
                    if cc < best[0]:
                        best = (cc, (float(tm), float(tn)), xc)
            if best[1] != old_tiles and best[0] < TILE_IMPROVEMENT * cost:
                tiles, x = best[1], best[2]
        kset = f"K from {int(min(ks))} to {int(max(ks))}"
        data = f"{len(used)} compute-bound, not power-capped {dtype} GEMM points ({kset}), latency"
        if tiles is not None:
            grid = f"{data}, best of a {len(TILE_CANDIDATES)}x{len(TILE_CANDIDATES)} tile grid"
            self.set("gemm_tile_m", tiles[0], used, grid)
            self.set("gemm_tile_n", tiles[1], used, grid)
        self.set(name, x[0], used, data, bounds=BOUNDS["max_compute_efficiency"])
        if fit_k:
            self.set(
                "gemm_k_half", x[1], used, f"{data}, k_eff = K/(K + k_half)", bounds=BOUNDS["gemm_k_half"]
            )
        elif fit_k_half:
            self.notes.append(
                f"gemm_k_half not fitted: compute-bound {dtype} GEMMs span fewer than 3 values of K"
            )

    def fit_energy_per_flop(self, dtype: str) -> None:
        name = f"energy_per_flop_{dtype}"
        if not self.current.has(f"peak_flops_{dtype}"):
            return
        ok, _ = self.gemm_points(dtype)
        ok = [x for x in ok if x.p.flops > 0]
        if not ok:
            return
        flops, nbytes, t, energy = (
            _arr(ok, "flops"),
            _arr(ok, "bytes"),
            _arr(ok, "latency_s"),
            _arr(ok, "energy_j"),
        )
        y = energy - self.current.idle_power_w * t - nbytes * self.current.energy_per_byte_j
        lo, hi = BOUNDS["energy_per_flop"]
        (e_f,) = _lsq_linear(flops[:, None], y, 1.0 / energy, [lo], [hi])
        data = f"{len(ok)} not power-capped {dtype} GEMM points, energy - idle_power*latency - bytes*energy_per_byte vs FLOPs"
        self.set(name, e_f, ok, data, bounds=BOUNDS["energy_per_flop"])

    def check_capped(self) -> None:
        limit = self.current.power_limit_w
        capped = [
            x
            for x in self.pts
            if x.p.kind in ("gemm", "memcpy", "attention", "elementwise") and _capped(x, limit)
        ]
        if not capped:
            return
        power = _arr(capped, "avg_power_w")
        self.notes.append(
            f"{len(capped)} power-capped points excluded from the fits: mean power {power.mean():.0f} W "
            f"= {100 * power.mean() / limit:.0f}% of the enforced limit {limit:.0f} W"
        )
        if power.max() > 1.05 * limit:
            self.notes.append(
                f"some points drew {power.max():.0f} W, above the {limit:.0f} W limit: check the records"
            )

    # -- residuals ----------------------------------------------------------------------------
    def predict(self, x: _Pt) -> tuple[float, float]:
        gpu = self.current
        p = x.p
        if p.kind == "idle":
            return p.latency_s, gpu.idle_power_w * p.latency_s
        dtype = _dtype_for(gpu, p.dtype)
        eff = None
        if p.kind == "gemm":
            m, n, k, b = (float(p.dims[d]) for d in ("m", "n", "k", "batch"))
            eff = gemm_efficiency(gpu, dtype, m, n, k, b)
        kc = kernel_cost(gpu, dtype, p.flops, p.bytes, eff)
        return float(kc.latency_s), float(kc.energy_j)

    def residuals(self) -> tuple[list[PointResidual], dict[str, FitSummary]]:
        rows: list[PointResidual] = []
        limit = self.current.power_limit_w
        skipped = 0
        for x in self.pts:
            if x.p.kind not in EVALUATED_KINDS:
                skipped += 1
                continue
            if x.p.kind == "gemm" and not self.current.has(f"peak_flops_{x.p.dtype}"):
                skipped += 1
                continue
            lat, en = self.predict(x)
            names = self.used.get((x.file, x.index))
            capped = x.p.kind != "idle" and _capped(x, limit)
            role = "fit: " + ", ".join(names) if names else ("power-capped" if capped else "held-out")
            name = str(x.p.extra.get("name") or f"{x.p.kind}[{x.p.dtype}]")
            rows.append(
                PointResidual(
                    x.file,
                    x.index,
                    x.p.kind,
                    x.p.dtype,
                    name,
                    role,
                    capped,
                    x.p.latency_s,
                    lat,
                    x.p.energy_j,
                    en,
                )
            )
        if skipped:
            self.notes.append(
                f"{skipped} points (model, collective or unsupported dtype) are carried but not evaluated"
            )
        summary = {"fit": FitSummary.of([r for r in rows if r.role.startswith("fit")])}
        for kind in EVALUATED_KINDS:
            group = [r for r in rows if r.kind == kind]
            if group:
                summary[kind] = FitSummary.of(group)
        capped_rows = [r for r in rows if r.power_capped]
        if capped_rows:
            summary["power-capped"] = FitSummary.of(capped_rows)
        return rows, summary


def calibrate(
    records: Sequence[Record] | Iterable[str | os.PathLike],
    base_gpu: GPU | str,
    *,
    fit_k_half: bool = True,
    fit_tiles: bool = True,
) -> CalibrationResult:
    """Fit ``base_gpu``'s coefficients to ``records`` (Record objects, or paths to load).

    ``fit_k_half`` and ``fit_tiles`` (a grid search of ``gemm_tile_m``/``gemm_tile_n``, kept only
    when it lowers the latency fit's cost by 20%) use the first GEMM dtype (bf16 when present).
    """
    recs = list(records)
    if not recs:
        raise MeasurementError("records", [], "at least one measurement record")
    if not all(isinstance(r, Record) for r in recs):
        recs = load_records(recs)
    check_consistent(recs)
    base = load_gpu(base_gpu)
    f = _Fitter(recs, base)
    if not any(r.points for r in recs):
        raise MeasurementError(
            "records", _files_label(f.files), "records with measured points (these have none)"
        )
    try:  # degenerate records (all energies 0, constant points) make the least-squares fits fail
        f.fit_power()
        f.fit_memory()
        gemm_dtypes = sorted({x.p.dtype for x in f.of_kind("gemm") if x.p.dtype}, key=lambda d: (d != "bf16", d))
        for i, dtype in enumerate(gemm_dtypes):
            f.fit_compute(dtype, fit_k_half=fit_k_half and i == 0, fit_tiles=fit_tiles and i == 0)
        for dtype in gemm_dtypes:
            f.fit_energy_per_flop(dtype)
        f.check_capped()
        rows, summary = f.residuals()
    except (np.linalg.LinAlgError, FloatingPointError) as exc:
        raise MeasurementError("records", _files_label(f.files), f"records a fit can use: varied, positive "
                               f"latencies and energies (the fit failed: {exc})") from None
    except ValueError as exc:
        if isinstance(exc, EnergyLensError):
            raise
        raise MeasurementError("records", _files_label(f.files), f"records a fit can use: varied, positive "
                               f"latencies and energies (the fit failed: {exc})") from None
    return CalibrationResult(base, f.current, f.fitted, f.values, rows, summary, f.notes, f.files)


def guess_gpu(records: Sequence[Record]) -> GPU:
    """The built-in profile whose key or alias matches the records' NVML GPU name."""
    name = records[0].gpu_name
    try:
        return load_gpu(name)
    except UnknownNameError as exc:
        raise MeasurementError(
            "gpu", name, "no built-in profile has this name as an alias: pass --gpu KEY or a profile.yaml"
        ) from exc


def write_profile(result: CalibrationResult, path: str | os.PathLike) -> Path:
    """Write the fitted profile as YAML that ``energylens.hardware.load_gpu(path)`` loads."""
    p = Path(path)
    data = result.profile.to_dict()
    header = [
        f"# GPU profile fitted by `energylens calibrate` from {len(result.files)} record file(s):",
        *[f"#   {f}" for f in sorted(set(result.files))],
        f"# base profile: {result.base.path or result.base.key}; fitted: {', '.join(result.fitted) or 'nothing'}",
    ]
    s = result.summary.get("fit")
    if s is not None and s.n:
        header.append(
            f"# fit residuals over {s.n} points: latency MAPE {s.latency_mape_pct:.2f}% (max {s.latency_max_abs_pct:.2f}%), "
            f"energy MAPE {s.energy_mape_pct:.2f}% (max {s.energy_max_abs_pct:.2f}%)"
        )
    text = "\n".join(header) + "\n" + yaml.safe_dump(data, sort_keys=False, width=120)
    parse_gpu(yaml.safe_load(text), str(p))  # never write what load_gpu would refuse
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p
