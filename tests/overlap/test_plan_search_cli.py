"""Overlap plans (pairing rules), the SM-allocation sweep and its Pareto set, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from energylens.cli import main
from energylens.cost.phase import axis_nodes, axis_sizes
from energylens.cost.plan import cost_steps
from energylens.errors import EnergyLensError, SpecError
from energylens.overlap.rules import (
    CONSUMER,
    PRODUCER,
    OverlapPlan,
    parse_int_list,
    resolve_pairs,
    step_sequence,
)
from energylens.overlap.search import sweep_overlap
from energylens.parallel.layout import Layout, degrees
from energylens.pareto import dominates
from energylens.pipeline import prepare
from energylens.program import build_program


def _items(model, **lay):
    m, g = prepare(model, "h100-sxm", None)
    layout = Layout(**lay)
    prog = build_program(m, layout)
    block, steps = prog.blocks[0]
    return m, g, layout, block, steps, step_sequence(steps, f"{block.name}.")


@pytest.mark.parametrize("model,lay", [("llama3-8b", {"tp": 2}), ("llama3-8b", {"tp": 4, "sp": True}),
                                       ("qwen3-30b-a3b", {"tp": 1, "dp": 8, "ep": 8}),
                                       ("qwen3-30b-a3b", {"tp": 8, "ep": 8}), ("qwen3-30b-a3b", {"tp": 2, "dp": 4, "ep": 8})])
def test_step_sequence_groups_kernels_like_the_engine(model, lay):
    m, g, layout, block, steps, items = _items(model, **lay)
    sizes = {**{k: np.asarray(float(v)) for k, v in m.dims.items()}, "b": np.asarray(2.0), "t": np.asarray(64.0),
             "s": np.asarray(64.0)}
    kernels, colls = cost_steps(g, m, list(steps), sizes, degrees(m, layout), axis_sizes(layout),
                                prefix=f"{block.name}.", nodes=axis_nodes(layout))
    assert [i.name for i in items if i.kind == "kernel"] == [k.name for k in kernels]
    assert [i.name for i in items if i.kind == "collective"] == [c.name for c in colls]


def test_megatron_pairs_follow_the_data_flow():
    *_, items = _items("llama3-8b", tp=4, sp=True)
    pairs = resolve_pairs(items, [OverlapPlan("*", None, 4, 16)])
    got = {(p.collective.split(".", 1)[1], p.compute.split(".", 1)[1], p.direction) for p in pairs}
    assert got == {("attn.q_proj:all_gather", "attn.qkv", CONSUMER),
                   ("attn.o_proj:reduce_scatter", "attn.o_proj", PRODUCER),
                   ("mlp.gate_proj:all_gather", "mlp.gate_up", CONSUMER),
                   ("mlp.down_proj:reduce_scatter", "mlp.down_proj", PRODUCER)}
    # an explicit compute pattern, and the first matching plan wins
    pairs = resolve_pairs(items, [OverlapPlan("*o_proj:reduce_scatter", None, 2, 8),
                                  OverlapPlan("*:all_gather", "*mlp.gate_up", 2, 8), OverlapPlan("*", None, 2, 0)])
    assert [(p.compute.split(".", 1)[1], p.plan.comm_sms) for p in pairs] == [("mlp.gate_up", 8), ("attn.o_proj", 8)]


def test_a_kernel_hides_at_most_one_collective():
    *_, items = _items("qwen3-30b-a3b", tp=2, dp=4, ep=8)  # ep spans replicas: all-to-all, then all-gather
    pairs = resolve_pairs(items, [OverlapPlan("*", None, 2, 16)])
    computes = [p.compute for p in pairs]
    assert len(computes) == len(set(computes))
    names = {p.collective.split(".")[-1] for p in pairs}
    assert {"dispatch:all_to_all", "combine:all_to_all", "o_proj:all_reduce"} <= names
    assert "combine:all_gather" not in names  # its producer (down_proj) already hides the combine all-to-all


@pytest.mark.parametrize("kwargs", [{"chunks": 0}, {"chunks": 65}, {"comm_sms": -1}, {"comm_sms": 2.5},
                                    {"collective": ""}, {"compute": ""}, {"chunks": True}])
def test_bad_plans_raise(kwargs):
    with pytest.raises(SpecError):
        OverlapPlan(**kwargs)


def test_parse_int_list():
    assert parse_int_list("0,4, 8-16:4,4", "x", 0, 131) == (0, 4, 8, 12, 16)
    for bad in ("", "a", "8-16:0", "200", "-3"):
        with pytest.raises(SpecError):
            parse_int_list(bad, "x", 0, 131)


@pytest.fixture(scope="module")
def sweep():
    return sweep_overlap("llama3-8b", "h100-sxm", tp=4, sp=True, batch=4, prompt_len=2048,
                         comm_sms=(4, 8, 16, 32, 64), chunks=(1, 2, 4))


def test_sweep_baseline_and_pareto(sweep):
    assert sweep.comm_sms[0] == 0 and sweep.chunks[0] == 1
    assert len(sweep.latency_s) == 1 + 5 * 3
    pts = np.column_stack([sweep.latency_s, sweep.energy_j])
    front = pts[sweep.pareto]
    for i, p in enumerate(pts):  # non-dominated, and everything else is dominated by the front
        if sweep.pareto[i]:
            assert not any(dominates(q, p) for q in pts)
        else:
            assert any(dominates(q, p) for q in front)
    assert sweep.pareto[np.lexsort((sweep.energy_j, sweep.latency_s))[0]]  # the fastest
    assert sweep.pareto[np.lexsort((sweep.latency_s, sweep.energy_j))[0]]  # the lowest energy
    order = sweep.pareto_indices()
    assert np.all(np.diff(sweep.latency_s[order]) >= 0)
    assert len(sweep.pairs) == 4
    rows = sweep.rows()
    assert rows[0]["baseline"] and rows[0]["latency_change"] == 0.0
    assert all(0.0 <= r["hidden_fraction"] <= 1.0 for r in rows)
    assert all(r["hidden_fraction"] == 0.0 for r in rows if r["chunks"] == 1)


def test_sweep_plot(tmp_path, sweep):
    from energylens.overlap.plot import plot_sweep

    path = plot_sweep(sweep, tmp_path / "o.png")
    assert path.stat().st_size > 10_000


def test_cli_json(capsys):
    rc = main(["overlap", "--model", "llama3-8b", "--tp", "2", "--comm-sms", "8,16", "--chunks", "1,2",
               "--prompt-len", "1024", "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    d = json.loads(out)
    assert len(d["rows"]) == 5 and d["rows"][0]["baseline"] and d["pareto_rows"] and d["plot"] is None


def test_cli_table(capsys):
    rc = main(["overlap", "--model", "llama3-8b", "--tp", "2", "--comm-sms", "16", "--chunks", "2",
               "--prompt-len", "512"])
    out = capsys.readouterr().out
    assert rc == 0 and "SM allocation" in out and "o_proj:all_reduce" in out


@pytest.mark.parametrize("args,needle", [(["--comm-sms", "132"], "comm-sms"), (["--chunks", "0"], "chunks"),
                                         (["--phase", "train"], "phase"), (["--gpu", "h9000"], "known values")])
def test_cli_errors_are_one_line(capsys, args, needle):
    rc = main(["overlap", "--model", "llama3-8b", "--tp", "2", *args])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and "Traceback" not in err


def test_api_errors_are_energylens_errors():
    with pytest.raises(EnergyLensError):
        sweep_overlap("llama3-8b", "h100-sxm", tp=2, comm_sms=(200,))
    with pytest.raises(EnergyLensError):
        sweep_overlap("llama3-8b", "h100-sxm", tp=3)
