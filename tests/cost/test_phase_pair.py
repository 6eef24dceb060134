"""Prefill and decode in one plan evaluation (energylens.cost.phase_pair) equal one evaluation per phase."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from energylens.assemble import phase_result
from energylens.cost.phase import evaluate_phase
from energylens.cost.phase_pair import evaluate_phases
from energylens.pipeline import bind
from energylens.results import Rows
from energylens.specs.execution import Execution
from energylens.specs.system import System
from energylens.workload import decode_sizes, prefill_sizes

CASES = [
    ("llama3.1-70b", "h100-sxm", dict(tp=2), dict(batch=8, prompt_len=2048, output_len=128), {}),
    ("llama3.1-70b", "h100-sxm", dict(tp=4, pp=2), dict(batch=16, prompt_len=512, output_len=7), {}),
    ("llama3-8b", "a100-sxm-80gb", dict(dp=2), dict(batch=4, prompt_len=1, output_len=0), {}),
    ("llama3-8b", "h100-sxm", dict(tp=2), dict(batch=64, prompt_len=4096, output_len=300),
     dict(power_limit_w=350.0, sm_clock_mhz=1500.0)),
    ("llama4-scout", "h100-sxm", dict(dp=4, ep=4), dict(batch=8, prompt_len=128, output_len=4), dict(routing="zipf:1.2")),
    ("qwen3-30b-a3b", "h100-sxm", dict(tp=2, pp=2), dict(batch=6, prompt_len=1000, output_len=40), {}),
]


def _bound(model, gpu, lay, work, op):
    from energylens.parallel.layout import Layout

    ex = Execution.from_layout(Layout(**lay), **work, routing=op.get("routing"),
                               power_limit_w=op.get("power_limit_w"), sm_clock_mhz=op.get("sm_clock_mhz"))
    return bind(model, ex, System.for_execution(gpu, ex, 8))


def _plain(x):
    if dataclasses.is_dataclass(x):
        return {f.name: _plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, (list, tuple, Rows)):  # Rows: a phase's rows, made when first read
        return [_plain(v) for v in x]
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return x


def _close(a, b, path=""):
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, (float, np.ndarray, np.floating)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=0, err_msg=path)
    else:
        assert a == b, path


@pytest.mark.parametrize("model,gpu,lay,work,op", CASES)
def test_stacked_phases_equal_one_evaluation_per_phase(model, gpu, lay, work, op):
    b = _bound(model, gpu, lay, work, op)
    kw = {"routing": b.route} if b.route is not None else {}
    pre_sd = prefill_sizes(b.workload, b.batch_per_replica)
    dec_sd = decode_sizes(b.workload, b.batch_per_replica)
    stacked = evaluate_phases(b.model, b.gpu, b.layout, b.program, pre_sd, dec_sd, **kw)
    single = (evaluate_phase(b.model, b.gpu, b.layout, b.program, *pre_sd, decode=False, **kw),
              evaluate_phase(b.model, b.gpu, b.layout, b.program, *dec_sd, decode=True, **kw))
    for name, s, o, tokens in zip(("prefill", "decode"), stacked, single, (1.0, 2.0), strict=True):
        for f in ("latency_s", "energy_j", "compute_j", "memory_j", "static_j", "communication_j", "idle_wait_j",
                  "kernel_time_s", "collective_time_s", "p2p_time_s", "microbatches"):
            np.testing.assert_allclose(getattr(s, f), getattr(o, f), rtol=1e-12, atol=0, err_msg=f"{name} {f}")
        assert np.shape(s.latency_s) == np.shape(o.latency_s)
        for k in o.layer_time_s:
            np.testing.assert_allclose(s.layer_time_s[k], o.layer_time_s[k], rtol=1e-12, atol=0)
            np.testing.assert_allclose(s.layer_energy_j[k], o.layer_energy_j[k], rtol=1e-12, atol=0)
        # per-op, per-collective and per-GPU rows: views of the stacked arrays, the same rows
        _close(_plain(phase_result(name, s, b.model, b.gpu, b.layout, b.program, tokens)),
               _plain(phase_result(name, o, b.model, b.gpu, b.layout, b.program, tokens)), name)
        if o.moe is not None:
            _close(_plain(s.moe), _plain(o.moe), f"{name}.moe")
            np.testing.assert_allclose(s.moe_idle_wait_j, o.moe_idle_wait_j, rtol=1e-12, atol=0)
