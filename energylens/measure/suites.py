"""Run a measurement suite on the local GPU and write one JSON record.

``micro``: GEMMs (bf16, fp8 where supported), HBM copy/read, flash attention, element-wise ops, idle.
``models``: one decoder layer and a whole Llama-3-8B / Qwen3-30B-A3B-shaped model (random weights),
prefill and decode steps. ``collectives``: NCCL collectives under torchrun (see ``collectives.py``).

PyTorch and NVML are imported when a suite runs, never at import time. Clocks and power limits are
never changed: the record states the ones found (metadata) and the power-cap throttling seen.
"""

from __future__ import annotations

import datetime as _dt
import gc
import re
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from energylens.errors import MeasurementError, UnknownNameError
from energylens.measure.nvml import PowerSampler, measure_idle, open_device
from energylens.measure.plan import MICRO_KINDS, MODELS, SIZES, PointSpec, model_dims, plan_micro, plan_models
from energylens.measure.records import SCHEMA_VERSION, SUITES, UNITS, write_record
from energylens.measure.runner import (
    Measurement,
    RunSettings,
    TorchBackend,
    import_torch,
    measure_callable,
    measure_idle_point,
    prepare_invoke,
    torch_version_metadata,
)

Log = Callable[[str], None]


@dataclass(frozen=True)
class SuiteOptions:
    """What to measure (the ``RunSettings`` say how)."""

    size: str = "default"
    only: tuple[str, ...] | None = None  # micro kinds to keep
    shard: tuple[int, int] | None = None  # (i, n): keep every n-th point starting at i
    budget_s: float | None = None  # stop starting new points after this many seconds
    fp8: bool = True
    compile_elementwise: bool = True
    models: tuple[str, ...] = ("llama-3-8b", "qwen3-30b-a3b")
    device_index: int = 0

    def validate(self, suite: str) -> SuiteOptions:
        if suite not in SUITES:
            raise UnknownNameError("suite", suite, SUITES)
        if self.size not in SIZES:
            raise UnknownNameError("size", self.size, SIZES)
        for k in self.only or ():
            if k not in MICRO_KINDS:
                raise UnknownNameError("only", k, MICRO_KINDS)
        for m in self.models:
            model_dims(m)
        if self.shard is not None:
            i, n = self.shard
            if not (n >= 1 and 0 <= i < n):
                raise MeasurementError("shard", f"{i}/{n}", "I/N with 0 <= I < N")
        if self.budget_s is not None and self.budget_s <= 0:
            raise MeasurementError("budget_s", self.budget_s, "a positive number of seconds")
        return self


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"1/4"`` -> (1, 4); None or "" -> None."""
    if not text:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m:
        raise MeasurementError("shard", text, "I/N, e.g. 0/3 for the first of three shards")
    i, n = int(m.group(1)), int(m.group(2))
    if not (n >= 1 and 0 <= i < n):
        raise MeasurementError("shard", text, "I/N with 0 <= I < N")
    return i, n


def apply_shard(points: list[PointSpec], shard: tuple[int, int] | None) -> list[PointSpec]:
    if shard is None:
        return list(points)
    i, n = shard
    return points[i::n]


def record_path(
    out: str | Path, suite: str, when: _dt.datetime, host: str, shard: tuple[int, int] | None = None
) -> Path:
    """``out`` itself when it names a ``.json`` file, else ``out/<suite>-<UTC stamp>-<host>[-sI-N].json``."""
    out = Path(out)
    if out.suffix == ".json":
        return out
    safe_host = re.sub(r"[^A-Za-z0-9_.-]", "_", host)[:40] or "host"
    tail = f"-s{shard[0]}-{shard[1]}" if shard else ""
    return out / f"{suite}-{when.strftime('%Y%m%dT%H%M%SZ')}-{safe_host}{tail}.json"


def point_dict(spec: PointSpec, m: Measurement, info: dict | None = None) -> dict:
    """The record point for a measured spec."""
    d = {
        "kind": spec.kind,
        "dtype": spec.dtype,
        "dims": dict(spec.dims),
        "flops": spec.flops,
        "bytes": spec.bytes,
    }
    d.update(m.to_fields())
    d["name"] = spec.name
    if spec.origins:
        d["origins"] = list(spec.origins)
    if info:
        d.update(info)
    return d


def new_record(suite: str, metadata: dict, idle_before: float, idle_after: float, points: list[dict]) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "suite": suite,
        "metadata": metadata,
        "units": dict(UNITS),
        "idle_power_w_before": idle_before,
        "idle_power_w_after": idle_after,
        "points": points,
    }


class GpuSession:
    """PyTorch device, CUDA-event backend and NVML counter of one GPU."""

    def __init__(self, device_index: int, settings: RunSettings) -> None:
        self.torch = torch = import_torch()
        self.settings = settings
        if not 0 <= device_index < torch.cuda.device_count():
            raise MeasurementError(
                "device", device_index, f"a CUDA device index below {torch.cuda.device_count()}"
            )
        self.device = torch.device("cuda", device_index)
        torch.cuda.set_device(self.device)
        props = torch.cuda.get_device_properties(self.device)
        uuid = getattr(props, "uuid", None)
        self.nv = open_device(device_index, str(uuid) if uuid is not None else None)
        self.backend = TorchBackend(torch, self.device)
        self.metadata = {**self.nv.metadata(), **torch_version_metadata(torch, self.device)}
        self.l2_bytes = float(self.metadata.get("l2_cache_bytes") or 50e6)

    @property
    def power_limit_w(self) -> float:
        return float(self.metadata["power_limit_w"])

    def sampler(self) -> PowerSampler:
        return PowerSampler(self.nv, self.settings.sample_interval_s)

    def idle_power(self) -> float:
        """Idle power after a settle pause (work finished, clocks down)."""
        self.release()
        time.sleep(self.settings.settle_s)
        return measure_idle(self.nv, max(self.settings.idle_s, 0.5))[0]

    def free_bytes(self) -> float:
        return float(self.torch.cuda.mem_get_info(self.device)[0])

    def release(self) -> None:
        gc.collect()
        self.torch.cuda.synchronize(self.device)
        self.torch.cuda.empty_cache()


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
        from energylens.measure.collectives import run_collectives

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
    from energylens.measure.model import DecoderModel

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
