"""energylens.cost.kernels: a program's steps costed on a GPU (hand-counted FLOPs and bytes)."""

from __future__ import annotations

import numpy as np
import pytest

from energylens.cost.kernels import kernel_groups
from energylens.cost.plan import cost_steps
from energylens.hardware import load_gpu
from energylens.models import load_model
from energylens.parallel.layout import Layout, degrees
from energylens.program import build_program


def _layer(model, layout, sizes):
    prog = build_program(model, layout)
    block, steps = prog.blocks[0]
    all_sizes = {**{k: np.asarray(float(v)) for k, v in model.dims.items()}, **sizes}
    return cost_steps(load_gpu("h100-sxm"), model, list(steps), all_sizes, degrees(model, layout),
                      {a: np.asarray(float(getattr(layout, a))) for a in ("tp", "pp", "dp", "ep")})


def test_gemm_flops_are_two_m_n_k():
    m = load_model("llama3-8b")
    kernels, _ = _layer(m, Layout(), {"b": np.asarray(1.0), "t": np.asarray(128.0), "s": np.asarray(128.0)})
    by_op = {op: k for k in kernels for op in k.ops}
    down = by_op[next(op for op in by_op if "down" in op)]
    d, f = m.dims["d"], m.dims["f"]
    assert float(down.flops) == pytest.approx(2 * 128 * f * d, rel=1e-12)
    # bytes: the weight (bf16) plus the activation in and out at least
    assert float(down.bytes) >= 2 * f * d


def test_tp_divides_the_flops_of_sharded_gemms():
    m = load_model("llama3-8b")
    sizes = {"b": np.asarray(2.0), "t": np.asarray(64.0), "s": np.asarray(64.0)}
    k1, _ = _layer(m, Layout(), sizes)
    k4, c4 = _layer(m, Layout(tp=4), sizes)
    f1 = sum(float(k.flops) for k in k1 if k.kind != "elementwise")
    f4 = sum(float(k.flops) for k in k4 if k.kind != "elementwise")
    assert f4 < f1 / 3.5  # GEMMs and attention split over 4 ranks (norms are replicated)
    assert [c.kind for c in c4] == ["all_reduce", "all_reduce"]
    assert all(float(c.latency_s) > 0 and float(c.energy_j_per_gpu) > 0 for c in c4)


def test_costs_are_positive_and_monotone_in_tokens():
    m = load_model("llama3-8b")
    small, _ = _layer(m, Layout(), {"b": np.asarray(1.0), "t": np.asarray(16.0), "s": np.asarray(16.0)})
    big, _ = _layer(m, Layout(), {"b": np.asarray(1.0), "t": np.asarray(4096.0), "s": np.asarray(4096.0)})
    t_small = sum(float(k.cost.latency_s) for k in small)
    t_big = sum(float(k.cost.latency_s) for k in big)
    assert 0 < t_small < t_big
    assert all(float(k.cost.energy_j) > 0 for k in big)


def test_kernel_groups_join_fusion_groups_and_split_at_collectives():
    m = load_model("llama3-8b")
    _, steps = build_program(m, Layout(tp=2)).blocks[0]
    groups = kernel_groups(list(steps))
    assert sum(1 for g in groups if not isinstance(g, list)) == 2  # the two all-reduces stand alone
    assert any(isinstance(g, list) and len(g) > 1 for g in groups)  # a fused kernel (e.g. flash attention)
