"""Record writing, reading and validation (missing units, unknown kinds, bad numbers, mixed GPUs)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from measure_synth import metadata

from energylens.errors import EnergyLensError, MeasurementError
from energylens.measure.records import UNITS, load_records, read_record, write_record


def _point(**kw) -> dict:
    p = {
        "kind": "gemm",
        "dtype": "bf16",
        "dims": {"m": 4096, "n": 4096, "k": 4096, "batch": 1},
        "flops": 2.0 * 4096**3,
        "bytes": 3 * 4096 * 4096 * 2.0,
        "latency_s": 2.1e-4,
        "latency_s_std": 1e-6,
        "energy_j": 0.1,
        "energy_j_std": 1e-3,
        "avg_power_w": 476.0,
        "repeats": 3,
        "seconds_measured": 3.1,
        "power_capped": False,
        "name": "gemm[bf16](m=4096,n=4096,k=4096,batch=1)",
    }
    p.update(kw)
    return p


def _record(**kw) -> dict:
    r = {
        "schema_version": 1,
        "suite": "micro",
        "metadata": metadata(),
        "units": dict(UNITS),
        "idle_power_w_before": 71.0,
        "idle_power_w_after": 73.0,
        "points": [
            _point(),
            _point(
                kind="idle",
                dtype=None,
                dims={"seconds": 5},
                flops=0,
                bytes=0,
                latency_s=5.0,
                energy_j=360.0,
                avg_power_w=72.0,
            ),
        ],
    }
    r.update(kw)
    return r


def _write_raw(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))  # json writes NaN as NaN: the reader must refuse it
    return path


def test_round_trip(tmp_path: Path) -> None:
    path = write_record(_record(), tmp_path / "sub" / "micro.json")
    (rec,) = load_records([path])
    assert rec.suite == "micro"
    assert rec.gpu_name == "NVIDIA H100 80GB HBM3"
    assert rec.idle_power_w == pytest.approx(72.0)
    assert len(rec.points) == 2
    p = rec.points[0]
    assert p.kind == "gemm" and p.dims["k"] == 4096 and p.repeats == 3
    assert p.extra["name"].startswith("gemm[bf16]")
    assert not p.power_capped
    # a record written from the parsed object reads back identically
    path2 = write_record(rec, tmp_path / "again.json")
    assert read_record(path2).to_dict() == rec.to_dict()
    # directories are searched for *.json
    assert len(load_records(tmp_path)) == 2


def test_missing_units_refused_naming_file_and_field(tmp_path: Path) -> None:
    data = _record()
    del data["units"]["energy_j"]
    path = _write_raw(tmp_path / "no-units.json", data)
    with pytest.raises(MeasurementError) as err:
        load_records([path])
    assert "no-units.json" in str(err.value) and "units.energy_j" in str(err.value)
    assert isinstance(err.value, EnergyLensError)

    data = _record()
    del data["units"]
    with pytest.raises(MeasurementError, match="units"):
        load_records([_write_raw(tmp_path / "none.json", data)])


def test_wrong_unit_refused(tmp_path: Path) -> None:
    data = _record()
    data["units"]["energy_j"] = "mJ"
    with pytest.raises(MeasurementError, match=r"units\.energy_j.*'J'"):
        load_records([_write_raw(tmp_path / "mj.json", data)])


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "gemv"}, "points[0].kind"),
        ({"energy_j": -1.0}, "points[0].energy_j"),
        ({"latency_s": float("nan")}, "points[0].latency_s"),
        ({"avg_power_w": float("inf")}, "points[0].avg_power_w"),
        ({"repeats": 2.5}, "points[0].repeats"),
        ({"dims": {"m": -4}}, "points[0].dims.m"),
        ({"latency_s": 0.0}, "points[0].latency_s"),
    ],
)
def test_bad_points_refused(tmp_path: Path, change: dict, field: str) -> None:
    data = _record()
    data["points"][0].update(change)
    path = _write_raw(tmp_path / "bad.json", data)
    with pytest.raises(MeasurementError) as err:
        read_record(path)
    assert field in str(err.value) and "bad.json" in str(err.value)


def test_missing_point_field_and_metadata(tmp_path: Path) -> None:
    data = _record()
    del data["points"][1]["energy_j"]
    with pytest.raises(MeasurementError, match=r"points\[1\]\.energy_j"):
        read_record(_write_raw(tmp_path / "a.json", data))
    data = _record()
    del data["metadata"]["power_limit_w"]
    with pytest.raises(MeasurementError, match="metadata.power_limit_w"):
        read_record(_write_raw(tmp_path / "b.json", data))
    with pytest.raises(MeasurementError, match="schema_version"):
        read_record(_write_raw(tmp_path / "c.json", _record(schema_version=2)))
    with pytest.raises(MeasurementError, match="suite"):
        read_record(_write_raw(tmp_path / "d.json", _record(suite="nano")))
    (tmp_path / "e.json").write_text("{not json")
    with pytest.raises(MeasurementError, match="e.json"):
        read_record(tmp_path / "e.json")


def test_inconsistent_metadata_across_files(tmp_path: Path) -> None:
    a = write_record(_record(), tmp_path / "a.json")
    other_gpu = _record(metadata=metadata(gpu_name="NVIDIA A100-SXM4-80GB", power_limit_w=700.0))
    b = write_record(other_gpu, tmp_path / "b.json")
    with pytest.raises(MeasurementError) as err:
        load_records([a, b])
    assert "b.json: metadata.gpu_name" in str(err.value) and "a.json" in str(err.value)

    capped = write_record(_record(metadata=metadata(power_limit_w=500.0)), tmp_path / "c.json")
    with pytest.raises(MeasurementError, match=r"c\.json: metadata\.power_limit_w"):
        load_records([a, capped])
    # same GPU and limit: fine
    same = write_record(_record(metadata=metadata(power_limit_w=700.4)), tmp_path / "d.json")
    assert len(load_records([a, same])) == 2


def test_writer_refuses_invalid_records(tmp_path: Path) -> None:
    data = copy.deepcopy(_record())
    data["points"][0]["energy_j"] = float("nan")
    with pytest.raises(MeasurementError):
        write_record(data, tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_no_files(tmp_path: Path) -> None:
    with pytest.raises(MeasurementError):
        load_records([])
    (tmp_path / "empty").mkdir()
    with pytest.raises(MeasurementError, match="empty"):
        load_records([tmp_path / "empty"])
    with pytest.raises(MeasurementError, match="missing.json"):
        load_records([tmp_path / "missing.json"])
