"""Fuzz-suite plumbing: the case count and outcomes in the pytest terminal summary."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # fuzz_tally, under any pytest import mode

import fuzz_tally  # noqa: E402


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = fuzz_tally.summary_lines()
    if lines:
        terminalreporter.section("fuzz (issue 18)")
        for line in lines:
            terminalreporter.write_line(line)
