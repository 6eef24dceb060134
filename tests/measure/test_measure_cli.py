"""The command bodies: calibrate end to end on synthetic records; measure refuses cleanly without torch."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import typer
from measure_synth import TRUTH
from typer.testing import CliRunner

from energylens.cli.measure_cmd import calibrate_command, measure_app, measure_command
from energylens.errors import EnergyLensError, MeasurementError
from energylens.hardware.profile import load_gpu


def test_calibrate_command_writes_loadable_profile(synthetic_record: Path, tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    import yaml
    from measure_synth import PROFILE

    base.write_text(yaml.safe_dump(PROFILE))
    out = tmp_path / "fitted.yaml"
    result = CliRunner().invoke(
        measure_app,
        ["calibrate", str(synthetic_record.parent), "--gpu", str(base), "-o", str(out)],
        env={"COLUMNS": "250"},
    )
    assert result.exit_code == 0, result.output
    assert "max_compute_efficiency_bf16" in result.output and "0.8 " in result.output  # old -> new
    assert "latency MAPE" in result.output
    gpu = load_gpu(str(out))
    assert gpu.q("energy_per_byte_hbm") == pytest.approx(TRUTH["energy_per_byte_hbm"], rel=0.03)


def test_commands_register_on_another_app(synthetic_record: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    app.command("measure")(measure_command)
    app.command("calibrate")(calibrate_command)
    result = CliRunner().invoke(app, ["calibrate", "--help"])
    assert result.exit_code == 0 and "--output" in result.output
    # without --gpu the base profile is matched from the records' NVML GPU name (a built-in alias)
    out = tmp_path / "x.yaml"
    result = CliRunner().invoke(
        app, ["calibrate", str(synthetic_record), "-o", str(out)], env={"COLUMNS": "250"}
    )
    assert result.exit_code == 0, result.output
    assert load_gpu(str(out)).key == load_gpu("NVIDIA H100 80GB HBM3").key


def test_calibrate_command_errors(tmp_path: Path, synthetic_record: Path) -> None:
    with pytest.raises(MeasurementError, match="yaml"):
        calibrate_command([synthetic_record], tmp_path / "out.txt", gpu=None)
    with pytest.raises(MeasurementError):
        calibrate_command([tmp_path / "missing.json"], tmp_path / "out.yaml", gpu=None)


def test_measure_command_without_torch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MeasurementError, match="torch"):
        measure_command(
            suite="micro",
            out=tmp_path,
            size="small",
            only=None,
            seconds=1.0,
            repeats=3,
            idle_seconds=5.0,
            budget_s=None,
            shard=None,
            device=0,
            fp8=True,
            cuda_graphs=True,
            compile_elementwise=True,
            models="llama-3-8b",
        )
    with pytest.raises(EnergyLensError, match="suite"):
        measure_command(
            suite="nano",
            out=tmp_path,
            size="small",
            only=None,
            seconds=1.0,
            repeats=3,
            idle_seconds=5.0,
            budget_s=None,
            shard=None,
            device=0,
            fp8=True,
            cuda_graphs=True,
            compile_elementwise=True,
            models="llama-3-8b",
        )
    with pytest.raises(EnergyLensError, match="repeats"):
        measure_command(
            suite="micro",
            out=tmp_path,
            size="small",
            only=None,
            seconds=1.0,
            repeats=1,
            idle_seconds=5.0,
            budget_s=None,
            shard=None,
            device=0,
            fp8=True,
            cuda_graphs=True,
            compile_elementwise=True,
            models="llama-3-8b",
        )
    with pytest.raises(EnergyLensError, match="shard"):
        measure_command(
            suite="micro",
            out=tmp_path,
            size="small",
            only=None,
            seconds=1.0,
            repeats=3,
            idle_seconds=5.0,
            budget_s=None,
            shard="3/2",
            device=0,
            fp8=True,
            cuda_graphs=True,
            compile_elementwise=True,
            models="llama-3-8b",
        )
