"""energylens.program.build_program: the per-rank program with collectives derived from the sharding."""

from __future__ import annotations

import numpy as np
import pytest

from energylens.models import load_model
from energylens.parallel.layout import Layout
from energylens.parallel.sharding import CollectiveStep
from energylens.program import build_program


def _collectives(program):
    return [(st.kind, st.axis) for _, steps in program.blocks for st in steps if isinstance(st, CollectiveStep)]


def test_no_parallelism_derives_no_collective():
    prog = build_program(load_model("llama3-8b"), Layout())
    assert _collectives(prog) == []


def test_megatron_tp_two_all_reduces_per_layer():
    prog = build_program(load_model("llama3-8b"), Layout(tp=4))
    assert _collectives(prog) == [("all_reduce", "tp"), ("all_reduce", "tp")]


def test_sequence_parallel_turns_all_reduce_into_reduce_scatter_and_all_gather():
    kinds = sorted(k for k, _ in _collectives(build_program(load_model("llama3-8b"), Layout(tp=4, sp=True))))
    assert kinds == ["all_gather", "all_gather", "reduce_scatter", "reduce_scatter"]


def test_expert_parallel_moe_derives_dispatch_and_combine_all_to_all():
    prog = build_program(load_model("qwen3-30b-a3b"), Layout(ep=8, dp=8))
    assert [k for k, a in _collectives(prog) if a == "ep"].count("all_to_all") == 2


def test_program_is_cached_per_model_and_active_axes():
    m = load_model("llama3-8b")
    assert build_program(m, Layout(tp=2)) is build_program(m, Layout(tp=4))  # sizes bind later
    assert build_program(m, Layout(tp=2)) is not build_program(m, Layout(tp=2, sp=True))


def test_local_experts_mask_expert_group_inside_the_tp_group():
    from energylens.program import local_experts, local_experts_mask

    m = load_model("qwen3-30b-a3b")
    assert local_experts(m, Layout(tp=8, ep=8)) and local_experts(m, Layout(tp=8, ep=4, dp=2))
    assert not local_experts(m, Layout(tp=1, ep=8, dp=8)) and not local_experts(m, Layout(tp=2, ep=8, dp=4))
    assert not local_experts(m, Layout(tp=8, ep=8, sp=True))  # tokens split over tp: they differ
    assert not local_experts(m, Layout(tp=8)) and not local_experts(load_model("llama3-8b"), Layout(tp=8))
    lay = Layout(tp=np.array([[2], [8]]), ep=np.array([[2, 4]]), dp=np.array([[2]]))
    assert local_experts_mask(m, lay).tolist() == [[True, False], [True, True]]
    with pytest.raises(ValueError):
        local_experts(m, lay)
    prog = build_program(m, Layout(tp=8, ep=8))
    assert prog is not build_program(m, Layout(tp=2, ep=8, dp=4))  # same active axes, another expert class
    assert [k for k, a in _collectives(prog) if a == "ep"] == []
