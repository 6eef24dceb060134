"""The fitted default MoE routing skew of serving predictions (issue 16): used when no routing is
given, never over an explicit one, inert for dense models, and validated when loaded."""

from dataclasses import replace

import pytest

import energylens.serving_coefficients as sc
from energylens.errors import SpecError
from energylens.models.registry import load_model
from energylens.moe.spec import Routing
from energylens.serving import (
    ServingCoefficients,
    bias_balanced,
    load_coefficient_table,
    serve,
    serving_routing,
)
from energylens.serving_load import serve_load

MOE = dict(model="qwen3-30b-a3b", gpu="h100-sxm", tp=2, batch=32, input_len=400, output_len=2000)


def test_serving_routing_rule():
    assert ServingCoefficients().routing() is None  # 0: uniform
    assert ServingCoefficients(routing_skew=0.5).routing() == Routing.zipf(0.5)
    c = ServingCoefficients(routing_skew=0.5)
    assert serving_routing(None, c) == Routing.zipf(0.5)
    assert serving_routing("uniform", c) == "uniform"  # an explicit routing always wins
    assert serving_routing("dirichlet:0.3", c) == "dirichlet:0.3"


def test_shipped_skew_is_the_default_of_serve_and_serve_load():
    skew = load_coefficient_table().pooled.routing_skew
    assert 0.0 < skew <= 2.0
    assert all(c.routing_skew == skew for c in load_coefficient_table().platforms.values())  # shared
    default = serve(**MOE)
    named = serve(**MOE, routing=f"zipf:{skew:g}")
    uniform = serve(**MOE, routing="uniform")
    assert default.decode_step_latency_s == named.decode_step_latency_s
    assert any(f"zipf:{skew:g}" in n and "routing_skew" in n for n in default.notes)  # says which routing
    assert not any("routing_skew" in n for n in named.notes + uniform.notes)
    assert default.energy_per_output_token_j == named.energy_per_output_token_j
    # a skewed router hits fewer experts in a decode step: fewer expert weights read than uniform
    assert default.decode_step_latency_s < uniform.decode_step_latency_s
    assert default.energy_per_output_token_j < uniform.energy_per_output_token_j
    load = dict(model=MOE["model"], gpu=MOE["gpu"], tp=2, concurrency=32, input_len=400, output_len=500)
    assert serve_load(**load).tpot_s == serve_load(**load, routing=f"zipf:{skew:g}").tpot_s
    assert serve_load(**load).tpot_s < serve_load(**load, routing="uniform").tpot_s


def test_bias_balanced_routers_route_uniformly():
    """A router with a learned per-expert load-balancing bias (config ``topk_method: noaux_tc`` or
    ``use_routing_bias: true``) routes uniformly in serving; the fitted skew applies to the other MoE routers."""
    flags = {mid: bias_balanced(load_model(mid, hub=False)) for mid in (
        "deepseek-ai/DeepSeek-V3.1", "deepseek-ai/DeepSeek-R1-0528", "moonshotai/Kimi-K2-Instruct",
        "MiniMaxAI/MiniMax-M2.5", "openai/gpt-oss-120b", "meta-llama/Llama-4-Scout-17B-16E-Instruct",
        "qwen3-30b-a3b", "qwen3-8b")}
    assert flags == {"deepseek-ai/DeepSeek-V3.1": True, "deepseek-ai/DeepSeek-R1-0528": True,
                     "moonshotai/Kimi-K2-Instruct": True, "MiniMaxAI/MiniMax-M2.5": True, "openai/gpt-oss-120b": False,
                     "meta-llama/Llama-4-Scout-17B-16E-Instruct": False, "qwen3-30b-a3b": False, "qwen3-8b": False}
    c = ServingCoefficients(routing_skew=1.2)
    ds = load_model("deepseek-ai/DeepSeek-V3.1", hub=False)
    assert serving_routing(None, c, ds) is None  # uniform
    assert serving_routing("zipf:0.7", c, ds) == "zipf:0.7"  # an explicit routing still wins
    assert serving_routing(None, c, load_model("openai/gpt-oss-20b", hub=False)) == Routing.zipf(1.2)
    assert serving_routing(None, c) == Routing.zipf(1.2)  # no model given: the fitted default
    kw = dict(model="deepseek-ai/DeepSeek-V3.1", gpu="b200", num_gpus=8, ep=8, batch=64, input_len=250,
              output_len=9000)
    default, uniform, skewed = serve(**kw), serve(**kw, routing="uniform"), serve(**kw, routing="zipf:1.2")
    assert default.decode_step_latency_s == uniform.decode_step_latency_s
    assert default.energy_per_output_token_j == uniform.energy_per_output_token_j
    assert default.decode_step_latency_s > skewed.decode_step_latency_s  # more distinct experts read than zipf
    assert any("uniform" in n and "noaux_tc" in n for n in default.notes)
    assert not any("routing_skew of serving_coefficients" in n for n in default.notes)
    load = dict(model=kw["model"], gpu="b200", num_gpus=8, ep=8, concurrency=64, input_len=250, output_len=2000)
    assert serve_load(**load).tpot_s == serve_load(**load, routing="uniform").tpot_s


def test_skew_is_inert_for_dense_models():
    kw = dict(batch=16, input_len=100, output_len=600)
    a = serve("qwen3-8b", "h100-sxm", **kw)
    b = serve("qwen3-8b", "h100-sxm", **kw,
              coefficients=replace(load_coefficient_table().for_gpu("h100-sxm"), routing_skew=1.5))
    assert a.decode_step_latency_s == b.decode_step_latency_s


def test_bad_skew_in_the_file_is_a_clear_error(tmp_path, monkeypatch):
    bad = tmp_path / "serving_coefficients.yaml"
    monkeypatch.setattr(sc, "data_file", lambda name: bad)
    try:
        for value in ("-0.5", ".nan", "fast"):
            bad.write_text(f"coefficients:\n  routing_skew: {{value: {value}}}\n")
            sc.load_coefficient_table.cache_clear()
            with pytest.raises(SpecError, match="coefficients.routing_skew"):
                sc.load_coefficient_table()
    finally:
        monkeypatch.undo()
        sc.load_coefficient_table.cache_clear()
