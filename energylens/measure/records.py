"""Measurement records: one plain JSON file per run, validated on load.

Schema (``schema_version`` 1)::

    {"schema_version": 1, "suite": "micro" | "models" | "collectives",
     "metadata": {"gpu_name": ..., "power_limit_w": ..., ...},
     "units": {"energy_j": "J", "latency_s": "s", "flops": "FLOP", "bytes": "B", "power_w": "W"},
     "idle_power_w_before": ..., "idle_power_w_after": ...,
     "points": [{"kind": ..., "dtype": ..., "dims": {...}, "flops": ..., "bytes": ..., "latency_s": ...,
                 "latency_s_std": ..., "energy_j": ..., "energy_j_std": ..., "avg_power_w": ...,
                 "repeats": ..., "seconds_measured": ..., <optional extras>}]}

``energy_j`` and ``latency_s`` are per call (one kernel, one forward step, one collective); ``energy_j``
is the whole-GPU counter delta, idle included (``energy_j_idle_subtracted`` is the extra, optional
field with ``idle_power * wall time`` removed). ``flops`` and ``bytes`` are analytic: bytes are HBM
bytes with every input read once and every output written once.

Nothing here imports torch or pynvml: records are read and checked on any machine.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from energylens.errors import MeasurementError

POWER_CAP_FRACTION = 0.97  # a point drawing this fraction of the power limit counts as power-capped

SCHEMA_VERSION = 1
SUITES = ("micro", "models", "collectives")
POINT_KINDS = (
    "gemm",
    "memcpy",
    "attention",
    "elementwise",
    "idle",
    "model_prefill",
    "model_decode",
    "collective",
)
UNITS: dict[str, str] = {"energy_j": "J", "latency_s": "s", "flops": "FLOP", "bytes": "B", "power_w": "W"}
# Numeric point fields that every point carries: finite and >= 0.
POINT_NUMBERS = (
    "flops",
    "bytes",
    "latency_s",
    "latency_s_std",
    "energy_j",
    "energy_j_std",
    "avg_power_w",
    "seconds_measured",
)
# Optional numeric extras that, when present, must also be finite and >= 0.
OPTIONAL_NONNEGATIVE = ("sampled_power_w", "sm_clock_mhz", "temperature_c", "calls_per_repeat")
REQUIRED_METADATA = ("gpu_name", "power_limit_w")
POWER_LIMIT_TOLERANCE_W = 1.0


@dataclass(frozen=True)
class Point:
    """One measured point. Per-call values in SI units; ``extra`` keeps the optional fields."""

    kind: str
    dtype: str | None
    dims: dict
    flops: float
    bytes: float
    latency_s: float
    latency_s_std: float
    energy_j: float
    energy_j_std: float
    avg_power_w: float
    repeats: int
    seconds_measured: float
    extra: dict = field(default_factory=dict)

    @property
    def power_capped(self) -> bool:
        """True when the harness saw the software power cap throttle the clocks."""
        return bool(self.extra.get("power_capped", False))

    def to_dict(self) -> dict:
        d = {
            "kind": self.kind,
            "dtype": self.dtype,
            "dims": dict(self.dims),
            "flops": self.flops,
            "bytes": self.bytes,
            "latency_s": self.latency_s,
            "latency_s_std": self.latency_s_std,
            "energy_j": self.energy_j,
            "energy_j_std": self.energy_j_std,
            "avg_power_w": self.avg_power_w,
            "repeats": self.repeats,
            "seconds_measured": self.seconds_measured,
        }
        d.update(self.extra)
        return d


@dataclass(frozen=True)
class Record:
    """One run's file: suite, metadata, idle power around it and its points."""

    suite: str
    metadata: dict
    idle_power_w_before: float
    idle_power_w_after: float
    points: tuple[Point, ...]
    path: str = ""
    units: dict = field(default_factory=lambda: dict(UNITS))
    schema_version: int = SCHEMA_VERSION

    @property
    def gpu_name(self) -> str:
        return str(self.metadata["gpu_name"])

    @property
    def power_limit_w(self) -> float:
        return float(self.metadata["power_limit_w"])

    @property
    def idle_power_w(self) -> float:
        """Mean of the idle power read before and after the suite."""
        return 0.5 * (self.idle_power_w_before + self.idle_power_w_after)

    def to_dict(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "suite": self.suite,
            "metadata": dict(self.metadata),
            "units": dict(self.units),
            "idle_power_w_before": self.idle_power_w_before,
            "idle_power_w_after": self.idle_power_w_after,
            "points": [p.to_dict() for p in self.points],
        }


def _number(value: object, where: str, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MeasurementError(where, value, "a number")
    v = float(value)
    if math.isnan(v) or math.isinf(v):
        raise MeasurementError(where, value, "a finite number (NaN and infinity are refused)")
    if v < 0:
        raise MeasurementError(where, value, "a non-negative number")
    if integer and v != int(v):
        raise MeasurementError(where, value, "a whole number")
    return v


def parse_point(data: object, where: str) -> Point:
    """Validate one point mapping; ``where`` prefixes every error (``file: points[3]``)."""
    if not isinstance(data, Mapping):
        raise MeasurementError(where, type(data).__name__, "a point must be a JSON object")
    kind = data.get("kind")
    if kind not in POINT_KINDS:
        raise MeasurementError(f"{where}.kind", kind, "one of " + ", ".join(POINT_KINDS))
    dtype = data.get("dtype")
    if dtype is not None and not isinstance(dtype, str):
        raise MeasurementError(f"{where}.dtype", dtype, "a dtype name (bf16, fp8, ...) or null")
    dims = data.get("dims")
    if not isinstance(dims, Mapping):
        raise MeasurementError(f"{where}.dims", dims, "a JSON object of dimension -> value")
    for name, value in dims.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            _number(value, f"{where}.dims.{name}")
    values: dict[str, float] = {}
    for name in POINT_NUMBERS:
        if name not in data:
            raise MeasurementError(f"{where}.{name}", None, "required point field is missing")
        values[name] = _number(data[name], f"{where}.{name}")
    if "repeats" not in data:
        raise MeasurementError(f"{where}.repeats", None, "required point field is missing")
    repeats = int(_number(data["repeats"], f"{where}.repeats", integer=True))
    if repeats < 1:
        raise MeasurementError(f"{where}.repeats", data["repeats"], "at least 1")
    if kind != "idle" and values["latency_s"] <= 0:
        raise MeasurementError(f"{where}.latency_s", data["latency_s"], "a positive latency")
    for name in OPTIONAL_NONNEGATIVE:
        if data.get(name) is not None:
            _number(data[name], f"{where}.{name}")
    known = set(POINT_NUMBERS) | {"kind", "dtype", "dims", "repeats"}
    extra = {k: v for k, v in data.items() if k not in known}
    return Point(
        kind=str(kind),
        dtype=dtype,
        dims=dict(dims),
        flops=values["flops"],
        bytes=values["bytes"],
        latency_s=values["latency_s"],
        latency_s_std=values["latency_s_std"],
        energy_j=values["energy_j"],
        energy_j_std=values["energy_j_std"],
        avg_power_w=values["avg_power_w"],
        repeats=repeats,
        seconds_measured=values["seconds_measured"],
        extra=extra,
    )


def parse_record(data: object, origin: str) -> Record:
    """Validate a record mapping. ``origin`` (the file) names every error."""
    if not isinstance(data, Mapping):
        raise MeasurementError(origin, type(data).__name__, "a measurement record must be a JSON object")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise MeasurementError(
            f"{origin}: schema_version", version, f"this energylens reads version {SCHEMA_VERSION}"
        )
    suite = data.get("suite")
    if suite not in SUITES:
        raise MeasurementError(f"{origin}: suite", suite, "one of " + ", ".join(SUITES))
    units = data.get("units")
    if not isinstance(units, Mapping):
        raise MeasurementError(f"{origin}: units", units, "a JSON object " + json.dumps(UNITS))
    for name, unit in UNITS.items():
        if name not in units:
            raise MeasurementError(
                f"{origin}: units.{name}", None, f"required unit is missing (expected {unit!r})"
            )
        if units[name] != unit:
            raise MeasurementError(f"{origin}: units.{name}", units[name], f"expected SI unit {unit!r}")
    metadata = data.get("metadata")
    if not isinstance(metadata, Mapping):
        raise MeasurementError(
            f"{origin}: metadata", metadata, "a JSON object with gpu_name, power_limit_w, ..."
        )
    for name in REQUIRED_METADATA:
        if metadata.get(name) in (None, ""):
            raise MeasurementError(f"{origin}: metadata.{name}", None, "required metadata field is missing")
    if not isinstance(metadata["gpu_name"], str):
        raise MeasurementError(f"{origin}: metadata.gpu_name", metadata["gpu_name"], "a GPU name string")
    _number(metadata["power_limit_w"], f"{origin}: metadata.power_limit_w")
    idle = {}
    for name in ("idle_power_w_before", "idle_power_w_after"):
        if name not in data:
            raise MeasurementError(f"{origin}: {name}", None, "required field is missing")
        idle[name] = _number(data[name], f"{origin}: {name}")
    raw_points = data.get("points")
    if not isinstance(raw_points, list):
        raise MeasurementError(f"{origin}: points", raw_points, "a JSON list of points")
    points = tuple(parse_point(p, f"{origin}: points[{i}]") for i, p in enumerate(raw_points))
    return Record(
        suite=str(suite),
        metadata=dict(metadata),
        idle_power_w_before=idle["idle_power_w_before"],
        idle_power_w_after=idle["idle_power_w_after"],
        points=points,
        path=origin,
        units=dict(units),
        schema_version=SCHEMA_VERSION,
    )


def read_record(path: str | os.PathLike) -> Record:
    """Read and validate one record file."""
    from energylens.checks import MAX_RECORD_BYTES, parse_json, read_text

    p = Path(path)
    text = read_text(p, "record", max_bytes=MAX_RECORD_BYTES, what="a measurement record file",
                     error=MeasurementError)
    data = parse_json(text, "record", str(p), error=MeasurementError)
    return parse_record(data, str(p))


def _expand(paths: Iterable[str | os.PathLike]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*.json") if q.is_file())
            if not found:
                raise MeasurementError("records", str(p), "a directory holding at least one .json record")
            files.extend(found)
        else:
            files.append(p)
    if not files:
        raise MeasurementError("records", [], "at least one measurement record file")
    return files


def check_consistent(records: list[Record]) -> None:
    """Refuse records from different GPUs or power limits: they cannot be fitted together."""
    if not records:
        return
    first = records[0]
    for rec in records[1:]:
        if rec.gpu_name != first.gpu_name:
            raise MeasurementError(
                f"{rec.path}: metadata.gpu_name",
                rec.gpu_name,
                f"records fitted together must come from one GPU model; {first.path} has {first.gpu_name!r}",
            )
        if abs(rec.power_limit_w - first.power_limit_w) > POWER_LIMIT_TOLERANCE_W:
            raise MeasurementError(
                f"{rec.path}: metadata.power_limit_w",
                rec.power_limit_w,
                f"records fitted together must share one enforced power limit; {first.path} has "
                f"{first.power_limit_w:g} W",
            )


def load_records(paths: Iterable[str | os.PathLike] | str | os.PathLike) -> list[Record]:
    """Read, validate and cross-check record files (directories are searched for ``*.json``)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    records = [read_record(p) for p in _expand(paths)]
    check_consistent(records)
    return records


def _clean(obj: object) -> object:
    """JSON-safe copy: tuples to lists, NumPy scalars to Python numbers."""
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # NumPy / torch scalars
        return obj.item()
    return obj


def write_record(record: Record | Mapping, path: str | os.PathLike) -> Path:
    """Validate and write a record atomically (``path.tmp`` then rename). Returns the path."""
    data = _clean(record.to_dict() if isinstance(record, Record) else record)
    p = Path(path)
    parse_record(data, str(p))  # never write what could not be read back
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")
    os.replace(tmp, p)
    return p
