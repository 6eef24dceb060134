"""Suite plumbing that needs no GPU: shards, record paths, point assembly."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from energylens.errors import EnergyLensError
from energylens.measure.points import plan_micro
from energylens.measure.records import read_record, write_record
from energylens.measure.runner import Measurement
from energylens.measure.suites import (
    SuiteOptions,
    apply_shard,
    new_record,
    parse_shard,
    point_dict,
    record_path,
)


def test_shards_partition_the_plan() -> None:
    pts = plan_micro("small")
    parts = [apply_shard(pts, (i, 3)) for i in range(3)]
    assert sum(len(p) for p in parts) == len(pts)
    assert {s.name for p in parts for s in p} == {s.name for s in pts}
    assert parse_shard("1/3") == (1, 3) and parse_shard(None) is None
    for bad in ("3/3", "a/b", "-1/2"):
        with pytest.raises(EnergyLensError):
            parse_shard(bad)


def test_record_path() -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    assert record_path("out/run.json", "micro", when, "h") == Path("out/run.json")
    assert record_path("d", "micro", when, "gpu box/1") == Path("d/micro-20260102T030405Z-gpu_box_1.json")
    assert record_path("d", "models", when, "h", (1, 2)).name.endswith("-s1-2.json")


def test_options_validate() -> None:
    SuiteOptions(size="small", only=("gemm",)).validate("micro")
    with pytest.raises(EnergyLensError):
        SuiteOptions(models=("gpt-5",)).validate("models")
    with pytest.raises(EnergyLensError):
        SuiteOptions(budget_s=0).validate("micro")


def test_point_dict_round_trips_through_a_record(tmp_path: Path) -> None:
    spec = next(s for s in plan_micro("small") if s.kind == "gemm")
    m = Measurement(
        latency_s=1e-4,
        latency_s_std=1e-6,
        energy_j=0.03,
        energy_j_std=1e-4,
        energy_j_idle_subtracted=0.02,
        avg_power_w=300.0,
        repeats=3,
        seconds_measured=3.2,
        calls_per_repeat=10_000,
        launch="cuda_graph",
    )
    p = point_dict(spec, m, {"impl": "torch.mm", "rotation": 4})
    rec = new_record("micro", {"gpu_name": "X", "power_limit_w": 700.0}, 70.0, 71.0, [p])
    path = write_record(rec, tmp_path / "r.json")
    (point,) = read_record(path).points
    assert point.flops == spec.flops and point.bytes == spec.bytes and point.dims == spec.dims
    assert point.extra["launch"] == "cuda_graph" and point.extra["rotation"] == 4
    assert point.extra["origins"] == list(spec.origins)
