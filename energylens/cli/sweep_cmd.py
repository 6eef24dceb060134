"""``energylens sweep`` (vectorised sweeps, Pareto fronts, plots) and ``energylens disagg``
(disaggregated vs co-located serving)."""

from __future__ import annotations

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from energylens.cli import app, emit_json
from energylens.cli.tables import fitted_table

LIST_HELP = "comma list or range: '1,2,4,8', '1:256:x2' (doubling), '512:4096:512' (step)"


def _values(name: str, text: str | None):
    if text is None:
        return None
    from energylens.sweep.spec import parse_values

    return tuple(parse_values(name, text))


SHORT = {"ttft_s": "TTFT s", "tpot_s": "TPOT s", "request_latency_s": "latency s", "num_gpus": "GPUs",
         "prefill_tokens_per_s": "tok/s", "decode_tokens_per_s": "tok/s", "request_tokens_per_s": "tok/s",
         "prefill_energy_per_token_j": "J/token", "decode_energy_per_token_j": "J/token",
         "energy_per_output_token_j": "J/out token", "serve_itl_s": "ITL s", "serve_output_tokens_per_s": "tok/s",
         "serve_energy_per_output_token_j": "J/out token"}


def _console() -> Console:
    """Rich console; 140 columns when not a terminal (pipes, files, tests) so tables do not squash."""
    import os
    import sys

    return Console() if sys.stdout.isatty() or os.environ.get("COLUMNS") else Console(width=140)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


@app.command("sweep")
def sweep_command(
    spec_file: str = typer.Option(None, "--spec", help="Sweep spec YAML (flags below override its fields)."),
    model: list[str] = typer.Option(None, "--model", "-m", help="Model(s); repeat the flag for several."),
    gpu: list[str] = typer.Option(None, "--gpu", "-g", help="GPU(s); repeat the flag for several."),
    dtype: list[str] = typer.Option(None, "--dtype", "--weight-dtype",
                                         help="Weight dtype(s): bf16, fp16, fp8, int8, int4 (w4a16), nvfp4, mxfp4 "
                                              "(default: the checkpoint's own formats)."),
    tp: str = typer.Option(None, "--tp", help=f"Tensor-parallel degrees: {LIST_HELP}."),
    pp: str = typer.Option(None, "--pp", help="Pipeline-parallel degrees."),
    dp: str = typer.Option(None, "--dp", help="Data-parallel replicas."),
    ep: str = typer.Option(None, "--ep", help="Expert-parallel degrees (MoE models; dense models use 1)."),
    sp: str = typer.Option(None, "--sp", help="Sequence parallelism: 'off', 'on' or 'both'."),
    batch: str = typer.Option(None, "--batch", "-b", help="Batch sizes (sequences, whole deployment)."),
    prompt_len: str = typer.Option(None, "--input-len", "--prompt-len", help="Prompt (input) lengths in tokens; --prompt-len is an alias."),
    output_len: str = typer.Option(None, "--output-len", help="Output lengths (tokens; 0 = prefill only)."),
    gpus_per_node: int = typer.Option(None, "--gpus-per-node", help="GPUs per node."),
    max_ttft_s: float = typer.Option(None, "--max-ttft-s", help="SLO: prefill latency of the batch (s)."),
    max_tpot_s: float = typer.Option(None, "--max-tpot-s", help="SLO: time per output token (s)."),
    max_gpus: int = typer.Option(None, "--max-gpus", help="GPU budget."),
    min_gpus: int = typer.Option(None, "--min-gpus", help="Smallest GPU count considered."),
    ignore_memory: bool = typer.Option(False, "--ignore-memory", help="Keep configurations that do not fit."),
    serving: bool = typer.Option(False, "--serving", help="Add continuous-batching columns (concurrency = batch)."),
    power_limit: str = typer.Option(None, "--power-limit", help="Per-GPU power limit(s), W, an axis: '400,550,default'."),
    sm_clock: str = typer.Option(None, "--sm-clock", help="Locked SM clock(s), MHz, an axis: '1410,default'."),
    carbon_intensity: float = typer.Option(None, "--carbon-intensity",
                                           help="With --serving: grid carbon intensity, gCO2e/kWh (serve_gco2e_*)."),
    pue: float = typer.Option(None, "--pue", help="With --serving: data-centre PUE (>= 1; default 1)."),
    usd_per_gpu_hour: float = typer.Option(None, "--usd-per-gpu-hour",
                                           help="With --serving: GPU price, USD/GPU-hour (serve_usd_* columns)."),
    overlap_comm_sms: str = typer.Option(None, "--overlap-comm-sms",
                                         help="Overlap settings: SMs for the communication kernel, e.g. '0,16,24,32' "
                                              "(0 = no overlap, the default)."),
    overlap_chunks: str = typer.Option(None, "--overlap-chunks",
                                       help="Chunks of each overlapped GEMM + collective, e.g. '1,2,4' (default 1)."),
    overlap_collective: str = typer.Option(None, "--overlap-collective",
                                           help="Collectives to overlap: a glob over their names (default '*')."),
    out: str = typer.Option(None, "--out", "-o", help="Write the table, streamed chunk by chunk: .csv, or .parquet "
                                                      "(needs pyarrow; with --dask a directory of part files)."),
    pareto_only: bool = typer.Option(False, "--pareto-only",
                                     help="Keep only the running Pareto front (any grid size); --out writes it."),
    write_all: bool = typer.Option(False, "--all", help="Write every valid configuration, not only feasible ones."),
    plot: str = typer.Option(None, "--plot", help="Save the Pareto/breakdown/batch figure (.png, .pdf, .svg)."),
    front: str = typer.Option("decode-latency", "--front", help="Pareto front to list (see energylens.sweep.FRONTS)."),
    top: int = typer.Option(10, "--top", help="Front rows to list."),
    front_by: str = typer.Option("workload", "--front-by",
                                 help="'workload': one front per (model, GPU, prompt, output); 'none': one front."),
    dask: str = typer.Option(None, "--dask", help="Run on Dask: 'local' (in-process cluster) or a scheduler address."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary instead of tables."),
) -> None:
    """Evaluate a grid of configurations at once; list a Pareto front, the spread, and plot."""
    from energylens.checks import integer, output_path
    from energylens.errors import SpecError
    from energylens.sweep import FRONTS, SweepSpec
    from energylens.sweep.guard import check_size, explain_invalid
    from energylens.sweep.spec import Constraints

    if front not in FRONTS:
        raise SpecError("front", front, "one of " + ", ".join(FRONTS))
    if front_by not in ("workload", "none"):
        raise SpecError("front-by", front_by, "workload or none")
    integer("top", top, low=0, high=100_000, error=SpecError)
    if out:
        output_path("out", out, (".csv", ".parquet", ".pq"))
    if plot:
        output_path("plot", plot, (".png", ".pdf", ".svg"), create_parent=True)
    # without a spec file: a small useful default grid (every flag overrides it)
    base = SweepSpec.from_yaml(spec_file).to_dict() if spec_file else {"tp": [1, 2, 4, 8],
                                                                     "batch": [2**i for i in range(9)]}
    if not spec_file and not model:
        model = ["llama3-70b"]
    if not spec_file and not gpu:
        gpu = ["h100-sxm"]
    sp_values = None
    if sp is not None:
        sp_map = {"off": (False,), "on": (True,), "both": (False, True)}
        if sp not in sp_map:
            raise SpecError("sp", sp, "off, on or both")
        sp_values = sp_map[sp]
    fields = dict(models=model or None, gpus=gpu or None, dtypes=dtype or None, sp=sp_values,
                  gpus_per_node=gpus_per_node, serving=serving or None, overlap_collective=overlap_collective,
                  carbon_intensity_g_per_kwh=carbon_intensity, pue=pue, usd_per_gpu_hour=usd_per_gpu_hour)
    for name, text in (("tp", tp), ("pp", pp), ("dp", dp), ("ep", ep), ("batch", batch),
                       ("prompt_len", prompt_len), ("output_len", output_len),
                       ("overlap_comm_sms", overlap_comm_sms), ("overlap_chunks", overlap_chunks)):
        fields[name] = _values(name, text)
    if power_limit is not None or sm_clock is not None:
        from energylens.cli.plan_cmd import _floats

        fields["power_limit_w"] = None if power_limit is None else _floats("power_limit_w", power_limit)
        fields["sm_clock_mhz"] = None if sm_clock is None else _floats("sm_clock_mhz", sm_clock)
    cons = dict(base.get("constraints") or {})
    for name, v in (("max_ttft_s", max_ttft_s), ("max_tpot_s", max_tpot_s), ("max_gpus", max_gpus),
                    ("min_gpus", min_gpus)):
        if v is not None:
            cons[name] = v
    if ignore_memory:
        cons["fits_memory"] = False
    merged = {**base, **{k: (list(v) if isinstance(v, tuple) else v) for k, v in fields.items() if v is not None}}
    merged["constraints"] = cons
    spec = SweepSpec.from_dict(merged, source=spec_file or "flags")
    if isinstance(spec.constraints, dict):  # pragma: no cover - from_dict builds Constraints
        spec = spec.with_overrides(constraints=Constraints(**spec.constraints))

    if dask and dask != "local":
        from energylens.checks import text

        text("dask", dask, error=SpecError, what="'local' or a scheduler address")
    if front_by not in ("workload", "none"):
        raise SpecError("front-by", front_by, "workload or none")
    by = ("model", "gpu", "prompt_len", "output_len") if front_by == "workload" else None
    keep_table = plot is not None or not (out or pareto_only)
    if keep_table:  # refused up front: a grid too large for memory must stream (--out) or keep only fronts
        check_size(spec)
    stream_out = None if (pareto_only or keep_table) else out
    phases = ("prefill", "decode")
    spreads = [(f"{ph}_energy_per_token_j", "model") for ph in phases] + [
        (f"{ph}_energy_per_token_j", ("model", "prompt_len", "output_len")) for ph in phases]
    err = Console(stderr=True)
    with Progress(TextColumn("[bold]sweep[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=True, disable=as_json) as bar:
        task = bar.add_task(f"{spec.size:,} configurations", total=None)

        def tick(done: int, total: int, *_):
            bar.update(task, completed=done, total=total)

        kw = dict(out=stream_out, write_all=write_all, fronts=[(front, by)], spreads=spreads, top_k=top,
                  progress=tick)
        if dask:
            from energylens.distributed import run_sweep_dask, stream_sweep_dask

            addr = None if dask == "local" else dask
            res = None if keep_table else stream_sweep_dask(spec, address=addr, **kw)
            table = run_sweep_dask(spec, address=addr, progress=tick) if keep_table else None
        else:
            from energylens.sweep.stream import stream_sweep

            res = stream_sweep(spec, keep_table=keep_table, **kw)
            table = res.table
    if res is None:  # Dask, in memory: the same summary from the whole table
        from energylens.sweep.stream import Summary

        summary = Summary([(front, by)], spreads, top)
        summary.add_table(table)
        meta = table.meta
    else:
        summary, meta = res.summary, res.meta
    fr = summary.front(front, by)
    spreads_out = {ph: summary.spread(f"{ph}_energy_per_token_j", "model") for ph in phases}
    per_workload = {ph: summary.spread(f"{ph}_energy_per_token_j", ("model", "prompt_len", "output_len"))
                    for ph in phases}
    written = None
    if out and pareto_only:
        written = str(fr.write(out))
    elif out and table is not None:
        written = str((table if write_all else table.feasible()).write(out))
    elif out:
        written = meta.get("out") or out
    if plot and table is not None and len(table):
        from energylens.sweep.plots import sweep_figure

        sweep_figure(table, plot, title=", ".join(spec.models) + " on " + ", ".join(spec.gpus))
    elapsed = meta.get("elapsed_s", 0.0)
    n_valid, n_feasible = summary.valid_configs, summary.feasible_configs
    invalid_reasons = [] if n_valid else explain_invalid(spec)
    best = summary.top
    result = {
        "grid_configs": spec.size, "valid_configs": n_valid, "feasible_configs": n_feasible,
        "elapsed_s": elapsed, "configs_per_s": spec.size / elapsed if elapsed else None,
        "skipped": meta.get("skipped", []), "invalid_reasons": invalid_reasons,
        "spread": {ph: {k: {kk: vv for kk, vv in v.items() if kk in ("min", "max", "spread", "rows")}
                        for k, v in s.items()} for ph, s in spreads_out.items()},
        "spread_per_workload": {ph: [{"model": k[0], "prompt_len": k[1], "output_len": k[2], "spread": v["spread"],
                                      "min": v["min"], "max": v["max"]} for k, v in s.items()]
                                for ph, s in per_workload.items()},
        "front": {"name": front, "rows": fr.rows(top) if len(fr) else [], "size": len(fr)},
        "lowest_energy_per_output_token": best.rows(top) if best is not None and len(best) else [],
        "out": written, "plot": plot,
    }
    if as_json:
        emit_json(result)
        return
    con = _console()
    con.print(f"[bold]{spec.size:,}[/] configurations ({n_valid:,} valid, {n_feasible:,} feasible) in "
              f"{elapsed:.2f} s ({spec.size / max(elapsed, 1e-9):,.0f} configs/s)")
    for s in meta.get("skipped", []):
        con.print(f"[yellow]skipped:[/] {s}", markup=False)
    if not n_valid:
        for reason in invalid_reasons:
            con.print(f"invalid: {reason}", markup=False, highlight=False)
    sp_rows = []
    for ph, s in spreads_out.items():
        per = per_workload[ph]
        for k, v in s.items():
            w = [x["spread"] for key, x in per.items() if key[0] == k]
            sp_rows.append([str(k), ph, _fmt(v["min"]), _fmt(v["max"]), f"{v['spread']:.3g}x",
                            f"{np.median(w):.3g}x" if w else "-", f"{min(w):.3g}-{max(w):.3g}x" if w else "-",
                            f"{v['rows']:,}"])
    con.print(fitted_table(con, "Energy-efficiency spread over feasible configurations (max/min J per token)",
                           ["model", "phase", "min J/tok", "max J/tok", "spread", "median/workload",
                            "range/workload", "configs"], sp_rows, priority=[0, 1, 2, 3, 4, 7, 5, 6], left=(0,),
                           fold=(0,)))
    if len(fr):
        x, y, _, _ = FRONTS[front]
        multi = [c for c in ("model", "gpu", "dtype") if len(set(fr[c].tolist())) > 1]
        ov = ["overlap"] if any(k > 0 for k in spec.overlap_comm_sms) else []
        cols = (*multi, "layout", *ov, "batch", "prompt", "output", SHORT.get(x, x), SHORT.get(y, y), "GPUs")
        ft_rows = []
        for r in fr.rows(top):
            lay = f"tp{r['tp']} pp{r['pp']} dp{r['dp']}" + (f" ep{r['ep']}" if r["ep"] > 1 else "")
            if ov:  # comm SMs x chunks, or "-" for sequential execution
                k = r["overlap_comm_sms"]
                ov_cell = [f"{k} SMs x{r['overlap_chunks']}" if k > 0 else "-"]
            else:
                ov_cell = []
            ft_rows.append([*(str(r[c]) for c in multi), lay, *ov_cell, str(r["batch"]), str(r["prompt_len"]),
                            str(r["output_len"]), _fmt(r[x]), _fmt(r[y]), str(r["num_gpus"])])
        n_left = len(multi) + 1 + len(ov)
        con.print(fitted_table(con, f"Pareto front {front}: {len(fr)} configurations (first {min(top, len(fr))})",
                               list(cols), ft_rows, left=tuple(range(n_left)), fold=tuple(range(len(multi)))))
    else:
        con.print("[yellow]no feasible configuration: relax the constraints or add GPUs[/]")
    if written:
        con.print(f"table: {written}")
    if plot and table is not None and len(table):
        con.print(f"figure: {plot}")


@app.command("disagg")
def disagg_command(
    model: str = typer.Option("llama3-70b", "--model", "-m", help="Model name."),
    gpu: str = typer.Option("h100-sxm", "--gpu", "-g", help="Default GPU of the pools."),
    colocated: str = typer.Option("tp=8", "--colocated", help="Co-located instance, e.g. 'tp=8' or 'gpu=h200,tp=4'."),
    prefill: str = typer.Option("tp=4", "--prefill", help="Prefill instance (pool A)."),
    decode: str = typer.Option("tp=8", "--decode", help="Decode instance (pool B)."),
    concurrency: str = typer.Option("64", "--concurrency", "-c", help=f"Running requests per instance: {LIST_HELP}."),
    prompt_len: int = typer.Option(2048, "--input-len", "--prompt-len", help="Mean prompt (input) tokens; --prompt-len is an alias."),
    output_len: int = typer.Option(256, "--output-len", help="Mean output tokens."),
    prefill_batch: int = typer.Option(1, "--prefill-batch", help="Prompts per prefill iteration in pool A."),
    max_gpus: int = typer.Option(16, "--max-gpus", help="GPU budget for either deployment."),
    carbon_intensity: float = typer.Option(None, "--carbon-intensity", help="Grid carbon intensity, gCO2e/kWh."),
    pue: float = typer.Option(1.0, "--pue", help="Data-centre PUE (>= 1)."),
    usd_per_gpu_hour: float = typer.Option(None, "--usd-per-gpu-hour", help="GPU price, USD/GPU-hour."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Disaggregated (prefill pool + decode pool + KV transfer) vs co-located serving."""
    from energylens.carbon import Footprint
    from energylens.disagg import Pool, compare

    conc = np.asarray(_values("concurrency", concurrency), dtype=float)
    res = compare(model, colocated_pool=Pool.parse(colocated, field_name="colocated", gpu=gpu),
                  prefill_pool=Pool.parse(prefill, field_name="prefill", gpu=gpu),
                  decode_pool=Pool.parse(decode, field_name="decode", gpu=gpu), concurrency=conc,
                  prompt_len=prompt_len, output_len=output_len, prefill_batch=prefill_batch, max_gpus=max_gpus,
                  footprint=Footprint(carbon_intensity, pue, usd_per_gpu_hour))
    if as_json:
        emit_json(res.to_dict())
        return
    co, di = res.colocated, res.disaggregated
    con = _console()
    con.print(f"[bold]{res.model}[/], prompt {prompt_len}, output {output_len}, budget {max_gpus} GPUs; "
              f"co-located {co.pool.label()} x{co.instances}; disaggregated prefill {di.prefill_pool.label()} + "
              f"decode {di.decode_pool.label()}")
    def at(a, i):
        return np.broadcast_to(np.asarray(a), conc.shape)[i]

    rows = (("energy per output token (J)", co.energy_per_output_token_j, di.energy_per_output_token_j),
            ("  with balanced pools (J)", co.energy_per_output_token_j, di.balanced_energy_per_output_token_j),
            ("output tokens/s per GPU", co.output_tokens_per_s_per_gpu, di.output_tokens_per_s_per_gpu),
            ("TTFT (s)", co.ttft_s, di.ttft_s),
            ("inter-token latency (s)", co.itl_s, di.itl_s),
            ("GPUs used", np.asarray(co.num_gpus), di.num_gpus))
    fps = res.footprints()
    for key, label in (("gco2e_per_million_tokens", "gCO2e per million output tokens"),
                       ("usd_per_million_tokens", "USD per million output tokens")):
        if fps["colocated"][key] is not None:
            rows += ((label, fps["colocated"][key], fps["disaggregated"][key]),)
    for i in range(conc.size):
        t = Table(title=f"concurrency {conc[i]:g} running requests per instance")
        for col in ("", "co-located", "disaggregated", "ratio"):
            t.add_column(col, justify="left" if not col else "right", no_wrap=True)
        for label, a, b in rows:
            va, vb = float(at(a, i)), float(at(b, i))
            t.add_row(label, _fmt(va), _fmt(vb), f"{vb / va:.3f}" if va else "-")
        t.add_row("instances", f"{co.instances}", f"{at(di.prefill_instances, i)} prefill + "
                  f"{at(di.decode_instances, i)} decode", "")
        t.add_row("KV transfer per request", "", f"{at(di.kv_bytes_per_request, i) / 1e6:.0f} MB, "
                  f"{at(di.kv_transfer_s, i) * 1e3:.2f} ms, {at(di.kv_transfer_energy_per_request_j, i):.3g} J", "")
        con.print(t)
    for n in res.notes:
        con.print(f"[yellow]note:[/] {n}")
