"""Point planning: shapes derived from model dims, and FLOP/byte accounting."""

from __future__ import annotations

import pytest

from energylens.errors import EnergyLensError
from energylens.measure import points as plan


def test_llama_8b_projection_shapes_per_tp() -> None:
    m = plan.MODELS["llama-3-8b"]
    tp1 = {name: (n, k, b) for name, n, k, b in plan.projection_shapes(m, 1)}
    assert tp1["qkv"] == ((32 + 2 * 8) * 128, 4096, 1)  # 6144 x 4096
    assert tp1["o_proj"] == (4096, 4096, 1)
    assert tp1["gate_up"] == (2 * 14336, 4096, 1)
    assert tp1["down"] == (4096, 14336, 1)
    assert tp1["lm_head"] == (128256, 4096, 1)
    tp2 = {name: (n, k, b) for name, n, k, b in plan.projection_shapes(m, 2)}
    assert tp2["qkv"] == ((16 + 2 * 4) * 128, 4096, 1)  # column-parallel shards N
    assert tp2["down"] == (4096, 7168, 1)  # row-parallel shards K
    tp8_70b = {name: (n, k, b) for name, n, k, b in plan.projection_shapes(plan.MODELS["llama-3-70b"], 8)}
    assert tp8_70b["qkv"] == ((8 + 2 * 1) * 128, 8192, 1)
    assert tp8_70b["o_proj"] == (8192, 1024, 1)


def test_qwen_moe_grouped_shapes_and_kv_replication() -> None:
    q = plan.MODELS["qwen3-30b-a3b"]
    tp8 = {name: (n, k, b) for name, n, k, b in plan.projection_shapes(q, 8)}
    assert tp8["experts_gate_up"] == (2 * 96, 2048, 128)  # 768/8 intermediate, all 128 experts
    assert tp8["experts_down"] == (2048, 96, 128)
    assert tp8["router"] == (128, 2048, 1)
    assert tp8["qkv"] == ((4 + 2 * 1) * 128, 2048, 1)  # 4 KV heads replicated over 8 ranks
    with pytest.raises(EnergyLensError):
        plan.projection_shapes(q, 3)


def test_gemm_points_dedupe_and_cover_models() -> None:
    p = plan.micro_plan("default")
    pts = plan.gemm_points(p)
    keys = [(s.dims["m"], s.dims["n"], s.dims["k"], s.dims["batch"], s.dtype) for s in pts]
    assert len(keys) == len(set(keys))
    by_key = dict(zip(keys, pts, strict=True))
    qkv = by_key[(1, 6144, 4096, 1, "bf16")]
    assert any("llama-3-8b tp1 qkv" in o for o in qkv.origins)
    grouped = [s for s in pts if s.dims["batch"] > 1]
    assert grouped and {s.dims["m"] for s in grouped} == set(p.expert_tokens)
    assert all(s.dtype == "bf16" for s in grouped)
    fp8 = [s for s in pts if s.dtype == "fp8"]
    assert fp8 and all(s.dims["m"] % 16 == 0 for s in fp8)
    assert {s.dims["k"] for s in pts if "k-sweep" in s.origins} == set(p.k_sweep)


def test_gemm_flops_bytes() -> None:
    flops, nbytes = plan.gemm_flops_bytes(128, 256, 512, 1, "bf16")
    assert flops == 2 * 128 * 256 * 512
    assert nbytes == 2 * (128 * 512 + 512 * 256 + 128 * 256)
    flops, nbytes = plan.gemm_flops_bytes(16, 32, 64, 4, "fp8")
    assert flops == 2 * 16 * 32 * 64 * 4
    assert nbytes == 4 * (16 * 64 + 64 * 32 + 2 * 16 * 32)  # fp8 in, bf16 out
    with pytest.raises(EnergyLensError):
        plan.gemm_flops_bytes(0, 1, 1)


def test_memcpy_flops_bytes() -> None:
    assert plan.memcpy_flops_bytes("copy", 1 << 20) == (0.0, 2.0 * (1 << 20))
    assert plan.memcpy_flops_bytes("read", 1 << 20) == ((1 << 20) / 2, float(1 << 20))
    sizes = [
        s.dims["size_bytes"] for s in plan.memcpy_points(plan.micro_plan("default")) if s.dims["op"] == "copy"
    ]
    assert min(sizes) == 1 << 20 and max(sizes) == 8 << 30
    with pytest.raises(EnergyLensError):
        plan.memcpy_flops_bytes("scatter", 10)


def test_attention_flops_bytes() -> None:
    # prefill, causal: s(s+1)/2 pairs, 4*d FLOPs each
    flops, nbytes = plan.attention_flops_bytes(2, 32, 8, 128, 1024, 1024, True)
    assert flops == pytest.approx(4 * 128 * (1024 * 1025 / 2) * 2 * 32)
    assert nbytes == 2 * 2 * 128 * (2 * 1024 * 32 + 2 * 1024 * 8)
    # decode: one query against the whole cache; the KV cache dominates the bytes
    flops, nbytes = plan.attention_flops_bytes(8, 32, 8, 128, 1, 4096, False)
    assert flops == 4 * 128 * 4096 * 8 * 32
    assert nbytes == 2 * 8 * 128 * (2 * 32 + 2 * 4096 * 8)
    # K/V expanded to every query head reads 4x the cache
    _, expanded = plan.attention_flops_bytes(8, 32, 8, 128, 1, 4096, False, kv_heads_read=32)
    assert expanded > 3.9 * nbytes
    assert plan.attention_pairs(2, 5, True) == 2 * 3 + 3  # bottom-right aligned causal
    with pytest.raises(EnergyLensError):
        plan.attention_pairs(5, 2, True)


def test_elementwise_and_micro_plan() -> None:
    f, b = plan.elementwise_flops_bytes("silu_mul", 10, 100)
    assert (f, b) == (5000.0, 2 * 3 * 10 * 100)
    pts = plan.plan_micro("small")
    assert pts[0].kind == "idle"  # idle and memcpy come first: they are needed by every later fit
    assert {s.kind for s in pts} == set(plan.MICRO_KINDS)
    only = plan.plan_micro("small", only=("memcpy",))
    assert {s.kind for s in only} == {"memcpy"}
    assert not any(s.dtype == "fp8" for s in plan.plan_micro("small", fp8=False))
    with pytest.raises(EnergyLensError):
        plan.plan_micro("huge")
    with pytest.raises(EnergyLensError):
        plan.plan_micro("small", only=("gemv",))


def test_models_plan_respects_memory_and_truncates() -> None:
    qwen = plan.MODELS["qwen3-30b-a3b"]
    assert plan.model_weight_bytes(qwen, 48) > 60e9
    layers = plan.max_layers_fitting(qwen, 80e9)
    assert 1 <= layers < 48
    pts = plan.plan_models("default", 80e9)
    scopes = {(s.dims["model"], s.dims["scope"]) for s in pts}
    assert ("llama-3-8b", "model") in scopes and ("qwen3-30b-a3b", "model-truncated") in scopes
    assert ("llama-3-8b", "layer") in scopes
    assert all(s.footprint_bytes <= 0.85 * 80e9 for s in pts)
    small_gpu = plan.plan_models("default", 24e9)
    assert not any(s.dims["model"] == "llama-3-8b" and s.dims["scope"] == "model" for s in small_gpu)
    # a whole-model decode step reads every weight once plus the KV cache
    m8 = plan.MODELS["llama-3-8b"]
    _, nbytes = plan.model_flops_bytes(m8, 32, 1, 1, 1024)
    assert nbytes > plan.model_weight_bytes(m8, 32) - 2 * 128256 * 4096 * 2
    f_layer, _ = plan.model_flops_bytes(m8, 1, 1, 512, 0, head=False)
    f_model, _ = plan.model_flops_bytes(m8, 1, 1, 512, 0, head=True)
    assert f_model - f_layer == pytest.approx(2 * 4096 * 128256)


def test_collective_plan() -> None:
    assert plan.plan_collectives("default", 1) == []
    pts = plan.plan_collectives("default", 8)
    assert {s.dims["op"] for s in pts} == set(plan.COLLECTIVE_OPS)
    ar = next(s for s in pts if s.dims["op"] == "all_reduce")
    assert ar.dims["bus_bytes"] == pytest.approx(2 * 7 / 8 * ar.dims["size_bytes"])
