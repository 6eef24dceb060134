"""``predict``: model x GPU x layout x workload -> Prediction (prefill, decode, per op, per GPU)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from energylens.cost.phase import USABLE_MEMORY_FRACTION, PhaseArrays, evaluate_phase, memory_per_gpu
from energylens.cost.power import idle_energy_j
from energylens.errors import LayoutError, SpecError, WorkloadError
from energylens.graph.model import Model
from energylens.hardware.profile import DTYPE_BYTES, GPU, load_gpu
from energylens.intervals import runtime_interval
from energylens.models.registry import load_model
from energylens.moe.binding import is_moe, resolve_routing
from energylens.overlap.cost import evaluate_overlap
from energylens.parallel.layout import Layout, check_layout
from energylens.program import Program, build_program
from energylens.results import (
    CollectiveResult,
    EnergyBreakdown,
    GPUResult,
    MemoryReport,
    MoEPhaseStats,
    MoEReport,
    OpResult,
    PhaseResult,
    Prediction,
)
from energylens.specs.execution import Execution
from energylens.specs.system import System
from energylens.workload import Workload, decode_sizes, prefill_sizes

WEIGHT_DTYPES = ("bf16", "fp16", "fp8")


def prepare(model: str | Model, gpu: str | GPU, dtype: str | None, *, power_limit_w: float | None = None,
            sm_clock_mhz: float | None = None) -> tuple[Model, GPU]:
    """The model (with ``dtype``) and the GPU (at a per-GPU power limit / locked SM clock, ``cost.dvfs``)."""
    from energylens.cost.dvfs import with_operating_point

    m = load_model(model)
    g = with_operating_point(load_gpu(gpu), power_limit_w=power_limit_w, sm_clock_mhz=sm_clock_mhz)
    if dtype is not None:
        if dtype not in WEIGHT_DTYPES:
            raise WorkloadError("dtype", dtype, "one of " + ", ".join(WEIGHT_DTYPES))
        m = m.with_dtypes(weight_dtype=dtype)
    g.peak_flops(m.weight_dtype if m.weight_dtype != "fp8" else "fp8")  # raises if unsupported on this GPU
    return m, g


def batch_per_replica(workload: Workload, layout: Layout):
    b = np.asarray(workload.batch)
    dp = np.asarray(layout.dp)
    if np.any(b % dp != 0):
        raise LayoutError("dp", layout.dp, f"a divisor of the batch ({workload.batch}): each replica serves batch/dp")
    return b // dp


def provenance(gpu: GPU, model: Model) -> dict:
    """Kind (spec, measured, derived, fitted, assumed) and source of every GPU coefficient this prediction
    used, so a reader sees which numbers came from measurement and which from estimates."""
    dtypes = {model.act_dtype, "fp8" if model.weight_dtype == "fp8" else model.act_dtype, "fp32"}
    names = ["hbm_bandwidth", "max_memory_efficiency", "energy_per_byte_hbm", "idle_power", "power_limit",
             "kernel_overhead", "gemm_tile_m", "gemm_tile_n", "gemm_k_half", "sm_count", "hbm_capacity"]
    for dt in sorted(dtypes):
        names += [f"peak_flops_{dt}", f"max_compute_efficiency_{dt}", f"energy_per_flop_{dt}"]
    out = {"gpu_profile": gpu.path or gpu.key}
    for name in names:
        q = gpu.quantities.get(name)
        if q is not None:
            out[name] = {"value": q.value, "unit": q.unit, "kind": q.kind, "source": q.source}
    return out


def operating_point(gpu: GPU) -> dict:
    """The GPU's power limit (W per GPU), its default, and the locked SM clock (MHz; ``None``: free)."""
    from energylens.cost.dvfs import reference_power_limit_w

    return {"power_limit_w": gpu.power_limit_w, "default_power_limit_w": reference_power_limit_w(gpu),
            "sm_clock_mhz": gpu.operating.sm_clock_mhz if gpu.operating else None}


def setup(model: str | Model, gpu: str | GPU, dtype: str | None, batch, prompt_len, output_len, layout: Layout):
    """Checked inputs of one prediction: (model, gpu, workload, batch per replica, per-rank program)."""
    m, g = prepare(model, gpu, dtype)
    for name, value in (("batch", batch), ("prompt_len", prompt_len)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise WorkloadError(name, value, "a positive integer")
    w = Workload(batch, prompt_len, output_len)
    check_layout(m, layout, strict=True)
    return m, g, w, batch_per_replica(w, layout), build_program(m, layout)


_KEYWORD_DEFAULTS = dict(gpu=None, batch=1, prompt_len=2048, output_len=256, dtype=None, tp=1, pp=1, dp=1, ep=1,
                         sp=False, gpus_per_node=8, layout=None, routing=None, power_limit_w=None,
                         sm_clock_mhz=None)


def predict(
    model: str | Model = "llama3-8b",
    execution: Execution | str | GPU = "h100-sxm",
    system: System | None = None,
    *,
    gpu: str | GPU | None = None,
    batch: int = 1,
    prompt_len: int = 2048,
    output_len: int = 256,
    dtype: str | None = None,
    tp: int = 1,
    pp: int = 1,
    dp: int = 1,
    ep: int = 1,
    sp: bool = False,
    gpus_per_node: int = 8,
    layout: Layout | None = None,
    routing=None,
    power_limit_w: float | None = None,
    sm_clock_mhz: float | None = None,
) -> Prediction:
    """Predict energy (J) and latency (s) of prefilling ``batch`` prompts and decoding ``output_len`` tokens.

    Core form: ``predict(model, execution, system)`` with the three specs (``energylens.specs``):
    a ``Model`` (or a name / HF id / config.json / spec .yaml), an ``Execution`` and a ``System``.

    Keyword form (a convenience that builds the specs): ``predict("llama3-70b", "h100-sxm", tp=8, ...)``;
    the second argument (or ``gpu=``) is the GPU, ``dtype`` overrides the weight dtype, ``layout`` replaces
    the degree keywords, and the system is the smallest one of ``gpus_per_node``-GPU nodes that holds the
    layout. ``routing`` (mixture-of-experts models): ``"uniform"`` (default), ``"zipf:S"``,
    ``"dirichlet:A"``, a recorded per-layer expert-count histogram file, or an ``energylens.moe.Routing``.
    ``power_limit_w`` (per GPU) and ``sm_clock_mhz`` (locked SM clock) set the GPU's operating point
    (:mod:`energylens.cost.dvfs`); default: the profile's limit, clocks free.
    """
    if isinstance(execution, Execution):
        kw = dict(gpu=gpu, batch=batch, prompt_len=prompt_len, output_len=output_len, dtype=dtype, tp=tp, pp=pp,
                  dp=dp, ep=ep, sp=sp, gpus_per_node=gpus_per_node, layout=layout, routing=routing,
                  power_limit_w=power_limit_w, sm_clock_mhz=sm_clock_mhz)
        given = {k: v for k, v in kw.items() if not (v is _KEYWORD_DEFAULTS[k] or (
            type(v) is type(_KEYWORD_DEFAULTS[k]) and v == _KEYWORD_DEFAULTS[k]))}
        if given:
            raise SpecError(next(iter(given)), next(iter(given.values())),
                            "no keyword next to an Execution: set it on the Execution or System")
        if not isinstance(system, System):
            raise SpecError("system", system, "an energylens.specs.System next to an Execution")
        return predict_specs(model, execution, system)
    if system is not None:
        raise SpecError("execution", execution, "an energylens.specs.Execution when a System is given")
    for name, value in (("batch", batch), ("prompt_len", prompt_len)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise WorkloadError(name, value, "a positive integer")
    lay = layout or Layout(tp=tp, pp=pp, dp=dp, ep=ep, sp=sp, gpus_per_node=gpus_per_node)
    ex = Execution.from_layout(lay, batch=int(batch), prompt_len=int(prompt_len), output_len=_int(output_len),
                               routing=routing, power_limit_w=power_limit_w, sm_clock_mhz=sm_clock_mhz)
    m, _ = prepare(model, gpu if gpu is not None else execution, dtype)
    return predict_specs(m, ex, System.for_execution(gpu if gpu is not None else execution, ex,
                                                     int(lay.gpus_per_node)))


def _int(value):
    return int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value


def predict_specs(model: str | Model, execution: Execution, system: System) -> Prediction:
    """The core call: one ``Execution`` of a ``Model`` on a ``System`` (see ``predict``)."""
    m = load_model(model)
    system.check(execution)
    g = system.gpu_for(execution)
    g.peak_flops(m.weight_dtype if m.weight_dtype != "fp8" else "fp8")  # raises if unsupported on this GPU
    lay = execution.layout(system.gpus_per_node)
    check_layout(m, lay, strict=True)
    w = Workload(execution.batch, execution.prompt_len, execution.output_len)
    bpr = batch_per_replica(w, lay)
    program = build_program(m, lay)
    batch, prompt_len, output_len = execution.batch, execution.prompt_len, execution.output_len
    routing = execution.routing
    route = None
    if routing is not None or is_moe(m):
        route = execution.resolved_routing or resolve_routing(None)  # checked for every model; used by MoE only
    moe_kw = {"routing": route} if is_moe(m) else {}
    plans = tuple(p for p in (execution.overlap if execution.overlap is not None else m.overlap) if p.active)
    phases = []
    for sizer, decode in ((prefill_sizes, False), (decode_sizes, True)):
        sizes, weights = sizer(w, bpr)
        pa = evaluate_phase(m, g, lay, program, sizes, weights, decode=decode, **moe_kw)
        ov = None
        if plans:
            ov = evaluate_overlap(m, g, lay, program, sizes, weights, decode=decode, plans=plans, baseline=pa,
                                  **moe_kw)
        phases.append((pa, ov))
    (pre, pre_ov), (dec, dec_ov) = phases
    chunk = {} if execution.max_batched_tokens is None else {"max_batched_tokens": execution.max_batched_tokens}
    mem = memory_per_gpu(m, lay, program, g, bpr, prompt_len + output_len, prompt_len, **chunk)
    memory = MemoryReport(*(float(mem[k]) for k in ("weights_bytes", "kv_cache_bytes", "workspace_bytes",
                                                   "capacity_bytes")), USABLE_MEMORY_FRACTION)
    warnings = []
    if not memory.fits:
        warnings.append(
            f"does not fit: {memory.required_bytes / 1e9:.1f} GB needed per GPU (weights "
            f"{memory.weights_bytes / 1e9:.1f} + KV cache {memory.kv_cache_bytes / 1e9:.1f} + workspace "
            f"{memory.workspace_bytes / 1e9:.1f}) > {USABLE_MEMORY_FRACTION:.0%} of {memory.capacity_bytes / 1e9:.0f} GB "
            f"on {g.name}; use more GPUs (tp/pp), a smaller batch or fp8"
        )
    prefill = _phase_result("prefill", pre, m, g, lay, program, tokens=float(batch * prompt_len))
    decode = _phase_result("decode", dec, m, g, lay, program, tokens=float(batch * output_len))
    extra: dict = {}
    if plans:
        extra["overlap"] = {"plans": [p.to_dict() for p in plans],
                            **{ph.phase: _overlap_summary(ph, ov) for ph, ov in ((prefill, pre_ov), (decode, dec_ov))}}
        prefill, decode = _with_overlap(prefill, pre_ov), _with_overlap(decode, dec_ov)
    moe_report = None
    if is_moe(m):
        moe_report = _moe_report(m, lay, route, pre, dec)
        recorded_k = getattr(route, "recorded_top_k", None)
        if recorded_k is not None and recorded_k != moe_report.top_k:
            warnings.append(f"routing file {route.name} was recorded with top_k={recorded_k}; "
                            f"{m.name} routes top_k={moe_report.top_k}")
    elif routing is not None and route is not None and route.kind != "uniform":
        warnings.append(f"routing {route.name} ignored: {m.name} has no experts")
    return Prediction(
        model=m.hf_id or m.name,
        gpu=g.key,
        dtype=m.weight_dtype,
        layout=lay.to_dict(),
        workload=w.to_dict(),
        prefill=prefill,
        decode=decode,
        memory=memory,
        warnings=tuple(warnings),
        extra={"interval": runtime_interval(prefill.energy_j + decode.energy_j, prefill.latency_s + decode.latency_s),
               "provenance": provenance(g, m), "operating_point": operating_point(g), **extra},
        moe=moe_report,
    )


def _overlap_summary(phase: PhaseResult, ov) -> dict:
    return {"sequential_energy_j": phase.energy_j, "sequential_latency_s": phase.latency_s,
            "energy_j": _f(ov.energy_j), "latency_s": _f(ov.latency_s),
            "pairs": [f"{pc.collective} -> {pc.compute} ({pc.direction})" for pc in ov.pairs]}


def _with_overlap(phase: PhaseResult, ov) -> PhaseResult:
    """Phase totals with the overlap applied; ops, collectives, breakdown and per-GPU rows stay the
    sequential execution's (the difference is in ``Prediction.extra['overlap']``)."""
    energy, latency = _f(ov.energy_j), _f(ov.latency_s)
    return replace(phase, energy_j=energy, latency_s=latency,
                   avg_power_w=energy / latency if latency > 0 else 0.0,
                   energy_per_token_j=energy / phase.tokens if phase.tokens > 0 else 0.0,
                   tokens_per_s=phase.tokens / latency if latency > 0 else 0.0)


def _moe_report(model: Model, layout: Layout, route, pre: PhaseArrays, dec: PhaseArrays) -> MoEReport:
    """Routing statistics of both phases (first configuration; decode: one step, all steps alike)."""
    info = model.info["moe"]
    ep = int(np.asarray(layout.ep).reshape(-1)[0])

    def phase(pa: PhaseArrays) -> MoEPhaseStats:
        b = pa.moe
        per_rank = () if b.tokens_per_rank is None else tuple(
            float(v) for v in np.asarray(b.tokens_per_rank).reshape(-1, b.tokens_per_rank.shape[-1])[0])
        return MoEPhaseStats(
            group_tokens=_f(b.group_tokens), tokens_per_rank=per_rank, mean_rank_tokens=_f(b.mean_rank_tokens),
            max_rank_tokens=_f(b.max_rank_tokens), imbalance=_f(b.imbalance), experts_hit=_f(b.experts_hit),
            experts_hit_per_rank_mean=_f(b.experts_hit_per_rank_mean),
            experts_hit_per_rank_max=_f(b.experts_hit_per_rank_max), idle_wait_j=_f(pa.moe_idle_wait_j),
            method=b.method,
        )

    return MoEReport(routing=route.name, n_experts=int(info["n_experts"]), top_k=int(info["top_k"]), ep=ep,
                     moe_layers=int(info["moe_layers"]),
                     expert_sharding="expert-parallel" if ep > 1 else "tensor-parallel",
                     prefill=phase(pre), decode=phase(dec))


def _f(x) -> float:
    return float(np.asarray(x).reshape(-1)[0]) if np.size(x) else 0.0


def _phase_result(phase: str, pa: PhaseArrays, model: Model, gpu: GPU, layout: Layout, program: Program,
                  tokens: float) -> PhaseResult:
    tp, dp, pp = int(layout.tp), int(layout.dp), int(layout.pp)
    mb = _f(pa.microbatches)  # pipeline micro-batches: every record below runs once per micro-batch
    reduce = pa.reduce
    ops = []
    # MoE: latency (and bound) from the busiest expert-parallel rank, FLOPs/bytes/energy from the mean rank
    energy_records = pa.kernels_energy if pa.kernels_energy is not None else pa.kernels
    for (_, r), (_, re) in zip(pa.kernels, energy_records, strict=True):
        lat = _f(reduce(r.cost.latency_s)) * r.count * mb
        comp = _f(reduce(r.cost.compute_s))
        mem = _f(reduce(r.cost.memory_s))
        n = r.count * tp * dp * mb
        ops.append(OpResult(
            name=r.name, kind=r.kind, ops=r.ops, count=int(round(n)),
            flops=_f(reduce(re.flops)) * n, bytes=_f(reduce(re.bytes)) * n, latency_s=lat,
            energy_j=_f(reduce(re.cost.energy_j)) * n, compute_energy_j=_f(reduce(re.cost.compute_energy_j)) * n,
            memory_energy_j=_f(reduce(re.cost.memory_energy_j)) * n,
            static_energy_j=_f(reduce(re.cost.static_energy_j)) * n,
            bound="compute" if comp >= mem else "memory", power_capped=bool(np.any(r.cost.power_capped)),
        ))
    colls = []
    for _, c in pa.collectives:
        n = c.count * tp * dp * mb
        colls.append(CollectiveResult(c.name, c.kind, c.axis, int(_f(c.group_size)), _f(reduce(c.message_bytes)) if
                                      np.ndim(c.message_bytes) else float(c.message_bytes), int(round(c.count * mb)),
                                      _f(reduce(c.latency_s)) * c.count * mb, _f(reduce(c.energy_j_per_gpu)) * n,
                                      c.reason))
    if pa.p2p is not None and pp > 1:
        c = pa.p2p
        colls.append(CollectiveResult(c.name, c.kind, c.axis, 2, _f(reduce(c.message_bytes)), int(round((pp - 1) * mb)),
                                      _f(pa.p2p_time_s) * mb,
                                      _f(reduce(c.energy_j_per_gpu)) * (pp - 1) * 2 * tp * dp * mb, c.reason))
    latency = _f(pa.latency_s)
    per_gpu = _per_gpu(pa, model, gpu, layout, latency)
    energy = _f(pa.energy_j)
    return PhaseResult(
        phase=phase,
        energy_j=energy,
        latency_s=latency,
        avg_power_w=energy / latency if latency > 0 else 0.0,
        tokens=tokens,
        energy_per_token_j=energy / tokens if tokens > 0 else 0.0,
        tokens_per_s=tokens / latency if latency > 0 else 0.0,
        breakdown=EnergyBreakdown(_f(pa.compute_j), _f(pa.memory_j), _f(pa.static_j), _f(pa.communication_j),
                                  _f(pa.idle_wait_j)),
        ops=tuple(sorted(ops, key=lambda o: -o.energy_j)),
        collectives=tuple(colls),
        per_gpu=per_gpu,
    )


def _per_gpu(pa: PhaseArrays, model: Model, gpu: GPU, layout: Layout, latency: float) -> tuple[GPUResult, ...]:
    """Each GPU's busy time, idle (waiting) time and energy; stages hold contiguous layers."""
    tp, dp, pp = int(layout.tp), int(layout.dp), int(layout.pp)
    mb = _f(pa.microbatches)
    n_layers = model.n_layers
    per_stage = n_layers // pp
    p2p_t = _f(pa.p2p_time_s) / (pp - 1) if pp > 1 else 0.0
    p2p_e = _f(pa.reduce(pa.p2p.energy_j_per_gpu)) if (pa.p2p is not None and pp > 1) else 0.0
    out = []
    for stage in range(pp):
        lo, hi = stage * per_stage, (stage + 1) * per_stage
        busy = 0.0
        energy = 0.0
        start = 0
        for block in model.blocks:
            n = max(0, min(hi, start + block.count) - max(lo, start))
            start += block.count
            busy += n * _f(pa.layer_time_s[block.name])
            energy += n * _f(pa.layer_energy_j[block.name])
        if stage == 0:
            busy += _f(pa.layer_time_s["pre"])
            energy += _f(pa.layer_energy_j["pre"])
        if stage == pp - 1:
            busy += _f(pa.layer_time_s["post"])
            energy += _f(pa.layer_energy_j["post"])
        links = (stage > 0) + (stage < pp - 1)
        busy += links * p2p_t
        energy += links * p2p_e
        busy *= mb  # each micro-batch crosses every stage once
        energy *= mb
        idle = max(latency - busy, 0.0)
        energy += float(idle_energy_j(gpu, idle))
        for replica in range(dp):
            for r in range(tp):
                out.append(GPUResult(replica * tp * pp + stage * tp + r, stage, replica, energy, busy, idle))
    return tuple(out)


def kv_bytes_per_token(model: Model) -> float:
    """KV-cache bytes one token adds across all layers (whole model, unsharded)."""
    from energylens.graph.ops import Role

    total = 0.0
    for block in model.blocks:
        seen = {}
        for op in block.ops:
            for t in op.inputs:
                if t.role is Role.KV_CACHE and "s" in t.dims and t.name not in seen:
                    n = 1.0
                    for d in t.dims:
                        if d not in "bs":
                            n *= model.dims[d]
                    seen[t.name] = n * DTYPE_BYTES[model.kv_dtype]
        total += sum(seen.values()) * block.count
    return total
