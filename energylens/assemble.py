"""Costed phase arrays -> typed results of one prediction: per-op, per-collective and per-GPU rows.

The per-GPU timeline (stages hold contiguous layers; a GPU that is not busy waits at idle power) and
the MoE routing report live here; the phase totals they refine come from ``energylens.cost.phase``.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np

from energylens.cost.phase import PhaseArrays, record_field
from energylens.cost.power import idle_energy_j
from energylens.graph.model import Model
from energylens.hardware.profile import GPU
from energylens.parallel.layout import Layout
from energylens.program import Program
from energylens.results import (
    CollectiveResult,
    EnergyBreakdown,
    GPUResult,
    MoEPhaseStats,
    MoEReport,
    OpResult,
    PhaseResult,
    Rows,
)


def overlap_summary(phase: PhaseResult, ov) -> dict:
    return {"sequential_energy_j": phase.energy_j, "sequential_latency_s": phase.latency_s,
            "energy_j": _f(ov.energy_j), "latency_s": _f(ov.latency_s),
            "pairs": [f"{pc.collective} -> {pc.compute} ({pc.direction})" for pc in ov.pairs]}


def with_overlap(phase: PhaseResult, ov) -> PhaseResult:
    """Phase totals with the overlap applied; ops, collectives, breakdown and per-GPU rows stay the
    sequential execution's (the difference is in ``Prediction.extra['overlap']``)."""
    energy, latency = _f(ov.energy_j), _f(ov.latency_s)
    return replace(phase, energy_j=energy, latency_s=latency,
                   avg_power_w=energy / latency if latency > 0 else 0.0,
                   energy_per_token_j=energy / phase.tokens if phase.tokens > 0 else 0.0,
                   tokens_per_s=phase.tokens / latency if latency > 0 else 0.0)


def moe_report(model: Model, layout: Layout, route, pre: PhaseArrays, dec: PhaseArrays) -> MoEReport:
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
    if isinstance(x, float):
        return x
    if type(x) is np.ndarray and x.ndim == 0:  # a phase total of one configuration
        return float(x)
    x = np.asarray(x)
    return float(x.flat[0]) if x.size else 0.0


def phase_result(phase: str, pa: PhaseArrays, model: Model, gpu: GPU, layout: Layout, program: Program,
                 tokens: float, *, detail: bool = True) -> PhaseResult:
    """Totals of one phase and its per-GPU rows; with ``detail`` also one row per kernel and collective
    (views of the phase's stacked cost arrays)."""
    latency = _f(pa.latency_s)
    energy = _f(pa.energy_j)
    per_gpu = Rows(partial(_per_gpu_rows, model, gpu, layout, latency, *_per_gpu_terms(pa, int(layout.pp))))
    if detail:  # made when first read (the same arrays: nothing of them changes after the evaluation)
        degrees = (pa, int(layout.tp), int(layout.dp), int(layout.pp))
        ops, colls = Rows(partial(_sorted_ops, *degrees)), Rows(partial(_collective_rows, *degrees))
    else:
        ops, colls = (), ()
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
        ops=ops,
        collectives=colls,
        per_gpu=per_gpu,
    )


def _sorted_ops(pa: PhaseArrays, tp: int, dp: int, pp: int) -> list[OpResult]:
    """The per-op rows of a phase, most energy first."""
    return sorted(_op_rows(pa, tp, dp, pp), key=lambda o: -o.energy_j)


def _rows(pa: PhaseArrays, tp: int, dp: int, pp: int) -> tuple[list[OpResult], list[CollectiveResult]]:
    """One row per kernel and per collective of a phase (first configuration)."""
    return _op_rows(pa, tp, dp, pp), _collective_rows(pa, tp, dp, pp)


def _phase_counts(pa: PhaseArrays) -> tuple[float, float]:
    """(pipeline micro-batches: every record runs once per micro-batch, decode steps: records are per step and
    ``reduce`` sums over the steps; counts are calls over the whole phase, per step x steps, and a message's
    bytes are per call, so bytes x count = bytes moved in the phase)."""
    return _f(pa.microbatches), _f(pa.reduce(np.asarray(1.0)))


def _op_rows(pa: PhaseArrays, tp: int, dp: int, pp: int) -> list[OpResult]:
    """One row per kernel of a phase (first configuration)."""
    mb, steps = _phase_counts(pa)
    ops = []
    # MoE: latency (and bound) from the busiest expert-parallel rank, FLOPs/bytes/energy from the mean rank;
    # every field of every kernel summed over the phase's points at once (columns of the stacked arrays)
    sums = pa.kernel_sums or partial(kernel_sums, pa)
    lat, comp, mem, capped = (sums(f, False).tolist() for f in ("latency_s", "compute_s", "memory_s", "power_capped"))
    flops, bytes_, e, e_c, e_m, e_s = (sums(f, True).tolist() for f in (
        "flops", "bytes", "energy_j", "compute_energy_j", "memory_energy_j", "static_energy_j"))
    meta = pa.kernel_table.meta() if pa.kernel_table is not None else [(r.name, r.kind, r.ops, r.count)
                                                                        for _, r in pa.kernels]
    for i, (name, kind, op_names, count) in enumerate(meta):
        n = count * tp * dp * mb
        ops.append(OpResult(
            name=name, kind=kind, ops=op_names, count=int(round(n * steps)), flops=flops[i] * n,
            bytes=bytes_[i] * n, latency_s=lat[i] * count * mb, energy_j=e[i] * n, compute_energy_j=e_c[i] * n,
            memory_energy_j=e_m[i] * n, static_energy_j=e_s[i] * n,
            bound="compute" if comp[i] >= mem[i] else "memory", power_capped=bool(capped[i]),
        ))
    return ops


def _collective_rows(pa: PhaseArrays, tp: int, dp: int, pp: int) -> list[CollectiveResult]:
    """One row per collective (and pipeline hop) of a phase (first configuration)."""
    mb, steps = _phase_counts(pa)
    reduce = pa.reduce
    colls = []

    def per_call(message_bytes) -> float:
        return _f(reduce(message_bytes)) / steps if steps > 0 else _f(message_bytes)

    if pa.collective_sums is not None:  # every collective's row from the stacked sums (the same numbers)
        meta, (lat_s, en_s, msg_s), first = pa.collective_sums()
        lat_s, en_s, msg_s, first = lat_s.tolist(), en_s.tolist(), msg_s.tolist(), first.tolist()
        for i, (name, kind, axis, count, group, reason) in enumerate(meta):
            colls.append(CollectiveResult(name, kind, axis, int(_f(group)), msg_s[i] / steps if steps > 0 else first[i],
                                          int(round(count * mb * steps)), lat_s[i] * count * mb,
                                          en_s[i] * count * tp * dp * mb, reason))
    for _, c in (pa.collectives if pa.collective_sums is None else ()):
        n = c.count * tp * dp * mb
        colls.append(CollectiveResult(c.name, c.kind, c.axis, int(_f(c.group_size)), per_call(c.message_bytes),
                                      int(round(c.count * mb * steps)),
                                      _f(reduce(c.latency_s)) * c.count * mb, _f(reduce(c.energy_j_per_gpu)) * n,
                                      c.reason))
    if pa.p2p is not None and pp > 1:
        c = pa.p2p
        colls.append(CollectiveResult(c.name, c.kind, c.axis, 2, per_call(c.message_bytes),
                                      int(round((pp - 1) * mb * steps)),
                                      _f(pa.p2p_time_s) * mb,
                                      _f(reduce(c.energy_j_per_gpu)) * (pp - 1) * 2 * tp * dp * mb, c.reason))
    return colls


def kernel_sums(pa: PhaseArrays, field: str, energy: bool) -> np.ndarray:
    """``field`` of every kernel of ``pa`` (``energy``: the mean-rank records) summed over the phase's points
    (``power_capped``: whether any point is), first configuration: one array over the kernels."""
    if pa.kernel_table is not None:
        x = pa.kernel_table.field(field, energy)
    else:
        records = pa.kernels_energy if energy and pa.kernels_energy is not None else pa.kernels
        xs = [np.asarray(record_field(r, field), dtype=float) for _, r in records]
        x = np.stack(np.broadcast_arrays(*xs)) if xs else np.zeros(0)
    k = len(x)
    if field == "power_capped":
        return np.any(x.reshape(k, -1), axis=1)
    return np.asarray(pa.reduce(x)).reshape(k, -1)[:, 0]


def _per_gpu_terms(pa: PhaseArrays, pp: int) -> tuple:
    """What the per-GPU rows read of a phase, as floats (rows made later keep no cost arrays alive): micro-batches,
    one pipeline hop's time and energy, and each section's time and energy (first configuration)."""
    p2p_t = _f(pa.p2p_time_s) / (pp - 1) if pp > 1 else 0.0
    p2p_e = _f(pa.reduce(pa.p2p.energy_j_per_gpu)) if (pa.p2p is not None and pp > 1) else 0.0
    return (_f(pa.microbatches), p2p_t, p2p_e, {k: _f(v) for k, v in pa.layer_time_s.items()},
            {k: _f(v) for k, v in pa.layer_energy_j.items()})


def _per_gpu_rows(model: Model, gpu: GPU, layout: Layout, latency: float, mb: float, p2p_t: float, p2p_e: float,
                  t_layer: dict, e_layer: dict) -> tuple[GPUResult, ...]:
    """Each GPU's busy time, idle (waiting) time and energy; stages hold contiguous layers."""
    tp, dp, pp = int(layout.tp), int(layout.dp), int(layout.pp)
    per_stage = model.n_layers // pp
    out = []
    for stage in range(pp):
        lo, hi = stage * per_stage, (stage + 1) * per_stage
        busy = 0.0
        energy = 0.0
        start = 0
        for block in model.blocks:
            n = max(0, min(hi, start + block.count) - max(lo, start))
            start += block.count
            busy += n * t_layer[block.name]
            energy += n * e_layer[block.name]
        if stage == 0:
            busy += t_layer["pre"]
            energy += e_layer["pre"]
        if stage == pp - 1:
            busy += t_layer["post"]
            energy += e_layer["post"]
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
