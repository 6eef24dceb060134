"""The harness imports without torch or pynvml (neither is installed here, and neither may be needed)."""

from __future__ import annotations

import subprocess
import sys

MODULES = [
    "energylens.measure",
    "energylens.measure.records",
    "energylens.measure.points",
    "energylens.measure.nvml",
    "energylens.measure.runner",
    "energylens.measure.workloads",
    "energylens.measure.decoder",
    "energylens.measure.suites",
    "energylens.measure.collective_suite",
    "energylens.hardware.fitted",
    "energylens.calibration.records",
    "energylens.cli.measure_cmd",
]


def test_harness_imports_without_torch_or_pynvml() -> None:
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"  # make any import of torch fail loudly, installed or not
        "sys.modules['pynvml'] = None\n" + "".join(f"import {m}\n" for m in MODULES) + "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_importing_does_not_load_torch() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in MODULES)
        + "print('torch' in sys.modules, 'pynvml' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False False"
