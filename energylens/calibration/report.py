"""Run the kernel-table calibration for every GPU with tables, turn the fits into profile quantities and
print the held-out error table (``python tools/calibrate_tables.py``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from energylens.calibration.kernels import FamilyFit, fit_latency_families
from energylens.calibration.power import PowerFit, fit_power, profile_power
from energylens.calibration.tables import GPU_TAGS, has_table
from energylens.hardware.profile import Quantity, load_gpu

TOOL = "python tools/calibrate_tables.py"
# profile dtypes that take a fitted GEMM/MoE dtype's values (same tensor-core rate)
ALIASES = {"bf16": ("bf16", "fp16")}


def calibrate(gpus: Sequence[str] = tuple(GPU_TAGS), every: int = 1, base=None) -> tuple[list[FamilyFit], list[PowerFit]]:
    """Latency fits for every GPU in ``gpus``; where a power table exists, the power fit and the check of
    the profile's own (shipped) power coefficients on the same held-out rows.
    ``base`` maps a GPU key to the profile fitted from (default: the built-in spec-sheet profile)."""
    fits: list[FamilyFit] = []
    powers: list[PowerFit] = []
    for key in gpus:
        gpu = (base or {}).get(key) or load_gpu(key)
        fam = fit_latency_families(gpu, every)
        fits += fam
        if has_table(key, "gemm", power=True):
            fitted = _with_fits(gpu, fam)
            powers.append(fit_power(fitted, every))
            powers.append(profile_power(fitted.with_quantities(profile_updates(fam, key)), every))
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
            names = [c.name]
            for dt, aliases in ALIASES.items():
                if c.name.endswith("_" + dt):
                    names = [c.name[: -len(dt)] + a for a in aliases]
            for name in names:
                note = _note(f, c.reading) + ("" if name == c.name else f"; fp16 takes the {c.name} fit (same tensor-core rate)")
                out[name] = Quantity(float(c.value), c.unit, "fitted", src, note)
            if c.name == "gemm_memory_efficiency_bf16":
                out["max_memory_efficiency"] = Quantity(float(c.value), "1", "fitted", src, _note(
                    f, "HBM bandwidth fraction reached streaming weights (small-M bf16 GEMMs), used by every memory-bound kernel without its own fit"))
    return out


def profile_updates(fits: Sequence[FamilyFit], gpu_key: str) -> dict[str, Quantity]:
    """Profile quantities from the latency fits, and J/FLOP derived from the power limit, idle power and
    the fitted GEMM efficiency as in the spec-sheet profiles (the kernel-power fit is reported, not
    written: see ``energylens.calibration.power``)."""
    out = latency_quantities(fits, gpu_key)
    gpu = load_gpu(gpu_key).with_quantities(out)
    for dt in ("bf16", "fp16", "fp8"):
        if gpu.has(f"peak_flops_{dt}") and f"max_compute_efficiency_{dt}" in out:
            eff = gpu.max_compute_efficiency(dt)
            value = (gpu.power_limit_w - gpu.idle_power_w) / (gpu.peak_flops(dt) * eff)
            out[f"energy_per_flop_{dt}"] = Quantity(
                value, "J/FLOP", "derived", f"derived from power_limit, idle_power, peak_flops_{dt}, max_compute_efficiency_{dt} in this file",
                f"(power_limit - idle_power) / (peak_flops_{dt} x max_compute_efficiency_{dt}) = ({gpu.power_limit_w:g} - "
                f"{gpu.idle_power_w:g}) W / ({gpu.peak_flops(dt) / 1e12:.1f} TFLOP/s x {eff:.4f}): a large GEMM at best "
                "efficiency runs at the power limit; whole-board incremental energy (the kernel-power fit is reported, "
                "not used: see energylens/calibration/power.py)")
    return out


def markdown_table(fits: Sequence[FamilyFit], powers: Sequence[PowerFit]) -> str:
    """Held-out kernel errors per GPU and family: latency, then energy per call (power tables)."""
    rows = ["| GPU | kernel family | fitted rows | held-out rows | held-out median APE | held-out mean APE |",
            "|---|---|---:|---:|---:|---:|"]
    for f in fits:
        rows.append(f"| {f.gpu} | {f.family}{'' if f.in_profile else ' (reported, not in the profile)'} | {f.rows_fit} | "
                    f"{f.rows_held} | {f.held_median_pct:.1f} % | {f.held_mean_pct:.1f} % |")
    rows += ["", "| GPU | kernel family | held-out rows | energy/call median APE: shipped profile | mean | "
             "kernel-power fit (not shipped) | mean |", "|---|---|---:|---:|---:|---:|---:|"]
    shipped = {(p.gpu, f): a for p in powers if p.derived_from for f, a in p.held_energy_ape.items()}
    for p in powers:
        if p.derived_from:
            continue
        for fam, ape in p.held_energy_ape.items():
            if ape.size:
                s = shipped.get((p.gpu, fam), np.array([np.nan]))
                rows.append(f"| {p.gpu} | {fam} | {ape.size} | {100 * np.median(s):.1f} % | {100 * np.mean(s):.1f} % | "
                            f"{100 * np.median(ape):.1f} % | {100 * np.mean(ape):.1f} % |")
    return "\n".join(rows)


def _with_fits(gpu, fits: Sequence[FamilyFit]):
    """The profile with the latency fits applied (the power fit bounds J/byte by the fitted stream bandwidth)."""
    return gpu.with_quantities(latency_quantities(fits, gpu.key))
