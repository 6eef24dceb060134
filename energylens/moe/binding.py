"""Binding routing statistics to the sizes the cost engine sees: tokens per expert (``c``) and the
experts a rank actually touches, on the busiest and on the mean expert-parallel rank.

Who processes which tokens (``Layout``: ``tp``, ``dp``, ``ep``; vLLM ``--enable-expert-parallel``):

* ``ep == 1``: experts are tensor-parallel over ``tp`` on ``f`` (vLLM's default). Every rank of a
  replica runs every expert on all ``T = b*t`` tokens of the replica, on its ``f/tp`` slice: there
  is no imbalance between ranks (``max = mean``), only the experts hit matter.
* ``ep > 1``: the ``E`` experts are split over ``ep`` ranks, each expert whole on its rank.
  Attention is tensor-parallel within a replica and data-parallel across replicas; each token is
  dispatched once, by one of the ``tp`` ranks holding it, so one expert-parallel group of ``ep``
  GPUs serves ``T_group = b*t*ep/tp`` tokens (``b*t*dp`` tokens when ``ep = tp*dp``), rounded up
  when ``ep < tp`` leaves a group a fraction of a token. (When ``ep`` divides ``tp`` without sequence
  parallelism every tp rank holds every token and picks those of its own experts, no all-to-all, see
  ``energylens.parallel.sharding``; the ``tp / ep`` expert groups of a replica still share its tokens.)

For a group's ``T_group`` tokens, ``energylens.moe.routing.routing_stats`` gives the expected
assignments (token, expert) per rank, the busiest rank's load and the experts hit. Sizes:

* busiest rank: ``load = max_rank_tokens``, ``hits = experts_hit_per_rank_max`` (the most experts
  any rank has to read; the two maxima may come from different ranks, so the busiest rank's
  time is ``max(compute of the heaviest load, weight reads of the most experts)`` per kernel);
* mean rank: ``load = T_group*k/ep``, ``hits = experts_hit/ep`` (exact expectations);
* the expert-side ops then see ``e = hits`` experts per rank with ``c = load/hits`` tokens each:
  grouped-GEMM FLOPs are ``2*load*d*f`` exactly, weight bytes count only experts hit, and the
  GEMM efficiency sees ``hits`` small GEMMs of ``c`` rows (tile and wave quantisation).

Per-layer histograms (a routing file) give one set of statistics per MoE layer (MoE layer ``i``
uses row ``i % n_rows``); the loads and hit counts are averaged over the model's MoE layers, and
every MoE layer is costed with that average (the cost is nearly linear in both; a layer mix of
compute- and memory-bound layers makes this a slight underestimate). Synthetic routings (uniform,
zipf, dirichlet) use one popularity for every layer, so nothing is averaged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from energylens.cost.kernels import ROUTED_EXPERTS_KEY
from energylens.errors import EnergyLensError
from energylens.graph.model import Model, is_moe  # noqa: F401  (re-exported)
from energylens.moe.routing import ROUTING_FORMS, Routing, parse_routing, routing_stats

__all__ = ["MoEBinding", "bind_moe", "group_tokens", "is_moe", "moe_info", "resolve_routing"]


def moe_info(model: Model) -> dict:
    return dict(model.info["moe"])


def resolve_routing(routing: str | Routing | None) -> Routing:
    """A ``Routing`` from a CLI string (``uniform``, ``zipf:1.2``, ``dirichlet:0.5``, a file) or None."""
    if routing is None:
        return Routing.uniform()
    if isinstance(routing, Routing):
        return routing
    if not isinstance(routing, str):
        raise EnergyLensError("routing", routing, "a routing string: " + ", ".join(ROUTING_FORMS))
    return parse_routing(routing)


def group_tokens(b, t, tp, ep) -> np.ndarray:
    """Tokens entering one expert-parallel group's MoE layer per step (see the module docstring)."""
    tokens = np.asarray(b, dtype=float) * np.asarray(t, dtype=float)
    tp = np.asarray(tp, dtype=float)
    ep = np.asarray(ep, dtype=float)
    return np.where(ep > 1, np.ceil(tokens * ep / tp - 1e-9), np.rint(tokens))


@dataclass(frozen=True)
class MoEBinding:
    """Routing statistics of one phase and the sizes they bind (arrays of the shape of ``b*t``)."""

    routing: str
    n_experts: int
    top_k: int
    layers_averaged: int
    group_tokens: np.ndarray
    mean_rank_tokens: np.ndarray  # assignments per rank, mean
    max_rank_tokens: np.ndarray  # assignments on the busiest rank
    imbalance: np.ndarray  # max / mean (1 when ep == 1)
    experts_hit: np.ndarray  # distinct experts hit in one MoE layer, whole group
    experts_hit_per_rank_mean: np.ndarray
    experts_hit_per_rank_max: np.ndarray
    tokens_per_rank: np.ndarray | None  # (..., ep) expected assignments of each rank; None for an ep array
    method: str
    busiest: dict[str, np.ndarray] = field(default_factory=dict)  # size overrides, busiest rank
    mean: dict[str, np.ndarray] = field(default_factory=dict)  # size overrides, mean rank


def _layer_rows(route: Routing, n_moe_layers: int) -> list[tuple[int, float]]:
    """(histogram row, weight) pairs covering the model's MoE layers."""
    rows = route.n_layers_recorded
    if not rows or rows == 1 or n_moe_layers <= 1:
        return [(0, 1.0)]
    n = max(n_moe_layers, 1)
    used = min(rows, n)
    return [(r, sum(1 for i in range(n) if i % rows == r) / n) for r in range(used)]


def bind_moe(model: Model, routing: str | Routing | None, b, t, tp, ep) -> MoEBinding:
    """Routing statistics for the tokens of one step and the busiest / mean rank size overrides.

    ``b``, ``t``, ``tp`` and ``ep`` broadcast together (decode: a trailing axis of decode points).
    """
    info = moe_info(model)
    route = resolve_routing(routing)
    E, k = int(info["n_experts"]), int(info["top_k"])
    tokens = group_tokens(b, t, tp, ep)
    ep_arr = np.asarray(ep, dtype=float)
    tokens, ep_b = np.broadcast_arrays(tokens, ep_arr)
    tokens = np.maximum(tokens, 1.0)
    shape = tokens.shape
    keys = ("max_rank_tokens", "experts_hit", "experts_hit_per_rank_max")
    acc = {name: np.zeros(shape) for name in keys}
    per_rank = None
    methods: set[str] = set()
    rows = _layer_rows(route, int(info.get("moe_layers", 1)))
    scalar_ep = np.all(ep_b == ep_b.flat[0]) if ep_b.size else True
    for value in np.unique(ep_b):
        mask = ep_b == value
        sub = tokens[mask].astype(np.int64)
        for row, weight in rows:
            st = routing_stats(route, sub, E, k, int(value), layer=row)
            for name in keys:
                acc[name][mask] += weight * np.asarray(getattr(st, name))
            methods.update(str(m) for m in np.unique(st.method))
            if scalar_ep:
                contrib = weight * np.asarray(st.tokens_per_rank_mean)
                per_rank = contrib if per_rank is None else per_rank + contrib
    if per_rank is not None:
        per_rank = per_rank.reshape(*shape, -1)
    mean_load = tokens * k / ep_b
    max_load = np.maximum(acc["max_rank_tokens"], mean_load)
    experts_per_rank = E / ep_b
    hits_mean = np.clip(acc["experts_hit"] / ep_b, 1e-9, experts_per_rank)
    hits_max = np.clip(np.maximum(acc["experts_hit_per_rank_max"], hits_mean), 1e-9,
                       np.minimum(experts_per_rank, np.maximum(max_load, 1.0)))
    busiest = {ROUTED_EXPERTS_KEY: hits_max * ep_b, "c": max_load / hits_max}
    mean = {ROUTED_EXPERTS_KEY: hits_mean * ep_b, "c": mean_load / hits_mean}
    return MoEBinding(
        routing=route.name, n_experts=E, top_k=k, layers_averaged=len(rows), group_tokens=tokens,
        mean_rank_tokens=mean_load, max_rank_tokens=max_load, imbalance=max_load / mean_load,
        experts_hit=acc["experts_hit"], experts_hit_per_rank_mean=hits_mean, experts_hit_per_rank_max=hits_max,
        tokens_per_rank=per_rank, method="/".join(sorted(methods)), busiest=busiest, mean=mean,
    )
