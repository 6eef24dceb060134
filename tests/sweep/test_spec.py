"""Sweep specs: YAML / mapping / CLI forms, ranges, and errors that name the field."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energylens.errors import SpecError
from energylens.sweep import Constraints, SweepSpec, parse_values


def test_yaml_round_trip(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("""
models: [llama3-8b]
gpus: h100-sxm
tp: [1, 2]
batch: {from: 1, to: 16, factor: 2}
prompt_len: {from: 512, to: 2048, step: 512}
output_len: [0, 128]
constraints: {max_tpot_s: 0.05, max_gpus: 4}
""")
    s = SweepSpec.from_yaml(p)
    assert s.models == ("llama3-8b",) and s.gpus == ("h100-sxm",)
    assert s.batch == (1, 2, 4, 8, 16)
    assert s.prompt_len == (512, 1024, 1536, 2048)
    assert s.constraints == Constraints(max_tpot_s=0.05, max_gpus=4)
    assert s.size == 1 * 1 * 1 * 2 * 1 * 1 * 1 * 1 * 5 * 4 * 2  # hand count of the product
    assert SweepSpec.from_dict(s.to_dict()) == s


def test_python_lists_become_tuples():
    s = SweepSpec(models=["llama3-8b"], gpus="h100-sxm", tp=[1, 2], batch=4)
    assert s.tp == (1, 2) and s.batch == (4,) and s.gpus == ("h100-sxm",)


@pytest.mark.parametrize("data,field", [
    ({"gpus": ["h100-sxm"]}, "models"),
    ({"models": ["m"], "gpus": ["h100-sxm"], "tp": [0]}, "tp"),
    ({"models": ["m"], "gpus": ["h100-sxm"], "tp": [2, 2]}, "tp"),
    ({"models": ["m"], "gpus": ["h100-sxm"], "batch": [1.5]}, "batch"),
    ({"models": ["m"], "gpus": ["h100-sxm"], "output_len": [-1]}, "output_len"),
    ({"models": ["m"], "gpus": ["h100-sxm"], "batch": {"from": 4, "to": 1, "step": 1}}, "batch.to"),
    ({"models": ["m"], "gpus": ["h100-sxm"], "batch": {"from": 1, "to": 8}}, "batch"),
    ({"models": ["m"], "gpus": ["h100-sxm"], "batch": {"from": 1, "to": 8, "factor": 1}}, "batch.factor"),
    ({"models": ["m"], "gpus": ["h100-sxm"], "dtypes": ["int3"]}, "dtypes"),
    ({"models": ["m"], "gpus": ["h100-sxm"], "colour": "red"}, "colour"),
    ({"models": ["m"], "gpus": ["h100-sxm"], "constraints": {"max_ttft_s": -1}}, "constraints.max_ttft_s"),
    ({"models": ["m"], "gpus": ["h100-sxm"], "constraints": {"max_gpus": 0}}, "constraints.max_gpus"),
    ({"models": ["m"], "gpus": ["h100-sxm"], "constraints": {"slo": 1}}, "constraints.slo"),
    ({"models": ["m"], "gpus": ["h100-sxm"], "constraints": {"min_gpus": 8, "max_gpus": 4}}, "constraints.min_gpus"),
])
def test_errors_name_the_field(data, field):
    with pytest.raises(SpecError) as e:
        SweepSpec.from_dict(data)
    assert e.value.field.endswith(field)


def test_yaml_errors(tmp_path):
    with pytest.raises(SpecError, match="existing YAML"):
        SweepSpec.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [a\n")
    with pytest.raises(SpecError, match="valid YAML"):
        SweepSpec.from_yaml(bad)


def test_cli_value_forms():
    assert parse_values("tp", "1,2,4,8") == [1, 2, 4, 8]
    assert parse_values("batch", "1:256:x2") == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert parse_values("p", "512:2048:512") == [512, 1024, 1536, 2048]
    assert parse_values("p", "1,2:6:2,2") == [1, 2, 4, 6]  # mixed, de-duplicated in order
    for bad in ("", "a", "1:2", "1:x:2", "1:4:xq"):
        with pytest.raises(SpecError):
            parse_values("tp", bad)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 500), st.integers(0, 2000), st.integers(1, 300))
def test_step_ranges_match_python_range(lo, span, step):
    got = parse_values("x", {"from": lo, "to": lo + span, "step": step})
    assert got == list(range(lo, lo + span + 1, step))
    assert got[0] == lo and got[-1] <= lo + span


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 100), st.integers(0, 10**6), st.integers(2, 10))
def test_factor_ranges_are_geometric(lo, span, factor):
    got = parse_values("x", {"from": lo, "to": lo + span, "factor": factor})
    assert got[0] == lo and got[-1] <= lo + span and got[-1] * factor > lo + span
    assert all(b == a * factor for a, b in zip(got, got[1:], strict=False))
