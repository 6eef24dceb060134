"""Properties that must hold for every valid layout (hypothesis over tp, pp, dp, sp, batch, lengths)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import energylens


def _einsum_flops(phase):
    return sum(o.flops for o in phase.ops if o.kind == "einsum" or (o.kind == "fused" and "add_norm" not in o.name))


@settings(max_examples=20, deadline=None)
@given(tp=st.sampled_from([1, 2, 4, 8]), pp=st.sampled_from([1, 2, 4]), dp=st.sampled_from([1, 2]),
       sp=st.booleans(), per_replica=st.integers(1, 24), prompt=st.integers(16, 3000), out=st.integers(1, 80))
def test_every_layout_conserves_energy_and_work(tp, pp, dp, sp, per_replica, prompt, out):
    kw = dict(batch=per_replica * dp, prompt_len=prompt, output_len=out)
    p = energylens.predict("llama3-70b", "h100-sxm", tp=tp, pp=pp, dp=dp, sp=sp, **kw)
    base = energylens.predict("llama3-70b", "h100-sxm", **kw)
    gpu = energylens.load_gpu("h100-sxm")
    n = tp * pp * dp
    for phase, ref in ((p.prefill, base.prefill), (p.decode, base.decode)):
        assert np.isfinite(phase.energy_j) and phase.energy_j > 0 and phase.latency_s > 0
        parts = sum(o.energy_j for o in phase.ops) + sum(c.energy_j for c in phase.collectives)
        assert parts + phase.breakdown.idle_wait_j == pytest.approx(phase.energy_j, rel=1e-9)
        assert sum(g.energy_j for g in phase.per_gpu) == pytest.approx(phase.energy_j, rel=1e-9)
        assert len(phase.per_gpu) == n
        assert all(g.busy_s <= phase.latency_s * (1 + 1e-9) for g in phase.per_gpu)
        assert n * gpu.idle_power_w * (1 - 1e-9) <= phase.avg_power_w <= n * gpu.power_limit_w * (1 + 1e-9)
        # the work is the same however it is laid out (pipeline micro-batches re-run it in smaller pieces)
        assert _einsum_flops(phase) == pytest.approx(_einsum_flops(ref), rel=1e-6)
