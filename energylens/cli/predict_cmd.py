"""``energylens predict``: energy and latency of one configuration, as a Rich summary or JSON."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from energylens.cli import app
from energylens.cli.tables import fitted_table


def _fmt_j(x: float) -> str:
    if x >= 1e4:
        return f"{x / 1e3:,.1f} kJ"
    return f"{x:,.0f} J" if x >= 100 else f"{x:.3g} J"


def _fmt_s(x: float) -> str:
    return f"{x * 1e3:.3g} ms" if x < 1 else f"{x:.3g} s"


@app.command("predict")
def predict_command(
    model: str = typer.Option("llama3-8b", "--model", "-m",
                              help="Short name, Hugging Face id, config.json path or einsum spec .yaml file "
                                   "(docs/einsum-spec.md)."),
    gpu: str = typer.Option("h100-sxm", "--gpu", "-g", help="GPU key/alias or a profile .yaml path."),
    batch: int = typer.Option(1, "--batch", "-b", help="Sequences in the batch."),
    prompt_len: int = typer.Option(2048, "--input-len", "--prompt-len", help="Prompt (input) tokens per sequence; --prompt-len is an alias."),
    output_len: int = typer.Option(256, "--output-len", help="Generated tokens per sequence (decode steps)."),
    dtype: str = typer.Option(None, "--dtype", "--weight-dtype",
                              help="Weights of attention, MLP and experts: bf16, fp16, fp8, int8, int4 (w4a16), nvfp4, "
                                   "mxfp4 (default: the checkpoint's own formats)."),
    kv_cache_dtype: str = typer.Option(None, "--kv-cache-dtype", help="KV cache: auto, bf16, fp16 or fp8 "
                                                                       "(default auto: the checkpoint's, as vLLM: fp8 "
                                                                       "where its ModelOpt config quantises the cache, "
                                                                       "else the activation dtype)."),
    activation_dtype: str = typer.Option(None, "--activation-dtype",
                                         help="GEMM activations: bf16/fp16 (weight-only GEMMs), fp8 or fp4 "
                                              "(default: as the checkpoint quantises them)."),
    tp: int = typer.Option(1, "--tp", help="Tensor-parallel degree."),
    pp: int = typer.Option(1, "--pp", help="Pipeline-parallel degree."),
    dp: int = typer.Option(1, "--dp", help="Data-parallel replicas (the batch is split over them)."),
    ep: int = typer.Option(1, "--ep", help="Expert-parallel degree (MoE models)."),
    sp: bool = typer.Option(False, "--sp", help="Sequence parallelism (reduce-scatter/all-gather)."),
    gpus_per_node: int = typer.Option(8, "--gpus-per-node", help="GPUs per node (collectives beyond it cross nodes)."),
    routing: str = typer.Option("uniform", "--routing",
                                help="MoE routing: uniform, zipf:S, dirichlet:A or a histogram FILE."),
    power_limit: float = typer.Option(None, "--power-limit", help="Per-GPU power limit, W (default: the profile's)."),
    sm_clock: float = typer.Option(None, "--sm-clock", help="Locked SM clock, MHz (default: free, up to the max)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    top: int = typer.Option(8, "--top", help="Ops to list per phase in the summary."),
) -> None:
    """Predict prefill and decode energy (J) and latency (s) of one static batch, per op, per GPU.

    Three "J per token" figures answer different questions: decode J/token (decode steps only: the
    marginal cost of generating), total J/token (whole request, prefill + decode, per output token: a
    batch job), and `energylens serve`'s energy per output token (continuous-batching steady state with
    the serving runtime: a deployment). The per-op figures count kernels only; the "how sure" line gives
    what a vLLM run of the same static batch would measure."""
    from energylens.cli.fast import run_predict

    run_predict(model, gpu, as_json=as_json, top=top, render=render, batch=batch, prompt_len=prompt_len,
                output_len=output_len, dtype=dtype, tp=tp, pp=pp, dp=dp, ep=ep, sp=sp, gpus_per_node=gpus_per_node,
                routing=routing, power_limit=power_limit, sm_clock=sm_clock,
                kv_cache_dtype=kv_cache_dtype, activation_dtype=activation_dtype)


J_PER_TOKEN_NOTE = ("J/token: prefill per prompt token; decode per output token of the decode steps alone; "
                    "total per output token of the whole request (prefill + decode), static batch, kernels only. "
                    "For a serving deployment use `energylens serve` (steady state with continuous batching).")


def render(pred, top: int = 8) -> None:
    con = Console()
    lay = pred.layout
    con.print(f"[bold]{pred.model}[/] on [bold]{lay['num_gpus']}x {pred.gpu}[/] ({pred.dtype}; tp={lay['tp']} "
              f"pp={lay['pp']} dp={lay['dp']} ep={lay['ep']}), batch {pred.workload['batch']}, "
              f"prompt {pred.workload['prompt_len']}, output {pred.workload['output_len']}")
    t = Table(title="Summary")
    for col in ("phase", "energy", "latency", "avg power (all GPUs)", "tokens/s", "J/token"):
        t.add_column(col, justify="right")
    for ph in (pred.prefill, pred.decode):
        t.add_row(ph.phase, _fmt_j(ph.energy_j), _fmt_s(ph.latency_s), f"{ph.avg_power_w:.0f} W",
                  f"{ph.tokens_per_s:,.0f}", f"{ph.energy_per_token_j:.4g}")
    total_t = pred.total_latency_s
    t.add_row("total", _fmt_j(pred.total_energy_j), _fmt_s(total_t),
              f"{pred.total_energy_j / total_t:.0f} W" if total_t else "-", "",
              f"{pred.energy_per_output_token_j:.4g}" if pred.decode.tokens else "-")
    t.caption = J_PER_TOKEN_NOTE
    con.print(t)
    render_precision(con, pred.extra.get("precision"))
    b = Table(title="Energy breakdown (J)")
    for col in ("phase", "compute", "memory", "static", "communication", "idle wait"):
        b.add_column(col, justify="right")
    for ph in (pred.prefill, pred.decode):
        br = ph.breakdown
        b.add_row(ph.phase, f"{br.compute_j:.3g}", f"{br.memory_j:.3g}", f"{br.static_j:.3g}",
                  f"{br.communication_j:.3g}", f"{br.idle_wait_j:.3g}")
    con.print(b)
    for ph in (pred.prefill, pred.decode):
        o = Table(title=f"Top ops by energy, {ph.phase}")
        for col in ("op", "calls", "TFLOP", "GB", "time", "energy", "bound"):
            if col == "op":  # long op names wrap whole instead of being cut at 80 columns
                o.add_column(col, justify="left", overflow="fold", min_width=12)
            else:
                o.add_column(col, justify="right", no_wrap=True)
        for op in ph.ops[:top]:
            o.add_row(op.name, str(op.count), f"{op.flops / 1e12:.3g}", f"{op.bytes / 1e9:.3g}", _fmt_s(op.latency_s),
                      _fmt_j(op.energy_j), op.bound + (" (power cap)" if op.power_capped else ""))
        con.print(o)
    if pred.prefill.collectives:
        c = Table(title="Collectives (prefill)")
        for col in ("collective", "kind", "group", "MB/call", "calls", "time", "energy"):
            if col == "collective":
                c.add_column(col, overflow="fold", min_width=12)
            else:
                c.add_column(col, no_wrap=True)
        for cl in pred.prefill.collectives:
            c.add_row(cl.name, cl.kind, str(cl.group_size), f"{cl.bytes / 1e6:.3g}", str(cl.count),
                      _fmt_s(cl.latency_s), _fmt_j(cl.energy_j))
        con.print(c)
    if pred.moe is not None:
        render_moe(con, pred.moe)
    iv = pred.extra.get("interval", {})
    if "total_energy_j" in iv:
        e, t = iv["total_energy_j"], iv.get("total_latency_s", {})
        con.print(f"how sure: a vLLM run of this static batch would measure about {_fmt_j(e['estimate'])} "
                  f"({e['level']:.0%} interval {_fmt_j(e['low'])}–{_fmt_j(e['high'])})"
                  + (f" in about {_fmt_s(t['estimate'])} ({_fmt_s(t['low'])}–{_fmt_s(t['high'])})" if t else "")
                  + f" ({e['basis']})", highlight=False)
    mem = pred.memory
    colour = "green" if mem.fits else "red"
    con.print(f"[{colour}]memory per GPU: {mem.required_bytes / 1e9:.1f} GB of {mem.capacity_bytes / 1e9:.0f} GB "
              f"(weights {mem.weights_bytes / 1e9:.1f}, KV cache {mem.kv_cache_bytes / 1e9:.2f}, "
              f"workspace {mem.workspace_bytes / 1e9:.1f}): {'fits' if mem.fits else 'DOES NOT FIT'}[/]")
    for w in pred.warnings:
        con.print(f"[yellow]warning:[/] {w}")


def render_precision(con: Console, report: dict | None) -> None:
    """Stored format and kernel path of each tensor class, where they were read, and what was assumed."""
    if not report:
        return
    t = Table(title=f"Precision ({report.get('source') or 'checkpoint'})")
    for col in ("tensors", "stored as", "costed as"):
        t.add_column(col)
    for cls, entry in report["classes"].items():
        t.add_row(cls.replace("_", " "), entry["format"], entry.get("gemm", "-"))
    con.print(t)
    for note in report.get("notes", ()):
        con.print(f"[cyan]note:[/] {note}", highlight=False)


def render_moe(con: Console, moe) -> None:
    """Routing statistics of a mixture-of-experts prediction (per MoE layer; decode: per step)."""
    rows = []
    for name, ph in (("prefill", moe.prefill), ("decode step", moe.decode)):
        rows.append([name, f"{ph.group_tokens:,.0f}", f"{ph.mean_rank_tokens:,.1f}", f"{ph.max_rank_tokens:,.1f}",
                     f"{ph.imbalance:.3f}", f"{ph.experts_hit:.1f}", f"{ph.experts_hit_per_rank_max:.1f}",
                     _fmt_j(ph.idle_wait_j)])
    headers = ["phase", "tokens/group", "assign/rank", "busiest rank", "imbalance", "experts hit", "hit busiest",
               "idle wait"]
    con.print(fitted_table(con, f"Experts: {moe.n_experts} routed, top-{moe.top_k}, {moe.expert_sharding} "
                                f"(ep={moe.ep}), routing {moe.routing}", headers, rows,
                           priority=[0, 2, 3, 4, 7, 5, 6, 1], left=(0,)))
    con.print("assign/rank: expert assignments per rank (mean); hit busiest: experts hit on the busiest rank",
              highlight=False)
