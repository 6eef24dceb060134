"""The kernel-table fit (tools/calibrate_tables.py) recovers the shipped coefficients from a subsample."""

import numpy as np
import pytest

from energylens.calibration import kernels as CK
from energylens.calibration.power import fit_power
from energylens.calibration.profiles import profile_path, updated_text
from energylens.calibration.tables import load_table
from energylens.hardware import load_gpu
from energylens.hardware.profile import Quantity

H100 = load_gpu("h100-sxm")
H200 = load_gpu("h200")
EVERY = 3  # every third row: the fit must land within TOL of the full-table fit shipped in the profile
TOL = 0.10


def _close(gpu, name, value, tol=TOL):
    shipped = gpu.q(name)
    assert gpu.quantities[name].kind in ("fitted", "derived")
    assert value == pytest.approx(shipped, rel=tol), name


def test_gemm_fit_recovers_shipped_coefficients():
    fit = CK.fit_gemm(H100, CK.subsample(load_table("h100-sxm", "gemm"), EVERY), "bfloat16")
    got = {c.name: c.value for c in fit.coefficients}
    for name in ("max_compute_efficiency_bf16", "gemm_memory_efficiency_bf16"):
        _close(H100, name, got[name])
    assert got["gemm_tile_m_bf16"] == H100.q("gemm_tile_m_bf16")
    assert fit.held_median_pct < 10.0  # held-out shapes (whole N/K values), see README Accuracy


def test_decode_fit_recovers_shipped_coefficients():
    fit = CK.fit_decode(H100, CK.subsample(load_table("h100-sxm", "generation_attention"), EVERY))
    got = {c.name: c.value for c in fit.coefficients}
    for name in ("decode_attn_memory_efficiency", "decode_attn_overhead"):
        _close(H100, name, got[name])
    assert fit.held_median_pct < 15.0


def test_power_fit_recovers_shipped_coefficients():
    # the kernel-power fit is shipped (busy power, J/FLOP, J/B, the fused-MoE J/B ratio): half of the rows
    # recover the full-table fit
    fit = fit_power(H200, every=2)
    _close(H200, "busy_power", fit.busy_power_w)
    _close(H200, "energy_per_flop_bf16", fit.energy_per_flop_j["bf16"])
    _close(H200, "energy_per_byte_hbm", fit.energy_per_byte_j)
    _close(H200, "moe_byte_energy_ratio", fit.moe_byte_energy_ratio)
    assert "power_h200_sxm_0.22.0_{gemm," in fit.source and H200.quantities["busy_power"].kind == "fitted"
    # a weight stream at the fitted bandwidth does not throttle
    assert fit.static_power_w + fit.energy_per_byte_j * H200.hbm_bandwidth_bytes_per_s * H200.max_memory_efficiency \
        < fit.power_limit_w
    # held-out shapes: GEMMs (at or near the cap) within 5 %, every family within 30 % (README Accuracy)
    assert np.median(fit.held_energy_ape["gemm bfloat16"]) < 0.05
    assert all(np.median(a) < 0.30 for a in fit.held_energy_ape.values())
    # H100 SXM (no power table) carries the H200 fit: same GH100 die and clocks
    assert H100.busy_power_w == H200.busy_power_w and H100.quantities["busy_power"].kind == "derived"
    assert H100.energy_per_flop_j("bf16") == H200.energy_per_flop_j("bf16")


def test_busy_power_enters_kernel_energy():
    # a memory-bound kernel at f_max: energy = bytes x J/B + (idle + busy) x latency (cost/roofline.py)
    from energylens.cost.roofline import kernel_cost_from_terms

    kc = kernel_cost_from_terms(H200, 1e-6, 1e9, 0.0, overhead_s=0.0)
    t = float(kc.latency_s)
    assert float(kc.energy_j) == pytest.approx(1e9 * H200.energy_per_byte_j + (H200.idle_power_w + H200.busy_power_w) * t)
    no_busy = H200.with_quantities({"busy_power": Quantity(0.0, "W", "user", "test")})
    assert float(kernel_cost_from_terms(no_busy, 1e-6, 1e9, 0.0, overhead_s=0.0).energy_j) == pytest.approx(
        float(kc.energy_j) - H200.busy_power_w * t)


def test_expert_loads_balanced_and_power_law():
    load, hit = CK.aic_expert_loads([64, 64, 1, 64], [8, 8, 8, 8], [256, 256, 256, 256], [8, 8, 1, 1],
                                    ["balanced", "power_law_1.2", "balanced", "power_law_1.2"])
    # balanced, EP 8: 32 local experts with 64*8/256 = 2 tokens each
    assert load[0, :32] == pytest.approx(2.0) and hit[0, :32] == pytest.approx(1.0) and not load[0, 32:].any()
    # power law: the shard holds one expert in every 8 of the ranking (ranks 0, 8, ...): the hottest expert and a
    # thin tail, so more than its 1/8 share but far less than the 32 hottest experts would get
    full = load[3]
    assert load[1, :32] == pytest.approx(full[::8]) and not load[1, 32:].any()
    assert 64 * 8 / 8 < load[1].sum() < 0.5 * full[:32].sum()
    # each token takes 8 distinct experts: an expert gets at most every token, and no routed pair is lost
    assert full.max() <= 64 + 1e-9 and full.sum() == pytest.approx(64 * 8)
    assert hit[3] == pytest.approx(-np.expm1(-full))
    # one token, top-8 of 256: 8 experts hit in expectation
    assert hit[2].sum() == pytest.approx(8.0)
    # a flatter routing (smaller exponent scale) spreads the same pairs over more experts
    flat, flat_hit = CK.aic_expert_loads([64], [8], [256], [1], ["power_law_1.2"], 0.6)
    assert flat.sum() == pytest.approx(64 * 8) and flat_hit.sum() > hit[3].sum() and flat.max() < full.max()


def test_balanced_rows_deal_pairs_round_robin():
    """The collector's balanced routing deals pairs over the experts in order: hand-counted shards."""
    load, hit = CK.aic_expert_loads([4, 100, 300, 300], [1, 1, 1, 1], [128, 128, 128, 128], [32, 1, 1, 4],
                                    ["balanced"] * 4)
    # 4 pairs hit experts 0-3; EP 32 holds experts 0, 32, 64, 96: only expert 0 is hit, with one pair
    assert load[0, :4].tolist() == [1.0, 0.0, 0.0, 0.0] and hit[0, :4].tolist() == [1.0, 0.0, 0.0, 0.0]
    # 100 pairs over 128 experts: the first 100 get one each
    assert load[1].tolist() == [1.0] * 100 + [0.0] * 28 and hit[1].sum() == 100
    # 300 pairs: 2 each, and experts 0-43 a third; EP 4 holds 0, 4, ..., 124: 11 of them below 44
    assert load[2, :44] == pytest.approx(3.0) and load[2, 44:] == pytest.approx(2.0) and load[2].sum() == 300
    assert load[3, :32].sum() == pytest.approx(2 * 32 + 11) and not load[3, 32:].any()


def test_moe_routed_passes_scale_with_routed_pairs():
    from energylens.cost import families as K

    one = K.moe_routed_s(1024, 1024, 10.0, 3.35e12)
    assert float(one) == pytest.approx(1024 * 10.0 * 1024 / 3.35e12)
    assert float(K.moe_routed_s(2048, 1024, 10.0, 3.35e12)) == pytest.approx(2 * float(one))
    assert float(K.moe_routed_s(1024, 1024, 0.0, 3.35e12)) == 0.0


def test_moe_token_pass_counts_tokens_not_routed_pairs():
    """The per-token pass: 512 tokens x 5120 hidden x 60 B at 4.8 TB/s = 32.768 us, whatever top-k (the fit
    passes tokens, not tokens x top-k: top-1 and top-8 calls of the same tokens pay the same)."""
    from energylens.cost import families as K

    assert float(K.moe_token_pass_s(512, 5120, 60.0, 4.8e12)) == pytest.approx(32.768e-6)
    assert K.moe_token_pass_s([512, 1024], 5120, 60.0, 4.8e12).tolist() == pytest.approx([32.768e-6, 65.536e-6])
    assert float(K.moe_token_pass_s(512, 5120, 0.0, 4.8e12)) == 0.0


def test_profile_writer_replaces_and_appends(tmp_path):
    original = profile_path("a100-sxm-80gb").read_text()
    out = updated_text(original, {"max_memory_efficiency": Quantity(0.5, "1", "fitted", "test"),
                                  "gemm_k_half_bf16": Quantity(99.0, "1", "fitted", "test")}, "a100 profile")
    path = tmp_path / "a100.yaml"
    path.write_text(out)
    gpu = load_gpu(str(path))
    assert gpu.max_memory_efficiency == 0.5 and gpu.q("gemm_k_half_bf16") == 99.0
    assert out.count("max_memory_efficiency:") == 1
    assert out.split("\n")[:5] == original.split("\n")[:5]  # header comments kept


def test_weight_only_moe_fits_recover_shipped_coefficients():
    # gpt-oss MXFP4 (OpenAI Triton kernel on H100) and compressed-tensors int4 (Marlin) experts have their own
    # fits, on the rows of the kernel vLLM runs for them; the fit lands on the shipped profile values
    table = load_table("h100-sxm", "moe")
    for table_dtype, key in (("w4a16_mxfp4", "mxfp4"), ("int4_wo", "int4")):
        fit = CK.fit_moe(H100, table, table_dtype)
        got = {c.name: c.value for c in fit.coefficients}
        assert fit.in_profile and fit.rows_held > 0
        for name in (f"moe_compute_efficiency_{key}", f"moe_memory_efficiency_{key}", f"moe_overhead_{key}"):
            _close(H100, name, got[name], tol=1e-3)
        assert fit.held_median_pct < 8.0  # held-out shapes: 32 experts (mxfp4), TP 4 and 16 shards (int4)


def test_fp8_block_and_custom_allreduce_fits_recover_shipped_coefficients():
    # fp8_block: device coefficients under the table's host-side floor (reported, not written to the profile)
    gemm = CK.subsample(load_table("h100-sxm", "gemm"), EVERY)
    block = CK.fit_gemm_block(H100, gemm, CK.fit_gemm(H100, gemm, "fp8"))
    got = {c.name: c for c in block.coefficients}
    _close(H100, "max_compute_efficiency_fp8_block", got["max_compute_efficiency_fp8_block"].value)
    assert got["gemm_host_floor_fp8_block"].kind == "reported" and not H100.has("gemm_host_floor_fp8_block")
    assert 5e-5 < got["gemm_host_floor_fp8_block"].value < 2e-4  # ~90 us on H100
    # vLLM custom all-reduce (all rows: the table is small); held out on 4 GPUs
    ar = CK.fit_allreduce(H100, load_table("h100-sxm", "custom_allreduce"))
    for c in ar.coefficients:
        _close(H100, c.name, c.value, tol=1e-3)
    assert ar.held_median_pct < 8.0


def test_shipped_power_fit_reads_capped_decode_runs_through_a_gap_and_fits_a_moe_byte_ratio():
    # shipped: the decode-attention replay gap on the collector's capped runs (< 1/3000 s) and the fused-MoE
    # J/B ratio; both explain their family better than the plain fit (no gap, no ratio: the fit shipped before)
    from energylens.calibration.power import REPLAY_GAP_MAX_S, RUN_CAP_LATENCY_S, _moe_stream_bw

    plain, fit = fit_power(H200, every=4, gap_families=(), moe_ratio=False), fit_power(H200, every=4)
    assert plain.replay_gap_s == {} and plain.moe_byte_energy_ratio == 1.0
    assert set(fit.replay_gap_s) == {"generation_attention"} and fit.gap_below_s == RUN_CAP_LATENCY_S
    assert 10e-6 < fit.replay_gap_s["generation_attention"] < REPLAY_GAP_MAX_S
    # (the MoE ratio's gain is smaller since fused-MoE energy is charged on padded-tile FLOPs, which carry the
    # padding the ratio took before: 8.0 -> 5.3 % on the whole table, 8.5 -> 6.9 % on this subsample)
    for fam, gain in (("decode attention", 0.05), ("moe", 0.01)):
        assert np.median(fit.held_energy_ape[fam]) < np.median(plain.held_energy_ape[fam]) - gain, fam
    assert 1.0 < fit.moe_byte_energy_ratio < 4.0
    # a fused-MoE weight stream at the fastest fitted MoE bandwidth does not throttle
    moe_w = fit.static_power_w + fit.energy_per_byte_j * fit.moe_byte_energy_ratio * _moe_stream_bw(H200)
    assert moe_w < fit.power_limit_w


def test_replay_gap_dilutes_only_capped_runs():
    from energylens.calibration.power import RUN_CAP_LATENCY_S, _parts, predicted_power_w

    fit = fit_power(H200, every=8)
    dec = next(p for p in _parts(H200, 8) if p.family == "generation_attention")
    read, own = predicted_power_w(fit, dec), predicted_power_w(fit, dec, kernel_only=True)
    capped = dec.latency_s < RUN_CAP_LATENCY_S
    assert capped.any() and (~capped).any()
    assert np.all(read[capped] < own[capped]) and np.array_equal(read[~capped], own[~capped])


def test_only_decode_attention_readings_step_at_the_run_cap():
    # why only decode attention has a gap: its reading above idle over the model's jumps where the
    # collector's runs stop being capped (1/3000 s); prefill attention and fused MoE read the same on both sides
    from energylens.calibration.power import run_cap_step

    step = run_cap_step(fit_power(H200, gap_families=(), moe_ratio=False), H200)
    under, over, n_under, n_over = step["generation_attention"]
    assert n_under > 100 and n_over > 100 and over - under > 0.12
    for fam in ("context_attention", "moe"):
        under, over, n_under, n_over = step[fam]
        assert n_under > 100 and n_over > 100 and over - under < 0.05, fam


def test_structural_power_fit_takes_a_gap_for_every_family():
    # reported, not shipped (README Accuracy): a replay gap for every family at every latency
    from energylens.calibration.power import REPLAY_GAP_MAX_S, STRUCTURAL

    fit = fit_power(H200, every=4, structural=True)
    assert fit.derived_from == STRUCTURAL and set(fit.replay_gap_s) == {"gemm", "generation_attention",
                                                                        "context_attention", "moe"}
    assert fit.gap_below_s == np.inf and all(0.0 <= g <= REPLAY_GAP_MAX_S for g in fit.replay_gap_s.values())
    assert fit.replay_gap_s["generation_attention"] > 10 * fit.replay_gap_s["gemm"]  # GEMMs replay back to back


def test_structural_power_fit_variants_fit_only_the_terms_asked_for():
    fit = fit_power(H200, every=8, structural=True, gap_families=("generation_attention",), moe_ratio=False)
    assert set(fit.replay_gap_s) == {"generation_attention"} and fit.moe_byte_energy_ratio == 1.0
