"""Kernel power terms beyond busy power, J/FLOP and J/B: the replay reading of a power table (a measurement
model, cost/power.py) and a fused-MoE kernel's own J per HBM byte (profile ``moe_byte_energy_ratio``)."""

from __future__ import annotations

import numpy as np
import pytest

from energylens.cost.phase import evaluate_phase
from energylens.cost.power import replay_reading_w
from energylens.cost.roofline import kernel_cost_from_terms
from energylens.errors import SpecError
from energylens.hardware import load_gpu
from energylens.hardware.profile import Quantity, parse_gpu
from energylens.models import load_model
from energylens.parallel.layout import Layout
from energylens.program import build_program
from energylens.workload import Workload, decode_sizes

H100 = load_gpu("h100-sxm")


def test_replay_reading_dilutes_the_kernel_power_by_its_duty_cycle():
    # no gap: the kernel's own power; a gap as long as the kernel: half-way between idle and the kernel
    assert float(replay_reading_w(120.0, 500.0, 1e-4, 0.0)) == pytest.approx(500.0)
    assert float(replay_reading_w(120.0, 500.0, 1e-4, 1e-4)) == pytest.approx(310.0)
    # long kernels read their own power, short ones near idle (vectorised)
    got = replay_reading_w(120.0, 500.0, np.array([1e-5, 1e-2]), 1e-4)
    assert got[0] == pytest.approx(120.0 + 380.0 / 11.0) and got[1] == pytest.approx(120.0 + 380.0 / 1.01)


def test_memory_energy_scale_multiplies_only_the_byte_energy():
    # a compute-bound kernel far below the power limit (no clock change): only the byte energy doubles
    one = kernel_cost_from_terms(H100, 1e-3, 1e8, 0.0, overhead_s=0.0)
    two = kernel_cost_from_terms(H100, 1e-3, 1e8, 0.0, overhead_s=0.0, memory_energy_scale=2.0)
    assert float(two.memory_energy_j) == pytest.approx(2.0 * float(one.memory_energy_j))
    assert float(two.latency_s) == float(one.latency_s) and float(two.static_energy_j) == float(one.static_energy_j)


def _decode_memory_j(model: str, gpu) -> float:
    m = load_model(model)
    lay = Layout(tp=1)
    sizes, w = decode_sizes(Workload(1, 512, 64), 8)
    return float(evaluate_phase(m, gpu, lay, build_program(m, lay), sizes, w, decode=True).memory_j)


def test_moe_byte_energy_ratio_reaches_only_fused_moe_kernels():
    one = H100.with_quantities({"moe_byte_energy_ratio": Quantity(1.0, "1", "user", "test")})
    ratio = H100.with_quantities({"moe_byte_energy_ratio": Quantity(2.0, "1", "user", "test")})
    assert one.moe_byte_energy_ratio == 1.0 and ratio.moe_byte_energy_ratio == 2.0
    assert H100.moe_byte_energy_ratio > 1.0 and H100.quantities["moe_byte_energy_ratio"].kind == "derived"  # H200 fit
    assert _decode_memory_j("llama3-8b", ratio) == _decode_memory_j("llama3-8b", one)  # dense: no MoE kernel
    base, more = _decode_memory_j("qwen3-30b-a3b", one), _decode_memory_j("qwen3-30b-a3b", ratio)
    assert base < more < 2.0 * base  # the expert kernels' bytes cost twice, the rest of the step the same


def test_moe_byte_energy_ratio_must_be_positive():
    doc = H100.to_dict()
    doc["quantities"]["moe_byte_energy_ratio"] = {"value": 0.0, "unit": "1", "kind": "user", "source": "test"}
    with pytest.raises(SpecError, match="moe_byte_energy_ratio"):
        parse_gpu(doc, "test.yaml")


def _decode_kernels(model: str, gpu, batch: int) -> dict[str, object]:
    m = load_model(model)
    lay = Layout(tp=1)
    sizes, w = decode_sizes(Workload(batch, 512, 64), 8)
    phase = evaluate_phase(m, gpu, lay, build_program(m, lay), sizes, w, decode=True)
    return {r.name: r for _, r in phase.kernels}


def test_fused_moe_compute_energy_is_charged_on_padded_tile_flops():
    # one decode token per hit expert: the grouped GEMMs run whole tile_m-row tiles, so their compute energy
    # is the padded tiles' FLOPs x J/FLOP (4x for a 4x taller tile, the useful FLOPs the same); every other
    # kernel keeps its useful FLOPs' energy
    tiles = {tm: H100.with_quantities({"moe_tile_m_bf16": Quantity(tm, "1", "user", "test")}) for tm in (16.0, 64.0)}
    runs = {tm: _decode_kernels("qwen3-30b-a3b", g, 1) for tm, g in tiles.items()}
    moe = [n for n, r in runs[16.0].items() if any(o.startswith("moe.experts.") and o.endswith("_proj") for o in r.ops)]
    assert len(moe) == 2  # gate+up, down
    e_flop = H100.energy_per_flop_j("bf16")
    for name in moe:
        small, large = runs[16.0][name], runs[64.0][name]
        np.testing.assert_array_equal(large.flops, small.flops)
        np.testing.assert_allclose(large.cost.compute_energy_j, 4.0 * small.cost.compute_energy_j, rtol=1e-9)
        assert np.all(small.cost.compute_energy_j > 1.5 * small.flops * e_flop)  # padding rows charged
    for name in set(runs[16.0]) - set(moe):
        np.testing.assert_array_equal(runs[64.0][name].cost.compute_energy_j, runs[16.0][name].cost.compute_energy_j)
