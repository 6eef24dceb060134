"""Open-loop queueing arithmetic of :mod:`energylens.serving_load` (pure numpy): Poisson arrivals at a
replica whose service rate depends on the running batch.

A birth-death chain on the requests in the replica (an M/M/c-type queue with load-dependent service,
``c`` = slots): arrivals at ``rate``, completions at ``mu(m) = m / (span tau(m))`` with ``m = min(n, c)``
running, a geometric tail above ``c`` (stable while ``rate < mu(c)``); the wait for a slot scaled by
``(1 + cv^2) / 2`` (Allen-Cunneen; ``cv = 0``: every request takes the same iterations). Checked against the
discrete-event simulation in ``tests/validation/test_serving_load.py``.
"""

from __future__ import annotations

import numpy as np

OPEN_LOOP_WAIT_ITERATIONS = 0.5  # Poisson arrival: mean residual of a (near-constant) iteration
SERVICE_CV2 = 0.0  # squared coefficient of variation of the service (fixed output length)
MAX_STATES = 8192  # open loop: largest number of running requests per replica the chain holds


def interp_states(m_grid, values, m) -> np.ndarray:
    """``values`` (S x G, on the increasing grid ``m_grid``) linearly interpolated at ``m`` (S x M)."""
    idx = np.clip(np.sum(m_grid[..., None, :] <= m[..., None], axis=-1) - 1, 0, m_grid.shape[-1] - 2)
    g0, g1 = (np.take_along_axis(m_grid, j, axis=-1) for j in (idx, idx + 1))
    v0, v1 = (np.take_along_axis(values, j, axis=-1) for j in (idx, idx + 1))
    w = np.clip(np.where(g1 > g0, (m - g0) / np.where(g1 > g0, g1 - g0, 1.0), 0.0), 0.0, 1.0)
    return v0 + w * (v1 - v0)


def birth_death(rate, m_grid, mu_grid, slots, max_states: int = MAX_STATES) -> dict[str, np.ndarray]:
    """Stationary distribution of the open-loop chain (vectorised over leading axes).

    ``rate``: arrivals per second (shape S); ``m_grid``/``mu_grid``: service rate (completions/s) at
    running batch ``m_grid`` (shape S x G, increasing in m); ``slots``: servers c (shape S, >= 1).
    Returns ``p`` (S x M, states n = 1..M with M = max slots; beyond c the tail is geometric),
    ``p0``, ``tail`` (P(n > c)), ``pc`` (P(n = c)), ``rho_c`` (rate / mu(c)), ``lq`` (mean queue),
    ``m`` (the running batch of each state) and ``mu`` (the service rate of each state)."""
    lead = np.broadcast_shapes(np.shape(rate), np.shape(slots), np.shape(m_grid)[:-1])
    m_grid = np.broadcast_to(m_grid, lead + np.shape(m_grid)[-1:])
    mu_grid = np.broadcast_to(mu_grid, m_grid.shape)
    rate = np.broadcast_to(np.asarray(rate, dtype=float), lead)
    c = np.minimum(np.broadcast_to(np.asarray(slots, dtype=float), lead), max_states)
    big = int(np.max(c))
    n = np.arange(1, big + 1, dtype=float)
    m = np.minimum(n, c[..., None])
    mu = interp_states(m_grid, mu_grid, m)
    logp = np.cumsum(np.log(rate[..., None]) - np.log(mu), axis=-1)
    logp = np.where(n <= c[..., None], logp, -np.inf)
    mu_c = np.take_along_axis(mu, (c - 1).astype(int)[..., None], axis=-1)[..., 0]
    rho = rate / mu_c
    stable = rho < 1.0
    r_ = np.where(stable, rho, 0.5)
    log_pc = np.take_along_axis(logp, (c - 1).astype(int)[..., None], axis=-1)[..., 0]
    top = np.maximum(np.max(logp, axis=-1), 0.0)
    z = np.exp(-top) + np.sum(np.exp(logp - top[..., None]), axis=-1) + np.exp(log_pc - top) * r_ / (1 - r_)
    p = np.exp(logp - top[..., None]) / z[..., None]
    pc = np.exp(log_pc - top) / z
    return {"p": p, "p0": np.exp(-top) / z, "pc": pc, "tail": pc * r_ / (1 - r_), "rho_c": rho, "stable": stable,
            "lq": pc * r_ / (1 - r_) ** 2, "m": m, "mu": mu, "mu_c": mu_c}


def open_loop_queue(rate, m_grid, tau_grid, span_grid, slots) -> dict[str, np.ndarray]:
    """The open-loop queue figures of one replica from its iteration time on a grid (pure queueing).

    ``rate``: Poisson arrivals per second (shape S); ``tau_grid``: mean iteration (s) at running batch
    ``m_grid`` (S x G, increasing m); ``span_grid``: iterations a request holds its slot at that batch;
    ``slots``: c. Returns the state probabilities and the mean running batch, mean queue, queueing
    delay (mean, p90), residual wait for the iteration boundary, token-weighted mean and p90 iteration
    (TPOT), and ``stable``."""
    lead = np.broadcast_shapes(np.shape(rate), np.shape(slots), np.shape(m_grid)[:-1])
    m_grid = np.broadcast_to(m_grid, lead + np.shape(m_grid)[-1:])
    tau_grid = np.broadcast_to(tau_grid, m_grid.shape)
    rate = np.broadcast_to(np.asarray(rate, dtype=float), lead)
    chain = birth_death(rate, m_grid, m_grid / (span_grid * tau_grid), slots)
    p, m, tail = chain["p"], chain["m"], chain["tail"]
    c = np.clip(np.broadcast_to(np.asarray(slots, dtype=float), lead), 1.0, MAX_STATES)
    cidx = (c - 1).astype(int)[..., None]
    tau_n = interp_states(m_grid, tau_grid, m)
    tau_c = np.take_along_axis(tau_n, cidx, axis=-1)[..., 0]
    factor = (1.0 + SERVICE_CV2) / 2.0  # Allen-Cunneen correction of the M/M/c-type wait
    queue_s = chain["lq"] / np.maximum(rate, 1e-300) * factor
    p_wait = chain["pc"] + tail
    excess = np.maximum(chain["mu_c"] - rate, 1e-300)
    queue_p90_s = np.where(p_wait > 0.1, np.log(np.maximum(p_wait, 0.1) / 0.1) / excess, 0.0) * factor
    residual_s = OPEN_LOOP_WAIT_ITERATIONS * (np.sum(p * tau_n, axis=-1) + tail * tau_c)
    wt = p * m / tau_n  # tokens flow at m / tau in each state
    wt_tail = tail * c / tau_c
    tot = np.sum(wt, axis=-1) + wt_tail
    tpot = (np.sum(wt * tau_n, axis=-1) + wt_tail * tau_c) / tot
    cum = np.cumsum(wt, axis=-1) / tot[..., None]
    j90 = np.minimum(np.argmax(cum >= 0.9, axis=-1), cidx[..., 0])
    tpot_p90 = np.where(cum[..., -1] >= 0.9, np.take_along_axis(tau_n, j90[..., None], axis=-1)[..., 0], tau_c)
    return {**chain, "c": c, "tau_n": tau_n, "tau_c": tau_c, "running": np.sum(p * m, axis=-1) + tail * c,
            "queue_s": queue_s, "queue_p90_s": queue_p90_s, "residual_s": residual_s, "tpot_s": tpot,
            "tpot_p90_s": tpot_p90}
