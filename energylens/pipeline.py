"""The one pipeline: (model, execution, system) -> checked, sharded, costed phases and memory.

Every front end enters here::

    prepare(model, gpu, dtype)         load the einsum graph and the GPU profile, apply a dtype override,
                                       check the GPU supports it
    bind(model, execution, system)     + check the layout against the model and the system, shard it
                                       (derived collectives) into the per-rank program -> Bound
    evaluate(bound)                    cost prefill and decode (kernels, collectives, pipeline bubbles,
                                       MoE stragglers, idle waits: energylens.cost.phase), overlap plans,
                                       memory per GPU -> Evaluated (arrays, already reduced per phase)
    phase(bound, sizes, weights, ...)  one phase at other sizes (serving iterations, sweeps)

``predict`` turns an ``Evaluated`` into a typed ``Prediction`` (``energylens.assemble``); ``serve``,
``sweep``, ``overlap`` and ``disagg`` use ``prepare``/``bind``/``phase`` with their own sizes. The summing
rules live once, in ``energylens.cost.phase`` (phases), ``energylens.cost.power`` (watts and joules) and
``energylens.assemble`` (per-GPU timelines of a single prediction).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from energylens.cost.phase import USABLE_MEMORY_FRACTION, PhaseArrays, evaluate_phase, memory_per_gpu
from energylens.cost.phase_pair import evaluate_phases
from energylens.errors import LayoutError, WorkloadError
from energylens.graph.model import Model
from energylens.graph.precision import WEIGHT_DTYPE_NAMES
from energylens.hardware.profile import GPU, load_gpu
from energylens.models.registry import load_model
from energylens.moe.binding import is_moe, resolve_routing
from energylens.parallel.layout import Layout, check_layout
from energylens.program import Program, build_program
from energylens.results import MemoryReport
from energylens.specs.execution import Execution
from energylens.specs.system import System
from energylens.workload import Workload, decode_sizes, prefill_sizes

WEIGHT_DTYPES = WEIGHT_DTYPE_NAMES


def prepare(model: str | Model, gpu: str | GPU, dtype: str | None, *, power_limit_w: float | None = None,
            sm_clock_mhz: float | None = None, kv_cache_dtype: str | None = None,
            activation_dtype: str | None = None) -> tuple[Model, GPU]:
    """The model (``dtype`` = ``--weight-dtype``, ``kv_cache_dtype`` and ``activation_dtype`` applied over the
    checkpoint's own formats) and the GPU (at a per-GPU power limit / locked SM clock, ``cost.dvfs``)."""
    from energylens.cost.dvfs import with_operating_point

    m = load_model(model)
    g = with_operating_point(load_gpu(gpu), power_limit_w=power_limit_w, sm_clock_mhz=sm_clock_mhz)
    if dtype is not None and (not isinstance(dtype, str) or dtype.strip().lower() not in WEIGHT_DTYPES):
        raise WorkloadError("dtype", dtype, "one of " + ", ".join(WEIGHT_DTYPES))
    m = m.with_dtypes(weight_dtype=dtype, kv_dtype=kv_cache_dtype, act_dtype=activation_dtype)
    g.peak_flops(m.act_dtype)  # raises if the GPU lacks the activation dtype (weight formats fall back)
    if activation_dtype is not None and activation_dtype.strip().lower() in ("fp8", "fp4"):
        a = activation_dtype.strip().lower()
        if not g.has(f"peak_flops_{a}"):
            raise WorkloadError("activation dtype", a, f"{g.name} has no {a} tensor-core rate in its profile "
                                                       "(leave --activation-dtype out: weights are then dequantised)")
    return m, g


def merge_dtype(dtype: str | None, weight_dtype: str | None) -> str | None:
    """``dtype`` is shorthand for ``weight_dtype``; naming both with different values is an error."""
    if dtype is not None and weight_dtype is not None and dtype != weight_dtype:
        raise WorkloadError("weight_dtype", weight_dtype, f"the same as dtype ({dtype!r}) or left out")
    return weight_dtype if weight_dtype is not None else dtype


def context_limit(model: Model) -> int | None:
    """Longest context (prompt + output tokens) the checkpoint supports, or None when it does not say."""
    value = model.info.get("max_context") if model.info else None
    return int(value) if value else None


def check_context(model: Model, total_tokens, what: str = "prompt_len + output_len") -> None:
    """Exit-2 error when prompt + output tokens exceed the model's context length."""
    limit = context_limit(model)
    worst = float(total_tokens) if type(total_tokens) is int else float(np.max(np.asarray(total_tokens, dtype=float)))
    if limit is not None and worst > limit:
        raise WorkloadError(what, int(worst) if worst == int(worst) else worst,
                            f"at most the context length of {model.hf_id or model.name}: {limit} tokens "
                            f"({model.info.get('max_context_source', 'max_position_embeddings')})")


_PRECISION: dict[tuple, tuple] = {}


def precision_report(model: Model, gpu: GPU) -> dict:
    """Per tensor class: stored format and the GEMM path it is costed on; plus where it was read and notes
    (a fresh copy of what was found for these model and GPU objects before)."""
    hit = _PRECISION.get((id(model), id(gpu)))
    if hit is None or hit[0] is not model or hit[1] is not gpu:
        notes = list(model.info.get("resolution_notes", ()) if model.info else ()) + list(model.precision.notes)
        report = {"classes": model.precision.describe(model.weight_names(), gpu), "source": model.precision.source,
                  "notes": notes}
        if len(_PRECISION) > 256:
            _PRECISION.clear()
        hit = _PRECISION[(id(model), id(gpu))] = (model, gpu, report)
    report = hit[2]
    return {"classes": {k: dict(v) for k, v in report["classes"].items()}, "source": report["source"],
            "notes": list(report["notes"])}


def batch_per_replica(workload: Workload, layout: Layout):
    if type(workload.batch) is int and type(layout.dp) is int and workload.batch % layout.dp == 0:
        return np.int64(workload.batch // layout.dp)  # one configuration that divides (as below)
    b = np.asarray(workload.batch)
    dp = np.asarray(layout.dp)
    if np.any(b % dp != 0):
        raise LayoutError("dp", layout.dp, f"a divisor of the batch ({workload.batch}): each replica serves batch/dp")
    return b // dp


def setup(model: str | Model, gpu: str | GPU, dtype: str | None, batch, prompt_len, output_len, layout: Layout,
          **precision):
    """Checked inputs of one prediction: (model, gpu, workload, batch per replica, per-rank program).
    ``precision``: ``kv_cache_dtype`` and ``activation_dtype`` (see ``prepare``)."""
    m, g = prepare(model, gpu, dtype, **precision)
    for name, value in (("batch", batch), ("prompt_len", prompt_len)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise WorkloadError(name, value, "a positive integer")
    w = Workload(batch, prompt_len, output_len)
    check_context(m, prompt_len + output_len)
    check_layout(m, layout, strict=True)
    return m, g, w, batch_per_replica(w, layout), build_program(m, layout)


@dataclass(frozen=True)
class Bound:
    """A checked (model, execution, system): everything needed to cost it."""

    model: Model
    gpu: GPU
    layout: Layout
    workload: Workload
    batch_per_replica: np.ndarray
    program: Program
    execution: Execution
    route: object  # energylens.moe.Routing (None for dense models without a routing)


def bind(model: str | Model, execution: Execution, system: System) -> Bound:
    """Prepare, check and shard one execution of ``model`` on ``system``."""
    m = load_model(model)
    system.check(execution)
    g = system.gpu_for(execution)
    g.peak_flops(m.act_dtype)  # raises if the GPU lacks the activation dtype (weight formats fall back)
    check_context(m, execution.prompt_len + execution.output_len)  # integers (checked by Execution)
    lay = execution.layout(system.gpus_per_node)
    program = checked_program(m, lay)
    w = Workload(execution.batch, execution.prompt_len, execution.output_len)
    bpr = batch_per_replica(w, lay)
    route = None
    if execution.routing is not None or is_moe(m):
        route = execution.resolved_routing or resolve_routing(None)  # checked for every model; used by MoE only
    return Bound(m, g, lay, w, bpr, program, execution, route)


_PROGRAMS: dict[tuple, tuple[Model, Program]] = {}


def checked_program(model: Model, layout: Layout) -> Program:
    """``check_layout`` (strict) and ``build_program`` of a model and layout; for a layout of plain integers
    kept per (model object, every layout field): a layout that passed once passes again."""
    f = (layout.tp, layout.pp, layout.dp, layout.ep, layout.gpus_per_node)
    key = None
    if all(type(v) is int for v in f) and type(layout.sp) is bool and isinstance(layout.axes, dict):
        key = (id(model), *f, layout.sp, tuple(layout.axes.items()))
        hit = _PROGRAMS.get(key)
        if hit is not None and hit[0] is model:
            return hit[1]
    check_layout(model, layout, strict=True)
    program = build_program(model, layout)
    if key is not None:
        if len(_PROGRAMS) > 256:
            _PROGRAMS.clear()
        _PROGRAMS[key] = (model, program)
    return program


def phase(bound: Bound, sizes, weights, *, decode: bool, microbatches=None) -> PhaseArrays:
    """One phase of ``bound`` at the given sizes (the one call of the phase cost for a bound execution)."""
    moe_kw = {"routing": bound.route} if is_moe(bound.model) else {}
    return evaluate_phase(bound.model, bound.gpu, bound.layout, bound.program, sizes, weights, decode=decode,
                          microbatches=microbatches, **moe_kw)


@dataclass(frozen=True)
class Evaluated:
    """Costed phases of a bound execution (arrays), overlap results and memory per GPU."""

    bound: Bound
    prefill: PhaseArrays
    decode: PhaseArrays
    prefill_overlap: object  # energylens.overlap.cost.OverlapPhase or None
    decode_overlap: object
    plans: tuple
    memory: MemoryReport


def evaluate(bound: Bound) -> Evaluated:
    """Prefill and decode of the static batch, the execution's overlap plans, memory per GPU."""
    m, ex, w = bound.model, bound.execution, bound.workload
    moe_kw = {"routing": bound.route} if is_moe(m) else {}
    plans = tuple(p for p in (ex.overlap if ex.overlap is not None else m.overlap) if p.active)
    both = (prefill_sizes(w, bound.batch_per_replica), decode_sizes(w, bound.batch_per_replica))
    costed = evaluate_phases(m, bound.gpu, bound.layout, bound.program, *both, **moe_kw)  # one plan evaluation
    out = []
    for (sizes, weights), decode, pa in zip(both, (False, True), costed, strict=True):
        ov = None
        if plans:
            from energylens.overlap.cost import evaluate_overlap  # only with overlap plans (cold start)

            ov = evaluate_overlap(m, bound.gpu, bound.layout, bound.program, sizes, weights, decode=decode,
                                  plans=plans, baseline=pa, **moe_kw)
        out.append((pa, ov))
    (pre, pre_ov), (dec, dec_ov) = out
    chunk = {} if ex.max_batched_tokens is None else {"max_batched_tokens": ex.max_batched_tokens}
    mem = memory_per_gpu(m, bound.layout, bound.program, bound.gpu, bound.batch_per_replica,
                         ex.prompt_len + ex.output_len, ex.prompt_len, **chunk)
    memory = MemoryReport(*(float(mem[k]) for k in ("weights_bytes", "kv_cache_bytes", "workspace_bytes",
                                                   "capacity_bytes")), USABLE_MEMORY_FRACTION)
    return Evaluated(bound, pre, dec, pre_ov, dec_ov, plans, memory)
