"""``Execution`` and ``System``: validated on construction (errors name the field), and
``predict(model, execution, system)`` is the core call the keyword form goes through."""

import math

import pytest

import energylens
from energylens.errors import LayoutError, SpecError, UnknownNameError, WorkloadError
from energylens.overlap.rules import OverlapPlan
from energylens.parallel.layout import Layout
from energylens.specs import Execution, System


@pytest.mark.parametrize("kw,error,field", [
    (dict(tp=0), LayoutError, "tp"),
    (dict(pp=1.5), LayoutError, "pp"),
    (dict(ep=True), LayoutError, "ep"),
    (dict(sp="yes"), LayoutError, "sp"),
    (dict(gpus_per_node=0), LayoutError, "gpus_per_node"),
    (dict(axes={"f": "pp"}), LayoutError, "axes['f']"),
    (dict(batch=0), WorkloadError, "batch"),
    (dict(prompt_len="long"), WorkloadError, "prompt_len"),
    (dict(output_len=-1), WorkloadError, "output_len"),
    (dict(max_batched_tokens=0), WorkloadError, "max_batched_tokens"),
    (dict(dp=3, batch=4), LayoutError, "dp"),
    (dict(overlap=["*"]), SpecError, "overlap"),
    (dict(power_limit_w=-5.0), SpecError, "power_limit_w"),
    (dict(routing="zipf:-1"), None, "routing"),
])
def test_execution_is_checked_on_construction(kw, error, field):
    with pytest.raises(error or energylens.EnergyLensError) as exc:
        Execution(**kw)
    assert exc.value.field.startswith(field)


@pytest.mark.parametrize("kw,error,field", [
    (dict(gpu="h9000"), UnknownNameError, "gpu"),
    (dict(nodes=0), LayoutError, "nodes"),
    (dict(gpus_per_node=2.0), LayoutError, "gpus_per_node"),
    (dict(link="carrier-pigeon"), UnknownNameError, "link"),
])
def test_system_is_checked_on_construction(kw, error, field):
    with pytest.raises(error) as exc:
        System(**kw)
    assert field in exc.value.field


def test_execution_must_fit_the_system():
    with pytest.raises(LayoutError, match="at most 8 GPUs"):
        energylens.predict("llama3-70b", Execution(tp=8, pp=2), System("h100-sxm", gpus_per_node=8, nodes=1))
    with pytest.raises(LayoutError, match="gpus_per_node"):
        energylens.predict("llama3-8b", Execution(gpus_per_node=16), System("h100-sxm"))
    with pytest.raises(SpecError, match="power_limit_w"):
        energylens.predict("llama3-8b", Execution(power_limit_w=2000.0), System("h100-sxm"))


@pytest.mark.parametrize("model,kw", [
    ("llama3-70b", dict(tp=4, pp=2, batch=8, prompt_len=1024, output_len=64)),
    ("qwen3-30b-a3b", dict(tp=2, ep=2, batch=8, prompt_len=512, output_len=32, routing="zipf:1.2")),
])
def test_core_call_equals_keyword_form(model, kw):
    ref = energylens.predict(model, "h100-sxm", **kw)
    routing = kw.pop("routing", None)
    lay = {k: kw.pop(k) for k in ("tp", "pp", "ep") if k in kw}
    ex = Execution(**lay, **kw, routing=routing)
    got = energylens.predict(model, ex, System("h100-sxm", gpus_per_node=8, nodes=1))
    assert got.to_dict() == ref.to_dict()


def test_from_layout_keeps_custom_axes():
    ex = Execution.from_layout(Layout(tp=2, axes={"g": "tp", "r": "tp"}), batch=2)
    assert ex.axes == {"g": "tp", "r": "tp"} and ex.layout(8).axes == {"g": "tp", "r": "tp"}
    with pytest.raises(LayoutError, match="scalar"):
        import numpy as np

        Execution.from_layout(Layout(tp=np.array([1, 2])))


def test_keywords_next_to_an_execution_are_refused():
    with pytest.raises(SpecError, match="batch"):
        energylens.predict("llama3-8b", Execution(), System(), batch=4)
    with pytest.raises(SpecError, match="system"):
        energylens.predict("llama3-8b", Execution())
    with pytest.raises(SpecError, match="execution"):
        energylens.predict("llama3-8b", "h100-sxm", System())


def test_power_limit_slows_compute_bound_prefill():
    kw = dict(batch=8, prompt_len=2048, output_len=1)
    free = energylens.predict("llama3-8b", Execution(**kw), System("h100-sxm"))
    capped = energylens.predict("llama3-8b", Execution(**kw, power_limit_w=300.0), System("h100-sxm"))
    assert capped.prefill.latency_s > free.prefill.latency_s * 1.2
    assert capped.extra["provenance"]["power_limit"]["value"] == 300.0
    assert "Execution.power_limit_w" in capped.extra["provenance"]["power_limit"]["source"]
    assert any(o.power_capped for o in capped.prefill.ops)


def test_max_batched_tokens_bounds_live_activations():
    kw = dict(batch=4, prompt_len=8192, output_len=1)  # 8193 tokens: beyond Llama-3's 8192, within Llama-3.1's
    base = energylens.predict("llama3.1-8b", Execution(**kw), System("h100-sxm"))
    small = energylens.predict("llama3.1-8b", Execution(**kw, max_batched_tokens=2048), System("h100-sxm"))
    default = energylens.predict("llama3.1-8b", Execution(**kw, max_batched_tokens=8192), System("h100-sxm"))
    assert default.memory.workspace_bytes == base.memory.workspace_bytes
    act = base.memory.workspace_bytes - 2 * 2**30  # runtime overhead aside, workspace = 2 x live activations
    assert math.isclose(small.memory.workspace_bytes - 2 * 2**30, act / 4, rel_tol=1e-12)
    assert small.total_energy_j == base.total_energy_j  # memory only: the kernels do not change


def test_execution_overlap_replaces_the_models_rules():
    plan = OverlapPlan("*:all_reduce", chunks=4, comm_sms=16)
    kw = dict(tp=4, batch=2, prompt_len=4096, output_len=2)
    seq = energylens.predict("llama3-70b", Execution(**kw), System())
    ov = energylens.predict("llama3-70b", Execution(**kw, overlap=(plan,)), System())
    off = energylens.predict("llama3-70b", Execution(**kw, overlap=()), System())
    assert "overlap" not in seq.extra and off.to_dict() == seq.to_dict()
    assert ov.prefill.latency_s < seq.prefill.latency_s
    assert ov.extra["overlap"]["prefill"]["sequential_latency_s"] == seq.prefill.latency_s


def test_system_link_and_nodes():
    s = System("h100-sxm", gpus_per_node=4, nodes=2, link="pcie5")
    assert s.gpu.link == "pcie5" and s.num_gpus == 8
    assert s.to_dict() == {"gpu": "h100-sxm", "link": "pcie5", "gpus_per_node": 4, "nodes": 2}
    assert System.for_execution("h100-sxm", Execution(tp=16), 8).nodes == 2
