"""Run a measurement suite on the local GPU and write one JSON record.

``micro``: GEMMs (bf16, fp8 where supported), HBM copy/read, flash attention, element-wise ops, idle.
``models``: one decoder layer and a whole Llama-3-8B / Qwen3-30B-A3B-shaped model (random weights),
prefill and decode steps. ``collectives``: NCCL collectives under torchrun (see ``collective_suite.py``).

PyTorch and NVML are imported when a suite runs, never at import time. Clocks and power limits are
never changed: the record states the ones found (metadata) and the power-cap throttling seen.
"""

from __future__ import annotations

import datetime as _dt
import socket
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from energylens.errors import MeasurementError
from energylens.measure.points import MODELS, PointSpec, plan_micro, plan_models
from energylens.measure.records import write_record
from energylens.measure.runner import (
    RunSettings,
    measure_callable,
    measure_idle_point,
    prepare_invoke,
)
from energylens.measure.session import (  # noqa: F401 - re-exported for callers of suites
    GpuSession,
    Log,
    SuiteOptions,
    apply_shard,
    new_record,
    parse_shard,
    point_dict,
    record_path,
)


def _fmt(p: dict) -> str:
    return (
        f"{p['name']}: {p['latency_s'] * 1e6:,.1f} us, {p['energy_j'] * 1e3:,.3f} mJ, "
        f"{p['avg_power_w']:.0f} W{' (power-capped)' if p.get('power_capped') else ''}"
    )


def run_suite(
    suite: str,
    out: str | Path,
    settings: RunSettings | None = None,
    options: SuiteOptions | None = None,
    log: Log = print,
) -> Path:
    """Measure ``suite`` on this machine's GPU and write the record; returns its path."""
    settings = (settings or RunSettings()).validate()
    options = (options or SuiteOptions()).validate(suite)
    if suite == "collectives":
        from energylens.measure.collective_suite import run_collectives

        return run_collectives(out, settings, options, log)
    sess = GpuSession(options.device_index, settings)
    meta = {
        **sess.metadata,
        "settings": asdict(settings),
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(options).items()},
        "complete": False,
        "skipped": [],
    }
    path = record_path(out, suite, _dt.datetime.now(_dt.timezone.utc), socket.gethostname(), options.shard)
    log(
        f"{meta['gpu_name']} (driver {meta.get('driver_version')}, limit {sess.power_limit_w:.0f} W) -> {path}"
    )
    idle_before = sess.idle_power()
    log(f"idle power before: {idle_before:.1f} W")
    points: list[dict] = []
    if suite == "micro":
        specs = apply_shard(
            plan_micro(options.size, options.only, options.fp8, settings.idle_s), options.shard
        )
        runner = _run_micro
    else:
        specs = apply_shard(plan_models(options.size, sess.free_bytes(), options.models), options.shard)
        runner = _run_models

    def save(idle_after: float) -> None:
        write_record(new_record(suite, meta, idle_before, idle_after, points), path)

    runner(sess, specs, options, meta, points, idle_before, save, log)
    idle_after = sess.idle_power()
    meta["complete"] = True
    save(idle_after)
    log(
        f"idle power after: {idle_after:.1f} W; {len(points)} points, {len(meta['skipped'])} skipped -> {path}"
    )
    return path


def _over_budget(t0: float, options: SuiteOptions) -> bool:
    return options.budget_s is not None and time.monotonic() - t0 > options.budget_s


def _skip(meta: dict, spec: PointSpec, reason: str, log: Log) -> None:
    meta["skipped"].append({"name": spec.name, "reason": reason})
    log(f"skipped {spec.name}: {reason}")


def _error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


def _run_micro(
    sess: GpuSession,
    specs: list[PointSpec],
    options: SuiteOptions,
    meta: dict,
    points: list[dict],
    idle_before: float,
    save: Callable[[float], None],
    log: Log,
) -> None:
    from energylens.measure.workloads import build_micro, fp8_supported

    torch, settings = sess.torch, sess.settings
    fp8_ok, fp8_why = (False, "not asked") if not options.fp8 else fp8_supported(torch, sess.device)
    meta["fp8"] = {"supported": fp8_ok, "reason": fp8_why}
    t0 = time.monotonic()
    for spec in specs:
        if _over_budget(t0, options):
            _skip(meta, spec, "time budget spent", log)
            continue
        if spec.dtype == "fp8" and not fp8_ok:
            _skip(meta, spec, f"fp8 unsupported: {fp8_why}", log)
            continue
        work = invoke = None
        try:
            if spec.kind == "idle":
                m = measure_idle_point(sess.nv, settings, sampler=sess.sampler())
                info: dict = {}
            else:
                free = sess.free_bytes()
                if spec.footprint_bytes > 0.9 * free:
                    _skip(
                        meta,
                        spec,
                        f"needs {spec.footprint_bytes / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free",
                        log,
                    )
                    continue
                work = build_micro(torch, sess.device, spec, sess.l2_bytes, free, options.compile_elementwise)
                invoke, per, launch = prepare_invoke(
                    work.fn,
                    sess.backend,
                    settings,
                    work.graphable,
                    force_graph=work.force_graph,
                    min_graph_calls=work.rotation,
                )
                m = measure_callable(
                    invoke,
                    backend=sess.backend,
                    meter=sess.nv,
                    settings=settings,
                    idle_power_w=idle_before,
                    calls_per_invoke=per,
                    launch=launch,
                    sampler=sess.sampler(),
                    power_limit_w=sess.power_limit_w,
                )
                spec, info = work.spec, work.info
            points.append(point_dict(spec, m, info))
            log(_fmt(points[-1]))
        except (torch.cuda.OutOfMemoryError, RuntimeError, MeasurementError) as exc:
            _skip(meta, spec, _error_line(exc), log)
        finally:
            work = invoke = None
            sess.release()
        save(idle_before)


def _run_models(
    sess: GpuSession,
    specs: list[PointSpec],
    options: SuiteOptions,
    meta: dict,
    points: list[dict],
    idle_before: float,
    save: Callable[[float], None],
    log: Log,
) -> None:
    from energylens.measure.decoder import DecoderModel

    torch, settings = sess.torch, sess.settings
    t0 = time.monotonic()
    for key in options.models:
        mine = [s for s in specs if s.dims["model"] == key]
        if not mine:
            continue
        dims = MODELS[key]
        layers = max(int(s.dims["layers"]) for s in mine)
        try:
            model = DecoderModel(torch, dims, layers, sess.device)
        except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
            for s in mine:
                _skip(meta, s, f"model build failed: {_error_line(exc)}", log)
            sess.release()
            continue
        log(
            f"{key}: {layers} of {dims.layers} layers built ({'truncated' if layers < dims.layers else 'whole model'})"
        )
        for spec in mine:
            if _over_budget(t0, options):
                _skip(meta, spec, "time budget spent", log)
                continue
            invoke = fn = inputs = None
            try:
                d = spec.dims
                b, new, kv = int(d["batch"]), int(d["new_tokens"]), int(d["kv_len"])
                n_layers, head = int(d["layers"]), d["scope"] != "layer"
                model.allocate_cache(b, kv + new, n_layers)
                if head:
                    inputs = torch.randint(0, dims.vocab, (b, new), device=sess.device)
                else:
                    inputs = torch.randn((b, new, dims.hidden), device=sess.device, dtype=torch.bfloat16)

                def fn(
                    model: DecoderModel = model,
                    inputs: object = inputs,
                    kv: int = kv,
                    n_layers: int = n_layers,
                    head: bool = head,
                ) -> object:
                    return model.forward(inputs, kv, n_layers, head)

                decode = spec.kind == "model_decode"
                invoke, per, launch = prepare_invoke(
                    fn, sess.backend, settings, graphable=not dims.is_moe, force_graph=decode
                )
                m = measure_callable(
                    invoke,
                    backend=sess.backend,
                    meter=sess.nv,
                    settings=settings,
                    idle_power_w=idle_before,
                    calls_per_invoke=per,
                    launch=launch,
                    sampler=sess.sampler(),
                    power_limit_w=sess.power_limit_w,
                )
                info = {
                    "impl": "plain torch ops + flash SDPA, random bf16 weights",
                    "gqa": "native" if model.native_gqa else "fold/expand",
                }
                points.append(point_dict(spec, m, info))
                log(_fmt(points[-1]))
            except (torch.cuda.OutOfMemoryError, RuntimeError, MeasurementError) as exc:
                _skip(meta, spec, _error_line(exc), log)
            finally:
                invoke = fn = inputs = None  # the graph and the closure hold the model and its buffers
                model.k_cache, model.v_cache = [], []
                sess.release()
            save(idle_before)
        model = None
        sess.release()
