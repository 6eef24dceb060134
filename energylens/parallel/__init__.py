"""Parallelism as sharding: layouts, the rules that derive collectives, per-rank programs."""

from energylens.parallel.layout import Layout

__all__ = ["Layout"]
