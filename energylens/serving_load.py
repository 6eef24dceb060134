"""Serving under a load: closed loop (``C`` concurrent clients) and open loop (Poisson arrivals at ``R`` req/s).

Both modes build on the continuous-batching steady state of :mod:`energylens.serving` (one engine
iteration decodes a token for every running request and prefills the prompts admitted meanwhile,
chunked to ``max_batched_tokens``; same coefficients) and on the KV-cache budget of
:mod:`energylens.kv_capacity`, which limits the requests a replica runs at once
(``slots = min(max_running, max_num_seqs)``). Every request has ``input_len`` prompt and
``output_len`` output tokens; the ``dp`` replicas share the load evenly. Per replica:

* a prompt needs ``k = ceil(input_len / (max_batched_tokens - running))`` prefill iterations
  (chunks); the last one emits the first token; ``output_len - 1`` decode iterations follow, so a
  request holds its slot for ``span = output_len + k - 1`` iterations and ``lambda = running / span``
  prompts are admitted per iteration (Little's law);
* the mean iteration ``tau`` at ``running`` requests is the mixture over the Poisson number of whole
  prompts an iteration takes (``_arrival_mixture``: chunked prefill takes a prompt whole, so most
  iterations only decode and a few carry prompts; :func:`energylens.serving.serving_parts` costs one
  iteration at the mean prefill, which is not the mean iteration where the step time is not linear in its
  tokens: a MoE's experts, a memory-bound step tipping into compute). ``TPOT`` (time per output
  token after the first, as benchmarks report it: ``(latency - TTFT) / (output_len - 1)``) is the mean
  iteration over a request's decode phase, i.e. ``tau``; its p90 adds the spread of the Poisson number
  of prompts sharing an iteration, averaged over the request's ``output_len - 1`` iterations;
* ``TTFT`` = wait for the next iteration boundary + the ``k`` iterations that carry the prompt
  (:func:`energylens.serving.iteration_cost` at the prompt plus, on average, ``lambda`` other prompts
  in the same iteration (Palm expectation), capped at the budget) + queueing for a slot.

**Closed loop** (``concurrency = C``: each client sends its next request when the previous one
finishes, ``n = C / dp`` clients per replica; how most serving benchmarks and the AIConfigurator
silicon runs work). A client's next request reaches the engine after the following iteration has
started (detokenising, streaming and the HTTP round trip take longer than launching the next step),
so it waits for the iteration in flight. Two arrangements of the clients:

* synchronised (default; a benchmark with fixed lengths whose clients start together): requests that
  finish in the same iteration come back together, so each cycle prefills the ``n`` prompts in
  ``G = max(1, n input_len / budget)`` full iterations (``tau_wave``, the whole budget, or all prompts
  when they fit in one). A client lives through each of them once per cycle: its own ``k`` chunks before
  its first token, the others during its decode (or wait), so
  ``TPOT = ((O - 1 - H) tau_decode + H tau_wave) / (O - 1)`` with ``H = (G - k) (O - 1) / O``,
  ``TTFT = wait + k tau_wave`` (no wait when ``G <= k``: the engine is idle when the wave returns);
* staggered (``staggered=True``; variable lengths spread the clients over the cycle): the steady
  state above with one iteration of wait.

A finite run (``num_requests``; ``energylens serve --num-requests``, the silicon validation's default)
starts with all clients together: its first wave queues through chunked prefill before the steady
state (:mod:`energylens.closed_loop`, where the arithmetic of both arrangements lives).

Clients beyond the slots queue (staggered either way): the engine then completes ``slots / S``
requests per second (``S = k tau_prefill + (output_len - 1) tau`` per slot) and a client's cycle is
``n / throughput``, so ``TTFT = max(tau + k tau_prefill, (n / slots) S - (output_len - 1) tau)``.
Running batch: ``min(n span / (span + wait), slots)`` (a waiting client is not in the batch).

**Open loop** (``request_rate = R``, Poisson arrivals, ``r = R / dp`` per replica). Queueing model: a
birth-death chain on the number of requests ``n`` in the replica (an M/M/c-type queue with
load-dependent service, ``c = slots``): arrivals at ``r``, completions at ``mu(m) = m / (span tau(m))``
with ``m = min(n, c)`` running, so ``p(n) ~ prod_j r / mu(min(j, c))`` with a geometric tail above
``c`` (stable while ``r < mu(c)``, the saturation rate). ``tau(m)`` is costed on a geometric grid of
``m`` and interpolated. Waiting for a slot follows from the chain (``L_q / r``, Little) scaled by
``(1 + cv^2) / 2`` with ``cv = 0`` (Allen-Cunneen: every request needs the same number of
iterations, so service is nearly deterministic, not exponential); tested against a discrete-event
simulation of the engine in ``tests/validation/test_serving_load.py``. An arrival waits for the running
iteration to end (half an iteration on average, none when the engine is idle). Power is the
time average over the chain's states (idle power when no request is in the replica); energy per
output token = power / (R x output_len). p90 TPOT is the 90th percentile over tokens of the
state's iteration time (an upper bound: a request averages over its own iterations).

Outputs (:class:`LoadArrays`, arrays broadcast over the load and length inputs): mean and p90
TTFT and TPOT, output tokens/s (all GPUs and per GPU), average power, J per output token, the mean
running batch and queue, the request rate, the KV budget, and masks ``fits`` (the weights and one
request fit in memory) and ``stable`` (open loop: the rate is below saturation). Where a mask is
false the latency figures are ``inf``. :func:`serve_load` is the scalar API behind
``energylens serve --concurrency/--request-rate``; it refuses configurations that do not fit or
are unstable, naming the numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from energylens.closed_loop import (
    CLOSED_LOOP_WAIT_ITERATIONS,
    check_num_requests,
    closed_loop_latency,
    closed_loop_running,
    finite_run,
    finite_run_p90,
    first_wave_iterations,
    first_wave_latency,
    wave_groups,
    wave_latency,
    wave_own_tokens,
)
from energylens.cost.power import idle_energy_j
from energylens.engines import VLLM
from energylens.errors import WorkloadError
from energylens.graph.model import Model
from energylens.hardware.profile import GPU
from energylens.kv_capacity import KVCapacity, kv_capacity, require_fit
from energylens.open_loop import MAX_STATES, OPEN_LOOP_WAIT_ITERATIONS, interp_states, open_loop_queue
from energylens.parallel.layout import Layout
from energylens.program import build_program
from energylens.serving import (
    MAX_BATCHED_TOKENS,
    CoefficientTable,
    ServingCoefficients,
    combine,
    iteration_cost,
    iteration_energy_j,
    iteration_time_s,
    layout_degree,
    poisson_median,
    resolve_coefficients,
    serving_parts,
    serving_routing,
)

Z90 = 1.2815515655446004  # standard normal 90th percentile
GRID_POINTS = 24  # open loop: running-batch grid on which the iteration is costed


@dataclass
class LoadArrays:
    """Serving figures under a load (arrays over the inputs; whole deployment unless noted)."""

    ttft_s: np.ndarray
    ttft_p90_s: np.ndarray
    tpot_s: np.ndarray
    tpot_p90_s: np.ndarray
    decode_step_latency_s: np.ndarray  # median iteration at the mean running batch (median ITL)
    output_tokens_per_s: np.ndarray
    output_tokens_per_s_per_gpu: np.ndarray
    request_rate_per_s: np.ndarray
    avg_power_w: np.ndarray
    energy_per_output_token_j: np.ndarray
    running_batch: np.ndarray  # mean running requests (the batch that actually runs)
    queued_requests: np.ndarray  # mean requests waiting for a slot
    max_running_per_replica: np.ndarray  # slots: KV memory and max_num_seqs
    fits: np.ndarray  # weights + workspace + one request fit in memory
    stable: np.ndarray  # open loop: the rate is below saturation (closed loop: always)
    saturation_request_rate_per_s: np.ndarray  # requests/s with every slot busy (whole deployment)
    capacity: KVCapacity
    num_gpus: int | np.ndarray


def _inputs(load, input_len, output_len, load_name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrs = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (load, input_len, output_len)))
    for name, v in zip((load_name, "input_len", "output_len"), arrs, strict=True):
        if v.size == 0 or np.any(~np.isfinite(v)) or np.any(v <= 0):
            raise WorkloadError(name, v.tolist() if v.ndim else float(v), "positive finite numbers")
    return arrs


def _slots(cap: KVCapacity, i, o, max_num_seqs) -> np.ndarray:
    slots = np.where(cap.free_bytes > 0, cap.max_running(i, o), 0.0)  # capacity fields may be arrays (planner)
    if max_num_seqs is not None:
        slots = np.minimum(slots, float(max_num_seqs))
    return slots


def _chunks(i, running, mbt: int, o=None) -> np.ndarray:
    """Prefill iterations of one prompt: the budget left by the decoding requests (a fraction
    ``(o - 1) / o`` of the running ones; all of them when ``o`` is not given)."""
    decoding = running if o is None else running * (np.asarray(o, dtype=float) - 1.0) / np.asarray(o, dtype=float)
    return np.maximum(1.0, np.ceil(i / np.maximum(mbt - decoding, 1.0)))


def _iteration_cost(model, gpu, layout, program, routing, running, x, i, span):
    """GPU cost of an iteration with ``running`` requests (per replica) and ``x`` prompt tokens (prompts of ``i``)."""
    pp = layout_degree(layout.pp)
    return iteration_cost(model, gpu, layout, running / pp, x / pp, i, i + span / 2.0, program, routing)


def _iteration_s(model, gpu, layout, program, routing, coeffs, running, x, i, span) -> np.ndarray:
    """Wall time of an iteration with ``running`` requests and ``x`` prompt tokens (prompts of ``i``)."""
    cost = _iteration_cost(model, gpu, layout, program, routing, running, x, i, span)
    return iteration_time_s(cost, coeffs, running, layout_degree(layout.pp))


def _prefill_iteration(model, gpu, layout, program, routing, coeffs, running, i, span, k, extra, mbt):
    """Mean time and prompt tokens of the ``k`` iterations that carry a prompt of ``i`` tokens, so that
    ``k x time`` is its whole prefill: ``k - 1`` full chunks (the budget the ``running`` requests leave) and
    a last one with the rest of the prompt plus ``extra`` other prompts (all of it when ``k = 1``), up to the
    budget."""
    budget = np.maximum(mbt - running, 1.0)
    whole = np.maximum(k - 1.0, 0.0)
    last = np.minimum(np.clip(i - whole * budget, 1.0, budget) + i * extra, budget)
    t_last = _iteration_s(model, gpu, layout, program, routing, coeffs, running, last, i, span)
    if not np.any(whole > 0):
        return t_last, last
    t_full = _iteration_s(model, gpu, layout, program, routing, coeffs, running, budget, i, span)
    return (whole * t_full + t_last) / k, (whole * budget + last) / k


def _arrival_mixture(model, gpu, layout, program, routing, coeffs, running, i, span, lam, mbt, parts=None):
    """Mean iteration time (s) and, given the steady state's ``parts`` (its GPU constants), mean energy (J, all
    GPUs; else None) when ``lam`` prompts (of ``i`` tokens) arrive per iteration, Poisson, each taken whole into
    the next iteration (up to the budget left by the ``running`` requests): the mixture of pure decode
    iterations and iterations carrying 1, 2, ... prompts, its energy summed like its time (so power = energy /
    time is the time average over the mixture). (The steady state of :mod:`energylens.serving` costs one
    iteration at the mean prefill, ``lam i`` tokens: not the mean iteration where a small prefill touches every
    expert of a MoE or tips a memory-bound decode step into compute.)"""
    from scipy.stats import poisson

    running, i, span, lam = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (running, i, span, lam)))
    lam = np.maximum(lam, 1e-12)
    budget = np.maximum(mbt - running, 1.0)
    fill = np.ceil(budget / np.maximum(i, 1.0))  # prompts that fill the budget
    own = np.clip(np.minimum(fill, poisson.ppf(1 - 1e-6, lam) + 1), 1, 64)  # each row's own last term
    m = np.arange(np.max(own, initial=1.0) + 1.0).reshape((-1,) + (1,) * lam.ndim)  # mixture axis first (layouts
    pm = np.where(m < own, poisson.pmf(m, lam), np.where(m == own, poisson.sf(own - 1, lam), 0.0))  # behind it)
    cost = _iteration_cost(model, gpu, layout, program, routing, running, np.minimum(m * i, budget), i, span)
    t = np.sum(pm * iteration_time_s(cost, coeffs, running, layout_degree(layout.pp)), axis=0)
    return t, None if parts is None else np.sum(pm * iteration_energy_j(parts, cost, coeffs, running), axis=0)


def _setup(model, gpu, layout, coefficients, max_batched_tokens, max_num_seqs, gpu_memory_utilization, capacity):
    if isinstance(max_batched_tokens, bool) or not isinstance(max_batched_tokens, (int, np.integer)) \
            or max_batched_tokens < 1:
        raise WorkloadError("max_batched_tokens", max_batched_tokens, "a positive integer")
    if max_num_seqs is not None and (isinstance(max_num_seqs, bool) or not isinstance(max_num_seqs, (int, np.integer))
                                     or max_num_seqs < 1):
        raise WorkloadError("max_num_seqs", max_num_seqs, "a positive integer (or none: memory limits the batch)")
    program = build_program(model, layout)
    cap = capacity or kv_capacity(model, gpu, layout, gpu_memory_utilization=gpu_memory_utilization,
                                  max_batched_tokens=int(max_batched_tokens), program=program)
    return program, cap, resolve_coefficients(coefficients, gpu.key)


def _under_limit(fn, model, gpu, layout, load, input_len, output_len, limits_w=None, **kw) -> LoadArrays:
    """A load mode on a GPU with a power limit / locked clock: one SM clock held per iteration, the
    highest whose mean power per GPU fits (:func:`energylens.cost.clock_hold.hold_clock`); every figure
    is interpolated between the two clock levels around the limit."""
    from energylens.cost.clock_hold import hold_clock

    names = [f.name for f in fields(LoadArrays) if f.name not in ("capacity", "num_gpus", "fits", "stable",
                                                                  "max_running_per_replica")]

    def derive(r: LoadArrays, v: dict, clock_mhz) -> LoadArrays:
        return replace(r, **{k: np.where(np.isfinite(x), x, np.inf) for k, x in v.items()})

    with np.errstate(invalid="ignore"):
        return hold_clock(gpu, lambda g: fn(model, g, layout, load, input_len, output_len, **kw),
                          lambda r: r.avg_power_w / r.num_gpus, names, derive, limits_w)


def serve_closed_loop_arrays(model: Model, gpu: GPU, layout: Layout, concurrency, input_len, output_len, *,
                             limits_w=None, **kw) -> LoadArrays:
    """Closed loop (see :func:`_closed_loop`); a GPU with a power limit or locked clock holds one clock
    (``limits_w``: a list of power limits, W per GPU, costed together: a list of answers)."""
    if gpu.operating is not None or limits_w is not None:
        return _under_limit(_closed_loop, model, gpu, layout, concurrency, input_len, output_len, limits_w, **kw)
    return _closed_loop(model, gpu, layout, concurrency, input_len, output_len, **kw)


def serve_open_loop_arrays(model: Model, gpu: GPU, layout: Layout, request_rate, input_len, output_len,
                           **kw) -> LoadArrays:
    """Open loop (see :func:`_open_loop`); a GPU with a power limit or locked clock holds one clock."""
    if gpu.operating is not None:
        return _under_limit(_open_loop, model, gpu, layout, request_rate, input_len, output_len, **kw)
    return _open_loop(model, gpu, layout, request_rate, input_len, output_len, **kw)


def _closed_loop(model: Model, gpu: GPU, layout: Layout, concurrency, input_len, output_len, *,
                             coefficients: ServingCoefficients | CoefficientTable | None = None,
                             max_batched_tokens: int = MAX_BATCHED_TOKENS, max_num_seqs: int | None = None,
                             gpu_memory_utilization: float = VLLM.gpu_memory_utilization, routing=None,
                             capacity: KVCapacity | None = None, staggered: bool = False,
                             num_requests=None) -> LoadArrays:
    """Closed loop: ``concurrency`` clients (whole deployment) each with one request in flight (see the
    module docstring). ``staggered=False`` (default): the clients start together and, all requests
    having the same lengths, stay synchronised (a benchmark with fixed lengths); ``True``: their
    requests are spread evenly over the cycle (variable lengths, real traffic). Clients beyond the
    slots queue (staggered either way). ``num_requests`` (whole deployment, >= ``concurrency``; may be an
    array): a finite run of that many requests, whose first wave starts together
    (:mod:`energylens.closed_loop`) before the steady state of the chosen arrangement; TTFT and TPOT are
    its means over the requests, the other figures those of the steady state. Arrays of ``concurrency``,
    ``input_len``, ``output_len`` (and ``num_requests``) broadcast; ``layout`` is a valid scalar layout. Coefficients default to the shipped ones."""
    c_in, i, o = _inputs(concurrency, input_len, output_len, "concurrency")
    finite = num_requests is not None
    if finite:
        n_req = check_num_requests(num_requests, c_in)
        c_in, i, o, n_req = np.broadcast_arrays(c_in, i, o, n_req)
    program, cap, coeffs = _setup(model, gpu, layout, coefficients, max_batched_tokens, max_num_seqs,
                                  gpu_memory_utilization, capacity)
    routing = serving_routing(routing, coeffs, model)  # the user's, else the fitted skew
    dp, mbt = layout_degree(layout.dp), int(max_batched_tokens)  # the layout may hold arrays (a planner's layouts)
    slots = _slots(cap, i, o, max_num_seqs)
    fits = slots >= 1
    lim = np.where(fits, slots, np.inf)  # costed anyway where nothing fits (figures masked below)
    n = c_in / dp
    queued = n > lim
    k = _chunks(i, np.minimum(n, lim), mbt, o)
    span = o + k - 1.0
    budget = np.maximum(mbt - np.minimum(n, lim) * (o - 1.0) / o, 1.0)
    groups = wave_groups(n, i, budget)
    waves = ~queued & (not staggered)
    running = np.where(waves, closed_loop_running(n, span, lim, (groups > k) * CLOSED_LOOP_WAIT_ITERATIONS),
                       closed_loop_running(n, span, lim))
    parts = serving_parts(model, gpu, layout, running * dp, i, span, max_batched_tokens=mbt, routing=routing)
    arr = combine(parts, coeffs)
    tau = arr.mean_iteration_s
    lam = running / span
    tau_p, x_p = _prefill_iteration(model, gpu, layout, program, routing, coeffs, running, i, span, k, lam, mbt)
    from scipy.stats import poisson

    q90 = poisson.ppf(0.9, np.maximum(lam, 1e-12))
    tau_p90, _ = _prefill_iteration(model, gpu, layout, program, routing, coeffs, running, i, span, k, q90, mbt)
    # staggered: prompts come whole (Poisson per iteration), not spread thin over every iteration
    tau, e_mix = _arrival_mixture(model, gpu, layout, program, routing, coeffs, running, i, span, lam, mbt, parts)
    ttft_s, rate_s = closed_loop_latency(n, o, k, lim, tau, tau_p)
    # TPOT spread (staggered): Poisson prompts per iteration (slope of iteration time in prefill tokens)
    x_med = np.minimum(poisson_median(lam) * i, np.maximum(mbt - running, 1.0))
    dx = x_p - x_med
    slope = np.where(dx > 0, (tau_p - arr.decode_step_latency_s) / np.where(dx > 0, dx, 1.0), 0.0)
    sigma = np.maximum(slope, 0.0) * i * np.sqrt(lam) * (i * (1.0 + lam) <= np.maximum(mbt - running, 1.0))
    tpot_p90_s = tau + Z90 * sigma / np.sqrt(np.maximum(o - 1.0, 1.0))
    # synchronised waves: pure decode iterations and full prefill iterations of the whole batch
    nb = np.minimum(n, lim)
    if staggered:  # no waves: the wave iterations are never read (waves is all false)
        tau_dec = tau_w = tau_own = tau
    else:
        tau_dec = _iteration_s(model, gpu, layout, program, routing, coeffs, nb, np.zeros_like(nb), i, span)
        x_w = np.minimum(nb * i, budget)
        tau_w = _iteration_s(model, gpu, layout, program, routing, coeffs, nb, x_w, i, span)
        tau_own = _iteration_s(model, gpu, layout, program, routing, coeffs, nb, wave_own_tokens(nb, i, budget), i,
                               span)
    ttft_w, tpot_w = wave_latency(o, k, groups, tau_dec, tau_w, tau_own)
    ttft = np.where(waves, ttft_w, ttft_s)
    ttft_p90 = np.where(waves, ttft_w, ttft_s + k * (tau_p90 - tau_p))
    tpot = np.where(waves, tpot_w, tau)
    tpot_p90 = np.where(waves, tpot_w, tpot_p90_s)
    median = np.where(waves, np.where(np.clip(groups - k, 0.0, None) < 0.5 * o, tau_dec, tau_w),
                      arr.decode_step_latency_s)
    rate = np.where(waves, n / (ttft + (o - 1.0) * tpot), rate_s) * dp  # requests/s, whole deployment
    if finite:  # the first wave: every client at once to an idle engine, prefilled in turn (full budgets)
        first_iter, wave_iters = first_wave_iterations(nb, i, mbt)
        tau_1 = _iteration_s(model, gpu, layout, program, routing, coeffs, np.maximum(nb / 2.0, 1.0),
                             np.minimum(nb * i, mbt), i, span)  # on average half the wave decodes meanwhile
        ttft_1, tpot_1 = first_wave_latency(o, first_iter, wave_iters, tau_1, tpot)
        frac = np.where(queued, 0.0, c_in / n_req)  # beyond the slots the queue, not the wave, sets the TTFT
        ttft_p90 = finite_run_p90(frac, wave_iters, tau_1, ttft_p90)
        ttft, tpot = finite_run(frac, ttft_1, ttft), finite_run(frac, tpot_1, tpot)
        tpot_p90 = np.maximum(tpot_p90, tpot)  # (the wave's prefills lengthen the run's mean TPOT)
    # saturation: every slot busy (the open loop's service rate mu(c))
    lim_f = np.where(fits, lim, 1.0)
    span_c = o + _chunks(i, lim_f, mbt, o) - 1.0
    tau_c, _ = _arrival_mixture(model, gpu, layout, program, routing, coeffs, lim_f, i, span_c, lim_f / span_c, mbt)
    tokens = rate * o
    # synchronised waves: the mean-load iteration's power; staggered: the time average over the mixture
    power = np.where(waves, arr.avg_power_w, e_mix / tau)
    inf = np.where(fits, 1.0, np.inf)
    return LoadArrays(
        ttft_s=ttft * inf, ttft_p90_s=ttft_p90 * inf, tpot_s=tpot * inf, tpot_p90_s=tpot_p90 * inf,
        decode_step_latency_s=median * inf, output_tokens_per_s=tokens * fits,
        output_tokens_per_s_per_gpu=tokens / arr.num_gpus * fits, request_rate_per_s=rate * fits,
        avg_power_w=power, energy_per_output_token_j=power / tokens * inf, running_batch=running * dp * fits,
        queued_requests=np.maximum(n - lim, 0.0) * dp * fits, max_running_per_replica=slots, fits=fits,
        stable=np.ones_like(fits), saturation_request_rate_per_s=lim_f / (span_c * tau_c) * dp * fits,
        capacity=cap, num_gpus=arr.num_gpus)


def _open_loop(model: Model, gpu: GPU, layout: Layout, request_rate, input_len, output_len, *,
                           coefficients: ServingCoefficients | CoefficientTable | None = None,
                           max_batched_tokens: int = MAX_BATCHED_TOKENS, max_num_seqs: int | None = None,
                           gpu_memory_utilization: float = VLLM.gpu_memory_utilization, routing=None,
                           capacity: KVCapacity | None = None) -> LoadArrays:
    """Open loop: Poisson arrivals at ``request_rate`` requests/s (whole deployment); see the module
    docstring for the queueing model. Arrays broadcast; ``layout`` is a valid scalar layout."""
    r_in, i, o = _inputs(request_rate, input_len, output_len, "request_rate")
    program, cap, coeffs = _setup(model, gpu, layout, coefficients, max_batched_tokens, max_num_seqs,
                                  gpu_memory_utilization, capacity)
    routing = serving_routing(routing, coeffs, model)  # the user's, else the fitted skew
    dp, mbt = int(layout.dp), int(max_batched_tokens)
    slots = _slots(cap, i, o, max_num_seqs)
    fits = slots >= 1
    c = np.clip(np.where(fits, slots, 1.0), 1.0, MAX_STATES)
    r = r_in / dp
    # iteration time and power on a geometric grid of running batches 1..c
    m_grid = np.round(c[..., None] ** np.linspace(0.0, 1.0, GRID_POINTS))
    ig, og = i[..., None], o[..., None]
    span_g = og + _chunks(ig, m_grid, mbt, og) - 1.0
    parts = serving_parts(model, gpu, layout, m_grid * dp, ig, span_g, max_batched_tokens=mbt, routing=routing)
    arr = combine(parts, coeffs)
    tau_g, e_g = _arrival_mixture(model, gpu, layout, program, routing, coeffs, m_grid, ig, span_g, m_grid / span_g,
                                  mbt, parts)
    q = open_loop_queue(r, m_grid, tau_g, span_g, c)
    p, m, tail = q["p"], q["m"], q["tail"]
    stable = q["stable"] & fits
    power_n = interp_states(m_grid, e_g / tau_g / dp, m)  # one replica, the time average over the mixture
    power_c = np.take_along_axis(power_n, (c - 1).astype(int)[..., None], axis=-1)[..., 0]
    idle_w = idle_energy_j(gpu, arr.num_gpus / dp)  # a replica with no request waits at idle power (W)
    power = (q["p0"] * idle_w + np.sum(p * power_n, axis=-1) + tail * power_c) * dp
    median_n = interp_states(m_grid, arr.decode_step_latency_s, m)
    busy = np.maximum(np.sum(p, axis=-1) + tail, 1e-300)
    med_iter = (np.sum(p * median_n, axis=-1) + tail * median_n[..., -1]) / busy
    # the prompt's own prefill iterations at the mean running batch, with on average lambda other prompts
    run = np.maximum(q["running"], 1.0)
    k = _chunks(i, run, mbt, o)
    span = o + k - 1.0
    lam = r * q["tpot_s"]
    from scipy.stats import poisson

    tau_p, _ = _prefill_iteration(model, gpu, layout, program, routing, coeffs, run, i, span, k, lam, mbt)
    tau_p90, _ = _prefill_iteration(model, gpu, layout, program, routing, coeffs, run, i, span, k,
                                    poisson.ppf(0.9, np.maximum(lam, 1e-12)), mbt)
    ttft = q["queue_s"] + q["residual_s"] + k * tau_p
    ttft_p90 = q["queue_p90_s"] + 0.9 / OPEN_LOOP_WAIT_ITERATIONS * q["residual_s"] + k * tau_p90  # uniform residual
    tokens = r_in * o
    bad = np.where(stable, 1.0, np.inf)
    return LoadArrays(
        ttft_s=ttft * bad, ttft_p90_s=ttft_p90 * bad, tpot_s=q["tpot_s"] * bad, tpot_p90_s=q["tpot_p90_s"] * bad,
        decode_step_latency_s=med_iter * bad, output_tokens_per_s=tokens * stable,
        output_tokens_per_s_per_gpu=tokens / arr.num_gpus * stable, request_rate_per_s=r_in * stable,
        avg_power_w=power, energy_per_output_token_j=power / tokens * bad, running_batch=q["running"] * dp,
        queued_requests=q["lq"] * dp * stable, max_running_per_replica=slots, fits=fits, stable=stable,
        saturation_request_rate_per_s=q["mu_c"] * dp * fits, capacity=cap, num_gpus=arr.num_gpus)


@dataclass(frozen=True)
class LoadResult:
    """One prediction under a load (closed or open loop). Units in every name; whole deployment."""

    mode: str  # "closed_loop" | "open_loop"
    model: str
    gpu: str
    dtype: str
    layout: dict
    num_gpus: int
    concurrency: float | None
    request_rate_per_s: float
    input_len: float
    output_len: float
    ttft_s: float
    ttft_p90_s: float
    tpot_s: float
    tpot_p90_s: float
    output_tokens_per_s: float
    output_tokens_per_s_per_gpu: float
    avg_power_w: float
    energy_per_output_token_j: float
    running_batch: float
    queued_requests: float
    max_running_requests: float
    saturation_request_rate_per_s: float
    batch: float  # = running_batch (the steady-state keys below are at this batch)
    decode_step_latency_s: float
    mean_iteration_s: float
    prefill_tokens_per_iteration: float
    gpu_time_s: float
    host_time_s: float
    kv_cache: dict
    coefficients: dict
    staggered: bool = False
    num_requests: float | None = None  # closed loop: a finite run of this many requests (None: steady state)
    interval: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    operating_point: dict = field(default_factory=dict)  # power_limit_w, default_power_limit_w, sm_clock_mhz
    footprint: dict = field(default_factory=dict)  # energylens.carbon.Footprint.per_token_floats

    def to_dict(self) -> dict:
        d = asdict(self)
        d["notes"] = list(self.notes)
        return d


def serve_load(model: str | Model, gpu: str | GPU, *, concurrency: float | None = None,
               request_rate: float | None = None, input_len: float, output_len: float, num_gpus: int | None = None,
               tp: int = 1, ep: int = 1, dp: int = 1, pp: int = 1, dtype: str | None = None, gpus_per_node: int = 8,
               max_batched_tokens: int = MAX_BATCHED_TOKENS, max_num_seqs: int | None = None,
               gpu_memory_utilization: float = VLLM.gpu_memory_utilization, staggered: bool = False,
               coefficients: ServingCoefficients | CoefficientTable | None = None, interval_level: float = 0.8,
               routing: str | None = None, power_limit_w: float | None = None, sm_clock_mhz: float | None = None,
               footprint=None, kv_cache_dtype: str | None = None,
               activation_dtype: str | None = None, num_requests: float | None = None) -> LoadResult:
    """Serving under ``concurrency`` closed-loop clients or Poisson arrivals at ``request_rate`` req/s
    (exactly one of them). Refuses (``LayoutError``/``WorkloadError`` naming the numbers) a deployment
    whose weights or single request do not fit in memory, a request longer than the model's context, and
    an open-loop rate at or above saturation. ``num_requests`` (closed loop): a finite run of that many
    requests whose first wave starts together (default: the steady state). Precision flags as in
    ``energylens.predict``."""
    from energylens.pipeline import check_context, prepare
    from energylens.predict import operating_point
    from energylens.serving import resolve_layout, serve_arrays

    if (concurrency is None) == (request_rate is None):
        raise WorkloadError("load", {"concurrency": concurrency, "request_rate": request_rate},
                            "exactly one of concurrency (closed loop) or request_rate (open loop)")
    load_name, load = ("concurrency", concurrency) if concurrency is not None else ("request_rate", request_rate)
    for name, v in ((load_name, load), ("input_len", input_len), ("output_len", output_len)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v) \
                or v <= 0:
            raise WorkloadError(name, v, "a positive number")
    if num_requests is not None:
        if concurrency is None:
            raise WorkloadError("num_requests", num_requests, "only with concurrency (a closed-loop run)")
        check_num_requests(num_requests, concurrency)
    m, g = prepare(model, gpu, dtype, power_limit_w=power_limit_w, sm_clock_mhz=sm_clock_mhz,
                   kv_cache_dtype=kv_cache_dtype, activation_dtype=activation_dtype)
    check_context(m, float(input_len) + float(output_len), "input_len + output_len")
    lay, notes = resolve_layout(m, num_gpus=num_gpus, tp=tp, ep=ep, dp=dp, pp=pp, gpus_per_node=gpus_per_node)
    if concurrency is not None and concurrency < dp * pp:
        raise WorkloadError("concurrency", concurrency, f"at least dp x pp = {dp * pp} (one request per replica "
                            "and stage)")
    coeffs = resolve_coefficients(coefficients, g.key)
    cap = kv_capacity(m, g, lay, gpu_memory_utilization=gpu_memory_utilization,
                      max_batched_tokens=int(max_batched_tokens) if isinstance(max_batched_tokens, (int, np.integer))
                      else 1)
    require_fit(cap, gpu=g.key, layout=lay, input_len=float(input_len), output_len=float(output_len))
    kw = dict(coefficients=coeffs, max_batched_tokens=max_batched_tokens, max_num_seqs=max_num_seqs,
              gpu_memory_utilization=gpu_memory_utilization, routing=routing, capacity=cap)
    if concurrency is not None:
        arr = serve_closed_loop_arrays(m, g, lay, concurrency, input_len, output_len, staggered=staggered,
                                       num_requests=num_requests, **kw)
    else:
        arr = serve_open_loop_arrays(m, g, lay, request_rate, input_len, output_len, **kw)

    def f(x) -> float:
        return float(np.asarray(x).reshape(-1)[0])

    if not bool(np.asarray(arr.stable).reshape(-1)[0]):
        raise WorkloadError("request_rate", request_rate,
                            f"below the saturation rate {f(arr.saturation_request_rate_per_s):.3g} requests/s of "
                            f"{lay.dp} replica(s) with {f(arr.max_running_per_replica):.0f} running requests each "
                            "(KV memory / max_num_seqs): the queue would grow without bound")
    notes = list(notes)
    if f(arr.queued_requests) > 0.01:
        notes.append(f"{f(arr.queued_requests):.1f} requests wait on average for one of "
                     f"{f(arr.max_running_per_replica) * lay.dp:.0f} slots (KV memory "
                     f"{cap.kv_tokens:.0f} tokens per replica" + (f", max_num_seqs {max_num_seqs}" if max_num_seqs
                                                                   else "") + ")")
    running = max(f(arr.running_batch), float(lay.dp * lay.pp))
    steady = serve_arrays(m, g, lay, running, input_len, output_len, coefficients=coeffs,
                          max_batched_tokens=int(max_batched_tokens), routing=routing)
    res = LoadResult(
        mode="closed_loop" if concurrency is not None else "open_loop", model=m.hf_id or m.name, gpu=g.key,
        dtype=m.weight_dtype, layout=lay.to_dict(), num_gpus=arr.num_gpus,
        concurrency=None if concurrency is None else float(concurrency), request_rate_per_s=f(arr.request_rate_per_s),
        input_len=float(input_len), output_len=float(output_len), ttft_s=f(arr.ttft_s), ttft_p90_s=f(arr.ttft_p90_s),
        tpot_s=f(arr.tpot_s), tpot_p90_s=f(arr.tpot_p90_s), output_tokens_per_s=f(arr.output_tokens_per_s),
        output_tokens_per_s_per_gpu=f(arr.output_tokens_per_s_per_gpu), avg_power_w=f(arr.avg_power_w),
        energy_per_output_token_j=f(arr.energy_per_output_token_j), running_batch=f(arr.running_batch),
        queued_requests=f(arr.queued_requests), max_running_requests=f(arr.max_running_per_replica) * lay.dp,
        saturation_request_rate_per_s=f(arr.saturation_request_rate_per_s), batch=f(arr.running_batch),
        decode_step_latency_s=f(arr.decode_step_latency_s), mean_iteration_s=f(steady.mean_iteration_s),
        prefill_tokens_per_iteration=f(steady.prefill_tokens_per_iteration), gpu_time_s=f(steady.gpu_time_s),
        host_time_s=f(steady.host_time_s), kv_cache=cap.to_dict(), coefficients=coeffs.to_dict(),
        staggered=bool(staggered) and concurrency is not None, notes=tuple(notes), operating_point=operating_point(g),
        num_requests=None if num_requests is None else float(num_requests))
    from energylens.carbon import Footprint

    res = replace(res, footprint=(footprint or Footprint()).per_token_floats(res.energy_per_output_token_j,
                                                                              res.output_tokens_per_s_per_gpu))
    from energylens.intervals import interval_for

    iv = interval_for(m, g.key, {"decode_step_latency_s": res.decode_step_latency_s, "avg_power_w": res.avg_power_w,
                                 "energy_per_output_token_j": res.energy_per_output_token_j}, interval_level)
    if "decode_step_latency_s" in iv:  # TPOT is a mean inter-token latency: the ITL residuals apply
        tp_iv = iv["decode_step_latency_s"]
        scale = res.tpot_s / res.decode_step_latency_s
        iv["tpot_s"] = {**tp_iv, "low": tp_iv["low"] * scale, "high": tp_iv["high"] * scale}
    return replace(res, interval=iv)
