"""Run the kernel-table calibration for every GPU with tables, turn the fits into profile quantities and
print the held-out error table (``python tools/calibrate_tables.py``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from energylens.calibration.kernels import FamilyFit, fit_latency_families
from energylens.calibration.power import (
    FAMILY_NAMES,
    IDLE_FROM_TABLES,
    NOT_FITTED,
    PLAIN,
    REPORTED,
    RUN_CAP_LATENCY_S,
    STRUCTURAL,
    PowerFit,
    _join_sources,
    fit_power,
    flop_energy_bound_j,
    profile_power,
    run_cap_step,
    scaled_fit,
    table_floor_power_w,
)
from energylens.calibration.tables import GPU_TAGS, has_table
from energylens.hardware.profile import Quantity, load_gpu

TOOL = "python tools/calibrate_tables.py"
# profile dtypes that take a fitted GEMM/MoE dtype's values (same tensor-core rate)
ALIASES = {"bf16": ("bf16", "fp16")}


# a GPU without a power table takes the power fit of the GPU with the same die and clocks
POWER_DONOR = {"h100-sxm": "h200"}


def calibrate(gpus: Sequence[str] = tuple(GPU_TAGS), every: int = 1, base=None,
              structural: dict | None = None) -> tuple[list[FamilyFit], list[PowerFit]]:
    """Latency fits for every GPU in ``gpus``; where a power table exists, the power fit and the check of
    the profile's own power coefficients (after the fit is written) on the same held-out rows; a GPU in
    ``POWER_DONOR`` gets its donor's fit (:func:`energylens.calibration.power.scaled_fit`); every GPU with
    a power table also gets the structural fit and the plain one (reported, not written:
    ``fit_power(structural=True)``; no gap and no MoE J/B ratio, :data:`PLAIN`).
    ``base`` maps a GPU key to the profile fitted from (default: the built-in spec-sheet profile);
    ``structural``: keyword arguments of the structural fit (``gap_families``, ``moe_ratio``)."""
    fits: list[FamilyFit] = []
    powers: list[PowerFit] = []
    fams: dict[str, list[FamilyFit]] = {}
    for key in gpus:
        fams[key] = fit_latency_families((base or {}).get(key) or load_gpu(key), every)
        fits += fams[key]
    fitted = {key: _with_fits((base or {}).get(key) or load_gpu(key), fams.get(key) or
                              fit_latency_families(load_gpu(key), every))
              for key in dict.fromkeys([k for k in gpus if has_table(k, "gemm", power=True)]
                                       + [POWER_DONOR[k] for k in gpus if k in POWER_DONOR])}
    donors = {key: fit_power(g, every) for key, g in fitted.items()}
    for key in gpus:
        gpu = (base or {}).get(key) or load_gpu(key)
        if key in POWER_DONOR:
            powers.append(scaled_fit(donors[POWER_DONOR[key]], gpu))
        if has_table(key, "gemm", power=True):
            powers.append(donors[key])
            shipped = gpu.with_quantities(profile_updates(fams[key], key, donors[key]))
            powers.append(profile_power(shipped, every))
            powers.append(fit_power(fitted[key], every, structural=True, **(structural or {})))
            plain = fit_power(fitted[key], every, gap_families=(), moe_ratio=False)
            plain.derived_from = PLAIN
            powers.append(plain)
    return fits, powers


def _note(f: FamilyFit, reading: str) -> str:
    return (f"{reading}. Fitted on {f.rows_fit} rows; held-out shapes ({f.rows_held} rows): median APE "
            f"{f.held_median_pct:.1f} %, mean {f.held_mean_pct:.1f} % ({f.family})")


def latency_quantities(fits: Sequence[FamilyFit], gpu_key: str) -> dict[str, Quantity]:
    out: dict[str, Quantity] = {}
    for f in fits:
        if f.gpu != gpu_key or not f.in_profile:
            continue
        src = f"{f.source} ({f.rows_fit} rows fitted); {TOOL}"
        for c in f.coefficients:
            if c.kind == "reported":
                continue
            names = [c.name]
            for dt, aliases in ALIASES.items():
                if c.name.endswith("_" + dt):
                    names = [c.name[: -len(dt)] + a for a in aliases]
            for name in names:
                note = _note(f, c.reading) + ("" if name == c.name else f"; fp16 takes the {c.name} fit (same tensor-core rate)")
                out[name] = Quantity(float(c.value), c.unit, c.kind, src, note)
            if c.name == "gemm_memory_efficiency_bf16":
                out["max_memory_efficiency"] = Quantity(float(c.value), "1", "fitted", src, _note(
                    f, "HBM bandwidth fraction reached streaming weights (small-M bf16 GEMMs), used by every memory-bound kernel without its own fit"))
    return out


def profile_updates(fits: Sequence[FamilyFit], gpu_key: str, power: PowerFit | None = None) -> dict[str, Quantity]:
    """Profile quantities from the latency fits and, when given, the kernel power fit (busy power, J/FLOP
    per dtype, J/byte; :mod:`energylens.calibration.power`)."""
    out = {**latency_quantities(fits, gpu_key), **idle_quantities(gpu_key)}
    if power is not None:
        out.update(power_quantities(power, load_gpu(gpu_key)))
    return out


def power_for(powers: Sequence[PowerFit], gpu_key: str, *, structural: bool = False) -> PowerFit | None:
    """The power fit (own or a donor's) to write into ``gpu_key``'s profile, or None; ``structural``: the
    structural fit instead (an experiment, e.g. to see what it does to serving; not shipped)."""
    if structural:
        own = next((p for p in powers if p.gpu == gpu_key and p.derived_from == STRUCTURAL), None)
        donor = next((p for p in powers if p.gpu == POWER_DONOR.get(gpu_key) and p.derived_from == STRUCTURAL), None)
        return own or (scaled_fit(donor, load_gpu(gpu_key)) if donor else None)
    return next((p for p in powers if p.gpu == gpu_key and not p.derived_from.startswith("profile")
                 and p.derived_from not in REPORTED), None)


def power_quantities(p: PowerFit, gpu) -> dict[str, Quantity]:
    """The power fit as profile quantities (kind ``fitted``; ``derived`` for a GPU that takes a donor's fit)."""
    kind = "derived" if p.derived_from and p.derived_from not in REPORTED else "fitted"
    held = "; ".join(f"{name} {100 * np.median(a):.1f} %" for name, a in p.held_energy_ape.items() if a.size)
    where = (f"taken from the {p.derived_from} (same GH100 die and clocks; {gpu.key} has no power table): "
             if p.derived_from else f"fitted with busy power, J/FLOP and J/B{_extra_terms(p)} on {p.rows_fit} kernels "
             f"of >= 0.1 ms; held-out energy per call, median APE: {held}. ")
    model = ("P = idle_power + busy_power + (FLOPs x J/FLOP + bytes x J/B x [fused MoE] moe_byte_energy_ratio) / "
             "latency, capped at power_limit; a fused-MoE kernel's FLOPs are its padded tiles' (each expert's tokens "
             "rounded up to moe_tile_m rows); a flash-attention kernel's the keys its tiles run (causal diagonal "
             "tiles whole, a sliding window's straddled tile), at fp8 with an fp8 KV cache. ")
    out = {"busy_power": Quantity(p.busy_power_w, "W", kind, p.source, model + where +
                                  "Power above idle while a kernel runs at the maximum clock before any counted work "
                                  "(clocks, schedulers, L2 and crossbar awake)")}
    e_flop = dict(p.energy_per_flop_j)
    for dt, cls in (("bf16", "bf16"), ("fp16", "bf16"), ("fp8", "fp8"), ("fp4", "fp4")):
        if cls in e_flop and gpu.has(f"peak_flops_{dt}"):
            alias = "; fp16 takes the bf16 fit (same tensor-core rate)" if dt == "fp16" else ""
            pinned = ("; the bound J/FLOP(fp8) <= J/FLOP(bf16) is reached" if cls == "fp8"
                      and e_flop["fp8"] >= 0.999 * e_flop["bf16"] else "")
            if cls == "bf16" and not p.derived_from:
                bound = float(flop_energy_bound_j(gpu, p.power_limit_w, p.busy_power_w))
                pinned = (f"; bounded by {bound * 1e12:.3f} pJ (calibration/power.py:flop_energy_bound_j: the latency "
                          "tables' fastest GEMMs fit under the limit at the lowest clock their rate allows)"
                          + (", reached" if e_flop["bf16"] >= 0.999 * bound else ""))
            out[f"energy_per_flop_{dt}"] = Quantity(e_flop[cls], "J/FLOP", kind, p.source, model + where +
                                                    "Board energy per counted tensor-core FLOP above busy power" + alias + pinned)
    out["energy_per_byte_hbm"] = Quantity(p.energy_per_byte_j, "J/B", kind, p.source, model + where +
                                          "Board energy per HBM byte above busy power (DRAM, PHY, L2 and crossbar path)")
    if p.moe_byte_energy_ratio != 1.0:
        out["moe_byte_energy_ratio"] = Quantity(p.moe_byte_energy_ratio, "1", kind, p.source, model + where + (
            "A fused-MoE kernel's energy per counted HBM byte over energy_per_byte_hbm (each expert's weight tiles "
            "re-read from L2 per block of its tokens, token rows gathered and scattered: on-chip traffic a dense "
            "GEMM's stream has not), bounded so a MoE stream at the fastest fitted MoE bandwidth stays under the limit"))
    return out


def _extra_terms(p: PowerFit) -> str:
    """The fit's terms beyond busy power, J/FLOP and J/B, for a profile note."""
    out = ""
    if p.moe_byte_energy_ratio != 1.0:
        out += " and the fused-MoE J/B ratio"
    for fam, gap in p.replay_gap_s.items():
        below = ("" if not np.isfinite(p.gap_below_s) else
                 f" on runs the collector caps at 3000 calls (kernels under {1e6 * p.gap_below_s:.0f} us)")
        out += (f", with the {FAMILY_NAMES[fam]} rows read through the collector's idle gap of {1e6 * gap:.0f} us "
                f"per call{below} (a measurement model, not charged)")
    return out


def markdown_table(fits: Sequence[FamilyFit], powers: Sequence[PowerFit]) -> str:
    """Held-out kernel errors per GPU and family: latency, then energy per call (power tables)."""
    rows = ["| GPU | kernel family | fitted rows | held-out rows | held-out median APE | held-out mean APE |",
            "|---|---|---:|---:|---:|---:|"]
    for f in fits:
        rows.append(f"| {f.gpu} | {f.family}{'' if f.in_profile else ' (reported, not in the profile)'} | {f.rows_fit} | "
                    f"{f.rows_held} | {f.held_median_pct:.1f} % | {f.held_mean_pct:.1f} % |")
    rows += ["", "| GPU | kernel family | held-out rows | energy/call median APE | mean APE |", "|---|---|---:|---:|---:|"]
    for p in powers:
        if p.derived_from:
            continue
        for fam, ape in p.held_energy_ape.items():
            if ape.size:
                why = next((f" (not fitted: {r.split(':')[0]})" for (g, f, dt), r in NOT_FITTED.items()
                            if g == p.gpu and fam == f"{f} {dt}"), "")
                rows.append(f"| {p.gpu} | {fam}{why} | {ape.size} | {100 * np.median(ape):.1f} % | "
                            f"{100 * np.mean(ape):.1f} % |")
    rows += ["", "| GPU | busy power (W above idle) | idle (W, profile) | J/FLOP bf16 | J/FLOP fp8 | J/FLOP fp4 | J/B | "
             "MoE J/B ratio | decode replay gap, runs < 1 s (us) | limit (W) | from |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for p in powers:
        if p.derived_from.startswith("profile") or p.derived_from in REPORTED:
            continue
        e = p.energy_per_flop_j
        fp4 = f"{e['fp4'] * 1e12:.3f} pJ" if "fp4" in e else "-"
        gap = p.replay_gap_s.get("generation_attention")
        rows.append(f"| {p.gpu} | {p.busy_power_w:.0f} | {p.idle_power_w:.1f} | {e['bf16'] * 1e12:.3f} pJ | "
                    f"{e['fp8'] * 1e12:.3f} pJ | {fp4} | {p.energy_per_byte_j * 1e12:.1f} pJ | "
                    f"{p.moe_byte_energy_ratio:.2f} | {'-' if gap is None else f'{1e6 * gap:.0f}'} | "
                    f"{p.power_limit_w:.0f} | {p.derived_from or f'{p.rows_fit} kernels'} |")
    return "\n".join(rows + structural_table(powers) + step_table(powers))


def step_table(powers: Sequence[PowerFit]) -> list[str]:
    """Why only decode attention has a gap: per family, the reading above idle over the shipped fit's own
    kernel power just under and just over the collector's run cap (:func:`run_cap_step`)."""
    shipped = [p for p in powers if not p.derived_from and has_table(p.gpu, "gemm", power=True)]
    if not shipped:
        return []
    lo, hi = 0.75 * RUN_CAP_LATENCY_S * 1e6, 1.5 * RUN_CAP_LATENCY_S * 1e6
    rows = ["", f"Reading above idle / modelled kernel power above idle, median (rows), just under the collector's run "
            f"cap ({lo:.0f}-{1e6 * RUN_CAP_LATENCY_S:.0f} us: fewer than 3000 calls fill 1 s) and just over it "
            f"({1e6 * RUN_CAP_LATENCY_S:.0f}-{hi:.0f} us); a jump marks diluted capped runs", "",
            "| GPU | " + " | ".join(FAMILY_NAMES.values()) + " |", "|---|" + "---|" * len(FAMILY_NAMES)]
    for p in shipped:
        step = run_cap_step(p, load_gpu(p.gpu))
        cells = [f"{u:.2f} ({nu}) -> {o:.2f} ({no})" if fam in step else "-"
                 for fam in FAMILY_NAMES for (u, o, nu, no) in [step.get(fam, (0, 0, 0, 0))]]
        rows.append(f"| {p.gpu} | " + " | ".join(cells) + " |")
    return rows


def structural_table(powers: Sequence[PowerFit]) -> list[str]:
    """The reported power fits (not in the profiles): the structural one (a replay gap for every family at
    every latency) and the plain one (no gap, no MoE J/B ratio: the fit shipped before): held-out energy
    per call of what the table reads and their coefficients."""
    fits = [p for p in powers if p.derived_from in REPORTED]
    if not fits:
        return []
    names = list(dict.fromkeys(n for p in fits for n in p.held_energy_ape))
    rows = ["", "Reported fits: held-out energy per call, median APE (busy power, J/FLOP and J/B refitted with "
            "the fused-MoE J/B ratio, 1 where not fitted, and the families' replay gaps listed)", "",
            "| GPU | fit | " + " | ".join(names) + " | busy (W) | J/FLOP bf16 | J/B | MoE J/B ratio | replay gap "
            "(us) |", "|---|---|" + "---:|" * (len(names) + 4) + "---|"]
    for p in fits:
        ape = [f"{100 * np.median(p.held_energy_ape[n]):.1f} %" if p.held_energy_ape.get(n, np.empty(0)).size
               else "-" for n in names]
        gaps = ", ".join(f"{FAMILY_NAMES[f]} {1e6 * g:.0f}" for f, g in p.replay_gap_s.items()) or "none"
        label = "structural" if p.derived_from == STRUCTURAL else "plain"
        rows.append(f"| {p.gpu} | {label} | " + " | ".join(ape) + f" | {p.busy_power_w:.0f} | "
                    f"{p.energy_per_flop_j['bf16'] * 1e12:.3f} pJ | {p.energy_per_byte_j * 1e12:.1f} pJ | "
                    f"{p.moe_byte_energy_ratio:.2f} | {gaps} |")
    return rows


def _with_fits(gpu, fits: Sequence[FamilyFit]):
    """The profile with the latency fits applied (the power fit bounds J/byte by the fitted stream bandwidth)
    and, for a GPU in ``IDLE_FROM_TABLES``, the idle power of its tables (the fit is relative to it)."""
    return gpu.with_quantities({**latency_quantities(fits, gpu.key), **idle_quantities(gpu.key)})


def idle_quantities(gpu_key: str) -> dict[str, Quantity]:
    """``idle_power`` from the floor of the power tables, for a GPU in ``IDLE_FROM_TABLES`` (else empty)."""
    if gpu_key not in IDLE_FROM_TABLES:
        return {}
    floor_w, paths = table_floor_power_w(gpu_key)
    src = _join_sources(paths) + f" (lowest avg_power_w of any row); {TOOL}"
    return {"idle_power": Quantity(floor_w, "W", "measured", src, (
        "context held with the clocks up, nothing running (what a serving engine's GPU draws between kernels): the "
        "lowest NVML reading of the kernel power tables (host-bound replays that leave the GPU idle most of the time; "
        "the same statistic reads 126.3 W on H200 against its measured 120.1 W, so this is an upper bound within ~5 %). "
        f"Replaces {IDLE_FROM_TABLES[gpu_key]}. Deep idle with clocks down is the dvfs idle-vs-clock shape at its lowest "
        "clock (energylens/data/hardware/dvfs.yaml)"))}
