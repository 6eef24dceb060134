"""Interconnect links (NVLink, PCIe, InfiniBand) loaded from ``energylens/data/hardware/links.yaml``.

Every number is a :class:`energylens.hardware.Quantity` (value, unit, kind, source). Schema::

    <link key>:
      name: "human readable"
      switched: true|false          # any GPU pair gets the full bandwidth (NVSwitch / fat tree)
      bandwidth_unidir: {value, unit: B/s, kind, source, note}
      latency:          {value, unit: s, ...}      # per hop, used by the alpha-beta collective model
      energy_per_byte:  {value, unit: J/B, ...}    # charged to the GPU per byte it sends on this link
      nccl_bus_efficiency: {value, unit: "1", ...} # large-message NCCL busbw / bandwidth_unidir
      nccl_channels:    {value, unit: "1", ...}    # optional: NCCL default channels (= SMs) on this fabric
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from energylens.datafiles import data_path
from energylens.errors import SpecError, UnknownNameError
from energylens.hardware.profile import Quantity, Sourced, parse_quantity, safe_load

# field -> (unit, required)
LINK_FIELDS: dict[str, tuple[str, bool]] = {
    "bandwidth_unidir": ("B/s", True),
    "latency": ("s", True),
    "energy_per_byte": ("J/B", True),
    "nccl_bus_efficiency": ("1", True),
    "nccl_channels": ("1", False),
}


@dataclass(frozen=True)
class Link(Sourced):
    """One interconnect. Accessors return SI floats; ``quantities`` keeps the provenance."""

    key: str
    name: str
    switched: bool
    quantities: dict[str, Quantity] = field(repr=False)

    _what = "link"

    @property
    def bandwidth_bytes_per_s(self) -> float:
        return self.q("bandwidth_unidir")

    @property
    def latency_s(self) -> float:
        return self.q("latency")

    @property
    def energy_per_byte_j(self) -> float:
        return self.q("energy_per_byte")

    @property
    def nccl_bus_efficiency(self) -> float:
        return self.q("nccl_bus_efficiency")


def parse_links(data: object, origin: str) -> dict[str, Link]:
    """Validate a links mapping (the content of links.yaml). ``origin`` names the file in errors."""
    if not isinstance(data, dict):
        raise SpecError(origin, type(data).__name__, "a mapping of link key -> link entry")
    links: dict[str, Link] = {}
    for key, entry in data.items():
        where = f"{origin}: {key}"
        if not isinstance(entry, dict):
            raise SpecError(where, entry, "a mapping with name, switched and sourced quantities")
        if not isinstance(entry.get("switched"), bool):
            raise SpecError(f"{where}.switched", entry.get("switched"), "true or false")
        quantities: dict[str, Quantity] = {}
        for name, value in entry.items():
            if name in ("name", "switched"):
                continue
            if name not in LINK_FIELDS:
                raise SpecError(
                    f"{where}.{name}", name, "unknown field; known: " + ", ".join(sorted(LINK_FIELDS))
                )
            quantities[name] = parse_quantity(value, f"{where}.{name}", LINK_FIELDS[name][0])
        for name, (_unit, required) in LINK_FIELDS.items():
            if required and name not in quantities:
                raise SpecError(f"{where}.{name}", None, "required field is missing")
        links[str(key)] = Link(str(key), str(entry.get("name", key)), bool(entry["switched"]), quantities)
    return links


@cache
def load_links(path: str | None = None) -> dict[str, Link]:
    """All links from the built-in ``links.yaml`` (or a user file at ``path``)."""
    if path is None:
        res = data_path("hardware", "links.yaml")
        return parse_links(safe_load(res.read_text()), "energylens/data/hardware/links.yaml")
    return parse_links(safe_load(Path(path).read_text()), str(path))


def get_link(key: str) -> Link:
    """A built-in link by key (``nvlink4``, ``pcie5``, ``ib-ndr`` ...); raises UnknownNameError."""
    links = load_links()
    norm = str(key).strip().lower().replace("_", "-")
    if norm not in links:
        raise UnknownNameError("link", key, links.keys())
    return links[norm]
