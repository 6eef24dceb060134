import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from energylens.cost.families import gemm_coeffs
from energylens.cost.roofline import gemm_efficiency, kernel_cost
from energylens.hardware import load_gpu

GPU = load_gpu("h100-sxm")


def test_memory_bound_kernel_time_and_energy():
    c = kernel_cost(GPU, "bf16", flops=1e9, bytes_=1e9)
    bw = GPU.hbm_bandwidth_bytes_per_s * GPU.max_memory_efficiency
    assert np.isclose(c.latency_s, 1e9 / bw + GPU.kernel_overhead_s)
    expected = 1e9 * GPU.energy_per_flop_j("bf16") + 1e9 * GPU.energy_per_byte_j + (GPU.idle_power_w + GPU.busy_power_w) * c.latency_s
    assert np.isclose(c.energy_j, expected)
    assert c.bound == "memory"
    assert np.isclose(c.energy_j, c.compute_energy_j + c.memory_energy_j + c.static_energy_j)


def test_power_cap_stretches_the_kernel():
    c = kernel_cost(GPU, "bf16", flops=1e15, bytes_=1e10)
    assert bool(c.power_capped)
    assert np.isclose(c.energy_j / c.latency_s, GPU.power_limit_w)


def test_wave_quantisation():
    # 132 tiles fill one wave on 132 SMs; 133 tiles need two waves
    c = gemm_coeffs(GPU, "bf16")
    full = gemm_efficiency(GPU, "bf16", c.tile_m * 132, c.tile_n, 4096)
    tail = gemm_efficiency(GPU, "bf16", c.tile_m * 133, c.tile_n, 4096)
    assert tail < full
    assert np.isclose(tail / full, 133 / 264)


@given(st.floats(1e3, 1e15), st.floats(1e3, 1e12), st.floats(1.0, 10.0))
def test_more_work_never_costs_less(flops, bytes_, factor):
    a = kernel_cost(GPU, "bf16", flops, bytes_)
    b = kernel_cost(GPU, "bf16", flops * factor, bytes_ * factor)
    assert b.latency_s >= a.latency_s * (1 - 1e-12) and b.energy_j >= a.energy_j * (1 - 1e-12)
    assert np.isfinite(b.energy_j) and b.energy_j / b.latency_s <= GPU.power_limit_w * (1 + 1e-9)


def test_vectorised_equals_scalar():
    flops = np.array([1e9, 1e12, 1e14])
    byts = np.array([1e8, 1e9, 1e10])
    vec = kernel_cost(GPU, "bf16", flops, byts)
    for i in range(3):
        sc = kernel_cost(GPU, "bf16", flops[i], byts[i])
        assert np.isclose(vec.latency_s[i], sc.latency_s) and np.isclose(vec.energy_j[i], sc.energy_j)
