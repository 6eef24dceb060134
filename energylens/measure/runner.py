"""The measurement loop: warm up, size the repetition count, read the energy counter around windows.

The loop is written against two small interfaces so that it runs under a fake timer and a fake
energy meter on CPU (the tests) and under CUDA events and NVML on a GPU:

* a *backend* with ``synchronize()`` and ``timed(fn, n) -> seconds`` (run ``fn`` ``n`` times back to
  back and return the device time between the first start and the last end, synchronised), and
  optionally ``graph(fn, calls) -> fn'`` (capture ``calls`` calls into one replayable CUDA graph);
* a *meter* with ``energy_j()`` (a monotonically increasing energy counter in J).

Per point: warm-up for ``warmup_s``; probe until ``probe_s`` of work to estimate the time per call;
then ``repeats`` (>= 3) windows, each of at least ``target_s`` of steady work. Energy per call is
the counter delta over a window divided by the calls in it; latency per call is the CUDA-event time
divided by the calls. The idle-subtracted energy removes ``idle_power * wall time``.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from energylens.errors import MeasurementError
from energylens.measure.nvml import SW_POWER_CAP, PowerSamples
from energylens.measure.records import POWER_CAP_FRACTION


@dataclass(frozen=True)
class RunSettings:
    """Knobs of the measurement loop (seconds unless named otherwise)."""

    target_s: float = 1.0  # steady work per repetition window
    repeats: int = 3  # windows per point (>= 3)
    warmup_s: float = 0.25
    probe_s: float = 0.02
    min_calls: int = 1
    max_calls: int = 50_000_000
    idle_s: float = 5.0  # idle power window before and after a suite, and the idle point
    settle_s: float = 2.0  # pause before an idle reading so the GPU drops to idle clocks
    cuda_graphs: bool = True
    graph_below_s: float = 50e-6  # calls shorter than this are captured into CUDA graphs
    graph_target_s: float = 1e-3  # device time of one graph replay
    sample_interval_s: float = 0.05
    power_cap_fraction: float = 0.3  # fraction of power samples showing the SW power cap

    def validate(self) -> RunSettings:
        if not self.target_s > 0:
            raise MeasurementError("seconds", self.target_s, "a positive number of seconds per window")
        if self.repeats < 3:
            raise MeasurementError("repeats", self.repeats, "at least 3 repetitions per point")
        if self.min_calls < 1 or self.max_calls < self.min_calls:
            raise MeasurementError("calls", (self.min_calls, self.max_calls), "1 <= min_calls <= max_calls")
        for name in ("warmup_s", "probe_s", "idle_s", "settle_s"):
            if getattr(self, name) < 0:
                raise MeasurementError(name, getattr(self, name), "a non-negative duration")
        return self


def calls_for_target(
    per_call_s: float, target_s: float, min_calls: int = 1, max_calls: int = 50_000_000
) -> int:
    """Calls needed for ``target_s`` of work when one call takes ``per_call_s``, within the bounds."""
    if not per_call_s > 0 or math.isinf(per_call_s):
        return max_calls if not per_call_s > 0 else min_calls
    return int(min(max_calls, max(min_calls, math.ceil(target_s / per_call_s))))


@dataclass
class Measurement:
    """Per-call results of one point (means over windows, sample std across them)."""

    latency_s: float
    latency_s_std: float
    energy_j: float
    energy_j_std: float
    energy_j_idle_subtracted: float
    avg_power_w: float
    repeats: int
    seconds_measured: float
    calls_per_repeat: int
    busy_fraction: float = 1.0
    launch: str = "eager"
    samples: PowerSamples = field(default_factory=PowerSamples)
    power_capped: bool = False

    def to_fields(self) -> dict:
        """The record fields this measurement fills (the point's kind/dims/flops/bytes come elsewhere)."""
        d = {
            "latency_s": self.latency_s,
            "latency_s_std": self.latency_s_std,
            "energy_j": self.energy_j,
            "energy_j_std": self.energy_j_std,
            "avg_power_w": self.avg_power_w,
            "repeats": self.repeats,
            "seconds_measured": self.seconds_measured,
            "energy_j_idle_subtracted": self.energy_j_idle_subtracted,
            "calls_per_repeat": self.calls_per_repeat,
            "busy_fraction": self.busy_fraction,
            "launch": self.launch,
            "power_capped": self.power_capped,
        }
        s = self.samples
        if s.mean_power_w is not None:
            d["sampled_power_w"] = s.mean_power_w
        if s.mean_sm_clock_mhz is not None:
            d["sm_clock_mhz"] = s.mean_sm_clock_mhz
        if s.max_temperature_c is not None:
            d["temperature_c"] = s.max_temperature_c
        if s.throttle:
            d["power_cap_fraction"] = s.fraction_with(SW_POWER_CAP)
        return d


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def graph_calls(per_call_s: float, settings: RunSettings, min_calls: int = 1) -> int:
    """Calls captured per CUDA graph: about ``graph_target_s`` of work, at least ``min_calls``."""
    calls = math.ceil(settings.graph_target_s / max(per_call_s, 1e-7))
    return int(max(min_calls, min(1024, calls), 1))


def prepare_invoke(
    fn: Callable[[], object],
    backend: object,
    settings: RunSettings,
    graphable: bool = True,
    *,
    force_graph: bool = False,
    min_graph_calls: int = 1,
) -> tuple[Callable[[], object], int, str]:
    """(invoke, calls per invoke, launch mode).

    Calls shorter than ``graph_below_s`` (or any call when ``force_graph``) are captured into one
    CUDA graph of many calls, so host launch gaps do not count as kernel time; ``min_graph_calls``
    keeps every rotating input set inside the graph. Anything else, or a failed capture, runs eagerly.
    """
    backend.timed(fn, 2)  # first calls: lazy init, autotuning, compilation
    per_call = backend.timed(fn, 5) / 5
    graph = getattr(backend, "graph", None)
    wanted = force_graph or per_call < settings.graph_below_s
    if not (settings.cuda_graphs and graphable and graph is not None and wanted):
        return fn, 1, "eager"
    calls = graph_calls(per_call, settings, min_graph_calls)
    try:
        return graph(fn, calls), calls, "cuda_graph"
    except Exception:  # capture is not possible for every op: fall back to eager launches
        return fn, 1, "eager"


def measure_callable(
    invoke: Callable[[], object],
    *,
    backend: object,
    meter: object,
    settings: RunSettings,
    idle_power_w: float,
    calls_per_invoke: int = 1,
    launch: str = "eager",
    clock: Callable[[], float] = time.perf_counter,
    sampler: object | None = None,
    power_limit_w: float | None = None,
    agree: Callable[[int], int] | None = None,
) -> Measurement:
    """Measure one prepared workload (see the module docstring for the procedure).

    ``agree`` maps every data-dependent count or decision to one value shared by all ranks (a MAX
    all-reduce under torch.distributed), so that ranks running a collective make the same calls.
    """
    settings.validate()
    agree = agree or (lambda x: x)
    # warm-up: clocks up, caches and allocator warm
    t0 = clock()
    n = 1
    while True:
        backend.timed(invoke, n)
        if agree(int(clock() - t0 >= settings.warmup_s)):
            break
        n = min(n * 2, settings.max_calls)
    # probe: device time per invoke
    n = 1
    gpu_s = backend.timed(invoke, n)
    while agree(int(gpu_s < settings.probe_s and n < settings.max_calls)):
        grow = 2.0 * settings.probe_s / gpu_s if gpu_s > 0 else 16.0
        n = agree(int(min(settings.max_calls, max(2 * n, math.ceil(n * min(grow, 1e4))))))
        gpu_s = backend.timed(invoke, n)
    per_invoke = gpu_s / n
    invokes = agree(calls_for_target(per_invoke, settings.target_s, settings.min_calls, settings.max_calls))
    calls = invokes * calls_per_invoke

    if sampler is not None:
        sampler.start()
    lat, energy, energy_sub, power, walls, busy = [], [], [], [], [], []
    try:
        for _ in range(settings.repeats):
            backend.synchronize()
            w0 = clock()
            e0 = meter.energy_j()
            g = backend.timed(invoke, invokes)
            e1 = meter.energy_j()
            w1 = clock()
            wall, de = w1 - w0, e1 - e0
            if wall <= 0 or g <= 0:
                raise MeasurementError("window", (wall, g), "positive wall-clock and device times")
            if de <= 0:
                raise MeasurementError(
                    "nvml.energy_counter", de, "a counter that advances during the window (raise --seconds)"
                )
            lat.append(g / calls)
            energy.append(de / calls)
            energy_sub.append((de - idle_power_w * wall) / calls)
            power.append(de / wall)
            walls.append(wall)
            busy.append(min(1.0, g / wall))
    finally:
        samples = sampler.stop() if sampler is not None else PowerSamples()
    lat_m, lat_s = _mean_std(lat)
    e_m, e_s = _mean_std(energy)
    avg_power = sum(e * calls for e in energy) / sum(walls)
    capped = bool(samples.throttle) and samples.fraction_with(SW_POWER_CAP) >= settings.power_cap_fraction
    if power_limit_w:
        capped = capped or avg_power >= POWER_CAP_FRACTION * power_limit_w
    return Measurement(
        latency_s=lat_m,
        latency_s_std=lat_s,
        energy_j=e_m,
        energy_j_std=e_s,
        energy_j_idle_subtracted=statistics.fmean(energy_sub),
        avg_power_w=avg_power,
        repeats=settings.repeats,
        seconds_measured=sum(walls),
        calls_per_repeat=calls,
        busy_fraction=statistics.fmean(busy),
        launch=launch,
        samples=samples,
        power_capped=capped,
    )


def measure_idle_point(
    meter: object,
    settings: RunSettings,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    sampler: object | None = None,
) -> Measurement:
    """``repeats`` windows with no work: 'latency' is the window, energy the counter delta in it."""
    settings.validate()
    window = max(settings.target_s, settings.idle_s / settings.repeats)
    sleep(settings.settle_s)
    if sampler is not None:
        sampler.start()
    walls, energies = [], []
    try:
        for _ in range(settings.repeats):
            e0, w0 = meter.energy_j(), clock()
            sleep(window)
            e1, w1 = meter.energy_j(), clock()
            if w1 <= w0 or e1 < e0:
                raise MeasurementError("idle window", (w1 - w0, e1 - e0), "positive time and energy")
            walls.append(w1 - w0)
            energies.append(e1 - e0)
    finally:
        samples = sampler.stop() if sampler is not None else PowerSamples()
    w_m, w_s = _mean_std(walls)
    e_m, e_s = _mean_std(energies)
    return Measurement(
        latency_s=w_m,
        latency_s_std=w_s,
        energy_j=e_m,
        energy_j_std=e_s,
        energy_j_idle_subtracted=0.0,
        avg_power_w=sum(energies) / sum(walls),
        repeats=settings.repeats,
        seconds_measured=sum(walls),
        calls_per_repeat=1,
        busy_fraction=0.0,
        launch="none",
        samples=samples,
    )


# --------------------------------------------------------------------------- torch


def import_torch(require_cuda: bool = True):
    """``torch`` (with a CUDA device when asked) or a clear ``MeasurementError``."""
    try:
        import torch  # optional dependency, imported lazily on purpose
    except ImportError as exc:
        raise MeasurementError(
            "torch", "not installed", "measurements run PyTorch on a GPU: pip install 'energylens[measure]'"
        ) from exc
    if require_cuda and not torch.cuda.is_available():
        raise MeasurementError("torch.cuda", "unavailable", "an NVIDIA GPU visible to PyTorch (CUDA build)")
    return torch


class TorchBackend:
    """CUDA events for device time, CUDA graphs for short calls."""

    def __init__(self, torch: object, device: object) -> None:
        self.torch = torch
        self.device = device

    def synchronize(self) -> None:
        self.torch.cuda.synchronize(self.device)

    def timed(self, fn: Callable[[], object], n: int) -> float:
        cuda = self.torch.cuda
        start = cuda.Event(enable_timing=True)
        end = cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0

    def graph(self, fn: Callable[[], object], calls: int) -> Callable[[], object]:
        cuda = self.torch.cuda
        side = cuda.Stream(device=self.device)
        side.wait_stream(cuda.current_stream(self.device))
        with cuda.stream(side):
            for _ in range(3):
                fn()
        cuda.current_stream(self.device).wait_stream(side)
        self.synchronize()
        g = cuda.CUDAGraph()
        with cuda.graph(g):
            for _ in range(calls):
                fn()
        self.synchronize()
        return g.replay


def torch_version_metadata(torch: object, device: object) -> dict:
    """PyTorch, CUDA runtime and device properties for a record's metadata."""
    props = torch.cuda.get_device_properties(device)
    meta = {
        "torch_version": str(torch.__version__),
        "cuda_runtime_version": str(torch.version.cuda),
        "torch_device_name": str(props.name),
        "compute_capability": f"{props.major}.{props.minor}",
        "sm_count": int(props.multi_processor_count),
        "torch_total_memory_bytes": int(props.total_memory),
    }
    l2 = getattr(props, "L2_cache_size", None)
    if l2:
        meta["l2_cache_bytes"] = int(l2)
    uuid = getattr(props, "uuid", None)
    if uuid is not None:
        meta["torch_device_uuid"] = str(uuid)
    return meta
