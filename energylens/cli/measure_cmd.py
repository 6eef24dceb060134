"""``energylens measure`` and ``energylens calibrate``, registered on the main app below;
``measure_app`` holds both as a stand-alone app (``python -m energylens.measure``). Errors are ``EnergyLensError`` subclasses (exit code 2
in the CLI). Heavy imports (torch, NVML, SciPy) happen inside the commands.
``measure`` needs ``energylens[measure]`` (torch, nvidia-ml-py) and a GPU; ``calibrate`` runs anywhere.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from energylens.errors import MeasurementError

measure_app = typer.Typer(help="Measure GPU energy and latency, and fit hardware profiles to the records.")


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    return f"{value:.4g}"


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}%"


def _split(text: str | None) -> tuple[str, ...] | None:
    if not text:
        return None
    return tuple(s.strip() for s in text.split(",") if s.strip())


@measure_app.command("measure")
def measure_command(
    suite: Annotated[str, typer.Option("--suite", help="micro, models or collectives")] = "micro",
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="directory for the record (or a .json path), e.g. data/measurements/h100-sxm/micro/"
        ),
    ] = Path("measurements"),
    size: Annotated[str, typer.Option("--size", help="point set: small, default or full")] = "default",
    only: Annotated[
        str | None,
        typer.Option(
            "--only", help="micro kinds to keep, comma-separated: idle,memcpy,gemm,attention,elementwise"
        ),
    ] = None,
    seconds: Annotated[
        float, typer.Option("--seconds", help="seconds of steady work per repetition window")
    ] = 1.0,
    repeats: Annotated[int, typer.Option("--repeats", help="repetition windows per point (>= 3)")] = 3,
    idle_seconds: Annotated[
        float, typer.Option("--idle-seconds", help="idle window before/after the suite")
    ] = 5.0,
    budget_s: Annotated[
        float | None, typer.Option("--budget-s", help="stop starting new points after this many seconds")
    ] = None,
    shard: Annotated[
        str | None, typer.Option("--shard", help="I/N: measure every N-th point from the I-th")
    ] = None,
    device: Annotated[int, typer.Option("--device", help="CUDA device index")] = 0,
    fp8: Annotated[bool, typer.Option("--fp8/--no-fp8", help="fp8 GEMMs where the GPU supports them")] = True,
    cuda_graphs: Annotated[
        bool, typer.Option("--cuda-graphs/--no-cuda-graphs", help="graph-capture short calls")
    ] = True,
    compile_elementwise: Annotated[
        bool, typer.Option("--compile/--no-compile", help="torch.compile the element-wise ops (fused)")
    ] = True,
    models: Annotated[
        str, typer.Option("--models", help="models suite: comma-separated model keys")
    ] = "llama-3-8b,qwen3-30b-a3b",
) -> None:
    """Measure a suite on this machine's GPU (never changes clocks or power limits) and write a JSON record."""
    from energylens.measure.records import read_record
    from energylens.measure.runner import RunSettings
    from energylens.measure.suites import SuiteOptions, parse_shard, run_suite

    console = Console()
    settings = RunSettings(
        target_s=seconds, repeats=repeats, idle_s=idle_seconds, cuda_graphs=cuda_graphs
    ).validate()
    options = SuiteOptions(
        size=size,
        only=_split(only),
        shard=parse_shard(shard),
        budget_s=budget_s,
        fp8=fp8,
        compile_elementwise=compile_elementwise,
        models=_split(models) or (),
        device_index=device,
    ).validate(suite)
    path = run_suite(
        suite, out, settings, options, log=lambda s: console.print(s, markup=False, highlight=False)
    )
    record = read_record(path)
    table = Table(title=f"{suite}: {record.gpu_name} -> {path}")
    for col in ("kind", "points", "power-capped", "mean power (W)", "seconds"):
        table.add_column(col, justify="right" if col != "kind" else "left")
    kinds = sorted({p.kind for p in record.points})
    for kind in kinds:
        pts = [p for p in record.points if p.kind == kind]
        table.add_row(
            kind,
            str(len(pts)),
            str(sum(p.power_capped for p in pts)),
            f"{sum(p.avg_power_w for p in pts) / len(pts):.0f}",
            f"{sum(p.seconds_measured for p in pts):.0f}",
        )
    table.caption = (
        f"idle {record.idle_power_w_before:.1f} W before, {record.idle_power_w_after:.1f} W after; "
        f"{len(record.metadata.get('skipped', []))} skipped"
    )
    console.print(table)


def calibration_tables(result: object) -> list[Table]:
    """Rich tables of a ``CalibrationResult``: coefficients (old -> new) and residual summaries."""
    coeffs = Table(title=f"Fitted coefficients of {result.base.key}")
    for col in ("quantity", "unit", "old", "new", "change", "points", "fitted from"):
        coeffs.add_column(col, justify="right" if col in ("old", "new", "change", "points") else "left")
    for v in result.values:
        change = "-" if not v.old else f"{100.0 * (v.new / v.old - 1.0):+.1f}%"
        coeffs.add_row(
            v.name,
            v.unit,
            _fmt(v.old),
            _fmt(v.new) + (" (at bound)" if v.at_bound else ""),
            change,
            str(v.n_points),
            v.data,
        )
    resid = Table(title="Residuals of the fitted profile (kernel_cost / gemm_efficiency vs measured)")
    for col in ("points", "n", "latency MAPE", "latency max |err|", "energy MAPE", "energy max |err|"):
        resid.add_column(col, justify="left" if col == "points" else "right")
    for group, s in result.summary.items():
        if s.n:
            resid.add_row(
                group,
                str(s.n),
                _pct(s.latency_mape_pct),
                _pct(s.latency_max_abs_pct),
                _pct(s.energy_mape_pct),
                _pct(s.energy_max_abs_pct),
            )
    return [coeffs, resid]


@measure_app.command("calibrate")
def calibrate_command(
    records: Annotated[list[Path], typer.Argument(help="record .json files or directories holding them")],
    output: Annotated[Path, typer.Option("--output", "-o", help="fitted profile YAML to write")],
    gpu: Annotated[
        str | None,
        typer.Option(
            "--gpu", help="base profile (key or .yaml); default: matched from the records' GPU name"
        ),
    ] = None,
    k_half: Annotated[bool, typer.Option("--k-half/--no-k-half", help="also fit gemm_k_half")] = True,
    tiles: Annotated[
        bool, typer.Option("--tiles/--no-tiles", help="also grid-search gemm_tile_m/gemm_tile_n (64/128/256)")
    ] = True,
) -> None:
    """Fit a GPU profile to measurement records and write it as YAML (usable as --gpu PATH)."""
    from energylens.calibration.records import calibrate, guess_gpu, write_profile
    from energylens.hardware.fitted import measurements_dir
    from energylens.hardware.profile import load_gpu
    from energylens.measure.records import load_records

    if output.suffix not in (".yaml", ".yml"):
        raise MeasurementError("output", str(output), "a .yaml file path")
    console = Console()
    recs = load_records(records)
    base = load_gpu(gpu) if gpu else guess_gpu(recs)
    result = calibrate(recs, base, fit_k_half=k_half, fit_tiles=tiles)
    path = write_profile(result, output)
    for table in calibration_tables(result):
        console.print(table)
    for note in result.notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    console.print(f"wrote {path}; use it with --gpu {path}", markup=False, highlight=False)
    default = measurements_dir() / base.key / "profile.yaml"
    console.print(
        f"to make it the default for {base.key}, save it as {default}", markup=False, highlight=False
    )


def _register() -> None:
    from energylens.cli import app

    app.command("measure")(measure_command)
    app.command("calibrate")(calibrate_command)


_register()
