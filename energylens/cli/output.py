"""How the command line writes: one-line errors on stderr and JSON without NaN (a leaf module:
both the Typer commands and the fast path of ``energylens.cli.fast`` import it)."""

from __future__ import annotations

from energylens.errors import EnergyLensError

_ERR = None


def _err_console():
    global _ERR
    if _ERR is None:
        from rich.console import Console

        _ERR = Console(stderr=True, emoji=False)
    return _ERR


def report(exc: EnergyLensError) -> None:
    """One line on stderr (never wrapped, never markup): ``error: field=value is not valid: allowed``."""
    _err_console().print("error:", str(exc), style="bold red", markup=False, highlight=False, soft_wrap=True)


def json_text(obj: object) -> str:
    """One JSON document: NumPy values as Python ones, and never a bare NaN/Infinity
    (a figure that has no value, such as the error of zero rows, is ``null``)."""
    import json

    from energylens.checks import json_safe

    return json.dumps(json_safe(obj), indent=2, default=str, allow_nan=False)


def emit_json(obj: object) -> None:
    """Print ``json_text(obj)``."""
    import typer

    typer.echo(json_text(obj))
