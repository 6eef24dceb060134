"""Mixture-of-experts modelling: routing distributions and per-rank routing statistics."""

from energylens.moe import routing as _routing
from energylens.moe.routing import *  # noqa: F403  (the public names are routing.__all__)

__all__ = list(_routing.__all__)
