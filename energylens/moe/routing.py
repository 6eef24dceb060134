"""Routing statistics for mixture-of-experts (MoE) layers.

Setting
-------
A batch of ``T`` tokens passes one MoE layer with ``E`` experts. Every token picks ``k``
*distinct* experts (top-k); each (token, expert) pair is one *assignment*, so a batch makes
``T*k`` assignments. Experts are split evenly and contiguously over ``ep`` expert-parallel
ranks: rank ``r`` holds experts ``r*E/ep ... (r+1)*E/ep - 1``. The busiest rank sets the pace of
the layer, and in decode only experts hit by at least one token have their weights read.

Routing distributions (``parse_routing``)
-----------------------------------------
Every routing gives a popularity vector ``p`` (``Routing.probabilities(E, layer)``, sums to 1).
A token's top-k set is drawn by *successive sampling without replacement* with weights ``p``
(draw one expert with probability ``p``, remove it, renormalise, repeat ``k`` times), which is
the same distribution as Gumbel-top-k and as the "exponential race" (expert ``i`` arrives at
time ``Exp(1)/p_i``; the first ``k`` arrivals are chosen).

``uniform``
    ``p_i = 1/E``.
``zipf:S`` (``0 < S <= 100``)
    ``p_i`` proportional to ``1/rank_i**S``. The popularity ranks ``1..E`` are assigned to experts by
    ``numpy.random.default_rng(0).permutation(E)`` (``zipf:S:SEED`` picks another seed), so the
    hot experts are scattered over the ranks as a trained router's would be. ``zipf:S:sorted``
    gives expert ``i`` rank ``i+1``: the hottest experts are packed on rank 0 (worst case).
``dirichlet:A`` (``A > 0``)
    ``p = numpy.random.default_rng(0).dirichlet(A * ones(E))`` (``dirichlet:A:SEED`` for another
    seed). Small ``A`` is skewed, large ``A`` tends to uniform.
``FILE.json`` / ``FILE.csv`` / ``FILE.npy``
    recorded per-layer expert-count histograms, a matrix ``[n_layers_recorded, E]`` of
    token-to-expert assignment counts (non-negative, finite; fractional counts are accepted);
    popularity of a layer is ``counts/sum``. JSON: ``{"n_experts": E, "top_k": k,
    "layers": [[...], ...], "source": "..."}``; CSV: one row per layer, ``E`` columns, an optional
    header row, ``#`` comment lines; NPY: a 2-D (or 1-D, one layer) numeric array. A model with
    more layers than recorded rows cycles through them: layer ``l`` uses row
    ``l % n_layers_recorded``. The file's ``E`` must equal the model's ``E``.

Synthetic routings (uniform, zipf, dirichlet) use the same popularity for every layer.
If fewer than ``k`` experts have ``p > 0`` (possible in histograms), every token takes all of
them and fills the remaining slots uniformly among the zero-popularity experts.

What is exact and what is estimated
-----------------------------------
``expert_inclusion_probability`` ``pi_i = P(i in a token's top-k set)``
    ``k/E`` for uniform; otherwise the exact one-dimensional integral of the exponential race,
    ``pi_i = int_0^inf p_i exp(-p_i t) P(fewer than k of the other experts arrived by t) dt``,
    with the Poisson-binomial probability computed by leave-one-out prefix/suffix dynamic
    programming and the integral by the trapezoid rule in ``log t`` (step 0.25, halved until
    ``|sum(pi) - k| < 1e-9``; the integrand is analytic so the rule converges geometrically,
    errors are ~1e-12). The residual is reported as ``inclusion_probability_error``.
``tokens_per_expert_mean = T*pi_i``, ``tokens_per_rank_mean``, ``mean_rank_tokens = T*k/ep``
    exact (linearity of expectation).
``experts_hit = sum_i (1 - (1 - pi_i)**T)`` and ``experts_hit_per_rank_mean``
    exact: the ``T`` tokens are independent, so ``P(expert i missed by all) = (1 - pi_i)**T``
    holds exactly for each expert; the expectation of a sum of indicators needs no independence
    *between* experts (which would be false: a token's k picks are negatively correlated). For
    uniform routing this is the closed form ``E*(1 - (1 - k/E)**T)``; for ``T = 1`` it is ``k``.
``max_rank_tokens``, ``experts_hit_per_rank_max``, ``per_rank_tokens_max_expert``
    expectations of maxima, estimated with a fixed seed (``seed``) and reported with standard
    errors (``*_stderr``, 0 where exact):

    * exact when routing is deterministic (every ``pi_i`` within 1e-12 of 0 or 1), and for
      ``ep == 1`` (``max_rank_tokens = T*k``, ``experts_hit_per_rank_max = experts_hit``);
    * ``T <= MC_MAX_TOKENS`` (128): Monte Carlo over ``samples`` (default 2000) batches of ``T``
      tokens. Each token's top-k set is drawn (with replacement) from a pool of
      ``POOL_TOKENS`` = 65536 exact draws (``sample_topk``) made once per ``(p, k)`` with a fixed
      seed and cached. The first-order error of the finite pool is removed from
      ``max_rank_tokens`` by the delta method: ``+ T * sum_r P(r busiest) * (mu_r - mu_pool_r)``
      with ``mu`` the exact and ``mu_pool`` the pool's mean assignments per rank and token (ties
      for busiest split evenly), and likewise from ``per_rank_tokens_max_expert`` with the
      probability of each expert being the busiest one. The remaining pool error, measured over
      six pool seeds, is about one stderr (<= 0.2 % of ``max_rank_tokens`` and
      ``per_rank_tokens_max_expert``; <= 0.3 % of ``experts_hit_per_rank_max``, which is not
      corrected) and is not included in the stderr;
    * ``T > MC_MAX_TOKENS``: normal approximation (central limit theorem over the independent
      tokens) with a skewness correction. Per-expert counts are ``T*pi + sqrt(T)*W + c``:
      ``W`` has the exact one-token covariance ``P(i and j chosen) - pi_i*pi_j`` (closed form
      for uniform routing, estimated from the pool otherwise), and ``c = (1 - 2 pi_i)/6 *
      (z_i**2 - 1)`` (``z_i`` the standardised ``W_i``) is the first Cornish-Fisher term that
      gives each count the skewness of its exact Binomial(T, pi_i) marginal. Rank loads are
      sums of these counts; the expectation of the maximum is an average over ``samples``
      fixed-seed draws. Hits per rank use independent Bernoulli(``1 - (1 - pi_i)**T``)
      indicators (exact marginals; the weak negative correlation between experts' hit
      indicators is ignored) and are exact once every expert is hit with probability
      > 1 - 1e-12. Against Monte Carlo at ``T = 128..256`` the approximation agrees within
      0.5 % on ``max_rank_tokens`` and ``experts_hit_per_rank_max`` and 1 % on
      ``per_rank_tokens_max_expert`` (tested for uniform, zipf and dirichlet routings).

Cost (E=128, k=8, ep=8, one CPU core): the first call for a routing builds the pool and the
inclusion probabilities (0.05-0.4 s, more for very skewed routings whose tokens need the
exponential-race completion); afterwards a new token count costs < 25 ms by Monte Carlo and
~1-2 ms by the normal approximation, and a repeated one < 1 ms.

Calls are vectorised over ``tokens`` (any shape; results take that shape) and cached per
unique token count, so ``routing_stats(r, np.array([...]), ...)`` equals a loop of scalar calls.
"""

from __future__ import annotations

from energylens.moe.histograms import (
    example_histogram_path,
    load_histogram,
    save_histogram,
    synthetic_histogram,
)
from energylens.moe.parse import parse_routing
from energylens.moe.spec import (
    MC_MAX_TOKENS,
    POOL_TOKENS,
    ROUTING_FORMS,
    Routing,
)
from energylens.moe.stats import RoutingStats, routing_stats
from energylens.moe.topk import inclusion_probabilities, sample_topk

__all__ = [
    "MC_MAX_TOKENS",
    "POOL_TOKENS",
    "ROUTING_FORMS",
    "Routing",
    "RoutingStats",
    "example_histogram_path",
    "inclusion_probabilities",
    "load_histogram",
    "parse_routing",
    "routing_stats",
    "sample_topk",
    "save_histogram",
    "synthetic_histogram",
]
