"""Overlap model: exact sequential limit, timeline bounds, SM monotonicity, wave quantisation, energy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import energylens
from energylens.cost.collectives import collective_cost, default_comm_sms
from energylens.cost.families import gemm_coeffs
from energylens.cost.phase import evaluate_phase
from energylens.cost.roofline import gemm_efficiency
from energylens.errors import LayoutError
from energylens.hardware import load_gpu
from energylens.overlap.cost import chunk_sizes, evaluate_overlap, gpu_partition, overlap_timeline
from energylens.overlap.rules import OverlapPlan
from energylens.overlap.search import predict_with_overlap
from energylens.parallel.layout import Layout
from energylens.pipeline import prepare
from energylens.program import build_program
from energylens.workload import Workload, decode_sizes, prefill_sizes

H100 = load_gpu("h100-sxm")


def _phase(model="llama3-8b", tp=2, sp=False, batch=1, prompt=1024, decode=False, output=8, **lay):
    m, g = prepare(model, H100, None)
    layout = Layout(tp=tp, sp=sp, **lay)
    prog = build_program(m, layout)
    w = Workload(batch, prompt, output)
    bpr = batch // int(layout.dp)
    sizes, weights = (decode_sizes if decode else prefill_sizes)(w, bpr)
    base = evaluate_phase(m, g, layout, prog, sizes, weights, decode=decode)
    return m, g, layout, prog, sizes, weights, base


# ------------------------------------------------------------------------- sequential limit (exact)


@pytest.mark.parametrize("plans", [None, [], OverlapPlan("*", None, 4, 0), [OverlapPlan("*:all_reduce", None, 8, 0)],
                                   OverlapPlan("no-such-collective*", None, 4, 16)])
def test_no_overlap_reproduces_predict_exactly(plans):
    p = predict_with_overlap("llama3-8b", "h100-sxm", tp=2, batch=2, prompt_len=512, output_len=20, plans=plans)
    ref = energylens.predict("llama3-8b", "h100-sxm", tp=2, batch=2, prompt_len=512, output_len=20)
    for mine, theirs in ((p.prefill, ref.prefill), (p.decode, ref.decode)):
        assert mine.latency_s == theirs.latency_s
        assert mine.energy_j == theirs.energy_j
        assert mine.pairs == ()


@pytest.mark.parametrize("sp,decode", [(False, False), (True, False), (False, True)])
def test_one_chunk_at_default_sms_is_the_sequential_formula(sp, decode):
    """C = 1 with NCCL's default SMs runs the timeline code path and must land on the baseline."""
    m, g, layout, prog, sizes, weights, base = _phase(sp=sp, decode=decode, batch=4)
    k = int(default_comm_sms(g))
    op = evaluate_overlap(m, g, layout, prog, sizes, weights, decode=decode, plans=[OverlapPlan("*", None, 1, k)],
                          baseline=base)
    assert op.pairs
    np.testing.assert_allclose(op.latency_s, base.latency_s, rtol=1e-12)
    np.testing.assert_allclose(op.energy_j, base.energy_j, rtol=1e-12)
    for pc in op.pairs:
        np.testing.assert_allclose(pc.latency_s, pc.sequential_latency_s, rtol=1e-12)


# ------------------------------------------------------------------------- timeline


def test_timeline_hand_count():
    # c = 3, m = 2, C = 4: T = 3 + 2 + 3*3 = 14; both busy 3*2 = 6; compute only 12 - 6; comm only 8 - 6
    tl = overlap_timeline(3.0, 30.0, 2.0, 10.0, 4, idle_power_w=100.0, power_limit_w=1000.0)
    assert float(tl.latency_s) == pytest.approx(14.0)
    assert float(tl.overlapped_s) == pytest.approx(6.0)
    assert float(tl.compute_only_s) == pytest.approx(6.0)
    assert float(tl.comm_only_s) == pytest.approx(2.0)
    # energy: dynamic 4*30 + 4*10, plus idle for 14 s; power while both run 100 + 10 + 5
    assert float(tl.energy_j) == pytest.approx(160.0 + 1400.0)
    assert float(tl.overlap_power_w) == pytest.approx(115.0)
    assert not bool(tl.power_capped)


def test_timeline_power_cap_stretches_only_the_shared_segment():
    # pc = 400 W, pm = 300 W above idle 100 W, limit 600 W: alone each fits, together 800 > 500 headroom
    tl = overlap_timeline(1.0, 400.0, 1.0, 300.0, 3, idle_power_w=100.0, power_limit_w=600.0)
    assert float(tl.compute_only_s) == pytest.approx(1.0)
    assert float(tl.comm_only_s) == pytest.approx(1.0)
    assert float(tl.overlapped_s) == pytest.approx(2.0 * 700.0 / 500.0)
    assert float(tl.overlap_power_w) == pytest.approx(600.0)
    assert bool(tl.power_capped)
    dyn = 3 * 400.0 + 3 * 300.0  # conserved
    assert float(tl.energy_j) == pytest.approx(dyn + 100.0 * float(tl.latency_s))


@settings(max_examples=200, deadline=None)
@given(c=st.floats(1e-6, 1e-2), m=st.floats(1e-6, 1e-2), pc=st.floats(0, 900), pm=st.floats(0, 900),
       n=st.integers(1, 32))
def test_timeline_bounds(c, m, pc, pm, n):
    idle, lim = 120.0, 700.0
    tl = overlap_timeline(c, pc * c, m, pm * m, n, idle, lim)
    t = float(tl.latency_s)

    def alone(dur, p):
        return max(dur, dur * p / (lim - idle))

    lo = max(alone(n * c, pc), alone(n * m, pm))
    hi = alone(n * c, pc) + alone(n * m, pm)
    assert lo * (1 - 1e-12) <= t <= hi * (1 + 1e-12)
    # energy: dynamic energy is conserved, idle power runs for the whole timeline
    assert float(tl.energy_j) == pytest.approx(n * (pc * c + pm * m) + idle * t, rel=1e-9)
    # power never above the limit in the shared segment
    assert float(tl.overlap_power_w) <= lim + 1e-9


@settings(max_examples=25, deadline=None)
@given(k=st.integers(1, 96), n=st.sampled_from([1, 2, 3, 4, 8, 16]), batch=st.sampled_from([1, 2, 4]),
       prompt=st.sampled_from([256, 1024, 2048]), sp=st.booleans())
def test_pair_latency_between_max_and_sum(k, n, batch, prompt, sp):
    m, g, layout, prog, sizes, weights, base = _phase(model="llama3-8b", tp=4, sp=sp, batch=batch, prompt=prompt)
    op = evaluate_overlap(m, g, layout, prog, sizes, weights, decode=False, plans=[OverlapPlan("*", None, n, k)],
                          baseline=base)
    assert op.pairs
    kernels = dict((r.name, r) for s, r in base.kernels)
    for pc in op.pairs:
        t = float(pc.latency_s)
        compute_all_sms = float(kernels[pc.compute].cost.latency_s)  # core's number, power cap included
        assert t >= max(compute_all_sms, float(pc.comm_alone_s)) * (1 - 1e-12)
        assert t <= (float(pc.compute_alone_s) + float(pc.comm_total_s)) * (1 + 1e-12)
        # the chunked, SM-split pieces are never cheaper than the whole on all SMs
        assert float(pc.compute_total_s) >= float(pc.compute_full_s) * (1 - 1e-12)
        assert float(pc.comm_total_s) >= float(pc.comm_alone_s) * (1 - 1e-12)


# ------------------------------------------------------------------------- SMs


@pytest.mark.parametrize("kind,size", [("all_reduce", 32e6), ("all_gather", 4e6), ("reduce_scatter", 64e6),
                                       ("all_to_all", 8e6)])
def test_more_sms_never_slow_communication(kind, size):
    ks = np.arange(1, 132)
    t = collective_cost(kind, size, 8, H100, comm_sms=ks).latency_s
    assert np.all(np.diff(t) <= 1e-15)
    assert t[0] > t[-1]


def test_more_sms_never_slow_the_overlapped_collective():
    m, g, layout, prog, sizes, weights, base = _phase(model="llama3-8b", tp=8, batch=2, prompt=2048)
    for n in (1, 2, 4, 8):
        comm = []
        for k in (1, 2, 4, 8, 16, 32, 64, 100):
            op = evaluate_overlap(m, g, layout, prog, sizes, weights, decode=False,
                                  plans=[OverlapPlan("*", None, n, k)], baseline=base)
            comm.append([float(p.comm_total_s) for p in op.pairs])
        comm = np.array(comm)
        assert np.all(np.diff(comm, axis=0) <= 1e-15)


def test_partition_wave_quantisation_hand_count():
    # 132 output tiles: one wave on 132 SMs, two on 131 (each SM 1/132 of the peak)
    tm, tn = gemm_coeffs(H100, "bf16").tile_m, gemm_coeffs(H100, "bf16").tile_n
    m, n, k = tm * 12, tn * 11, 8192
    part = gpu_partition(H100, 131)
    assert part.sm_count == 131
    full_rate = H100.peak_flops("bf16") * gemm_efficiency(H100, "bf16", m, n, k)
    part_rate = part.peak_flops("bf16") * gemm_efficiency(part, "bf16", m, n, k)
    assert float(full_rate / part_rate) == pytest.approx(2.0)
    # 128 tiles on 128 SMs: one wave, no quantisation loss, time 1 wave either way
    m2, n2 = tm * 16, tn * 8
    p128 = gpu_partition(H100, 128)
    r_full = H100.peak_flops("bf16") * gemm_efficiency(H100, "bf16", m2, n2, k)
    r_128 = p128.peak_flops("bf16") * gemm_efficiency(p128, "bf16", m2, n2, k)
    assert float(r_full / r_128) == pytest.approx(1.0)
    # never faster than the whole GPU, monotone in the SM count
    rates = [gpu_partition(H100, s).peak_flops("bf16") * gemm_efficiency(gpu_partition(H100, s), "bf16", 3000, 5000, k)
             for s in range(1, 133)]
    assert np.all(np.diff(rates) >= -1e-12 * max(rates))
    assert gpu_partition(H100, 132) is H100
    # everything else unchanged
    assert part.hbm_bandwidth_bytes_per_s == H100.hbm_bandwidth_bytes_per_s
    assert part.energy_per_flop_j("bf16") == H100.energy_per_flop_j("bf16")
    with pytest.raises(LayoutError):
        gpu_partition(H100, 0)
    with pytest.raises(LayoutError):
        gpu_partition(H100, 133)


def test_comm_sms_must_leave_sms_for_compute():
    m, g, layout, prog, sizes, weights, base = _phase()
    with pytest.raises(LayoutError):
        evaluate_overlap(m, g, layout, prog, sizes, weights, decode=False, plans=[OverlapPlan("*", None, 2, 132)])


def test_chunk_sizes_split_tokens_and_cap_at_token_count():
    sizes = {"b": np.asarray(4.0), "t": np.asarray(1.0), "s": np.asarray(100.0), "c": np.asarray(8.0)}
    out, n = chunk_sizes(sizes, 8)
    assert float(n) == 4.0 and float(out["b"]) == 1.0 and float(out["t"]) == 1.0 and float(out["c"]) == 2.0
    out, n = chunk_sizes({"b": np.asarray(2.0), "t": np.asarray(2048.0)}, 4)
    assert float(n) == 4 and float(out["t"]) == 512.0 and float(out["b"]) == 2.0


# ------------------------------------------------------------------------- phase accounting


def test_phase_totals_are_the_sum_of_pair_changes():
    m, g, layout, prog, sizes, weights, base = _phase(model="llama3-8b", tp=4, sp=True, batch=4, prompt=2048)
    op = evaluate_overlap(m, g, layout, prog, sizes, weights, decode=False, plans=[OverlapPlan("*", None, 4, 16)],
                          baseline=base)
    n_layers = m.n_layers
    dt = sum(float(p.delta_latency_s) for p in op.pairs) * n_layers
    de = sum(float(p.delta_energy_j) for p in op.pairs) * n_layers * 4
    assert float(op.latency_s - base.latency_s) == pytest.approx(dt, rel=1e-9)
    assert float(op.energy_j - base.energy_j) == pytest.approx(de, rel=1e-9)
    assert all(p.count == n_layers for p in op.pairs)


def test_pipeline_stages_wait_for_the_change():
    m, g, layout, prog, sizes, weights, base = _phase(model="llama3-8b", tp=2, batch=1, prompt=4096, pp=2)
    op = evaluate_overlap(m, g, layout, prog, sizes, weights, decode=False, plans=[OverlapPlan("*", None, 2, 24)],
                          baseline=base)
    dt = float(op.latency_s - base.latency_s)
    de_active = sum(float(p.delta_energy_j) for p in op.pairs) * m.n_layers / 2 * 2 * 2  # layers/stage x stages x tp
    # the other stage idles through every change of this stage's time
    assert float(op.energy_j - base.energy_j) == pytest.approx(de_active + g.idle_power_w * 2 * 1 * dt, rel=1e-9)


def test_decode_phase_overlap_runs_and_is_finite():
    m, g, layout, prog, sizes, weights, base = _phase(model="llama3-8b", tp=8, batch=64, prompt=512, decode=True,
                                                      output=64)
    op = evaluate_overlap(m, g, layout, prog, sizes, weights, decode=True, plans=[OverlapPlan("*", None, 4, 16)],
                          baseline=base)
    assert np.isfinite(op.latency_s).all() and np.isfinite(op.energy_j).all()
    assert op.pairs and op.latency_s.shape == base.latency_s.shape


def test_moe_expert_parallel_all_to_all_pairs():
    m, g, layout, prog, sizes, weights, base = _phase(model="qwen3-30b-a3b", tp=1, dp=8, ep=8, batch=8, prompt=1024)
    op = evaluate_overlap(m, g, layout, prog, sizes, weights, decode=False,
                          plans=[OverlapPlan("*:all_to_all", None, 2, 24)], baseline=base)
    got = {(p.collective.split(".")[-1], p.compute.split(".")[-1], p.direction) for p in op.pairs}
    assert got == {("dispatch:all_to_all", "gate_up", "consumer"), ("combine:all_to_all", "down_proj", "producer")}
    # k = 0 leaves the MoE phase (busiest-rank latency, mean-rank energy) untouched
    op0 = evaluate_overlap(m, g, layout, prog, sizes, weights, decode=False,
                           plans=[OverlapPlan("*:all_to_all", None, 2, 0)], baseline=base)
    assert float(op0.latency_s) == float(base.latency_s) and float(op0.energy_j) == float(base.energy_j)
    k = int(default_comm_sms(g))
    op1 = evaluate_overlap(m, g, layout, prog, sizes, weights, decode=False,
                           plans=[OverlapPlan("*:all_to_all", None, 1, k)], baseline=base)
    np.testing.assert_allclose([float(op1.latency_s), float(op1.energy_j)],
                               [float(base.latency_s), float(base.energy_j)], rtol=1e-12)


def test_prediction_with_overlap_reports_pairs_and_serialises():
    import json

    p = predict_with_overlap("llama3-70b", "h100-sxm", tp=8, sp=True, batch=8, prompt_len=2048, output_len=4,
                             plans=[OverlapPlan("*", None, 4, 16)])
    assert len(p.prefill.pairs) == 4
    assert p.prefill.latency_s < p.baseline.prefill.latency_s  # 16k tokens: overlap pays (docs/overlap.md)
    assert p.prefill.latency_saved_s == pytest.approx(p.baseline.prefill.latency_s - p.prefill.latency_s)
    assert p.prefill.baseline_energy_j == p.baseline.prefill.energy_j
    for pr in p.prefill.pairs:
        assert 0.0 < pr.hidden_fraction <= 1.0 and pr.overlap_power_w <= H100.power_limit_w + 1e-9
    d = json.loads(json.dumps(p.to_dict(), default=float))
    assert d["prefill"]["pairs"][0]["comm_sms"] == 16 and d["plans"][0]["chunks"] == 4


def test_pipeline_micro_batches_scale_the_change():
    m, g, layout, prog, sizes, weights, base = _phase(model="llama3-8b", tp=2, batch=2, prompt=2048, pp=2)
    mb = float(base.microbatches)
    assert mb == 2.0
    op = evaluate_overlap(m, g, layout, prog, sizes, weights, decode=False, plans=[OverlapPlan("*", None, 2, 24)],
                          baseline=base)
    dt = float(op.latency_s - base.latency_s)
    d_pass = dt / (1.0 + (mb - 1.0) / 2)  # prefill: one pass plus (m - 1) slowest stages
    de_active = sum(float(p.delta_energy_j) for p in op.pairs) * m.n_layers / 2 * 2 * 2
    expected = de_active * mb + g.idle_power_w * 2 * (2 * dt - mb * d_pass)
    assert float(op.energy_j - base.energy_j) == pytest.approx(expected, rel=1e-9)
