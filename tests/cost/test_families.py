"""Kernel-family formulas (energylens/cost/families.py): hand counts, wave quantisation, monotonicity."""

from dataclasses import replace

import numpy as np
import pytest

from energylens.cost import families as K
from energylens.hardware import load_gpu

H100 = load_gpu("h100-sxm")
A100 = load_gpu("a100-sxm-80gb")


def _gemm(**over) -> K.GemmCoeffs:
    base = K.GemmCoeffs(peak_flops=1e15, efficiency=0.5, k_half=0.0, tile_m=128.0, tile_n=128.0, sms=100.0,
                        bandwidth_bytes_per_s=1e12, overhead_s=2e-6, prepass_bytes=0.0, split_overhead_s=3e-6)
    return replace(base, **over)


def test_gemm_one_full_wave_hand_count():
    c = _gemm()
    # 10 x 10 tiles of 128 x 128 = 100 tiles on 100 SMs, K = 512 < 1024: no split-K, one full wave
    m, n, k = 1280, 1280, 512
    flops = 2 * m * n * k
    assert K.gemm_math_s(c, m, n, k) == pytest.approx(flops / (1e15 * 0.5))
    byts = (m * k + n * k) * 2 + 2 * m * n
    assert K.gemm_latency_s(c, m, n, k) == pytest.approx(max(flops / 5e14, byts / 1e12) + 2e-6)


def test_gemm_wave_quantisation_and_k_half():
    c = _gemm()
    full = K.gemm_math_s(c, 1280, 1280, 512)
    tail = K.gemm_math_s(c, 1280 + 128, 1280, 512)  # 110 tiles: a second wave for 10 of them
    assert tail / full == pytest.approx(2.0)
    half = _gemm(k_half=512.0)
    assert K.gemm_math_s(half, 1280, 1280, 512) == pytest.approx(2 * full)


def test_gemm_split_k_and_prepass():
    c = _gemm()
    # 1 tile on 100 SMs, K = 4096: split 4 ways (K / 1024), one wave of 4 units, plus the fp32 reduction
    m, n, k = 128, 128, 4096
    expected = 2 * m * n * k / (1e15 * 0.5 * (4 / 100)) + 3e-6 + 8 * m * n * 4 / 1e12
    assert K.gemm_math_s(c, m, n, k) == pytest.approx(expected)
    q = _gemm(prepass_bytes=3.0)
    assert K.gemm_math_s(q, m, n, k) - K.gemm_math_s(c, m, n, k) == pytest.approx(3.0 * m * k / 1e12)


def test_gemm_no_split_k_cta_cap_small_m_and_row_pass():
    # a kernel that never splits K (CUTLASS scaled_mm): 1 tile of 128 x 128 on 100 SMs runs on one SM
    c = _gemm(split_k=0.0)
    m, n, k = 128, 128, 4096
    assert K.gemm_math_s(c, m, n, k) == pytest.approx(2 * m * n * k / (1e15 * 0.5 / 100))
    # one CTA streams at most 1 GB/s of operands: K x (128 + 128) x 1 B per element
    capped = _gemm(split_k=0.0, cta_bandwidth=1e9, elem_bytes=1.0)
    assert K.gemm_math_s(capped, m, n, k) == pytest.approx(k * 256 * 1.0 / 1e9)
    # M <= small_m runs a 64-row tile: M = 64, N = 12800 -> 100 tiles of 64 x 128, one wave
    small = _gemm(split_k=0.0, small_m=64.0, cta_bandwidth=1e9, elem_bytes=1.0)
    assert K.gemm_math_s(small, 64, 12800, 512) == pytest.approx(max(2 * 64 * 12800 * 512 / 5e14, 512 * 192 / 1e9))
    # the quantisation pass: one CTA per activation row, 250 rows on 100 SMs = 3 row waves
    row = _gemm(split_k=0.0, prepass_row_s=1e-6)
    assert K.gemm_prepass_s(row, 250, 512) == pytest.approx(3e-6)
    assert K.gemm_math_s(row, 250, 128, 512) - K.gemm_math_s(_gemm(split_k=0.0), 250, 128, 512) == pytest.approx(3e-6)


def test_gemm_more_work_never_faster():
    c = K.gemm_coeffs(H100, "bf16")
    m = np.array([1, 16, 64, 256, 1024, 4096, 16384])
    for n, k in ((4096, 4096), (14336, 4096), (4096, 14336)):
        t = K.gemm_latency_s(c, m, n, k)
        assert np.all(np.diff(t) >= -1e-12)
    k = np.array([256, 1024, 4096, 8192, 16384])
    assert np.all(np.diff(K.gemm_latency_s(c, 512, 4096, k)) > 0)


def test_gpu_without_tables_uses_spec_defaults():
    c = K.gemm_coeffs(A100, "bf16")
    assert c.tile_m == A100.q("gemm_tile_m") and c.overhead_s == A100.kernel_overhead_s
    assert c.bandwidth_bytes_per_s == pytest.approx(A100.hbm_bandwidth_bytes_per_s * A100.max_memory_efficiency)
    a = K.attention_coeffs(A100)
    assert a.decode_memory_efficiency == A100.max_memory_efficiency and a.decode_cta_overhead_s == 0.0


def _attn(**over) -> K.AttentionCoeffs:
    base = K.attention_coeffs(A100)
    vals = dict(sms=100.0, hbm_bandwidth=1e12, peak_flops=1e15, decode_overhead_s=5e-6,
                decode_memory_efficiency=0.5, decode_cta_overhead_s=1e-6, decode_compute_efficiency=0.5,
                decode_fp8_kv_efficiency=0.8, decode_ctas_per_sm=1.0, decode_split_min_tokens=64.0,
                decode_max_splits=16.0, decode_window_pad=128.0, decode_cta_bandwidth=5e9, decode_cta_latency_s=0.0,
                decode_fp8_cta_factor=1.0, decode_combine_s=0.0, decode_q_rows=64.0)
    return replace(base, **{**vals, **over})


def test_decode_attention_hand_count():
    c = _attn()
    # b=1, g=1: 100 slots, split = min(16, ceil(4096/64)) = 16, one wave of 16 CTAs, 256 tokens per CTA;
    # 16 CTAs share 0.5e12 B/s (31 GB/s each) but one CTA reaches only 5 GB/s
    d = 128
    per_cta = 256 * d * 2 * 2 / 5e9
    # query rows (b h d = 1024 elements) split 16 ways: Q per split, fp32 partials out and back, bf16 O: 162 B each
    rows = 1 * 8 * d * (10 * 16 + 2) / (1e12 * 0.5)
    assert K.decode_attention_latency_s(c, 1, 4096, 8, 1, d) == pytest.approx(5e-6 + 1e-6 + per_cta + rows)
    # the split-KV combine adds its fixed time only when the call splits
    c2 = _attn(decode_combine_s=3e-6, decode_cta_bandwidth=1e12)
    per_cta = 256 * d * 2 * 2 * 16 / (1e12 * 0.5)
    assert K.decode_attention_latency_s(c2, 1, 4096, 8, 1, d) == pytest.approx(5e-6 + 1e-6 + per_cta + 3e-6 + rows)
    # b=200, g=1: 200 CTAs (no split) on 100 slots = two waves of 4096 tokens each, each CTA 1/100 of the stream;
    # unsplit rows: Q in, O out (4 B per element)
    per_cta = 4096 * d * 2 * 2 * 100 / (1e12 * 0.5)
    rows = 200 * 8 * d * 4 / (1e12 * 0.5)
    assert K.decode_attention_latency_s(c2, 200, 4096, 8, 1, d) == pytest.approx(5e-6 + 2 * (1e-6 + per_cta) + rows)
    # r = 128 query heads per KV head on 64-row CTAs: two CTAs per KV head share its KV reads
    per_cta = 4096 * d * 2 * 2 * 100 / (1e12 * 0.5 * 2)
    rows = 100 * 128 * d * 4 / (1e12 * 0.5)
    assert K.decode_attention_latency_s(c2, 100, 4096, 128, 1, d) == pytest.approx(5e-6 + 2 * (1e-6 + per_cta) + rows)
    # a short call is its pipeline fill: D/128 x cta_latency, x fp8 factor with an fp8 cache
    c3 = _attn(decode_cta_latency_s=2e-6, decode_fp8_cta_factor=1.5)
    rows = 8 * 256 * 4 / (1e12 * 0.5)
    assert K.decode_attention_latency_s(c3, 1, 4, 8, 1, 256) == pytest.approx(5e-6 + 1e-6 + 4e-6 + rows)
    assert K.decode_attention_latency_s(c3, 1, 4, 8, 1, 256, 1.0) == pytest.approx(5e-6 + 1e-6 + 6e-6 + rows)


def test_decode_attention_captured_batch_runs_split_mode():
    # batches up to graph_max_batch run split-KV even unsplit: fp32 partial rows + combine (12 B per row element
    # at split 1) and graph_seq_time per sequence; the combine's fixed time still only where the call splits
    c = _attn(decode_combine_s=3e-6, decode_cta_bandwidth=1e12, decode_graph_max_batch=256.0, decode_graph_seq_s=2e-8)
    d = 128
    per_cta = 4096 * d * 2 * 2 * 100 / (1e12 * 0.5)
    captured = 5e-6 + 2 * (1e-6 + per_cta) + 200 * 8 * d * 12 / (1e12 * 0.5) + 200 * 2e-8
    assert K.decode_attention_latency_s(c, 200, 4096, 8, 1, d) == pytest.approx(captured)
    # b=400 > 256: eager, as without the regime (4 waves, Q in and O out)
    eager = 5e-6 + 4 * (1e-6 + per_cta) + 400 * 8 * d * 4 / (1e12 * 0.5)
    assert K.decode_attention_latency_s(c, 400, 4096, 8, 1, d) == pytest.approx(eager)
    assert K.decode_attention_latency_s(_attn(decode_combine_s=3e-6, decode_cta_bandwidth=1e12), 400, 4096, 8, 1,
                                        d) == pytest.approx(eager)
    # a per-sequence time of every call (captured or not) adds b x decode_seq_s
    cs = replace(c, decode_seq_s=5e-9)
    assert K.decode_attention_latency_s(cs, 400, 4096, 8, 1, d) == pytest.approx(eager + 400 * 5e-9)
    assert K.decode_attention_latency_s(cs, 200, 4096, 8, 1, d) == pytest.approx(captured + 200 * 5e-9)
    # an array of batches across the threshold: each element as alone
    b = np.array([200.0, 400.0])
    assert K.decode_attention_latency_s(c, b, 4096, 8, 1, d) == pytest.approx([captured, eager])


def test_decode_attention_fp8_window_and_monotonic():
    c = _attn()
    bf = K.decode_attention_latency_s(c, 64, 8192, 32, 8, 128, 2.0)
    f8 = K.decode_attention_latency_s(c, 64, 8192, 32, 8, 128, 1.0)
    assert f8 < bf  # half the bytes at 0.8 of the bandwidth
    win = K.decode_attention_latency_s(c, 64, 8192, 32, 8, 128, 2.0, window=1024)
    ref = K.decode_attention_latency_s(c, 64, 1024 + 128, 32, 8, 128, 2.0)
    assert win == pytest.approx(ref)
    s = np.array([128, 1024, 8192, 65536])
    assert np.all(np.diff(K.decode_attention_latency_s(c, 8, s, 32, 8, 128)) > 0)
    b = np.array([1, 8, 64, 512])
    assert np.all(np.diff(K.decode_attention_latency_s(c, b, 4096, 32, 8, 128)) >= 0)


def test_prefill_keys_causal_and_window():
    c = replace(_attn(), prefill_q_tile=128.0)
    # no cache: mean keys per row (T + tile) / 2; with a 1000-token cached prefix add it
    assert K.prefill_keys(c, 1024, 1024) == pytest.approx((1024 + 128) / 2)
    assert K.prefill_keys(c, 1024, 2024) == pytest.approx(1000 + (1024 + 128) / 2)
    # a 512 window: rows' keys grow 64 -> 8256 and are capped at 640; the capped mean: the first 576/8192 of the rows
    # average (64 + 640) / 2, the rest 640
    f = 576 / 8192
    assert K.prefill_keys(c, 8192, 8192, window=512) == pytest.approx(f * (64 + 640) / 2 + (1 - f) * 640)
    # a window longer than the prompt caps nothing
    assert K.prefill_keys(c, 1024, 1024, window=4096) == pytest.approx((1024 + 128) / 2)


def test_prefill_keys_packed_query_heads():
    c = replace(_attn(), prefill_q_tile=128.0)
    # r = 4 query heads per KV head packed: a 128-row tile holds 32 tokens, so its causal keys are 32-token steps
    assert K.prefill_keys(c, 1024, 1024, r=4.0) == pytest.approx((1024 + 32) / 2)
    f = (544 - 16) / 8192  # keys grow 16 -> 8208, capped at 512 + 32
    assert K.prefill_keys(c, 8192, 8192, window=512, r=4.0) == pytest.approx(f * (16 + 544) / 2 + (1 - f) * 544)


def test_prefill_attention_packed_gqa_multi_tile_and_fp8_kernel():
    c = replace(_attn(), prefill_overhead_s=1e-5, prefill_compute_efficiency=0.5, prefill_k_half=0.0,
                prefill_d_half=0.0, prefill_q_tile=128.0, prefill_memory_efficiency=1.0,
                prefill_kv_traffic_bf16=4.0, prefill_kv_traffic_fp8=2.0, prefill_pack_gqa=1.0)
    # b=1, T=1280, h=40, g=4 (r=10): 12800 rows per KV head = 100 tiles x 4 KV heads = 400 units, 4 full waves;
    # a tile holds 12.8 tokens: mean keys (1280 + 12.8) / 2
    b, t, h, g, d = 1, 1280, 40, 4, 128
    keys = (t + 12.8) / 2
    math = 4 * 400 * 128 * keys * d / (1e15 * 0.5)
    kv = b * t * (h * d * 4 + g * d * 4.0) / 1e12
    assert K.prefill_attention_latency_s(c, b, t, t, h, g, d) == pytest.approx(1e-5 + math + kv)
    # unpacked: 10 q tiles x 40 heads = 400 units too, but every tile spans 128 tokens: (1280 + 128) / 2 keys
    flat = replace(c, prefill_pack_gqa=0.0)
    math0 = 4 * 400 * 128 * (t + 128) / 2 * d / (1e15 * 0.5)
    assert K.prefill_attention_latency_s(flat, b, t, t, h, g, d) == pytest.approx(1e-5 + math0 + kv)
    # more than tile_rows packed rows (T r = 12800 > 64) adds the multi-tile time; T=4, r=10: 40 rows, none;
    # an fp8 cache adds its own overhead and scales the multi-tile time
    m = replace(c, prefill_tile_rows=64.0, prefill_multi_tile_s=2e-6, prefill_fp8_overhead_s=1e-6,
                prefill_fp8_multi_tile_factor=2.0)
    assert K.prefill_attention_latency_s(m, b, t, t, h, g, d) == pytest.approx(1e-5 + 2e-6 + math + kv)
    small = K.prefill_attention_latency_s(c, 1, 4, 4, h, g, d)
    assert K.prefill_attention_latency_s(m, 1, 4, 4, h, g, d) == pytest.approx(small)
    kv8 = b * t * (h * d * 4 + g * d * 2.0) / 1e12
    assert K.prefill_attention_latency_s(m, b, t, t, h, g, d, 1.0) == pytest.approx(1e-5 + 1e-6 + 4e-6 + math + kv8)
    # the fp8 kernel: efficiency x factor / (1 + (D / d_half)^2): D = 128 = d_half halves it, x 1.2
    f8 = replace(c, prefill_fp8_compute_factor=1.2, prefill_fp8_d_half=128.0)
    assert K.prefill_attention_latency_s(f8, b, t, t, h, g, d, 1.0) == pytest.approx(1e-5 + math * 2 / 1.2 + kv8)
    assert K.prefill_attention_latency_s(f8, b, t, t, h, g, d) == pytest.approx(1e-5 + math + kv)  # bf16 unchanged


def test_prefill_attention_hand_count_and_monotonic():
    c = replace(_attn(), prefill_overhead_s=1e-5, prefill_compute_efficiency=0.5, prefill_k_half=0.0,
                prefill_d_half=0.0, prefill_q_tile=128.0, prefill_memory_efficiency=1.0,
                prefill_kv_traffic_bf16=4.0, prefill_kv_traffic_fp8=2.0)
    b, t, h, g, d = 1, 1280, 10, 2, 128  # 10 q tiles x 10 heads = 100 units: one full wave
    keys = (t + 128) / 2
    math = 4 * 100 * 128 * keys * d / (1e15 * 0.5)
    kv = b * t * (h * d * 4 + g * d * 4.0) / 1e12
    assert K.prefill_attention_latency_s(c, b, t, t, h, g, d) == pytest.approx(1e-5 + math + kv)
    # per-token CTAs of the KV-cache write: 1280 tokens on 100 SMs = 13 waves, x1.5 with an fp8 cache
    tok = replace(c, prefill_token_s=1e-7, prefill_fp8_token_factor=1.5)
    assert K.prefill_attention_latency_s(tok, b, t, t, h, g, d) == pytest.approx(1e-5 + math + kv + 13e-7)
    kv8 = b * t * (h * d * 4 + g * d * 2.0) / 1e12
    assert K.prefill_attention_latency_s(tok, b, t, t, h, g, d, 1.0) == pytest.approx(1e-5 + math + kv8 + 13 * 1.5e-7)
    n = np.array([256, 1024, 4096, 16384])
    assert np.all(np.diff(K.prefill_attention_latency_s(c, 2, n, n, 32, 8, 128)) > 0)
    # t == 1 picks the decode formula
    both = K.attention_latency_s(c, 4, np.array([1, 512]), 512, 32, 8, 128)
    assert both[0] == pytest.approx(K.decode_attention_latency_s(c, 4, 512, 32, 8, 128))


def test_expert_tiles_and_fused_moe():
    # 4 experts: two hit for sure with 10 and 300 tokens, one hit half the time with 1 token, one never
    tokens = np.array([10.0, 300.0, 0.5, 0.0])
    hit = np.array([1.0, 1.0, 0.5, 0.0])
    m_tiles, experts, total = K.expert_tiles(tokens, hit, 128.0)
    assert m_tiles == pytest.approx(1 + 3 + 0.5)
    assert experts == pytest.approx(2.5) and total == pytest.approx(310.5)
    c = _gemm(tile_m=128.0, tile_n=128.0)
    t = K.fused_moe_latency_s(c, tokens, hit, 1024, 512)
    up = K.grouped_gemm_s(c, m_tiles, experts, total, 1024, 1024)
    down = K.grouped_gemm_s(c, m_tiles, experts, total, 1024, 512)
    assert t == pytest.approx(2e-6 + up + down)
    # weights of hit experts only: with few tokens the call streams 2.5 experts' weights
    slow = _gemm(bandwidth_bytes_per_s=1e11)
    few = K.grouped_gemm_s(slow, 2.5, 2.5, 2.5, 1024, 1024)
    assert few == pytest.approx((2.5 * 1024 * 1024 * 2 + 2.5 * (1024 * 2 + 2 * 1024)) / 1e11)
    more = K.fused_moe_latency_s(c, tokens * 4, np.ones(4), 1024, 512)
    assert more > t


def test_engine_costs_flash_attention_with_the_family_formulas():
    from energylens.predict import predict

    c = K.attention_coeffs(H100)
    dec = predict("llama3-8b", "h100-sxm", batch=8, prompt_len=1024, output_len=1)
    op = next(o for o in dec.decode.ops if o.name == "decoder.attn.flash")
    # one decode step reads the prompt plus the new token: s = 1025 KV tokens, 32 heads, 8 KV heads, D 128
    assert op.latency_s / 32 == pytest.approx(float(K.decode_attention_latency_s(c, 8, 1025, 32, 8, 128)))
    op = next(o for o in dec.prefill.ops if o.name == "decoder.attn.flash")
    assert op.latency_s / 32 == pytest.approx(float(K.prefill_attention_latency_s(c, 8, 1024, 1024, 32, 8, 128)))


def test_fractional_batch_is_an_expected_call():
    c = _attn()
    one = K.decode_attention_latency_s(c, 1, 4096, 8, 1, 128)
    assert K.decode_attention_latency_s(c, 0.25, 4096, 8, 1, 128) == pytest.approx(0.25 * one)
    pre = K.prefill_attention_latency_s(c, 1, 512, 512, 8, 1, 128)
    assert K.prefill_attention_latency_s(c, 0.1, 512, 512, 8, 1, 128) == pytest.approx(0.1 * pre)


def test_moe_coeffs_take_the_checkpoint_formats_own_kernel_fit():
    # MXFP4 experts multiply at bf16 (w4a16) but run another kernel than bf16 experts: their own fit is used
    b200 = load_gpu("b200")
    own, bf16 = K.moe_coeffs(b200, "bf16", "mxfp4"), K.moe_coeffs(b200, "bf16")
    assert own.overhead_s == b200.q("moe_overhead_mxfp4") and own.efficiency == b200.q("moe_compute_efficiency_mxfp4")
    assert bf16.overhead_s == b200.q("moe_overhead_bf16") and own.peak_flops == bf16.peak_flops
    # a format without a fit of its own falls back to the math dtype's MoE fit
    assert K.moe_coeffs(H100, "fp8", "fp8_block").overhead_s == H100.q("moe_overhead_fp8")


def test_fused_moe_inner_ops_add_no_launch_of_their_own():
    # the fitted fused-MoE time holds vLLM's top-k, SwiGLU and top-k sum: those ops cost no kernel overhead
    # where the experts' kernel is fitted (H100), and keep it where it is not (A100: spec-sheet profile)
    from energylens.predict import predict

    def inner_overhead(gpu):
        r = predict("openai/gpt-oss-120b", gpu, batch=1, prompt_len=16, output_len=1)
        ops = {o.name.split(".", 1)[1]: o for o in r.decode.ops if o.name.startswith("moe_full.")}
        return [ops[n].latency_s / ops[n].count for n in ("moe.topk", "moe.experts.silu_mul", "moe.combine")]

    assert all(t < 0.2e-6 for t in inner_overhead("h100-sxm"))
    assert all(t >= A100.kernel_overhead_s for t in inner_overhead("a100-sxm-80gb"))


def test_gemm_kernel_variants_and_fallback():
    from energylens.graph.precision import fp8, gemm_kernel, kernel_path, nvfp4

    l40s, b200 = load_gpu("l40s"), load_gpu("b200")
    block, tensor = fp8("block"), fp8("tensor")
    # DeepSeek/Qwen3-FP8 style 128x128 block scales take the fp8_block kernel; per-tensor fp8 the fp8 one
    assert gemm_kernel(block, "bf16", H100) == "fp8_block" and gemm_kernel(tensor, "bf16", H100) == "fp8"
    assert gemm_kernel(nvfp4(), "bf16", b200) == "nvfp4"
    # a GPU with tables costs the variant with its own fit, at the fp8 peak
    c = K.gemm_coeffs(H100, "fp8_block")
    assert H100.has("max_compute_efficiency_fp8_block") and c.efficiency == H100.q("max_compute_efficiency_fp8_block")
    assert c.peak_flops == H100.peak_flops("fp8") and c.elem_bytes == pytest.approx(1.0 + 4.0 / 128**2)
    assert "fp8_block kernel coefficients" in kernel_path(block, "bf16", H100)
    # a GPU without an fp8_block table takes its fp8 coefficients and says so
    fb, f8 = K.gemm_coeffs(l40s, "fp8_block"), K.gemm_coeffs(l40s, "fp8")
    assert not l40s.has("gemm_overhead_fp8_block") and not l40s.has("gemm_k_half_fp8_block")
    assert replace(fb, elem_bytes=f8.elem_bytes) == f8
    assert "no fp8_block kernel table for l40s" in kernel_path(block, "bf16", l40s)
