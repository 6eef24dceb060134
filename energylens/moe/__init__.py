"""Mixture-of-experts modelling: routing distributions and per-rank routing statistics."""

from energylens.moe.routing import (
    MC_MAX_TOKENS,
    POOL_TOKENS,
    ROUTING_FORMS,
    Routing,
    RoutingStats,
    example_histogram_path,
    inclusion_probabilities,
    load_histogram,
    parse_routing,
    routing_stats,
    sample_topk,
    save_histogram,
    synthetic_histogram,
)

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
