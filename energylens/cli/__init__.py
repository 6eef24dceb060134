"""The ``energylens`` command line (Typer + Rich).

Each command lives in its own module of this package and registers itself on ``app``; add new
modules to ``COMMAND_MODULES``. Any ``EnergyLensError`` becomes one line on stderr and exit code 2.

Typer and Rich take a tenth of a second to import, so ``app`` is built on first use, and
``energylens predict`` (the command people script) goes through a plain ``argparse`` path
(``energylens.cli.fast``) whenever its arguments parse there; anything else (``--help``, a typo)
takes the Typer path and gets Typer's messages.
"""

from __future__ import annotations

import importlib
import sys

from energylens.cli.output import _err_console, emit_json, json_text, report  # noqa: F401 - the CLI API
from energylens.errors import EnergyLensError

COMMAND_MODULES = [
    "energylens.cli.predict_cmd",
    "energylens.cli.catalog_cmd",
    "energylens.cli.measure_cmd",
    "energylens.cli.serve_cmd",
    "energylens.cli.validate_cmd",
    "energylens.cli.sweep_cmd",
    "energylens.cli.overlap_cmd",
    "energylens.cli.plan_cmd",
    "energylens.cli.spec_cmd",
]

_APP = None


def __getattr__(name: str):
    """``app`` and ``err_console`` are made on first use (Typer and Rich are imported then)."""
    if name == "app":
        return _app()
    if name == "err_console":
        return _err_console()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _is_usage_error(exc: BaseException) -> bool:
    """click's ``UsageError`` family (Typer bundles its own click, so match by class name)."""
    return any(c.__name__ == "UsageError" for c in type(exc).__mro__) and hasattr(exc, "format_message")


def _usage(ctx, exc: Exception) -> None:
    """click's usage errors (unknown option, '--batch x', a missing value): one line and exit code 2 too,
    not a multi-line panel; anything else propagates."""
    if not _is_usage_error(exc):
        raise exc
    sub = getattr(getattr(exc, "ctx", None), "command_path", None) or ctx.command_path
    _err_console().print(f"error: {exc.format_message()} (see '{sub} --help')", style="bold red", markup=False,
                         highlight=False, soft_wrap=True)
    ctx.exit(2)


def _app():
    global _APP
    if _APP is None:
        import typer
        from typer.core import TyperGroup

        class _Commands(TyperGroup):
            """The command group: an ``EnergyLensError`` from any command becomes one line and exit code 2,
            also when the app runs without :func:`main` (``typer.testing.CliRunner().invoke(app, ...)``)."""

            def parse_args(self, ctx, args):
                try:
                    return super().parse_args(ctx, args)
                except Exception as exc:
                    _usage(ctx, exc)

            def invoke(self, ctx):
                try:
                    return super().invoke(ctx)
                except EnergyLensError as exc:
                    report(exc)
                    ctx.exit(2)
                except Exception as exc:
                    _usage(ctx, exc)

        app = typer.Typer(
            cls=_Commands,
            name="energylens",
            help="Predict the energy (J) and latency (s) of LLM inference on one or many GPUs.",
            no_args_is_help=False,
            add_completion=False,
            pretty_exceptions_enable=False,
        )

        def _root(ctx) -> None:
            """Without a command, runs ``predict`` on built-in defaults (Llama-3-8B, H100 SXM)."""
            if ctx.invoked_subcommand is None:
                # parse an empty command line for the registered command, so that its option defaults apply
                cmd = ctx.command.get_command(ctx, "predict")
                with cmd.make_context("predict", [], parent=ctx) as sub:
                    cmd.invoke(sub)

        _root.__annotations__ = {"ctx": typer.Context, "return": None}
        app.callback(invoke_without_command=True)(_root)
        _APP = app
    return _APP


def _load_commands() -> None:
    _app()
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a command module not written yet must not break the others
            if exc.name != name:
                raise


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    from energylens.cli.fast import run_fast

    rc = run_fast(args)
    if rc is not None:
        return rc
    _load_commands()
    try:
        rc = _app()(args=args, standalone_mode=False)  # click returns the code of ctx.exit(code) here
        if isinstance(rc, int) and not isinstance(rc, bool):
            return rc
    except EnergyLensError as exc:
        report(exc)
        return 2
    except KeyboardInterrupt:
        _err_console().print("aborted")
        return 130
    except Exception as exc:  # Typer bundles click: its usage errors and Exit carry exit_code
        name = type(exc).__name__
        if name == "Exit":
            return int(getattr(exc, "exit_code", 0) or 0)
        if name == "Abort":
            _err_console().print("aborted")
            return 130
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            return int(exc.exit_code)
        raise
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
