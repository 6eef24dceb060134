"""``energylens overlap``: sweep the SMs given to communication and the chunk count of compute-communication
overlap; print the table, mark the Pareto-optimal allocations, optionally write the plot."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from energylens.cli import app, emit_json
from energylens.cli.tables import fitted_table


@app.command("overlap")
def overlap_command(
    model: str = typer.Option("llama3-70b", "--model", "-m", help="Short name, Hugging Face id or config.json path."),
    gpu: str = typer.Option("h100-sxm", "--gpu", "-g", help="GPU key/alias or a profile .yaml path."),
    phase: str = typer.Option("prefill", "--phase", help="prefill or decode."),
    batch: int = typer.Option(1, "--batch", "-b", help="Sequences in the batch."),
    prompt_len: int = typer.Option(2048, "--input-len", "--prompt-len", help="Prompt (input) tokens per sequence; --prompt-len is an alias."),
    output_len: int = typer.Option(128, "--output-len", help="Generated tokens per sequence (decode phase)."),
    dtype: str = typer.Option(None, "--dtype", help="Weight dtype: bf16, fp16 or fp8 (default: the model's)."),
    tp: int = typer.Option(1, "--tp", help="Tensor-parallel degree."),
    pp: int = typer.Option(1, "--pp", help="Pipeline-parallel degree."),
    dp: int = typer.Option(1, "--dp", help="Data-parallel replicas."),
    ep: int = typer.Option(1, "--ep", help="Expert-parallel degree (MoE models)."),
    sp: bool = typer.Option(False, "--sp", help="Sequence parallelism (all-gather / reduce-scatter, Megatron-style)."),
    gpus_per_node: int = typer.Option(8, "--gpus-per-node", help="GPUs per node."),
    routing: str = typer.Option(None, "--routing", help="MoE routing: uniform, zipf:S, dirichlet:A or a FILE."),
    collective: str = typer.Option("*", "--collective",
                                   help="Glob over collective names to overlap, e.g. '*:all_to_all', '*:reduce_scatter'."),
    compute: str = typer.Option(None, "--compute", help="Glob over kernel names to overlap with (default: data flow)."),
    comm_sms: str = typer.Option("2,4,8,12,16,20,24,32,40,48,64", "--comm-sms",
                                 help="SMs for the communication kernel: '2,4,8' or ranges '8-64:8'."),
    chunks: str = typer.Option("1,2,4,8", "--chunks", help="Chunk counts: '1,2,4,8'."),
    whole_gemm_efficiency: bool = typer.Option(
        False, "--whole-gemm-efficiency",
        help="Chunks keep the whole GEMM's efficiency (stream-K-like) instead of their own wave quantisation."),
    plot: str = typer.Option(None, "--plot", help="Write the energy-vs-latency plot (.png, .pdf, .svg)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of the table."),
    pareto_only: bool = typer.Option(False, "--pareto-only", help="List only the baseline and Pareto rows."),
) -> None:
    """Compute-communication overlap: SM allocation x chunks, latency, energy and the Pareto front."""
    from energylens.checks import output_path
    from energylens.hardware import load_gpu
    from energylens.overlap.cost import OverlapAssumptions
    from energylens.overlap.rules import MAX_CHUNKS, parse_int_list
    from energylens.overlap.search import sweep_overlap

    if plot:
        output_path("plot", plot, (".png", ".pdf", ".svg"), create_parent=True)
    g = load_gpu(gpu)
    ks = parse_int_list(comm_sms, "--comm-sms", 0, g.sm_count - 1)
    cs = parse_int_list(chunks, "--chunks", 1, MAX_CHUNKS)
    kwargs = dict(phase=phase, comm_sms=ks, chunks=cs, collective=collective, compute=compute, batch=batch,
                  prompt_len=prompt_len, output_len=output_len, dtype=dtype, tp=tp, pp=pp, dp=dp, ep=ep, sp=sp,
                  gpus_per_node=gpus_per_node, routing=routing,
                  assumptions=OverlapAssumptions(chunk_wave_quantization=not whole_gemm_efficiency))
    if as_json:
        sweep = sweep_overlap(model, g, **kwargs)
    else:
        with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), transient=True, console=Console(stderr=True)) as bar:
            task = bar.add_task("SM allocations", total=None)
            sweep = sweep_overlap(model, g, progress=lambda done, total: bar.update(task, completed=done, total=total),
                                  **kwargs)
    path = None
    if plot:
        from energylens.overlap.plot import plot_sweep

        path = plot_sweep(sweep, plot)
    if as_json:
        d = sweep.to_dict()
        d["plot"] = str(path) if path else None
        emit_json(d)
        return
    render(sweep, pareto_only)
    if path:
        Console().print(f"plot written to [bold]{path}[/]")


def render(sweep, pareto_only: bool = False) -> None:
    con = Console()
    lay, wl = sweep.layout, sweep.workload
    con.print(f"[bold]{sweep.model}[/] on [bold]{lay['num_gpus']}x {sweep.gpu}[/] (tp={lay['tp']} pp={lay['pp']} "
              f"dp={lay['dp']} ep={lay['ep']}{' sp' if lay.get('sp') else ''}), {sweep.phase}, batch {wl['batch']}, "
              f"prompt {wl['prompt_len']}" + (f", output {wl['output_len']}" if sweep.phase == "decode" else ""))
    if not sweep.pairs:
        con.print(f"[yellow]no collective matches '{sweep.collective}' next to a GEMM: nothing to overlap[/]")
    for p in sweep.pairs:
        con.print(f"  overlapped: {p}")
    headers = ["", "k", "C", "layer us", "layer J", f"{sweep.phase} ms", f"{sweep.phase} J", "dt", "dE",
               "hidden", "GEMM slow", "P ovl"]
    front = set(sweep.pareto_indices().tolist())
    rows, styles = [], []
    for i, r in enumerate(sweep.rows()):
        if pareto_only and i not in front and i != 0:
            continue
        mark = ("*" if i in front else "") + ("B" if i == 0 else "")
        styles.append("bold" if i == 0 else ("green" if i in front else None))
        rows.append([mark, "-" if i == 0 else str(r["comm_sms"]), "-" if i == 0 else str(r["chunks"]),
                     f"{r['layer_latency_s'] * 1e6:.1f}", f"{r['layer_energy_j']:.4g}",
                     f"{r['latency_s'] * 1e3:.4g}", f"{r['energy_j']:.5g}", f"{r['latency_change']:+.2%}",
                     f"{r['energy_change']:+.2%}", f"{r['hidden_fraction']:.0%}", f"{r['compute_slowdown']:+.1%}",
                     f"{r['overlap_power_w']:.0f} W" if r["overlap_power_w"] else "-"])
    # at 80 columns the per-layer figures and the overlap power go first; k, C and the phase totals stay
    t = fitted_table(con, "SM allocation (k = SMs for communication, C = chunks; * = Pareto-optimal)", headers,
                     rows, priority=[0, 1, 2, 5, 6, 7, 8, 9, 10, 11, 3, 4], styles=styles)
    con.print(t)
    con.print("B = sequential baseline (no overlap, NCCL default SMs); C = 1: no overlap, the collective alone on k "
              "SMs. layer: one layer (us; J on every GPU running it; decode: summed over the steps); phase J: all GPUs; "
              "dt/dE vs baseline; hidden: "
              "share of communication time under compute; GEMM slow: overlapped GEMM time vs alone; P ovl: per-GPU "
              "power while both run.")
