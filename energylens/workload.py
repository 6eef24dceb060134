"""Workloads: prefill (batch, prompt_len) and decode (batch, context, output_len) bound onto b, t, s.

Decode step ``i`` (0-based) of a request with a ``prompt_len``-token prompt attends over
``s = prompt_len + i + 1`` keys (the cache plus the new token) and computes ``t = 1`` token per
sequence. A request's decode phase has ``output_len`` steps; their costs are summed exactly when
there are at most ``DECODE_POINTS`` steps, otherwise with a midpoint rule over ``DECODE_POINTS``
equal segments of steps (exact for costs linear in ``s``; the roofline is piecewise linear, so the
error is confined to the segment where an op changes bound).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from energylens.errors import WorkloadError

DECODE_POINTS = 16


@dataclass(frozen=True)
class Workload:
    batch: int | np.ndarray = 1
    prompt_len: int | np.ndarray = 2048
    output_len: int | np.ndarray = 256

    def __post_init__(self) -> None:
        from energylens.checks import MAX_BATCH, MAX_TOKENS

        for name, low, high, what in (("batch", 1, MAX_BATCH, "a positive integer"),
                                      ("prompt_len", 1, MAX_TOKENS, "a positive integer"),
                                      ("output_len", 0, MAX_TOKENS, "a non-negative integer (0 = prefill only)")):
            raw = getattr(self, name)
            if type(raw) is int and low <= raw <= high:  # one configuration (no array checks needed)
                continue
            try:
                v = np.asarray(raw)
                ok = v.dtype.kind in "iuf" and v.size > 0
                f = v.astype(float) if ok else None
            except (TypeError, ValueError, OverflowError):
                ok = False
            if not ok or isinstance(raw, (bool, np.bool_)) or np.any(~np.isfinite(f)) or np.any(f < low) \
                    or np.any(f > high) or np.any(np.mod(f, 1) != 0):
                raise WorkloadError(name, raw, f"{what} up to {high:,}")

    def to_dict(self) -> dict:
        def conv(v):
            return v.tolist() if isinstance(v, np.ndarray) else int(v)

        return {"batch": conv(self.batch), "prompt_len": conv(self.prompt_len), "output_len": conv(self.output_len)}


def prefill_sizes(w: Workload, batch_per_replica) -> tuple[dict[str, np.ndarray], np.ndarray]:
    p = np.asarray(w.prompt_len, dtype=float)
    return {"b": np.asarray(batch_per_replica, dtype=float), "t": p, "s": p}, np.asarray(1.0)


def decode_sizes(w: Workload, batch_per_replica) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Sizes with a trailing axis of decode sample points, and the weight (steps) of each point."""
    o = np.asarray(w.output_len, dtype=float)
    p = np.asarray(w.prompt_len, dtype=float)
    if o.ndim == 0 and o <= DECODE_POINTS:
        n = max(int(o), 1)
        idx = np.arange(n, dtype=float)
        weights = np.ones(n) if o > 0 else np.zeros(1)
    else:
        frac = (np.arange(DECODE_POINTS) + 0.5) / DECODE_POINTS
        idx = o[..., None] * frac - 0.5
        weights = np.broadcast_to(o[..., None] / DECODE_POINTS, idx.shape)
    s = p[..., None] + idx + 1.0
    b = np.asarray(batch_per_replica, dtype=float)[..., None]
    return {"b": b, "t": np.ones_like(s), "s": s}, np.asarray(weights, dtype=float)
