"""``energylens plan``: the best deployment under TTFT/TPOT SLOs (energy, throughput, carbon or cost)."""

from __future__ import annotations

import json

import typer

from energylens.cli import app


def _floats(name: str, text: str | None) -> tuple:
    """``"400,700"`` -> (400.0, 700.0); ``None`` -> (None,) (the profile's default)."""
    from energylens.errors import WorkloadError

    if text is None:
        return (None,)
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if part.lower() in ("default", "free", "none"):
            out.append(None)
            continue
        try:
            out.append(float(part))
        except ValueError:
            raise WorkloadError(name, text, "comma-separated numbers, e.g. '400,550,700' ('default' for the "
                                "profile's own)") from None
    return tuple(dict.fromkeys(out))


def table_lines(result, top: int) -> list[str]:
    """The ranked rows as plain text of at most 80 columns."""
    from energylens.plan_explain import short_label

    caps = any(r["power_limit_w"] != r["default_power_limit_w"] or r.get("sm_clock_mhz") for r in result.rows)
    head = f"{'#':>3} {'GPU':<8} {'n':>3} {'layout':<13} {'conc':>5} {'TTFT s':>6} {'TPOT ms':>7} " \
           f"{'J/tok':>6} {'tok/s/GPU':>9} {'W/GPU':>5}" + (f" {'cap W':>5}" if caps else "")
    lines = [head, "-" * len(head)]
    for k, r in enumerate(result.rows[:top]):
        mark = "*" if r.get("pareto") else " "
        line = (f"{k + 1:>2}{mark} {r['gpu'][:8]:<8} {r['num_gpus']:>3} {short_label(r)[:13]:<13} "
                f"{r['concurrency']:>5.0f} {r['ttft_s']:>6.3g} {r['tpot_s'] * 1e3:>7.3g} "
                f"{r['energy_per_output_token_j']:>6.3g} {r['output_tokens_per_s_per_gpu']:>9,.0f} "
                f"{r['avg_power_w'] / r['num_gpus']:>5.0f}")
        if caps:
            line += f" {r['power_limit_w']:>5.0f}"
        lines.append(line)
    return lines


@app.command("plan")
def plan_command(
    model: str = typer.Option("llama3.1-70b", "--model", "-m", help="Short name, Hugging Face id or config.json."),
    gpu: str = typer.Option("h100-sxm,h200,b200", "--gpu", "-g", help="GPU types to consider, comma-separated."),
    max_gpus: int = typer.Option(8, "--max-gpus", help="GPU budget of one deployment."),
    input_len: float = typer.Option(1024.0, "--input-len", help="Prompt tokens per request."),
    output_len: float = typer.Option(256.0, "--output-len", help="Output tokens per request."),
    max_ttft_s: float = typer.Option(None, "--max-ttft-s", help="SLO: mean time to first token (s)."),
    max_tpot_s: float = typer.Option(None, "--max-tpot-s", help="SLO: mean time per output token (s)."),
    objective: str = typer.Option("energy", "--objective", help="energy (J/token), throughput (tok/s/GPU), carbon "
                                  "(gCO2e/token) or cost (USD/token)."),
    disaggregated: bool = typer.Option(False, "--disaggregated", help="Also search prefill/decode pools."),
    concurrency: str = typer.Option(None, "--concurrency", help="Concurrency grid per replica, e.g. '1:512:x2' "
                                    "(default 1..512, four steps per doubling)."),
    power_limit: str = typer.Option(None, "--power-limit", help="Per-GPU power limit(s), W: '400,550,default'."),
    sm_clock: str = typer.Option(None, "--sm-clock", help="Locked SM clock(s), MHz: '1410,default'."),
    carbon_intensity: float = typer.Option(None, "--carbon-intensity", help="Grid carbon intensity, gCO2e/kWh."),
    pue: float = typer.Option(1.0, "--pue", help="Data-centre PUE (>= 1)."),
    usd_per_gpu_hour: float = typer.Option(None, "--usd-per-gpu-hour", help="GPU price, USD/GPU-hour."),
    dtype: str = typer.Option(None, "--dtype", help="Weight dtype: bf16, fp16 or fp8 (default: the model's)."),
    gpus_per_node: int = typer.Option(8, "--gpus-per-node", help="GPUs per node."),
    top: int = typer.Option(10, "--top", help="Rows to print."),
    plot: str = typer.Option(None, "--plot", help="Save the energy-throughput figure (.png, .pdf, .svg)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (ranked rows) instead of text."),
) -> None:
    """Which GPUs, how many, which parallelism and batch cap serve MODEL within the SLOs at the least energy
    per output token (or the most tokens/s per GPU, least carbon or cost)."""
    from energylens.carbon import Footprint
    from energylens.checks import integer, json_safe
    from energylens.errors import SpecError
    from energylens.plan import plan
    from energylens.sweep.spec import parse_values

    integer("top", top, low=1, high=100_000, error=SpecError)
    conc = None if concurrency is None else parse_values("concurrency", concurrency)
    res = plan(model, gpu, max_gpus=max_gpus, input_len=input_len, output_len=output_len, max_ttft_s=max_ttft_s,
               max_tpot_s=max_tpot_s, objective=objective, disaggregated=disaggregated, concurrency=conc,
               power_limits=_floats("power_limit_w", power_limit), sm_clocks=_floats("sm_clock_mhz", sm_clock),
               footprint=Footprint(carbon_intensity, pue, usd_per_gpu_hour), dtype=dtype, gpus_per_node=gpus_per_node)
    if plot:
        from energylens.plan_plot import plan_figure

        plan_figure(res, plot)
    if as_json:
        typer.echo(json.dumps(json_safe(res.to_dict()), indent=2))
        return
    import textwrap

    def say(text: str) -> None:
        typer.echo(textwrap.fill(text, width=80, subsequent_indent="  "))

    m = res.meta
    say(f"{res.model}: {m['input_len']:g} prompt + {m['output_len']:g} output tokens, up to {m['max_gpus']} GPUs "
        f"of {', '.join(m['gpus'])}; objective {res.objective}")
    if res.rows:
        typer.echo("\n".join(table_lines(res, top)))
        say(f"* = on the Pareto front of energy per token against TPOT ({len(res.front)} deployments): "
            + ", ".join(f"#{k + 1}" for k in res.front[:12]) + (" ..." if len(res.front) > 12 else ""))
    for line in res.explanation:
        say(line)
    for n in m["notes"]:
        say("note: " + n)
    if plot:
        typer.echo(f"figure: {plot}")
