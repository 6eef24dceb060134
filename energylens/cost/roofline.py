"""Per-kernel latency and energy on one GPU: roofline with shape-aware efficiency, energy with a power cap.

Every function is vectorised: arguments may be scalars or NumPy arrays (broadcast together), so one
code path serves one configuration or a million. All formulas live here; calibration fits the
coefficients of exactly these formulas.

Latency of a kernel::

    t_compute = flops / (peak_flops[dtype] * eff_compute)
    eff_compute = max_compute_efficiency[dtype] * wave_eff * k_eff           (GEMM-like kernels)
        tiles    = ceil(M / tile_m) * ceil(N / tile_n) * batch
        split    = clip(floor(sm_count / tiles), 1, floor(K / SPLIT_K_MIN_K))  (split-K fills idle SMs)
        wave_eff = tiles*split / (ceil(tiles*split / sm_count) * sm_count)   (tail wave idles SMs)
        k_eff    = K' / (K' + gemm_k_half), K' = K / split                   (short K-loops pipeline badly)
        split > 1 adds a reduction: one kernel overhead + fp32 partials written and read (8·M·N·split B)

``SPLIT_K_MIN_K`` (the shortest K a split may get) was chosen on micro-benchmark data, vidur's GEMM
kernel timings (``python tools/fit_gemm_vidur.py``): GEMM-latency MAPE of the built-in profiles
14.7 % -> 11.3 % (H100, 1376 GEMMs) and 22.5 % -> 13.2 % (A100, 2256 GEMMs) against no split-K
(256: 14.4 / 13.4 %; 2048: 11.5 / 14.6 %; without the reduction cost 13.2 / 14.0 %).
Horizontally fused projections (QKV, gate+up) are tiled as one GEMM over their summed N
(``cost.kernels``). The GEMM formula itself lives in :mod:`energylens.cost.families` (with per-dtype
tiles, K half-point, memory efficiency, overhead and quantisation pre-pass fitted on NVIDIA's kernel
tables); decode/prefill attention and fused MoE have their own formulas there.
    t_memory  = bytes / (hbm_bandwidth * max_memory_efficiency)
    latency   = max(t_compute, t_memory) + kernel_overhead

Energy of a kernel::

    e_dynamic = flops * energy_per_flop[dtype] + bytes * energy_per_byte_hbm
    energy    = e_dynamic + (idle_power + busy_power) * latency

``busy_power`` (W above idle while a kernel runs: SM clocks, schedulers, L2 and crossbar awake) is
fitted with J/FLOP and J/B on NVIDIA's kernel power tables (:mod:`energylens.calibration.power`); it
is part of ``static_energy_j``, scales with the clock as ``V^2 f`` (:mod:`energylens.cost.dvfs`) and
is 0 for a profile without it.

Power cap and clocks (:mod:`energylens.cost.dvfs`): when the kernel's power ``energy / latency``
exceeds ``power_limit`` (or the SM clock is locked) the driver lowers the SM clock: compute time
grows as ``f_max / f``, HBM time much less, dynamic energy falls with ``V^2``, static power follows the
idle-power-vs-clock curve; the kernel runs at the highest clock whose power fits. GPUs without clock
data stretch to ``latency' = e_dynamic / (power_limit - idle_power)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from energylens.cost.dvfs import clocked_cost
from energylens.cost.families import SPLIT_K_MIN_K, gemm_coeffs, gemm_math_s
from energylens.hardware.profile import GPU

ArrayLike = float | int | np.ndarray
__all__ = ["SPLIT_K_MIN_K", "KernelCost", "gemm_efficiency", "kernel_cost", "kernel_cost_from_terms"]


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
    clock_fraction: np.ndarray | float = 1.0  # SM clock / max SM clock the kernel ran at (cost.dvfs)
    dynamic_scale: np.ndarray | float = 1.0  # v^2 f / f_max there: busy power relative to the max clock

    @property
    def bound(self) -> np.ndarray:
        """'compute' or 'memory' per element, whichever roofline term dominates."""
        return np.where(self.compute_s >= self.memory_s, "compute", "memory")


def _same(a, full):
    """A float stays a float (the common case: every kernel at one clock); arrays take the full shape."""
    return a if isinstance(a, float) else full(a)


def gemm_efficiency(gpu: GPU, dtype: str, m: ArrayLike, n: ArrayLike, k: ArrayLike, batch: ArrayLike = 1) -> np.ndarray:
    """Achieved fraction of peak FLOP/s for an (batched) M x N x K GEMM, before the memory roofline: the
    GEMM formula of :mod:`energylens.cost.families` (per-dtype fitted coefficients where the profile has them)."""
    m, n, k, batch = (np.maximum(np.asarray(x, dtype=float), 1.0) for x in (m, n, k, batch))
    c = gemm_coeffs(gpu, dtype)
    return 2.0 * m * n * k * batch / (c.peak_flops * gemm_math_s(c, m, n, k, batch))


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
    gpu: GPU, compute_s: ArrayLike, bytes_: ArrayLike, compute_energy_j: ArrayLike, *, launches: ArrayLike = 1.0,
    memory_efficiency: ArrayLike | None = None, overhead_s: ArrayLike | None = None,
    latency_s: ArrayLike | None = None, memory_energy_scale: ArrayLike = 1.0, formula: ArrayLike | None = None,
) -> KernelCost:
    """The roofline and power cap from a kernel's compute time and compute energy (already summed over
    the ops of a fusion group, each at its own dtype and efficiency) and its HBM bytes.

    A kernel family with its own fitted formula (:mod:`energylens.cost.families`) passes its
    ``memory_efficiency`` and ``overhead_s`` (per launch; default ``max_memory_efficiency`` and
    ``kernel_overhead``), or its whole ``latency_s`` at the maximum clock. ``memory_energy_scale``
    multiplies the profile's J per HBM byte (a fused-MoE kernel: the profile's ``moe_byte_energy_ratio``).
    ``formula`` (with ``latency_s``; bool, broadcasting): which kernels ``latency_s`` is for; the others keep
    their plain roofline terms (kernels of both kinds costed in one call)."""
    compute_s = np.asarray(compute_s, dtype=float)
    bytes_ = np.asarray(bytes_, dtype=float)
    e_compute = np.asarray(compute_energy_j, dtype=float)
    mem_eff = gpu.max_memory_efficiency if memory_efficiency is None else np.asarray(memory_efficiency, dtype=float)
    memory_s = bytes_ / (gpu.hbm_bandwidth_bytes_per_s * mem_eff)
    e_memory = bytes_ * gpu.energy_per_byte_j
    if (np.asarray(memory_energy_scale) != 1.0).any():
        e_memory = e_memory * np.asarray(memory_energy_scale, dtype=float)
    overhead = (gpu.kernel_overhead_s if overhead_s is None else np.asarray(overhead_s, dtype=float)) \
        * np.asarray(launches, dtype=float)
    t_c, t_m = compute_s, memory_s
    if latency_s is not None:
        # a family formula's latency: past its fixed part it is the dominant roofline term, so a lower
        # clock scales it as compute- or memory-bound work (cost.dvfs)
        body = np.maximum(np.asarray(latency_s, dtype=float) - overhead, 0.0)
        compute_bound = compute_s >= memory_s
        t_c = np.where(compute_bound, body, np.minimum(compute_s, body))
        t_m = np.where(compute_bound, np.minimum(memory_s, body), body)
        if formula is not None:
            t_c, t_m = np.where(formula, t_c, compute_s), np.where(formula, t_m, memory_s)
    clocked = clocked_cost(gpu, t_c, t_m, e_compute, e_memory, overhead)
    latency = clocked.latency_s
    static = clocked.static_energy_j
    energy = clocked.compute_energy_j + clocked.memory_energy_j + static
    shape = np.broadcast(compute_s, bytes_, e_compute, latency).shape

    def full(a) -> np.ndarray:  # a read-only view: terms keep the axes they depend on (no copy)
        a = np.asarray(a, dtype=float)
        return a if a.shape == shape else np.broadcast_to(a, shape)

    return KernelCost(
        latency_s=full(latency),
        energy_j=full(energy),
        compute_s=full(compute_s),
        memory_s=full(memory_s),
        compute_energy_j=full(clocked.compute_energy_j),
        memory_energy_j=full(clocked.memory_energy_j),
        static_energy_j=full(static),
        power_capped=(clocked.power_capped if np.shape(clocked.power_capped) == shape
                      else np.broadcast_to(clocked.power_capped, shape)),
        clock_fraction=_same(clocked.clock_fraction, full),
        dynamic_scale=_same(clocked.dynamic_scale, full),
    )
