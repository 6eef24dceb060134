"""What a single ``predict`` keeps between calls (the GPU at an operating point, the checked program, GEMM
coefficients, compiled plans) never changes a result: every input that differs gives its own, correct answer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import energylens
from energylens.cost import dvfs, families
from energylens.errors import LayoutError
from energylens.hardware.profile import Quantity, load_gpu
from energylens.parallel.layout import Layout
from energylens.pipeline import _PROGRAMS, checked_program, prepare
from energylens.program import build_program

KW = dict(tp=2, batch=8, prompt_len=1024, output_len=64)


def _totals(p) -> dict:
    d = p.to_dict(ops=False)
    return {k: d[k] for k in ("prefill", "decode", "memory")}


def _fresh(*args, **kw):
    """The prediction with every cache emptied first (as in a new process)."""
    import importlib

    from energylens import pipeline, program

    predict_module = importlib.import_module("energylens.predict")
    from energylens.cost import collectives, phase_context, plan, subprogram

    for cache in (dvfs._AT_POINT, _PROGRAMS, families._GEMM_COEFFS, plan._CACHE, program._CACHE,
                  subprogram._CACHE, collectives._PARAMS, predict_module._PROVENANCE, phase_context.CONTEXTS,
                  pipeline._PRECISION, dvfs._TREES):
        cache.clear()
    return energylens.predict(*args, **kw)


def test_operating_point_is_one_gpu_object_per_limit_and_clock():
    g = load_gpu("h100-sxm")
    a = dvfs.with_operating_point(g, power_limit_w=400.0)
    assert dvfs.with_operating_point(g, power_limit_w=400.0) is a
    b = dvfs.with_operating_point(g, power_limit_w=500.0)
    assert b is not a and b.power_limit_w == 500.0 and a.power_limit_w == 400.0
    c = dvfs.with_operating_point(g, power_limit_w=400.0, sm_clock_mhz=1500.0)
    assert c is not a and c.operating.sm_clock_mhz == 1500.0
    # another GPU object (a copied profile with other numbers) is never served the first one's result
    other = g.with_quantities({"idle_power": Quantity(g.idle_power_w + 10.0, "W", "user", "test")})
    d = dvfs.with_operating_point(other, power_limit_w=400.0)
    assert d is not a and d.idle_power_w == other.idle_power_w
    with pytest.raises(energylens.errors.WorkloadError):
        dvfs.with_operating_point(g, power_limit_w=10.0)  # an error is raised each time, never cached
    with pytest.raises(energylens.errors.WorkloadError):
        dvfs.with_operating_point(g, power_limit_w=10.0)


@pytest.mark.parametrize("change", [
    dict(power_limit_w=400.0), dict(power_limit_w=500.0), dict(sm_clock_mhz=1400.0), dict(gpu="a100-sxm-80gb"),
    dict(weight_dtype="fp8"), dict(kv_cache_dtype="fp8"), dict(tp=4), dict(tp=2, pp=2), dict(dp=2),
    dict(sp=True), dict(gpus_per_node=1),
])
def test_each_input_gives_its_own_result_whatever_was_predicted_before(change):
    base = _totals(_fresh("llama3.1-8b", "h100-sxm", **KW))
    kw = {**KW, **change}
    gpu = kw.pop("gpu", "h100-sxm")
    warm = _totals(energylens.predict("llama3.1-8b", gpu, **kw))  # after the base call: caches warm
    assert warm == _totals(_fresh("llama3.1-8b", gpu, **kw))
    assert warm != base
    assert _totals(energylens.predict("llama3.1-8b", "h100-sxm", **KW)) == base  # and back


def test_routing_and_model_objects_are_not_confused():
    kw = dict(dp=4, ep=4, batch=8, prompt_len=128, output_len=4)
    uniform = _totals(_fresh("llama4-scout", "h100-sxm", **kw))
    skewed = _totals(energylens.predict("llama4-scout", "h100-sxm", routing="zipf:1.2", **kw))
    assert skewed != uniform
    assert skewed == _totals(_fresh("llama4-scout", "h100-sxm", routing="zipf:1.2", **kw))
    # two model objects of one checkpoint at different weight formats: each its own program and plan
    m8, g = prepare("llama3.1-8b", "h100-sxm", "fp8")
    m16, _ = prepare("llama3.1-8b", "h100-sxm", None)
    a = _totals(energylens.predict(m8, g, **KW))
    b = _totals(energylens.predict(m16, g, **KW))
    assert a != b and b == _totals(_fresh("llama3.1-8b", "h100-sxm", **KW))


def test_checked_program_still_checks_every_new_layout():
    m, _ = prepare("llama3.1-8b", "h100-sxm", None)
    checked_program(m, Layout(tp=2))
    with pytest.raises(LayoutError):
        checked_program(m, Layout(tp=3))  # 32 heads: not divisible
    assert checked_program(m, Layout(tp=2)) is checked_program(m, Layout(tp=2))
    for lay in (Layout(tp=4), Layout(tp=2, sp=True), Layout(pp=2), Layout(tp=1)):
        assert checked_program(m, lay) is build_program(m, lay)  # the program of that layout (built once)
    with pytest.raises(LayoutError):
        checked_program(m, Layout(tp=3))


def test_gemm_coefficients_follow_the_gpu_object():
    g = load_gpu("h100-sxm")
    a = families.gemm_coeffs(g, "bf16")
    other = g.with_quantities({"kernel_overhead": Quantity(g.kernel_overhead_s * 3.0, "s", "user", "test")})
    assert families.gemm_coeffs(g, "bf16") is a
    assert families.gemm_coeffs(other, "bf16") == families.profile_gemm_coeffs(other, "bf16")
    assert families.gemm_coeffs(g, "fp8") == families.profile_gemm_coeffs(g, "fp8")


@settings(max_examples=12, deadline=None)
@given(tp=st.sampled_from([1, 2, 4, 8]), pp=st.sampled_from([1, 2]), batch=st.integers(1, 256),
       prompt=st.integers(1, 8192), output=st.integers(0, 600), limit=st.sampled_from([None, 350.0, 600.0]))
def test_totals_without_detail_are_the_detailed_totals(tp, pp, batch, prompt, output, limit):
    kw = dict(tp=tp, pp=pp, batch=batch, prompt_len=prompt, output_len=output, power_limit_w=limit)
    full = energylens.predict("llama3.1-70b", "h100-sxm", **kw)
    fast = energylens.predict("llama3.1-70b", "h100-sxm", detail=False, **kw)
    assert _totals(fast) == _totals(full)
    assert fast.prefill.per_gpu == full.prefill.per_gpu and fast.decode.per_gpu == full.decode.per_gpu
    assert fast.prefill.ops == () and len(full.prefill.ops) > 0
    # the detailed rows add up to the phase's kernel and collective energy
    for ph in (full.prefill, full.decode):
        rows = sum(o.energy_j for o in ph.ops) + sum(c.energy_j for c in ph.collectives)
        assert math.isclose(rows, ph.energy_j - ph.breakdown.idle_wait_j, rel_tol=1e-9, abs_tol=1e-12)


def test_provenance_is_a_fresh_copy_per_prediction_and_follows_the_objects():
    from energylens.predict import _provenance, provenance

    m16, g = prepare("llama3.1-8b", "h100-sxm", None)
    m8, _ = prepare("llama3.1-8b", "h100-sxm", "fp8")
    a = provenance(g, m16)
    a["idle_power"]["value"] = -1.0  # a caller editing its copy changes no other prediction
    assert provenance(g, m16) == _provenance(g, m16) and provenance(g, m16)["idle_power"]["value"] > 0
    assert provenance(g, m8) == _provenance(g, m8) != _provenance(g, m16)  # fp8 GEMM coefficients listed
    lowered = dvfs.with_operating_point(g, power_limit_w=400.0)
    assert provenance(lowered, m16)["power_limit"]["value"] == 400.0


def _everything(p) -> dict:
    return p.to_dict()


@settings(max_examples=25, deadline=None)
@given(model=st.sampled_from(["llama3.1-70b", "llama3.1-8b", "qwen3-30b-a3b"]), tp=st.sampled_from([1, 2, 4, 8]),
       pp=st.sampled_from([1, 2, 4]), dp=st.sampled_from([1, 2]), sp=st.booleans(), gpn=st.sampled_from([2, 8]),
       batch=st.integers(1, 300), prompt=st.integers(1, 8192), output=st.integers(0, 700),
       limit=st.sampled_from([None, 350.0]), detail=st.booleans())
def test_warm_prediction_equals_a_fresh_one_over_random_layouts_and_workloads(model, tp, pp, dp, sp, gpn, batch,
                                                                             prompt, output, limit, detail):
    """The per-layout contexts, programs and plans a warm ``predict`` reuses (``cost.phase_context``) give exactly
    what a fresh process computes, with and without per-op detail, after other layouts and workloads."""
    batch = batch * dp
    kw = dict(tp=tp, pp=pp, dp=dp, sp=sp, gpus_per_node=gpn, batch=batch, prompt_len=prompt, output_len=output,
              power_limit_w=limit, detail=detail)
    try:
        energylens.predict(model, "h100-sxm", **{**kw, "batch": dp, "prompt_len": 17, "output_len": 3})
        energylens.predict(model, "h100-sxm", **{**kw, "tp": 1, "pp": 1, "dp": 1, "sp": False})
        warm = _everything(energylens.predict(model, "h100-sxm", **kw))
    except energylens.errors.EnergyLensError as e:  # a layout the model does not divide: the same error fresh
        with pytest.raises(type(e)):
            _fresh(model, "h100-sxm", **kw)
        return
    assert warm == _everything(_fresh(model, "h100-sxm", **kw))


def test_phase_contexts_are_bounded_and_follow_every_layout_field():
    from energylens.cost import phase_context

    m, g = prepare("llama3.1-8b", "h100-sxm", None)
    phase_context.CONTEXTS.clear()
    seen = set()
    for lay in (Layout(tp=2), Layout(tp=2, sp=True), Layout(tp=2, gpus_per_node=1), Layout(tp=2, pp=2)):
        ctx = phase_context.phase_context(m, g, lay, checked_program(m, lay), True)
        assert phase_context.phase_context(m, g, lay, checked_program(m, lay), True) is ctx
        seen.add(id(ctx))
    assert len(seen) == 4 and len(phase_context.CONTEXTS) == 4
    for n in range(1, phase_context.MAX_CONTEXTS + 5):  # each layout its own entry, never more than the bound
        lay = Layout(tp=2, gpus_per_node=n)
        phase_context.phase_context(m, g, lay, checked_program(m, lay), True)
        assert len(phase_context.CONTEXTS) <= phase_context.MAX_CONTEXTS
    lay = Layout(tp=2)
    # what a context holds is shared between evaluations: read-only
    ctx = phase_context.phase_context(m, g, lay, checked_program(m, lay), True)
    with pytest.raises(ValueError):
        ctx.axes["tp"][...] = 3.0


@settings(max_examples=15, deadline=None)
@given(model=st.sampled_from(["llama3.1-8b", "qwen3-30b-a3b"]), tp=st.sampled_from([1, 2, 4]),
       pp=st.sampled_from([1, 2]), batch=st.integers(1, 64), prompt=st.integers(1, 4096), output=st.integers(0, 40))
def test_per_op_rows_from_the_stacked_sums_equal_the_rows_of_the_records(model, tp, pp, batch, prompt, output):
    """``predict``'s per-op and per-collective rows come from the phases' stacked cost arrays summed at once
    (``kernel_sums``, ``collective_sums``); the same rows built record by record agree."""
    from dataclasses import replace

    from energylens.assemble import _rows
    from energylens.pipeline import bind, evaluate
    from energylens.specs.execution import Execution
    from energylens.specs.system import System

    m, g = prepare(model, "h100-sxm", None)
    ex = Execution(tp=tp, pp=pp, batch=batch, prompt_len=prompt, output_len=output)
    try:
        ev = evaluate(bind(m, ex, System.for_execution(g, ex)))
    except energylens.errors.LayoutError:
        return
    for pa in (ev.prefill, ev.decode):
        assert pa.kernel_sums is not None and pa.collective_sums is not None
        fast = _rows(pa, tp, 1, pp)
        slow = _rows(replace(pa, kernel_sums=None, collective_sums=None, kernel_table=None), tp, 1, pp)
        assert len(fast[0]) == len(slow[0]) and len(fast[1]) == len(slow[1])
        for a, b in zip(fast[0] + fast[1], slow[0] + slow[1], strict=True):
            for f in a.__dataclass_fields__:
                x, y = getattr(a, f), getattr(b, f)
                if isinstance(x, float):
                    assert math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-300), (a.name, f, x, y)
                else:
                    assert x == y, (a.name, f, x, y)


def test_rows_read_late_are_the_rows_read_at_once():
    """Per-op, per-collective and per-GPU rows are made when first read, from the prediction's own cost
    arrays: read after other predictions (other layouts, workloads, an MoE model) they are the rows a
    prediction read at once gives; pickled and copied they are plain tuples."""
    import copy
    import pickle

    from energylens.results import Rows

    cases = [("llama3.1-70b", dict(tp=tp, pp=pp, batch=b, prompt_len=p, output_len=16))
             for tp, pp, b, p in ((1, 1, 1, 512), (8, 2, 64, 4096), (4, 1, 8, 2048))]
    cases.append(("qwen3-30b-a3b", dict(tp=2, ep=2, batch=8, prompt_len=1024, output_len=8)))
    late = [energylens.predict(m, "h100-sxm", **kw) for m, kw in cases]
    assert isinstance(late[0].prefill.ops, Rows)
    for (m, kw), p in zip(cases, late, strict=True):
        now = energylens.predict(m, "h100-sxm", **kw)
        assert now.to_dict() == p.to_dict()
        for ph in (p.prefill, p.decode):
            assert isinstance(pickle.loads(pickle.dumps(ph.ops)), tuple)
            assert copy.deepcopy(ph.collectives) == tuple(ph.collectives)
            assert ph.per_gpu == tuple(ph.per_gpu) and hash(ph.per_gpu) == hash(tuple(ph.per_gpu))
        assert pickle.loads(pickle.dumps(p)).to_dict() == now.to_dict()
    # a prediction without detail keeps no cost arrays for its per-GPU rows: only floats and the specs
    fast = energylens.predict("llama3.1-70b", "h100-sxm", detail=False, tp=2, pp=2, batch=8)
    held = fast.decode.per_gpu._make.args
    assert not any(isinstance(a, np.ndarray) or hasattr(a, "kernel_table") for a in held)
    assert fast.decode.per_gpu == energylens.predict("llama3.1-70b", "h100-sxm", tp=2, pp=2, batch=8).decode.per_gpu
