"""Serving-level prediction: a vLLM-style continuous-batching steady state on the per-op cost model.

Steady state of one data-parallel replica at a mean running batch ``B`` (``batch / dp``), mean
prompt length ``P`` and mean output length ``O``:

* every engine iteration decodes one token for each of the ``B`` running requests;
* requests finish at ``lambda = B / O`` per iteration on average and as many new ones are admitted,
  so an iteration also prefills ``lambda * P`` prompt tokens on average (chunked prefill, at most
  ``max_batched_tokens - B`` per iteration: vLLM ``max-num-batched-tokens``);
* the iteration is one forward pass over all its tokens. Token-wise kernels (GEMMs, norms, RoPE,
  KV writes, element-wise ops) and the collectives see ``B + prefill`` tokens; the attention
  kernels read each running request's KV cache at its mean context ``P + O / 2`` and compute causal
  attention over the new prompts (``lambda`` prompts of ``P`` tokens); the LM head and the sampler
  run for the ``B`` decoded tokens.

Each of the three parts is costed by :func:`energylens.cost.phase.evaluate_phase` on the same
program (same sharding, derived collectives, roofline and power cap) and the kernels are taken
from the part they belong to (decode and prefill attention share one kernel launch).

Four serving coefficients (:mod:`energylens.serving_coefficients`, the same for every model; fitted once by
``tools/fit_serving.py`` on development data; values, units and what they were fitted on are in
``energylens/data/validation/serving_coefficients.yaml``). The two overheads describe the serving
platform (host CPU, driver, the engine's kernels for that GPU architecture), so a platform with
development data (``platforms:`` in the file: H100 and B200 nodes) has its own pair; every other GPU
uses the pooled pair fitted on all platforms together (:class:`CoefficientTable`). The active power
fraction and the routing skew are shared by all GPUs:

* ``iteration_overhead_s``: host time per iteration that the GPUs do not overlap (scheduling,
  input preparation, output processing); the GPUs wait at idle power;
* ``per_sequence_overhead_s``: GPU time per running request per iteration that the per-op graph
  does not describe, costed at the iteration's mean kernel power (the measured power while it runs is
  far above idle, and it does not scale with the vocabulary: ``tools/serving_excess.py``);
* ``active_power_fraction``: while a GPU executes kernels its static power is
  ``idle_power + active_power_fraction * (power_limit - idle_power)`` rather than the
  context-held idle power (clocks up, SMs issuing while memory-bound); the GPU never draws more
  than its power limit;
* ``routing_skew``: the Zipf exponent of expert popularity of a mixture-of-experts model when the
  user names no routing (``zipf:S``; 0 is uniform): a trained router's skew makes a decode step hit
  fewer distinct experts than uniform routing. An explicit ``routing`` always wins.

Outputs (per deployment, all ``dp`` replicas together):

* ``decode_step_latency_s``: the median inter-token latency a client sees. A token's latency is
  the time of the iteration that produced it; prompts arrive Poisson(``lambda``) per iteration, so
  the median iteration carries the median number of new prompts (none when ``lambda < ln 2``);
* ``mean_iteration_s``: the mean iteration (mean prefill load); throughput ``B dp / mean_iteration_s``;
* ``avg_power_w``: energy of a mean iteration over all GPUs / its time (idle waits included);
* ``energy_per_output_token_j``: that energy / the ``B dp`` tokens the iteration produces
  (prefill work of the interleaved prompts included).

Pipeline parallelism (no measurements to check it): ``pp`` micro-batches of ``B / pp`` are in
flight with every stage busy; a token waits for its micro-batch to cross all stages.

Every function takes NumPy arrays of ``batch``, ``input_len`` and ``output_len`` (broadcast
together): one call costs a whole sweep.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from energylens.cost.phase import evaluate_phase
from energylens.cost.power import above_idle_energy_j, idle_energy_j, serving_gpu_energy_j
from energylens.cost.subprogram import split_kernels
from energylens.engines import VLLM
from energylens.errors import LayoutError, SpecError, WorkloadError
from energylens.graph.model import Model, is_moe
from energylens.hardware.profile import GPU
from energylens.parallel.layout import Layout, check_layout
from energylens.program import build_program
from energylens.serving_coefficients import (  # noqa: F401  (re-exported: the serving API)
    COEFFICIENT_NAMES,
    OVERHEAD_NAMES,
    CoefficientTable,
    ServingCoefficients,
    bias_balanced,
    data_file,
    load_coefficient_table,
    load_coefficients,
    resolve_coefficients,
    serving_routing,
)
from energylens.serving_fold import fold_call

MAX_BATCHED_TOKENS = VLLM.max_batched_tokens  # energylens/data/engines/vllm.yaml
DEFAULT_INTERVAL_LEVEL = 0.8
@dataclass
class ServingArrays:
    """Steady-state serving figures, arrays broadcast over the batch/length inputs."""

    decode_step_latency_s: np.ndarray  # median inter-token latency (median iteration)
    mean_iteration_s: np.ndarray  # mean iteration time (sets throughput)
    avg_power_w: np.ndarray  # all GPUs of the deployment
    energy_per_output_token_j: np.ndarray
    output_tokens_per_s: np.ndarray
    prefill_tokens_per_iteration: np.ndarray  # per replica, mean
    gpu_time_s: np.ndarray  # GPU-busy part of a mean iteration (kernels, collectives, per-sequence work)
    host_time_s: np.ndarray  # host part of an iteration (GPUs idle)
    energy_per_iteration_j: np.ndarray  # all GPUs, mean iteration
    num_gpus: int | np.ndarray  # an array for a layout of arrays (sweeps)
    sm_clock_mhz: np.ndarray | None = None  # the clock held under a power limit / lock (None: free, default)


@dataclass
class IterationCost:
    """Per-rank GPU time and energy of one forward pass (all layers), split by kind.

    ``kernel_s`` is the pace (the busiest expert-parallel rank for MoE models); ``kernel_j`` is the
    mean rank's kernel energy plus idle power while it waits for the busiest rank; ``active_s`` is
    the mean rank's kernel time (when its SMs are busy)."""

    kernel_s: np.ndarray
    kernel_j: np.ndarray
    collective_s: np.ndarray
    collective_j: np.ndarray
    active_s: np.ndarray
    active_scaled_s: np.ndarray | None = None  # active_s weighted by v^2 f / f_max of each kernel (cost.dvfs)
    decode_parts: tuple | None = field(default=None, repr=False)  # decode attention's (time, energy, scaled time)

    @property
    def time_s(self) -> np.ndarray:
        return self.kernel_s + self.collective_s

    @property
    def energy_j(self) -> np.ndarray:
        return self.kernel_j + self.collective_j


def _attention_ops(model: Model) -> frozenset[str]:
    """Names of ops that read the key/value sequence (dimension ``s``): the attention kernels."""
    return frozenset(op.name for op in model.all_ops() if "s" in op.dims)


def poisson_median(lam) -> np.ndarray:
    """Median of Poisson(``lam``) (0 for ``lam < ln 2``), vectorised."""
    from scipy.stats import poisson

    lam = np.asarray(lam, dtype=float)
    return np.where(lam > 0, poisson.ppf(0.5, np.maximum(lam, 1e-12)), 0.0)


def _kernels(pa, attention: set[str], want_attention: bool, records=None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Time, energy, launches and clock-scaled time (sum of latency x v^2 f / f_max, ``cost.dvfs``)."""
    t = np.asarray(0.0)
    e = np.asarray(0.0)
    ts = np.asarray(0.0)
    launches = np.asarray(0.0)
    for _, r in (pa.kernels if records is None else records):
        if any(name in attention for name in r.ops) == want_attention:
            lat = pa.reduce(r.cost.latency_s)
            t = t + lat * r.count
            e = e + pa.reduce(r.cost.energy_j) * r.count
            scale = r.cost.dynamic_scale
            ts = ts + (lat if isinstance(scale, float) and scale == 1.0 else pa.reduce(r.cost.latency_s * scale)) \
                * r.count
            launches = launches + r.count
    return t, e, launches, ts


def _collectives(pa, pp: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(0.0)
    e = np.asarray(0.0)
    for _, c in pa.collectives:
        t = t + pa.reduce(c.latency_s) * c.count
        e = e + pa.reduce(c.energy_j_per_gpu) * c.count
    if pa.p2p is not None and np.any(pp > 1):  # pipeline boundaries: both GPUs of each pair, per tp column
        t = t + pa.p2p_time_s
        e = e + np.asarray(pa.reduce(pa.p2p.energy_j_per_gpu)) * 2.0 * (pp - 1)
    return t, e


def _token_wise(model: Model, gpu: GPU, layout: Layout, rest_program, b, t, ctx, routing, attention) -> tuple:
    """Time, energy, active time and clock-scaled time of the token-wise kernels, and the collectives' time and
    energy, of ``b`` sequences carrying ``t`` tokens each (``ctx``: their context, read only by attention)."""
    mixed = evaluate_phase(model, gpu, layout, rest_program, {"b": b, "t": t, "s": ctx}, np.asarray(1.0), decode=False,
                           microbatches=1, routing=routing)
    t_rest, e_rest, _, s_rest = _kernels(mixed, attention, want_attention=False)
    a_rest = t_rest
    if mixed.kernels_energy is not None and mixed.moe is not None:
        # MoE: the busiest expert-parallel rank sets the pace (kernels); energy is the mean rank's
        # kernels (kernels_energy) plus idle power while it waits for the busiest rank
        a_rest, e_rest, _, s_rest = _kernels(mixed, attention, want_attention=False, records=mixed.kernels_energy)
        e_rest = e_rest + idle_energy_j(gpu, np.maximum(t_rest - a_rest, 0.0))
        s_rest = s_rest * np.minimum(1.0, t_rest / np.maximum(a_rest, 1e-300))
        a_rest = np.minimum(a_rest, t_rest)
    t_coll, e_coll = _collectives(mixed, layout_degree(layout.pp))
    return t_rest, e_rest, a_rest, s_rest, t_coll, e_coll


def _decode_attention(model: Model, gpu: GPU, layout: Layout, att_program, b, ctx, routing, attention) -> tuple:
    """Time, energy and clock-scaled time of the attention kernels for ``b`` sequences of one query token at
    context ``ctx``."""
    dec = evaluate_phase(model, gpu, layout, att_program, {"b": b, "t": np.ones_like(b), "s": ctx}, np.asarray(1.0),
                         decode=False, microbatches=1, routing=routing)
    t_dec, e_dec, _, s_dec = _kernels(dec, attention, want_attention=True)
    return t_dec, e_dec, s_dec


def iteration_cost(model: Model, gpu: GPU, layout: Layout, batch_per_replica, prefill_tokens, input_len,
                   context_len, program=None, routing=None, decode_attention: tuple | None = None) -> IterationCost:
    """Per-rank GPU time (s) and energy (J) of one engine iteration: ``batch_per_replica`` decode
    tokens at mean KV context ``context_len`` plus ``prefill_tokens`` prompt tokens (whole prompts of
    ``input_len``), through all layers. Arrays broadcast. MoE models bind tokens per expert from
    ``routing`` (default uniform): the busiest expert-parallel rank sets the pace. ``decode_attention``: the
    decode-attention part of an earlier call with the same batch, context, layout and program (its time,
    energy and clock-scaled time, :attr:`IterationCost.decode_parts`), which does not depend on the prefill."""
    program = program or build_program(model, layout)
    # not broadcast together: each kernel is costed over the axes its own sizes vary on (sweeps)
    b, x, p, ctx = (np.asarray(v, dtype=float) for v in (batch_per_replica, prefill_tokens, input_len, context_len))
    attention = _attention_ops(model)
    one = np.asarray(1.0)
    att_program, rest_program = split_kernels(program, attention)  # each evaluation costs only what it keeps
    # token-wise kernels and collectives: b sequences carrying (b + x) / b tokens each, costed once per distinct
    # (layout, b, tokens) combination (serving_fold). Only attention ops read the context: where the split
    # removed them, one context stands for all (a scalar, so that it does not spoil the folding)
    token_args = (b, x) + ((ctx,) if rest_program is program else (np.asarray(np.max(ctx)),))
    t_rest, e_rest, a_rest, s_rest, t_coll, e_coll = fold_call(
        lambda lay, bb, xx, cc: _token_wise(model, gpu, lay, rest_program, bb, (bb + xx) / bb, cc, routing, attention),
        layout, token_args)
    # decode attention: b sequences, one query token each, mean context (the same at every prefill load)
    t_dec, e_dec, s_dec = decode_attention or _decode_attention(model, gpu, layout, att_program, b, ctx, routing, attention)
    # prefill attention: x / p whole prompts of p tokens, in the same kernel launches as decode
    has_prefill = x > 0

    def prefill(lay, xx, pp_):  # once per distinct (layout, x, p) combination (serving_fold)
        n_prompts = np.where(xx > 0, xx / pp_, 1.0)
        pre = evaluate_phase(model, gpu, lay, att_program, {"b": n_prompts, "t": pp_, "s": pp_}, one, decode=False,
                             microbatches=1, routing=routing)
        return _kernels(pre, attention, want_attention=True)

    t_pre, e_pre, launches, s_pre = fold_call(prefill, layout, (x, p))
    shared = launches * gpu.kernel_overhead_s
    s_pre = np.where(has_prefill, s_pre * np.maximum(t_pre - shared, 0.0) / np.maximum(t_pre, 1e-300), 0.0)
    t_pre = np.where(has_prefill, np.maximum(t_pre - shared, 0.0), 0.0)
    e_pre = np.where(has_prefill, above_idle_energy_j(gpu, e_pre, shared), 0.0)
    active = a_rest + t_dec + t_pre
    scaled = None if gpu.operating is None else s_rest + s_dec + s_pre  # default clocks: scale 1
    return IterationCost(t_rest + t_dec + t_pre, e_rest + e_dec + e_pre, t_coll, e_coll, active, scaled,
                         (t_dec, e_dec, s_dec))


def layout_degree(v):  # a layout degree: an int (scalar layout) or a float array (a sweep's layout of arrays)
    return int(np.asarray(v)) if np.ndim(v) == 0 else np.asarray(v, dtype=float)


def _check_positive(name: str, v: np.ndarray) -> None:
    if v.size == 0 or np.any(~np.isfinite(v)) or np.any(v <= 0):
        raise WorkloadError(name, v.tolist() if v.ndim else float(v), "positive finite numbers")


@dataclass
class ServingParts:
    """Everything of a steady state that does not depend on the serving coefficients (arrays)."""

    batch: np.ndarray  # whole deployment
    batch_per_replica: np.ndarray
    mean: IterationCost  # per rank, one micro-batch crossing all stages, mean prefill load
    median: IterationCost  # the same at the median prefill load
    prefill_tokens: np.ndarray  # per replica per iteration, mean
    pp: int | np.ndarray
    num_gpus: int | np.ndarray
    idle_power_w: float  # of a waiting GPU (at the locked clock, if any)
    power_limit_w: float
    reference_power_limit_w: float = 0.0  # the profile's own limit and idle power (0: same as above)
    reference_idle_power_w: float = 0.0
    lock_scale: float = 1.0  # v^2 f / f_max at the locked SM clock (1 with free clocks)


def serving_parts(model: Model, gpu: GPU, layout: Layout, batch, input_len, output_len, *,
                  max_batched_tokens: int = MAX_BATCHED_TOKENS, routing=None, per_replica: bool = False
                  ) -> ServingParts:
    """The coefficient-free part of :func:`serve_arrays` (costed once, combined with any coefficients).
    The layout may hold arrays broadcasting with the inputs (sweeps); ``per_replica``: ``batch`` is per replica."""
    from energylens.cost.dvfs import dynamic_scale_at_lock, reference_idle_power_w, reference_power_limit_w

    tp, pp, dp = layout_degree(layout.tp), layout_degree(layout.pp), layout_degree(layout.dp)
    batch, input_len, output_len = (np.asarray(v, dtype=float) for v in (batch, input_len, output_len))
    shape = np.broadcast_shapes(batch.shape, input_len.shape, output_len.shape)  # each term keeps its own axes
    for name, v in (("batch", batch), ("input_len", input_len), ("output_len", output_len)):
        _check_positive(name, v)
    br = batch if per_replica else batch / dp  # running requests per replica
    lam = br / output_len  # prompts admitted per iteration
    budget = np.maximum(max_batched_tokens - br, 0.0)
    x_mean = np.minimum(lam * input_len, budget)
    x_median = np.minimum(poisson_median(lam) * input_len, budget)
    ctx = input_len + output_len / 2.0
    program = build_program(model, layout)
    # pp micro-batches of br / pp in flight; each crosses all stages (pp = 1: one forward pass)
    mean = iteration_cost(model, gpu, layout, br / pp, x_mean / pp, input_len, ctx, program, routing)
    median = iteration_cost(model, gpu, layout, br / pp, x_median / pp, input_len, ctx, program, routing,
                            decode_attention=mean.decode_parts)
    whole = br * dp if per_replica else batch
    return ServingParts(np.broadcast_to(whole, np.broadcast_shapes(whole.shape, shape)), br, mean, median, x_mean, pp,
                        tp * pp * dp, gpu.idle_power_w, gpu.power_limit_w, reference_power_limit_w(gpu),
                        reference_idle_power_w(gpu), dynamic_scale_at_lock(gpu))


def iteration_time_s(cost: IterationCost, c: ServingCoefficients, batch_per_replica, pp: int) -> np.ndarray:
    """Wall time of one engine iteration as a client sees it: the costed GPU time of ``cost`` plus the
    per-sequence GPU work and the host time of the serving coefficients (the formula of :func:`combine`)."""
    br = np.asarray(batch_per_replica, dtype=float)
    return cost.time_s + c.per_sequence_overhead_s * br / pp + c.iteration_overhead_s


def iteration_energy_j(parts: ServingParts, cost: IterationCost, c: ServingCoefficients, batch_per_replica
                       ) -> np.ndarray:
    """Energy (J, all GPUs of the deployment) of one engine iteration costed as ``cost`` with
    ``batch_per_replica`` running requests, under the GPU constants of ``parts`` and the coefficients ``c``:
    per GPU (one rank of each stage runs pp micro-batches per iteration) the power rules of cost/power.py
    (busy static power, per-sequence work, the cap, host time at idle), times the GPUs."""
    br, pp = np.asarray(batch_per_replica, dtype=float), parts.pp
    seq_s = c.per_sequence_overhead_s * br / pp
    host_s = np.broadcast_to(np.asarray(c.iteration_overhead_s, dtype=float), br.shape)
    idle = parts.idle_power_w
    ref_limit = parts.reference_power_limit_w or parts.power_limit_w
    ref_idle = parts.reference_idle_power_w or idle
    active_w = c.active_power_fraction * (ref_limit - ref_idle)
    active_s = cost.active_s if cost.active_scaled_s is None else cost.active_scaled_s  # x v^2 f / f_max
    per_gpu_j = serving_gpu_energy_j(kernel_j=cost.kernel_j, kernel_s=cost.kernel_s, active_s=active_s, seq_s=seq_s,
                                     host_s=host_s, collective_j=cost.collective_j, idle_power_w=idle,
                                     power_limit_w=parts.power_limit_w, active_power_w=active_w,
                                     lock_scale=parts.lock_scale)
    return per_gpu_j * parts.num_gpus


def combine(parts: ServingParts, c: ServingCoefficients) -> ServingArrays:
    """Apply one platform's serving coefficients to the costed parts (see the module docstring)."""
    mean, median, br, pp = parts.mean, parts.median, parts.batch_per_replica, parts.pp
    seq_s = c.per_sequence_overhead_s * br / pp  # GPU-busy, per micro-batch crossing
    host_s = np.broadcast_to(np.asarray(c.iteration_overhead_s, dtype=float), br.shape)
    busy_mean = mean.time_s + seq_s
    iter_mean = iteration_time_s(mean, c, br, pp)
    iter_median = iteration_time_s(median, c, br, pp)
    e_iter = iteration_energy_j(parts, mean, c, br)
    return ServingArrays(
        decode_step_latency_s=iter_median,
        mean_iteration_s=iter_mean,
        avg_power_w=e_iter / iter_mean,
        energy_per_output_token_j=e_iter / parts.batch,
        output_tokens_per_s=parts.batch / iter_mean,
        prefill_tokens_per_iteration=parts.prefill_tokens,
        gpu_time_s=busy_mean,
        host_time_s=np.array(host_s, dtype=float),
        energy_per_iteration_j=e_iter,
        num_gpus=parts.num_gpus,
    )


def serve_arrays(model: Model, gpu: GPU, layout: Layout, batch, input_len, output_len, *,
                 coefficients: ServingCoefficients | CoefficientTable | None = None,
                 max_batched_tokens: int = MAX_BATCHED_TOKENS, routing=None, per_replica: bool = False
                 ) -> ServingArrays:
    """Vectorised steady state over arrays of ``batch`` (mean running requests, whole deployment),
    ``input_len`` and ``output_len`` (mean tokens per request). ``layout`` must be valid (:func:`resolve_layout`;
    sweeps pass arrays and ``batch`` per replica: ``per_replica``). Coefficients default to the shipped ones.
    MoE routing: ``routing`` when given, else uniform for a bias-balanced router, else the coefficients' fitted
    skew (:func:`serving_routing`).
    A GPU with a user power limit or locked clock (``gpu.operating``) holds one SM clock per iteration,
    the highest whose mean power fits the limit (:func:`energylens.cost.clock_hold.hold_clock`)."""
    coeffs = resolve_coefficients(coefficients, gpu.key)
    kw = dict(max_batched_tokens=max_batched_tokens, routing=serving_routing(routing, coeffs, model),
              per_replica=per_replica)

    def at(g: GPU) -> ServingArrays:
        return combine(serving_parts(model, g, layout, batch, input_len, output_len, **kw), coeffs)

    if gpu.operating is None:
        return at(gpu)
    from energylens.cost.clock_hold import hold_clock

    return hold_clock(gpu, at, lambda r: r.avg_power_w / r.num_gpus, BLEND_UNDER_LIMIT, _derive_under_limit)


BLEND_UNDER_LIMIT = ("decode_step_latency_s", "mean_iteration_s", "gpu_time_s", "host_time_s",
                     "energy_per_iteration_j", "prefill_tokens_per_iteration")


def _derive_under_limit(r: ServingArrays, v: dict, clock_mhz) -> ServingArrays:
    """Power, energy per token and throughput from the interpolated iteration time and energy."""
    b = np.asarray(r.output_tokens_per_s * r.mean_iteration_s)  # the batch (broadcast shape)
    return replace(r, **v, avg_power_w=v["energy_per_iteration_j"] / v["mean_iteration_s"],
                   energy_per_output_token_j=v["energy_per_iteration_j"] / b,
                   output_tokens_per_s=b / v["mean_iteration_s"], sm_clock_mhz=clock_mhz)


@dataclass(frozen=True)
class ServingResult:
    """One steady-state serving prediction. Units in every name. ``interval`` maps each headline
    figure to ``{"low", "high", "level", "basis"}`` (from validation residuals), or is empty."""

    model: str
    gpu: str
    dtype: str
    layout: dict
    num_gpus: int
    batch: float
    input_len: float
    output_len: float
    decode_step_latency_s: float
    mean_iteration_s: float
    avg_power_w: float
    energy_per_output_token_j: float
    output_tokens_per_s: float
    prefill_tokens_per_iteration: float
    gpu_time_s: float
    host_time_s: float
    coefficients: dict
    output_tokens_per_s_per_gpu: float = 0.0
    kv_cache: dict = field(default_factory=dict)
    interval: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    operating_point: dict = field(default_factory=dict)  # power_limit_w, default_power_limit_w, sm_clock_mhz
    footprint: dict = field(default_factory=dict)  # energylens.carbon.Footprint.per_token_floats
    precision: dict = field(default_factory=dict)  # per tensor class: format and GEMM path (predict.precision_report)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["notes"] = list(self.notes)
        return d


def resolve_layout(model: Model, *, num_gpus: int | None, tp: int, ep: int, dp: int, pp: int,
                   gpus_per_node: int = 8) -> tuple[Layout, tuple[str, ...]]:
    """The ``Layout`` of a vLLM deployment, validated against the model.

    vLLM's ``--enable-expert-parallel`` shards the experts over the ``tp x dp`` GPUs and runs
    attention tensor-parallel inside each replica, so a deployment recorded as ``num_gpus = N,
    tp = 1, ep = N`` (as ML.ENERGY records it) runs attention with ``tp = N / (pp dp)``."""
    notes: list[str] = []
    for name, v in (("tp", tp), ("ep", ep), ("dp", dp), ("pp", pp)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise LayoutError(name, v, "a positive integer")
    if num_gpus is not None:
        if isinstance(num_gpus, bool) or not isinstance(num_gpus, (int, np.integer)) or num_gpus < 1:
            raise LayoutError("num_gpus", num_gpus, "a positive integer")
        if num_gpus != tp * pp * dp:
            if tp == 1 and ep > 1 and num_gpus % (pp * dp) == 0 and (num_gpus // pp) % ep == 0:
                tp = num_gpus // (pp * dp)
                notes.append(f"num_gpus={num_gpus}, ep={ep}: vLLM expert parallelism runs attention "
                             f"tensor-parallel over each replica's GPUs (tp={tp})")
            else:
                raise LayoutError("num_gpus", num_gpus, f"tp x pp x dp = {tp * pp * dp} (or, with expert "
                                  "parallelism and tp=1, a multiple of pp x dp that ep divides)")
    lay = Layout(tp=tp, pp=pp, dp=dp, ep=ep, gpus_per_node=gpus_per_node)
    check_layout(model, lay, strict=True)
    return lay, tuple(notes)


def serve(
    model: str | Model,
    gpu: str | GPU,
    *,
    num_gpus: int | None = None,
    tp: int = 1,
    ep: int = 1,
    dp: int = 1,
    pp: int = 1,
    batch: float,
    input_len: float,
    output_len: float,
    dtype: str | None = None,
    gpus_per_node: int = 8,
    max_batched_tokens: int = MAX_BATCHED_TOKENS,
    coefficients: ServingCoefficients | CoefficientTable | None = None,
    interval_level: float = DEFAULT_INTERVAL_LEVEL,
    routing: str | None = None,
    gpu_memory_utilization: float | None = None,
    power_limit_w: float | None = None,
    sm_clock_mhz: float | None = None,
    footprint=None,
    weight_dtype: str | None = None,
    kv_cache_dtype: str | None = None,
    activation_dtype: str | None = None,
) -> ServingResult:
    """Steady-state vLLM serving of ``model`` on ``num_gpus`` GPUs (default ``tp x pp x dp``) at a
    mean running ``batch`` (whole deployment), mean prompt ``input_len`` and output ``output_len``.
    Refuses (naming the numbers) a deployment whose weights do not fit, whose KV cache cannot hold
    ``batch / dp`` running requests per replica (:mod:`energylens.kv_capacity`), or whose running
    batch chunked prefill cannot sustain (the prompts of the finishing requests exceed the budget), or
    whose prompt + output exceeds the model's context length. Precision as in ``energylens.predict``
    (``dtype`` is shorthand for ``weight_dtype``).
    ``power_limit_w`` (per GPU) and ``sm_clock_mhz`` set the operating point (:mod:`energylens.cost.dvfs`);
    ``footprint`` (:class:`energylens.carbon.Footprint`) adds carbon and cost per output token."""
    from energylens.checks import MAX_BATCH, MAX_TOKENS, integer, number
    from energylens.intervals import INTERVAL_LEVELS
    from energylens.pipeline import check_context, merge_dtype, precision_report, prepare
    from energylens.predict import operating_point

    batch = number("batch", batch, high=MAX_BATCH, error=WorkloadError,
                   what=f"a positive number of running requests up to {MAX_BATCH:,} (mean over the steady state)")
    for name, v in (("input_len", input_len), ("output_len", output_len)):
        number(name, v, high=MAX_TOKENS, error=WorkloadError,
               what=f"a positive number of tokens up to {MAX_TOKENS:,} (mean over the steady state)")
    input_len, output_len = float(input_len), float(output_len)
    integer("max_batched_tokens", max_batched_tokens, high=MAX_TOKENS, error=WorkloadError)
    from energylens.checks import choice

    choice("interval_level", interval_level, INTERVAL_LEVELS, error=SpecError)  # never hashes an array
    m, g = prepare(model, gpu, merge_dtype(dtype, weight_dtype), power_limit_w=power_limit_w, sm_clock_mhz=sm_clock_mhz,
                   kv_cache_dtype=kv_cache_dtype, activation_dtype=activation_dtype)
    check_context(m, input_len + output_len, "input_len + output_len")
    lay, notes = resolve_layout(m, num_gpus=num_gpus, tp=tp, ep=ep, dp=dp, pp=pp, gpus_per_node=gpus_per_node)
    dp, pp = int(lay.dp), int(lay.pp)
    if batch < dp * pp:
        raise WorkloadError("batch", batch, f"at least dp x pp = {dp * pp} (one request per replica and stage)")
    from energylens.kv_capacity import kv_capacity, require_fit

    cap = kv_capacity(m, g, lay, max_batched_tokens=int(max_batched_tokens),
                      **({} if gpu_memory_utilization is None else {"gpu_memory_utilization": gpu_memory_utilization}))
    require_fit(cap, gpu=g.key, layout=lay, input_len=float(input_len), output_len=float(output_len))
    fit_batch = float(cap.max_running(input_len, output_len)) * dp
    if batch > fit_batch:
        raise WorkloadError("batch", batch, f"at most {fit_batch:.0f} running requests: the KV cache holds "
                            f"{cap.kv_tokens:.0f} tokens per replica ({dp} replica(s)), a request "
                            f"{float(cap.footprint_tokens(input_len, output_len)):.0f} on average (prompt + half "
                            "the output + half a block); use more GPUs per replica or a load mode (--concurrency) "
                            "in which requests wait")
    # chunked prefill must admit the prompts of the requests that finish: B/O prompts of P tokens per
    # iteration within the budget M - B (per replica), i.e. B <= M O / (P + O)
    sustainable = max_batched_tokens * output_len / (input_len + output_len) * dp
    if batch > sustainable:
        raise WorkloadError("batch", batch, f"at most {sustainable:.4g} running requests: at input_len={input_len:g} "
                            f"and output_len={output_len:g} the prompts of the finishing requests "
                            f"({batch / dp / output_len * input_len:.0f} tokens per iteration per replica) exceed "
                            f"the chunked-prefill budget max_batched_tokens - batch/dp = "
                            f"{max(max_batched_tokens - batch / dp, 0):.0f}, so this running batch cannot be "
                            "sustained (raise --max-batched-tokens or lower the batch)")
    coeffs = resolve_coefficients(coefficients, g.key)
    arr = serve_arrays(m, g, lay, batch, input_len, output_len, coefficients=coeffs,
                       max_batched_tokens=int(max_batched_tokens), routing=routing)
    notes = list(notes)
    if routing is None and is_moe(m) and bias_balanced(m):
        notes.append("MoE routing uniform: the router balances expert load with a learned score bias (config "
                     "topk_method noaux_tc / use_routing_bias), so the fitted routing_skew does not apply; "
                     "--routing overrides it")
    elif routing is None and coeffs.routing() is not None and is_moe(m):
        notes.append(f"MoE routing {coeffs.routing().name}: the fitted routing_skew of serving_coefficients.yaml "
                     "(expert popularity 1/rank^S); --routing overrides it")

    def f(x) -> float:
        return float(np.asarray(x).reshape(-1)[0])

    res = ServingResult(
        model=m.hf_id or m.name, gpu=g.key, dtype=m.weight_dtype, layout=lay.to_dict(), num_gpus=arr.num_gpus,
        batch=float(batch), input_len=float(input_len), output_len=float(output_len),
        decode_step_latency_s=f(arr.decode_step_latency_s), mean_iteration_s=f(arr.mean_iteration_s),
        avg_power_w=f(arr.avg_power_w), energy_per_output_token_j=f(arr.energy_per_output_token_j),
        output_tokens_per_s=f(arr.output_tokens_per_s),
        prefill_tokens_per_iteration=f(arr.prefill_tokens_per_iteration),
        gpu_time_s=f(arr.gpu_time_s), host_time_s=f(arr.host_time_s), coefficients=coeffs.to_dict(),
        output_tokens_per_s_per_gpu=f(arr.output_tokens_per_s) / arr.num_gpus, kv_cache=cap.to_dict(),
        notes=tuple(notes), operating_point=operating_point(g),
        precision=precision_report(m, g),
    )
    from energylens.carbon import Footprint

    fp = footprint or Footprint()
    res = replace(res, footprint=fp.per_token_floats(res.energy_per_output_token_j,
                                                     res.output_tokens_per_s / res.num_gpus))
    from energylens.intervals import interval_for

    iv = interval_for(m, g.key, {"decode_step_latency_s": res.decode_step_latency_s,
                                 "avg_power_w": res.avg_power_w,
                                 "energy_per_output_token_j": res.energy_per_output_token_j}, interval_level)
    return replace(res, interval=iv)
