"""The cost of one NCCL collective: latency (s), energy per GPU (J) and average power (W).

Everything about the time and cost of an all-reduce lives here (vLLM's custom all-reduce: ``cost.custom_ar``).

Conventions
-----------
``message_bytes`` is the nccl-tests "size" (what ``-b``/``-e`` sweep):

* ``all_reduce``: the buffer per rank (input = output size);
* ``all_gather``: the total OUTPUT bytes per rank after gathering (each rank contributes n/p);
* ``reduce_scatter``: the total INPUT bytes per rank (each rank keeps n/p);
* ``all_to_all``: the total bytes of each rank's send buffer (n/p to every peer, itself included);
* ``send_recv``: the bytes sent from one GPU to another. ``group_size`` >= 2 means one pair (any
  larger value is treated as concurrent independent pairs: the cost does not depend on it).

``group_size`` <= 1 or ``message_bytes`` == 0 gives latency 0 and energy 0 (power = idle power).
``nodes`` is the number of nodes the group spans (``group_size`` must be divisible by it; the
GPUs are spread evenly, ``g = group_size / nodes`` per node; ignored where ``group_size`` is 1). ``busbw`` follows nccl-tests:
``busbw = bus_factor * message_bytes / latency`` with ``bus_factor`` 2(p-1)/p for all-reduce,
(p-1)/p for all-gather / reduce-scatter / all-to-all and 1 for send_recv.

Every numeric argument may be a scalar or a NumPy array; they broadcast and the results are
float64 arrays of the broadcast shape (0-d for scalars), never NaN.

Latency model (one node)
------------------------
Measured tables ``energylens/data/hardware/collectives/<gpu key>.csv`` (nccl-tests from
AIConfigurator, stas00 long sweeps, vidur send_recv; see SOURCE.md there) hold, per
(collective, group_size), latency vs size at NCCL's default channel count:

* table noise is removed by making latency non-decreasing in size (suffix minimum: a point that
  is slower than a larger message is replaced by that larger message's time);
* inside the measured size range latency is interpolated log-log in size;
* below the smallest size the latency floor (the smallest latency) is used;
* above the largest size it continues at the table's largest busbw: ``t = t_max + bus_factor * (n -
  n_max) / busbw_max`` (for large n the all-reduce time tends to ``2(p-1)/p * n / busbw_max``).

Group sizes without a table use the alpha-beta model ``t = alpha + bus_factor * n / busbw``. If the
GPU has tables for the collective at other group sizes, alpha (latency floor) and busbw are
interpolated linearly in p between the neighbouring tables; beyond the largest table alpha grows by
the link's per-hop latency per extra ring step and busbw stays that of the largest table. GPUs with
no table at all (h100-pcie, l40s, a100-sxm-40gb, user profiles) use NCCL's ring model
(hardware_notes §5.8): ``alpha = 6.6 us + nsteps * link.latency`` (nsteps = 2(p-1) all-reduce,
p-1 all-gather / reduce-scatter / all-to-all, 1 send_recv) and
``busbw = link.bandwidth_unidir * link.nccl_bus_efficiency`` from links.yaml.

SM dependence
-------------
``comm_sms`` is the number of SMs (NCCL channels = CTAs) the communication kernel gets; ``None``
means the NCCL default for the GPU's link (``nccl_channels`` in links.yaml: 24 on NVLink3, 32 on
NVLink4/5, 4 on PCIe; assumed, see there). Achieved bandwidth saturates with SMs:
``bw(k) = bw_default * s(k) / s(k_default)``, ``s(k) = 1 - exp(-k / k0)``, with ``k0 = 10.6`` SMs
fitted (least squares on both ratios) to DeepEP's SM100 EP8 NVLink numbers, dispatch 726 GB/s with
64 SMs vs 643 with 24 and combine 740 vs 675 (hardware_notes §5.6). That fit is for NVLink5
(900 GB/s); assuming a constant copy throughput per SM, k0 scales with the link bandwidth
(``k0(link) = 10.6 * bandwidth_unidir / 900 GB/s``: 5.3 SMs on NVLink4, 3.5 on NVLink3, < 1 on
PCIe), so a PCIe GPU is not sped up by SMs it cannot feed. Only the bandwidth part of the
time scales (``t = floor + (t_table - floor) * s(k_default)/s(k)``); the latency floor does not.
More SMs never make communication slower.

Multi-node (``nodes = k > 1``)
------------------------------
Two levels. Inside a node the g local GPUs run the collective from the node's tables; between
nodes each GPU's traffic leaves through its own NIC (``nic_bandwidth`` of the GPU profile times
the network link's ``nccl_bus_efficiency``; network link ``ib-ndr`` for >= 50 GB/s NICs, else
``ib-hdr``). Per-GPU NIC bytes follow NCCL's rail-aligned ring: ``bus_factor(p) * n / g`` for
all-reduce, all-gather, reduce-scatter; ``(k-1)/k * n`` for all-to-all; ``n`` for send_recv.
NCCL pipelines the ring through all hops, so the bandwidth parts overlap, and it picks the faster
of two protocols (hardware_notes §5.8)::

    t_LL     = net_steps * network.latency + max(t_intra(g, n_local), alpha_intra(g) + nic_time / 0.5)
    t_Simple = 8.4 us + (nsteps - inter) * hop_intra + inter * 14 us + max(bw_intra(g, n_local), nic_time)
    t        = max(min(t_LL, t_Simple), t_single_node(p, n))

``nic_time = nic_bytes / nic_bw_eff``; t_intra is the table time of the local group, bw_intra its
bandwidth part only. LL: 9.4 us per inter-node step (derived from the mscclpp 1 KB floors,
hardware_notes §5.4; net_steps = 2*ceil(log2 k) for all-reduce / all-gather / reduce-scatter, 2k
for all-to-all, 1 for send_recv) and at most half the NIC bandwidth. Simple: NCCL's ring latency
(base 8.4 us, NVLink hop 3.4 us / PCI 5.7 us, NET hop 14 us; nsteps/inter = 2(p-1)/2k all-reduce,
(p-1)/(k-1) all-gather and reduce-scatter, p/k all-to-all). The result is never below the
single-node time of the same group plus one network step (``network.latency``). Checks against
hardware_notes §5.4/§5.5 (the model assumes InfiniBand; EFA and GPUDirect-TCPXO have higher latency,
so mid-size messages are slower there):
2x8 A100 HDR all-reduce 4 GB -> 192 GB/s busbw (measured 188-192); all-gather -> 192 (186);
all-to-all -> 45 (37.8); 1 KB all-reduce 40.6 us (35.9 with NCCL 2.17); 4x8 H200/B200 400G
all-reduce, large -> 384 (365 / 382 on EFA).

Energy model
------------
No public per-collective power measurement exists (hardware_notes §6; Lee et al., arXiv 2507.03114,
found that compute-communication overlap raises power). Per-GPU power during a collective is::

    P = idle_power + (hbm_bytes * energy_per_byte_hbm
                      + intra_bytes_sent * link.energy_per_byte
                      + nic_bytes_sent * network.energy_per_byte) / latency
                   + comm_sms * (power_limit - idle_power) / sm_count * SM_ACTIVITY_FACTOR

capped at ``power_limit``; ``energy_j_per_gpu = P * latency``. HBM bytes per GPU = bytes read
from the input + bytes written to the output + 2 x bytes received (each received byte is staged
in HBM once and read back once, ``hbm_staging_factor``). For send_recv the two ends are averaged
(the sender reads n, the receiver stages and writes n). All constants are in
:class:`CommAssumptions` (sources in :data:`ASSUMPTION_SOURCES`) so calibration can replace them.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field, replace
from functools import cache

import numpy as np

from energylens.cost.custom_ar import custom_allreduce_s
from energylens.cost.power import clamp_to_limit_w, comm_sm_power_w
from energylens.datafiles import data_path, read_yaml
from energylens.errors import DimensionError, LayoutError, SpecError, UnknownNameError
from energylens.hardware.links import Link, get_link
from energylens.hardware.profile import GPU, Quantity, load_gpu

COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv")



def _load_assumption_sources() -> dict[str, Quantity]:
    data = read_yaml("hardware", "comm_assumptions.yaml")
    entries = data.get("assumptions") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise SpecError("hardware/comm_assumptions.yaml: assumptions", entries, "a mapping of named quantities")
    out = {}
    for name, e in entries.items():
        if not isinstance(e, dict) or isinstance(e.get("value"), bool) or not isinstance(e.get("value"), (int, float)) \
                or not e.get("source"):
            raise SpecError(f"hardware/comm_assumptions.yaml: assumptions.{name}", e, "{value, unit, kind, source, note}")
        out[str(name)] = Quantity(float(e["value"]), str(e.get("unit", "1")), str(e.get("kind", "assumed")),
                                  str(e["source"]), str(e.get("note", "")))
    return out


# Sourced constants (energylens/data/hardware/comm_assumptions.yaml): value, unit, kind, source, note each.
ASSUMPTION_SOURCES: dict[str, Quantity] = _load_assumption_sources()
_V = {k: q.value for k, q in ASSUMPTION_SOURCES.items()}


@dataclass(frozen=True)
class CommAssumptions:
    """Collective cost model constants; calibration may replace any (defaults: comm_assumptions.yaml)."""

    nccl_base_latency_s: float = _V["nccl_base_latency_s"]
    sm_saturation_k0: float = _V["sm_saturation_k0"]
    sm_saturation_reference_bw: float = _V["sm_saturation_reference_bw"]
    sm_activity_factor: float = _V["sm_activity_factor"]
    hbm_staging_factor: float = _V["hbm_staging_factor"]
    nccl_simple_base_latency_s: float = _V["nccl_simple_base_latency_s"]
    nccl_simple_hop_nvlink_s: float = _V["nccl_simple_hop_nvlink_s"]
    nccl_simple_hop_pci_s: float = _V["nccl_simple_hop_pci_s"]
    nccl_simple_hop_net_s: float = _V["nccl_simple_hop_net_s"]
    nccl_ll_bandwidth_fraction: float = _V["nccl_ll_bandwidth_fraction"]
    default_comm_sms: float = _V["default_comm_sms"]
    network_link: str | None = None

    def with_(self, **changes: object) -> CommAssumptions:
        return replace(self, **changes)


DEFAULT_ASSUMPTIONS = CommAssumptions()


@dataclass(frozen=True)
class CollectiveCost:
    """Cost of one collective on one participating GPU (arrays of the broadcast shape)."""

    latency_s: np.ndarray
    energy_j_per_gpu: np.ndarray  # energy one participating GPU spends during the collective (incl. idle)
    power_w: np.ndarray  # average per-GPU power during it


@dataclass(frozen=True)
class CollectiveTable:
    """Measured latency vs size for one (gpu, collective, group_size), single node."""

    kind: str
    group_size: int
    sizes: np.ndarray  # bytes, strictly increasing
    latency_raw_s: np.ndarray  # as measured
    latency_s: np.ndarray  # non-decreasing (suffix minimum of the raw values)
    sources: tuple[str, ...] = field(repr=False)

    @property
    def floor_s(self) -> float:
        return float(self.latency_s[0])

    @property
    def busbw_max(self) -> float:
        return float(np.max(_bus_factor_scalar(self.kind, self.group_size) * self.sizes / self.latency_s))

    def time(self, n: np.ndarray) -> np.ndarray:
        """Latency at NCCL default SMs for sizes n > 0 (floor below, log-log inside, busbw_max above)."""
        n = np.asarray(n, dtype=float)
        ln = np.log(np.maximum(n, self.sizes[0]))
        t = np.exp(np.interp(ln, np.log(self.sizes), np.log(self.latency_s)))
        t = np.where(n <= self.sizes[0], self.latency_s[0], np.maximum(t, self.latency_s[0]))
        above = n > self.sizes[-1]
        if above.any():
            bf = _bus_factor_scalar(self.kind, self.group_size)
            t = np.where(above, self.latency_s[-1] + bf * (n - self.sizes[-1]) / self.busbw_max, t)
        return t


# --------------------------------------------------------------------------------------- helpers


def _check_kind(kind: str) -> str:
    if kind not in COLLECTIVES:
        raise UnknownNameError("collective", kind, COLLECTIVES)
    return kind


def _bus_factor_scalar(kind: str, p: float) -> float:  # a checked group: bus_factor's formula on floats
    bad = kind not in COLLECTIVES or kind == "send_recv" or not p >= 1 or p % 1
    return float(bus_factor(kind, p)) if bad else _nsteps(kind, float(p)) / float(p)


def bus_factor(kind: str, group_size) -> np.ndarray:
    """nccl-tests busbw / algbw: 2(p-1)/p all-reduce, (p-1)/p AG/RS/A2A, 1 send_recv."""
    _check_kind(kind)
    p = np.asarray(group_size, dtype=float)
    _check_group(p)
    if kind == "all_reduce":
        return 2.0 * (p - 1.0) / p
    if kind == "send_recv":
        return np.ones_like(p)
    return (p - 1.0) / p


def _first_bad(arr: np.ndarray, bad: np.ndarray) -> object:
    return arr[bad].flat[0].item()


def _check_group(p: np.ndarray) -> None:
    bad = ~np.isfinite(p) | (p < 1) | (p != np.round(p))
    if np.any(bad):
        raise LayoutError("group_size", _first_bad(p, bad), "a positive integer number of GPUs")


def _nsteps(kind: str, p: float) -> float:
    if kind == "all_reduce":
        return 2.0 * (p - 1)
    if kind == "send_recv":
        return 1.0
    return p - 1.0


def _net_steps(kind: str, k: int) -> float:
    if kind == "send_recv":
        return 1.0
    if kind == "all_to_all":
        return 2.0 * k
    return 2.0 * math.ceil(math.log2(k))


@cache
def _tables_for_key(key: str) -> dict[tuple[str, int], CollectiveTable]:
    res = data_path("hardware", "collectives", f"{key}.csv")
    if not res.is_file():
        return {}
    rows: dict[tuple[str, int], list[tuple[float, float, str]]] = {}
    with res.open("r") as fh:
        for r in csv.DictReader(fh):
            rows.setdefault((r["collective"], int(r["group_size"])), []).append(
                (float(r["message_bytes"]), float(r["latency_s"]), r["source"])
            )
    tables = {}
    for (kind, p), pts in rows.items():
        pts.sort()
        sizes = np.array([x[0] for x in pts])
        raw = np.array([x[1] for x in pts])
        clean = np.minimum.accumulate(raw[::-1])[::-1]
        tables[(kind, p)] = CollectiveTable(kind, p, sizes, raw, clean, tuple(x[2] for x in pts))
    return tables


def load_collective_tables(gpu: GPU | str) -> dict[tuple[str, int], CollectiveTable]:
    """The measured single-node tables for a GPU, keyed by (collective, group_size); {} if none."""
    return _tables_for_key(load_gpu(gpu).key)


def default_comm_sms(gpu: GPU | str, assumptions: CommAssumptions = DEFAULT_ASSUMPTIONS) -> float:
    """NCCL's default SM (channel) count for this GPU's intra-node link."""
    g = load_gpu(gpu)
    link = get_link(g.link)
    k = link.q("nccl_channels") if link.has("nccl_channels") else assumptions.default_comm_sms
    return float(min(k, g.sm_count))


def sm_saturation_k0(gpu: GPU | str, assumptions: CommAssumptions = DEFAULT_ASSUMPTIONS) -> float:
    """k0 (SMs) of s(k) = 1 - exp(-k/k0) for this GPU's intra-node link (scaled by its bandwidth)."""
    a = assumptions
    link = get_link(load_gpu(gpu).link)
    return a.sm_saturation_k0 * link.bandwidth_bytes_per_s / a.sm_saturation_reference_bw


def _sm_ratio(k: float, k_default: float, k0: float) -> float:
    """Time multiplier of the bandwidth part: s(k_default)/s(k) (<= 1 when k >= k_default)."""

    def s(x: float) -> float:
        return -math.expm1(-x / k0)

    return s(k_default) / s(k)


def _network_link(gpu: GPU, a: CommAssumptions) -> Link:
    if a.network_link is not None:
        return get_link(a.network_link)
    if gpu.has("nic_bandwidth") and gpu.q("nic_bandwidth") < 50e9:
        return get_link("ib-hdr")
    return get_link("ib-ndr")


def _alpha_busbw(kind: str, p: int, gpu: GPU, a: CommAssumptions) -> tuple[float, float]:
    """(alpha, busbw) of the alpha-beta model for a single-node group of p GPUs at default SMs."""
    tabs = _tables_for_key(gpu.key)
    if (kind, p) in tabs:
        t = tabs[(kind, p)]
        return t.floor_s, t.busbw_max
    link = get_link(gpu.link)
    hop = link.latency_s
    ps = sorted(q for (k, q) in tabs if k == kind)
    if not ps:
        return a.nccl_base_latency_s + _nsteps(
            kind, p
        ) * hop, link.bandwidth_bytes_per_s * link.nccl_bus_efficiency
    floors = [tabs[(kind, q)].floor_s for q in ps]
    bws = [tabs[(kind, q)].busbw_max for q in ps]
    if p > ps[-1]:
        return floors[-1] + (_nsteps(kind, p) - _nsteps(kind, ps[-1])) * hop, bws[-1]
    if p < ps[0]:
        return max(floors[0] - (_nsteps(kind, ps[0]) - _nsteps(kind, p)) * hop, a.nccl_base_latency_s), bws[0]
    return float(np.interp(p, ps, floors)), float(np.interp(p, ps, bws))


def _single_node_time(kind: str, n: np.ndarray, p: int, gpu: GPU, r: float, a: CommAssumptions) -> np.ndarray:
    """Latency of a one-node group of p >= 2 GPUs for sizes n > 0, bandwidth part scaled by r."""
    if kind == "send_recv":
        p = 2
    tab = _tables_for_key(gpu.key).get((kind, p))
    if tab is not None:
        t = tab.time(n)
        return tab.floor_s + (t - tab.floor_s) * r
    alpha, busbw = _alpha_busbw(kind, p, gpu, a)
    return alpha + _bus_factor_scalar(kind, p) * n * r / busbw


def _nic_bw(gpu: GPU, net: Link) -> float:
    nic = gpu.q("nic_bandwidth") if gpu.has("nic_bandwidth") else net.bandwidth_bytes_per_s
    return nic * net.nccl_bus_efficiency


def _split(kind: str, n: np.ndarray, p: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(bytes of the intra-node part's message, bytes each GPU sends through its NIC)."""
    g = p // k
    if kind == "all_to_all":
        return n / k, (k - 1) / k * n
    if kind == "send_recv":
        return np.zeros_like(n), n
    return n, _bus_factor_scalar(kind, p) * n / g


def _simple_alpha(kind: str, p: int, k: int, link: Link, a: CommAssumptions) -> float:
    """NCCL ring Simple-protocol latency of a group of p GPUs over k nodes (tuning.cc structure)."""
    if kind == "all_reduce":
        nsteps, inter = 2 * (p - 1), 2 * k
    elif kind in ("all_gather", "reduce_scatter"):
        nsteps, inter = p - 1, k - 1
    elif kind == "all_to_all":
        nsteps, inter = p, k
    else:
        nsteps, inter = 1, 1
    hop = a.nccl_simple_hop_nvlink_s if link.key.startswith("nvlink") else a.nccl_simple_hop_pci_s
    return a.nccl_simple_base_latency_s + max(nsteps - inter, 0) * hop + inter * a.nccl_simple_hop_net_s


def _multi_node_time(
    kind: str, n: np.ndarray, p: int, k: int, gpu: GPU, r: float, a: CommAssumptions
) -> np.ndarray:
    """Two-level time; NCCL picks the faster of a low-latency (LL) and a bandwidth (Simple) protocol."""
    g = p // k
    net = _network_link(gpu, a)
    n_local, nic_bytes = _split(kind, n, p, k)
    if g >= 2 and kind != "send_recv":
        t_local = _single_node_time(kind, n_local, g, gpu, r, a)
        alpha_local, busbw_local = _alpha_busbw(kind, g, gpu, a)
        bw_local = _bus_factor_scalar(kind, g) * n_local * r / busbw_local
    else:
        t_local = bw_local = np.zeros_like(n)
        alpha_local = a.nccl_base_latency_s
    t_nic = nic_bytes * r / _nic_bw(gpu, net)
    t_ll = _net_steps(kind, k) * net.latency_s + np.maximum(
        t_local, alpha_local + t_nic / a.nccl_ll_bandwidth_fraction
    )
    t_simple = _simple_alpha(kind, p, k, get_link(gpu.link), a) + np.maximum(bw_local, t_nic)
    t_single = _single_node_time(kind, n, p, gpu, r, a) + net.latency_s
    return np.maximum(np.minimum(t_ll, t_simple), t_single)


def _traffic(kind: str, n: np.ndarray, p: int, k: int, a: CommAssumptions):
    """Per-GPU (hbm_bytes, intra-node bytes sent, NIC bytes sent), averaged over participants."""
    if kind == "send_recv":
        inp, out, recv, sent = n / 2, n / 2, n / 2, n / 2
    else:
        bf = _bus_factor_scalar(kind, p)
        recv = sent = bf * n
        if kind == "all_gather":
            inp, out = n / p, n
        elif kind == "reduce_scatter":
            inp, out = n, n / p
        else:
            inp, out = n, n
    hbm = inp + out + a.hbm_staging_factor * recv
    if k > 1:
        nic = _split(kind, n, p, k)[1]
        if kind == "send_recv":
            nic = nic / 2
        nic = np.minimum(nic, sent)
    else:
        nic = np.zeros(np.shape(n))
    return hbm, sent - nic, nic


# ------------------------------------------------------------------------------------ public API


def _prepare(kind, message_bytes, group_size, gpu, nodes, comm_sms, a: CommAssumptions):
    _check_kind(kind)
    g = load_gpu(gpu)
    n = np.asarray(message_bytes, dtype=float)
    p = np.asarray(group_size, dtype=float)
    k = np.asarray(nodes, dtype=float)
    s = np.asarray(default_comm_sms(g, a) if comm_sms is None else comm_sms, dtype=float)
    n, p, k, s = np.broadcast_arrays(n, p, k, s)
    bad = ~np.isfinite(n) | (n < 0)
    if np.any(bad):
        raise DimensionError("message_bytes", _first_bad(n, bad), "a finite, non-negative number of bytes")
    _check_group(p)
    bad = ~np.isfinite(k) | (k < 1) | (k != np.round(k))
    if np.any(bad):
        raise LayoutError("nodes", _first_bad(k, bad), "a positive integer number of nodes")
    bad = (p > 1) & (np.mod(p, k) != 0)  # a group of one communicates nothing, wherever it is
    if np.any(bad):
        raise LayoutError(
            "nodes", _first_bad(k, bad), f"must divide group_size (group_size={_first_bad(p, bad)})"
        )
    bad = ~np.isfinite(s) | (s <= 0) | (s > g.sm_count)
    if np.any(bad):
        raise LayoutError(
            "comm_sms", _first_bad(s, bad), f"a number of SMs in (0, {g.sm_count}] for {g.name}"
        )
    return g, n, p, k, s


def collective_cost(
    kind: str,
    message_bytes,
    group_size,
    gpu: GPU | str,
    *,
    nodes=1,
    comm_sms=None,
    assumptions: CommAssumptions = DEFAULT_ASSUMPTIONS,
) -> CollectiveCost:
    """Latency, per-GPU energy and average per-GPU power of one collective (see module docstring)."""
    a = assumptions
    if np.ndim(group_size) == 0 and np.ndim(nodes) == 0 and (comm_sms is None or np.ndim(comm_sms) == 0):
        return _one_layout_cost(kind, message_bytes, group_size, gpu, nodes, comm_sms, a)
    g, n, p, k, s = _prepare(kind, message_bytes, group_size, gpu, nodes, comm_sms, a)
    shape = n.shape
    n, p, k, s = (x.ravel() for x in (n, p, k, s))
    t = np.zeros(n.shape)
    e_active = np.zeros(n.shape)
    active = (p > 1) & (n > 0)
    if np.any(active):
        # (group, nodes, SMs) combinations from the inputs before they broadcast with the messages (no grid sort)
        small = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (
            group_size, nodes, default_comm_sms(g, a) if comm_sms is None else comm_sms)))
        seen = tuple(slice(0, 1) if all(x.strides[i] == 0 for x in small) else slice(None)  # broadcast axes once
                     for i in range(small[0].ndim))
        combos = np.unique(np.stack([x[seen].ravel() for x in small], axis=1), axis=0)
        for pc, kc, sc in combos:
            idx = np.flatnonzero(active & (p == pc) & (k == kc) & (s == sc))
            if idx.size == 0:
                continue
            t[idx], e_active[idx] = _combo_cost(kind, n[idx], int(pc), int(kc), float(sc), g, a)
    p_sm = comm_sm_power_w(g, s, a.sm_activity_factor)
    power = np.full(n.shape, g.idle_power_w)
    pos = t > 0
    power[pos] = clamp_to_limit_w(g, g.idle_power_w + e_active[pos] / t[pos] + p_sm[pos])
    energy = power * t
    return CollectiveCost(t.reshape(shape), energy.reshape(shape), power.reshape(shape))


def _combo_cost(kind: str, n: np.ndarray, p: int, k: int, sms: float, g: GPU, a: CommAssumptions):
    """(latency, active energy) of messages ``n`` > 0 on one (group size, nodes, SMs)."""
    r, e_link, e_net = _combo_params(g, a, sms)
    t = _multi_node_time(kind, n, p, k, g, r, a) if k > 1 else custom_allreduce_s(kind, n, p, g, _single_node_time(kind, n, p, g, r, a))
    hbm, intra, nic = _traffic(kind, n, p, k, a)
    return t, hbm * g.energy_per_byte_j + intra * e_link + nic * e_net


_PARAMS: dict[tuple, tuple] = {}


def _combo_params(g: GPU, a: CommAssumptions, sms: float) -> tuple[float, float, float]:
    """(bandwidth-time ratio at ``sms`` SMs, J/B of the intra-node link, J/B of the network), per GPU object."""
    key = (id(g), id(a), sms)  # per objects (hashing the assumptions' fields each call costs more than the rest)
    hit = _PARAMS.get(key)
    if hit is None or hit[0] is not g or hit[2] is not a:
        r = _sm_ratio(sms, default_comm_sms(g, a), sm_saturation_k0(g, a))
        hit = (g, (r, get_link(g.link).energy_per_byte_j, _network_link(g, a).energy_per_byte_j), a)
        if len(_PARAMS) > 256:
            _PARAMS.clear()
        _PARAMS[key] = hit
    return hit[1]


def _one_layout_cost(kind, message_bytes, group_size, gpu, nodes, comm_sms, a: CommAssumptions) -> CollectiveCost:
    """:func:`collective_cost` for one group size, node count and SM count (any array of messages): the
    same checks and formulas without grouping the elements by layout."""
    _check_kind(kind)
    g = load_gpu(gpu)
    n = np.asarray(message_bytes, dtype=float)
    p, k = float(group_size), float(nodes)
    sc = float(default_comm_sms(g, a) if comm_sms is None else comm_sms)
    if (n.size and not (np.isfinite(n).all() and n.min() >= 0)) or not all(math.isfinite(x) for x in (p, k, sc)) \
            or p < 1 or p != round(p) or k < 1 or k != round(k) or (p > 1 and p % k) or not 0 < sc <= g.sm_count:
        _prepare(kind, n, p, g, k, sc, a)  # raises the error naming the bad value
    pi, ki = int(p), int(k)
    t = np.zeros(n.shape)
    if pi > 1 and n.size:
        pos = n > 0
        if pos.all():
            t, e_active = _combo_cost(kind, n, pi, ki, sc, g, a)
        else:
            e_active = np.zeros(n.shape)
            t[pos], e_active[pos] = _combo_cost(kind, n[pos], pi, ki, sc, g, a)
        busy = t > 0
        p_sm = comm_sm_power_w(g, sc, a.sm_activity_factor)
        power = np.where(busy, clamp_to_limit_w(g, g.idle_power_w + e_active / np.where(busy, t, 1.0) + p_sm),
                         g.idle_power_w)
    else:
        power = np.full(n.shape, g.idle_power_w)
    return CollectiveCost(t, power * t, power)


def collective_latency_s(
    kind: str,
    message_bytes,
    group_size,
    gpu: GPU | str,
    *,
    nodes=1,
    comm_sms=None,
    assumptions: CommAssumptions = DEFAULT_ASSUMPTIONS,
) -> np.ndarray:
    """Latency (s) of one collective; see :func:`collective_cost`."""
    return collective_cost(
        kind, message_bytes, group_size, gpu, nodes=nodes, comm_sms=comm_sms, assumptions=assumptions
    ).latency_s


def asymptotic_busbw(
    kind: str,
    group_size: int,
    gpu: GPU | str,
    *,
    nodes: int = 1,
    comm_sms: float | None = None,
    assumptions: CommAssumptions = DEFAULT_ASSUMPTIONS,
) -> float:
    """The busbw (B/s) the model reaches for very large messages: t -> bus_factor * n / this."""
    a = assumptions
    g, _n, p, k, s = _prepare(kind, 1.0, group_size, gpu, nodes, comm_sms, a)
    p_i, k_i = int(p), int(k)
    if p_i < 2:
        raise LayoutError("group_size", p_i, "at least 2 GPUs for a bandwidth")
    r = _sm_ratio(float(s), default_comm_sms(g, a), sm_saturation_k0(g, a))
    kind_p = 2 if kind == "send_recv" else p_i
    bf = _bus_factor_scalar(kind, p_i)
    c = (
        _bus_factor_scalar(kind, kind_p) * r / _alpha_busbw(kind, kind_p, g, a)[1]
    )  # seconds per byte, single node
    if k_i > 1:
        gl = p_i // k_i
        one = np.ones(1)
        n_local, nic_bytes = (float(x[0]) for x in _split(kind, one, p_i, k_i))
        c_nic = nic_bytes * r / _nic_bw(g, _network_link(g, a))
        c_local = 0.0
        if gl >= 2 and kind != "send_recv":
            c_local = _bus_factor_scalar(kind, gl) * n_local * r / _alpha_busbw(kind, gl, g, a)[1]
        c = max(c, c_nic, c_local)
    return bf / c
