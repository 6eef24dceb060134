"""Issue 18: output that reads at 80 columns (no line wider, no blank or cut key columns)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from energylens.cli import _load_commands, app

_load_commands()


def run80(*args: str) -> str:
    res = CliRunner().invoke(app, list(args), env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output[-500:]
    lines = res.stdout.splitlines()
    wide = [ln for ln in lines if len(ln) > 80]
    assert not wide, wide[:3]
    return res.stdout


def test_overlap_table_keeps_k_c_and_baseline_columns():
    out = run80("overlap", "--tp", "8", "--comm-sms", "8,16", "--chunks", "1,2")
    rows = [ln for ln in out.splitlines() if ln.startswith("│")]
    assert any("B" in r.split("│")[1] for r in rows)  # the baseline mark
    ks = {r.split("│")[2].strip() for r in rows}
    cs = {r.split("│")[3].strip() for r in rows}
    assert {"-", "8", "16"} <= ks and {"-", "1", "2"} <= cs
    assert "not shown at this width" in out


def test_gpus_key_column_is_whole():
    out = run80("gpus")
    for key in ("a100-sxm-40gb", "a100-sxm-80gb", "h100-pcie", "h100-sxm"):
        assert f"│ {key} " in out


@pytest.mark.parametrize("args", [("predict", "--model", "qwen3-30b-a3b", "--tp", "2", "--ep", "2"),
                                  ("sweep", "--model", "llama3-8b", "--model", "qwen3-8b", "--tp", "1,2"),
                                  ("serve",), ("disagg",), ("models",)])
def test_every_command_fits_80_columns(args):
    out = run80(*args)
    if args[0] == "predict":
        assert "moe.moe.experts.gate" in out and "…" not in out  # op names wrap whole, never cut
