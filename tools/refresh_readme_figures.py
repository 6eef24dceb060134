"""Rewrite the README figures that tests recompute, after a change to the cost model moved them.

    PYTHONPATH=. python tools/refresh_readme_figures.py [--check]

The figures (each with its command next to it in the README) and the tests that hold them:

* the plan table, the power-cap sentence, the candidates comment and the serve power-limit comment of
  "Planning a deployment" (`tests/reliability/test_readme_plan.py`, which also supplies the commands);
* the "Which J per token?" table and its interval sentence, the SM-split check figures and the public
  comparison figures (`tests/reliability/test_readme_figures.py`).

Only numbers are rewritten; the prose around them is not. The script prints the choices it saw (GPU, layout,
concurrency) so a reader can check that sentences naming a deployment still say the right thing.
``--check`` writes nothing and exits 1 when a figure would change.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sub_once(pattern: str, repl: str, text: str, what: str) -> str:
    new, n = re.subn(pattern, lambda _m: repl, text, count=1, flags=re.S)
    if n != 1:
        raise SystemExit(f"refresh_readme_figures: could not find {what} in README.md (pattern {pattern!r})")
    return new


def plan_figures(text: str) -> str:
    from energylens.plan_explain import layout_label

    t = _module(ROOT / "tests" / "reliability" / "test_readme_plan.py", "_readme_plan")
    cap = t._Capture()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for cmd, comment in t.commands():
            with cap:
                args, res = t._run(cmd, Path(tmp), cap)
            results.append((args, comment, res))

    def opt(args, flag):
        return args[args.index(flag) + 1] if flag in args else None

    free_energy = None
    for args, _, res in results:
        if args[0] != "plan" or opt(args, "--power-limit"):
            continue
        b = res["rows"][0]
        label = f"{t.MODELS[opt(args, '--model')]}, {opt(args, '--objective')}"
        cells = [f"{b['num_gpus']}x {b['gpu']} {layout_label(b)}, concurrency {b['concurrency']:g}",
                 f"{b['energy_per_output_token_j']:.3g}", f"{b['output_tokens_per_s_per_gpu']:,.0f}",
                 f"{b['ttft_s']:.3g}", f"{b['tpot_s'] * 1e3:.3g}", f"{res['meta']['candidates']:,}"]
        pat = rf"\| {re.escape(label)} \|[^\n]*?\|[^\n]*?\|[^\n]*?\|[^\n]*?\|[^\n]*?\|[^\n]*?\|([^\n]*?)\|\n"
        m = re.search(pat, text)
        if not m:
            raise SystemExit(f"refresh_readme_figures: no plan table row for {label!r}")
        row = f"| {label} | " + " | ".join(cells) + f" |{m.group(1)}|\n"
        text = text[:m.start()] + row + text[m.end():]
        print(f"plan {label}: {cells[0]}, {cells[1]} J/token")
        if opt(args, "--model") == "llama3.1-70b" and opt(args, "--objective") == "energy":
            free_energy = b
    capped = next(res for args, _, res in results if args[0] == "plan" and opt(args, "--power-limit"))
    b, f = capped["rows"][0], free_energy
    saved = round((1 - b["energy_per_output_token_j"] / f["energy_per_output_token_j"]) * 100)
    sentence = (f"capped at {b['power_limit_w']:g} W ({b['energy_per_output_token_j']:.3g} J/token, {saved} % "
                f"below the uncapped choice, at {b['output_tokens_per_s_per_gpu']:,.0f} tok/s/GPU instead of "
                f"{f['output_tokens_per_s_per_gpu']:,.0f})")
    text = _sub_once(r"capped at [\d.]+ W\s+\([\d.]+ J/token,\s+-?\d+ %\s+below\s+the\s+uncapped\s+choice,\s+at"
                     r"\s+[\d,]+\s+tok/s/GPU\s+instead\s+of\s+[\d,]+\)", sentence, text, "the power-cap sentence")
    print(f"plan capped: {b['num_gpus']}x {b['gpu']} {layout_label(b)}, concurrency {b['concurrency']:g}, "
          f"{b['power_limit_w']:g} W")
    text = _sub_once(r"#\s+[\d,]+ candidates", f"# {capped['meta']['candidates']:,} candidates", text,
                     "the candidates comment")

    from energylens.serving import serve

    args, _, res = next(x for x in results if x[0][0] == "serve")
    ref = serve("llama3.1-70b", "h100-sxm", num_gpus=4, tp=4, batch=64, input_len=512, output_len=1024)
    tpot = (res["decode_step_latency_s"] / ref.decode_step_latency_s - 1) * 100
    comment = (f"{res['avg_power_w'] / 4:.0f} W/GPU ({ref.avg_power_w / 4:.0f} by default), "
               f"{res['energy_per_output_token_j']:.3g} J/token ({ref.energy_per_output_token_j:.3g}), "
               f"TPOT {tpot:+.1f} %")
    return _sub_once(r"# \d+ W/GPU \(\d+ by default\), [\d.]+ J/token \([\d.]+\), TPOT [+-][\d.]+ %", "# " + comment,
                     text, "the serve power-limit comment")


def jtoken_figures(text: str) -> str:
    import energylens
    from energylens.serving import serve

    p = energylens.predict("llama3.1-70b", "h100-sxm", tp=8, batch=64, prompt_len=1024, output_len=256)
    s = serve("llama3.1-70b", "h100-sxm", tp=8, batch=64, input_len=1024, output_len=256)
    n = 64 * 256
    iv = p.extra["interval"]["total_energy_j"]
    start, end = text.index("### Which J per token?"), text.index("Bad input (an unknown GPU")
    sec = text[start:end]
    rows = [ln for ln in sec.splitlines() if ln.startswith("| ")]
    values = [f"{p.decode.energy_per_token_j:.3f}", f"{p.energy_per_output_token_j:.3g}",
              f"{s.energy_per_output_token_j:.3g}"]
    for row, v in zip(rows[1:4], values, strict=True):
        sec = sec.replace(row, _sub_once(r"\| [\d.]+ J \|$", f"| {v} J |", row, "a J/token table value"), 1)
    sec = _sub_once(r"about [\d.]+ J per output token, 80 % interval [\d.]+–[\d.]+ J",
                    f"about {iv['estimate'] / n:.3g} J per output token, 80 % interval {iv['low'] / n:.3g}–"
                    f"{iv['high'] / n:.3g} J", sec, "the J/token interval sentence")
    return text[:start] + sec + text[end:]


def sm_check_figures(text: str) -> str:
    from energylens.overlap.sm_check import run_check

    c = run_check()
    pre, dec = 100 * c.mape("prefill", 30), 100 * c.mape("decode", 30)
    text = _sub_once(r"\(prefill [\d.]+ %, decode [\d.]+ % MAPE over 30–90 % of SMs\)",
                     f"(prefill {pre:.1f} %, decode {dec:.1f} % MAPE over 30–90 % of SMs)", text, "the SM check")
    return _sub_once(r"`python -m energylens\.overlap\.sm_check`, [\d.]+ % \(prefill\) / [\d.]+ % \(decode\)\.",
                     f"`python -m energylens.overlap.sm_check`, {pre:.1f} % (prefill) / {dec:.1f} % (decode).",
                     text, "the SM check sentence")


def public_figures(text: str) -> str:
    cp = _module(ROOT / "tools" / "compare_public.py", "_compare_public")
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        lib, sw = cp.llm_inference_bench(), cp.splitwise()
    s = r"\s+"
    text = _sub_once(rf"the{s}per-op{s}model{s}alone{s}is{s}[\d.]+{s}%{s}fast{s}and{s}[\d.]+{s}%",
                     f"the per-op model alone is {lib['latency_kernels']:.1f} % fast and {lib['energy_kernels']:.1f} %",
                     text, "the LLM-Inference-Bench kernel figures")
    text = _sub_once(rf"the{s}errors{s}drop{s}to{s}[\d.]+{s}%{s}\(latency\){s}and{s}[\d.]+{s}%{s}\(energy",
                     f"the errors drop to {lib['latency_runtime']:.1f} % (latency) and "
                     f"{lib['energy_runtime']:.1f} % (energy", text, "the LLM-Inference-Bench runtime figures")
    lo = min(v["decode_kernels"] for v in sw.values())
    hi = max(v["decode_kernels"] for v in sw.values())
    return _sub_once(rf"decode{s}iterations{s}are{s}\d+–\d+{s}%{s}under-predicted",
                     f"decode iterations are {lo:.0f}–{hi:.0f} % under-predicted", text, "the Splitwise figures")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 when a figure would change")
    a = ap.parse_args()
    old = README.read_text()
    new = public_figures(sm_check_figures(jtoken_figures(plan_figures(old))))
    if new == old:
        print("README figures: unchanged")
        return 0
    if a.check:
        print("README figures: would change")
        return 1
    README.write_text(new)
    print("README figures: rewritten (git diff README.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
