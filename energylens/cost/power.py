"""Power on one GPU: every rule that turns work into watts and joules lives here.

Used by kernels (:mod:`energylens.cost.roofline`), collectives (:mod:`energylens.cost.collectives`),
overlap (:mod:`energylens.overlap.cost`), phases and pipelines (:mod:`energylens.cost.phase`,
:mod:`energylens.predict`), serving and disaggregation. The coefficients come from the GPU profile
(``idle_power``, ``power_limit``, ``sm_count``; units in the names).

* **Static power while waiting**: a GPU holding a context but running nothing draws ``idle_power``;
  a GPU that waits for a slower one (pipeline bubbles, MoE stragglers, host time) spends
  ``idle_power x seconds`` (:func:`idle_energy_j`).
* **Static power while busy**: a running kernel draws ``idle_power + busy_power`` before its dynamic
  energy per FLOP and per byte (:func:`kernel_power_w`; ``busy_power`` fitted on NVIDIA's kernel power
  tables, :mod:`energylens.calibration.power`; part of a kernel's static energy, scaling as ``V^2 f``
  with the clock, :mod:`energylens.cost.dvfs`); the serving layer adds ``active_fraction x (power_limit -
  idle_power)`` on top (:func:`busy_static_power_w`, fitted on serving runs).
* **Power cap**: work whose dynamic energy ``e`` over its uncapped time ``t`` would exceed the
  headroom ``power_limit - idle_power`` stretches to ``e / headroom`` (clocks drop, as the driver
  does); then it draws exactly the limit (:func:`cap`).
* **Communication kernels**: an SM running an NCCL channel draws ``activity x (power_limit -
  idle_power) / sm_count`` (:func:`comm_sm_power_w`), on top of the traffic's energy per byte.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from energylens.hardware.profile import GPU


def headroom_w(gpu: GPU) -> float:
    """Power above idle that the limit leaves for dynamic work (W)."""
    return gpu.power_limit_w - gpu.idle_power_w


def idle_energy_j(gpu: GPU, seconds) -> np.ndarray:
    """Energy of waiting ``seconds`` at idle power (context held, no kernel running)."""
    return np.asarray(seconds, dtype=float) * gpu.idle_power_w


def busy_static_power_w(gpu: GPU, active_fraction) -> np.ndarray:
    """Static power while kernels run: idle plus ``active_fraction`` of the headroom (W)."""
    return gpu.idle_power_w + np.asarray(active_fraction, dtype=float) * headroom_w(gpu)


def kernel_power_w(idle_power_w, busy_power_w, dynamic_power_w, power_limit_w, *, corner_w: float = 0.0) -> np.ndarray:
    """Board power while a kernel runs (W): idle, plus the busy power of running SMs (clocks, schedulers,
    L2 and crossbar awake), plus the dynamic power ``J/FLOP x FLOP/s + J/B x B/s``, at most the limit.
    ``corner_w`` > 0 rounds the cap's corner over about that many watts (softplus; for fitting, so rows
    near the limit still see the slope). Vectorised."""
    p = (np.asarray(idle_power_w, dtype=float) + np.asarray(busy_power_w, dtype=float)
         + np.asarray(dynamic_power_w, dtype=float))
    limit = np.asarray(power_limit_w, dtype=float)
    if corner_w > 0:
        return limit - corner_w * np.logaddexp(0.0, (limit - p) / corner_w)
    return np.minimum(p, limit)


def replay_reading_w(idle_power_w, kernel_power_w, latency_s, gap_s) -> np.ndarray:
    """Mean board power a sampler (NVML) reads over a loop that replays a kernel of ``latency_s`` drawing
    ``kernel_power_w``, each call followed by ``gap_s`` of host time with the GPU at idle power (W): the
    kernel's power above idle diluted by its duty cycle ``latency / (latency + gap)``. A measurement model
    (what a kernel power table reads), not a cost of the kernel. Vectorised."""
    lat = np.asarray(latency_s, dtype=float)
    idle = np.asarray(idle_power_w, dtype=float)
    duty = lat / (lat + np.asarray(gap_s, dtype=float))
    return idle + (np.asarray(kernel_power_w, dtype=float) - idle) * duty


def clamp_to_limit_w(gpu: GPU, power_w) -> np.ndarray:
    """A GPU never draws more than its power limit on average."""
    return np.minimum(np.asarray(power_w, dtype=float), gpu.power_limit_w)


@dataclass(frozen=True)
class Capped:
    """Work after the power cap: stretched latency, static and total energy, and whether it bound."""

    latency_s: np.ndarray
    static_energy_j: np.ndarray
    energy_j: np.ndarray
    capped: np.ndarray


def cap(gpu: GPU, latency_s, dynamic_energy_j, *, busy_w: float = 0.0) -> Capped:
    """Apply the power cap to work of uncapped ``latency_s`` and ``dynamic_energy_j`` (above idle and the
    busy power ``busy_w`` it draws while it runs)."""
    latency = np.asarray(latency_s, dtype=float)
    dyn = np.asarray(dynamic_energy_j, dtype=float)
    stretched = dyn / (headroom_w(gpu) - busy_w)
    capped = stretched > latency
    latency = np.where(capped, stretched, latency)
    static = (gpu.idle_power_w + busy_w) * latency
    return Capped(latency, static, dyn + static, capped)


def stretch(gpu_headroom_w: float, duration_s, power_w) -> np.ndarray:
    """Duration of a segment drawing ``power_w`` above idle once the cap binds (vectorised)."""
    d = np.asarray(duration_s, dtype=float)
    return np.maximum(d, d * np.asarray(power_w, dtype=float) / gpu_headroom_w)


def comm_sm_power_w(gpu: GPU, sms, activity_factor: float) -> np.ndarray:
    """Power (above idle) of ``sms`` SMs running communication channels."""
    return np.asarray(sms, dtype=float) * headroom_w(gpu) / gpu.sm_count * activity_factor


def above_idle_energy_j(gpu: GPU, energy_j, seconds) -> np.ndarray:
    """The part of ``energy_j`` spent over ``seconds`` above idle power (never negative)."""
    return np.maximum(np.asarray(energy_j, dtype=float) - idle_energy_j(gpu, seconds), 0.0)


def serving_active_power_w(gpu: GPU, active_fraction) -> np.ndarray:
    """Static power above idle while a serving engine's kernels run: ``active_fraction`` of the headroom
    of the profile's own operating point (the fraction was fitted there; a lowered limit does not
    change what the SMs draw when they are busy, it changes the clock, :mod:`energylens.cost.dvfs`)."""
    op = gpu.operating  # energylens.cost.dvfs.OperatingPoint, or None at the profile's own point
    limit = op.reference_power_limit_w if op else gpu.power_limit_w
    idle = op.reference_idle_power_w if op else gpu.idle_power_w
    return np.asarray(active_fraction, dtype=float) * (limit - idle)


def serving_gpu_energy_j(*, kernel_j, kernel_s, active_s, seq_s, host_s, collective_j, idle_power_w: float,
                         power_limit_w: float, active_power_w, lock_scale=1.0) -> np.ndarray:
    """Energy of one GPU over one serving iteration (J): its kernels' energy plus the busy static power
    ``active_power_w`` while they run (``active_s``, already scaled by ``v^2 f / f_max`` at a locked
    clock); the per-sequence GPU work (``seq_s``) draws the same mean power as those kernels (the
    measured power while it runs is far above idle, ``tools/serving_excess.py``), all capped at the power
    limit; then the collectives as costed and the host time (``host_s``) at idle power. With no kernel
    time the per-sequence work draws busy static power."""
    kernel_s = np.asarray(kernel_s, dtype=float)
    kernels_j = np.asarray(kernel_j, dtype=float) + np.asarray(active_power_w) * active_s
    static_w = idle_power_w + np.asarray(active_power_w) * lock_scale
    seq_w = np.where(kernel_s > 0, kernels_j / np.where(kernel_s > 0, kernel_s, 1.0), static_w)
    busy_j = kernels_j + seq_w * seq_s
    busy_j = np.minimum(busy_j, power_limit_w * (kernel_s + seq_s))
    return busy_j + collective_j + idle_power_w * np.asarray(host_s, dtype=float)


# --- two kernels overlapped (a GEMM and its collective in chunks) under one shared power cap


@dataclass(frozen=True)
class Timeline:
    """Duration and energy of one overlapped pair on one GPU (arrays of the broadcast shape)."""

    latency_s: np.ndarray
    energy_j: np.ndarray
    overlapped_s: np.ndarray  # both kernels running (after power-cap stretch)
    compute_only_s: np.ndarray
    comm_only_s: np.ndarray
    overlap_power_w: np.ndarray  # power while both run (after the cap)
    power_capped: np.ndarray


def overlap_timeline(compute_chunk_s, compute_chunk_dyn_j, comm_chunk_s, comm_chunk_dyn_j, chunks,
                     idle_power_w: float, power_limit_w: float) -> Timeline:
    """Two-stage pipeline of ``chunks`` identical chunks with a shared power cap (vectorised).

    ``*_chunk_s`` are uncapped per-chunk durations, ``*_dyn_j`` the dynamic (above idle) energy of
    one chunk. Zero-length stages are allowed (their power is taken as 0)."""
    c = np.asarray(compute_chunk_s, dtype=float)
    m = np.asarray(comm_chunk_s, dtype=float)
    ec = np.asarray(compute_chunk_dyn_j, dtype=float)
    em = np.asarray(comm_chunk_dyn_j, dtype=float)
    n = np.asarray(chunks, dtype=float)
    pc = np.divide(ec, c, out=np.zeros(np.broadcast(ec, c).shape), where=c > 0)
    pm = np.divide(em, m, out=np.zeros(np.broadcast(em, m).shape), where=m > 0)
    both = (n - 1.0) * np.minimum(c, m)
    comp_only = n * c - both
    comm_only = n * m - both
    headroom = power_limit_w - idle_power_w
    seg_both = stretch(headroom, both, pc + pm)  # the shared power cap (cost/power.py)
    seg_c = stretch(headroom, comp_only, pc)
    seg_m = stretch(headroom, comm_only, pm)
    latency = seg_both + seg_c + seg_m
    dyn = both * (pc + pm) + comp_only * pc + comm_only * pm
    energy = dyn + idle_power_w * latency
    p_both = np.where(both > 0, idle_power_w + np.minimum(pc + pm, headroom), 0.0)
    capped = ((pc + pm > headroom) & (both > 0)) | ((pc > headroom) & (comp_only > 0)) | (
        (pm > headroom) & (comm_only > 0))
    return Timeline(latency, energy, seg_both, seg_c, seg_m, p_both, capped)
