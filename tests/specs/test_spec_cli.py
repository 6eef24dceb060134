"""``energylens spec show/export/check`` and the predict options that set Execution fields."""

import json
from pathlib import Path

import pytest
import yaml

from energylens.cli import main
from energylens.errors import DimensionError, SpecError
from energylens.graph.model import Model
from energylens.models.registry import load_model
from energylens.specs import load_model_spec

ROOT = Path(__file__).resolve().parents[2]
GPT = str(ROOT / "examples" / "models" / "gpt_block.yaml")


def run(capsys, *args):
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_show_lists_every_op_with_its_sharding(capsys):
    rc, out, _ = run(capsys, "spec", "show", GPT, "--tp", "2")
    assert rc == 0
    lines = out.splitlines()
    assert any(ln.split()[:3] == ["mlp.fc1", "einsum", "f:tp"] for ln in lines)
    assert any(ln.split()[:3] == ["ln2", "elementwise", "-"] for ln in lines)
    assert sum("=> all_reduce" in ln for ln in lines) == 3  # embedding, attention output, MLP output


def test_show_without_parallelism_has_no_collectives(capsys):
    rc, out, _ = run(capsys, "spec", "show", GPT, "--collectives")
    assert rc == 0 and "=>" not in out and "(no collectives)" in out and "every axis has degree 1" in out


@pytest.mark.parametrize("args,needle", [
    (["spec", "show", GPT, "--shard", "ff=tp"], "--shard"),
    (["spec", "show", GPT, "--shard", "f=pp"], "sharding[f]"),
    (["spec", "show", GPT, "--tp", "3"], "tp"),
    (["spec", "export", "llama3-8b", "--out", "x.json"], "--out"),
    (["spec", "check", "nope.yaml"], "existing"),
])
def test_bad_arguments_exit_2(capsys, args, needle):
    rc, _, err = run(capsys, *args)
    assert rc == 2 and needle in err


def test_export_to_stdout_loads_back(capsys):
    rc, out, _ = run(capsys, "spec", "export", "qwen3-30b-a3b")
    assert rc == 0
    assert load_model_spec(out).all_ops() == load_model("qwen3-30b-a3b").all_ops()


def test_check_reports_sharding_and_overlap(capsys, tmp_path):
    data = yaml.safe_load(Path(GPT).read_text())
    data["sharding"] = {"f": "none"}
    data["overlap"] = [{"collective": "*:all_reduce", "chunks": 2, "comm_sms": 8}]
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(data))
    rc, out, _ = run(capsys, "spec", "check", str(path))
    assert rc == 0 and "sharding: f->none" in out and "overlap: *:all_reduce with (data flow), 2 chunks, 8 SMs" in out


def test_predict_cli_power_limit_reaches_the_execution(capsys):
    rc, out, _ = run(capsys, "predict", "--batch", "8", "--power-limit", "300", "--json")
    assert rc == 0
    d = json.loads(out)
    assert d["provenance"]["power_limit"]["value"] == 300.0
    rc, out2, _ = run(capsys, "predict", "--batch", "8", "--json")
    assert d["total"]["latency_s"] > json.loads(out2)["total"]["latency_s"]
    rc, _, err = run(capsys, "predict", "--power-limit", "5000")
    assert rc == 2 and "power_limit_w" in err


def test_model_checks_its_sharding():
    m = load_model("llama3-8b")
    from dataclasses import replace

    with pytest.raises(DimensionError, match="model sharding"):
        replace(m, sharding={"z": "tp"})
    with pytest.raises(SpecError, match="sharding\\[f\\]"):
        replace(m, sharding={"f": "dp"})
    assert isinstance(replace(m, sharding={"f": None}), Model)
