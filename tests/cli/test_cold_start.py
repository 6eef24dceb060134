"""Cold start of ``energylens predict --json`` (issue 19): the argparse fast path and a default prediction
import only what a prediction needs. Checked by the modules a fresh process holds, not by a timing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import energylens

ROOT = Path(energylens.__file__).parent.parent

# Modules the predict path no longer imports (the CLI frameworks never; the rest only when asked for:
# a spec .yaml model, overlap plans, a model name beyond the shipped ones, an unsupported architecture).
NOT_IMPORTED = ("typer", "click", "rich", "pydantic", "energylens.specs.model_yaml", "energylens.specs.expr",
                "energylens.overlap.cost", "energylens.overlap.search", "energylens.models.hub",
                "energylens.models.names", "energylens.sweep", "energylens.measure", "numpy.ma")

SCRIPT = """
import contextlib, io, json, sys
from energylens.cli.fast import run_fast
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = run_fast(["predict", "--json"])
print(json.dumps({"code": code, "energy_j": json.loads(out.getvalue())["prefill"]["energy_j"],
                  "modules": sorted(sys.modules)}))
"""


def test_fast_predict_imports_only_the_prediction_path():
    r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, check=True)
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["code"] == 0 and got["energy_j"] > 0
    loaded = set(got["modules"])
    assert "energylens.predict" in loaded  # the check sees the modules of a process that did predict
    leaked = sorted(m for m in loaded for bad in NOT_IMPORTED if m == bad or m.startswith(bad + "."))
    assert leaked == []


def test_lazy_public_names_resolve():
    import energylens.overlap as overlap
    import energylens.specs as specs
    from energylens.overlap.cost import evaluate_overlap
    from energylens.specs.model_yaml import load_model_spec

    assert callable(energylens.predict) and energylens.predict.__name__ == "predict"
    assert specs.load_model_spec is load_model_spec and set(specs.__all__) <= set(dir(specs))
    assert overlap.evaluate_overlap is evaluate_overlap
    for module in (energylens, specs, overlap):
        for name in module.__all__:
            assert getattr(module, name) is not None
    try:
        specs.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("an unknown attribute must raise AttributeError")


def test_registry_spec_suffixes_match_the_spec_language():
    from energylens.models.registry import SPEC_SUFFIXES
    from energylens.specs import model_yaml

    assert SPEC_SUFFIXES == model_yaml.SPEC_SUFFIXES


def test_interval_median_equals_numpy_median():
    from energylens.intervals import _median_ratio, _static_batch_ratios

    figures = _static_batch_ratios().get("figures") or {}
    checked = 0
    for key, fig in figures.items():
        ratios = [float(r) for r in (fig or {}).get("ratios") or []]
        if ratios:
            assert _median_ratio(key) == float(np.median(ratios))
            checked += 1
    assert checked > 0
