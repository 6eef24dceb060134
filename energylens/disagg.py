"""Disaggregated serving (prefill on pool A, decode on pool B) compared with co-located serving.

Both are steady states of a request stream with mean prompt ``prompt_len`` and mean output
``output_len`` tokens, built on the same per-op cost model and the continuous-batching model of
:mod:`energylens.serving` (same iteration cost, same host-overhead coefficients).

**Co-located** (one pool of instances of layout C): :func:`energylens.serving.serve_arrays` at a
concurrency of ``concurrency`` running requests per instance: each engine iteration decodes one
token for every running request and prefills the prompts admitted meanwhile (chunked prefill), so
prompts slow the decode steps they share. TTFT is estimated as the prompt's own prefill time plus
one median decode iteration per chunk it needs (``ceil(prompt_len / chunk budget)``).

**Disaggregated** (prefill instances of layout A, decode instances of layout B, possibly other GPU
types):

* a prefill instance runs batches of ``prefill_batch`` prompts back to back (the static-batch
  prefill of :func:`energylens.cost.phase.evaluate_phase`, plus the serving host overhead per
  iteration, during which its GPUs wait at idle power, and the per-request GPU work, which draws the
  batch's mean kernel power as in ``serve``, :func:`energylens.cost.power.serving_gpu_energy_j`):
  ``r_A = prefill_batch / T_prefill`` requests/s;
* a decode instance runs pure decode iterations at ``concurrency`` running requests
  (:func:`energylens.serving.serve_arrays` with a chunked-prefill budget of zero, so no prompt
  shares an iteration; mean context ``prompt_len + output_len / 2``):
  ``r_B = concurrency / (output_len * T_iteration)``;
* the KV cache of each request (``predict.kv_bytes_per_token(model) * prompt_len`` bytes) goes
  from the prefill to the decode instance over the inter-node network (the GPUs' NICs, links.yaml):
  each prefill GPU holding a distinct KV shard (``min(tp, kv heads) * pp`` of them) sends its
  share as one ``send_recv`` (:func:`energylens.cost.collectives.collective_cost` with ``nodes=2``). The
  transfer is assumed to overlap the next prefill (layer-wise streaming, as Splitwise and
  DistServe do), so it adds its time to TTFT and only its energy above idle power to the request;
* pools are sized with integers: among ``n_A`` prefill and ``n_B`` decode instances within
  ``max_gpus``, the pair with the lowest energy per output token (ties: the higher request rate)
  is chosen. The request rate is ``R = min(n_A r_A, n_B r_B)``; the faster pool waits part of the
  time, and its waiting GPUs burn idle power, charged to the requests. ``balanced_*`` fields
  give the same figures for ideally balanced (fractional) pools: no waiting.

The co-located pool gets the same GPU budget: ``floor(max_gpus / gpus per instance)`` instances,
all saturated. Everything is vectorised over ``concurrency``, ``prompt_len`` and ``output_len``
(arrays broadcast); layouts are scalars.

Limits: no queueing delay (TTFT is service time), no prefill/decode interference inside a
disaggregated decode instance, the KV transfer uses the prefill GPU's NIC profile for both ends.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from energylens.cost.phase import USABLE_MEMORY_FRACTION, evaluate_phase, memory_per_gpu
from energylens.cost.power import (
    above_idle_energy_j,
    idle_energy_j,
    serving_active_power_w,
    serving_gpu_energy_j,
)
from energylens.errors import LayoutError, WorkloadError
from energylens.parallel.layout import Layout, check_layout
from energylens.program import build_program

DEFAULT_MAX_GPUS = 16


@dataclass(frozen=True)
class Pool:
    """One instance type of a serving pool: GPU type, layout and weight dtype."""

    gpu: str = "h100-sxm"
    tp: int = 1
    pp: int = 1
    dp: int = 1
    ep: int = 1
    dtype: str | None = None

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "dp", "ep"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise LayoutError(name, v, "a positive integer")

    @property
    def num_gpus(self) -> int:
        return self.tp * self.pp * self.dp

    def layout(self, gpus_per_node: int = 8) -> Layout:
        return Layout(tp=self.tp, pp=self.pp, dp=self.dp, ep=self.ep, gpus_per_node=gpus_per_node)

    def label(self) -> str:
        parts = [f"tp{self.tp}"] + [f"{k}{getattr(self, k)}" for k in ("pp", "dp", "ep") if getattr(self, k) > 1]
        return f"{self.gpu} " + " ".join(parts) + (f" {self.dtype}" if self.dtype else "")

    @classmethod
    def parse(cls, text: str, *, field_name: str = "pool", gpu: str = "h100-sxm") -> Pool:
        """``"tp=4,pp=2"`` or ``"gpu=h200,tp=8,dtype=fp8"`` (CLI form)."""
        from energylens.checks import MAX_DEGREE
        from energylens.checks import text as checked_text

        form = "comma-separated key=value with keys gpu, tp, pp, dp, ep, dtype, e.g. 'tp=4' or 'gpu=h200,tp=8'"
        checked_text(field_name, text, error=LayoutError, what=form)
        kw: dict = {"gpu": gpu}
        seen: set[str] = set()
        for part in (p.strip() for p in text.split(",")):
            key, sep, value = part.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or key not in ("gpu", "tp", "pp", "dp", "ep", "dtype") or not value:
                raise LayoutError(field_name, text, form)
            if key in seen:
                raise LayoutError(field_name, text, f"each key once ({key} is repeated)")
            seen.add(key)
            if key in ("gpu", "dtype"):
                kw[key] = value
            else:
                if not value.isdigit() or len(value) > 6 or not 1 <= int(value) <= MAX_DEGREE:
                    raise LayoutError(f"{field_name}.{key}", value, f"a positive integer up to {MAX_DEGREE}")
                kw[key] = int(value)
        return cls(**kw)


def _f(x) -> float | int | list:
    a = np.asarray(x)
    return a.item() if a.ndim == 0 else a.tolist()


def _plain(d: dict) -> dict:
    return {k: _f(v) if isinstance(v, (np.ndarray, np.generic)) else v for k, v in d.items()}


@dataclass
class ColocatedResult:
    pool: Pool
    instances: int  # within the GPU budget
    num_gpus: int
    energy_per_output_token_j: np.ndarray
    energy_per_request_j: np.ndarray
    ttft_s: np.ndarray
    itl_s: np.ndarray  # median inter-token latency
    output_tokens_per_s: np.ndarray  # all instances
    output_tokens_per_s_per_gpu: np.ndarray
    avg_power_w: np.ndarray  # per instance
    fits: np.ndarray

    def to_dict(self) -> dict:
        d = _plain({k: v for k, v in asdict(self).items() if k != "pool"})
        d["pool"] = self.pool.label()
        return d


@dataclass
class DisaggregatedResult:
    prefill_pool: Pool
    decode_pool: Pool
    prefill_instances: np.ndarray
    decode_instances: np.ndarray
    num_gpus: np.ndarray
    prefill_energy_per_request_j: np.ndarray
    decode_energy_per_request_j: np.ndarray
    kv_transfer_energy_per_request_j: np.ndarray
    idle_energy_per_request_j: np.ndarray  # the faster pool waiting (integer pool sizes)
    energy_per_request_j: np.ndarray
    energy_per_output_token_j: np.ndarray
    ttft_s: np.ndarray  # prefill service time + KV transfer
    kv_transfer_s: np.ndarray
    kv_bytes_per_request: np.ndarray
    itl_s: np.ndarray  # decode iteration time (no prefill interference)
    requests_per_s: np.ndarray  # system, R = min(n_A r_A, n_B r_B)
    output_tokens_per_s: np.ndarray
    output_tokens_per_s_per_gpu: np.ndarray
    prefill_requests_per_s_per_instance: np.ndarray
    decode_requests_per_s_per_instance: np.ndarray
    balanced_prefill_per_decode_instance: np.ndarray  # ideal n_A / n_B = r_B / r_A
    balanced_energy_per_output_token_j: np.ndarray  # no waiting (fractional pools)
    balanced_output_tokens_per_s_per_gpu: np.ndarray
    prefill_fits: np.ndarray
    decode_fits: np.ndarray

    def to_dict(self) -> dict:
        d = _plain({k: v for k, v in asdict(self).items() if k not in ("prefill_pool", "decode_pool")})
        d["prefill_pool"] = self.prefill_pool.label()
        d["decode_pool"] = self.decode_pool.label()
        return d


@dataclass
class DisaggComparison:
    model: str
    concurrency: np.ndarray
    prompt_len: np.ndarray
    output_len: np.ndarray
    max_gpus: int
    colocated: ColocatedResult
    disaggregated: DisaggregatedResult
    notes: tuple[str, ...] = field(default_factory=tuple)
    footprint: object = None  # energylens.carbon.Footprint: gCO2e and USD per output token / million tokens

    def footprints(self) -> dict[str, dict]:
        """Facility energy, gCO2e and USD per output token and per million tokens of each deployment
        (:mod:`energylens.carbon`; carbon/cost ``None`` where not asked)."""
        from energylens.carbon import Footprint

        fp = self.footprint or Footprint()
        return {name: fp.per_token(r.energy_per_output_token_j, r.output_tokens_per_s_per_gpu)
                for name, r in (("colocated", self.colocated), ("disaggregated", self.disaggregated))}

    @property
    def energy_ratio(self) -> np.ndarray:
        """Disaggregated / co-located energy per output token (< 1: disaggregation saves energy)."""
        return self.disaggregated.energy_per_output_token_j / self.colocated.energy_per_output_token_j

    @property
    def throughput_ratio(self) -> np.ndarray:
        """Disaggregated / co-located output tokens/s per GPU."""
        return self.disaggregated.output_tokens_per_s_per_gpu / self.colocated.output_tokens_per_s_per_gpu

    def to_dict(self) -> dict:
        fps = self.footprints()
        fp = self.footprint
        return {
            "model": self.model, "concurrency": _f(self.concurrency), "prompt_len": _f(self.prompt_len),
            "output_len": _f(self.output_len), "max_gpus": self.max_gpus,
            "colocated": {**self.colocated.to_dict(), **_plain(fps["colocated"])},
            "disaggregated": {**self.disaggregated.to_dict(), **_plain(fps["disaggregated"])},
            "footprint": {"carbon_intensity_g_per_kwh": getattr(fp, "carbon_intensity_g_per_kwh", None),
                          "pue": getattr(fp, "pue", 1.0), "usd_per_gpu_hour": getattr(fp, "usd_per_gpu_hour", None)},
            "energy_ratio": _f(self.energy_ratio), "throughput_per_gpu_ratio": _f(self.throughput_ratio),
            "notes": list(self.notes),
        }


MAX_POOL_PAIRS = 4_000_000  # (prefill instances x decode instances x workloads) searched for the best split


def _check_workload(concurrency, prompt_len, output_len):
    from energylens.checks import MAX_BATCH, MAX_TOKENS, number_array

    out = []
    for name, v, high in (("concurrency", concurrency, MAX_BATCH), ("prompt_len", prompt_len, MAX_TOKENS),
                          ("output_len", output_len, MAX_TOKENS)):
        out.append(number_array(name, v, high=high, error=WorkloadError,
                                what=f"positive finite numbers up to {high:,}"))
    try:
        return np.broadcast_arrays(*out)
    except ValueError:
        raise WorkloadError("concurrency", [a.shape for a in out], "arrays of shapes that broadcast together") from None


def _check_budget(max_gpus) -> int:
    from energylens.checks import MAX_GPUS, integer

    return integer("max_gpus", max_gpus, low=1, high=MAX_GPUS, error=LayoutError)


def _prepare_pool(model, pool: Pool, gpus_per_node: int):
    from energylens.kv_capacity import kv_capacity, require_fit
    from energylens.pipeline import prepare

    m, g = prepare(model, pool.gpu, pool.dtype)
    lay = pool.layout(gpus_per_node)
    check_layout(m, lay, strict=True)
    require_fit(kv_capacity(m, g, lay), gpu=g.key, layout=lay)  # as serve: weights must leave room for a KV cache
    return m, g, lay


def _fits(m, g, lay, batch_per_replica, context, tokens_per_iteration) -> np.ndarray:
    """Weights + KV cache of ``batch_per_replica`` sequences at ``context`` + the workspace of one
    iteration of ``tokens_per_iteration`` tokens (a chunk, not the whole batch's prompts)."""
    prog = build_program(m, lay)
    kv = memory_per_gpu(m, lay, prog, g, batch_per_replica, context, 1.0)
    step = memory_per_gpu(m, lay, prog, g, 1.0, tokens_per_iteration, tokens_per_iteration)
    need = kv["weights_bytes"] + kv["kv_cache_bytes"] + np.maximum(kv["workspace_bytes"], step["workspace_bytes"])
    return np.asarray(need <= kv["capacity_bytes"] * USABLE_MEMORY_FRACTION)


def colocated(model, pool: Pool, *, concurrency, prompt_len, output_len, max_gpus: int = DEFAULT_MAX_GPUS,
              gpus_per_node: int = 8) -> ColocatedResult:
    """Co-located continuous batching at ``concurrency`` running requests per instance."""
    from energylens.serving import MAX_BATCHED_TOKENS, serve_arrays

    c, p, o = _check_workload(concurrency, prompt_len, output_len)
    max_gpus = _check_budget(max_gpus)
    m, g, lay = _prepare_pool(model, pool, gpus_per_node)
    if np.any(c < pool.dp):
        raise WorkloadError("concurrency", _f(c), f"at least dp={pool.dp} (each replica serves concurrency/dp)")
    res = serve_arrays(m, g, lay, c, p, o)
    instances = max(max_gpus // pool.num_gpus, 0)
    if instances < 1:
        raise LayoutError("max_gpus", max_gpus, f"at least the {pool.num_gpus} GPUs of one co-located instance")
    # TTFT: the prompt's own prefill (one prompt per replica) plus the decode work of the running
    # requests in each iteration that carries one of its chunks (median inter-token latency)
    budget = np.maximum(MAX_BATCHED_TOKENS - c / pool.dp, 1.0)
    one = evaluate_phase(m, g, lay, build_program(m, lay), {"b": np.asarray(1.0), "t": p, "s": p},
                         np.asarray(1.0), decode=False)
    ttft = one.latency_s + np.ceil(p / budget) * res.decode_step_latency_s
    tok_s = res.output_tokens_per_s * instances
    return ColocatedResult(
        pool=pool, instances=instances, num_gpus=instances * pool.num_gpus,
        energy_per_output_token_j=res.energy_per_output_token_j,
        energy_per_request_j=res.energy_per_output_token_j * o,
        ttft_s=ttft, itl_s=res.decode_step_latency_s, output_tokens_per_s=tok_s,
        output_tokens_per_s_per_gpu=tok_s / (instances * pool.num_gpus), avg_power_w=res.avg_power_w,
        fits=_fits(m, g, lay, c / pool.dp, p + o, np.minimum(p, MAX_BATCHED_TOKENS)),
    )


def kv_transfer(model, prefill_pool: Pool, prompt_len, *, gpus_per_node: int = 8):
    """(bytes, latency_s, incremental energy_j) of moving one request's KV cache between pools."""
    from energylens.cost.collectives import collective_cost
    from energylens.predict import kv_bytes_per_token

    m, g, _ = _prepare_pool(model, prefill_pool, gpus_per_node)
    p = np.asarray(prompt_len, dtype=float)
    total = kv_bytes_per_token(m) * p
    kv_heads = int(m.dims.get("g", prefill_pool.tp))
    senders = min(prefill_pool.tp, kv_heads) * prefill_pool.pp
    cc = collective_cost("send_recv", total / senders, 2, g, nodes=2)
    dyn = above_idle_energy_j(g, cc.energy_j_per_gpu, cc.latency_s)
    return total, np.asarray(cc.latency_s), 2.0 * senders * dyn


def disaggregated(model, prefill_pool: Pool, decode_pool: Pool, *, concurrency, prompt_len, output_len,
                  prefill_batch: int = 1, max_gpus: int = DEFAULT_MAX_GPUS,
                  gpus_per_node: int = 8) -> DisaggregatedResult:
    """Prefill pool A + decode pool B (``concurrency`` running requests per decode instance)."""
    from energylens.checks import MAX_BATCH, integer
    from energylens.serving import load_coefficients, serve_arrays
    from energylens.workload import Workload, prefill_sizes

    c, p, o = _check_workload(concurrency, prompt_len, output_len)
    max_gpus = _check_budget(max_gpus)
    integer("prefill_batch", prefill_batch, low=1, high=MAX_BATCH, error=WorkloadError)
    if prefill_batch % prefill_pool.dp:
        raise WorkloadError("prefill_batch", prefill_batch, f"a multiple of the prefill pool's dp={prefill_pool.dp}")
    if np.any(c < decode_pool.dp):
        raise WorkloadError("concurrency", _f(c), f"at least the decode pool's dp={decode_pool.dp}")
    ma, ga, la = _prepare_pool(model, prefill_pool, gpus_per_node)
    coeffs = load_coefficients(ga.key)  # the prefill pool's platform (serve_arrays resolves the decode pool's)
    mb, gb, lb = _prepare_pool(model, decode_pool, gpus_per_node)
    gpus_a, gpus_b = prefill_pool.num_gpus, decode_pool.num_gpus
    if gpus_a + gpus_b > max_gpus:
        raise LayoutError("max_gpus", max_gpus, f"at least {gpus_a + gpus_b} (one prefill + one decode instance)")
    pairs = (max_gpus // gpus_a) * (max_gpus // gpus_b) * max(c.size, 1)
    if pairs > MAX_POOL_PAIRS:  # the pool-size search holds a few arrays of this many cells
        raise LayoutError("max_gpus", max_gpus, f"a budget whose pool-size search stays within {MAX_POOL_PAIRS:,} "
                          f"(prefill instances x decode instances x workloads) cells; this one has {pairs:,} "
                          f"({max_gpus // gpus_a} x {max_gpus // gpus_b} x {c.size}): lower --max-gpus or use "
                          "larger instances")

    # prefill instance: batches of prefill_batch prompts back to back
    bpr_a = prefill_batch // prefill_pool.dp
    sizes, w = prefill_sizes(Workload(prefill_batch, 1, 0), np.asarray(float(bpr_a)))
    sizes = {"b": sizes["b"], "t": p, "s": p}
    pre = evaluate_phase(ma, ga, la, build_program(ma, la), sizes, w, decode=False)
    # serving coefficients by serve's power rules (cost/power.py::serving_gpu_energy_j, per GPU): host time
    # at idle power, the per-sequence work at the mean power of the batch's kernels, active static power
    # while kernels run, the whole busy span capped at the limit
    host_a = coeffs.iteration_overhead_s
    seq_a = coeffs.per_sequence_overhead_s * bpr_a
    active_w = serving_active_power_w(ga, coeffs.active_power_fraction)
    t_pre = pre.latency_s + seq_a + host_a
    e_pre = gpus_a * serving_gpu_energy_j(
        kernel_j=(pre.energy_j - pre.communication_j) / gpus_a, kernel_s=pre.kernel_time_s, active_s=pre.kernel_time_s,
        seq_s=seq_a, host_s=host_a, collective_j=pre.communication_j / gpus_a, idle_power_w=ga.idle_power_w,
        power_limit_w=ga.power_limit_w, active_power_w=active_w)
    r_a = prefill_batch / t_pre
    e_a = e_pre / prefill_batch

    # decode instance: serving.serve_arrays with no prompt admission (the chunked-prefill budget
    # max_batched_tokens - running requests is 0), i.e. pure decode iterations at the concurrency
    dec = serve_arrays(mb, gb, lb, c, p, o, max_batched_tokens=1)
    t_iter = dec.mean_iteration_s
    r_b = c / (o * t_iter)
    e_b = o * dec.energy_per_output_token_j

    kv_bytes, kv_s, kv_j = kv_transfer(model, prefill_pool, p, gpus_per_node=gpus_per_node)
    busy_j = e_a + e_b + kv_j

    # integer pool sizes within the budget: lowest J/request, then highest request rate
    na = np.arange(1, max_gpus // gpus_a + 1, dtype=float)
    nb = np.arange(1, max_gpus // gpus_b + 1, dtype=float)
    extra = (1,) * np.ndim(busy_j)
    na_g = na.reshape((-1, 1) + extra)
    nb_g = nb.reshape((1, -1) + extra)
    within = (na_g * gpus_a + nb_g * gpus_b) <= max_gpus
    rate = np.minimum(na_g * r_a, nb_g * r_b)
    # pools wait at idle power for the slower one: idle seconds per second of each pool
    idle_w = idle_energy_j(ga, na_g * gpus_a * (1.0 - rate / (na_g * r_a))) + \
        idle_energy_j(gb, nb_g * gpus_b * (1.0 - rate / (nb_g * r_b)))
    energy = busy_j + idle_w / rate
    score = np.where(within, energy, np.inf)
    flat = score.reshape((-1,) + score.shape[2:])
    best_e = flat.min(axis=0)
    rate_flat = np.broadcast_to(rate, score.shape).reshape(flat.shape)
    tie = np.where(flat <= best_e * (1 + 1e-9), rate_flat, -np.inf)
    pick = np.argmax(tie, axis=0)
    ia, ib = np.unravel_index(pick, score.shape[:2])
    n_a, n_b = na[ia], nb[ib]
    r_sys = np.minimum(n_a * r_a, n_b * r_b)
    gpus = n_a * gpus_a + n_b * gpus_b
    energy_req = np.take_along_axis(flat, pick[None], axis=0)[0]
    balanced_ratio = r_b / r_a
    balanced_gpus_per_req_s = gpus_a / r_a + gpus_b / r_b  # GPUs needed per request/s, ideal balance
    return DisaggregatedResult(
        prefill_pool=prefill_pool, decode_pool=decode_pool,
        prefill_instances=n_a.astype(int), decode_instances=n_b.astype(int), num_gpus=gpus.astype(int),
        prefill_energy_per_request_j=e_a, decode_energy_per_request_j=e_b, kv_transfer_energy_per_request_j=kv_j,
        idle_energy_per_request_j=energy_req - busy_j, energy_per_request_j=energy_req,
        energy_per_output_token_j=energy_req / o, ttft_s=t_pre + kv_s, kv_transfer_s=kv_s,
        kv_bytes_per_request=kv_bytes, itl_s=t_iter, requests_per_s=r_sys, output_tokens_per_s=r_sys * o,
        output_tokens_per_s_per_gpu=r_sys * o / gpus, prefill_requests_per_s_per_instance=r_a,
        decode_requests_per_s_per_instance=r_b, balanced_prefill_per_decode_instance=balanced_ratio,
        balanced_energy_per_output_token_j=busy_j / o,
        balanced_output_tokens_per_s_per_gpu=o / balanced_gpus_per_req_s,
        prefill_fits=_fits(ma, ga, la, bpr_a, p, p * bpr_a), decode_fits=_fits(mb, gb, lb, c / decode_pool.dp, p + o, 1.0),
    )


def compare(model, *, colocated_pool: Pool, prefill_pool: Pool, decode_pool: Pool, concurrency, prompt_len,
            output_len, prefill_batch: int = 1, max_gpus: int = DEFAULT_MAX_GPUS,
            gpus_per_node: int = 8, footprint=None) -> DisaggComparison:
    """Disaggregated vs co-located serving of the same request stream on the same GPU budget;
    ``footprint`` (:class:`energylens.carbon.Footprint`) adds carbon and cost per output token."""
    from energylens.models import load_model

    co = colocated(model, colocated_pool, concurrency=concurrency, prompt_len=prompt_len, output_len=output_len,
                   max_gpus=max_gpus, gpus_per_node=gpus_per_node)
    dis = disaggregated(model, prefill_pool, decode_pool, concurrency=concurrency, prompt_len=prompt_len,
                        output_len=output_len, prefill_batch=prefill_batch, max_gpus=max_gpus,
                        gpus_per_node=gpus_per_node)
    notes = []
    for name, ok in (("co-located", co.fits), ("prefill pool", dis.prefill_fits), ("decode pool", dis.decode_fits)):
        if not np.all(ok):
            notes.append(f"{name}: does not fit in GPU memory for some inputs (weights + KV cache + workspace)")
    m = load_model(model)
    c, p, o = _check_workload(concurrency, prompt_len, output_len)
    return DisaggComparison(m.hf_id or m.name, c, p, o, max_gpus, co, dis, tuple(notes), footprint)
