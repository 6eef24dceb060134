"""Compute-communication overlap on one GPU: an SM split, a chunked two-stage pipeline, a shared power cap.

Built on top of the core without changing it: the sequential phase comes from
``cost.phase.evaluate_phase``; the overlapped pairs are re-costed with the core's own engine
(``cost.kernels.cost_steps`` on a GPU *partition* and on chunk-sized token counts) and the comm
model (``comm.collective_cost(..., comm_sms=k)``); only the difference is added back.

SM split
--------
The communication kernel holds ``k`` SMs for the whole overlapped op (TransformerEngine launches
its GEMMs with ``sm_count - comm_sms`` SMs; MPS partitions and green contexts behave the same). The
GEMM therefore runs on a partition :func:`gpu_partition` with ``n = sm_count - k`` SMs: peak
FLOP/s scaled by ``n / sm_count`` and the core's wave quantisation recomputed with ``n`` SMs
(``tiles / (ceil(tiles / n) * n)``), so its throughput is ``peak * tiles / (sm_count * ceil(tiles/n))``
and never exceeds the full GPU's. HBM bandwidth is *not* reduced by the split (assumption: the
partition keeps enough SMs to saturate it; the MuxServe check in ``sm_check`` shows where that
fails, below ~60 % of the SMs). The collective gets ``k`` SMs: its bandwidth part saturates as
``1 - exp(-k / k0)`` (``comm.collectives``, k0 fitted to DeepEP), never slower with more SMs.

Pipeline
--------
The GEMM and its collective are split into ``C`` chunks along the tokens (``t`` in prefill, ``b``
in decode, and ``c`` tokens-per-expert where present; ``C`` is capped at the token count). Each
compute chunk is re-costed by the engine at chunk size (one launch each, its own wave
quantisation, weights re-read per chunk); each communication chunk is ``collective_cost`` of
``message / C`` at ``k`` SMs (the latency floor paid per chunk, never faster in total than the
whole message) plus one cross-stream synchronisation (``chunk_sync_s``). With per-chunk times
``c`` and ``m``, the pipeline (two-machine flow shop of identical jobs) lasts::

    T = c + m + (C - 1) * max(c, m)

of which ``O = (C - 1) * min(c, m)`` has both kernels running, ``C*c - O`` compute only and
``C*m - O`` communication only. ``C = 1`` is no overlap: the GEMM keeps all SMs and the collective
runs after it on ``k`` SMs (the NCCL channel count alone). With ``chunk_wave_quantization=False``
a chunk keeps the whole GEMM's efficiency on the partition (a sensitivity bound, see
``ASSUMPTION_SOURCES``).

Power and energy
----------------
Each segment draws idle power plus the dynamic power of what runs in it (compute ``e_c / c``,
communication ``e_m / m``, the latter from ``collective_cost`` less idle). When a segment's power
exceeds ``power_limit`` the clocks drop and it stretches to ``dynamic_energy / (power_limit -
idle)`` (the roofline's rule, applied to the sum). Energy = dynamic energies + idle x duration, so
hiding communication saves the idle power of the hidden time, while the SMs given to NCCL add
their activity power and stretch the GEMM.

``comm_sms = 0`` (or no plan) reproduces ``evaluate_phase`` exactly: the sequential numbers are
returned unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from energylens.cost.collectives import collective_cost
from energylens.cost.kernels import KernelRecord
from energylens.cost.phase import PhaseArrays, axis_nodes, axis_sizes, evaluate_phase
from energylens.cost.plan import cost_steps
from energylens.cost.power import Timeline, idle_energy_j, overlap_timeline  # noqa: F401 - re-exported
from energylens.errors import LayoutError
from energylens.graph.model import Model
from energylens.hardware.profile import DTYPES, GPU, Quantity
from energylens.overlap.rules import OverlapPlan, resolve_pairs, step_sequence
from energylens.parallel.layout import Layout, degrees
from energylens.program import Program

PEAK_FIELDS = tuple(f"peak_flops_{d}" for d in DTYPES)


@dataclass(frozen=True)
class OverlapAssumptions:
    """Constants of the overlap model. ``chunk_sync_s`` None = the GPU's ``kernel_overhead``."""

    chunk_sync_s: float | None = None
    chunk_wave_quantization: bool = True  # False: a chunk is as efficient as the whole GEMM (stream-K-like)


ASSUMPTION_SOURCES: dict[str, Quantity] = {
    "chunk_sync_s": Quantity(
        None, "s", "assumed", "energylens/data/hardware/gpus/*.yaml: kernel_overhead",
        "one cross-stream event wait per chunk, assumed to cost one kernel launch overhead (3.7 us on H100, "
        "fitted to AIConfigurator GEMV times); no public measurement of the chunk handshake was found"),
    "chunk_wave_quantization": Quantity(
        None, "1", "model", "energylens/cost/roofline.py: gemm_efficiency",
        "True (default): each chunk GEMM is costed by the core at chunk size (its own 128x128-tile wave "
        "quantisation, weights re-read); False: chunks keep the whole GEMM's efficiency on the partition "
        "(persistent / stream-K kernels), a sensitivity bound: the core has one fixed tile and no split-K, "
        "which overstates the loss of small chunks"),
}


# ------------------------------------------------------------------------------------------ SM split


def gpu_partition(gpu: GPU, sms: int) -> GPU:
    """The GPU as a kernel with only ``sms`` of its SMs sees it: peak FLOP/s scaled by
    ``sms / sm_count`` and ``sm_count = sms`` (so the engine's wave quantisation uses ``sms``).
    HBM bandwidth, power limit, idle power and energies per FLOP and per byte are unchanged."""
    total = gpu.sm_count
    if isinstance(sms, bool) or int(sms) != sms or not 1 <= sms <= total:
        raise LayoutError("sms", sms, f"an integer number of SMs in [1, {total}] for {gpu.name}")
    sms = int(sms)
    if sms == total:
        return gpu
    frac = sms / total
    upd = {"sm_count": Quantity(float(sms), "1", "derived", f"partition of {gpu.key}",
                                f"{sms} of {total} SMs (the rest hold a communication kernel)")}
    for f in PEAK_FIELDS:
        q = gpu.quantities.get(f)
        if q is not None and q.value is not None:
            upd[f] = Quantity(q.value * frac, q.unit, "derived", f"{gpu.key}.{f} x {sms}/{total}", q.note)
    return gpu.with_quantities(upd)


# ------------------------------------------------------------------------------------------ timeline
# the two-kernel pipeline under a shared power cap is a power rule: energylens.cost.power.overlap_timeline


# ------------------------------------------------------------------------------------------ pairs


@dataclass(frozen=True)
class PairCost:
    """One overlapped (collective, GEMM) pair, per call on one rank; ``count`` calls per phase."""

    section: str
    collective: str
    compute: str
    kind: str
    direction: str
    chunks: np.ndarray  # effective (capped at the token count)
    comm_sms: int
    count: int
    sequential_latency_s: np.ndarray
    sequential_energy_j: np.ndarray
    latency_s: np.ndarray
    energy_j: np.ndarray
    compute_full_s: np.ndarray  # the GEMM alone, all SMs, unchunked, before any power-cap stretch
    comm_default_s: np.ndarray  # the collective alone, NCCL's default SMs (core's number)
    comm_alone_s: np.ndarray  # the collective alone, whole message, comm_sms SMs
    compute_total_s: np.ndarray  # C x compute chunk on the partition (uncapped)
    compute_alone_s: np.ndarray  # the same chunks run alone, power-capped (the "compute alone" of the bounds)
    comm_total_s: np.ndarray  # C x communication chunk incl. sync
    overhead_s: np.ndarray  # chunking cost: C x chunk - unchunked at the same SMs, both stages
    timeline: Timeline

    @property
    def delta_latency_s(self) -> np.ndarray:
        return self.latency_s - self.sequential_latency_s

    @property
    def delta_energy_j(self) -> np.ndarray:
        return self.energy_j - self.sequential_energy_j


def chunk_sizes(sizes: dict[str, np.ndarray], chunks) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Sizes of one chunk (tokens split ``chunks`` ways) and the effective chunk count (<= tokens)."""
    b = np.asarray(sizes["b"], dtype=float)
    t = np.asarray(sizes["t"], dtype=float)
    n = np.minimum(np.asarray(chunks, dtype=float), np.maximum(b * t, 1.0))
    out = dict(sizes)
    out["t"] = np.where(t > 1, t / n, t)
    out["b"] = np.where(t > 1, b, b / n)
    if "c" in sizes:
        out["c"] = np.asarray(sizes["c"], dtype=float) / n
    return out, n


def _kernel_terms(rec: KernelRecord, gpu: GPU) -> tuple[np.ndarray, np.ndarray]:
    """(latency, energy above idle power) of one kernel call, at the clock the power limit allows
    (``cost.dvfs``; at free clocks and within the limit: the plain roofline latency and dynamic energy)."""
    c = rec.cost
    return c.latency_s, c.energy_j - idle_energy_j(gpu, c.latency_s)


@dataclass
class OverlapPhase:
    """A phase with overlap: totals (arrays, like ``PhaseArrays``), the baseline and the pairs."""

    latency_s: np.ndarray
    energy_j: np.ndarray
    baseline: PhaseArrays
    pairs: list[PairCost] = field(default_factory=list)
    layer_time_s: dict[str, np.ndarray] = field(default_factory=dict)  # per execution, per rank
    layer_energy_j: dict[str, np.ndarray] = field(default_factory=dict)  # per execution, per rank


def evaluate_overlap(model: Model, gpu: GPU, layout: Layout, program: Program, sizes: dict[str, np.ndarray],
                     weights: np.ndarray, *, decode: bool, plans: Sequence[OverlapPlan] | OverlapPlan | None,
                     assumptions: OverlapAssumptions = OverlapAssumptions(), routing=None,
                     baseline: PhaseArrays | None = None) -> OverlapPhase:
    """``evaluate_phase`` with the collectives matched by ``plans`` overlapped (see module docstring).

    MoE models: latency follows the busiest expert-parallel rank and energy the mean rank plus its
    idle wait for the busiest one, as in ``evaluate_phase``; both are re-costed with overlap."""
    base = baseline if baseline is not None else evaluate_phase(model, gpu, layout, program, sizes, weights,
                                                                decode=decode, routing=routing)
    if isinstance(plans, OverlapPlan):
        plans = [plans]
    plans = [p for p in (plans or []) if p.active]
    out = OverlapPhase(base.latency_s, base.energy_j, base, [], dict(base.layer_time_s), dict(base.layer_energy_j))
    if not plans:
        return out
    for p in plans:
        if p.comm_sms >= gpu.sm_count:
            raise LayoutError("comm_sms", p.comm_sms, f"fewer than the {gpu.sm_count} SMs of {gpu.name}")

    def per_point(v):  # as evaluate_phase: layout arrays gain the trailing decode-point axis
        v = np.asarray(v)
        return v[..., None] if decode and v.ndim else v

    all_sizes = {**{k: np.asarray(float(v)) for k, v in model.dims.items()}, **sizes}
    # pipeline micro-batches: the baseline's records are per micro-batch (evaluate_phase divides b by m), so the
    # overlapped GEMMs are re-costed at the micro-batch too (not at the whole batch of the replica)
    m_sizes = np.asarray(base.microbatches, dtype=float)
    if np.any(m_sizes != 1.0):
        all_sizes["b"] = np.asarray(all_sizes["b"], dtype=float) / (m_sizes[..., None] if decode and m_sizes.ndim
                                                                     else m_sizes)
    moe = getattr(base, "moe", None)
    size_sets = {"busiest": all_sizes, "mean": all_sizes}
    if moe is not None:
        size_sets = {"busiest": {**all_sizes, **moe.busiest}, "mean": {**all_sizes, **moe.mean}}
    degs = {k: per_point(v) for k, v in degrees(model, layout).items()}
    axes = axis_sizes(layout)
    axes_pt = {k: per_point(v) for k, v in axes.items()}
    nodes = {k: per_point(v) for k, v in axis_nodes(layout).items()}
    sync = gpu.kernel_overhead_s if assumptions.chunk_sync_s is None else float(assumptions.chunk_sync_s)
    idle, p_lim = gpu.idle_power_w, gpu.power_limit_w
    reduce = base.reduce
    d_time = np.asarray(0.0)
    d_energy = np.asarray(0.0)
    kernels_e_all = getattr(base, "kernels_energy", None) or base.kernels
    for block, steps in program.blocks:
        section, prefix = block.name, f"{block.name}."
        pairs = resolve_pairs(step_sequence(steps, prefix), plans)
        if not pairs:
            continue
        kernels = [r for s, r in base.kernels if s == section]
        kernels_e = [r for s, r in kernels_e_all if s == section]
        colls = [r for s, r in base.collectives if s == section]
        cache: dict[tuple[str, int, int], list[KernelRecord]] = {}

        def recost(which: str, k: int, n_chunks: int, steps=steps, block=block, prefix=prefix,
                   cache=cache) -> list[KernelRecord]:
            key = (which, k, n_chunks)
            if key not in cache:
                sz = size_sets[which]
                csizes = chunk_sizes(sz, n_chunks)[0] if n_chunks > 1 else sz
                cache[key] = cost_steps(gpu_partition(gpu, gpu.sm_count - k), model, list(steps), csizes, degs,
                                        axes_pt, count=block.count, prefix=prefix, nodes=nodes)[0]
            return cache[key]

        sec_dt = np.asarray(0.0)
        sec_de = np.asarray(0.0)
        for pair in pairs:
            k, n_chunks = pair.plan.comm_sms, pair.plan.chunks
            krec, krec_e = kernels[pair.kernel_index], kernels_e[pair.kernel_index]
            crec = colls[pair.collective_index]
            assert krec.name == pair.compute and crec.name == pair.collective, (krec.name, crec.name, pair)
            n_eff = chunk_sizes(size_sets["busiest"], n_chunks)[1]
            n_nodes = nodes.get(crec.axis, 1)
            whole = collective_cost(crec.kind, crec.message_bytes, crec.group_size, gpu, nodes=n_nodes, comm_sms=k)
            piece = collective_cost(crec.kind, crec.message_bytes / n_eff, crec.group_size, gpu, nodes=n_nodes,
                                    comm_sms=k)
            use_whole = whole.latency_s / n_eff > piece.latency_s  # a split message is never faster in total
            m_chunk = np.where(use_whole, whole.latency_s / n_eff, piece.latency_s)
            em_chunk = np.where(use_whole, (whole.energy_j_per_gpu - idle * whole.latency_s) / n_eff,
                                piece.energy_j_per_gpu - idle * piece.latency_s)
            m_chunk = m_chunk + np.where(n_eff > 1, sync, 0.0)
            timelines = {}
            for which in ("busiest", "mean") if moe is not None else ("busiest",):
                j = pair.kernel_index
                if assumptions.chunk_wave_quantization:
                    c_chunk, ec_chunk = _kernel_terms(recost(which, k, n_chunks)[j], gpu)
                else:  # chunks as efficient as the whole GEMM on the partition (stream-K-like scheduling)
                    c_all, ec_all = _kernel_terms(recost(which, k, 1)[j], gpu)
                    c_chunk = (c_all - gpu.kernel_overhead_s) / n_eff + gpu.kernel_overhead_s
                    ec_chunk = ec_all / n_eff
                # one chunk = nothing to overlap: the GEMM keeps every SM (only the collective's SMs change)
                c_one, ec_one = _kernel_terms(recost(which, 0, 1)[j], gpu)
                c_chunk = np.where(n_eff > 1, c_chunk, c_one)
                ec_chunk = np.where(n_eff > 1, ec_chunk, ec_one)
                timelines[which] = (overlap_timeline(c_chunk, ec_chunk, m_chunk, em_chunk, n_eff, idle, p_lim),
                                    c_chunk, np.maximum(n_eff * c_chunk, n_eff * ec_chunk / (p_lim - idle)))
            tl, c_chunk, c_alone = timelines["busiest"]
            tl_e = timelines.get("mean", timelines["busiest"])[0]
            c_whole, _ = _kernel_terms(recost("busiest", k, 1)[pair.kernel_index], gpu)
            c_whole = np.where(n_eff > 1, c_whole, c_chunk)
            seq_t = krec.cost.latency_s + crec.latency_s
            # energy of the mean rank, plus its idle wait for the busiest rank (MoE; zero for dense models)
            seq_e = krec_e.cost.energy_j + crec.energy_j_per_gpu + idle * (krec.cost.latency_s - krec_e.cost.latency_s)
            energy = tl_e.energy_j + idle * (tl.latency_s - tl_e.latency_s)
            pc = PairCost(section, crec.name, krec.name, crec.kind, pair.direction, n_eff, k, block.count, seq_t,
                          seq_e, tl.latency_s, energy, _kernel_terms(krec, gpu)[0], crec.latency_s, whole.latency_s,
                          n_eff * c_chunk, c_alone, n_eff * m_chunk,
                          n_eff * c_chunk - c_whole + n_eff * m_chunk - whole.latency_s, tl)
            out.pairs.append(pc)
            sec_dt = sec_dt + reduce(pc.delta_latency_s)
            sec_de = sec_de + reduce(pc.delta_energy_j)
        out.layer_time_s[section] = out.layer_time_s[section] + sec_dt
        out.layer_energy_j[section] = out.layer_energy_j[section] + sec_de
        d_time = d_time + sec_dt * block.count
        d_energy = d_energy + sec_de * block.count
    tp, dp, pp = axes["tp"], axes["dp"], axes["pp"]
    # pipeline micro-batches (evaluate_phase): every micro-batch runs the pairs; a pass changes by d_time and
    # the slowest stage by about d_time / pp, so a prefill by d_time (1 + (m - 1) / pp) and a decode
    # (max of one pass and m stages per step) by d_time max(1, m / pp); m = 1: d_time. The other pipeline
    # stages wait (idle) for the change.
    m = np.asarray(base.microbatches, dtype=float)
    d_lat = d_time * (np.maximum(1.0, m / pp) if decode else 1.0 + (m - 1.0) / pp)
    out.latency_s = base.latency_s + d_lat
    out.energy_j = base.energy_j + d_energy * tp * dp * m + idle * tp * dp * (pp * d_lat - m * d_time)
    return out
