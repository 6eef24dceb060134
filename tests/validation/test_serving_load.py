"""Closed- and open-loop serving: the queueing formulas against a discrete-event simulation of the
engine, the KV-memory limit, conservation and the refusals of serve_load."""

import numpy as np
import pytest
from des_engine import simulate, simulate_kv

from energylens.errors import LayoutError, WorkloadError
from energylens.hardware import load_gpu
from energylens.kv_capacity import kv_capacity
from energylens.models import load_model
from energylens.parallel.layout import Layout
from energylens.serving_load import (
    CLOSED_LOOP_WAIT_ITERATIONS,
    closed_loop_latency,
    closed_loop_running,
    open_loop_queue,
    serve_closed_loop_arrays,
    serve_load,
    serve_open_loop_arrays,
    wave_groups,
    wave_latency,
)

# a toy engine: iteration = 5 ms + 0.2 ms per running request + 20 us per prompt token
A, B, D = 5e-3, 2e-4, 2e-5
PROMPT, OUT, SLOTS, BUDGET = 200, 40, 16, 2048


def tau(b, x):
    return A + B * b + D * x


def _open_model(rate):
    m = np.arange(1, SLOTS + 1.0)
    q = open_loop_queue(rate, m, tau(m, m / OUT * PROMPT), np.full(SLOTS, float(OUT)), float(SLOTS))
    run = float(q["running"])
    lam = rate * float(q["tpot_s"])
    ttft = float(q["queue_s"] + q["residual_s"]) + tau(max(run, 1.0), PROMPT * (1 + lam))
    return q, ttft, run


@pytest.mark.parametrize("load", [0.3, 0.6, 0.85, 0.95])
def test_open_loop_queue_matches_discrete_event_simulation(load):
    sat = float(_open_model(1.0)[0]["mu_c"])
    assert sat == pytest.approx(SLOTS / (OUT * tau(SLOTS, SLOTS / OUT * PROMPT)))
    q, ttft, run = _open_model(load * sat)
    sim = simulate(tau, PROMPT, OUT, SLOTS, BUDGET, rate=load * sat, requests=5000, seed=1)
    assert run == pytest.approx(sim["running"], rel=0.03)
    assert float(q["tpot_s"]) == pytest.approx(sim["tpot_s"], rel=0.03)
    assert ttft == pytest.approx(sim["ttft_s"], rel=0.12)
    # p90 TPOT: the token-weighted 90th percentile iteration bounds the request-averaged one from above
    assert sim["tpot_p90_s"] <= float(q["tpot_p90_s"]) * 1.02
    assert bool(q["stable"])


def test_open_loop_unstable_above_saturation():
    q, _, _ = _open_model(1.0)
    assert not bool(_open_model(1.01 * float(q["mu_c"]))[0]["stable"])


@pytest.mark.parametrize("clients", [2, 8, 16, 24, 40])
@pytest.mark.parametrize("synchronised", [True, False])
def test_closed_loop_matches_discrete_event_simulation(clients, synchronised):
    nb = min(clients, SLOTS)
    budget = BUDGET - nb * (OUT - 1) / OUT
    if synchronised and clients <= SLOTS:  # all clients start together: waves
        groups = wave_groups(clients, PROMPT, budget)
        run = closed_loop_running(clients, OUT, SLOTS, (groups > 1) * CLOSED_LOOP_WAIT_ITERATIONS)  # k = 1
        ttft, tpot = wave_latency(OUT, 1, groups, tau(nb, 0), tau(nb, min(nb * PROMPT, budget)))
    else:
        run = closed_loop_running(clients, OUT, SLOTS)
        lam = run / OUT
        tpot = tau(run, lam * PROMPT)
        ttft, _ = closed_loop_latency(clients, OUT, 1, SLOTS, tpot, tau(run, min(PROMPT * (1 + lam), BUDGET - run)))
    sim = simulate(tau, PROMPT, OUT, SLOTS, BUDGET, clients=clients, start_spread_s=0.0 if synchronised else OUT * 0.01,
                   requests=2000, seed=2)
    assert float(run) == pytest.approx(sim["running"], rel=0.04)
    assert float(tpot) == pytest.approx(sim["tpot_s"], rel=0.1)
    assert float(ttft) == pytest.approx(sim["ttft_s"], rel=0.12)


@pytest.mark.parametrize("clients", [1, 2, 8, 16])
def test_synchronised_chunked_prompts_match_discrete_event_simulation(clients):
    """Prompts longer than the budget (k = 2 chunks): a client lives through each prefill iteration of its
    cycle once, its own chunks before its first token, so its decode holds the other prompts' iterations
    only (a lone client none: TPOT is the pure decode iteration, TTFT its k chunks)."""
    prompt, out, budget = 3000, 40, 2048
    budget_left = budget - clients * (out - 1) / out
    k = float(np.ceil(prompt / budget_left))
    assert k == 2.0
    groups = wave_groups(clients, prompt, budget_left)
    run = closed_loop_running(clients, out + k - 1, SLOTS, (groups > k) * CLOSED_LOOP_WAIT_ITERATIONS)
    ttft, tpot = wave_latency(out, k, groups, tau(clients, 0), tau(clients, min(clients * prompt, budget_left)))
    sim = simulate(tau, prompt, out, SLOTS, budget, clients=clients, requests=2000, seed=2)
    assert float(run) == pytest.approx(sim["running"], rel=0.06)
    assert float(tpot) == pytest.approx(sim["tpot_s"], rel=0.09)
    assert float(ttft) == pytest.approx(sim["ttft_s"], rel=0.2)
    if clients == 1:
        assert float(tpot) == pytest.approx(tau(1, 0)) and float(ttft) == pytest.approx(sim["ttft_s"], rel=0.01)


@pytest.mark.parametrize("prompt,out,clients", [(100, 800, 64), (200, 400, 40), (1000, 1000, 40)])
def test_closed_loop_under_vllm_preemption(prompt, out, clients):
    """KV-limited closed loop against vLLM's admission and recompute preemption (des_engine.simulate_kv):
    the running batch (KV tokens / mean footprint) and the request rate hold; the model keeps the whole
    queue before the first token, vLLM spends part of it preempted after the first token (head-of-line
    admission still holds new requests back), so the model's TTFT bounds vLLM's from above and its TPOT
    from below."""
    slots = 16.0
    kv = int(slots * (prompt + out / 2 + 8))
    sim = simulate_kv(tau, prompt, out, kv, 4096, clients=clients)
    run = float(closed_loop_running(clients, out, slots))
    lam = run / out
    tpot = tau(run, lam * prompt)
    ttft, rate = closed_loop_latency(clients, out, 1, slots, tpot, tau(run, min(prompt * (1 + lam), 4096 - run)))
    assert run == pytest.approx(sim["running"], rel=0.06)
    assert float(rate) == pytest.approx(sim["requests_per_s"], rel=0.06)
    assert float(ttft) >= sim["ttft_s"] and tpot <= sim["tpot_s"] * 1.01
    assert sim["preemptions_per_request"] > 0.5


MODEL = load_model("qwen3-32b")
H100 = load_gpu("h100-sxm")
TP2 = Layout(tp=2)


def test_kv_capacity_from_free_memory():
    cap = kv_capacity(MODEL, H100, TP2)
    # 64 layers x 8 KV heads x 128 x (K, V) x 2 bytes, split over 2 GPUs
    assert cap.kv_bytes_per_token == 64 * 8 * 128 * 2 * 2 / 2
    assert cap.free_bytes == pytest.approx(0.9 * H100.hbm_capacity_bytes - cap.weights_bytes - cap.workspace_bytes)
    assert cap.kv_tokens == pytest.approx(cap.free_bytes / cap.kv_bytes_per_token)
    assert float(cap.max_running(1000, 1000)) == np.floor(cap.kv_tokens / (1000 + 500 + 8))
    lower = kv_capacity(MODEL, H100, TP2, gpu_memory_utilization=0.8)
    assert lower.kv_tokens < cap.kv_tokens
    assert not kv_capacity(MODEL, H100, Layout()).fits or kv_capacity(MODEL, H100, Layout()).kv_tokens < cap.kv_tokens


def test_closed_loop_memory_caps_the_running_batch():
    cap = kv_capacity(MODEL, H100, TP2)
    slots = float(cap.max_running(8192, 1024))
    arr = serve_closed_loop_arrays(MODEL, H100, TP2, np.array([4.0, slots, 4 * slots]), 8192.0, 1024.0)
    assert arr.running_batch[2] == slots
    assert arr.queued_requests[2] == pytest.approx(3 * slots)
    assert arr.ttft_s[2] > 3 * arr.ttft_s[1]  # clients wait for a slot
    assert np.all(np.diff(arr.ttft_s) > 0) and arr.tpot_s[1] > arr.tpot_s[0]
    limited = serve_closed_loop_arrays(MODEL, H100, TP2, 4 * slots, 8192.0, 1024.0, max_num_seqs=8)
    assert float(limited.running_batch) == 8.0


def test_load_conservation_and_units():
    for arr in (serve_closed_loop_arrays(MODEL, H100, TP2, np.array([1.0, 16, 128]), 1024.0, 512.0),
                serve_closed_loop_arrays(MODEL, H100, TP2, np.array([1.0, 16, 128]), 1024.0, 512.0, staggered=True),
                serve_open_loop_arrays(MODEL, H100, TP2, np.array([0.2, 1.0, 2.0]), 1024.0, 512.0)):
        np.testing.assert_allclose(arr.output_tokens_per_s, arr.request_rate_per_s * 512.0)
        np.testing.assert_allclose(arr.energy_per_output_token_j * arr.output_tokens_per_s, arr.avg_power_w)
        np.testing.assert_allclose(arr.output_tokens_per_s_per_gpu * 2, arr.output_tokens_per_s)
        assert np.all(arr.avg_power_w <= H100.power_limit_w * 2 + 1e-9)
        assert np.all(arr.avg_power_w >= H100.idle_power_w * 2 - 1e-9)
        # (p90 TTFT may sit below the mean when most iterations carry no other prompt: a skewed distribution)
        assert np.all(arr.ttft_p90_s >= 0.95 * arr.ttft_s) and np.all(arr.tpot_p90_s >= arr.tpot_s - 1e-12)
        assert np.all(np.isfinite(arr.ttft_s))


def test_open_loop_low_rate_is_a_lone_request_and_closed_loop_of_one_agrees():
    lone = serve_closed_loop_arrays(MODEL, H100, TP2, 1.0, 1024.0, 256.0)
    trickle = serve_open_loop_arrays(MODEL, H100, TP2, 1e-4, 1024.0, 256.0)
    assert float(trickle.tpot_s) == pytest.approx(float(lone.tpot_s), rel=0.01)
    # an arrival to an idle engine starts at once: TTFT is the prefill iteration alone
    assert float(trickle.ttft_s) == pytest.approx(float(lone.ttft_s), rel=0.01)
    assert float(trickle.avg_power_w) == pytest.approx(2 * H100.idle_power_w, rel=0.01)


def test_open_loop_saturation_matches_closed_loop_with_full_slots():
    closed = serve_closed_loop_arrays(MODEL, H100, TP2, 64.0, 1024.0, 256.0, max_num_seqs=32)
    opened = serve_open_loop_arrays(MODEL, H100, TP2, 0.5, 1024.0, 256.0, max_num_seqs=32)
    assert float(opened.saturation_request_rate_per_s) == pytest.approx(float(closed.saturation_request_rate_per_s),
                                                                        rel=0.02)
    assert float(closed.request_rate_per_s) == pytest.approx(float(closed.saturation_request_rate_per_s), rel=0.1)


def test_serve_load_refuses_what_does_not_fit():
    with pytest.raises(LayoutError, match="GiB"):
        serve_load("llama3.1-70b", "h100-sxm", concurrency=8, input_len=512, output_len=512)
    with pytest.raises(WorkloadError, match="KV cache"):  # 250k tokens fit the context (262144), not the memory
        serve_load("Qwen/Qwen3-30B-A3B-Instruct-2507", "h100-sxm", concurrency=1, input_len=250_000, output_len=512)
    with pytest.raises(WorkloadError, match="context length"):
        serve_load("qwen3-32b", "h100-sxm", tp=2, concurrency=1, input_len=400_000, output_len=512)
    with pytest.raises(WorkloadError, match="saturation"):
        serve_load("qwen3-32b", "h100-sxm", tp=2, request_rate=100.0, input_len=1024, output_len=1024)
    with pytest.raises(WorkloadError, match="exactly one"):
        serve_load("qwen3-32b", "h100-sxm", tp=2, concurrency=4, request_rate=1.0, input_len=8, output_len=8)
    with pytest.raises(WorkloadError):
        serve_load("qwen3-32b", "h100-sxm", tp=2, concurrency=-1, input_len=8, output_len=8)


def test_serve_load_result_keys():
    r = serve_load("qwen3-32b", "h100-sxm", tp=2, concurrency=32, input_len=1024, output_len=256)
    d = r.to_dict()
    for key in ("ttft_s", "ttft_p90_s", "tpot_s", "tpot_p90_s", "output_tokens_per_s_per_gpu", "avg_power_w",
                "energy_per_output_token_j", "running_batch", "decode_step_latency_s", "batch", "kv_cache"):
        assert key in d
    assert d["mode"] == "closed_loop" and d["running_batch"] <= 32
    assert r.interval["tpot_s"]["low"] < r.tpot_s < r.interval["tpot_s"]["high"]


def _cli(capsys, *args):
    from energylens.cli import main

    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_serve_closed_and_open_loop(capsys):
    import json

    base = ("serve", "--model", "qwen3-32b", "--gpu", "h100-sxm", "--tp", "2", "--input-len", "1024",
            "--output-len", "256")
    rc, out, _ = _cli(capsys, *base, "--concurrency", "16", "--json")
    assert rc == 0
    d = json.loads(out)
    assert d["mode"] == "closed_loop" and d["ttft_s"] > 0 and d["tpot_s"] > 0 and d["output_tokens_per_s_per_gpu"] > 0
    rc, out, _ = _cli(capsys, *base, "--request-rate", "1.5", "--json")
    assert rc == 0 and json.loads(out)["mode"] == "open_loop"
    rc, out, _ = _cli(capsys, *base, "--concurrency", "16")
    assert rc == 0 and "TTFT" in out
    rc, _, err = _cli(capsys, *base, "--request-rate", "500")
    assert rc == 2 and "saturation" in err
    rc, _, err = _cli(capsys, "serve", "--model", "llama3.1-70b", "--gpu", "h100-sxm", "--batch", "8")
    assert rc == 2 and "GiB" in err
    rc, _, err = _cli(capsys, "serve", "--model", "qwen3-32b", "--gpu", "h100-sxm", "--tp", "2", "--batch", "4000")
    assert rc == 2 and "KV cache" in err
