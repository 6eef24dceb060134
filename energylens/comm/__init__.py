"""Communication cost model: NCCL collectives (latency, energy, power) and interconnect links.

The cost of an all-reduce (or any collective) is :func:`collective_cost` in
:mod:`energylens.comm.collectives`; links come from ``energylens/data/hardware/links.yaml``.
"""

from energylens.comm.collectives import (
    ASSUMPTION_SOURCES,
    COLLECTIVES,
    DEFAULT_ASSUMPTIONS,
    CollectiveCost,
    CollectiveTable,
    CommAssumptions,
    asymptotic_busbw,
    bus_factor,
    collective_cost,
    collective_latency_s,
    default_comm_sms,
    load_collective_tables,
    sm_saturation_k0,
)
from energylens.comm.links import Link, get_link, load_links

__all__ = [
    "ASSUMPTION_SOURCES",
    "COLLECTIVES",
    "DEFAULT_ASSUMPTIONS",
    "CollectiveCost",
    "CollectiveTable",
    "CommAssumptions",
    "Link",
    "asymptotic_busbw",
    "bus_factor",
    "collective_cost",
    "collective_latency_s",
    "default_comm_sms",
    "get_link",
    "load_collective_tables",
    "load_links",
    "sm_saturation_k0",
]
