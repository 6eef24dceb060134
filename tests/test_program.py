"""energylens.program.build_program: the per-rank program with collectives derived from the sharding."""

from __future__ import annotations

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
