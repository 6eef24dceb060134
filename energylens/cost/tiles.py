"""The FLOPs a kernel's tensor cores run, padding included, on which its compute energy is charged.

* **Fused MoE** (:func:`moe_tile_efficiency`): each expert's token rows rounded up to whole ``tile_m`` tiles.
* **Flash attention** (:func:`tile_share`): the keys per query row its tiles run
  (:func:`energylens.cost.families.attention_tile_keys`: the causal diagonal tiles whole, a sliding window's
  straddled tile) over the keys its einsums count.

Used by both evaluations of :mod:`energylens.cost.plan_eval`; :mod:`energylens.calibration.power` fits J/FLOP
on the same counts.
"""

from __future__ import annotations

import numpy as np

from energylens.cost import families as fam
from energylens.hardware.profile import GPU


def tile_share(coeffs, window, t, s, s_op, r) -> np.ndarray:
    """Keys per query row a flash-attention kernel runs (``attention_tile_keys`` of its ``coeffs``, over ``t``
    new tokens and ``s`` keys, sliding ``window``, ``r`` query heads per KV head) over the ``s_op`` keys its
    einsums count (the window applied): an op's full FLOPs times this are the FLOPs its energy is charged on."""
    return fam.attention_tile_keys(coeffs, t, s, window, r) / np.maximum(s_op, 1.0)


def moe_tile_efficiency(gpu: GPU, term, flops, ev):
    """Fused-MoE grouped GEMM: expert tiles padded to the MoE family's tile rows. Returns the compute
    efficiency (useful FLOPs over the padded tiles' wave-quantised time) and the padded-tile FLOPs
    (``2 x M-tiles x tile_m x N x K``), on which the kernel's compute energy is charged: the tensor cores
    run whole tiles, padding rows included (``calibration/power.py`` fits J/FLOP on the same count)."""
    m, n, k, batch = (ev(x) for x in term.mnk)
    mc = term.coeffs
    m_tiles = np.maximum(batch, 1.0) * np.ceil(np.maximum(m, 1.0) / mc.tile_m)
    n_eff = n
    if term.merged_n is not None:
        n_eff = np.asarray(0.0)
        for x in term.merged_n:
            n_eff = n_eff + ev(x)
    math_s = fam.grouped_gemm_math_s(mc, m_tiles, n_eff, k) * n / n_eff
    padded = np.where(flops > 0, np.maximum(2.0 * m_tiles * mc.tile_m * n * k, flops), 0.0)
    return np.where(math_s > 0, flops / np.maximum(term.peak_flops * math_s, 1e-30), 1.0), padded


__all__ = ["moe_tile_efficiency", "tile_share"]
