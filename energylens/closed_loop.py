"""Closed-loop arithmetic of :mod:`energylens.serving_load`: clients, waves and finite runs (pure numpy).

``C`` clients each keep one request in flight (a client sends its next request when its previous one
finishes). The functions here take the iteration times costed by :mod:`energylens.serving_load` and
return the latencies; each is checked against the discrete-event simulation of the engine in
``tests/validation/des_engine.py``.

* :func:`closed_loop_running`, :func:`closed_loop_latency`: staggered clients (spread over the cycle),
  with a queue for a slot when there are more clients than slots;
* :func:`wave_groups`, :func:`wave_latency`: synchronised clients (the steady state of clients that
  start together and never drift apart);
* :func:`first_wave_iterations`, :func:`finite_run`: a finite benchmark run of ``N`` requests. At its
  start all ``C`` clients send together: the engine is idle, and vLLM's scheduler prefills the ``C``
  prompts first come first served through chunked prefill, ``budget`` prompt tokens per iteration (the
  prompts already prefilled decode meanwhile, at most ``C`` tokens of it: ignored), so the ``j``-th
  prompt gets its first token at the end of iteration ``ceil(j input_len / budget)``; the
  first wave's mean TTFT is ``mean_j ceil(j input_len / budget) tau_wave`` (``(G + 1) / 2 tau_wave`` for
  ``G = C input_len / budget`` whole iterations; checked against the simulation). The run's mean over its
  ``N`` requests is ``(C first + (N - C) steady) / N``.

Which steady state follows the first wave: with fixed lengths and no noise, the synchronised one. The
wave leaves its prompts spread over its ``G`` iterations, each got its first token in its own iteration,
so each finishes and comes back in its own iteration, one budget of prompts per iteration: exactly the
prefill block of :func:`wave_latency` (a prompt waits for the iteration in flight, then its own chunks);
a wave inside one iteration (``G <= 1``) comes back together. Only noise spreads the clients further
(the serving frontend tokenises, detokenises and streams the clients' requests in turn; the data of a
real run would show it as a TTFT below the synchronised one at small ``G``): ``staggered=True`` is that
limit. So a finite run is the first wave and then the steady state of the chosen arrangement
(synchronised by default). In the simulation the synchronised steady state's TTFT is 25-30 % low for
``G`` of 2-8 (a request that comes back during another group's prefill waits for a heavy iteration, not
a typical one); the first wave and the mix of the two are within 3 %.
"""

from __future__ import annotations

import numpy as np

from energylens.errors import WorkloadError

CLOSED_LOOP_WAIT_ITERATIONS = 1.0  # a closed-loop request waits for the iteration running when it arrives
MAX_WAVE_TERMS = 4_000_000  # first wave: largest (rows x prompts) summed exactly; beyond, the smooth mean


def closed_loop_running(clients, span, slots, wait_iterations=CLOSED_LOOP_WAIT_ITERATIONS) -> np.ndarray:
    """Mean running requests of a replica with ``clients`` closed-loop clients: each holds a slot for
    ``span`` iterations and then waits ``wait_iterations`` for the next iteration boundary; clients
    beyond ``slots`` queue (all slots busy)."""
    n = np.asarray(clients, dtype=float)
    return np.minimum(n * span / (span + wait_iterations), slots)


def closed_loop_latency(clients, output_len, chunks, slots, tau, tau_prefill) -> tuple[np.ndarray, np.ndarray]:
    """Staggered clients: (mean TTFT in s, requests/s) of one replica. ``tau`` is the mean iteration,
    ``tau_prefill`` an iteration carrying the prompt (``chunks`` of them). Without a queue a request
    waits one iteration and is prefilled; with clients beyond the slots, the slots complete ``slots / S``
    requests per second (``S = chunks tau_prefill + (output_len - 1) tau``) and a client's cycle is
    ``clients / that``."""
    n = np.asarray(clients, dtype=float)
    o = np.asarray(output_len, dtype=float)
    slot_s = chunks * tau_prefill + (o - 1.0) * tau
    queued = n > slots
    ttft = np.maximum(CLOSED_LOOP_WAIT_ITERATIONS * tau + chunks * tau_prefill,
                      np.where(queued, n / np.where(queued, slots, 1.0) * slot_s - (o - 1.0) * tau, 0.0))
    return ttft, n / (ttft + (o - 1.0) * tau)


def wave_groups(clients, input_len, budget) -> np.ndarray:
    """Synchronised clients: prefill iterations per cycle (groups of prompts filling the budget), >= 1."""
    return np.maximum(1.0, np.asarray(clients, dtype=float) * input_len / np.maximum(budget, 1.0))


def wave_latency(output_len, chunks, groups, tau_decode, tau_wave) -> tuple[np.ndarray, np.ndarray]:
    """Synchronised clients: (mean TTFT, mean TPOT) of one replica. The prompts of a cycle fill ``groups``
    full iterations (``tau_wave``); a client lives through each of them once per cycle: its own ``chunks``
    before its first token, the others while it decodes or waits, so its decode phase holds
    ``(groups - chunks) (O - 1) / O`` of them (the wait iteration being a typical one of that phase) and
    pure decode iterations (``tau_decode``) otherwise. Its ``chunks`` iterations carry ``min(groups, chunks)``
    budgets of prompt tokens. When the wave's prompts fit the requests' own chunks (``groups <= chunks``) the
    engine is idle when the wave returns (no wait); otherwise a request waits for the iteration in flight."""
    o = np.asarray(output_len, dtype=float)
    k = np.asarray(chunks, dtype=float)
    o1 = np.maximum(o - 1.0, 1.0)
    heavy = np.clip((groups - k) * o1 / np.maximum(o, 1.0), 0.0, np.maximum(o - 1.0, 0.0))
    tpot = ((o1 - heavy) * tau_decode + heavy * tau_wave) / o1
    # the k iterations carrying the prompt hold min(G, k) waves' worth of prefill (a lone long prompt: its own)
    ttft = np.where(groups > k, CLOSED_LOOP_WAIT_ITERATIONS * tpot, 0.0) + k * tau_decode \
        + np.minimum(groups, k) * (tau_wave - tau_decode)
    return ttft, tpot


def check_num_requests(num_requests, concurrency) -> np.ndarray:
    """``num_requests`` (requests of the whole run, whole deployment) as an array; refuses what is not a
    finite number of at least ``concurrency`` (each client sends at least one request)."""
    if isinstance(num_requests, bool):
        raise WorkloadError("num_requests", num_requests, f"a number >= concurrency ({concurrency})")
    try:
        n = np.asarray(num_requests, dtype=float)
        c = np.asarray(concurrency, dtype=float)
        np.broadcast_shapes(n.shape, c.shape)
    except (TypeError, ValueError):
        raise WorkloadError("num_requests", num_requests, "a number (requests of the whole run)") from None
    if n.size == 0 or np.any(~np.isfinite(n)) or np.any(n <= 0) or np.any(n < c):
        shown = n.tolist() if n.ndim else float(n)
        raise WorkloadError("num_requests", shown, "a finite number of requests >= the concurrency "
                            f"({np.min(c) if c.ndim else float(c):g}: every client sends at least one)")
    return n


def first_wave_iterations(clients, input_len, budget) -> tuple[np.ndarray, np.ndarray]:
    """A run's first wave: ``clients`` prompts of ``input_len`` tokens sent together to an idle engine and
    prefilled first come first served, ``budget`` prompt tokens per iteration (chunked). Returns (the mean
    over the prompts of the iteration that carries each one's last token, ``mean_j ceil(j input_len /
    budget)``; the iterations of the wave, ``ceil(clients input_len / budget)``). A fractional number of
    clients counts its last prompt by its fraction."""
    n, a = np.broadcast_arrays(np.asarray(clients, dtype=float),
                               np.asarray(input_len, dtype=float) / np.maximum(np.asarray(budget, dtype=float), 1.0))
    whole = np.floor(n)
    total = np.maximum(1.0, np.ceil(n * a * (1.0 - 1e-12)))
    top = int(np.max(whole, initial=0.0)) + 1
    if n.size * top > MAX_WAVE_TERMS:  # the smooth mean of ceil(j a): a (n + 1) / 2 + 1 / 2 (within a / 2)
        return np.clip(0.5 * (a * (n + 1.0) + 1.0), 1.0, total), total
    j = np.arange(1.0, top + 1.0)
    c = np.ceil(j * a[..., None] * (1.0 - 1e-12))  # iteration of the j-th prompt's last token (1e-12: exact fits)
    s = np.sum(np.where(j <= whole[..., None], c, 0.0), axis=-1)
    s = s + (n - whole) * np.take_along_axis(c, whole.astype(int)[..., None], axis=-1)[..., 0]
    return np.maximum(s / np.maximum(n, 1e-300), 1.0), total


def finite_run(fraction, first, steady) -> np.ndarray:
    """Mean over a run whose first wave is ``fraction = C / N`` of its requests."""
    f = np.asarray(fraction, dtype=float)
    return f * first + (1.0 - f) * steady


def first_wave_latency(output_len, mean_iteration, wave_iterations, tau_wave, tpot_steady):
    """(mean TTFT, mean TPOT) of the first wave's requests: a prompt's first token after ``mean_iteration``
    iterations of ``tau_wave`` (no wait: the engine is idle when the wave arrives); its decode then lives
    through the wave's remaining ``wave_iterations - mean_iteration`` prefill iterations and otherwise
    through steady-state iterations (``tpot_steady``)."""
    o1 = np.maximum(np.asarray(output_len, dtype=float) - 1.0, 1.0)
    heavy = np.clip(wave_iterations - mean_iteration, 0.0, o1)
    return mean_iteration * tau_wave, ((o1 - heavy) * tpot_steady + heavy * tau_wave) / o1


def finite_run_p90(fraction, wave_iterations, tau_wave, steady_p90) -> np.ndarray:
    """p90 TTFT of a run: the first wave's TTFTs spread evenly up to ``wave_iterations tau_wave``; when
    they are more than a tenth of the requests the 90th percentile lies among them (their ``1 - 0.1 /
    fraction`` quantile), otherwise it is the steady state's (a lower bound)."""
    f = np.asarray(fraction, dtype=float)
    q = np.where(f > 0.1, 1.0 - 0.1 / np.maximum(f, 0.1), 0.0)
    return np.maximum(steady_p90, q * wave_iterations * tau_wave)
