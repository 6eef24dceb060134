"""The ``energylens`` command line (Typer + Rich).

Each command lives in its own module of this package and registers itself on ``app``; add new
modules to ``COMMAND_MODULES``. Any ``EnergyLensError`` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console
from typer.core import TyperGroup

from energylens.errors import EnergyLensError

err_console = Console(stderr=True, emoji=False)


def report(exc: EnergyLensError) -> None:
    """One line on stderr (never wrapped, never markup): ``error: field=value is not valid: allowed``."""
    err_console.print("error:", str(exc), style="bold red", markup=False, highlight=False, soft_wrap=True)


class _Commands(TyperGroup):
    """The command group: an ``EnergyLensError`` from any command becomes one line and exit code 2, also
    when the app runs without :func:`main` (``typer.testing.CliRunner().invoke(app, ...)``)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EnergyLensError as exc:
            report(exc)
            ctx.exit(2)


app = typer.Typer(
    cls=_Commands,
    name="energylens",
    help="Predict the energy (J) and latency (s) of LLM inference on one or many GPUs.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
)

COMMAND_MODULES = [
    "energylens.cli.predict_cmd",
    "energylens.cli.catalog_cmd",
    "energylens.cli.measure_cmd",
    "energylens.cli.serve_cmd",
    "energylens.cli.validate_cmd",
    "energylens.cli.sweep_cmd",
    "energylens.cli.overlap_cmd",
    "energylens.cli.spec_cmd",
]


def emit_json(obj: object) -> None:
    """Print one JSON document: NumPy values as Python ones, and never a bare NaN/Infinity
    (a figure that has no value, such as the error of zero rows, is ``null``)."""
    import json

    from energylens.checks import json_safe

    typer.echo(json.dumps(json_safe(obj), indent=2, default=str, allow_nan=False))


def _load_commands() -> None:
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a command module not written yet must not break the others
            if exc.name != name:
                raise


@app.callback(invoke_without_command=True)
def _root(ctx: typer.Context) -> None:
    """Without a command, runs ``predict`` on built-in defaults (Llama-3-8B, H100 SXM)."""
    if ctx.invoked_subcommand is None:
        # parse an empty command line for the registered command, so that its option defaults apply
        cmd = ctx.command.get_command(ctx, "predict")
        with cmd.make_context("predict", [], parent=ctx) as sub:
            cmd.invoke(sub)


def main(argv: list[str] | None = None) -> int:
    _load_commands()
    try:
        rc = app(args=argv, standalone_mode=False)  # click returns the code of ctx.exit(code) here
        if isinstance(rc, int) and not isinstance(rc, bool):
            return rc
    except EnergyLensError as exc:
        report(exc)
        return 2
    except KeyboardInterrupt:
        err_console.print("aborted")
        return 130
    except Exception as exc:  # Typer bundles click: its usage errors and Exit carry exit_code
        name = type(exc).__name__
        if name == "Exit":
            return int(getattr(exc, "exit_code", 0) or 0)
        if name == "Abort":
            err_console.print("aborted")
            return 130
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            return int(exc.exit_code)
        raise
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
