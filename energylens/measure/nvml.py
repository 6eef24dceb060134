"""Read-only NVML access: the energy counter, a power-sampling thread and run metadata.

``pynvml`` (the ``nvidia-ml-py`` package, ``pip install 'energylens[measure]'``) is imported only when
a device is opened. This module NEVER sets clocks, power limits or any other device state: it calls
``nvmlDeviceGet*`` / ``nvmlSystemGet*`` functions only (a test checks the source for setters).

Energy comes from ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver was loaded; Volta and
newer), read before and after a window of many repetitions. ``nvmlDeviceGetPowerUsage`` (mW) is
sampled in a background thread as a cross-check and to see the clocks and throttle reasons.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

from energylens.errors import MeasurementError

# Throttle ("clocks event") reason bits, from nvml.h; used when pynvml lacks the constants.
SW_POWER_CAP = 0x4
HW_SLOWDOWN = 0x8
SW_THERMAL = 0x20
HW_THERMAL = 0x40
HW_POWER_BRAKE = 0x80


def import_pynvml() -> ModuleType:
    """``pynvml`` or a clear error saying how to install it."""
    try:
        import pynvml  # optional dependency, imported lazily on purpose
    except ImportError as exc:
        raise MeasurementError(
            "nvidia-ml-py",
            "not installed",
            "GPU energy is read through NVML: pip install 'energylens[measure]' (or nvidia-ml-py)",
        ) from exc
    return pynvml


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlDevice:
    """One GPU seen through NVML (read-only)."""

    def __init__(self, index: int = 0, *, uuid: str | None = None, nvml: ModuleType | None = None) -> None:
        self.nvml = nvml if nvml is not None else import_pynvml()
        try:
            self.nvml.nvmlInit()
        except Exception as exc:  # NVMLError has many subclasses; report them all the same way
            raise MeasurementError("nvml", str(exc), "a working NVIDIA driver (nvmlInit failed)") from exc
        try:
            if uuid:
                self.handle = self.nvml.nvmlDeviceGetHandleByUUID(uuid)
            else:
                self.handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
        except Exception as exc:
            raise MeasurementError("gpu", uuid or index, f"a GPU NVML can see ({exc})") from exc
        self.index = index
        self._lock = threading.Lock()
        try:
            self.energy_j()
        except Exception as exc:
            raise MeasurementError(
                "nvml.energy_counter",
                str(exc),
                "a GPU with nvmlDeviceGetTotalEnergyConsumption (Volta or newer)",
            ) from exc

    # The counters -------------------------------------------------------------------------
    def energy_j(self) -> float:
        """Total energy since driver load, in J (the counter is in mJ)."""
        with self._lock:
            return float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)) / 1000.0

    def power_w(self) -> float:
        """Current board power in W (the reading is in mW)."""
        with self._lock:
            return float(self.nvml.nvmlDeviceGetPowerUsage(self.handle)) / 1000.0

    def _try(self, fn: Callable[[], object], default: object = None) -> object:
        try:
            with self._lock:
                return fn()
        except Exception:
            return default

    def sm_clock_mhz(self) -> float | None:
        nv = self.nvml
        v = self._try(lambda: nv.nvmlDeviceGetClockInfo(self.handle, getattr(nv, "NVML_CLOCK_SM", 1)))
        return None if v is None else float(v)

    def temperature_c(self) -> float | None:
        nv = self.nvml
        v = self._try(
            lambda: nv.nvmlDeviceGetTemperature(self.handle, getattr(nv, "NVML_TEMPERATURE_GPU", 0))
        )
        return None if v is None else float(v)

    def throttle_reasons(self) -> int:
        nv = self.nvml
        for name in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
            fn = getattr(nv, name, None)
            if fn is not None:
                v = self._try(lambda fn=fn: fn(self.handle))
                if v is not None:
                    return int(v)
        return 0

    def power_limit_w(self) -> float:
        with self._lock:
            return float(self.nvml.nvmlDeviceGetEnforcedPowerLimit(self.handle)) / 1000.0

    # Metadata -----------------------------------------------------------------------------
    def metadata(self) -> dict:
        """GPU, driver, clocks, temperature, power limit, host and date (read-only queries)."""
        nv, h = self.nvml, self.handle
        clock_sm = getattr(nv, "NVML_CLOCK_SM", 1)
        clock_mem = getattr(nv, "NVML_CLOCK_MEM", 2)
        cuda = self._try(lambda: nv.nvmlSystemGetCudaDriverVersion())
        mem = self._try(lambda: nv.nvmlDeviceGetMemoryInfo(h))
        default_limit = self._try(lambda: nv.nvmlDeviceGetPowerManagementDefaultLimit(h))
        meta = {
            "gpu_name": _text(self._try(lambda: nv.nvmlDeviceGetName(h), "unknown")),
            "gpu_uuid": _text(self._try(lambda: nv.nvmlDeviceGetUUID(h), "")),
            "gpu_index": self.index,
            "pci_bus_id": _text(self._try(lambda: nv.nvmlDeviceGetPciInfo(h).busId, "")),
            "driver_version": _text(self._try(lambda: nv.nvmlSystemGetDriverVersion(), "")),
            "cuda_driver_version": f"{int(cuda) // 1000}.{int(cuda) % 1000 // 10}" if cuda else "",
            "power_limit_w": self.power_limit_w(),
            "default_power_limit_w": None if default_limit is None else float(default_limit) / 1000.0,
            "memory_total_bytes": None if mem is None else int(mem.total),
            "sm_clock_mhz": self._try(lambda: nv.nvmlDeviceGetClockInfo(h, clock_sm)),
            "mem_clock_mhz": self._try(lambda: nv.nvmlDeviceGetClockInfo(h, clock_mem)),
            "max_sm_clock_mhz": self._try(lambda: nv.nvmlDeviceGetMaxClockInfo(h, clock_sm)),
            "max_mem_clock_mhz": self._try(lambda: nv.nvmlDeviceGetMaxClockInfo(h, clock_mem)),
            "temperature_c": self.temperature_c(),
            "persistence_mode": self._try(lambda: nv.nvmlDeviceGetPersistenceMode(h)),
        }
        meta.update(host_metadata())
        return meta

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except Exception:
            pass


def host_metadata() -> dict:
    """Date (UTC, ISO 8601), hostname and Python version."""
    try:
        from importlib.metadata import version

        _version = version("energylens")
    except Exception:
        _version = "unknown"
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "python_version": platform.python_version(),
        "energylens_version": _version,
        "pid": os.getpid(),
    }


@dataclass
class PowerSamples:
    """What the sampling thread saw during one window."""

    power_w: list[float] = field(default_factory=list)
    sm_clock_mhz: list[float] = field(default_factory=list)
    temperature_c: list[float] = field(default_factory=list)
    throttle: list[int] = field(default_factory=list)

    @property
    def mean_power_w(self) -> float | None:
        return sum(self.power_w) / len(self.power_w) if self.power_w else None

    @property
    def mean_sm_clock_mhz(self) -> float | None:
        return sum(self.sm_clock_mhz) / len(self.sm_clock_mhz) if self.sm_clock_mhz else None

    @property
    def max_temperature_c(self) -> float | None:
        return max(self.temperature_c) if self.temperature_c else None

    def fraction_with(self, mask: int) -> float:
        """Fraction of samples whose throttle reasons include any bit of ``mask``."""
        if not self.throttle:
            return 0.0
        return sum(1 for t in self.throttle if t & mask) / len(self.throttle)


class PowerSampler:
    """Background thread sampling power, SM clock, temperature and throttle reasons.

    ``device`` needs ``power_w()`` and may have ``sm_clock_mhz()``, ``temperature_c()`` and
    ``throttle_reasons()`` (an ``NvmlDevice`` or a test fake). Use as a context manager or call
    ``start()`` / ``stop()``; ``stop()`` returns the samples.
    """

    def __init__(self, device: object, interval_s: float = 0.05) -> None:
        self.device = device
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.samples = PowerSamples()
        self.errors = 0

    def _sample_once(self) -> None:
        dev = self.device
        try:
            self.samples.power_w.append(float(dev.power_w()))
            for name, target in (
                ("sm_clock_mhz", self.samples.sm_clock_mhz),
                ("temperature_c", self.samples.temperature_c),
            ):
                fn = getattr(dev, name, None)
                v = fn() if fn is not None else None
                if v is not None:
                    target.append(float(v))
            fn = getattr(dev, "throttle_reasons", None)
            if fn is not None:
                self.samples.throttle.append(int(fn()))
        except Exception:
            self.errors += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample_once()
            self._stop.wait(self.interval_s)

    def start(self) -> PowerSampler:
        self.samples = PowerSamples()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="energylens-power-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> PowerSamples:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        return self.samples

    def __enter__(self) -> PowerSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def measure_idle(
    device: object,
    seconds: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[float, float, float]:
    """Energy counter over ``seconds`` of no work: (power W, energy J, wall s). Call after a sync."""
    if seconds <= 0:
        raise MeasurementError("idle_seconds", seconds, "a positive duration")
    e0, t0 = device.energy_j(), clock()
    sleep(seconds)
    e1, t1 = device.energy_j(), clock()
    wall = t1 - t0
    if wall <= 0:
        raise MeasurementError("idle window", wall, "a positive wall-clock duration")
    energy = e1 - e0
    if energy < 0:
        raise MeasurementError("nvml.energy_counter", energy, "a counter that does not go backwards")
    return energy / wall, energy, wall


def nvml_index_for(cuda_index: int, visible_devices: str | None) -> int:
    """NVML index of CUDA device ``cuda_index`` under ``CUDA_VISIBLE_DEVICES`` (integer lists only;
    UUID lists, or no variable, map index to index)."""
    if not visible_devices:
        return cuda_index
    parts = [p.strip() for p in visible_devices.split(",") if p.strip()]
    if 0 <= cuda_index < len(parts) and parts[cuda_index].isdigit():
        return int(parts[cuda_index])
    return cuda_index


def open_device(cuda_index: int = 0, uuid: str | None = None, nvml: ModuleType | None = None) -> NvmlDevice:
    """The NVML view of a CUDA device: by UUID when PyTorch reports one (robust to device
    reordering), else by index through ``CUDA_VISIBLE_DEVICES``."""
    if uuid:
        full = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
        try:
            return NvmlDevice(cuda_index, uuid=full, nvml=nvml)
        except MeasurementError as exc:
            if exc.field != "gpu":
                raise
    return NvmlDevice(nvml_index_for(cuda_index, os.environ.get("CUDA_VISIBLE_DEVICES")), nvml=nvml)
