"""``energylens measure`` and ``energylens calibrate`` (bodies in energylens.cli_measure)."""

from __future__ import annotations

from energylens.cli import app

try:
    from energylens.cli_measure import calibrate_command, measure_command
except ImportError:  # pragma: no cover - module written by the measurement work
    calibrate_command = measure_command = None

if measure_command is not None:
    app.command("measure")(measure_command)
if calibrate_command is not None:
    app.command("calibrate")(calibrate_command)
