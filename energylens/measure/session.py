"""What every suite shares: options, sharding of points, record layout and the GPU session.

Split from ``suites.py`` so the collective suite (``collective_suite.py``) and the single-GPU suites
use one session without importing each other.
"""

from __future__ import annotations

import datetime as _dt
import gc
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from energylens.errors import MeasurementError, UnknownNameError
from energylens.measure.nvml import PowerSampler, measure_idle, open_device
from energylens.measure.points import MICRO_KINDS, SIZES, PointSpec, model_dims
from energylens.measure.records import SCHEMA_VERSION, SUITES, UNITS
from energylens.measure.runner import (
    Measurement,
    RunSettings,
    TorchBackend,
    import_torch,
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
