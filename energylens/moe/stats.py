"""Per-rank routing statistics: expected busiest-rank load and experts hit (exact or fixed-seed
Monte Carlo with a stated standard error)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from energylens.errors import EnergyLensError, LayoutError, UnknownNameError, WorkloadError
from energylens.moe.parse import parse_routing
from energylens.moe.spec import (
    _DETERMINISTIC_TOL,
    _MC_CHUNK_ASSIGNMENTS,
    _RESULT_CACHE_SIZE,
    DEFAULT_SAMPLES,
    MC_MAX_TOKENS,
    METHODS,
    MIN_SAMPLES,
    ROUTING_FORMS,
    Routing,
    _check_n_experts,
)
from energylens.moe.topk import _check_top_k, _token_model, _TokenModel

# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RoutingStats:
    """Routing statistics of one MoE layer for a batch of ``tokens`` tokens.

    "tokens" of a rank or expert count *assignments* (token, expert) pairs: a batch of ``T``
    tokens makes ``T*top_k`` of them. Arrays have the shape of ``tokens`` (``...``), with a
    trailing axis of ``n_experts`` or ``ep`` where stated.
    """

    routing: str  # Routing.name
    n_experts: int
    top_k: int
    ep: int
    layer: int
    tokens: np.ndarray  # (...) tokens in the batch
    expert_inclusion_probability: np.ndarray  # (E,) P(expert i in a token's top-k set)
    inclusion_probability_error: float  # quadrature residual |sum(pi) - k|
    tokens_per_expert_mean: np.ndarray  # (..., E) expected assignments per expert, exact
    tokens_per_rank_mean: np.ndarray  # (..., ep) expected assignments per rank, exact
    mean_rank_tokens: np.ndarray  # (...) T*k/ep, exact
    max_rank_tokens: np.ndarray  # (...) E[max over ranks of assignments]
    max_rank_tokens_stderr: np.ndarray  # (...) standard error of max_rank_tokens (0 if exact)
    imbalance: np.ndarray  # (...) max_rank_tokens / mean_rank_tokens, >= 1
    experts_hit: np.ndarray  # (...) E[distinct experts with >= 1 assignment], exact
    experts_hit_per_rank_mean: np.ndarray  # (..., ep) E[distinct experts hit on each rank], exact
    experts_hit_per_rank_max: np.ndarray  # (...) E[max over ranks of distinct experts hit]
    experts_hit_per_rank_max_stderr: np.ndarray  # (...)
    per_rank_tokens_max_expert: np.ndarray  # (...) E[assignments of the busiest expert on the busiest rank]
    per_rank_tokens_max_expert_stderr: np.ndarray  # (...)
    method: np.ndarray  # (...) how max_rank_tokens was found: "exact" | "monte-carlo" | "normal"


def _mean_stderr(values: np.ndarray) -> tuple[float, float]:
    n = values.size
    mean = float(values.mean())
    stderr = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return mean, stderr


def _monte_carlo(model: _TokenModel, ep: int, tokens: int, samples: int, seed: int) -> dict[str, float | str]:
    n, k = model.n, model.k
    per_rank = n // ep
    pool = model.pool
    rng = np.random.default_rng([seed, tokens, 1])
    rows_per_chunk = max(1, _MC_CHUNK_ASSIGNMENTS // (tokens * k))
    load_max = np.empty(samples)
    hits_max = np.empty(samples)
    busiest = np.empty(samples)
    argmax_share = np.zeros(ep)  # how often each rank is the busiest (ties split evenly)
    busiest_share = np.zeros((ep, per_rank))  # how often each expert is the busiest expert there
    for start in range(0, samples, rows_per_chunk):
        rows = min(rows_per_chunk, samples - start)
        picks = pool[rng.integers(0, pool.shape[0], size=(rows, tokens))].reshape(rows, tokens * k)
        flat = (picks + (np.arange(rows) * n)[:, None]).ravel()
        counts = np.bincount(flat, minlength=rows * n).reshape(rows, ep, per_rank)
        hits_max[start : start + rows] = (counts > 0).sum(axis=2).max(axis=1)
        loads = counts.sum(axis=2)
        top = loads.argmax(axis=1)
        peak = loads[np.arange(rows), top]
        load_max[start : start + rows] = peak
        tied = loads == peak[:, None]
        argmax_share += (tied / tied.sum(axis=1, keepdims=True)).sum(axis=0)
        value = counts[np.arange(rows), top].max(axis=1)
        busiest[start : start + rows] = value
        chosen = tied[:, :, None] & (counts == value[:, None, None])
        busiest_share += (chosen / chosen.sum(axis=(1, 2))[:, None, None]).sum(axis=0)
    out: dict[str, float | str] = {"method": "monte-carlo"}
    out["max_rank"], out["max_rank_se"] = _mean_stderr(load_max)
    # First-order pool correction (delta method): dE[max_r L_r]/d(mean L_r) = P(r is the
    # busiest), applied to the difference between the exact and the pool's mean loads; the same
    # for the busiest expert with P(expert i is the busiest expert on a busiest rank).
    pool_error = tokens * (model.pi - model.pool_pi).reshape(ep, per_rank)
    out["max_rank"] = float(out["max_rank"]) + float(argmax_share @ pool_error.sum(axis=1)) / samples
    out["busiest"], out["busiest_se"] = _mean_stderr(busiest)
    out["busiest"] = float(out["busiest"]) + float((busiest_share * pool_error).sum()) / samples
    out["hits_max"], out["hits_max_se"] = _mean_stderr(hits_max)
    return out


def _hit_probability(pi: np.ndarray, tokens: int) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return -np.expm1(tokens * np.log1p(-pi))


def _normal(model: _TokenModel, ep: int, tokens: int, samples: int, seed: int) -> dict[str, float | str]:
    n = model.n
    per_rank = n // ep
    fluct, skew = model.fluctuations(samples, seed)
    rank_fluct, rank_skew = model.rank_fluctuations(ep, samples, seed)
    root_t = math.sqrt(tokens)
    mean = tokens * model.pi.reshape(ep, per_rank)
    loads = mean.sum(axis=1) + root_t * rank_fluct + rank_skew
    top = loads.argmax(axis=1)
    rows = np.arange(samples)
    out: dict[str, float | str] = {"method": "normal"}
    out["max_rank"], out["max_rank_se"] = _mean_stderr(loads[rows, top])
    top_counts = (
        mean[top]
        + root_t * fluct.reshape(samples, ep, per_rank)[rows, top]
        + skew.reshape(samples, ep, per_rank)[rows, top]
    )
    out["busiest"], out["busiest_se"] = _mean_stderr(top_counts.max(axis=1))
    hit = _hit_probability(model.pi, tokens)
    if float(hit.min()) >= 1.0 - _DETERMINISTIC_TOL:
        out["hits_max"], out["hits_max_se"] = float(hit.reshape(ep, per_rank).sum(axis=1).max()), 0.0
    else:
        drawn = (model.uniforms(samples, seed) < hit).reshape(samples, ep, per_rank).sum(axis=2).max(axis=1)
        out["hits_max"], out["hits_max_se"] = _mean_stderr(drawn.astype(np.float64))
    return out


def _scalar_stats(
    model: _TokenModel, ep: int, tokens: int, samples: int, method: str, seed: int
) -> dict[str, float | str]:
    key = (ep, tokens, samples, method, seed)
    cached = model.results.get(key)
    if cached is not None:
        model.results.move_to_end(key)
        return cached
    n, k = model.n, model.k
    per_rank = n // ep
    if model.deterministic:
        chosen = (model.pi > 0.5).reshape(ep, per_rank)
        out: dict[str, float | str] = {
            "method": "exact",
            "max_rank": float(tokens * chosen.sum(axis=1).max()),
            "max_rank_se": 0.0,
            "hits_max": float(chosen.sum(axis=1).max()),
            "hits_max_se": 0.0,
            "busiest": float(tokens),
            "busiest_se": 0.0,
        }
    else:
        use_mc = method == "monte-carlo" or (method == "auto" and tokens <= MC_MAX_TOKENS)
        out = (_monte_carlo if use_mc else _normal)(model, ep, tokens, samples, seed)
        if ep == 1:
            out["method"] = "exact"
            out["max_rank"], out["max_rank_se"] = float(tokens * k), 0.0
            out["hits_max"], out["hits_max_se"] = float(_hit_probability(model.pi, tokens).sum()), 0.0
    model.results[key] = out
    while len(model.results) > _RESULT_CACHE_SIZE:
        model.results.popitem(last=False)
    return out


def _check_tokens(tokens: object) -> np.ndarray:
    array = np.asarray(tokens)
    if array.dtype == object or array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise WorkloadError("tokens", tokens, "an integer >= 1 or an array of them")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise WorkloadError("tokens", tokens, "whole numbers of tokens (>= 1)")
    if array.size == 0:
        raise WorkloadError("tokens", tokens, "at least one token count")
    if np.any(array < 1):
        raise WorkloadError("tokens", tokens, "token counts >= 1")
    return array.astype(np.int64)


def _readonly(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    array.setflags(write=False)
    return array


def routing_stats(
    routing: Routing | str,
    tokens: int | np.ndarray,
    n_experts: int,
    top_k: int,
    ep: int,
    *,
    layer: int = 0,
    samples: int = DEFAULT_SAMPLES,
    method: str = "auto",
    seed: int = 0,
) -> RoutingStats:
    """Routing statistics of one MoE layer for batches of ``tokens`` tokens (int or int array).

    ``method``: ``"auto"`` (Monte Carlo for ``tokens <= MC_MAX_TOKENS``, normal approximation
    above), ``"monte-carlo"`` or ``"normal"`` (forced; exact cases stay exact). ``samples``
    Monte Carlo / normal draws per token count, fixed ``seed``. See the module docstring.
    """
    route = parse_routing(routing) if isinstance(routing, str) else routing
    if not isinstance(route, Routing):
        raise EnergyLensError(
            "routing", routing, "a Routing or a routing string: " + ", ".join(ROUTING_FORMS)
        )
    n = _check_n_experts(n_experts)
    k = _check_top_k(top_k, n)
    if isinstance(ep, bool) or not isinstance(ep, (int, np.integer)) or ep < 1 or n % ep:
        raise LayoutError("ep", ep, f"an integer >= 1 that divides n_experts={n}")
    ep = int(ep)
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < MIN_SAMPLES:
        raise EnergyLensError("samples", samples, f"an integer >= {MIN_SAMPLES}")
    if method not in METHODS:
        raise UnknownNameError("method", method, METHODS)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise EnergyLensError("seed", seed, "an integer >= 0")
    token_array = _check_tokens(tokens)
    p = route.probabilities(n, layer)
    model = _token_model(p, k)

    unique, inverse = np.unique(token_array, return_inverse=True)
    per_value = [_scalar_stats(model, ep, int(t), int(samples), method, int(seed)) for t in unique]
    inverse = inverse.reshape(token_array.shape)

    def gather(name: str) -> np.ndarray:
        return np.array([v[name] for v in per_value], dtype=np.float64)[inverse]

    t = token_array.astype(np.float64)
    pi = model.pi
    per_rank = n // ep
    mean_rank = t * k / ep
    max_rank = np.clip(gather("max_rank"), mean_rank, t * min(k, per_rank))
    hit_prob = _hit_probability(pi[None, :], unique[:, None])  # (unique, E)
    hits = hit_prob.sum(axis=1)
    hits[unique == 1] = float(k)  # exact identity: one token hits exactly k experts
    hits_rank = hit_prob.reshape(unique.size, ep, per_rank).sum(axis=2)
    return RoutingStats(
        routing=route.name,
        n_experts=n,
        top_k=k,
        ep=ep,
        layer=int(layer),
        tokens=_readonly(token_array),
        expert_inclusion_probability=_readonly(pi.copy()),
        inclusion_probability_error=float(model.pi_residual),
        tokens_per_expert_mean=_readonly(t[..., None] * pi),
        tokens_per_rank_mean=_readonly(t[..., None] * pi.reshape(ep, per_rank).sum(axis=1)),
        mean_rank_tokens=_readonly(mean_rank),
        max_rank_tokens=_readonly(max_rank),
        max_rank_tokens_stderr=_readonly(gather("max_rank_se")),
        imbalance=_readonly(max_rank / mean_rank),
        experts_hit=_readonly(hits[inverse]),
        experts_hit_per_rank_mean=_readonly(hits_rank[inverse]),
        experts_hit_per_rank_max=_readonly(gather("hits_max")),
        experts_hit_per_rank_max_stderr=_readonly(gather("hits_max_se")),
        per_rank_tokens_max_expert=_readonly(np.clip(gather("busiest"), 1.0, t)),
        per_rank_tokens_max_expert_stderr=_readonly(gather("busiest_se")),
        method=_readonly(np.array([v["method"] for v in per_value], dtype=str)[inverse]),
    )
