"""One SM clock held across a mix of kernels under a power limit (serving iterations).

NVIDIA's power controller acts on power averaged over far longer than one kernel (NVML's reading is
a ~1 s window on Hopper/Blackwell; hardware_notes.md), so a serving GPU holds one SM clock across the
mixed decode/prefill kernels of an engine iteration rather than one per kernel. :func:`hold_clock`
costs the work with the SM clock locked at ``LEVELS`` clocks evenly spaced from the lowest
(``f_min``) to the highest allowed (the locked clock, else ``f_max``); at each the kernels follow
:mod:`energylens.cost.dvfs` (compute time ``1 / s``, HBM time nearly flat, dynamic energy ``V^2``,
idle power from the measured idle-vs-clock curve; the serving active power scales with ``V^2 f``).
The GPU runs at the highest clock whose mean power per GPU (host gaps included) fits the limit,
interpolated linearly between the two levels around the limit; if even ``f_min`` does not fit, at
``f_min``. The caller names the fields to interpolate and derives the rest from them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from energylens.cost.dvfs import base_gpu, clock_model, with_operating_point
from energylens.hardware.profile import GPU

LEVELS = 12  # clock levels costed (one evaluation each); interpolated in between


def hold_clock(gpu: GPU, run: Callable[[GPU], object], power_per_gpu_w: Callable[[object], np.ndarray],
               blend: Sequence[str], derive: Callable[[object, dict, np.ndarray], object],
               limits_w: Sequence[float] | None = None):
    """``run(gpu')`` at the held clock: ``gpu'`` is ``gpu``'s profile locked at each level,
    ``power_per_gpu_w(result)`` its mean power per GPU, ``blend`` the result fields interpolated and
    ``derive(result_at_any_level, {field: interpolated}, clock_mhz)`` the answer. ``limits_w``: several
    power limits (W per GPU) at once, a list of answers, one per limit; the clock levels do not depend on
    the limit, so they are costed once for all (a planner's power-limit axis)."""
    cm = clock_model(gpu)
    if cm is None:  # no clock data: the clock-free kernel cap at the user's limit
        if limits_w is None:
            return run(gpu)
        return [run(with_operating_point(base_gpu(gpu), power_limit_w=float(w))) for w in limits_w]
    base = base_gpu(gpu)
    f_top = gpu.operating.sm_clock_mhz or cm.f_max_mhz
    clocks = np.linspace(cm.f_min_mhz, f_top, LEVELS) if f_top > cm.f_min_mhz else np.array([f_top])
    runs = [run(with_operating_point(base, sm_clock_mhz=float(f))) for f in clocks]
    power = np.stack(np.broadcast_arrays(*(np.asarray(power_per_gpu_w(r), dtype=float) for r in runs)))
    if limits_w is None:
        return _at_limit(gpu.power_limit_w, clocks, runs, power, blend, derive)
    return [_at_limit(float(w), clocks, runs, power, blend, derive) for w in limits_w]


def _at_limit(limit: float, clocks: np.ndarray, runs: list, power: np.ndarray, blend: Sequence[str],
              derive: Callable[[object, dict, np.ndarray], object]):
    """The answer at the highest clock level whose power fits ``limit``, interpolated to the limit."""
    fits = power <= limit
    k = np.where(fits.any(axis=0), (fits.shape[0] - 1) - np.argmax(fits[::-1], axis=0), 0)  # highest that fits
    k_next = np.minimum(k + 1, len(runs) - 1)
    p_k = np.take_along_axis(power, k[None], 0)[0]
    p_n = np.take_along_axis(power, k_next[None], 0)[0]
    rising = (k_next > k) & (p_n > p_k)
    theta = np.where(rising, np.clip((limit - p_k) / np.where(rising, p_n - p_k, 1.0), 0.0, 1.0), 0.0)

    def interp(name: str) -> np.ndarray:
        stack = np.stack([np.broadcast_to(np.asarray(getattr(r, name), dtype=float), power.shape[1:]) for r in runs])
        a = np.take_along_axis(stack, k[None], 0)[0]
        b = np.take_along_axis(stack, k_next[None], 0)[0]
        return a + theta * (b - a)

    clock = clocks[k] + theta * (clocks[k_next] - clocks[k])
    return derive(runs[-1], {name: interp(name) for name in blend}, clock)
