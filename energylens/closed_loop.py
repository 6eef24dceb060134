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
  prompt gets its first token at the end of iteration ``ceil(j input_len / budget)`` (without the
  decoders; :func:`first_wave_iterations` follows them iteration by iteration, as vLLM's scheduler takes
  them out of the budget). The first wave's mean TTFT is that mean iteration times ``tau_wave`` (about
  ``(G + 1) / 2 tau_wave`` for ``G = C input_len / budget`` whole iterations). The run's mean over its
  ``N`` requests is ``(C first + (N - C) steady) / N``.

Which steady state follows the first wave. Without noise, the synchronised one: the wave leaves its prompts
spread over its ``G`` iterations, one budget per iteration, each with its first token in its own iteration,
so they finish and come back in groups one iteration apart, each group while the one before it is being
prefilled: the prefill block of :func:`wave_latency` (a wave inside one iteration comes back together).
The first wave does not spread the clients over the whole cycle. Noise does: one frontend process
tokenises, detokenises and streams every client's requests in turn and HTTP round trips vary, so requests
that finish in one iteration reach the engine over several, and nothing pulls them together again
(``staggered=True``, the limit of much noise). Which one a real run is near depends on that noise, which no
data here measures: the choice is the caller's (``energylens/data/validation/assumptions.yaml`` for the
silicon runs). Against the discrete-event simulation (noise-free): the synchronised steady state within 5 %
for ``G`` up to 24 (a returning group waits for the previous group's prefill iteration: before that was
counted, its TTFT was 25-30 % low at ``G`` of 2-8), the first wave and the mix within 3 %.
"""

from __future__ import annotations

import numpy as np

from energylens.errors import WorkloadError

CLOSED_LOOP_WAIT_ITERATIONS = 1.0  # a closed-loop request waits for the iteration running when it arrives
MAX_WAVE_ITERATIONS = 20_000  # first wave: iterations followed one by one; beyond, the smooth mean


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


def wave_own_tokens(clients, input_len, budget) -> np.ndarray:
    """Synchronised clients whose prompts fit one chunk: the prompt tokens of the iteration that prefills a
    client's prompt, averaged over the clients. The wave's ``g = clients input_len / budget`` budgets hold
    ``floor(g)`` full iterations and one of ``frac`` budget, in which a prompt lies with probability
    ``frac / g``: ``budget (floor(g) + frac^2) / g``; all the prompts, ``clients input_len``, when ``g <= 1``."""
    tokens = np.asarray(clients, dtype=float) * np.asarray(input_len, dtype=float)
    b = np.maximum(np.asarray(budget, dtype=float), 1.0)
    g = np.maximum(tokens / b, 1.0)
    whole = np.floor(g)
    return np.minimum(tokens, b * (whole + (g - whole) ** 2) / g)


def wave_latency(output_len, chunks, groups, tau_decode, tau_wave, tau_own=None) -> tuple[np.ndarray, np.ndarray]:
    """Synchronised clients: (mean TTFT, mean TPOT) of one replica. The prompts of a cycle fill ``groups``
    full iterations (``tau_wave``); a client lives through each of them once per cycle: its own ``chunks``
    before its first token, the others while it decodes or waits, so its decode phase holds
    ``(groups - chunks) (O - 1) / O`` of them and pure decode iterations (``tau_decode``) otherwise. Its
    ``chunks`` iterations carry ``min(groups, chunks)`` budgets of prompt tokens (one chunk: ``tau_own``, the
    iteration of :func:`wave_own_tokens`; default ``tau_wave``). When the wave's prompts fit the requests' own
    chunks (``groups <= chunks``) the engine is idle when the wave returns (no wait); otherwise the groups come
    back one iteration apart, each while the group before it is prefilled: a request waits for a prefill
    iteration (a fraction ``(groups - chunks) / groups`` of them) or, the first group, a decode iteration."""
    o = np.asarray(output_len, dtype=float)
    k = np.asarray(chunks, dtype=float)
    o1 = np.maximum(o - 1.0, 1.0)
    heavy = np.clip((groups - k) * o1 / np.maximum(o, 1.0), 0.0, np.maximum(o - 1.0, 0.0))
    tpot = ((o1 - heavy) * tau_decode + heavy * tau_wave) / o1
    heavy_wait = np.clip((groups - k) / np.maximum(groups, 1e-300), 0.0, 1.0)
    wait = heavy_wait * tau_wave + (1.0 - heavy_wait) * tau_decode
    own = tau_wave if tau_own is None else np.where(k > 1, tau_wave, tau_own)
    # the k iterations carrying the prompt hold min(G, k) waves' worth of prefill (a lone long prompt: its own)
    ttft = np.where(groups > k, CLOSED_LOOP_WAIT_ITERATIONS * wait, 0.0) + k * tau_decode \
        + np.minimum(groups, k) * (own - tau_decode)
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
    """A run's first wave: ``clients`` prompts of ``input_len`` tokens sent together to an idle engine. Each
    iteration (vLLM's scheduler) decodes one token of every prompt already prefilled, out of the ``budget``
    tokens, and gives the rest to the waiting prompts in turn (chunked). Returns (the mean over the prompts
    of the iteration that carries each one's last token; the iterations of the wave). Without the decoders
    the ``j``-th prompt would end in iteration ``ceil(j input_len / budget)``. A fractional number of
    clients counts its last prompt by its fraction. (A wave longer than a request's output, where the first
    clients come back before it ends, is not followed.)"""
    n, p, b = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (clients, input_len, budget)))
    p, b = np.maximum(p, 1.0), np.maximum(b, 1.0)
    whole, target = np.floor(n), np.ceil(n)
    frac = n - whole
    sched = np.zeros(n.shape)  # prompt tokens scheduled so far
    done = np.zeros(n.shape)  # prompts prefilled (decoding from the next iteration on)
    total = np.zeros(n.shape)  # sum over prompts (weighted) of the iteration of their last token
    ends = np.zeros(n.shape)
    t = 0
    while np.any(done < target) and t < MAX_WAVE_ITERATIONS:
        t += 1
        going = done < target
        sched = np.where(going, sched + np.maximum(b - done, 1.0), sched)
        new = np.where(going, np.minimum(target, np.floor(sched / p * (1.0 + 1e-12))), done)
        total += (np.minimum(new, whole) - np.minimum(done, whole)) * t
        total += np.where((frac > 0) & (done <= whole) & (new > whole), frac * t, 0.0)
        ends = np.where(going & (new >= target), t, ends)
        done = new
    smooth = 0.5 * (p / b * (n + 1.0) + 1.0)  # rows beyond the cap: the mean of ceil(j input_len / budget)
    mean = np.where(done >= target, total / np.maximum(n, 1e-300), smooth)
    ends = np.where(done >= target, ends, np.ceil(n * p / b))
    return np.maximum(mean, 1.0), np.maximum(ends, 1.0)


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
