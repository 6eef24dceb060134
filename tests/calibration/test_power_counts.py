"""What the kernel power fit charges (calibration/power.py): fused-MoE energy on padded-tile FLOPs, and the bf16
J/FLOP bound under which the fastest GEMMs of the latency tables fit under the power limit at some clock."""

import numpy as np
import pytest

from energylens.calibration.power import _counts, _moe_tile_m, fit_power, flop_energy_bound_j
from energylens.calibration.tables import Table
from energylens.cost.dvfs import clock_model
from energylens.hardware import load_gpu

B200 = load_gpu("b200")
H200 = load_gpu("h200")


def _moe_rows(tokens, experts=128, topk=8, dtype="bfloat16") -> Table:
    n = len(tokens)
    cols = {"num_tokens": np.asarray(tokens, dtype=float), "topk": np.full(n, float(topk)),
            "num_experts": np.full(n, float(experts)), "moe_ep_size": np.ones(n), "moe_tp_size": np.ones(n),
            "distribution": np.full(n, "balanced"), "hidden_size": np.full(n, 2048.0),
            "inter_size": np.full(n, 768.0), "moe_dtype": np.full(n, dtype)}
    return Table("test", cols)


def test_moe_flops_are_padded_to_whole_expert_tiles():
    tile = float(_moe_tile_m(B200, np.array(["bfloat16"]))[0])
    assert tile == B200.q("moe_tile_m_bf16")
    per_row = 2 * 3 * 2048.0 * 768.0  # gate, up, down: 2 FLOPs per multiply-add per token row
    # 1 token x top-8 of 128 experts: 8 experts hit with one row each, each padded to a whole tile
    # 128 x tile tokens x top-8: every expert holds 8 tile rows exactly, nothing padded
    flops, _, cls = _counts("moe", _moe_rows([1, 128 * tile]), B200)
    assert flops[0] == pytest.approx(8 * tile * per_row)
    assert flops[1] == pytest.approx(128 * tile * 8 * per_row)
    assert list(cls) == ["bf16", "bf16"]


def test_flop_energy_bound_puts_the_fastest_gemm_at_the_limit_at_its_lowest_possible_clock():
    for gpu, busy in ((B200, 300.0), (H200, 230.0)):
        cm = clock_model(gpu)
        eff = gpu.max_compute_efficiency("bf16")
        bound = float(flop_energy_bound_j(gpu, gpu.power_limit_w, busy))
        v2 = float(cm.voltage(eff)) ** 2
        power = (gpu.idle_power_w * float(cm.idle_shape(eff)) + busy * v2 * eff
                 + bound * v2 * gpu.peak_flops("bf16") * eff)
        assert power == pytest.approx(gpu.power_limit_w)
        # more busy power leaves less for the FLOPs; at the maximum clock the same GEMM would be over the limit
        assert float(flop_energy_bound_j(gpu, gpu.power_limit_w, busy + 50.0)) < bound
        assert gpu.idle_power_w + busy + bound * gpu.peak_flops("bf16") * eff > gpu.power_limit_w


def test_power_fit_keeps_bf16_flop_energy_under_the_bound():
    # B200: the tables alone would put 0.84 pJ/FLOP (more than a capped GEMM can draw at any clock); the bound
    # holds it; H200's fit lies inside its bound, so the bound does not decide it
    b200, h200 = fit_power(B200, every=4), fit_power(H200, every=4)
    for fit, gpu in ((b200, B200), (h200, H200)):
        assert fit.energy_per_flop_j["bf16"] <= flop_energy_bound_j(gpu, fit.power_limit_w, fit.busy_power_w) * (1 + 1e-9)
    assert h200.energy_per_flop_j["bf16"] < 0.9 * flop_energy_bound_j(H200, h200.power_limit_w, h200.busy_power_w)
    assert 0.3e-12 < b200.energy_per_flop_j["bf16"] < 0.7e-12
