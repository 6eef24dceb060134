"""``System``: what a model runs on: a GPU profile, its intra-node link, GPUs per node and nodes."""

from __future__ import annotations

import math
from dataclasses import dataclass

from energylens.errors import LayoutError, SpecError
from energylens.hardware.links import get_link
from energylens.hardware.profile import GPU, load_gpu
from energylens.specs.execution import Execution

MAX_NODES = 1 << 16


@dataclass(frozen=True)
class System:
    """``gpu``: a profile (key, alias, YAML path or ``GPU``); ``link``: the intra-node link key
    (``energylens/data/hardware/links.yaml``; None = the profile's own). A different link replaces the
    profile's in the alpha-beta collective model; a GPU's measured collective tables, where it has them,
    still set the cost of intra-node collectives. Inter-node traffic uses the network link the profile's
    NIC bandwidth implies. ``gpus_per_node`` and ``nodes`` bound the GPUs an execution may use."""

    gpu: GPU | str = "h100-sxm"
    gpus_per_node: int = 8
    nodes: int = 1
    link: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "gpu", load_gpu(self.gpu))
        for name, limit in (("gpus_per_node", 1 << 10), ("nodes", MAX_NODES)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= limit:
                raise LayoutError(name, v, f"a positive integer (at most {limit})")
        if self.link is not None:
            if not isinstance(self.link, str):
                raise SpecError("link", self.link, "a link key of energylens/data/hardware/links.yaml")
            get_link(self.link)  # raises UnknownNameError listing the known links
            if self.link != self.gpu.link:
                from dataclasses import replace

                object.__setattr__(self, "gpu", replace(self.gpu, link=self.link))

    @property
    def num_gpus(self) -> int:
        return self.gpus_per_node * self.nodes

    @classmethod
    def for_execution(cls, gpu: GPU | str, execution: Execution, gpus_per_node: int = 8) -> System:
        """The smallest system of ``gpus_per_node``-GPU nodes that holds the execution."""
        return cls(gpu, gpus_per_node, max(1, math.ceil(execution.num_gpus / gpus_per_node)))

    def check(self, execution: Execution) -> None:
        """The execution fits this system: its GPUs, its placement and its power limit."""
        if execution.gpus_per_node is not None and execution.gpus_per_node > self.gpus_per_node:
            raise LayoutError("gpus_per_node", execution.gpus_per_node,
                              f"at most the system's {self.gpus_per_node} GPUs per node")
        per_node = execution.gpus_per_node or self.gpus_per_node
        nodes_needed = math.ceil(execution.num_gpus / per_node)
        if nodes_needed > self.nodes:
            raise LayoutError("tp*pp*dp", execution.num_gpus,
                              f"at most {self.nodes * per_node} GPUs ({self.nodes} nodes x {per_node} GPUs)")
        p = execution.power_limit_w
        if p is not None and not self.gpu.idle_power_w < p <= self.gpu.power_limit_w:
            raise SpecError("power_limit_w", p, f"between the idle power ({self.gpu.idle_power_w:g} W) and the "
                                                f"{self.gpu.name} limit ({self.gpu.power_limit_w:g} W)")

    def gpu_for(self, execution: Execution) -> GPU:
        """The GPU profile as this execution runs it: its power limit and locked SM clock applied
        (:func:`energylens.cost.dvfs.with_operating_point`)."""
        from energylens.cost.dvfs import with_operating_point

        return with_operating_point(self.gpu, power_limit_w=execution.power_limit_w,
                                    sm_clock_mhz=execution.sm_clock_mhz)

    def to_dict(self) -> dict:
        return {"gpu": self.gpu.key, "link": self.gpu.link, "gpus_per_node": self.gpus_per_node,
                "nodes": self.nodes}
