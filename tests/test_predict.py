"""Issue 3 acceptance tests: hand counts, conservation, monotonicity, fusion, errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import energylens
from energylens.errors import EnergyLensError, LayoutError, UnknownNameError, WorkloadError
from energylens.hardware.profile import DTYPE_BYTES
from energylens.models import load_model
from energylens.models.dense import BuildOptions, build_dense
from energylens.models.registry import resolve


def einsum_flops(phase):
    return sum(o.flops for o in phase.ops)


def test_llama3_8b_prefill_flops_hand_count():
    m = load_model("llama3-8b")
    P = 2048
    p = energylens.predict(m, "h100-sxm", batch=1, prompt_len=P, output_len=1)
    d, v, L = m.dims["d"], m.dims["v"], m.n_layers
    non_embedding = m.param_count() - 2 * v * d  # input embedding and LM head
    q_width = m.dims["g"] * m.dims["r"] * m.dims["k"]
    attention = L * 4 * q_width * P * (P + 1) / 2  # QK^T and PV, causal: (P+1)/2 keys per query on average
    head = 2 * d * v  # logits of the last token only
    expected = 2 * non_embedding * P + attention + head
    assert einsum_flops(p.prefill) == pytest.approx(expected, rel=0.005)


def test_decode_step_bytes_are_weights_plus_kv_cache():
    m = load_model("llama3-8b")
    P = 4096
    p = energylens.predict(m, "h100-sxm", batch=1, prompt_len=P, output_len=1)
    weights = (m.param_count() - m.dims["v"] * m.dims["d"]) * DTYPE_BYTES["bf16"]  # the embedding is only indexed
    kv = energylens.predict.__globals__["kv_bytes_per_token"](m) * (P + 1)
    total = sum(o.bytes for o in p.decode.ops)
    assert total == pytest.approx(weights + kv, rel=0.02)
    assert total >= weights + kv


def _check_conservation(phase):
    ops = sum(o.energy_j for o in phase.ops)
    colls = sum(c.energy_j for c in phase.collectives)
    assert ops + colls + phase.breakdown.idle_wait_j == pytest.approx(phase.energy_j, rel=1e-9)
    assert phase.breakdown.total_j == pytest.approx(phase.energy_j, rel=1e-9)
    assert sum(g.energy_j for g in phase.per_gpu) == pytest.approx(phase.energy_j, rel=1e-9)
    assert sum(o.compute_energy_j + o.memory_energy_j + o.static_energy_j for o in phase.ops) == pytest.approx(ops)


@pytest.mark.parametrize("kw", [dict(), dict(model="llama3-70b", tp=8), dict(model="llama3-70b", tp=4, pp=2),
                                dict(model="qwen3-8b", batch=8, dp=2), dict(model="llama3-70b", tp=8, sp=True)])
def test_energy_conservation(kw):
    p = energylens.predict(**{"batch": 2, "prompt_len": 512, "output_len": 64, **kw})
    for phase in (p.prefill, p.decode):
        _check_conservation(phase)
        assert phase.energy_j > 0 and np.isfinite(phase.energy_j)
        assert phase.avg_power_w <= p.layout["num_gpus"] * energylens.load_gpu(p.gpu).power_limit_w * (1 + 1e-9)
        assert phase.avg_power_w >= p.layout["num_gpus"] * energylens.load_gpu(p.gpu).idle_power_w * (1 - 1e-9)


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 64), prompt=st.integers(1, 8192), out=st.integers(1, 600),
       db=st.integers(0, 64), dp_=st.integers(0, 4096), do=st.integers(0, 300))
def test_more_tokens_never_cost_less(batch, prompt, out, db, dp_, do):
    a = energylens.predict("llama3.1-8b", "h100-sxm", batch=batch, prompt_len=prompt, output_len=out)
    b = energylens.predict("llama3.1-8b", "h100-sxm", batch=batch + db, prompt_len=prompt + dp_, output_len=out + do)
    tol = 1 + 1e-9
    assert b.prefill.energy_j * tol >= a.prefill.energy_j
    assert b.prefill.latency_s * tol >= a.prefill.latency_s
    assert b.decode.energy_j * tol >= a.decode.energy_j
    assert b.total_energy_j * tol >= a.total_energy_j


def test_fused_attention_moves_fewer_bytes_than_unfused():
    cfg, short, hf = resolve("llama3-8b")
    fused = build_dense(cfg, short, hf, BuildOptions(flash_attention=True))
    unfused = build_dense(cfg, short, hf, BuildOptions(flash_attention=False))
    kw = dict(batch=1, prompt_len=4096, output_len=1)
    pf = energylens.predict(fused, "h100-sxm", **kw).prefill
    pu = energylens.predict(unfused, "h100-sxm", **kw).prefill
    attn_f = sum(o.bytes for o in pf.ops if ".qk" in o.name or "flash" in o.name or "softmax" in o.name or ".pv" in o.name)
    attn_u = sum(o.bytes for o in pu.ops if ".qk" in o.name or "flash" in o.name or "softmax" in o.name or ".pv" in o.name)
    assert attn_f < attn_u / 10
    assert pf.latency_s < pu.latency_s and pf.energy_j < pu.energy_j
    # one launch for the fused group vs three
    assert sum(1 for o in pf.ops if "flash" in o.name) == 1


def test_fp8_weights_halve_decode_weight_bytes():
    a = energylens.predict("llama3-8b", "h100-sxm", batch=1, prompt_len=128, output_len=8)
    b = energylens.predict("llama3-8b", "h100-sxm", batch=1, prompt_len=128, output_len=8, dtype="fp8")
    wa = next(o for o in a.decode.ops if o.name.endswith("gate_up")).bytes
    wb = next(o for o in b.decode.ops if o.name.endswith("gate_up")).bytes
    assert wb == pytest.approx(wa / 2, rel=0.01)
    assert b.decode.energy_j < a.decode.energy_j


def test_memory_capacity_is_reported():
    p = energylens.predict("llama3-70b", "h100-sxm", batch=1, prompt_len=2048, output_len=16)
    assert not p.memory.fits and p.warnings and "does not fit" in p.warnings[0]
    assert p.memory.weights_bytes == pytest.approx(70.55e9 * 2, rel=0.01)
    q = energylens.predict("llama3-70b", "h100-sxm", tp=4, batch=1, prompt_len=2048, output_len=16)
    assert q.memory.fits and not q.warnings


@pytest.mark.parametrize("kw,exc,field", [
    (dict(gpu="h900"), UnknownNameError, "gpu"),
    (dict(model="gpt-17"), UnknownNameError, "model"),
    (dict(batch=0), WorkloadError, "batch"),
    (dict(prompt_len=-3), WorkloadError, "prompt_len"),
    (dict(output_len=-1), WorkloadError, "output_len"),
    (dict(dtype="int3"), WorkloadError, "dtype"),
    (dict(model="llama3-70b", tp=3), LayoutError, "tp"),
    (dict(model="llama3-8b", pp=5), LayoutError, "pp"),
    (dict(batch=3, dp=2), LayoutError, "dp"),
    (dict(gpu="a100-sxm-80gb", activation_dtype="fp8"), EnergyLensError, "activation dtype"),
    (dict(prompt_len=8000, output_len=500), WorkloadError, "prompt_len + output_len"),
])
def test_bad_input_errors_name_the_field(kw, exc, field):
    with pytest.raises(exc) as e:
        energylens.predict(**kw)
    assert str(e.value).startswith(field)


def test_no_nan_and_json_keys():
    d = energylens.predict("llama3-8b", "h100-sxm", batch=64, prompt_len=2048, output_len=256).to_dict()
    for phase in ("prefill", "decode"):
        for key in ("energy_j", "latency_s", "avg_power_w"):
            assert np.isfinite(d[phase][key]) and d[phase][key] > 0
    assert d["decode"]["energy_per_token_j"] > 0
    assert set(d["total"]) >= {"energy_j", "latency_s"}
    assert {"name", "kind", "flops", "bytes", "latency_s", "energy_j", "bound"} <= set(d["ops"][0])


def test_flash_attention_scores_are_not_counted_as_memory():
    # gpt-oss-120b (MXFP4 experts) serves from one 80 GB H100; the scores of fused attention never hit HBM
    p = energylens.predict("gpt-oss-120b", "h100-sxm", batch=64, prompt_len=1024, output_len=256)
    assert p.memory.workspace_bytes < 4e9 and p.memory.fits


def test_prediction_says_how_sure_it_is():
    p = energylens.predict("llama3-8b", "h100-sxm", batch=16, prompt_len=1024, output_len=1024)
    iv = p.to_dict()["interval"]
    for key, value in (("total_energy_j", p.total_energy_j), ("total_latency_s", p.total_latency_s)):
        assert iv[key]["level"] == 0.8 and iv[key]["low"] < iv[key]["high"]
        assert iv[key]["low"] >= value * 0.9  # kernels alone are the low edge of what a serving stack measures
        assert "LLM-Inference-Bench" in iv[key]["basis"]
    from energylens.intervals import _static_batch_ratios

    fig = _static_batch_ratios()["figures"]["energy_j"]
    inside = [fig["q10"] <= r <= fig["q90"] for r in fig["ratios"]]
    assert fig["n"] == len(fig["ratios"]) >= 8 and sum(inside) >= 0.6 * len(inside)


def test_prediction_carries_the_provenance_of_its_coefficients():
    d = energylens.predict("llama3-8b", "h100-sxm", dtype="fp8").to_dict()["provenance"]
    assert d["gpu_profile"].endswith("h100-sxm.yaml")
    for name in ("peak_flops_fp8", "energy_per_flop_fp8", "energy_per_byte_hbm", "idle_power", "busy_power"):
        assert d[name]["kind"] in ("spec", "measured", "derived", "fitted", "assumed") and d[name]["source"]
    assert d["peak_flops_fp8"]["kind"] == "spec"
    # the kernel-family coefficients it used, fitted on NVIDIA's kernel tables (python tools/calibrate_tables.py)
    for name in ("gemm_overhead_fp8", "decode_attn_overhead", "prefill_attn_kv_traffic_bf16"):
        assert d[name]["kind"] == "fitted" and "aiconfigurator" in d[name]["source"]
    a100 = energylens.predict("llama3-8b", "a100-sxm-80gb").to_dict()["provenance"]
    assert "decode_attn_overhead" not in a100  # no table: the spec-derived defaults of cost/families.py


def test_input_len_is_an_alias_of_prompt_len():
    a = energylens.predict("llama3-8b", "h100-sxm", prompt_len=300, output_len=8)
    b = energylens.predict("llama3-8b", "h100-sxm", input_len=300, output_len=8)
    assert a.prefill.energy_j == b.prefill.energy_j and a.workload == b.workload
    with pytest.raises(WorkloadError):
        energylens.predict("llama3-8b", "h100-sxm", prompt_len=300, input_len=400)
