"""Issue 18: README figures are recomputed here, so a change to the cost model that moves them fails until
the README says the new numbers (each figure also has its command next to it in the README)."""

from __future__ import annotations

from pathlib import Path

import pytest

import energylens

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def g3(x: float) -> str:
    return f"{x:.3g}"


def test_j_per_token_table():
    from energylens.serving import serve

    p = energylens.predict("llama3.1-70b", "h100-sxm", tp=8, batch=64, prompt_len=1024, output_len=256)
    s = serve("llama3.1-70b", "h100-sxm", tp=8, batch=64, input_len=1024, output_len=256)
    n = 64 * 256
    iv = p.extra["interval"]["total_energy_j"]
    section = README[README.index("### Which J per token?"):README.index("Bad input (an unknown GPU")]
    rows = [ln for ln in section.splitlines() if ln.startswith("| ")]
    assert rows[1].endswith(f"| {p.decode.energy_per_token_j:.3f} J |"), rows[1]
    assert rows[2].endswith(f"| {g3(p.energy_per_output_token_j)} J |"), rows[2]
    assert rows[3].endswith(f"| {g3(s.energy_per_output_token_j)} J |"), rows[3]
    assert (f"about {g3(iv['estimate'] / n)} J per output token, 80 % interval {g3(iv['low'] / n)}–"
            f"{g3(iv['high'] / n)} J") in section


def test_sm_check_figures():
    from energylens.overlap.sm_check import run_check

    c = run_check()
    pre, dec = 100 * c.mape("prefill", 30), 100 * c.mape("decode", 30)
    assert f"(prefill {pre:.1f} %, decode {dec:.1f} % MAPE over 30–90 % of SMs)" in README
    assert f"`python -m energylens.overlap.sm_check`, {pre:.1f} % (prefill) / {dec:.1f} % (decode)." in README


@pytest.fixture(scope="module")
def compare_public(load_tool):
    return load_tool("compare_public")


def test_compare_public_runs_from_a_checkout_and_matches_the_readme(compare_public, capsys):
    """It read shared/reference outside the repository; the subsets it needs ship in energylens/data."""
    assert compare_public.LIB_CSV.is_file() and compare_public.SPLITWISE_CSV.is_file()
    lib = compare_public.llm_inference_bench()
    sw = compare_public.splitwise()
    assert (f"the per-op model alone is {lib['latency_kernels']:.1f} % fast and {lib['energy_kernels']:.1f} %"
            in README.replace("\n", " "))
    assert (f"the errors drop to {lib['latency_runtime']:.1f} % (latency) and {lib['energy_runtime']:.1f} % (energy"
            in README.replace("\n", " "))
    lo, hi = min(v["decode_kernels"] for v in sw.values()), max(v["decode_kernels"] for v in sw.values())
    assert f"decode iterations are {lo:.0f}–{hi:.0f} % under-predicted" in README.replace("\n", " ")
