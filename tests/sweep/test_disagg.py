"""Disaggregated vs co-located serving: hand counts, energy accounting, pool sizing."""

from __future__ import annotations

import numpy as np
import pytest

from energylens.disagg import Pool, colocated, compare, disaggregated, kv_transfer
from energylens.errors import EnergyLensError


def test_kv_bytes_hand_count():
    # Llama-3-70B: 80 layers x (K + V) x 8 kv heads x 128 head dim x 2 bytes = 327,680 B per token
    total, latency, energy = kv_transfer("llama3-70b", Pool(tp=4), 2048)
    assert float(total) == 80 * 2 * 8 * 128 * 2 * 2048
    assert float(latency) > 0 and float(energy) > 0


@pytest.fixture(scope="module")
def result():
    return compare("llama3-8b", colocated_pool=Pool(tp=2), prefill_pool=Pool(tp=1), decode_pool=Pool(tp=2),
                   concurrency=np.array([4.0, 32.0, 128.0]), prompt_len=1024, output_len=256, max_gpus=8)


def test_energy_accounting(result):
    d = result.disaggregated
    parts = (d.prefill_energy_per_request_j + d.decode_energy_per_request_j + d.kv_transfer_energy_per_request_j
             + d.idle_energy_per_request_j)
    np.testing.assert_allclose(parts, d.energy_per_request_j, rtol=1e-12)
    np.testing.assert_allclose(d.energy_per_output_token_j, d.energy_per_request_j / 256)
    assert np.all(d.idle_energy_per_request_j >= -1e-9)
    assert np.all(d.balanced_energy_per_output_token_j <= d.energy_per_output_token_j + 1e-12)
    assert np.all(d.num_gpus <= 8) and np.all(d.num_gpus == d.prefill_instances * 1 + d.decode_instances * 2)
    # the system rate is the slower pool's
    rate = np.minimum(d.prefill_instances * d.prefill_requests_per_s_per_instance,
                      d.decode_instances * d.decode_requests_per_s_per_instance)
    np.testing.assert_allclose(d.requests_per_s, rate)
    np.testing.assert_allclose(result.energy_ratio, d.energy_per_output_token_j / result.colocated.energy_per_output_token_j)


def test_more_concurrency_is_cheaper_per_token(result):
    assert np.all(np.diff(result.colocated.energy_per_output_token_j) < 0)
    assert np.all(np.diff(result.disaggregated.decode_energy_per_request_j) < 0)
    # decoding without prefill interference is never slower than co-located serving
    assert np.all(result.disaggregated.itl_s <= result.colocated.itl_s + 1e-12)


def test_colocated_is_serving_module():
    from energylens import Layout, load_gpu, load_model
    from energylens.serving import serve_arrays

    co = colocated("llama3-8b", Pool(tp=2), concurrency=16, prompt_len=512, output_len=128, max_gpus=8)
    ref = serve_arrays(load_model("llama3-8b"), load_gpu("h100-sxm"), Layout(tp=2), 16.0, 512.0, 128.0)
    assert float(co.energy_per_output_token_j) == pytest.approx(float(ref.energy_per_output_token_j))
    assert co.instances == 4 and co.num_gpus == 8
    assert float(co.output_tokens_per_s) == pytest.approx(4 * float(ref.output_tokens_per_s))


def test_prefill_per_request_work_draws_the_kernels_mean_power():
    """The prefill pool's per-request GPU time draws the batch's mean kernel power (as serve does),
    not idle + active static power: hand-built from the prefill phase and the serving coefficients."""
    from energylens import Layout, load_gpu, load_model
    from energylens.cost.phase import evaluate_phase
    from energylens.program import build_program
    from energylens.serving import load_coefficients
    from energylens.workload import Workload, prefill_sizes

    m, g, lay = load_model("llama3-8b"), load_gpu("h100-sxm"), Layout(tp=2)
    d = disaggregated("llama3-8b", Pool(tp=2), Pool(tp=2), concurrency=8, prompt_len=1024, output_len=64,
                      prefill_batch=4, max_gpus=4)
    sizes, w = prefill_sizes(Workload(4, 1, 0), np.asarray(4.0))
    pre = evaluate_phase(m, g, lay, build_program(m, lay), {"b": sizes["b"], "t": 1024.0, "s": 1024.0}, w,
                         decode=False)
    c = load_coefficients(g.key)
    seq_s, host_s = 4 * c.per_sequence_overhead_s, c.iteration_overhead_s
    active_w = c.active_power_fraction * (g.power_limit_w - g.idle_power_w)
    kernels_j = (float(pre.energy_j) - float(pre.communication_j)) / 2 + active_w * float(pre.kernel_time_s)
    mean_w = kernels_j / float(pre.kernel_time_s)
    assert mean_w > g.idle_power_w + active_w + 50.0  # the kernels carry busy power: well above static
    busy_j = min(kernels_j + mean_w * seq_s, g.power_limit_w * (float(pre.kernel_time_s) + seq_s))
    per_gpu_j = busy_j + float(pre.communication_j) / 2 + g.idle_power_w * host_s
    assert float(d.prefill_energy_per_request_j) == pytest.approx(2 * per_gpu_j / 4, rel=1e-9)


def test_smallest_budget_gives_one_instance_each():
    d = disaggregated("llama3-8b", Pool(tp=1), Pool(tp=1), concurrency=8, prompt_len=512, output_len=64, max_gpus=2)
    assert int(d.prefill_instances) == 1 and int(d.decode_instances) == 1


@pytest.mark.parametrize("prefill,decode,kwargs,field", [
    (Pool(tp=4), Pool(tp=1, dp=2), {"max_gpus": 5}, "max_gpus"),
    (Pool(tp=1), Pool(tp=1, dp=2), {"concurrency": 1}, "concurrency"),
    (Pool(tp=1), Pool(tp=1), {"prompt_len": 0}, "prompt_len"),
    (Pool(tp=1, dp=2), Pool(tp=1), {"prefill_batch": 3}, "prefill_batch"),
])
def test_errors(prefill, decode, kwargs, field):
    args = dict(concurrency=8, prompt_len=512, output_len=64, max_gpus=8)
    args.update(kwargs)
    with pytest.raises(EnergyLensError) as e:
        disaggregated("llama3-8b", prefill, decode, **args)
    assert e.value.field == field


def test_pool_parse():
    assert Pool.parse("gpu=h200,tp=4,dtype=fp8") == Pool(gpu="h200", tp=4, dtype="fp8")
    with pytest.raises(EnergyLensError):
        Pool.parse("tq=4")
    with pytest.raises(EnergyLensError):
        Pool(tp=0)


def test_carbon_and_cost_per_token_in_both_deployments(capsys):
    from energylens.carbon import Footprint
    from energylens.cli import main
    from energylens.disagg import Pool, compare

    kw = dict(colocated_pool=Pool(tp=8), prefill_pool=Pool(tp=4), decode_pool=Pool(tp=4), concurrency=[16.0, 64.0],
              prompt_len=2048, output_len=256, max_gpus=16)
    res = compare("llama3-70b", footprint=Footprint(400.0, 1.2, 3.0), **kw)
    d = res.to_dict()
    for name, r in (("colocated", res.colocated), ("disaggregated", res.disaggregated)):
        e, x = np.asarray(r.energy_per_output_token_j), np.asarray(r.output_tokens_per_s_per_gpu)
        # by hand: J x PUE / 3.6e6 J/kWh x g/kWh; USD/GPU-hour / 3600 s / (tokens/s per GPU)
        np.testing.assert_allclose(d[name]["gco2e_per_million_tokens"], e * 1.2 / 3.6e6 * 400.0 * 1e6, rtol=1e-12)
        np.testing.assert_allclose(d[name]["usd_per_output_token"], 3.0 / 3600.0 / x, rtol=1e-12)
    plain = compare("llama3-70b", **kw).to_dict()
    assert plain["colocated"]["gco2e_per_output_token"] is None and plain["footprint"]["pue"] == 1.0
    assert main(["disagg", "--model", "llama3-70b", "-c", "64", "--carbon-intensity", "400",
                 "--usd-per-gpu-hour", "3"]) in (0, None)
    out = capsys.readouterr().out
    assert "gCO2e per million output tokens" in out and "USD per million output tokens" in out
    assert main(["disagg", "--model", "llama3-70b", "--pue", "0.5"]) == 2
