"""Up-front checks of a sweep: refuse a grid whose table would not fit in memory, and say why a grid
has no valid configuration at all.

``check_size(spec)`` runs before any evaluation (``run_sweep``, ``run_sweep_dask`` and the CLI). The
table keeps about ``BYTES_PER_ROW`` bytes per configuration (about 60 columns of 8 bytes) and the
chunks are concatenated at the end, so a sweep needs about ``2 x BYTES_PER_ROW`` bytes per
configuration at its peak. The budget is half the memory available when the sweep starts, at most
``DEFAULT_MAX_TABLE_BYTES`` (environment variable ``ENERGYLENS_SWEEP_MAX_BYTES`` overrides it): a
10^8-configuration grid (about 100 GB) is refused with the numbers instead of dying without output.
"""

from __future__ import annotations

import itertools
import os

from energylens.errors import EnergyLensError, SpecError

BYTES_PER_ROW = 512  # ~60 float/int/bool/object-pointer columns of 8 bytes
PEAK_FACTOR = 2.0  # chunk tables + their concatenation
DEFAULT_MAX_TABLE_BYTES = 16 * 2**30
MAX_EXPLAIN_COMBINATIONS = 512


def available_memory_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (Linux), else free physical pages, else None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def table_budget_bytes() -> int:
    env = os.environ.get("ENERGYLENS_SWEEP_MAX_BYTES")
    if env:
        try:
            value = int(env)
        except ValueError:
            raise SpecError("ENERGYLENS_SWEEP_MAX_BYTES", env, "a positive integer number of bytes") from None
        if value < 1:
            raise SpecError("ENERGYLENS_SWEEP_MAX_BYTES", env, "a positive integer number of bytes")
        return value
    avail = available_memory_bytes()
    return DEFAULT_MAX_TABLE_BYTES if avail is None else min(DEFAULT_MAX_TABLE_BYTES, avail // 2)


def estimated_bytes(spec) -> int:
    return int(spec.size * BYTES_PER_ROW * PEAK_FACTOR)


def check_size(spec, max_bytes: int | None = None) -> None:
    """Raise ``SpecError`` (before any work) when the sweep's table would not fit in memory."""
    budget = table_budget_bytes() if max_bytes is None else int(max_bytes)
    need = estimated_bytes(spec)
    if need > budget:
        most = int(budget // (BYTES_PER_ROW * PEAK_FACTOR))
        raise SpecError("sweep size", f"{spec.size:,} configurations",
                        f"at most {most:,} configurations: the table would need about {need / 1e9:,.1f} GB "
                        f"({BYTES_PER_ROW * PEAK_FACTOR:.0f} B per configuration) and the budget is "
                        f"{budget / 1e9:,.1f} GB (half the available memory, at most "
                        f"{DEFAULT_MAX_TABLE_BYTES / 2**30:.0f} GiB; ENERGYLENS_SWEEP_MAX_BYTES overrides it); "
                        "stream it instead: --out FILE.parquet|.csv or --pareto-only (energylens.sweep.stream_sweep), "
                        "any size in bounded memory; or shorten the lists")


def explain_invalid(spec, limit: int = 5) -> list[str]:
    """Why configurations of ``spec`` are invalid: the layout checks' messages (tp not dividing the
    heads, ep not dividing the experts, ...) and batches that ``dp`` does not divide, at most ``limit``."""
    from energylens.parallel.layout import Layout, check_layout
    from energylens.pipeline import prepare

    reasons: list[str] = []

    def add(msg: str) -> None:
        if msg not in reasons:
            reasons.append(msg)

    for model, gpu, dtype in itertools.product(spec.models, spec.gpus, spec.dtypes):
        try:
            m, _ = prepare(model, gpu, dtype)
        except EnergyLensError as exc:
            add(f"{model} on {gpu}: {exc}")
            continue
        eps = spec.ep if "e" in m.dims else (1,)
        combos = itertools.islice(itertools.product(spec.tp, spec.pp, spec.dp, eps, spec.sp), MAX_EXPLAIN_COMBINATIONS)
        for tp, pp, dp, ep, sp in combos:
            try:
                check_layout(m, Layout(tp=tp, pp=pp, dp=dp, ep=ep, sp=sp, gpus_per_node=spec.gpus_per_node), strict=True)
            except EnergyLensError as exc:
                add(f"{m.name}: {exc}")
    for dp in spec.dp:
        if not any(b % dp == 0 and b >= dp for b in spec.batch):
            add(f"dp={dp}: no batch in {list(spec.batch)[:8]} is a multiple of it (each replica serves batch/dp)")
    return reasons[:limit]
