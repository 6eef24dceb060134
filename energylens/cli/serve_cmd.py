"""``energylens serve``: steady-state vLLM serving (inter-token latency, power, energy per output token)."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from energylens.cli import app
from energylens.engines import VLLM


@app.command("serve")
def serve_command(
    model: str = typer.Option("llama3.1-8b", "--model", "-m", help="Short name, Hugging Face id or config.json path."),
    gpu: str = typer.Option("h100-sxm", "--gpu", "-g", help="GPU key/alias (h100-sxm, b200, ...) or a profile .yaml."),
    num_gpus: int = typer.Option(None, "--num-gpus", help="GPUs of the deployment (default tp x pp x dp)."),
    tp: int = typer.Option(1, "--tp", help="Tensor-parallel degree."),
    ep: int = typer.Option(1, "--ep", help="Expert-parallel degree (MoE models)."),
    dp: int = typer.Option(1, "--dp", help="Data-parallel replicas (the running batch is split over them)."),
    pp: int = typer.Option(1, "--pp", help="Pipeline-parallel degree (not validated against measurements)."),
    batch: float = typer.Option(64.0, "--batch", "-b", help="Mean running batch of the whole deployment (requests)."),
    input_len: float = typer.Option(None, "--input-len", help="Mean prompt tokens per request."),
    output_len: float = typer.Option(512.0, "--output-len", help="Mean output tokens per request."),
    task: str = typer.Option(None, "--task", help="Take --input-len from the assumption table (lm-arena-chat, gpqa, "
                             "sourcegraph-fim)."),
    dtype: str = typer.Option(None, "--dtype", help="Weight dtype: bf16, fp16 or fp8 (default: the model's)."),
    max_batched_tokens: int = typer.Option(VLLM.max_batched_tokens, "--max-batched-tokens", help="vLLM chunked-prefill token budget."),
    level: float = typer.Option(0.8, "--interval-level", help="Prediction interval level: 0.5, 0.8 or 0.9."),
    routing: str = typer.Option(None, "--routing", help="MoE routing: uniform (default), zipf:S, dirichlet:A or a "
                                "histogram FILE."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Predict steady-state serving: decode-step latency, average power of all GPUs, energy per output token."""
    from energylens.errors import WorkloadError
    from energylens.serving import serve

    if input_len is None:
        if task is None:
            input_len = 1024.0
        else:
            from energylens.validate import load_assumptions

            table = load_assumptions()
            if task not in table:
                raise WorkloadError("task", task, "one of " + ", ".join(sorted(table)))
            input_len = float(table[task]["input_len"])
    res = serve(model, gpu, num_gpus=num_gpus, tp=tp, ep=ep, dp=dp, pp=pp, batch=batch, input_len=input_len,
                output_len=output_len, dtype=dtype, max_batched_tokens=max_batched_tokens, interval_level=level,
                routing=routing)
    if as_json:
        typer.echo(json.dumps(res.to_dict(), indent=2, default=float))
        return
    render(res)


def _iv(res, name: str, scale: float, fmt: str) -> str:
    iv = res.interval.get(name)
    if not iv:
        return "-"
    return f"[{iv['low'] * scale:{fmt}}, {iv['high'] * scale:{fmt}}]"


def render(res) -> None:
    con = Console()
    lay = res.layout
    con.print(f"[bold]{res.model}[/] on [bold]{res.num_gpus}x {res.gpu}[/] ({res.dtype}; tp={lay['tp']} ep={lay['ep']} "
              f"dp={lay['dp']} pp={lay['pp']}), running batch {res.batch:g}, prompt {res.input_len:g}, "
              f"output {res.output_len:g} tokens")
    level = next(iter(res.interval.values()), {}).get("level", None)
    t = Table(title="Steady-state serving (vLLM-style continuous batching)")
    t.add_column("figure")
    t.add_column("predicted", justify="right")
    t.add_column(f"{level:.0%} interval" if level else "interval", justify="right")
    t.add_row("decode step latency (median ITL)", f"{res.decode_step_latency_s * 1e3:.2f} ms",
              _iv(res, "decode_step_latency_s", 1e3, ".2f"))
    t.add_row("average power, all GPUs", f"{res.avg_power_w:.0f} W", _iv(res, "avg_power_w", 1.0, ".0f"))
    t.add_row("energy per output token", f"{res.energy_per_output_token_j:.4g} J",
              _iv(res, "energy_per_output_token_j", 1.0, ".4g"))
    t.add_row("mean iteration", f"{res.mean_iteration_s * 1e3:.2f} ms", "")
    t.add_row("output throughput", f"{res.output_tokens_per_s:,.0f} tok/s", "")
    t.add_row("prefill tokens per iteration (mean, per replica)", f"{res.prefill_tokens_per_iteration:.1f}", "")
    t.add_row("GPU-busy / host time per iteration", f"{res.gpu_time_s * 1e3:.2f} / {res.host_time_s * 1e3:.2f} ms", "")
    con.print(t)
    c = res.coefficients
    con.print(f"serving coefficients: iteration overhead {c['iteration_overhead_s'] * 1e3:.3g} ms, "
              f"per-sequence {c['per_sequence_overhead_s'] * 1e6:.3g} us, active power fraction "
              f"{c['active_power_fraction']:.3g} ({c['source']})")
    if not res.interval:
        con.print("[yellow]no prediction interval: no residual table for this model family/GPU[/]")
    for n in res.notes:
        con.print(f"[yellow]note:[/] {n}")
