"""Per-kernel latency and energy on one GPU: roofline with shape-aware efficiency, energy with a power cap.

Every function is vectorised: arguments may be scalars or NumPy arrays (broadcast together), so one
code path serves one configuration or a million. All formulas live here; calibration fits the
coefficients of exactly these formulas.

Latency of a kernel::

    t_compute = flops / (peak_flops[dtype] * eff_compute)
    eff_compute = max_compute_efficiency[dtype] * wave_eff * k_eff           (GEMM-like kernels)
        tiles    = ceil(M / tile_m) * ceil(N / tile_n) * batch
        wave_eff = tiles / (ceil(tiles / sm_count) * sm_count)               (tail wave idles SMs)
        k_eff    = K / (K + gemm_k_half)                                     (short K-loops pipeline badly)
    t_memory  = bytes / (hbm_bandwidth * max_memory_efficiency)
    latency   = max(t_compute, t_memory) + kernel_overhead

Energy of a kernel::

    e_dynamic = flops * energy_per_flop[dtype] + bytes * energy_per_byte_hbm
    energy    = e_dynamic + idle_power * latency

Power cap: when ``energy / latency`` exceeds ``power_limit`` the clocks drop; the kernel stretches to
``latency' = e_dynamic / (power_limit - idle_power)`` and ``energy' = power_limit * latency'``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from energylens.hardware.profile import GPU

ArrayLike = float | int | np.ndarray


@dataclass(frozen=True)
class KernelCost:
    """Cost of one kernel (or an array of them). Units in the names."""

    latency_s: np.ndarray
    energy_j: np.ndarray
    compute_s: np.ndarray
    memory_s: np.ndarray
    compute_energy_j: np.ndarray
    memory_energy_j: np.ndarray
    static_energy_j: np.ndarray
    power_capped: np.ndarray

    @property
    def bound(self) -> np.ndarray:
        """'compute' or 'memory' per element, whichever roofline term dominates."""
        return np.where(self.compute_s >= self.memory_s, "compute", "memory")


def gemm_efficiency(gpu: GPU, dtype: str, m: ArrayLike, n: ArrayLike, k: ArrayLike, batch: ArrayLike = 1) -> np.ndarray:
    """Achieved fraction of peak FLOP/s for an (batched) M x N x K GEMM, before the memory roofline."""
    m = np.maximum(np.asarray(m, dtype=float), 1.0)
    n = np.maximum(np.asarray(n, dtype=float), 1.0)
    k = np.maximum(np.asarray(k, dtype=float), 1.0)
    batch = np.maximum(np.asarray(batch, dtype=float), 1.0)
    tile_m = gpu.q("gemm_tile_m")
    tile_n = gpu.q("gemm_tile_n")
    sms = float(gpu.sm_count)
    tiles = np.ceil(m / tile_m) * np.ceil(n / tile_n) * batch
    wave_eff = tiles / (np.ceil(tiles / sms) * sms)
    k_eff = k / (k + gpu.q("gemm_k_half"))
    return gpu.max_compute_efficiency(dtype) * wave_eff * k_eff


def kernel_cost(
    gpu: GPU,
    dtype: str,
    flops: ArrayLike,
    bytes_: ArrayLike,
    compute_efficiency: ArrayLike | None = None,
    *,
    sm_fraction: ArrayLike = 1.0,
    launches: ArrayLike = 1.0,
) -> KernelCost:
    """Latency and energy of a kernel doing ``flops`` FLOPs and moving ``bytes_`` HBM bytes.

    ``compute_efficiency`` defaults to the dtype's max efficiency (non-GEMM kernels pass their own).
    ``sm_fraction`` (0, 1] scales compute throughput when only part of the SMs are available
    (overlap with a communication kernel). ``launches`` counts kernel launches (fixed overhead each).
    """
    flops = np.asarray(flops, dtype=float)
    eff = gpu.max_compute_efficiency(dtype) if compute_efficiency is None else np.asarray(compute_efficiency, dtype=float)
    sm_fraction = np.clip(np.asarray(sm_fraction, dtype=float), 1e-6, 1.0)
    compute_s = flops / (gpu.peak_flops(dtype) * eff * sm_fraction)
    return kernel_cost_from_terms(gpu, compute_s, bytes_, flops * gpu.energy_per_flop_j(dtype), launches=launches)


def kernel_cost_from_terms(
    gpu: GPU, compute_s: ArrayLike, bytes_: ArrayLike, compute_energy_j: ArrayLike, *, launches: ArrayLike = 1.0
) -> KernelCost:
    """The roofline and power cap from a kernel's compute time and compute energy (already summed over
    the ops of a fusion group, each at its own dtype and efficiency) and its HBM bytes."""
    compute_s = np.asarray(compute_s, dtype=float)
    bytes_ = np.asarray(bytes_, dtype=float)
    e_compute = np.asarray(compute_energy_j, dtype=float)
    memory_s = bytes_ / (gpu.hbm_bandwidth_bytes_per_s * gpu.max_memory_efficiency)
    latency = np.maximum(compute_s, memory_s) + gpu.kernel_overhead_s * np.asarray(launches, dtype=float)
    e_memory = bytes_ * gpu.energy_per_byte_j
    e_dynamic = e_compute + e_memory
    idle = gpu.idle_power_w
    headroom = gpu.power_limit_w - idle
    capped_latency = e_dynamic / headroom
    capped = capped_latency > latency
    latency = np.where(capped, capped_latency, latency)
    static = idle * latency
    energy = e_dynamic + static
    shape = np.broadcast(compute_s, bytes_, e_compute, latency).shape

    def full(a) -> np.ndarray:
        return np.broadcast_to(np.asarray(a, dtype=float), shape).copy()

    return KernelCost(
        latency_s=full(latency),
        energy_j=full(energy),
        compute_s=full(compute_s),
        memory_s=full(memory_s),
        compute_energy_j=full(e_compute),
        memory_energy_j=full(e_memory),
        static_energy_j=full(static),
        power_capped=np.broadcast_to(capped, shape).copy(),
    )
