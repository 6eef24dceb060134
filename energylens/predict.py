"""``predict``: model x GPU x layout x workload -> Prediction (prefill, decode, per op, per GPU)."""

from __future__ import annotations

import numpy as np

from energylens.cost.power import idle_energy_j
from energylens.errors import LayoutError, WorkloadError
from energylens.evaluate import USABLE_MEMORY_FRACTION, PhaseArrays, evaluate_phase, memory_per_gpu
from energylens.graph.model import Model
from energylens.hardware.profile import DTYPE_BYTES, GPU, load_gpu
from energylens.intervals import runtime_interval
from energylens.models.registry import load_model
from energylens.moe.binding import is_moe, resolve_routing
from energylens.parallel.layout import Layout, validate
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
from energylens.workload import Workload, decode_sizes, prefill_sizes

WEIGHT_DTYPES = ("bf16", "fp16", "fp8")


def prepare(model: str | Model, gpu: str | GPU, dtype: str | None) -> tuple[Model, GPU]:
    m = load_model(model)
    g = load_gpu(gpu)
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


def setup(model: str | Model, gpu: str | GPU, dtype: str | None, batch, prompt_len, output_len, layout: Layout):
    """Checked inputs of one prediction: (model, gpu, workload, batch per replica, per-rank program)."""
    m, g = prepare(model, gpu, dtype)
    for name, value in (("batch", batch), ("prompt_len", prompt_len)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise WorkloadError(name, value, "a positive integer")
    w = Workload(batch, prompt_len, output_len)
    validate(m, layout, strict=True)
    return m, g, w, batch_per_replica(w, layout), build_program(m, layout)


def predict(
    model: str | Model = "llama3-8b",
    gpu: str | GPU = "h100-sxm",
    *,
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
) -> Prediction:
    """Predict energy (J) and latency (s) of prefilling ``batch`` prompts and decoding ``output_len`` tokens.

    ``routing`` (mixture-of-experts models): ``"uniform"`` (default), ``"zipf:S"``, ``"dirichlet:A"``,
    a recorded per-layer expert-count histogram file, or an ``energylens.moe.Routing``.
    """
    lay = layout or Layout(tp=tp, pp=pp, dp=dp, ep=ep, sp=sp, gpus_per_node=gpus_per_node)
    m, g, w, bpr, program = setup(model, gpu, dtype, batch, prompt_len, output_len, lay)
    route = None
    if routing is not None or is_moe(m):
        route = resolve_routing(routing)  # checked for every model; used by MoE models only
    moe_kw = {"routing": route} if is_moe(m) else {}
    sizes, weights = prefill_sizes(w, bpr)
    pre = evaluate_phase(m, g, lay, program, sizes, weights, decode=False, **moe_kw)
    sizes, weights = decode_sizes(w, bpr)
    dec = evaluate_phase(m, g, lay, program, sizes, weights, decode=True, **moe_kw)
    mem = memory_per_gpu(m, lay, program, g, bpr, prompt_len + output_len, prompt_len)
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
               "provenance": provenance(g, m)},
        moe=moe_report,
    )


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
