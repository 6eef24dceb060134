"""energylens.pipeline: one entry (prepare -> bind -> evaluate) that every front end shares."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import energylens
from energylens.errors import EnergyLensError, LayoutError
from energylens.pipeline import bind, evaluate, phase
from energylens.specs import Execution, System
from energylens.workload import decode_sizes, prefill_sizes


def test_bind_checks_and_shards_once():
    b = bind("llama3-70b", Execution(tp=8, batch=16, prompt_len=512, output_len=64), System("h100-sxm"))
    assert int(b.layout.tp) == 8 and b.model.n_layers == 80
    assert int(b.batch_per_replica) == 16
    # Megatron TP: every layer's attention output and MLP down projection leave partial sums -> 2 all-reduces
    kinds = [st.kind for _, steps in b.program.blocks for st in steps if hasattr(st, "kind")]
    assert kinds.count("all_reduce") == 2


def test_bind_refuses_what_does_not_divide_or_fit_the_system():
    with pytest.raises(LayoutError):
        bind("llama3-8b", Execution(tp=3), System("h100-sxm"))  # 32 heads are not divisible by 3
    with pytest.raises(EnergyLensError):
        bind("llama3-8b", Execution(tp=8, dp=2), System("h100-sxm", gpus_per_node=8, nodes=1))  # 16 GPUs > 8


def test_evaluate_equals_predict():
    ex = Execution(tp=2, pp=2, batch=8, prompt_len=256, output_len=32)
    ev = evaluate(bind("llama3-8b", ex, System("h200")))
    p = energylens.predict("llama3-8b", ex, System("h200"))
    assert float(ev.prefill.energy_j) == pytest.approx(p.prefill.energy_j, rel=1e-12)
    assert float(ev.decode.latency_s) == pytest.approx(p.decode.latency_s, rel=1e-12)
    assert ev.memory.required_bytes == pytest.approx(p.memory.required_bytes, rel=1e-12)


def test_phase_at_other_sizes_is_the_same_cost_function():
    b = bind("llama3-8b", Execution(batch=4, prompt_len=128, output_len=16), System("h100-sxm"))
    sizes, weights = prefill_sizes(b.workload, b.batch_per_replica)
    assert float(phase(b, sizes, weights, decode=False).energy_j) == float(evaluate(b).prefill.energy_j)
    sizes, weights = decode_sizes(b.workload, b.batch_per_replica)
    assert float(phase(b, sizes, weights, decode=True).latency_s) == float(evaluate(b).decode.latency_s)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(tp=st.sampled_from([1, 2, 4, 8]), pp=st.sampled_from([1, 2, 4]), batch=st.sampled_from([1, 4, 16]),
       prompt=st.integers(16, 2048), out=st.integers(1, 128))
def test_conservation_per_gpu_and_per_part(tp, pp, batch, prompt, out):
    """Per-GPU energies sum to the phase total; compute + memory + static + communication + idle wait too."""
    p = energylens.predict("llama3-70b", "h100-sxm", tp=tp, pp=pp, batch=batch, prompt_len=prompt, output_len=out)
    for ph in (p.prefill, p.decode):
        assert sum(g.energy_j for g in ph.per_gpu) == pytest.approx(ph.energy_j, rel=1e-9)
        b = ph.breakdown
        parts = b.compute_j + b.memory_j + b.static_j + b.communication_j + b.idle_wait_j
        assert parts == pytest.approx(ph.energy_j, rel=1e-9)
        assert np.isfinite(ph.energy_j) and ph.energy_j > 0 and ph.latency_s > 0
