"""``energylens validate``: predict every row of an ML.ENERGY-format CSV and report the error."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from energylens.cli import app, emit_json

PLOT_SUFFIXES = (".png", ".pdf", ".svg")


@app.command("validate")
def validate_command(
    data: str = typer.Option(None, "--data", "-d", help="CSV in the ML.ENERGY v3 column format "
                             "(default: the shipped development subset)."),
    as_json: bool = typer.Option(False, "--json", help="Print per-row predictions and the tables as JSON."),
    level: float = typer.Option(0.8, "--interval-level", help="Prediction interval level: 0.5, 0.8 or 0.9."),
    rows: bool = typer.Option(True, "--rows/--no-rows", help="Print the per-row table."),
    worst: int = typer.Option(10, "--worst", help="List the N rows with the largest energy-per-token error."),
    plot: str = typer.Option(None, "--plot", help="Write a predicted-vs-measured scatter PNG to this path."),
    markdown: str = typer.Option(None, "--markdown", help="Write the MAPE tables as Markdown to this path."),
    staggered: bool = typer.Option(None, "--staggered/--synchronised", help="Silicon (closed-loop) data: the "
                                   "clients after the first wave spread over the cycle, or synchronised (default: "
                                   "the assumption in data/validation/assumptions.yaml)."),
    requests_per_client: float = typer.Option(None, "--requests-per-client", help="Silicon (closed-loop) data: "
                                              "requests per run = this x concurrency (default: the assumption "
                                              "in data/validation/assumptions.yaml; inf: the steady state)."),
    num_requests: float = typer.Option(None, "--num-requests", help="Silicon data: requests per run, the same "
                                       "for every row (a row with more clients runs one wave of them)."),
    gpu_memory_utilization: float = typer.Option(None, "--gpu-memory-utilization", help="Silicon data: vLLM's "
                                                 "memory fraction for weights and KV cache (default vLLM's 0.9; "
                                                 "the runs do not record it: a sensitivity check)."),
    iteration_overhead_s: float = typer.Option(None, "--iteration-overhead-s", help="Replace the fitted host time "
                                               "per iteration of every GPU, s (a sensitivity check; 0 and "
                                               "--per-sequence-overhead-s 0: the kernel sum alone)."),
    per_sequence_overhead_s: float = typer.Option(None, "--per-sequence-overhead-s", help="Replace the fitted time "
                                                  "per running request per iteration, s (a sensitivity check)."),
) -> None:
    """Validate serving predictions against measurements: ML.ENERGY rows (median ITL, average power, energy
    per token) or AIConfigurator silicon rows (closed-loop mean TTFT and TPOT), told apart by their columns."""
    from energylens.checks import integer, output_path, write_text
    from energylens.errors import SpecError
    from energylens.validate import shipped_dev_csv, validate_csv
    from energylens.validate_silicon import is_silicon_csv

    integer("worst", worst, low=0, high=100_000, error=SpecError)
    plot_path = output_path("plot", plot, PLOT_SUFFIXES, create_parent=True) if plot else None  # checked before any work
    md_path = output_path("markdown", markdown, (".md", ".markdown", ".txt")) if markdown else None
    path = data or str(shipped_dev_csv())
    from energylens.serving_coefficients import with_overheads

    coefficients = with_overheads(iteration_overhead_s=iteration_overhead_s,  # the shipped table unless given
                                  per_sequence_overhead_s=per_sequence_overhead_s)
    if is_silicon_csv(path):
        from energylens.validate_silicon import validate_silicon_csv

        sv = validate_silicon_csv(path, staggered=staggered, gpu_memory_utilization=gpu_memory_utilization,
                                  coefficients=coefficients, requests_per_client=requests_per_client,
                                  num_requests=num_requests)
        if md_path:
            write_text("markdown", md_path, silicon_markdown(sv))
        if as_json:
            emit_json(sv.to_dict())
            return
        render_silicon(sv, rows=rows, worst=worst)
        return
    for name, value in (("requests_per_client", requests_per_client), ("num_requests", num_requests)):
        if value is not None:
            raise SpecError(name, value, "only with silicon (closed-loop) data: the ML.ENERGY rows are steady states")
    if gpu_memory_utilization is not None:
        raise SpecError("gpu_memory_utilization", gpu_memory_utilization, "only with silicon (closed-loop) data: "
                        "the ML.ENERGY rows record their running batch")
    if as_json:
        v = validate_csv(path, level=level, coefficients=coefficients)
    else:
        from rich.progress import Progress

        from energylens.validate import read_rows

        n = len(read_rows(path))
        with Progress(transient=True) as prog:
            task = prog.add_task("costing rows", total=n)
            v = validate_csv(path, level=level, coefficients=coefficients, progress=lambda k: prog.advance(task, k))
            prog.update(task, completed=n)
    if plot_path:
        write_plot(v, str(plot_path))
    if md_path:
        write_text("markdown", md_path, to_markdown(v))
    if as_json:
        emit_json(v.to_dict())
        return
    render(v, rows=rows, worst=worst)


def _pct(x: float) -> str:
    return "-" if x != x else f"{100 * x:.1f}%"


def render(v, *, rows: bool = True, worst: int = 10) -> None:
    from energylens.intervals import load_intervals
    from energylens.validate import METRICS, SHORT

    con = Console()
    con.print(f"[bold]{v.source}[/]: {len(v.rows)} rows, {len(v.ok)} predicted, {len(v.skipped)} skipped")
    if rows and v.ok:
        t = Table(title="Per row: predicted / measured (error)")
        for col in ("#", "model", "task", "GPU", "par.", "batch", "ITL ms", "power W", "J/token"):
            t.add_column(col, justify="left" if col in ("model", "task", "GPU", "par.") else "right")
        for r in v.ok:
            cells = []
            for m, scale, f in (("decode_step_latency_s", 1e3, ".1f"), ("avg_power_w", 1, ".0f"),
                                ("energy_per_output_token_j", 1, ".3g")):
                cells.append(f"{r.predicted[m] * scale:{f}} / {r.measured[m] * scale:{f}} ({r.error(m):+.0%})")
            t.add_row(str(r.index), r.row["model_id"], r.row["task"], r.row["gpu_model"], r.parallelism,
                      f"{float(r.row['avg_batch_size']):.0f}", *cells)
        con.print(t)
    tables = v.tables()
    for title in ("model × GPU × parallelism", "family × GPU", "GPU", "task", "overall"):
        t = Table(title=f"MAPE by {title} (coverage of the {v.interval_level:.0%} interval)")
        t.add_column(title)
        t.add_column("rows", justify="right")
        for m in METRICS:
            t.add_column(SHORT[m], justify="right")
        for name, d in tables[title].items():
            t.add_row(name, str(d["n"]), *(f"{_pct(d['mape'][m])} ({_pct(d['coverage'][m])})" for m in METRICS))
        con.print(t)
    lomo = load_intervals().get("leave_one_model_out") or {}
    if lomo:
        cov = lomo.get("coverage", {}).get(str(v.interval_level), {})
        con.print("Interval coverage above is in-sample when the data is the development set. Leave-one-model-out "
                  "(coefficients refitted and residual quantiles taken without the model): "
                  + ", ".join(f"{SHORT[m]} {_pct(cov.get(m, float('nan')) or float('nan'))}" for m in METRICS)
                  + "; LOMO MAPE " + ", ".join(f"{SHORT[m]} {lomo['mape_percent'][m]:.1f}%" for m in METRICS))
    if worst and v.ok:
        t = Table(title=f"Worst {worst} rows by energy-per-token error")
        for col in ("#", "model", "task", "GPU", "par.", "batch", "ITL err", "power err", "J/token err"):
            t.add_column(col)
        for r in v.worst(worst):
            t.add_row(str(r.index), r.row["model_id"], r.row["task"], r.row["gpu_model"], r.parallelism,
                      f"{float(r.row['avg_batch_size']):.0f}", *(f"{r.error(m):+.0%}" for m in METRICS))
        con.print(t)
    if v.skipped:
        reasons: dict[str, list[int]] = {}
        for r in v.skipped:
            reasons.setdefault(r.reason, []).append(r.index)
        t = Table(title="Skipped rows")
        t.add_column("rows", justify="right")
        t.add_column("reason")
        for reason, idx in sorted(reasons.items(), key=lambda kv: -len(kv[1])):
            t.add_row(str(len(idx)), reason)
        con.print(t)
    for line in coefficient_lines(v.coefficients):
        con.print(line)


def coefficient_lines(c) -> list[str]:
    """One line per coefficient set (a table: pooled, then each platform)."""
    from energylens.serving import CoefficientTable

    def one(name: str, x) -> str:
        return (f"{name}: iteration overhead {x.iteration_overhead_s * 1e3:.3g} ms, per-sequence "
                f"{x.per_sequence_overhead_s * 1e6:.3g} us, active power fraction {x.active_power_fraction:.3g}, "
                f"MoE routing skew {x.routing_skew:g} (zipf exponent)")

    if isinstance(c, CoefficientTable):
        lines = [one(f"coefficients on {key}", x) for key, x in sorted(c.platforms.items())]
        lines.append(one("coefficients on any other GPU", c.pooled) + f" ({c.pooled.source})")
        return lines
    return [one("coefficients", c) + f" ({c.source})"]


def to_markdown(v) -> str:
    from energylens.validate import METRICS, SHORT

    tables = v.tables()
    out = [f"Rows: {len(v.rows)} in `{Path(v.source).name}`, {len(v.ok)} predicted, {len(v.skipped)} skipped.", ""]
    for title in ("overall", "family × GPU", "GPU", "task", "model × GPU × parallelism"):
        out.append(f"**MAPE by {title}** (in brackets: coverage of the {v.interval_level:.0%} interval)")
        out.append("")
        out.append(f"| {title} | rows | " + " | ".join(SHORT[m] for m in METRICS) + " |")
        out.append("|---|---:|" + "---:|" * len(METRICS))
        for name, d in tables[title].items():
            out.append(f"| {name} | {d['n']} | " + " | ".join(f"{_pct(d['mape'][m])} ({_pct(d['coverage'][m])})"
                                                             for m in METRICS) + " |")
        out.append("")
    if v.skipped:
        reasons: dict[str, int] = {}
        for r in v.skipped:
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
        out.append("**Skipped rows**")
        out.append("")
        out.append("| rows | reason |")
        out.append("|---:|---|")
        for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
            out.append(f"| {n} | {reason} |")
        out.append("")
    return "\n".join(out)


def write_plot(v, path: str) -> None:
    """Predicted vs measured, one panel per validated column, log-log, with y = x and +-10 % lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from energylens.validate import METRICS, SHORT

    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    colours = {"h100-sxm": "tab:blue", "b200": "tab:orange"}
    markers = {"dense": "o", "moe": "^", "hybrid": "s"}
    scale = {"decode_step_latency_s": (1e3, "ms"), "avg_power_w": (1.0, "W"), "energy_per_output_token_j": (1.0, "J")}
    for ax, m in zip(axes, METRICS, strict=True):
        s, unit = scale[m]
        seen = set()
        for r in v.ok:
            label = f"{r.family}, {r.row['gpu_model']}"
            ax.scatter(r.measured[m] * s, r.predicted[m] * s, s=14, alpha=0.7, c=colours.get(r.gpu, "tab:gray"),
                       marker=markers.get(r.family, "x"), label=None if label in seen else label)
            seen.add(label)
        vals = [r.measured[m] * s for r in v.ok] + [r.predicted[m] * s for r in v.ok]
        if vals:
            lo, hi = min(vals) / 1.2, max(vals) * 1.2
            xs = [lo, hi]
            ax.plot(xs, xs, "k-", lw=1)
            ax.plot(xs, [x * 1.1 for x in xs], "k:", lw=0.8)
            ax.plot(xs, [x / 1.1 for x in xs], "k:", lw=0.8)
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
        ax.set_xscale("log")
        ax.set_yscale("log")
        from matplotlib.ticker import NullFormatter

        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"measured {SHORT[m]} ({unit})")
        ax.set_ylabel(f"predicted {SHORT[m]} ({unit})")
        mape = v.mape()[m]
        ax.set_title(f"{SHORT[m]}: MAPE {100 * mape:.1f}% ({len(v.ok)} rows)")
        ax.legend(fontsize=8)
    fig.suptitle(f"energylens serve vs measured: {Path(v.source).name} (dotted: +-10%)")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_silicon(v, *, rows: bool = True, worst: int = 10) -> None:
    """Tables of a silicon (closed-loop TTFT/TPOT) validation."""
    from energylens.validate_silicon import METRICS, SHORT

    con = Console()
    con.print(f"[bold]{v.source}[/] (AIConfigurator silicon format, closed loop): {len(v.rows)} rows, "
              f"{len(v.ok)} predicted, {len(v.skipped)} skipped")
    if rows and v.ok:
        t = Table(title="Per row: predicted / measured (error)")
        for col in ("#", "model", "GPU", "prec.", "tp/dp/ep", "isl×osl", "conc.", "TTFT ms", "TPOT ms"):
            t.add_column(col)
        for r in v.ok:
            x = r.row
            t.add_row(str(r.index), x["model_path"], r.gpu, x["precision"] or "-",
                      f"{x['tp_size']}/{x['attention_dp_size'] or 1}/{x['moe_ep_size'] or 1}",
                      f"{float(x['isl']):.0f}×{float(x['osl']):.0f}", f"{float(x['batch_size']):.0f}",
                      *(f"{r.predicted[m] * 1e3:.1f} / {r.measured[m] * 1e3:.1f} ({r.error(m):+.0%})" for m in METRICS))
        con.print(t)
    for title, table in v.tables().items():
        t = Table(title=f"MAPE by {title}")
        t.add_column(title)
        t.add_column("rows", justify="right")
        for m in METRICS:
            t.add_column(SHORT[m], justify="right")
        for name, d in table.items():
            t.add_row(name, str(d["n"]), *(_pct(d["mape"][m]) for m in METRICS))
        con.print(t)
    if worst and v.ok:
        t = Table(title=f"Worst {worst} rows by TPOT error")
        for col in ("#", "model", "GPU", "isl×osl", "conc.", "TTFT err", "TPOT err"):
            t.add_column(col)
        for r in v.worst(worst):
            t.add_row(str(r.index), r.row["model_path"], r.gpu, f"{float(r.row['isl']):.0f}×{float(r.row['osl']):.0f}",
                      f"{float(r.row['batch_size']):.0f}", *(f"{r.error(m):+.0%}" for m in METRICS))
        con.print(t)
    if v.skipped:
        reasons: dict[str, int] = {}
        for r in v.skipped:
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
        t = Table(title="Skipped rows")
        t.add_column("rows", justify="right")
        t.add_column("reason")
        for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
            t.add_row(str(n), reason)
        con.print(t)


def silicon_markdown(v) -> str:
    from energylens.validate_silicon import METRICS, SHORT

    out = [f"Rows: {len(v.rows)} in `{Path(v.source).name}`, {len(v.ok)} predicted, {len(v.skipped)} skipped.", ""]
    for title, table in v.tables().items():
        out += [f"**MAPE by {title}**", "", f"| {title} | rows | " + " | ".join(SHORT[m] for m in METRICS) + " |",
                "|---|---:|" + "---:|" * len(METRICS)]
        out += [f"| {name} | {d['n']} | " + " | ".join(_pct(d["mape"][m]) for m in METRICS) + " |"
                for name, d in table.items()]
        out.append("")
    return "\n".join(out)
