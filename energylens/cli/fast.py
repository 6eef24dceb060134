"""``energylens predict`` without Typer: the same options, parsed by ``argparse`` (a few ms to import
instead of ~0.1 s for Typer, Click and Pydantic's coercion), the same JSON.

``PREDICT_OPTIONS`` mirrors ``energylens.cli.predict_cmd.predict_command`` (a test checks that every
flag, default and type agrees). Anything this parser does not accept as it stands (``--help``, an
unknown flag, a value that is not an integer) returns None and the caller takes the Typer path, so
errors read exactly as Typer prints them.
"""

from __future__ import annotations

import sys

# (parameter, flags, type (bool = a flag), default)
PREDICT_OPTIONS: tuple[tuple[str, tuple[str, ...], type, object], ...] = (
    ("model", ("--model", "-m"), str, "llama3-8b"),
    ("gpu", ("--gpu", "-g"), str, "h100-sxm"),
    ("batch", ("--batch", "-b"), int, 1),
    ("prompt_len", ("--input-len", "--prompt-len"), int, 2048),
    ("output_len", ("--output-len",), int, 256),
    ("dtype", ("--dtype", "--weight-dtype"), str, None),
    ("kv_cache_dtype", ("--kv-cache-dtype",), str, None),
    ("activation_dtype", ("--activation-dtype",), str, None),
    ("tp", ("--tp",), int, 1),
    ("pp", ("--pp",), int, 1),
    ("dp", ("--dp",), int, 1),
    ("ep", ("--ep",), int, 1),
    ("sp", ("--sp",), bool, False),
    ("gpus_per_node", ("--gpus-per-node",), int, 8),
    ("routing", ("--routing",), str, "uniform"),
    ("power_limit", ("--power-limit",), float, None),
    ("sm_clock", ("--sm-clock",), float, None),
    ("as_json", ("--json",), bool, False),
    ("top", ("--top",), int, 8),
)


class _Refused(Exception):
    pass


def parse_predict(args: list[str]) -> dict | None:
    """Keyword arguments of ``predict_command`` for ``args`` (after ``predict``), or None."""
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message):  # noqa: D401 - argparse hook
            raise _Refused(message)

    if any(a in ("--help", "-h") for a in args):
        return None
    p = Parser(add_help=False, allow_abbrev=False, exit_on_error=False)
    for dest, flags, kind, default in PREDICT_OPTIONS:
        if kind is bool:
            p.add_argument(*flags, dest=dest, action="store_true", default=default)
        else:
            p.add_argument(*flags, dest=dest, type=kind, default=default)
    try:
        ns = p.parse_args(args)
    except (_Refused, argparse.ArgumentError, ValueError):
        return None
    return vars(ns)


def run_predict(model: str, gpu: str, *, as_json: bool, top: int, render=None, **kw) -> None:
    """The body of ``energylens predict`` (both paths): check, predict, print JSON or ``render(pred, top)``."""
    from energylens.checks import integer
    from energylens.errors import WorkloadError
    from energylens.predict import predict

    integer("top", top, low=0, high=10_000, error=WorkloadError, what="a number of ops to list, 0 or more")
    pred = predict(model, gpu, power_limit_w=kw.pop("power_limit", None), sm_clock_mhz=kw.pop("sm_clock", None), **kw)
    if as_json:
        from energylens.cli.output import json_text

        sys.stdout.write(json_text(pred.to_dict()) + "\n")
        sys.stdout.flush()
    else:
        render(pred, top)


def run_fast(args: list[str]) -> int | None:
    """Run ``energylens predict ...`` here and return its exit code, or None (not handled)."""
    if not args or args[0] != "predict":
        return None
    kw = parse_predict(args[1:])
    if kw is None or not kw["as_json"]:  # the tables need Rich anyway: the Typer path prints them
        return None
    from energylens.errors import EnergyLensError

    try:
        run_predict(**kw)
    except EnergyLensError as exc:
        from energylens.cli.output import report

        report(exc)
        return 2
    return 0
