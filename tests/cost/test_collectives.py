"""energylens.cost.collectives: latency/energy of NCCL collectives."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energylens.cost.collectives import (
    ASSUMPTION_SOURCES,
    COLLECTIVES,
    DEFAULT_ASSUMPTIONS,
    asymptotic_busbw,
    bus_factor,
    collective_cost,
    collective_latency_s,
    default_comm_sms,
    load_collective_tables,
)
from energylens.errors import DimensionError, LayoutError, UnknownNameError
from energylens.hardware import known_gpus, load_gpu
from energylens.hardware.links import get_link

TABLE_GPUS = ["h100-sxm", "h200", "a100-sxm-80gb", "b200"]
NO_TABLE_GPUS = ["h100-pcie", "l40s", "a100-sxm-40gb"]
CSV_DIR = Path(__file__).resolve().parents[2] / "energylens" / "data" / "hardware" / "collectives"
SIZES = np.logspace(0, 12, 97)


# ------------------------------------------------------------------------------------ data files


@pytest.mark.parametrize("key", TABLE_GPUS)
def test_csv_schema_sources_and_busbw(key):
    with (CSV_DIR / f"{key}.csv").open() as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == [
            "collective",
            "group_size",
            "message_bytes",
            "latency_s",
            "busbw_bytes_per_s",
            "source",
        ]
        rows = list(reader)
    seen = set()
    for r in rows:
        assert r["collective"] in COLLECTIVES
        assert r["source"].strip()
        ident = (r["collective"], int(r["group_size"]), int(r["message_bytes"]))
        assert ident not in seen, f"two rows for {ident}"
        seen.add(ident)
        n, t, b = float(r["message_bytes"]), float(r["latency_s"]), float(r["busbw_bytes_per_s"])
        assert t > 0
        assert b == pytest.approx(float(bus_factor(r["collective"], ident[1])) * n / t, rel=1e-3)
    kinds = {(r["collective"], int(r["group_size"])) for r in rows}
    for kind in ("all_reduce", "all_gather", "reduce_scatter", "all_to_all"):
        assert {(kind, 2), (kind, 4), (kind, 8)} <= kinds


def test_send_recv_tables_from_vidur():
    for key in ("h100-sxm", "a100-sxm-80gb"):
        tab = load_collective_tables(key)[("send_recv", 2)]
        assert all("vidur" in s for s in tab.sources)


# ---------------------------------------------------------------------------------- latency model


def _nccl_only(key: str):
    """The GPU profile without its vLLM custom all-reduce fit: every collective on NCCL's tables."""
    from dataclasses import replace

    g = load_gpu(key)
    return replace(g, quantities={k: v for k, v in g.quantities.items() if not k.startswith("custom_allreduce")})


@pytest.mark.parametrize("key", TABLE_GPUS)
def test_interpolation_reproduces_table_points(key):
    tables = load_collective_tables(key)
    assert tables
    nccl = _nccl_only(key)
    for (kind, p), tab in tables.items():
        kept = tab.latency_raw_s == tab.latency_s  # points not lowered as non-monotone noise
        assert kept.mean() >= 0.6, f"{key} {kind} p={p}: too many noisy points"
        got = collective_latency_s(kind, tab.sizes[kept], p, nccl)
        np.testing.assert_allclose(got, tab.latency_raw_s[kept], rtol=0.01)
        # noise removal only touches the latency-bound region (or vidur's 1 us time quantum)
        lowered = ~kept & (tab.sizes >= 2**20)
        np.testing.assert_allclose(tab.latency_s[lowered], tab.latency_raw_s[lowered], rtol=0.12)


def test_table_floor_used_below_smallest_size():
    tab = load_collective_tables("h100-sxm")[("all_reduce", 8)]
    assert collective_latency_s("all_reduce", 1.0, 8, _nccl_only("h100-sxm")) == pytest.approx(tab.floor_s)
    assert tab.floor_s == pytest.approx(15.6e-6)


@settings(max_examples=60, deadline=None)
@given(
    key=st.sampled_from(TABLE_GPUS + NO_TABLE_GPUS),
    kind=st.sampled_from(COLLECTIVES),
    layout=st.sampled_from(
        [(2, 1), (3, 1), (4, 1), (6, 1), (8, 1), (16, 1), (2, 2), (8, 2), (16, 2), (32, 4), (12, 3)]
    ),
    sms=st.one_of(st.none(), st.integers(1, 108)),
    a=st.floats(0, 1e13),
    b=st.floats(0, 1e13),
)
def test_latency_monotone_in_bytes(key, kind, layout, sms, a, b):
    p, k = layout
    lo, hi = min(a, b), max(a, b)
    t = collective_latency_s(kind, np.array([lo, hi]), p, key, nodes=k, comm_sms=sms)
    assert np.all(np.isfinite(t))
    assert t[0] <= t[1] * (1 + 1e-12)


@pytest.mark.parametrize("key", TABLE_GPUS + NO_TABLE_GPUS)
@pytest.mark.parametrize("kind", COLLECTIVES)
def test_latency_monotone_dense_grid(key, kind):
    for p, k in [(2, 1), (4, 1), (5, 1), (8, 1), (16, 2), (64, 8)]:
        t = collective_latency_s(kind, SIZES, p, key, nodes=k)
        assert np.all(np.diff(t) >= 0), (p, k)
        assert np.all(t > 0)


def test_group_of_one_or_empty_message_is_free():
    gpu = load_gpu("h100-sxm")
    for kind in COLLECTIVES:
        c = collective_cost(kind, [0.0, 1e6, 1e9], 1, gpu)
        assert np.all(c.latency_s == 0) and np.all(c.energy_j_per_gpu == 0)
        assert np.all(c.power_w == gpu.idle_power_w)
        c = collective_cost(kind, 0, [2, 8], gpu)
        assert np.all(c.latency_s == 0) and np.all(c.energy_j_per_gpu == 0)
        # nodes is irrelevant for a group of one (callers broadcast a layout-wide node count)
        c = collective_cost(kind, 1e6, [1, 2], gpu, nodes=2)
        assert c.latency_s[0] == 0 and c.latency_s[1] > 0


@pytest.mark.parametrize("p", [2, 4, 8])
def test_large_ring_allreduce_tends_to_bus_formula_with_table_bw(p):
    n = 1e12
    for key in TABLE_GPUS:
        bw = asymptotic_busbw("all_reduce", p, key)
        tab = load_collective_tables(key)[("all_reduce", p)]
        assert bw == pytest.approx(tab.busbw_max, rel=1e-9)
        t = float(collective_latency_s("all_reduce", n, p, key))
        assert t == pytest.approx(2 * (p - 1) / p * n / bw, rel=0.05)
    assert asymptotic_busbw("all_reduce", 8, "h100-sxm") == pytest.approx(
        445e9, rel=0.01
    )  # notes §5.1 at 512 MiB


@pytest.mark.parametrize("key", NO_TABLE_GPUS)
@pytest.mark.parametrize("p", [2, 4, 8])
def test_large_ring_allreduce_tends_to_link_bw_without_table(key, p):
    link = get_link(load_gpu(key).link)
    bw = link.bandwidth_bytes_per_s * link.nccl_bus_efficiency
    n = 1e12
    t = float(collective_latency_s("all_reduce", n, p, key))
    assert t == pytest.approx(2 * (p - 1) / p * n / bw, rel=0.05)
    assert asymptotic_busbw("all_reduce", p, key) == pytest.approx(bw, rel=1e-9)


def test_alpha_beta_between_tables_is_between_neighbours():
    for n in (1e3, 1e9, 1e11):
        t4, t6, t8 = (float(collective_latency_s("all_gather", n, p, "h100-sxm")) for p in (4, 6, 8))
        assert min(t4, t8) * 0.5 < t6 < max(t4, t8) * 1.5
    bw6 = asymptotic_busbw("all_gather", 6, "h100-sxm")
    assert (
        asymptotic_busbw("all_gather", 4, "h100-sxm") <= bw6 <= asymptotic_busbw("all_gather", 8, "h100-sxm")
    )


def test_tableless_floor_follows_nccl_ring_model():
    # 8-GPU ring-LL all-reduce: 6.6 us + 14 x 0.6 us (hardware_notes §5.8) on NVLink3
    assert float(collective_latency_s("all_reduce", 1, 8, "a100-sxm-40gb")) == pytest.approx(
        15.0e-6, rel=1e-6
    )


# ------------------------------------------------------------------------------------ SM scaling


@pytest.mark.parametrize("key", TABLE_GPUS + NO_TABLE_GPUS)
def test_more_comm_sms_never_slower(key):
    gpu = load_gpu(key)
    sms = np.unique(np.r_[np.arange(1, 41), np.geomspace(40, gpu.sm_count, 12).round()])
    for kind in COLLECTIVES:
        for n in (1e3, 1e7, 1e10):
            t = collective_latency_s(kind, n, 8, gpu, comm_sms=sms)
            assert np.all(np.diff(t) <= 0), (kind, n)
            t2 = collective_latency_s(kind, n, 16, gpu, nodes=2, comm_sms=sms)
            assert np.all(np.diff(t2) <= 0), (kind, n)


def test_fewer_sms_slow_large_messages_not_the_floor():
    default = default_comm_sms("b200")
    big_default = float(collective_latency_s("all_reduce", 1e10, 8, "b200"))
    big_few = float(collective_latency_s("all_reduce", 1e10, 8, "b200", comm_sms=4))
    assert big_few > 1.5 * big_default
    assert float(collective_latency_s("all_reduce", 1e10, 8, "b200", comm_sms=default)) == pytest.approx(
        big_default
    )
    # DeepEP (notes §5.6): 64 vs 24 SMs on NVLink5 gives ~1.1x bandwidth
    ratio = asymptotic_busbw("all_to_all", 8, "b200", comm_sms=64) / asymptotic_busbw(
        "all_to_all", 8, "b200", comm_sms=24
    )
    assert ratio == pytest.approx(np.sqrt(726 / 643 * 740 / 675), rel=0.02)
    tiny = collective_latency_s("all_reduce", 1.0, 8, "b200", comm_sms=[4, default])
    assert tiny[0] == pytest.approx(tiny[1])


# ---------------------------------------------------------------------------------------- energy


@pytest.mark.parametrize("key", TABLE_GPUS + NO_TABLE_GPUS)
def test_energy_bounds(key):
    gpu = load_gpu(key)
    for kind in COLLECTIVES:
        for p, k, sms in [(2, 1, None), (8, 1, None), (8, 1, gpu.sm_count), (16, 2, 8)]:
            c = collective_cost(kind, SIZES, p, gpu, nodes=k, comm_sms=sms)
            assert np.all(np.isfinite(c.energy_j_per_gpu)) and np.all(np.isfinite(c.power_w))
            assert np.all(c.energy_j_per_gpu >= gpu.idle_power_w * c.latency_s * (1 - 1e-12))
            assert np.all(c.power_w <= gpu.power_limit_w)
            assert np.all(c.power_w >= gpu.idle_power_w)
            np.testing.assert_allclose(c.energy_j_per_gpu, c.power_w * c.latency_s, rtol=1e-12)


def test_power_capped_at_limit():
    gpu = load_gpu("h100-sxm")
    hot = DEFAULT_ASSUMPTIONS.with_(sm_activity_factor=10.0)  # uncapped this would be ~1.5 kW
    c = collective_cost("all_reduce", SIZES, 8, gpu, comm_sms=64, assumptions=hot)
    np.testing.assert_allclose(c.power_w, gpu.power_limit_w)
    np.testing.assert_allclose(c.energy_j_per_gpu, gpu.power_limit_w * c.latency_s)


def test_energy_grows_with_bytes_and_power_above_idle():
    gpu = load_gpu("h100-sxm")
    c = collective_cost("all_reduce", [1e3, 1e6, 1e9], 8, gpu)
    assert np.all(np.diff(c.energy_j_per_gpu) > 0)
    assert np.all(c.power_w > gpu.idle_power_w)  # NCCL SMs + HBM + link traffic (notes §6)
    # data movement makes large messages draw more than tiny (latency-bound) ones
    assert c.power_w[2] > c.power_w[0]


def test_energy_assumptions_are_replaceable():
    base = collective_cost("all_reduce", 1e9, 8, "h100-sxm")
    hot = collective_cost(
        "all_reduce", 1e9, 8, "h100-sxm", assumptions=DEFAULT_ASSUMPTIONS.with_(sm_activity_factor=0.6)
    )
    assert float(hot.energy_j_per_gpu) > float(base.energy_j_per_gpu)
    assert float(hot.latency_s) == float(base.latency_s)


def test_assumption_sources_cover_every_constant():
    fields = {f for f, v in vars(DEFAULT_ASSUMPTIONS).items() if isinstance(v, float)}
    assert fields == set(ASSUMPTION_SOURCES)
    for name, qty in ASSUMPTION_SOURCES.items():
        assert qty.value == pytest.approx(getattr(DEFAULT_ASSUMPTIONS, name))
        assert qty.source.strip() and qty.note.strip()


# ------------------------------------------------------------------------------------ vectorised


def test_vectorised_equals_scalar_loop():
    n = np.array([[1e3], [3e6], [2e9]])  # (3, 1)
    p = np.array([2, 4, 8, 16])  # (4,)
    nodes = np.array([1, 1, 2, 2])
    sms = np.array([[8], [32], [64]])  # (3, 1)
    for key in ("h100-sxm", "l40s"):
        for kind in COLLECTIVES:
            c = collective_cost(kind, n, p, key, nodes=nodes, comm_sms=sms)
            assert c.latency_s.shape == (3, 4)
            assert c.latency_s.dtype == np.float64
            for i in range(3):
                for j in range(4):
                    s = collective_cost(
                        kind, float(n[i, 0]), int(p[j]), key, nodes=int(nodes[j]), comm_sms=int(sms[i, 0])
                    )
                    assert s.latency_s.shape == ()
                    assert c.latency_s[i, j] == pytest.approx(float(s.latency_s), rel=1e-12)
                    assert c.energy_j_per_gpu[i, j] == pytest.approx(float(s.energy_j_per_gpu), rel=1e-12)
                    assert c.power_w[i, j] == pytest.approx(float(s.power_w), rel=1e-12)


def test_bus_factor():
    np.testing.assert_allclose(bus_factor("all_reduce", [1, 2, 4, 8]), [0, 1, 1.5, 1.75])
    np.testing.assert_allclose(bus_factor("all_gather", [2, 8]), [0.5, 0.875])
    np.testing.assert_allclose(bus_factor("reduce_scatter", 4), 0.75)
    np.testing.assert_allclose(bus_factor("all_to_all", 8), 0.875)
    np.testing.assert_allclose(bus_factor("send_recv", [2, 8]), [1, 1])


# ---------------------------------------------------------------------------------------- errors


def test_unknown_collective():
    with pytest.raises(UnknownNameError) as err:
        collective_cost("allreduce", 1e6, 8, "h100-sxm")
    assert err.value.field == "collective"
    assert "all_reduce" in str(err.value)
    with pytest.raises(UnknownNameError):
        bus_factor("broadcast", 8)


@pytest.mark.parametrize("bad", [0, -2, 2.5, [4, 0]])
def test_bad_group_size(bad):
    with pytest.raises(LayoutError) as err:
        collective_latency_s("all_reduce", 1e6, bad, "h100-sxm")
    assert err.value.field == "group_size"


def test_bad_nodes_sms_bytes():
    with pytest.raises(LayoutError) as err:
        collective_latency_s("all_reduce", 1e6, 8, "h100-sxm", nodes=3)
    assert err.value.field == "nodes"
    with pytest.raises(LayoutError) as err:
        collective_latency_s("all_reduce", 1e6, 8, "h100-sxm", nodes=0)
    assert err.value.field == "nodes"
    with pytest.raises(LayoutError) as err:
        collective_latency_s("all_reduce", 1e6, 8, "h100-sxm", comm_sms=0)
    assert err.value.field == "comm_sms"
    with pytest.raises(LayoutError) as err:
        collective_latency_s("all_reduce", 1e6, 8, "h100-sxm", comm_sms=500)
    assert err.value.field == "comm_sms"
    with pytest.raises(DimensionError) as err:
        collective_latency_s("all_reduce", [-1.0, 5.0], 8, "h100-sxm")
    assert err.value.field == "message_bytes"
    with pytest.raises(DimensionError):
        collective_latency_s("all_reduce", np.nan, 8, "h100-sxm")


# ------------------------------------------------------------------------------------ multi-node


@pytest.mark.parametrize("key", TABLE_GPUS + NO_TABLE_GPUS)
@pytest.mark.parametrize("kind", COLLECTIVES)
def test_multi_node_slower_than_single_node(key, kind):
    for p, k in [(8, 2), (16, 2), (8, 8), (32, 4)]:
        multi = collective_latency_s(kind, SIZES, p, key, nodes=k)
        single = collective_latency_s(kind, SIZES, p, key, nodes=1)
        assert np.all(multi >= single)
        assert np.all(multi[SIZES >= 1e8] > single[SIZES >= 1e8])  # the NIC is the bottleneck


def test_multi_node_matches_published_two_node_a100():
    # 2 x NDm A100 v4 (8 x 200G HDR), mscclpp docs / NVIDIA nccl#1576: ~188-192 GB/s all-reduce busbw at 4 GB
    n, p = 2.0**32, 16
    t = float(collective_latency_s("all_reduce", n, p, "a100-sxm-80gb", nodes=2))
    assert float(bus_factor("all_reduce", p)) * n / t == pytest.approx(190e9, rel=0.1)
    # 1 KB all-reduce floor 35.85 us (NCCL 2.17)
    assert float(collective_latency_s("all_reduce", 1024, p, "a100-sxm-80gb", nodes=2)) == pytest.approx(
        35.85e-6, rel=0.25
    )


def test_every_builtin_gpu_has_a_cost():
    for key in known_gpus():
        c = collective_cost("all_reduce", 1e8, 4, key)
        assert float(c.latency_s) > 0 and float(c.energy_j_per_gpu) > 0


def test_custom_allreduce_for_small_single_node_messages():
    """vLLM's custom all-reduce (fitted on the kernel tables) for <= 8 MiB on 2/4/6/8 GPUs of one node, where it
    is faster than NCCL; NCCL elsewhere (energylens/cost/custom_ar.py)."""
    from energylens.cost.custom_ar import CUSTOM_AR_MAX_BYTES, custom_allreduce_s

    g = load_gpu("h100-sxm")
    a, bw = g.q("custom_allreduce_latency"), g.q("custom_allreduce_bus_bandwidth")
    assert 1e-6 < a < 2e-5 and 5e10 < bw < 9e11  # a few us, NVLink-class bandwidth
    n = np.array([1024.0, 65536.0, 1e6, 4e6, CUSTOM_AR_MAX_BYTES, 2 * CUSTOM_AR_MAX_BYTES])
    nccl = np.full(n.shape, 1.0)  # a slow stand-in: the custom kernel wins wherever it applies
    t = custom_allreduce_s("all_reduce", n, 8, g, nccl)
    assert t[:-1] == pytest.approx(a + 2 * 7 / 8 * n[:-1] / bw) and t[-1] == 1.0
    assert custom_allreduce_s("all_gather", n, 8, g, nccl) is nccl
    assert custom_allreduce_s("all_reduce", n, 3, g, nccl) is nccl
    assert custom_allreduce_s("all_reduce", n, 8, load_gpu("a100-sxm-80gb"), nccl) is nccl
    # through the collective model: a 16 KiB TP8 all-reduce takes the custom kernel's few microseconds
    assert collective_latency_s("all_reduce", 16384, 8, g) == pytest.approx(a + 2 * 7 / 8 * 16384 / bw)
