"""MoE builders from config.json: shapes, parameter counts, layer patterns, shared experts, MLA, MXFP4."""

from __future__ import annotations

import json

import pytest

from energylens.errors import LayoutError
from energylens.graph.ops import Role
from energylens.hardware.profile import DTYPE_BYTES
from energylens.models import load_model
from energylens.models.moe import MOE_LEGEND
from energylens.parallel.layout import Layout, check_layout


@pytest.mark.parametrize("name,total_b,tol", [
    # hand-computed totals in energylens/data/models/SOURCES.md (embeddings and head included)
    ("qwen3-30b-a3b", 30.53, 0.01), ("qwen3-235b-a22b", 235.09, 0.01), ("qwen3-coder-480b-a35b", 480.16, 0.02),
    ("mixtral-8x7b", 46.70, 0.01), ("deepseek-v3", 671.03, 0.01), ("gpt-oss-20b", 20.91, 0.01),
    ("llama4-maverick", 400.7, 0.05), ("llama4-scout", 107.8, 0.05),
    # gpt-oss-120b: 116.83 B incl. ~40 M router/expert biases that are not modelled
    ("gpt-oss-120b", 116.83, 0.05),
])
def test_parameter_counts_match_published(name, total_b, tol):
    assert load_model(name).param_count() / 1e9 == pytest.approx(total_b, abs=tol)


def _active_params(m) -> float:
    """Parameters one token touches: everything except the experts it does not route to (and the
    input embedding, which is only indexed)."""
    E, k = m.dims["e"], m.dims["x"]
    total = 0.0
    for block in m.blocks:
        seen = {}
        for op in block.ops:
            for w in op.weights:
                n = 1
                for c in w.dims:
                    n *= m.dims[c]
                seen[w.name] = n * (k / E if "e" in w.dims and w.shardable else 1.0)
        total += block.count * sum(seen.values())
    return total + m.dims["v"] * m.dims["d"]  # LM head


@pytest.mark.parametrize("name,active_b", [("qwen3-30b-a3b", 3.35 - 0.31), ("qwen3-235b-a22b", 22.19 - 0.62),
                                           ("mixtral-8x7b", 12.88 - 0.13), ("deepseek-v3", 37.5 - 0.93)])
def test_active_parameters(name, active_b):
    # SOURCES.md active counts include the input embedding (v x d), which a token only indexes
    assert _active_params(load_model(name)) / 1e9 == pytest.approx(active_b, rel=0.01)


def test_qwen3_moe_graph_shape():
    m = load_model("qwen3-30b-a3b")
    assert {k: m.dims[k] for k in "dgrkfexv"} == {"d": 2048, "g": 4, "r": 8, "k": 128, "f": 768, "e": 128, "x": 8,
                                                 "v": 151936}
    assert [(b.name, b.count) for b in m.blocks] == [("moe", 48)]
    ops = {op.name: op for op in m.blocks[0].ops}
    assert ops["moe.router"].spec.text == "btd,de->bte"
    assert not ops["moe.router"].weights[0].shardable
    assert ops["moe.dispatch"].attrs["route"] == "dispatch" and ops["moe.dispatch"].output.dims == "ecd"
    assert ops["moe.experts.gate_proj"].spec.text == "ecd,edf->ecf"
    assert ops["moe.experts.gate_proj"].group == ops["moe.experts.up_proj"].group == ops["moe.dispatch"].group
    assert ops["moe.experts.down_proj"].spec.text == "ecf,efd->ecd"
    assert ops["moe.combine"].attrs["route"] == "combine" and ops["moe.combine"].output.dims == "btd"
    assert "attn.q_norm" in ops  # Qwen3 QK-norm
    assert not any(name.startswith("moe.shared") for name in ops)
    assert m.info["moe"] == {"n_experts": 128, "top_k": 8, "moe_layers": 48, "shared_experts": 0,
                             "bias_balanced_router": False}  # Qwen3 routes by softmax top-k, no score bias


def test_deepseek_v3_mla_dense_then_moe_with_shared_expert():
    m = load_model("deepseek-v3")
    assert [(b.name, b.count) for b in m.blocks] == [("dense", 3), ("moe", 58)]
    assert m.weight_dtype == "fp8" and m.act_dtype == "bf16"
    assert m.dims["u"] == 18432 and m.dims["f"] == 2048 and m.dims["e"] == 256 and m.dims["x"] == 8
    moe_ops = {op.name: op for op in m.blocks[1].ops}
    assert moe_ops["moe.shared.gate_proj"].spec.text == "btd,df->btf"  # 1 shared expert of the routed width
    assert moe_ops["moe.shared.down_proj"].attrs["moe"] == "shared"
    assert len(moe_ops["moe.combine"].inputs) == 3
    dense_ops = {op.name: op for op in m.blocks[0].ops}
    assert dense_ops["mlp.gate_proj"].spec.text == "btd,du->btu"
    # MLA caches the 512-wide latent and the 64-wide RoPE key, shared by all 128 heads
    kv = {t.name: t.dims for op in m.blocks[1].ops for t in op.inputs if t.role is Role.KV_CACHE and "s" in t.dims}
    assert sorted(kv.values()) == ["bsl", "bsp"]
    from energylens.predict import kv_bytes_per_token

    assert kv_bytes_per_token(m) == (512 + 64) * 2 * 61


def test_gpt_oss_alternating_windows_and_mxfp4_experts():
    m = load_model("gpt-oss-120b")
    assert [(b.name, b.count) for b in m.blocks] == [("moe_sliding", 18), ("moe_full", 18)]
    windows = {b.name: {op.attrs.get("window") for op in b.ops if op.name == "attn.qk"} for b in m.blocks}
    assert windows == {"moe_sliding": {128}, "moe_full": {None}}
    expert_w = [w for op in m.blocks[0].ops for w in op.weights if "e" in w.dims and w.shardable]
    assert expert_w and all(m.weight_format(w.name).name == "mxfp4" for w in expert_w)
    assert all(m.element_bytes(w) == pytest.approx(4.25 / 8) == DTYPE_BYTES["mxfp4"] for w in expert_w)
    assert m.weight_format("attn.wq").name == "bf16" and m.weight_format("moe.router.weight").name == "bf16"
    # 114.7 B expert weights at 4.25 bits + ~2.1 B bf16 weights: fits one 80 GB GPU, as published
    import energylens

    p = energylens.predict(m, "h100-sxm", batch=1, prompt_len=512, output_len=2)
    assert 60e9 < p.memory.weights_bytes < 67e9 and p.memory.fits


def test_llama4_interleaved_moe_and_global_layers():
    mav = load_model("llama4-maverick")
    assert [(b.name, b.count) for b in mav.blocks] == [("dense_chunked", 24), ("moe_chunked", 12), ("moe_global", 12)]
    scout = load_model("llama4-scout")
    assert [(b.name, b.count) for b in scout.blocks] == [("moe_chunked", 36), ("moe_global", 12)]
    assert scout.info["moe"]["top_k"] == 1 and scout.info["moe"]["shared_experts"] == 1
    chunked = {op.attrs.get("window") for op in scout.blocks[0].ops if op.name == "attn.qk"}
    glob = {op.attrs.get("window") for op in scout.blocks[1].ops if op.name == "attn.qk"}
    assert chunked == {8192} and glob == {None}


def _write(tmp_path, cfg: dict):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def test_qwen2_moe_shared_expert_of_its_own_width(tmp_path):
    cfg = {"model_type": "qwen2_moe", "hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 4,
           "num_hidden_layers": 4, "vocab_size": 1000, "num_experts": 8, "num_experts_per_tok": 2,
           "moe_intermediate_size": 64, "shared_expert_intermediate_size": 192, "intermediate_size": 512,
           "decoder_sparse_step": 1, "mlp_only_layers": [0]}
    m = load_model(_write(tmp_path, cfg))
    assert m.dims["j"] == 192 and m.dims["u"] == 512
    assert [(b.name, b.count) for b in m.blocks] == [("dense", 1), ("moe", 3)]
    d, f, j, E = 256, 64, 192, 8
    attn = 4 * d * d + 2 * d  # q, k, v, o + the two RMSNorm weights
    per_moe = attn + d * E + 3 * E * d * f + 3 * d * j
    per_dense = attn + 3 * d * 512
    assert m.param_count() == 3 * per_moe + per_dense + 2 * 1000 * d + d
    with pytest.raises(LayoutError):
        check_layout(m, Layout(tp=5))


def test_deepseek_v2_lite_style_config_without_q_lora(tmp_path):
    cfg = {"model_type": "deepseek_v2", "hidden_size": 512, "num_attention_heads": 8, "num_hidden_layers": 3,
           "vocab_size": 1000, "q_lora_rank": None, "kv_lora_rank": 64, "qk_nope_head_dim": 32,
           "qk_rope_head_dim": 16, "v_head_dim": 32, "moe_intermediate_size": 128, "intermediate_size": 1024,
           "first_k_dense_replace": 1, "n_routed_experts": 16, "n_shared_experts": 2, "num_experts_per_tok": 4}
    m = load_model(_write(tmp_path, cfg))
    assert "q" not in m.dims and m.dims["j"] == 256  # two shared experts of width 128
    names = {op.name for op in m.blocks[1].ops}
    assert "attn.q_a_proj" not in names and "attn.q_b_nope" in names and "moe.shared.gate_proj" in names


def test_moe_legend_names_every_letter():
    for name in ("deepseek-v3", "llama4-maverick", "qwen3-30b-a3b"):
        m = load_model(name)
        assert set(m.dims) <= set(MOE_LEGEND)


def test_expert_and_head_divisibility_errors():
    m = load_model("qwen3-30b-a3b")
    with pytest.raises(LayoutError) as exc:
        check_layout(m, Layout(ep=3, dp=3))
    assert "128 experts" in str(exc.value)
    with pytest.raises(LayoutError):
        check_layout(m, Layout(tp=2, ep=4))  # ep must divide tp*dp
    assert check_layout(m, Layout(tp=8))  # 4 KV heads, each replicated on 2 of the 8 ranks
