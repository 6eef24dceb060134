"""Issue 4: layouts as sharding, derived collectives, per-rank timelines."""

import numpy as np
import pytest

import energylens
from energylens.errors import LayoutError
from energylens.models import load_model
from energylens.parallel.layout import Layout, check_layout, degrees
from energylens.parallel.sharding import CollectiveStep
from energylens.program import build_program


def einsum_flops(phase):
    # kernels with a contraction; element-wise-only kernels (norms, residual adds) are replicated per TP rank
    return sum(o.flops for o in phase.ops if o.kind == "einsum" or (o.kind == "fused" and "add_norm" not in o.name))


def test_megatron_layer_has_two_all_reduces_of_btd():
    b, t = 2, 1024
    p = energylens.predict("llama3-70b", "h100-sxm", tp=8, batch=b, prompt_len=t, output_len=1)
    layer = [c for c in p.prefill.collectives if c.name.startswith("decoder.")]
    assert sorted(c.kind for c in layer) == ["all_reduce", "all_reduce"]
    assert {c.name for c in layer} == {"decoder.attn.o_proj:all_reduce", "decoder.mlp.down_proj:all_reduce"}
    d = load_model("llama3-70b").dims["d"]
    for c in layer:
        assert c.bytes == b * t * d * 2  # bf16 partial sums of the residual stream
        assert c.count == 80 and c.group_size == 8
    # vocabulary-parallel embedding -> all-reduce; sampling over sharded logits -> all-gather of the last token
    embed = next(c for c in p.prefill.collectives if c.name == "embed:all_reduce")
    assert embed.bytes == b * t * d * 2
    sampler = next(c for c in p.prefill.collectives if c.name == "sampler:all_gather")
    assert sampler.bytes == b * 1 * 128256 * 2


def test_sequence_parallel_uses_reduce_scatter_and_all_gather():
    p = energylens.predict("llama3-70b", "h100-sxm", tp=8, sp=True, batch=1, prompt_len=1024, output_len=1)
    kinds = sorted(c.kind for c in p.prefill.collectives if c.name.startswith("decoder."))
    assert kinds == ["all_gather", "all_gather", "reduce_scatter", "reduce_scatter"]
    assert not any(c.kind == "all_reduce" and c.name.startswith("decoder.") for c in p.prefill.collectives)


def test_tp1_has_no_collectives_and_matches_single_gpu():
    a = energylens.predict("llama3-8b", "h100-sxm", batch=4, prompt_len=777, output_len=33)
    b = energylens.predict("llama3-8b", "h100-sxm", batch=4, prompt_len=777, output_len=33,
                           layout=Layout(tp=1, pp=1, dp=1))
    assert not a.prefill.collectives and not a.decode.collectives
    assert a.to_dict() == b.to_dict()


@pytest.mark.parametrize("tp", [2, 4, 8])
def test_total_einsum_flops_invariant_across_tp(tp):
    base = energylens.predict("llama3-70b", "h100-sxm", batch=2, prompt_len=512, output_len=4)
    p = energylens.predict("llama3-70b", "h100-sxm", tp=tp, batch=2, prompt_len=512, output_len=4)
    assert einsum_flops(p.prefill) == pytest.approx(einsum_flops(base.prefill), rel=1e-12)
    assert einsum_flops(p.decode) == pytest.approx(einsum_flops(base.decode), rel=1e-12)
    # per-GPU work x tp = total work
    gate = next(o for o in p.prefill.ops if o.name == "decoder.mlp.gate_up")
    assert gate.count == 80 * tp


def test_sequence_parallel_total_flops_equal_single_gpu():
    base = energylens.predict("llama3-70b", "h100-sxm", batch=1, prompt_len=1024, output_len=1)
    p = energylens.predict("llama3-70b", "h100-sxm", tp=8, sp=True, batch=1, prompt_len=1024, output_len=1)
    assert sum(o.flops for o in p.prefill.ops) == pytest.approx(sum(o.flops for o in base.prefill.ops), rel=1e-9)


@pytest.mark.parametrize("pp", [2, 4])
def test_pipeline_send_recv_and_bubbles(pp):
    p = energylens.predict("llama3-70b", "h100-sxm", tp=2, pp=pp, batch=1, prompt_len=512, output_len=8)
    sr = [c for c in p.prefill.collectives if c.kind == "send_recv"]
    assert len(sr) == 1 and sr[0].count == pp - 1
    assert sr[0].bytes == 1 * 512 * 8192 * 2
    assert p.prefill.breakdown.idle_wait_j > 0
    stages = {g.stage for g in p.prefill.per_gpu}
    assert stages == set(range(pp)) and len(p.prefill.per_gpu) == 2 * pp
    for g in p.prefill.per_gpu:
        assert g.busy_s + g.idle_s == pytest.approx(p.prefill.latency_s, rel=1e-9)
    # a stage's GPUs are busy for about 1/pp of the phase
    busy = np.mean([g.busy_s for g in p.prefill.per_gpu]) / p.prefill.latency_s
    assert busy == pytest.approx(1 / pp, rel=0.1)


def test_data_parallel_replicas_scale_energy():
    one = energylens.predict("llama3-8b", "h100-sxm", batch=4, prompt_len=256, output_len=8)
    two = energylens.predict("llama3-8b", "h100-sxm", batch=8, prompt_len=256, output_len=8, dp=2)
    assert two.prefill.energy_j == pytest.approx(2 * one.prefill.energy_j, rel=1e-9)
    assert two.prefill.latency_s == pytest.approx(one.prefill.latency_s, rel=1e-9)
    assert len(two.prefill.per_gpu) == 2


def test_kv_heads_replicate_when_tp_exceeds_them():
    m = load_model("qwen3-30b-a3b") if False else load_model("llama3-8b")  # 8 KV heads
    degs = degrees(m, Layout(tp=16))
    assert int(degs["g"]) == 8 and int(degs["r"]) == 2
    with pytest.raises(LayoutError) as e:
        check_layout(m, Layout(tp=64))  # 32 query heads
    assert "32 attention heads" in str(e.value)


@pytest.mark.parametrize("kw,field", [(dict(tp=3), "tp"), (dict(pp=3), "pp"), (dict(tp=6), "tp"), (dict(ep=2), "ep")])
def test_indivisible_layouts_are_errors(kw, field):
    with pytest.raises(LayoutError) as e:
        energylens.predict("llama3-70b", "h100-sxm", **kw)
    assert str(e.value).startswith(field)


def test_vectorised_validate_mask():
    m = load_model("llama3-70b")
    # 64 query heads, 8 KV heads (replicated beyond tp 8), f = 28672: 3, 6 and 128 do not divide
    mask = check_layout(m, Layout(tp=np.array([1, 2, 3, 6, 8, 16, 128])), strict=False)
    assert mask.tolist() == [True, True, False, False, True, True, False]


def test_collectives_are_derived_not_listed():
    m = load_model("llama3-8b")
    prog = build_program(m, Layout(tp=2))
    steps = [s for _, st in prog.blocks for s in st if isinstance(s, CollectiveStep)]
    assert all(s.reason for s in steps)
    assert build_program(m, Layout(tp=1)).blocks[0][1] and not [
        s for s in build_program(m, Layout(tp=1)).blocks[0][1] if isinstance(s, CollectiveStep)]


def test_multi_node_tp_costs_more_communication():
    a = energylens.predict("llama3.1-405b", "h100-sxm", tp=16, batch=1, prompt_len=1024, output_len=4, gpus_per_node=16)
    b = energylens.predict("llama3.1-405b", "h100-sxm", tp=16, batch=1, prompt_len=1024, output_len=4, gpus_per_node=8)
    ca = sum(c.latency_s for c in a.prefill.collectives)
    cb = sum(c.latency_s for c in b.prefill.collectives)
    assert cb > ca


def test_pipeline_micro_batches_fill_the_pipeline():
    kw = dict(tp=2, batch=16, prompt_len=2048, output_len=64)
    one = energylens.predict("llama3-70b", "h100-sxm", pp=1, **kw)
    two = energylens.predict("llama3-70b", "h100-sxm", pp=2, **kw)
    four = energylens.predict("llama3-70b", "h100-sxm", pp=4, **kw)
    # prefill: one pass of a micro-batch plus one slowest stage per further micro-batch -> faster with pp
    assert four.prefill.latency_s < two.prefill.latency_s < one.prefill.latency_s
    # decode: each micro-batch re-reads its stage's weights every step: about the same step time, more energy
    assert two.decode.latency_s == pytest.approx(one.decode.latency_s, rel=0.1)
    assert four.decode.energy_j > two.decode.energy_j > one.decode.energy_j
    for p in (two, four):
        for phase in (p.prefill, p.decode):
            assert sum(g.energy_j for g in phase.per_gpu) == pytest.approx(phase.energy_j, rel=1e-9)
            ops = sum(o.energy_j for o in phase.ops) + sum(c.energy_j for c in phase.collectives)
            assert ops + phase.breakdown.idle_wait_j == pytest.approx(phase.energy_j, rel=1e-9)
            for g in phase.per_gpu:
                assert g.busy_s <= phase.latency_s * (1 + 1e-9)
    # batch 1 cannot be split: identical to the whole-batch pipeline
    a = energylens.predict("llama3-70b", "h100-sxm", tp=2, pp=2, batch=1, prompt_len=512, output_len=8)
    assert a.prefill.breakdown.idle_wait_j > 0 and {c.count for c in a.prefill.collectives if c.kind == "send_recv"} == {1}
