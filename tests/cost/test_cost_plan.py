"""energylens.cost.plan: the compiled cost plan (one code path for one configuration and for arrays)."""

from __future__ import annotations

import numpy as np
import pytest

import energylens
from energylens.cost.phase import axis_sizes, evaluate_phase
from energylens.cost.plan import compile_steps, variable_sizes
from energylens.hardware import load_gpu
from energylens.models import load_model
from energylens.parallel.layout import Layout, degrees
from energylens.program import build_program
from energylens.workload import Workload, decode_sizes, prefill_sizes

CASES = [
    dict(model="llama3-8b", gpu="h100-sxm", batch=4, prompt_len=1024, output_len=64),
    dict(model="llama3-70b", gpu="h100-sxm", tp=4, pp=2, batch=8, prompt_len=512, output_len=40),
    dict(model="qwen3-30b-a3b", gpu="h100-sxm", tp=2, ep=2, dp=2, batch=16, prompt_len=256, output_len=8),
]


@pytest.mark.parametrize("case", CASES)
def test_totals_without_detail_are_the_detailed_totals(case):
    full = energylens.predict(**case)
    fast = energylens.predict(**case, detail=False)
    assert fast.prefill.ops == () and fast.decode.collectives == ()
    for a, b in ((full.prefill, fast.prefill), (full.decode, fast.decode)):
        assert b.energy_j == a.energy_j and b.latency_s == a.latency_s and b.breakdown == a.breakdown
        assert b.per_gpu == a.per_gpu
    assert fast.memory == full.memory


@pytest.mark.parametrize("case", CASES)
def test_per_op_rows_add_up_to_the_phase(case):
    """Detail rows are views of the arrays the totals were summed from."""
    p = energylens.predict(**case)
    for ph in (p.prefill, p.decode):
        busy = sum(o.energy_j for o in ph.ops) + sum(c.energy_j for c in ph.collectives)
        assert busy + ph.breakdown.idle_wait_j == pytest.approx(ph.energy_j, rel=1e-9)
        assert sum(o.compute_energy_j for o in ph.ops) == pytest.approx(ph.breakdown.compute_j, rel=1e-9)


def _phase(model, layout, b, p, o, decode):
    m = load_model(model)
    g = load_gpu("h100-sxm")
    sizer = decode_sizes if decode else prefill_sizes
    sizes, w = sizer(Workload(1, p, o), b)
    return evaluate_phase(m, g, layout, build_program(m, layout), sizes, w, decode=decode)


@pytest.mark.parametrize("decode", [False, True])
def test_an_array_of_configurations_equals_each_one(decode):
    b = np.array([1.0, 3.0, 64.0])[:, None]
    p = np.array([128, 2048, 6000])[None, :]
    lay = Layout(tp=2)
    many = _phase("llama3-8b", lay, b, p, np.full((1, 3), 100), decode)
    for i in range(3):
        for j in range(3):
            one = _phase("llama3-8b", lay, b[i, 0], int(p[0, j]), 100, decode)
            for f in ("latency_s", "energy_j", "compute_j", "memory_j", "static_j", "communication_j"):
                assert float(np.asarray(getattr(many, f))[i, j]) == pytest.approx(float(getattr(one, f)), rel=1e-12)


def test_sizes_that_vary_are_the_workload_dims():
    m = load_model("llama3-8b")
    sizes = {**{k: np.asarray(float(v)) for k, v in m.dims.items()}, "b": np.asarray(2.0), "t": np.asarray(8.0),
             "s": np.asarray(8.0), "d": np.asarray(float(m.dims["d"]) / 2)}
    assert variable_sizes(m, sizes) == frozenset({"b", "t", "s", "d"})


def test_the_plan_is_compiled_once():
    m = load_model("llama3-8b")
    g = load_gpu("h100-sxm")
    lay = Layout(tp=2)
    _, steps = build_program(m, lay).blocks[0]
    var = frozenset("bts")
    plan = compile_steps(g, m, steps, var)
    assert compile_steps(g, m, steps, var) is plan
    # weights and model dims fold into coefficients: only workload dims and sharded dims are keys
    assert {k[0] for k in plan.keys} <= set("bts") | {"#1"} | set(m.dims)
    assert all(k[2] for k in plan.keys if k[0] in m.dims and k[0] not in "bts")
    sizes = {**{k: np.asarray(float(v)) for k, v in m.dims.items()}, "b": np.asarray(2.0), "t": np.asarray(8.0),
             "s": np.asarray(8.0)}
    cost = plan.evaluate(sizes, degrees(m, lay), axis_sizes(lay))
    kernels, colls = cost.records()
    assert len(kernels) == len(plan.kernels) and [c.kind for c in colls] == ["all_reduce", "all_reduce"]
    assert float(cost.total("latency_s")) == pytest.approx(sum(float(k.cost.latency_s) for k in kernels), rel=1e-12)


@pytest.mark.parametrize("model,layout", [
    ("llama3-8b", Layout()), ("llama3-70b", Layout(tp=8, sp=True)), ("qwen3-30b-a3b", Layout(tp=2, ep=2, dp=2)),
    ("openai/gpt-oss-20b", Layout(tp=2)), ("llama3-8b", Layout(tp=4, pp=2)),
])
@pytest.mark.parametrize("decode", [False, True])
def test_all_ops_stacked_equals_ops_stacked_per_shape(model, layout, decode):
    """The two ways of stacking ops (one array for small shapes, per shape for grids) give the same costs, bit
    for bit (sums run in op and kernel order in both), so how a sweep is chunked never changes a row."""
    from energylens.cost.phase import axis_nodes
    from energylens.cost.plan_eval import evaluate_plan

    m = load_model(model)
    g = load_gpu("h100-sxm")
    sizer = decode_sizes if decode else prefill_sizes
    sizes, _ = sizer(Workload(1, 1500, 40), np.asarray(16.0))
    if "e" in m.dims:  # routed experts bound as MoE's binding does (fractional tokens per expert)
        sizes = {**sizes, "c": sizes["b"] * sizes["t"] * 8 / 128 * 1.37, "e:routed": np.asarray(61.5)}
    all_sizes = {**{k: np.asarray(float(v)) for k, v in m.dims.items()}, **sizes}
    prog = build_program(m, layout)
    for steps in (prog.pre, *(s for _, s in prog.blocks), prog.post):
        plan = compile_steps(g, m, steps, frozenset(sizes))
        a = evaluate_plan(plan, all_sizes, degrees(m, layout), axis_sizes(layout), axis_nodes(layout), flat=True)
        b = evaluate_plan(plan, all_sizes, degrees(m, layout), axis_sizes(layout), axis_nodes(layout), flat=False)
        for f in ("latency_s", "energy_j", "compute_s", "memory_s", "static_energy_j"):
            # StepsCost.total adds the stacked groups with np.sum, so its order follows the stacking: equal to
            # the last bit or two (section_totals, which the pipeline uses, runs in the plan's fixed order)
            np.testing.assert_allclose(*np.broadcast_arrays(a.total(f), b.total(f)), rtol=1e-14, atol=0)
        _close(a.collective_total("energy_j_per_gpu"), b.collective_total("energy_j_per_gpu"))
        for ra, rb in zip(a.records()[0], b.records()[0], strict=True):
            assert ra.name == rb.name
            for x, y in ((ra.flops, rb.flops), (ra.bytes, rb.bytes), (ra.cost.latency_s, rb.cost.latency_s),
                         (ra.cost.energy_j, rb.cost.energy_j)):
                _close(x, y)


def _close(x, y):
    np.testing.assert_array_equal(*np.broadcast_arrays(x, y))


def test_distinct_batches_give_the_same_totals():
    """Costing each distinct batch per micro-batch once (pipeline degrees x batches) spreads back bit for bit."""
    m = load_model("llama3-8b")
    g = load_gpu("h100-sxm")
    pp = np.array([1, 2, 4]).reshape(1, 3, 1, 1, 1, 1, 1)
    lay = Layout(tp=np.array([1, 2]).reshape(2, 1, 1, 1, 1, 1, 1), pp=pp)
    b = (2.0 ** np.arange(8)).reshape(1, 1, 1, 1, 8, 1, 1)
    p = np.array([128, 1000]).reshape(1, 1, 1, 1, 1, 2, 1)
    o = np.array([40, 300]).reshape(1, 1, 1, 1, 1, 1, 2)
    prog = build_program(m, lay)
    for decode in (False, True):
        sizes, w = (decode_sizes if decode else prefill_sizes)(Workload(1, p, o), b)
        a = evaluate_phase(m, g, lay, prog, dict(sizes), w, decode=decode)
        c = evaluate_phase(m, g, lay, prog, dict(sizes), w, decode=decode, distinct_batches=True)
        for f in ("latency_s", "energy_j", "compute_j", "memory_j", "static_j", "communication_j", "idle_wait_j",
                  "kernel_time_s", "collective_time_s", "p2p_time_s", "microbatches"):
            np.testing.assert_array_equal(getattr(a, f), getattr(c, f))
        for f in ("layer_time_s", "layer_energy_j", "section_time_s", "section_energy_j"):  # spread when read
            assert dict(getattr(a, f)).keys() == dict(getattr(c, f)).keys()
            for k, v in getattr(a, f).items():
                np.testing.assert_array_equal(v, getattr(c, f)[k])
        assert c.kernels == [] and len(a.kernels) > 0


def test_batch_classes_spread_back_as_take_along_axis():
    """Totals over distinct batches spread back over the grid: one block gather where the axes allow, else
    ``take_along_axis``; the same values either way."""
    from energylens.cost.phase import _BatchClasses

    rng = np.random.default_rng(3)
    index = rng.integers(0, 5, (1, 3, 2, 1, 8, 1, 1))  # the batch varies along pp, dp and batch
    classes = _BatchClasses(np.arange(5.0), index, 4)
    for shape in ((4, 1, 1, 1, 5, 6, 2), (1, 1, 1, 1, 5, 6, 1), (4, 1, 1, 3, 5, 1, 2), (5, 1, 1)):
        x = rng.random(shape)
        xs = x.reshape((1,) * (7 - x.ndim) + x.shape)
        want = np.take_along_axis(xs, index, axis=4)
        np.testing.assert_array_equal(classes.expand(x), want)
    flat = rng.random((4, 1, 1, 1, 1, 6, 2))  # does not depend on the batch: as it is
    assert classes.expand(flat) is flat


def test_collectives_by_group_size_as_the_grouped_call():
    """Layouts whose group size (and node count) vary along one axis are costed one group size at a time, along
    several axes (a sweep's pipeline hops over TP x PP) one distinct (group size, nodes) at a time: the one-layout
    path gives the grouped call's numbers bit for bit (groups of one and empty messages included)."""
    from energylens.cost.collective_layouts import by_group_size
    from energylens.cost.collectives import collective_cost

    g = load_gpu("h100-sxm")
    rng = np.random.default_rng(5)
    msg = np.concatenate([[0.0, 1.0, 700.0], 10.0 ** rng.uniform(2, 9, 21)]).reshape(2, 1, 1, 12)
    group = np.array([1, 2, 4, 8, 16]).reshape(1, 5, 1, 1)
    nodes = np.array([1, 1, 1, 1, 2]).reshape(1, 5, 1, 1)
    two_axes = np.array([1, 2]).reshape(1, 1, 2, 1) * np.ones((1, 5, 1, 1))  # varies along two axes
    two_nodes = np.where(np.arange(5).reshape(1, 5, 1, 1) * two_axes > 4, 2.0, 1.0)
    by_layout = msg * np.array([1.0, 0.5]).reshape(1, 1, 2, 1)  # messages that vary along a layout axis too
    for kind in ("all_reduce", "all_gather", "all_to_all", "send_recv"):
        for m, grp, nd in ((msg, group, nodes), (msg, two_axes, 1), (by_layout, two_axes, two_nodes)):
            want = collective_cost(kind, m, grp, g, nodes=nd)
            got = by_group_size(collective_cost, kind, m, grp, g, nd)
            for f in ("latency_s", "energy_j_per_gpu", "power_w"):
                np.testing.assert_array_equal(getattr(got, f), getattr(want, f))
