"""Closed- and open-loop serving: the queueing formulas against a discrete-event simulation of the
engine, the KV-memory limit, conservation and the refusals of serve_load."""

import numpy as np
import pytest
from des_engine import simulate, simulate_kv

from energylens.closed_loop import finite_run, first_wave_iterations, first_wave_latency
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
    wave_own_tokens,
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
        ttft, tpot = wave_latency(OUT, 1, groups, tau(nb, 0), tau(nb, min(nb * PROMPT, budget)),
                                  tau(nb, wave_own_tokens(clients, PROMPT, budget)))
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


@pytest.mark.parametrize("clients", [4, 8, 16])
def test_synchronised_groups_wait_for_the_previous_prefill(clients):
    """Synchronised prompts of 1000 tokens, budget 2048: G = 2-8 groups come back one iteration apart, each
    while the group before it is prefilled (the first group: during a decode iteration)."""
    prompt, out, budget = 1000, 40, 2048
    left = budget - clients * (out - 1) / out
    groups = wave_groups(clients, prompt, left)
    assert 1.9 < groups < 8
    ttft, tpot = wave_latency(out, 1, groups, tau(clients, 0), tau(clients, min(clients * prompt, left)),
                              tau(clients, wave_own_tokens(clients, prompt, left)))
    sim = simulate(tau, prompt, out, SLOTS, budget, clients=clients, requests=2000, warmup=500, seed=3)
    assert float(ttft) == pytest.approx(sim["ttft_s"], rel=0.05)
    assert float(tpot) == pytest.approx(sim["tpot_s"], rel=0.1)


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
    # (the open loop's mean iteration holds the request's own prompt, one iteration in span = 256)
    assert float(trickle.tpot_s) == pytest.approx(float(lone.tpot_s), rel=0.02)
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


# ---- finite runs: the first wave (energylens.closed_loop) ----

def test_first_wave_by_hand():
    """C prompts sent together; each iteration decodes the prompts already prefilled (one token each, out of
    the budget) and gives the rest of the budget to the waiting prompts in turn."""
    # C = 4, input_len = budget / 2: iteration 1 prefills prompts 1 and 2 (8192 tokens); iteration 2 has 8190
    # left: prompt 3 and 4094 tokens of prompt 4, whose last 2 tokens go in iteration 3: 1, 1, 2, 3 -> 1.75
    assert first_wave_iterations(4, 4096, 8192) == (1.75, 3.0)
    # one budget per prompt: prompt 1 in iteration 1, then each budget is short of the decoders' tokens, so
    # prompt j ends in iteration j + 1: C = 8 -> (1 + 3 + ... + 9) / 8 = 5.375 over 9 iterations; a wave
    # inside one budget: 1; 2.5 clients: (1 + 3 + 0.5 x 4) / 2.5 = 2.4
    it, n = first_wave_iterations(np.array([1.0, 8.0, 2.5]), 8192.0, 8192.0)
    np.testing.assert_allclose(it, [1.0, 5.375, 2.4])
    np.testing.assert_allclose(n, [1.0, 9.0, 4.0])
    assert first_wave_iterations(8, 1024, 8192) == (1.0, 1.0)
    # three prompts of 3000 tokens, budget 2048: 2048, +2048 (p1 done), +2047 (p2), +2046, +2045 (p3): 2, 3, 5
    assert first_wave_iterations(3, 3000, 2048) == (pytest.approx(10 / 3), 5.0)
    # without decoders (a budget far above the wave) the j-th prompt ends in iteration ceil(j P / budget)
    it, _ = first_wave_iterations(np.arange(1.0, 60.0), 100_000.0, 1e9 / 7)
    j = np.arange(1.0, 60.0)
    np.testing.assert_allclose(it, [np.mean(np.ceil(np.arange(1, k + 1) * 100_000.0 / (1e9 / 7))) for k in j])
    # first-wave latencies: 1.5 iterations of 0.2 s; the wave's remaining 0.5 iteration in the decode
    ttft, tpot = first_wave_latency(11.0, 1.5, 2.0, 0.2, 0.01)
    assert ttft == pytest.approx(0.3) and tpot == pytest.approx((9.5 * 0.01 + 0.5 * 0.2) / 10)
    assert float(finite_run(0.1, 1.0, 0.5)) == pytest.approx(0.55)


@pytest.mark.parametrize("staggered", [False, True])
def test_finite_run_limits_and_mix(staggered):
    """N -> infinity is the steady state; N = C is the first wave alone; 10 C mixes them 1 : 9 (TTFT and TPOT)."""
    c = np.array([1.0, 4.0, 16.0, 64.0])
    kw = dict(staggered=staggered)
    steady = serve_closed_loop_arrays(MODEL, H100, TP2, c, 8192.0, 1024.0, **kw)
    inf = serve_closed_loop_arrays(MODEL, H100, TP2, c, 8192.0, 1024.0, num_requests=1e15, **kw)
    wave = serve_closed_loop_arrays(MODEL, H100, TP2, c, 8192.0, 1024.0, num_requests=c, **kw)
    ten = serve_closed_loop_arrays(MODEL, H100, TP2, c, 8192.0, 1024.0, num_requests=10 * c, **kw)
    for m in ("ttft_s", "tpot_s"):
        np.testing.assert_allclose(getattr(inf, m), getattr(steady, m), rtol=1e-9)
        np.testing.assert_allclose(getattr(ten, m), 0.1 * getattr(wave, m) + 0.9 * getattr(steady, m), rtol=1e-9)
    np.testing.assert_allclose(ten.output_tokens_per_s, steady.output_tokens_per_s)  # throughput: the steady state
    ok = ~(steady.queued_requests > 0)
    assert np.all(np.diff(wave.ttft_s[ok]) > 0) and np.all(np.diff(ten.ttft_s[ok]) > 0)  # monotone in C
    assert np.all(wave.ttft_s[1:][ok[1:]] > steady.ttft_s[1:][ok[1:]])  # several prompts queue in the first wave


def test_finite_run_of_one_client_is_one_prefill():
    """A lone client's first request meets an idle engine: one iteration of its prompt, as the synchronised
    steady state of one client (whose engine is idle whenever its request comes back)."""
    one = serve_closed_loop_arrays(MODEL, H100, TP2, 1.0, 1024.0, 256.0, num_requests=1.0)
    steady = serve_closed_loop_arrays(MODEL, H100, TP2, 1.0, 1024.0, 256.0)
    assert float(one.ttft_s) == pytest.approx(float(steady.ttft_s), rel=1e-9)


@pytest.mark.parametrize("clients", [4, 16])
def test_finite_run_matches_discrete_event_simulation(clients):
    """Clients sent together into the toy engine: the first wave's mean TTFT (the j-th prompt after
    ceil(j P / budget) full iterations) against the simulated run of N = C requests, and a run of N = 10 C
    as one part first wave, nine parts steady state (the simulated steady state: the synchronised wave
    model's own error at these prompts is not what this checks)."""
    prompt, out, budget = 1000, 40, 2048
    it, n_it = first_wave_iterations(clients, prompt, budget)
    steady = simulate(tau, prompt, out, SLOTS, budget, clients=clients, requests=2000, warmup=500, seed=3)
    ttft_1, tpot_1 = first_wave_latency(out, it, n_it, tau(max(clients / 2, 1), min(clients * prompt, budget)),
                                        steady["tpot_s"])
    first = simulate(tau, prompt, out, SLOTS, budget, clients=clients, requests=clients, warmup=0, seed=3)
    assert float(ttft_1) == pytest.approx(first["ttft_s"], rel=0.03)
    run = simulate(tau, prompt, out, SLOTS, budget, clients=clients, requests=10 * clients, warmup=0, seed=3)
    assert float(finite_run(0.1, ttft_1, steady["ttft_s"])) == pytest.approx(run["ttft_s"], rel=0.03)
    assert float(finite_run(0.1, tpot_1, steady["tpot_s"])) == pytest.approx(run["tpot_s"], rel=0.03)
    if clients == 16:  # G ~ 8 full iterations: the transient matters
        assert run["ttft_s"] > 1.1 * steady["ttft_s"]


@pytest.mark.parametrize("bad", [2.0, 0.0, -5.0, float("nan"), float("inf"), True, "ten"])
def test_num_requests_refused(bad):
    with pytest.raises(WorkloadError, match="num_requests"):
        serve_closed_loop_arrays(MODEL, H100, TP2, 4.0, 1024.0, 256.0, num_requests=bad)
    with pytest.raises(WorkloadError, match="num_requests"):
        serve_load("qwen3-32b", "h100-sxm", tp=2, concurrency=4, input_len=1024, output_len=256, num_requests=bad)


def test_cli_serve_num_requests(capsys):
    import json

    base = ("serve", "--model", "qwen3-32b", "--gpu", "h100-sxm", "--tp", "2", "--input-len", "8192",
            "--output-len", "256", "--concurrency", "16")
    rc, out, _ = _cli(capsys, *base, "--json")
    steady = json.loads(out)
    rc, out, _ = _cli(capsys, *base, "--num-requests", "160", "--json")
    run = json.loads(out)
    assert rc == 0 and run["num_requests"] == 160 and steady["num_requests"] is None
    assert run["ttft_s"] > steady["ttft_s"]  # the first wave queues 16 long prompts
    rc, out, _ = _cli(capsys, *base, "--num-requests", "160")
    assert rc == 0 and "a run of 160 requests" in out
    for args in (("--num-requests", "8"), ("--num-requests", "nan")):
        rc, _, err = _cli(capsys, *base, *args)
        assert rc == 2 and "num_requests" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    rc, _, err = _cli(capsys, "serve", "--model", "qwen3-32b", "--gpu", "h100-sxm", "--tp", "2", "--num-requests", "9")
    assert rc == 2 and "concurrency" in err


@pytest.mark.parametrize("extra", [0.0, 0.3])
def test_prompt_chunks_sum_to_the_prompt(monkeypatch, extra):
    """A prompt longer than the budget runs k - 1 full chunks and one with the rest (plus the other prompts
    sharing it): k x the mean chunk time is its whole prefill, not k full budgets (toy engine, by hand)."""
    from energylens import serving_load as sl

    monkeypatch.setattr(sl, "_iteration_s", lambda m, g, lay, prog, rt, co, running, x, i, span: tau(running, x))
    running, prompt, mbt = 1.0, 3000.0, 2048
    k = sl._chunks(prompt, running, mbt)
    assert float(k) == 2.0
    t, x = sl._prefill_iteration(None, None, None, None, None, None, running, prompt, 40.0, k, extra, mbt)
    last = min(prompt - 2047.0 + extra * prompt, 2047.0)
    assert float(k * t) == pytest.approx(tau(1.0, 2047.0) + tau(1.0, last), rel=1e-12)
    assert float(k * x) == pytest.approx(2047.0 + last, rel=1e-12)
    t1, x1 = sl._prefill_iteration(None, None, None, None, None, None, running, 1000.0, 40.0, np.asarray(1.0), extra,
                                   mbt)  # one chunk: the prompt and its company
    assert float(t1) == pytest.approx(tau(1.0, 1000.0 * (1 + extra))) and float(x1) == 1000.0 * (1 + extra)


def test_ttft_continuous_across_the_chunk_budget():
    """One more prompt token past the chunk budget adds one tiny chunk, not a second full iteration."""
    kw = dict(tp=1, concurrency=1, output_len=256, staggered=True, max_batched_tokens=8192)
    below = serve_load("llama3.1-8b", "h100-sxm", input_len=8000, **kw).ttft_s
    above = serve_load("llama3.1-8b", "h100-sxm", input_len=8300, **kw).ttft_s
    assert below < above < 1.15 * below


def test_staggered_power_is_the_time_average_over_the_prompt_mixture():
    """Staggered closed loop: the power is the mixture's energy over its time
    (pure decode iterations and iterations carrying 1, 2, ... whole prompts, Poisson weights), summed like the
    mean iteration, not the power of one iteration at the mean prefill."""
    from scipy.stats import poisson

    from energylens import serving_load as sl
    from energylens.program import build_program
    from energylens.serving import (
        iteration_energy_j,
        iteration_time_s,
        resolve_coefficients,
        serving_parts,
        serving_routing,
    )

    model, gpu = load_model("llama3.1-8b"), load_gpu("h100-sxm")
    lay, i, o, n = Layout(tp=1), 1024.0, 128.0, 8.0
    res = serve_load(model, gpu, tp=1, concurrency=n, input_len=i, output_len=o, staggered=True)
    coeffs = resolve_coefficients(None, gpu.key)
    routing = serving_routing(None, coeffs, model)
    program = build_program(model, lay)
    run = float(res.running_batch)
    span = o  # one chunk per prompt
    parts = serving_parts(model, gpu, lay, run, i, span, routing=routing)
    lam = run / span
    m = np.arange(0.0, 8.0)
    pm = poisson.pmf(m, lam)
    pm[-1] += poisson.sf(m[-1], lam)
    cost = sl._iteration_cost(model, gpu, lay, program, routing, run, m * i, i, span)
    t, e = iteration_time_s(cost, coeffs, run, 1), iteration_energy_j(parts, cost, coeffs, run)
    assert res.avg_power_w == pytest.approx(np.sum(pm * e) / np.sum(pm * t), rel=1e-5)
