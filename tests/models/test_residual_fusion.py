"""vLLM's residual adds fused into the next RMSNorm (issue 16): the MLP residual add opens the next layer with
its input norm in one kernel (fused_add_rms_norm), so a layer launches one element-wise kernel fewer than
an add of its own would, with the same FLOPs, fewer HBM bytes and the same collectives."""

import pytest

import energylens
from energylens.models import load_model
from energylens.models.dense import BuildOptions, build_dense
from energylens.models.registry import resolve

KW = dict(batch=8, prompt_len=512, output_len=16)


def _ops(model, **kw):
    p = energylens.predict(model, "h100-sxm", **KW, **kw)
    return p, {o.name: o for o in p.decode.ops}


@pytest.mark.parametrize("name", ["llama3-8b", "qwen3-8b", "gemma-3-12b-it", "qwen3-30b-a3b", "deepseek-v3"])
def test_every_layer_opens_with_the_fused_residual_add_and_norm(name):
    model = load_model(name)
    for block in model.blocks:
        first, second = block.ops[:2]
        assert first.name == "mlp_residual" and first.group == second.group == "residual_add_norm"
        assert [t.name for t in first.inputs] == ["x", "x_next"] and second.inputs[0].name == first.output.name
        assert block.ops[-1].output.name == block.output == "x_next"  # the layer's output, read by the next
        assert sum(op.name == "mlp_residual" for op in block.ops) == 1  # one add per layer, as before


def test_fused_layer_costs_one_launch_fewer_same_flops_fewer_bytes():
    cfg, short, hf = resolve("llama3-8b")
    fused = build_dense(cfg, short, hf, BuildOptions())
    unfused = build_dense(cfg, short, hf, BuildOptions(fused_add_norm=False))
    for tp in (1, 2):
        pf, kf = _ops(fused, tp=tp)
        pu, ku = _ops(unfused, tp=tp)
        layers = cfg.int("num_hidden_layers")
        # fused: [add+input norm] and [attention add+norm]; unfused: norm, add, norm, add
        assert kf["decoder.residual_add_norm"].count == kf["decoder.add_norm"].count
        launches_f = sum(o.count for o in pf.decode.ops)
        launches_u = sum(o.count for o in pu.decode.ops)
        steps = kf["decoder.add_norm"].count // layers  # decode steps costed
        assert launches_u - launches_f == 2 * layers * steps
        assert sum(o.flops * o.count for o in pf.decode.ops) == pytest.approx(
            sum(o.flops * o.count for o in pu.decode.ops), rel=1e-12)
        assert sum(o.bytes * o.count for o in pf.decode.ops) < sum(o.bytes * o.count for o in pu.decode.ops)
        assert pf.decode.latency_s < pu.decode.latency_s
        assert [(c.name, c.count) for c in pf.decode.collectives] == [(c.name, c.count) for c in pu.decode.collectives]
