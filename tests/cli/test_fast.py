"""The argparse path of ``energylens predict`` agrees with the Typer command, flag for flag."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest

from energylens.cli import main
from energylens.cli.fast import PREDICT_OPTIONS, parse_predict


def test_options_mirror_the_typer_command():
    from energylens.cli.predict_cmd import predict_command

    params = inspect.signature(predict_command).parameters
    assert [p for p in params] == [name for name, *_ in PREDICT_OPTIONS]
    for name, flags, kind, default in PREDICT_OPTIONS:
        info = params[name].default
        assert tuple(info.param_decls) == flags, name
        assert info.default == default, name
        assert params[name].annotation in (kind.__name__, kind), name


def test_parse_and_fall_back():
    kw = parse_predict(["-m", "llama3-70b", "--tp=4", "-b", "8", "--sp", "--json"])
    assert kw["model"] == "llama3-70b" and kw["tp"] == 4 and kw["batch"] == 8 and kw["sp"] and kw["as_json"]
    for args in (["--help"], ["--tp", "x"], ["--nope"], ["extra"], ["--tp"]):
        assert parse_predict(args) is None, args


def test_fast_and_typer_paths_print_the_same(capsys, monkeypatch):
    args = ["predict", "--model", "llama3-8b", "--batch", "2", "--output-len", "16", "--json"]
    assert main(args) == 0
    fast = capsys.readouterr().out
    import energylens.cli.fast as fast_mod

    monkeypatch.setattr(fast_mod, "run_fast", lambda a: None)
    assert main(args) == 0
    assert capsys.readouterr().out == fast == json.dumps(json.loads(fast), indent=2) + "\n"


@pytest.mark.parametrize("args,needle", [(["--tp", "3"], "tp"), (["--model", "nope"], "model")])
def test_fast_path_errors_are_one_line(capsys, args, needle):
    assert main(["predict", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_cold_predict_imports_no_typer():
    code = ("import sys, io, contextlib\nfrom energylens.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    assert main(['predict', '--json']) == 0\n"
            "bad = [m for m in ('typer', 'rich', 'pydantic', 'scipy', 'click') if m in sys.modules]\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
