"""Top-k routing maths: exact inclusion probabilities, an exact sampler, and the cached per-(p, k)
model of one token's choice."""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict

import numpy as np

from energylens.errors import EnergyLensError
from energylens.moe.spec import _DETERMINISTIC_TOL, _MODEL_CACHE_SIZE, _QUAD_TOL, POOL_SEED, POOL_TOKENS

# --------------------------------------------------------------------------------------------
# Per-token top-k distribution: exact inclusion probabilities and an exact sampler
# --------------------------------------------------------------------------------------------


def _check_top_k(top_k: object, n_experts: int) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= n_experts:
        raise EnergyLensError("top_k", top_k, f"an integer with 1 <= top_k <= n_experts={n_experts}")
    return int(top_k)


def _race_integral(q: np.ndarray, k: int, step: float) -> np.ndarray:
    """Trapezoid rule in log t for pi_i = int q_i e^{-q_i t} P(< k others arrived by t) dt."""
    n = q.size
    ordered = np.sort(q)[::-1]
    t_lo = 1e-15 / ordered[0]  # the part below t_lo is < q_i*t_lo <= 1e-15
    t_hi = 45.0 / ordered[k]  # beyond t_hi, >= k others arrived with probability > 1 - k e^-45
    x = np.arange(math.log(t_lo), math.log(t_hi) + step, step)
    t = np.exp(x)
    qt = np.outer(t, q)
    waiting = np.exp(-qt)  # expert j not yet arrived at t
    arrived = -np.expm1(-qt)
    m = t.size
    prefix = np.zeros((m, n + 1, k))  # prefix[:, j, c] = P(c of experts < j arrived), c < k
    prefix[:, 0, 0] = 1.0
    for j in range(n):
        prefix[:, j + 1] = prefix[:, j] * waiting[:, j, None]
        prefix[:, j + 1, 1:] += prefix[:, j, :-1] * arrived[:, j, None]
    suffix = np.zeros((m, n + 1, k))  # suffix[:, j, c] = P(c of experts >= j arrived)
    suffix[:, n, 0] = 1.0
    for j in range(n - 1, -1, -1):
        suffix[:, j] = suffix[:, j + 1] * waiting[:, j, None]
        suffix[:, j, 1:] += suffix[:, j + 1, :-1] * arrived[:, j, None]
    suffix_cdf = np.cumsum(suffix, axis=2)
    # P(others arrived <= k-1) = sum_a prefix_i[a] * suffix_cdf_{i+1}[k-1-a]
    fewer = np.einsum("tia,tia->ti", prefix[:, :n], suffix_cdf[:, 1:, ::-1])
    return np.einsum("t,ti->i", step * t, q[None, :] * waiting * fewer)


def _inclusion(p: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Exact P(expert i in a token's top-k set) and the quadrature residual |sum - k|."""
    n = p.size
    if k == n:
        return np.ones(n), 0.0
    if np.all(p == p[0]):
        return np.full(n, k / n), 0.0
    positive = p > 0
    n_positive = int(positive.sum())
    if n_positive <= k:
        pi = np.where(positive, 1.0, (k - n_positive) / (n - n_positive))
        return pi, 0.0
    q = p[positive] / p[positive].sum()
    step = 0.25
    for _ in range(4):
        sub = _race_integral(q, k, step)
        residual = abs(float(sub.sum()) - k)
        if residual < _QUAD_TOL:
            break
        step /= 2.0
    sub = np.clip(sub * (k / sub.sum()), 0.0, 1.0)
    pi = np.zeros(n)
    pi[positive] = sub
    return pi, residual


def inclusion_probabilities(p: np.ndarray, k: int) -> np.ndarray:
    """``pi_i = P(expert i is among a token's k picks)`` under successive sampling with weights ``p``.

    Exact up to a quadrature error ~1e-12 (see the module docstring); ``sum(pi) == k``.
    """
    weights = np.asarray(p, dtype=np.float64)
    if weights.ndim != 1 or weights.size < 1 or not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise EnergyLensError("p", "array", "a 1-D array of finite, non-negative expert popularities")
    if weights.sum() <= 0:
        raise EnergyLensError("p", "array", "popularities with a positive sum")
    return _inclusion(weights / weights.sum(), _check_top_k(k, weights.size))[0]


def _alias_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker/Vose alias table: draw ``i ~ U{0..n-1}``, keep ``i`` w.p. ``prob[i]`` else ``alias[i]``."""
    n = weights.size
    scaled = weights * (n / weights.sum())
    prob = np.ones(n)
    alias = np.arange(n)
    small = [int(i) for i in np.nonzero(scaled < 1.0)[0]]
    large = [int(i) for i in np.nonzero(scaled >= 1.0)[0]]
    while small and large:
        s, g = small.pop(), large.pop()
        prob[s] = scaled[s]
        alias[s] = g
        scaled[g] = (scaled[g] + scaled[s]) - 1.0
        (small if scaled[g] < 1.0 else large).append(g)
    # leftovers (rounding) keep prob 1; a zero-weight expert is never among them (it would need
    # a missing mass of a whole 1/n), so it is never drawn
    return prob, alias


def _first_distinct(candidates: np.ndarray, k: int, n_values: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the set of the first ``k`` distinct values in draw order (unused slots -1) and
    how many were found (<= k)."""
    rows, width = candidates.shape
    pos_bits = max(1, (width - 1).bit_length())
    val_bits = max(1, (n_values - 1).bit_length())
    key = (candidates.astype(np.int64) << pos_bits) | np.arange(width, dtype=np.int64)
    key.sort(axis=1)
    values = key >> pos_bits
    first = np.ones((rows, width), dtype=bool)
    first[:, 1:] = values[:, 1:] != values[:, :-1]
    found = np.minimum(first.sum(axis=1), k)
    never = np.iinfo(np.int64).max
    by_position = np.where(first, ((key & ((1 << pos_bits) - 1)) << val_bits) | values, never)
    by_position.sort(axis=1)
    head = by_position[:, :k]
    out = np.where(head == never, -1, head & ((1 << val_bits) - 1))
    return out, found


def sample_topk(p: np.ndarray, k: int, n_tokens: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n_tokens`` top-k sets (shape ``(n_tokens, k)``, expert ids, unordered) by
    successive sampling without replacement with weights ``p``.

    Exact: each token draws experts i.i.d. from ``p`` (alias method) and keeps the first ``k``
    distinct ones, which is identical in law to drawing without replacement; tokens that have
    not found ``k`` distinct experts after ``3k`` draws are completed by an exponential race over
    the experts they have not picked, the exact conditional law given the picked set. Experts
    with ``p = 0`` are used only when fewer than ``k`` have ``p > 0``, uniformly at random.
    """
    weights = np.asarray(p, dtype=np.float64)
    n = weights.size
    k = _check_top_k(k, n)
    positive = weights > 0
    if np.all(weights == weights[0]):
        candidates = rng.integers(0, n, size=(n_tokens, 3 * k))
    else:
        prob, alias = _alias_table(weights)
        candidates = rng.integers(0, n, size=(n_tokens, 3 * k))
        candidates = np.where(rng.random((n_tokens, 3 * k)) < prob[candidates], candidates, alias[candidates])
    picks, found = _first_distinct(candidates, k, n)
    todo = np.nonzero(found < k)[0]
    if not todo.size:
        return picks
    smallest = float(weights[positive].min())
    use_log = smallest < 1e-250
    if use_log:
        log_w = np.log(np.where(positive, weights, 1.0))
    chunk = max(1, (1 << 20) // n)
    slot = np.arange(k)[None, :]
    for start in range(0, todo.size, chunk):
        rows = todo[start : start + chunk]
        arrival = rng.standard_exponential((rows.size, n))
        if use_log:  # log arrival times; p = 0 experts after all others (|log p| < 745)
            arrival = np.log(arrival)
            keys = np.where(positive, arrival - log_w, 1e4 + arrival)
        else:  # arrival times Exp/p <= 1e270; p = 0 experts after all others
            keys = np.where(positive, arrival / np.where(positive, weights, 1.0), 1e300 * (1.0 + arrival))
        taken = picks[rows]
        have = found[rows]
        r_idx, c_idx = np.nonzero(taken >= 0)
        keys[r_idx, taken[r_idx, c_idx]] = np.inf
        nearest = np.argpartition(keys, k - 1, axis=1)[:, :k]
        nearest = np.take_along_axis(
            nearest, np.take_along_axis(keys, nearest, axis=1).argsort(axis=1), axis=1
        )
        source = np.clip(slot - have[:, None], 0, k - 1)
        picks[rows] = np.where(slot >= have[:, None], np.take_along_axis(nearest, source, axis=1), taken)
    return picks


# --------------------------------------------------------------------------------------------
# Cached per-(p, k) model of one token's choice
# --------------------------------------------------------------------------------------------


class _TokenModel:
    """Everything about one token's top-k choice under popularity ``p``; lazily cached."""

    def __init__(self, p: np.ndarray, k: int) -> None:
        self.p = p
        self.k = k
        self.n = p.size
        self.uniform = bool(np.all(p == p[0]))
        self.pi, self.pi_residual = _inclusion(p, k)
        self.deterministic = bool(np.all(np.minimum(self.pi, 1.0 - self.pi) <= _DETERMINISTIC_TOL))
        self._pool: np.ndarray | None = None
        self.pool_pi = self.pi
        self._fluctuations: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._rank_fluctuations: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._uniforms: dict[tuple[int, int], np.ndarray] = {}
        self.results: OrderedDict[tuple, dict[str, float | str]] = OrderedDict()

    @property
    def pool(self) -> np.ndarray:
        if self._pool is None:
            self._pool = sample_topk(self.p, self.k, POOL_TOKENS, np.random.default_rng(POOL_SEED)).astype(
                np.int32
            )
            self.pool_pi = np.bincount(self._pool.ravel(), minlength=self.n) / self._pool.shape[0]
        return self._pool

    def covariance(self) -> np.ndarray:
        """One token's covariance of expert indicators, Cov(1[i chosen], 1[j chosen])."""
        n, k = self.n, self.k
        if self.uniform:
            pair = k * (k - 1) / (n * (n - 1)) if n > 1 else 0.0
            both = np.full((n, n), pair)
            np.fill_diagonal(both, k / n)
            pi = np.full(n, k / n)
        else:
            pool = self.pool.astype(np.int64)
            pairs = (pool[:, :, None] * n + pool[:, None, :]).ravel()
            both = np.bincount(pairs, minlength=n * n).reshape(n, n) / pool.shape[0]
            pi = np.diag(both).copy()
        return both - np.outer(pi, pi)

    def fluctuations(self, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``samples`` zero-mean draws ``W`` (rows) with one token's expert covariance, and the
        Cornish-Fisher skewness term of the T-token counts (independent of T, see ``_normal``)."""
        key = (samples, seed)
        if key not in self._fluctuations:
            cov = self.covariance()
            values, vectors = np.linalg.eigh(cov)
            root = vectors * np.sqrt(np.clip(values, 0.0, None))
            z = np.random.default_rng([seed, 2]).standard_normal((samples, self.n))
            fluct = z @ root.T
            sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
            standard = np.divide(fluct, sd, out=np.zeros_like(fluct), where=sd > 0)
            skew = (1.0 - 2.0 * self.pi) / 6.0 * (standard**2 - 1.0)
            self._fluctuations[key] = (fluct, skew)
        return self._fluctuations[key]

    def rank_fluctuations(self, ep: int, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``fluctuations`` summed over the experts of each rank, shape ``(samples, ep)``."""
        key = (ep, samples, seed)
        if key not in self._rank_fluctuations:
            fluct, skew = self.fluctuations(samples, seed)
            shape = (samples, ep, self.n // ep)
            self._rank_fluctuations[key] = (fluct.reshape(shape).sum(axis=2), skew.reshape(shape).sum(axis=2))
        return self._rank_fluctuations[key]

    def uniforms(self, samples: int, seed: int) -> np.ndarray:
        key = (samples, seed)
        if key not in self._uniforms:
            self._uniforms[key] = np.random.default_rng([seed, 3]).random((samples, self.n))
        return self._uniforms[key]


_MODELS: OrderedDict[tuple, _TokenModel] = OrderedDict()


def _token_model(p: np.ndarray, k: int) -> _TokenModel:
    key = (hashlib.sha1(p.tobytes()).hexdigest(), p.size, k)
    model = _MODELS.get(key)
    if model is None:
        model = _TokenModel(p, k)
        _MODELS[key] = model
        while len(_MODELS) > _MODEL_CACHE_SIZE:
            _MODELS.popitem(last=False)
    else:
        _MODELS.move_to_end(key)
    return model
