"""The harness's pure-Python parts under a fake timer, fake CUDA backend and fake NVML."""

from __future__ import annotations

import inspect
import sys
import time
from types import SimpleNamespace

import pytest

from energylens.errors import MeasurementError
from energylens.measure import nvml as nvml_mod
from energylens.measure import runner
from energylens.measure.nvml import (
    SW_POWER_CAP,
    NvmlDevice,
    PowerSampler,
    PowerSamples,
    measure_idle,
    nvml_index_for,
    open_device,
)
from energylens.measure.runner import RunSettings, calls_for_target, measure_callable, prepare_invoke
from energylens.measure.workloads import rotation_count


class FakeGPU:
    """A fake clock + energy counter; kernels advance both."""

    def __init__(self, idle_w: float = 70.0) -> None:
        self.t = 0.0
        self.energy = 1000.0
        self.idle_w = idle_w

    def clock(self) -> float:
        return self.t

    def energy_j(self) -> float:
        return self.energy

    def run(self, seconds: float, power_w: float) -> None:
        self.t += seconds
        self.energy += seconds * power_w

    def sleep(self, seconds: float) -> None:
        self.run(seconds, self.idle_w)


class FakeKernel:
    def __init__(self, per_call_s: float, power_w: float) -> None:
        self.per_call_s = per_call_s
        self.power_w = power_w
        self.calls = 0

    def __call__(self) -> None:  # only the fake backend's bookkeeping calls it
        self.calls += 1


class FakeBackend:
    """``timed`` advances the fake clock by the kernel's time instead of running it n times."""

    def __init__(self, gpu: FakeGPU, host_gap_s: float = 0.0, graph_ok: bool = True) -> None:
        self.gpu = gpu
        self.host_gap_s = host_gap_s
        self.graph_ok = graph_ok
        self.syncs = 0
        self.timed_calls: list[int] = []

    def synchronize(self) -> None:
        self.syncs += 1

    def timed(self, fn: object, n: int) -> float:
        per = fn.per_call_s * getattr(fn, "calls_per_invoke", 1)
        self.timed_calls.append(n)
        fn.calls += n
        self.gpu.run(n * per, fn.power_w)
        self.gpu.sleep(self.host_gap_s)
        return n * per

    def graph(self, fn: FakeKernel, calls: int) -> FakeKernel:
        if not self.graph_ok:
            raise RuntimeError("capture failed")
        g = FakeKernel(fn.per_call_s, fn.power_w)
        g.calls_per_invoke = calls
        return g


def test_calls_for_target() -> None:
    assert calls_for_target(1e-3, 1.0) == 1000
    assert calls_for_target(3e-4, 1.0) == 3334  # rounds up: at least the target
    assert calls_for_target(2.0, 1.0) == 1  # one long call is enough
    assert calls_for_target(1e-9, 1.0, max_calls=10_000) == 10_000
    assert calls_for_target(1e-3, 1.0, min_calls=5000) == 5000
    assert calls_for_target(0.0, 1.0, max_calls=77) == 77


def test_measure_callable_steady_windows() -> None:
    gpu = FakeGPU(idle_w=70.0)
    backend = FakeBackend(gpu)
    k = FakeKernel(1e-3, 400.0)
    s = RunSettings(target_s=1.0, repeats=3, warmup_s=0.25, probe_s=0.02)
    m = measure_callable(k, backend=backend, meter=gpu, settings=s, idle_power_w=70.0, clock=gpu.clock)
    assert m.repeats == 3
    assert m.calls_per_repeat == 1000
    assert backend.timed_calls[-3:] == [1000, 1000, 1000]
    assert m.latency_s == pytest.approx(1e-3)
    assert m.energy_j == pytest.approx(0.4)
    assert m.energy_j_idle_subtracted == pytest.approx((400.0 - 70.0) * 1e-3)
    assert m.avg_power_w == pytest.approx(400.0)
    assert m.seconds_measured >= 3 * s.target_s
    assert m.latency_s_std == pytest.approx(0.0, abs=1e-12)
    # warm-up and probe ran before the windows
    assert k.calls > 3000
    f = m.to_fields()
    assert f["repeats"] == 3 and f["calls_per_repeat"] == 1000 and f["power_capped"] is False


def test_long_and_short_calls() -> None:
    gpu = FakeGPU()
    k = FakeKernel(2.0, 300.0)  # one call outlasts the target
    m = measure_callable(
        k, backend=FakeBackend(gpu), meter=gpu, settings=RunSettings(), idle_power_w=70.0, clock=gpu.clock
    )
    assert m.calls_per_repeat == 1 and m.repeats == 3 and m.latency_s == pytest.approx(2.0)

    gpu = FakeGPU()
    backend = FakeBackend(gpu, host_gap_s=1e-4)
    g = backend.graph(FakeKernel(2e-6, 250.0), 100)  # a graph of 100 two-microsecond calls
    m = measure_callable(
        g,
        backend=backend,
        meter=gpu,
        settings=RunSettings(target_s=0.5),
        idle_power_w=70.0,
        calls_per_invoke=100,
        launch="cuda_graph",
        clock=gpu.clock,
    )
    assert m.latency_s == pytest.approx(2e-6)
    assert m.calls_per_repeat == 100 * 2500
    assert m.launch == "cuda_graph"
    # the host gap after each window is not kernel time: busy fraction < 1, energy per call unchanged
    assert m.busy_fraction < 1.0
    assert m.energy_j == pytest.approx(2e-6 * 250.0, rel=1e-3)


def test_agree_sets_the_counts() -> None:
    gpu = FakeGPU()
    seen = []

    def agree(x: int) -> int:
        seen.append(x)
        return x if x in (0, 1) else 2 * x  # another rank wanted twice as many

    backend = FakeBackend(gpu)
    m = measure_callable(
        FakeKernel(1e-3, 400.0),
        backend=backend,
        meter=gpu,
        settings=RunSettings(),
        idle_power_w=70.0,
        clock=gpu.clock,
        agree=agree,
    )
    assert m.calls_per_repeat == 2 * 1000
    assert seen


def test_settings_and_counter_errors() -> None:
    with pytest.raises(MeasurementError, match="repeats"):
        RunSettings(repeats=2).validate()
    with pytest.raises(MeasurementError, match="seconds"):
        RunSettings(target_s=0).validate()

    class Stuck(FakeGPU):
        def energy_j(self) -> float:
            return 5.0

    gpu = Stuck()
    with pytest.raises(MeasurementError, match="energy_counter"):
        measure_callable(
            FakeKernel(1e-3, 400.0),
            backend=FakeBackend(gpu),
            meter=gpu,
            settings=RunSettings(),
            idle_power_w=70.0,
            clock=gpu.clock,
        )


def test_power_cap_detection() -> None:
    gpu = FakeGPU()

    class CappedSampler:
        def start(self) -> None:
            pass

        def stop(self) -> PowerSamples:
            return PowerSamples(power_w=[699.0] * 10, throttle=[SW_POWER_CAP] * 8 + [0, 0])

    m = measure_callable(
        FakeKernel(1e-3, 500.0),
        backend=FakeBackend(gpu),
        meter=gpu,
        settings=RunSettings(),
        idle_power_w=70.0,
        clock=gpu.clock,
        sampler=CappedSampler(),
    )
    assert m.power_capped
    f = m.to_fields()
    assert f["power_cap_fraction"] == pytest.approx(0.8) and f["sampled_power_w"] == pytest.approx(699.0)
    gpu = FakeGPU()
    m = measure_callable(
        FakeKernel(1e-3, 690.0),
        backend=FakeBackend(gpu),
        meter=gpu,
        settings=RunSettings(),
        idle_power_w=70.0,
        clock=gpu.clock,
        power_limit_w=700.0,
    )
    assert m.power_capped  # drawing >= 97% of the enforced limit
    gpu = FakeGPU()
    m = measure_callable(
        FakeKernel(1e-3, 500.0),
        backend=FakeBackend(gpu),
        meter=gpu,
        settings=RunSettings(),
        idle_power_w=70.0,
        clock=gpu.clock,
        power_limit_w=700.0,
    )
    assert not m.power_capped


def test_prepare_invoke_graphs_short_calls() -> None:
    gpu = FakeGPU()
    s = RunSettings()
    inv, per, launch = prepare_invoke(FakeKernel(1e-5, 200.0), FakeBackend(gpu), s)
    assert launch == "cuda_graph" and per == 100  # about graph_target_s (1 ms) per replay
    inv, per, launch = prepare_invoke(FakeKernel(1e-5, 200.0), FakeBackend(gpu), s, min_graph_calls=150)
    assert per == 150  # every rotating input set is inside the graph
    inv, per, launch = prepare_invoke(FakeKernel(1e-3, 200.0), FakeBackend(gpu), s)
    assert (per, launch) == (1, "eager")
    inv, per, launch = prepare_invoke(FakeKernel(1e-3, 200.0), FakeBackend(gpu), s, force_graph=True)
    assert (per, launch) == (1, "cuda_graph")
    inv, per, launch = prepare_invoke(FakeKernel(1e-5, 200.0), FakeBackend(gpu, graph_ok=False), s)
    assert (per, launch) == (1, "eager")
    inv, per, launch = prepare_invoke(
        FakeKernel(1e-5, 200.0), FakeBackend(gpu), RunSettings(cuda_graphs=False)
    )
    assert launch == "eager"


def test_idle_measurements() -> None:
    gpu = FakeGPU(idle_w=65.0)
    power, energy, wall = measure_idle(gpu, 5.0, clock=gpu.clock, sleep=gpu.sleep)
    assert power == pytest.approx(65.0) and wall == pytest.approx(5.0) and energy == pytest.approx(325.0)
    m = runner.measure_idle_point(
        gpu, RunSettings(idle_s=6.0, settle_s=1.0), clock=gpu.clock, sleep=gpu.sleep
    )
    assert m.avg_power_w == pytest.approx(65.0) and m.repeats == 3 and m.latency_s == pytest.approx(2.0)
    with pytest.raises(MeasurementError):
        measure_idle(gpu, 0.0, clock=gpu.clock, sleep=gpu.sleep)


def test_power_sampler_thread() -> None:
    dev = SimpleNamespace(
        power_w=lambda: 123.0,
        sm_clock_mhz=lambda: 1980.0,
        temperature_c=lambda: 41.0,
        throttle_reasons=lambda: SW_POWER_CAP,
    )
    sampler = PowerSampler(dev, interval_s=0.005)
    with sampler:
        time.sleep(0.05)
    s = sampler.samples
    assert len(s.power_w) >= 2
    assert s.mean_power_w == pytest.approx(123.0)
    assert s.mean_sm_clock_mhz == pytest.approx(1980.0)
    assert s.max_temperature_c == pytest.approx(41.0)
    assert s.fraction_with(SW_POWER_CAP) == 1.0


def test_rotation_defeats_l2() -> None:
    assert rotation_count(1 << 20, 50e6, 80e9) == 144  # 3 x 50 MB of 1 MiB sets
    assert rotation_count(8 << 30, 50e6, 80e9) == 1
    assert rotation_count(1 << 20, 50e6, 20 << 20) == 10  # at most half the free memory
    assert rotation_count(1024, 50e6, 80e9) == 256  # capped


class FakeNvml:
    """Getter-only stand-in for pynvml; any other attribute (a setter) is an AttributeError."""

    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_TEMPERATURE_GPU = 0

    def __init__(self) -> None:
        self.energy_mj = 5_000_000
        self.called: list[str] = []

    def __getattribute__(self, name: str) -> object:
        if name.startswith("nvml"):
            object.__getattribute__(self, "called").append(name)
        return object.__getattribute__(self, name)

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetHandleByIndex(self, i: int) -> str:
        return f"h{i}"

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        if uuid != "GPU-abc":
            raise RuntimeError("not found")
        return "hU"

    def nvmlDeviceGetTotalEnergyConsumption(self, h: str) -> int:
        return self.energy_mj

    def nvmlDeviceGetPowerUsage(self, h: str) -> int:
        return 312_500

    def nvmlDeviceGetEnforcedPowerLimit(self, h: str) -> int:
        return 700_000

    def nvmlDeviceGetPowerManagementDefaultLimit(self, h: str) -> int:
        return 700_000

    def nvmlDeviceGetName(self, h: str) -> bytes:
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, h: str) -> str:
        return "GPU-abc"

    def nvmlDeviceGetPciInfo(self, h: str) -> SimpleNamespace:
        return SimpleNamespace(busId="00000000:18:00.0")

    def nvmlSystemGetDriverVersion(self) -> str:
        return "580.159.04"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 13000

    def nvmlDeviceGetMemoryInfo(self, h: str) -> SimpleNamespace:
        return SimpleNamespace(total=85_520_809_984)

    def nvmlDeviceGetClockInfo(self, h: str, which: int) -> int:
        return 1980 if which == 1 else 2619

    def nvmlDeviceGetMaxClockInfo(self, h: str, which: int) -> int:
        return 1980 if which == 1 else 2619

    def nvmlDeviceGetTemperature(self, h: str, which: int) -> int:
        return 38

    def nvmlDeviceGetPersistenceMode(self, h: str) -> int:
        return 1

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: str) -> int:
        return SW_POWER_CAP


def test_nvml_device_reads_and_metadata() -> None:
    fake = FakeNvml()
    dev = NvmlDevice(0, nvml=fake)
    assert dev.energy_j() == pytest.approx(5000.0)  # mJ -> J
    assert dev.power_w() == pytest.approx(312.5)  # mW -> W
    assert dev.throttle_reasons() == SW_POWER_CAP
    meta = dev.metadata()
    assert meta["gpu_name"] == "NVIDIA H100 80GB HBM3"
    assert meta["power_limit_w"] == pytest.approx(700.0)
    assert meta["driver_version"] == "580.159.04" and meta["cuda_driver_version"] == "13.0"
    assert meta["sm_clock_mhz"] == 1980 and meta["max_mem_clock_mhz"] == 2619 and meta["temperature_c"] == 38
    for key in ("date", "hostname", "python_version", "gpu_uuid", "memory_total_bytes"):
        assert meta[key]
    assert not [c for c in fake.called if "Set" in c]


def test_nvml_never_sets_device_state() -> None:
    src = inspect.getsource(nvml_mod) + inspect.getsource(runner)
    for forbidden in ("nvmlDeviceSet", "SetApplicationsClocks", "SetPowerManagementLimit", "nvmlDeviceReset"):
        assert forbidden not in src


def test_open_device_by_uuid_or_index(monkeypatch: pytest.MonkeyPatch) -> None:
    assert open_device(0, "abc", nvml=FakeNvml()).handle == "hU"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert open_device(1, "zzz", nvml=FakeNvml()).handle == "h5"
    assert nvml_index_for(0, "2,7") == 2
    assert nvml_index_for(1, "GPU-aaa,GPU-bbb") == 1
    assert nvml_index_for(4, None) == 4


def test_missing_optional_dependencies_give_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MeasurementError, match=r"energylens\[measure\]"):
        nvml_mod.import_pynvml()
    with pytest.raises(MeasurementError, match=r"energylens\[measure\]"):
        runner.import_torch()
    from energylens.measure.suites import run_suite

    with pytest.raises(MeasurementError, match="torch"):
        run_suite("micro", "unused-dir")
