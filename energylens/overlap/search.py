"""Predictions with overlap, the SM-allocation sweep and its Pareto front.

``predict_with_overlap`` is ``energylens.predict`` plus overlap plans; ``sweep_overlap`` tries every
(comm_sms, chunks) pair for the matched collectives of a model x layout x workload and marks the
allocations on the energy-latency Pareto front (``energylens.pareto``). Row 0 of a sweep is always
the sequential baseline (``comm_sms = 0``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from energylens.cost.phase import evaluate_phase
from energylens.errors import WorkloadError
from energylens.graph.model import Model
from energylens.hardware.profile import GPU
from energylens.overlap.cost import OverlapAssumptions, OverlapPhase, PairCost, evaluate_overlap
from energylens.overlap.rules import OverlapPlan
from energylens.parallel.layout import Layout
from energylens.pareto import pareto_mask
from energylens.pipeline import setup
from energylens.predict import predict
from energylens.results import Prediction
from energylens.specs.execution import Execution
from energylens.specs.system import System
from energylens.workload import decode_sizes, prefill_sizes

DEFAULT_COMM_SMS = (2, 4, 8, 12, 16, 20, 24, 32, 40, 48, 64)
DEFAULT_CHUNKS = (1, 2, 4, 8)
PHASES = ("prefill", "decode")


def _f(x) -> float:
    return float(np.asarray(x).reshape(-1)[0]) if np.size(x) else 0.0


@dataclass(frozen=True)
class PairResult:
    """One overlapped pair in a phase, on the critical path of one rank (floats, per call x count)."""

    collective: str
    compute: str
    kind: str
    direction: str
    chunks: float
    comm_sms: int
    count: int
    sequential_latency_s: float  # per call: GEMM (all SMs) + collective (default SMs)
    latency_s: float  # per call, overlapped
    compute_full_s: float
    comm_default_s: float
    compute_total_s: float  # C chunks on the partition
    comm_total_s: float
    overlapped_s: float  # both running
    overlap_power_w: float
    power_capped: bool

    @property
    def hidden_fraction(self) -> float:
        """Share of the communication time that ran under compute."""
        return self.overlapped_s / self.comm_total_s if self.comm_total_s > 0 else 0.0


def _pair_result(pc: PairCost, reduce, weights_sum: float) -> PairResult:
    def r(x) -> float:  # per call, averaged over decode steps
        return _f(reduce(x)) / weights_sum

    return PairResult(pc.collective, pc.compute, pc.kind, pc.direction, r(pc.chunks), pc.comm_sms, pc.count,
                      r(pc.sequential_latency_s), r(pc.latency_s), r(pc.compute_full_s), r(pc.comm_default_s),
                      r(pc.compute_total_s), r(pc.comm_total_s), r(pc.timeline.overlapped_s),
                      r(pc.timeline.overlap_power_w), bool(np.any(pc.timeline.power_capped)))


@dataclass(frozen=True)
class OverlapPhaseResult:
    phase: str
    latency_s: float
    energy_j: float  # all GPUs
    baseline_latency_s: float
    baseline_energy_j: float
    pairs: tuple[PairResult, ...] = ()

    @property
    def latency_saved_s(self) -> float:
        return self.baseline_latency_s - self.latency_s

    @property
    def energy_saved_j(self) -> float:
        return self.baseline_energy_j - self.energy_j

    def to_dict(self) -> dict:
        from dataclasses import asdict

        d = asdict(self)
        d["latency_saved_s"] = self.latency_saved_s
        d["energy_saved_j"] = self.energy_saved_j
        for p, obj in zip(d["pairs"], self.pairs, strict=True):
            p["hidden_fraction"] = obj.hidden_fraction
        return d


@dataclass(frozen=True)
class OverlapPrediction:
    """The sequential ``Prediction`` and the same workload with overlap plans applied."""

    baseline: Prediction
    prefill: OverlapPhaseResult
    decode: OverlapPhaseResult
    plans: tuple[OverlapPlan, ...]

    @property
    def total_energy_j(self) -> float:
        return self.prefill.energy_j + self.decode.energy_j

    @property
    def total_latency_s(self) -> float:
        return self.prefill.latency_s + self.decode.latency_s

    def to_dict(self) -> dict:
        return {"baseline": self.baseline.to_dict(ops=False), "plans": [p.to_dict() for p in self.plans],
                "prefill": self.prefill.to_dict(), "decode": self.decode.to_dict(),
                "total": {"energy_j": self.total_energy_j, "latency_s": self.total_latency_s}}


def _phase_result(phase: str, op: OverlapPhase, weights) -> OverlapPhaseResult:
    wsum = float(np.sum(weights)) if phase == "decode" else 1.0
    wsum = wsum if wsum > 0 else 1.0
    return OverlapPhaseResult(phase, _f(op.latency_s), _f(op.energy_j), _f(op.baseline.latency_s),
                              _f(op.baseline.energy_j),
                              tuple(_pair_result(pc, op.baseline.reduce, wsum) for pc in op.pairs))


def _plans(plans: Sequence[OverlapPlan] | OverlapPlan | None) -> tuple[OverlapPlan, ...]:
    if plans is None:
        return ()
    if isinstance(plans, OverlapPlan):
        return (plans,)
    return tuple(plans)


def predict_with_overlap(
    model: str | Model = "llama3-8b",
    gpu: str | GPU = "h100-sxm",
    *,
    plans: Sequence[OverlapPlan] | OverlapPlan | None = None,
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
    assumptions: OverlapAssumptions = OverlapAssumptions(),
) -> OverlapPrediction:
    """``energylens.predict`` with the collectives matched by ``plans`` overlapped with their GEMMs
    (``plans=None``: the model's own overlap rules, ``Model.overlap``).

    Without plans (or with ``comm_sms = 0``) both phases equal the baseline ``Prediction`` exactly."""
    lay = layout or Layout(tp=tp, pp=pp, dp=dp, ep=ep, sp=sp, gpus_per_node=gpus_per_node)
    m, g, w, bpr, program = setup(model, gpu, dtype, batch, prompt_len, output_len, lay)
    plans_t = _plans(plans) if plans is not None else tuple(m.overlap)  # None: the model's own rules
    ex = Execution.from_layout(lay, batch=batch, prompt_len=prompt_len, output_len=output_len, routing=routing,
                               overlap=())  # the sequential baseline
    baseline = predict(m, ex, System.for_execution(g, ex, int(lay.gpus_per_node)))
    results = []
    for phase, sizer in (("prefill", prefill_sizes), ("decode", decode_sizes)):
        sizes, weights = sizer(w, bpr)
        op = evaluate_overlap(m, g, lay, program, sizes, weights, decode=phase == "decode", plans=plans_t,
                              assumptions=assumptions, routing=routing)
        results.append(_phase_result(phase, op, weights))
    return OverlapPrediction(baseline, results[0], results[1], plans_t)


@dataclass(frozen=True)
class OverlapSweep:
    """SM-allocation sweep: one row per (comm_sms, chunks); row 0 is the sequential baseline."""

    model: str
    gpu: str
    phase: str
    layout: dict
    workload: dict
    collective: str
    compute: str | None
    comm_sms: np.ndarray  # int, 0 = sequential baseline
    chunks: np.ndarray  # int (requested)
    latency_s: np.ndarray  # phase, critical path
    energy_j: np.ndarray  # phase, all GPUs
    layer_latency_s: np.ndarray  # one layer of the first overlapped block (decode: summed over the steps)
    layer_energy_j: np.ndarray  # that layer on every GPU running it (tp x dp)
    hidden_fraction: np.ndarray  # communication time hidden under compute / communication time, pairs summed
    compute_slowdown: np.ndarray  # GEMM time overlapped / alone on all SMs - 1, pairs summed
    overlap_power_w: np.ndarray  # time-weighted power while both kernels run (0 if never)
    pareto: np.ndarray  # bool: on the (latency_s, energy_j) Pareto front
    pairs: tuple[str, ...] = field(default=())  # "collective -> compute (direction)"

    @property
    def baseline_index(self) -> int:
        return 0

    def pareto_indices(self) -> np.ndarray:
        """Pareto rows ordered by latency."""
        idx = np.flatnonzero(self.pareto)
        return idx[np.lexsort((self.energy_j[idx], self.latency_s[idx]))]

    def rows(self) -> list[dict]:
        base_t, base_e = self.latency_s[0], self.energy_j[0]
        out = []
        for i in range(len(self.comm_sms)):
            out.append({
                "comm_sms": int(self.comm_sms[i]), "chunks": int(self.chunks[i]), "baseline": i == 0,
                "latency_s": float(self.latency_s[i]), "energy_j": float(self.energy_j[i]),
                "latency_change": float(self.latency_s[i] / base_t - 1.0),
                "energy_change": float(self.energy_j[i] / base_e - 1.0),
                "layer_latency_s": float(self.layer_latency_s[i]), "layer_energy_j": float(self.layer_energy_j[i]),
                "hidden_fraction": float(self.hidden_fraction[i]), "compute_slowdown": float(self.compute_slowdown[i]),
                "overlap_power_w": float(self.overlap_power_w[i]), "pareto": bool(self.pareto[i]),
            })
        return out

    def to_dict(self) -> dict:
        return {"model": self.model, "gpu": self.gpu, "phase": self.phase, "layout": self.layout,
                "workload": self.workload, "collective": self.collective, "compute": self.compute,
                "pairs": list(self.pairs), "rows": self.rows(),
                "pareto_rows": [int(i) for i in self.pareto_indices()]}


def sweep_overlap(
    model: str | Model = "llama3-70b",
    gpu: str | GPU = "h100-sxm",
    *,
    phase: str = "prefill",
    comm_sms: Sequence[int] = DEFAULT_COMM_SMS,
    chunks: Sequence[int] = DEFAULT_CHUNKS,
    collective: str = "*",
    compute: str | None = None,
    batch: int = 1,
    prompt_len: int = 2048,
    output_len: int = 128,
    dtype: str | None = None,
    tp: int = 1,
    pp: int = 1,
    dp: int = 1,
    ep: int = 1,
    sp: bool = False,
    gpus_per_node: int = 8,
    layout: Layout | None = None,
    routing=None,
    assumptions: OverlapAssumptions = OverlapAssumptions(),
    progress=None,
) -> OverlapSweep:
    """Sweep the SMs given to communication (``comm_sms``) and the chunk count for every collective
    matching ``collective``; report phase latency and energy and the Pareto-optimal allocations.

    ``progress``: optional callable ``progress(done, total)`` (the CLI passes a Rich progress bar)."""
    from energylens.checks import choice, integer, text

    choice("phase", phase, PHASES, error=WorkloadError)
    text("collective", collective, error=WorkloadError, what="a glob over collective names, e.g. '*'")
    if compute is not None:
        text("compute", compute, error=WorkloadError, what="a glob over kernel names or None")
    for name, values in (("comm_sms", comm_sms), ("chunks", chunks)):
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__") or len(list(values)) > 1024:
            raise WorkloadError(name, values, "a sequence of at most 1024 integers")
        for v in values:
            integer(name, v, low=0, high=100_000, error=WorkloadError)
    lay = layout or Layout(tp=tp, pp=pp, dp=dp, ep=ep, sp=sp, gpus_per_node=gpus_per_node)
    m, g, w, bpr, program = setup(model, gpu, dtype, batch, prompt_len, output_len, lay)
    decode = phase == "decode"
    sizes, weights = (decode_sizes if decode else prefill_sizes)(w, bpr)
    base = evaluate_phase(m, g, lay, program, sizes, weights, decode=decode, routing=routing)
    ks = sorted({int(k) for k in comm_sms if int(k) > 0})
    cs = sorted({int(c) for c in chunks})
    for k in ks:
        if k >= g.sm_count:
            from energylens.errors import LayoutError

            raise LayoutError("comm_sms", k, f"fewer than the {g.sm_count} SMs of {g.name}")
    grid = [(0, 1)] + [(k, c) for k in ks for c in cs]
    n = len(grid)
    lat, en, llat, len_, hid, slow, pw = (np.zeros(n) for _ in range(7))
    tp_dp = float(np.asarray(lay.tp) * np.asarray(lay.dp))
    pair_names: tuple[str, ...] = ()
    block = program.blocks[0][0].name
    for i, (k, c) in enumerate(grid):
        op = evaluate_overlap(m, g, lay, program, sizes, weights, decode=decode,
                              plans=[OverlapPlan(collective, compute, c, k)], assumptions=assumptions, baseline=base)
        if op.pairs and not pair_names:
            pair_names = tuple(f"{p.collective} -> {p.compute} ({p.direction})" for p in op.pairs)
            block = op.pairs[0].section
        red = base.reduce
        lat[i], en[i] = _f(op.latency_s), _f(op.energy_j)
        llat[i] = _f(op.layer_time_s[block])
        len_[i] = _f(op.layer_energy_j[block]) * tp_dp
        comm_t = sum((_f(red(p.comm_total_s)) for p in op.pairs), 0.0)
        both_t = sum((_f(red(p.timeline.overlapped_s)) for p in op.pairs), 0.0)
        hid[i] = both_t / comm_t if comm_t > 0 else 0.0
        full = sum((_f(red(p.compute_full_s)) for p in op.pairs), 0.0)
        slow[i] = sum((_f(red(p.compute_total_s)) for p in op.pairs), 0.0) / full - 1.0 if full > 0 else 0.0
        pw[i] = sum((_f(red(p.timeline.overlap_power_w * p.timeline.overlapped_s)) for p in op.pairs), 0.0) / both_t \
            if both_t > 0 else 0.0
        if progress is not None:
            progress(i + 1, n)
    mask = pareto_mask(np.column_stack([lat, en]))
    return OverlapSweep(
        model=m.hf_id or m.name, gpu=g.key, phase=phase, layout=lay.to_dict(), workload=w.to_dict(),
        collective=collective, compute=compute, comm_sms=np.array([k for k, _ in grid]),
        chunks=np.array([c for _, c in grid]), latency_s=lat, energy_j=en, layer_latency_s=llat,
        layer_energy_j=len_, hidden_fraction=hid, compute_slowdown=slow, overlap_power_w=pw, pareto=mask,
        pairs=pair_names)
