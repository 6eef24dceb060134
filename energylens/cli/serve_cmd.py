"""``energylens serve``: steady-state vLLM serving (inter-token latency, power, energy per output token)."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from energylens.cli import app, emit_json
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
    input_len: float = typer.Option(None, "--input-len", "--prompt-len", help="Mean prompt (input) tokens per request; --prompt-len is an alias."),
    output_len: float = typer.Option(512.0, "--output-len", help="Mean output tokens per request."),
    task: str = typer.Option(None, "--task", help="Take --input-len from the assumption table (lm-arena-chat, gpqa, "
                             "sourcegraph-fim)."),
    dtype: str = typer.Option(None, "--dtype", "--weight-dtype",
                              help="Weights of attention, MLP and experts: bf16, fp16, fp8, int8, int4 (w4a16), nvfp4, "
                                   "mxfp4 (default: the checkpoint's own formats)."),
    kv_cache_dtype: str = typer.Option(None, "--kv-cache-dtype", help="KV cache: auto (the checkpoint's, as vLLM: fp8 where its "
                                  "ModelOpt config quantises the cache, else the activation dtype), bf16, fp16 or fp8."),
    activation_dtype: str = typer.Option(None, "--activation-dtype",
                                         help="GEMM activations: bf16/fp16 (weight-only GEMMs), fp8 or fp4."),
    max_batched_tokens: int = typer.Option(VLLM.max_batched_tokens, "--max-batched-tokens", help="vLLM chunked-prefill token budget."),
    level: float = typer.Option(0.8, "--interval-level", help="Prediction interval level: 0.5, 0.8 or 0.9."),
    routing: str = typer.Option(None, "--routing", help="MoE routing: uniform, zipf:S, dirichlet:A or a histogram "
                                "FILE (default: the fitted routing_skew of serving_coefficients.yaml, zipf:S)."),
    concurrency: float = typer.Option(None, "--concurrency", "-c", help="Closed loop: C clients, each sending its "
                                      "next request when the previous one finishes (TTFT, TPOT, queueing)."),
    request_rate: float = typer.Option(None, "--request-rate", help="Open loop: Poisson arrivals, requests/s "
                                       "(queueing for a slot and KV memory)."),
    staggered: bool = typer.Option(False, "--staggered", help="Closed loop: clients spread over the cycle "
                                   "(variable-length traffic) instead of starting together (fixed-length benchmark)."),
    num_requests: float = typer.Option(None, "--num-requests", help="Closed loop: a finite benchmark run of N "
                                       "requests (>= --concurrency) whose clients start together: TTFT/TPOT are "
                                       "its means, the first wave included (default: the steady state)."),
    max_num_seqs: int = typer.Option(None, "--max-num-seqs", help="vLLM max_num_seqs: running-request cap "
                                     "(default: KV memory only)."),
    gpu_memory_utilization: float = typer.Option(0.9, "--gpu-memory-utilization", help="vLLM fraction of GPU "
                                                 "memory for weights, activations and KV cache."),
    iteration_overhead_s: float = typer.Option(None, "--iteration-overhead-s", help="Host time per engine iteration "
                                               "that the GPUs do not overlap, s (default: the value fitted for the "
                                               "GPU on vLLM 0.11 runs; 0 for an engine that hides it)."),
    per_sequence_overhead_s: float = typer.Option(None, "--per-sequence-overhead-s", help="Time per running "
                                                  "request per iteration beyond the kernels, s (default: fitted)."),
    power_limit: float = typer.Option(None, "--power-limit", help="Per-GPU power limit, W (default: the profile's)."),
    sm_clock: float = typer.Option(None, "--sm-clock", help="Locked SM clock, MHz (default: free, up to the max)."),
    carbon_intensity: float = typer.Option(None, "--carbon-intensity", help="Grid carbon intensity, gCO2e/kWh."),
    pue: float = typer.Option(1.0, "--pue", help="Data-centre power usage effectiveness (>= 1; facility / IT energy)."),
    usd_per_gpu_hour: float = typer.Option(None, "--usd-per-gpu-hour", help="GPU rental/amortised cost, USD/GPU-hour."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Predict serving: steady state at a running --batch, or under a load (--concurrency C closed loop,
    --request-rate R open loop) with TTFT/TPOT, throughput per GPU, power and energy per output token.

    Its energy per output token is the serving figure (continuous batching: each iteration decodes the
    running requests and prefills the arriving prompts; host and sampling overheads included): use it for
    a deployment. `energylens predict` gives the static-batch figures (decode steps only, or the whole
    request) of the kernels alone."""
    from energylens.carbon import Footprint
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
    footprint = Footprint(carbon_intensity, pue, usd_per_gpu_hour)
    from energylens.serving_coefficients import with_overheads

    coefficients = with_overheads(iteration_overhead_s=iteration_overhead_s,  # the shipped table unless given
                                  per_sequence_overhead_s=per_sequence_overhead_s)
    if num_requests is not None and concurrency is None:
        raise WorkloadError("num_requests", num_requests, "only with --concurrency (a closed-loop run)")
    if concurrency is not None or request_rate is not None:
        from energylens.serving_load import serve_load

        res = serve_load(model, gpu, concurrency=concurrency, request_rate=request_rate, input_len=input_len,
                         output_len=output_len, num_gpus=num_gpus, tp=tp, ep=ep, dp=dp, pp=pp, dtype=dtype,
                         max_batched_tokens=max_batched_tokens, max_num_seqs=max_num_seqs,
                         gpu_memory_utilization=gpu_memory_utilization, staggered=staggered, interval_level=level,
                         routing=routing, power_limit_w=power_limit, sm_clock_mhz=sm_clock, footprint=footprint,
                         kv_cache_dtype=kv_cache_dtype, activation_dtype=activation_dtype, coefficients=coefficients,
                         num_requests=num_requests)
        if as_json:
            emit_json(res.to_dict())
            return
        render_load(res)
        return
    res = serve(model, gpu, num_gpus=num_gpus, tp=tp, ep=ep, dp=dp, pp=pp, batch=batch, input_len=input_len,
                output_len=output_len, dtype=dtype, max_batched_tokens=max_batched_tokens, interval_level=level,
                routing=routing, gpu_memory_utilization=gpu_memory_utilization, power_limit_w=power_limit,
                sm_clock_mhz=sm_clock, footprint=footprint, kv_cache_dtype=kv_cache_dtype,
                activation_dtype=activation_dtype, coefficients=coefficients)
    if as_json:
        emit_json(res.to_dict())
        return
    render(res)


def render_load(res) -> None:
    con = Console()
    lay = res.layout
    load = (f"{res.concurrency:g} closed-loop clients" + (" (staggered)" if res.staggered else " (starting together)")
            + (f", a run of {res.num_requests:g} requests" if res.num_requests is not None else "")
            if res.mode == "closed_loop" else f"Poisson arrivals at {res.request_rate_per_s:g} requests/s")
    con.print(f"[bold]{res.model}[/] on [bold]{res.num_gpus}x {res.gpu}[/] ({res.dtype}; tp={lay['tp']} ep={lay['ep']} "
              f"dp={lay['dp']} pp={lay['pp']}), {load}, prompt {res.input_len:g}, output {res.output_len:g} tokens")
    t = Table(title="Serving under load (vLLM-style continuous batching)")
    t.add_column("figure")
    t.add_column("mean", justify="right")
    t.add_column("p90", justify="right")
    t.add_column("interval", justify="right")
    t.add_row("TTFT", f"{res.ttft_s * 1e3:.1f} ms", f"{res.ttft_p90_s * 1e3:.1f} ms", "")
    t.add_row("TPOT", f"{res.tpot_s * 1e3:.2f} ms", f"{res.tpot_p90_s * 1e3:.2f} ms", _iv(res, "tpot_s", 1e3, ".2f"))
    t.add_row("output tokens/s per GPU", f"{res.output_tokens_per_s_per_gpu:,.1f}", "", "")
    t.add_row("average power, all GPUs", f"{res.avg_power_w:.0f} W", "", _iv(res, "avg_power_w", 1.0, ".0f"))
    t.add_row("energy per output token", f"{res.energy_per_output_token_j:.4g} J", "",
              _iv(res, "energy_per_output_token_j", 1.0, ".4g"))
    t.add_row("running batch (mean) / slots", f"{res.running_batch:.1f} / {res.max_running_requests:.0f}", "", "")
    t.add_row("requests waiting for a slot (mean)", f"{res.queued_requests:.1f}", "", "")
    t.add_row("request rate / saturation", f"{res.request_rate_per_s:.3g} / {res.saturation_request_rate_per_s:.3g} "
              "req/s", "", "")
    con.print(t)
    kv = res.kv_cache
    con.print(f"KV cache per replica: {kv['kv_tokens']:,.0f} tokens ({kv['free_bytes'] / 2**30:.1f} GiB free per GPU "
              f"of {kv['usable_bytes'] / 2**30:.1f} GiB usable; weights {kv['weights_bytes'] / 2**30:.1f} GiB)")
    for n in res.notes:
        con.print(f"[yellow]note:[/] {n}")


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
    fp = res.footprint
    if fp.get("gco2e_per_million_tokens") is not None:
        t.add_row("carbon per million output tokens", f"{fp['gco2e_per_million_tokens']:.4g} gCO2e", "")
    if fp.get("usd_per_million_tokens") is not None:
        t.add_row("cost per million output tokens", f"{fp['usd_per_million_tokens']:.4g} USD", "")
    con.print(t)
    op = res.operating_point
    if op.get("sm_clock_mhz") or op.get("power_limit_w") != op.get("default_power_limit_w"):
        clock = f"SM clock locked at {op['sm_clock_mhz']:g} MHz" if op.get("sm_clock_mhz") else "SM clock free"
        con.print(f"operating point: power limit {op['power_limit_w']:g} W per GPU (default "
                  f"{op['default_power_limit_w']:g} W), {clock} (DVFS model: energylens/cost/dvfs.py)")
    from energylens.cli.predict_cmd import render_precision

    render_precision(con, res.precision)
    c = res.coefficients
    con.print(f"serving coefficients: iteration overhead {c['iteration_overhead_s'] * 1e3:.3g} ms, "
              f"per-sequence {c['per_sequence_overhead_s'] * 1e6:.3g} us, active power fraction "
              f"{c['active_power_fraction']:.3g}, MoE routing skew {c.get('routing_skew', 0.0):g} ({c['source']})")
    if not res.interval:
        con.print("[yellow]no prediction interval: no residual table for this model family/GPU[/]")
    for n in res.notes:
        con.print(f"[yellow]note:[/] {n}")
