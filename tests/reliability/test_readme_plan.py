"""Issue 20: every command of the README's planning section runs (figures written to a temporary folder), and
the plan table, the power-cap paragraph and the serve power-limit comment say what those commands print."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from energylens.cli import main
from energylens.plan_explain import layout_label

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
SECTION = README[README.index("## Planning a deployment"):README.index("## Measurement and calibration")]
MODELS = {"llama3.1-70b": "Llama-3.1-70B", "qwen3-235b-a22b": "Qwen3-235B-A22B"}


def commands() -> list[tuple[str, str]]:
    """(command line, its comment) of every ``energylens ...`` command in the section's bash blocks."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", SECTION, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if line.startswith("energylens "):
                cmd, _, comment = line.partition(" # ")
                out.append((cmd.strip(), comment.strip()))
    return out


def _run(cmd: str, tmp_path: Path, capsys) -> tuple[list[str], object]:
    args = shlex.split(cmd)[1:]
    for flag in ("--plot", "--out"):
        if flag in args:
            k = args.index(flag) + 1
            args[k] = str(tmp_path / Path(args[k]).name)
    wants_json = args[0] in ("plan", "serve") and "--json" not in args
    rc = main(args + (["--json"] if wants_json else []))
    out = capsys.readouterr().out
    assert rc in (0, None), cmd
    return args, (json.loads(out) if args[0] in ("plan", "serve") else out)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("readme")
    capsys = _Capture()
    got = []
    for cmd, comment in commands():
        with capsys:
            args, res = _run(cmd, tmp, capsys)
        got.append((args, comment, res))
    return got


class _Capture:
    """A module-scoped stand-in for pytest's capsys (stdout of in-process CLI calls)."""

    def __enter__(self):
        import contextlib
        import io

        self.buf = io.StringIO()
        self._cm = contextlib.redirect_stdout(self.buf)
        self._cm.__enter__()
        return self

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)

    def readouterr(self):
        class R:
            pass

        r = R()
        r.out = self.buf.getvalue()
        self.buf.seek(0)
        self.buf.truncate()
        return r


def _opt(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def test_every_command_runs(results):
    kinds = {args[0] for args, _, _ in results}
    assert {"plan", "serve", "sweep", "disagg"} <= kinds and len(results) >= 8


def test_plan_table_matches_the_commands(results):
    rows = [ln for ln in SECTION.splitlines() if ln.startswith("| ") and ", energy |" in ln or ", throughput |" in ln]
    assert len(rows) == 4
    for args, _, res in results:
        if args[0] != "plan" or _opt(args, "--power-limit"):
            continue
        b = res["rows"][0]
        label = f"{MODELS[_opt(args, '--model')]}, {_opt(args, '--objective')}"
        row = next(r for r in rows if r.startswith(f"| {label} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == f"{b['num_gpus']}x {b['gpu']} {layout_label(b)}, concurrency {b['concurrency']:g}", row
        assert cells[2:7] == [f"{b['energy_per_output_token_j']:.3g}", f"{b['output_tokens_per_s_per_gpu']:,.0f}",
                              f"{b['ttft_s']:.3g}", f"{b['tpot_s'] * 1e3:.3g}", f"{res['meta']['candidates']:,}"], row
        assert b["ttft_s"] <= 1.0 and b["tpot_s"] <= 0.05  # the top row meets the SLOs


def test_power_cap_paragraph_matches_its_command(results):
    capped = next(res for args, _, res in results if args[0] == "plan" and _opt(args, "--power-limit"))
    free = next(res for args, _, res in results if args[0] == "plan" and not _opt(args, "--power-limit")
                and _opt(args, "--model") == "llama3.1-70b" and _opt(args, "--objective") == "energy")
    b, f = capped["rows"][0], free["rows"][0]
    assert b["power_limit_w"] < b["default_power_limit_w"] and b["gco2e_per_million_tokens"] > 0
    saved = round((1 - b["energy_per_output_token_j"] / f["energy_per_output_token_j"]) * 100)
    text = " ".join(SECTION.split())
    assert (f"capped at {b['power_limit_w']:g} W ({b['energy_per_output_token_j']:.3g} J/token, {saved} % below the "
            f"uncapped choice, at {b['output_tokens_per_s_per_gpu']:,.0f} tok/s/GPU instead of "
            f"{f['output_tokens_per_s_per_gpu']:,.0f})") in text
    assert f"# {capped['meta']['candidates']:,} candidates" in SECTION


def test_serve_power_limit_comment(results):
    from energylens.serving import serve

    args, comment, res = next(x for x in results if x[0][0] == "serve")
    ref = serve("llama3.1-70b", "h100-sxm", num_gpus=4, tp=4, batch=64, input_len=512, output_len=1024)
    tpot = (res["decode_step_latency_s"] / ref.decode_step_latency_s - 1) * 100
    assert comment == (f"{res['avg_power_w'] / 4:.0f} W/GPU ({ref.avg_power_w / 4:.0f} by default), "
                       f"{res['energy_per_output_token_j']:.3g} J/token ({ref.energy_per_output_token_j:.3g}), "
                       f"TPOT {tpot:+.1f} %")
    assert res["energy_per_output_token_j"] < ref.energy_per_output_token_j
