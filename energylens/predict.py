"""``predict``: model x GPU x layout x workload -> Prediction (prefill, decode, per op, per GPU)."""

from __future__ import annotations

import numpy as np

from energylens.assemble import moe_report, overlap_summary, phase_result, with_overlap
from energylens.errors import SpecError, WorkloadError
from energylens.graph.model import Model
from energylens.hardware.profile import DTYPE_BYTES, GPU, KERNEL_FAMILY_FIELDS
from energylens.intervals import runtime_interval
from energylens.moe.binding import is_moe
from energylens.parallel.layout import Layout
from energylens.pipeline import USABLE_MEMORY_FRACTION, bind, evaluate, merge_dtype, precision_report, prepare
from energylens.results import Prediction
from energylens.specs.execution import Execution
from energylens.specs.system import System

_PROVENANCE: dict[tuple, tuple] = {}


def provenance(gpu: GPU, model: Model) -> dict:
    """Kind (spec, measured, derived, fitted, assumed) and source of every GPU coefficient this prediction
    used, so a reader sees which numbers came from measurement and which from estimates (a fresh copy of
    what was found for these GPU and model objects before)."""
    hit = _PROVENANCE.get((id(gpu), id(model)))
    if hit is None or hit[0] is not gpu or hit[1] is not model:
        if len(_PROVENANCE) > 256:
            _PROVENANCE.clear()
        hit = _PROVENANCE[(id(gpu), id(model))] = (gpu, model, _provenance(gpu, model))
    return {k: dict(v) if isinstance(v, dict) else v for k, v in hit[2].items()}


def _provenance(gpu: GPU, model: Model) -> dict:
    from energylens.graph.precision import gemm_dtype

    dtypes = {model.act_dtype, "fp32"} | {gemm_dtype(model.weight_format(n), model.act_dtype, gpu)
                                          for n in model.weight_names()}
    names = ["hbm_bandwidth", "max_memory_efficiency", "energy_per_byte_hbm", "idle_power", "power_limit",
             "kernel_overhead", "gemm_tile_m", "gemm_tile_n", "gemm_k_half", "sm_count", "hbm_capacity", "busy_power"]
    for dt in sorted(dtypes):
        names += [f"peak_flops_{dt}", f"max_compute_efficiency_{dt}", f"energy_per_flop_{dt}"]
    # kernel-family coefficients (cost/families.py) of the dtypes in use, where the profile has them
    names += [f for f in KERNEL_FAMILY_FIELDS if "{dtype}" not in f]
    names += [f.format(dtype=dt) for f in KERNEL_FAMILY_FIELDS if "{dtype}" in f
              for dt in sorted(dtypes | {model.kv_dtype})]
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


_KEYWORD_DEFAULTS = dict(gpu=None, batch=1, prompt_len=2048, output_len=256, dtype=None, tp=1, pp=1, dp=1, ep=1,
                         sp=False, gpus_per_node=8, layout=None, routing=None, power_limit_w=None,
                         sm_clock_mhz=None, weight_dtype=None, kv_cache_dtype=None, activation_dtype=None)


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
    input_len: int | None = None,
    weight_dtype: str | None = None,
    kv_cache_dtype: str | None = None,
    activation_dtype: str | None = None,
    detail: bool = True,
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
    (:mod:`energylens.cost.dvfs`); default: the profile's limit, clocks free. ``input_len`` is an alias
    of ``prompt_len`` (prompt tokens per sequence; ``serve`` and ``plan`` call it ``input_len``).
    (:mod:`energylens.cost.dvfs`); default: the profile's limit, clocks free.
    Precision: the checkpoint's own formats unless ``weight_dtype`` (``dtype`` is its shorthand),
    ``kv_cache_dtype`` or ``activation_dtype`` say otherwise (:mod:`energylens.graph.precision`).
    ``detail=False``: per-phase and per-GPU totals only (no per-op and per-collective rows, no coefficient
    provenance or precision report); the totals are the same numbers.
    """
    if input_len is not None:
        if prompt_len != _KEYWORD_DEFAULTS["prompt_len"] and prompt_len != input_len:
            raise WorkloadError("input_len", input_len, f"the same as prompt_len ({prompt_len}) or prompt_len unset: "
                                                        "they are one quantity")
        prompt_len = input_len
    if isinstance(execution, Execution):
        kw = dict(gpu=gpu, batch=batch, prompt_len=prompt_len, output_len=output_len, dtype=dtype, tp=tp, pp=pp,
                  dp=dp, ep=ep, sp=sp, gpus_per_node=gpus_per_node, layout=layout, routing=routing,
                  power_limit_w=power_limit_w, sm_clock_mhz=sm_clock_mhz, weight_dtype=weight_dtype,
                  kv_cache_dtype=kv_cache_dtype, activation_dtype=activation_dtype)
        given = {k: v for k, v in kw.items() if not (v is _KEYWORD_DEFAULTS[k] or (
            type(v) is type(_KEYWORD_DEFAULTS[k]) and v == _KEYWORD_DEFAULTS[k]))}
        if given:
            raise SpecError(next(iter(given)), next(iter(given.values())),
                            "no keyword next to an Execution: set it on the Execution or System")
        if not isinstance(system, System):
            raise SpecError("system", system, "an energylens.specs.System next to an Execution")
        return predict_specs(model, execution, system, detail=detail)
    if system is not None:
        raise SpecError("execution", execution, "an energylens.specs.Execution when a System is given")
    for name, value in (("batch", batch), ("prompt_len", prompt_len)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise WorkloadError(name, value, "a positive integer")
    lay = layout or Layout(tp=tp, pp=pp, dp=dp, ep=ep, sp=sp, gpus_per_node=gpus_per_node)
    ex = Execution.from_layout(lay, batch=int(batch), prompt_len=int(prompt_len), output_len=_int(output_len),
                               routing=routing, power_limit_w=power_limit_w, sm_clock_mhz=sm_clock_mhz)
    m, g = prepare(model, gpu if gpu is not None else execution, merge_dtype(dtype, weight_dtype),
                   kv_cache_dtype=kv_cache_dtype, activation_dtype=activation_dtype)
    return predict_specs(m, ex, System.for_execution(g, ex, int(lay.gpus_per_node)), detail=detail)


def _int(value):
    return int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value


def predict_specs(model: str | Model, execution: Execution, system: System, *, detail: bool = True) -> Prediction:
    """The core call: one ``Execution`` of a ``Model`` on a ``System`` (see ``predict``; ``detail``)."""
    ev = evaluate(bind(model, execution, system))
    b = ev.bound
    m, g, lay, w, route = b.model, b.gpu, b.layout, b.workload, b.route
    memory = ev.memory
    warnings = []
    if not memory.fits:
        warnings.append(
            f"does not fit: {memory.required_bytes / 1e9:.1f} GB needed per GPU (weights "
            f"{memory.weights_bytes / 1e9:.1f} + KV cache {memory.kv_cache_bytes / 1e9:.1f} + workspace "
            f"{memory.workspace_bytes / 1e9:.1f}) > {USABLE_MEMORY_FRACTION:.0%} of {memory.capacity_bytes / 1e9:.0f} GB "
            f"on {g.name}; use more GPUs (tp/pp), a smaller batch or narrower weights (--weight-dtype fp8 or int4)"
        )
    prefill = phase_result("prefill", ev.prefill, m, g, lay, b.program, tokens=float(w.batch * w.prompt_len),
                           detail=detail)
    decode = phase_result("decode", ev.decode, m, g, lay, b.program, tokens=float(w.batch * w.output_len),
                          detail=detail)
    extra: dict = {}
    if ev.plans:
        extra["overlap"] = {"plans": [p.to_dict() for p in ev.plans],
                            **{ph.phase: overlap_summary(ph, ov) for ph, ov in ((prefill, ev.prefill_overlap),
                                                                                (decode, ev.decode_overlap))}}
        prefill, decode = with_overlap(prefill, ev.prefill_overlap), with_overlap(decode, ev.decode_overlap)
    report = None
    if is_moe(m):
        report = moe_report(m, lay, route, ev.prefill, ev.decode)
        recorded_k = getattr(route, "recorded_top_k", None)
        if recorded_k is not None and recorded_k != report.top_k:
            warnings.append(f"routing file {route.name} was recorded with top_k={recorded_k}; "
                            f"{m.name} routes top_k={report.top_k}")
    elif execution.routing is not None and route is not None and route.kind != "uniform":
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
               **({"provenance": provenance(g, m)} if detail else {}), "operating_point": operating_point(g),
               **({"precision": precision_report(m, g)} if detail else {}), **extra},
        moe=report,
    )


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
