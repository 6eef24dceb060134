"""Family-specific kernel latency formulas: GEMM, decode attention, prefill attention, fused MoE.

Analytic and vectorised (every size argument may be a NumPy array; they broadcast), with coefficients
read from the GPU profile (:func:`gemm_coeffs`, :func:`attention_coeffs`, :func:`moe_coeffs`). The
calibration (``energylens.calibration.kernels``) fits exactly these formulas to NVIDIA's measured vLLM
kernel tables; a GPU without tables falls back to the spec-derived defaults named in each function.

GEMM (M x N x K, ``batch`` independent GEMMs, dtype d)::

    tile_m'  = min(tile_m[d], 64) where M <= small_m[d] (a small-M kernel), else tile_m[d]
    tiles    = ceil(M / tile_m') * ceil(N / tile_n[d]) * batch
    split    = clip(floor(SMs / tiles), 1, floor(K / SPLIT_K_MIN_K)) where split_k[d], else 1
    wave_eff = tiles*split / (ceil(tiles*split / SMs) * SMs)               the tail wave idles SMs
    k_eff    = K' / (K' + k_half[d]),  K' = K / split                      per-tile prologue/epilogue
    t_math   = max(2 M N K batch / (peak[d] * eff[d] * wave_eff * k_eff),
                   ceil(tiles*split / SMs) K' (tile_m' + tile_n) elem_bytes / cta_bandwidth[d])
                                                                           one CTA's operand stream is capped
             + [split > 1] (overhead + 8 M N batch split / (bw * mem_eff[d]))   split-K reduction
             + prepass_bytes[d] * M * K * batch / (bw * mem_eff[d])         activation quantisation pass
             + ceil(M batch / SMs) * prepass_row[d]                          (one CTA per activation row)
    t_memory = (A + B + C bytes) / (bw * mem_eff[d])
    latency  = max(t_math, t_memory) + overhead[d]

Decode attention (one new query token per sequence; FlashAttention/FlashInfer split-KV kernels pack the
``r = h / g`` query heads of one KV head into CTAs of at most ``q_rows`` query rows)::

    S'      = min(S, window + window_pad)                  KV tokens read (sliding window reads whole tiles)
    m       = ceil(r / q_rows);  slots = SMs * ctas_per_sm;  units = B g m
    split   = clip(floor(slots / units), 1, min(max_splits, ceil(S' / split_min_tokens)))
    ctas    = units split;  waves = ceil(ctas / slots);  active = min(ctas, slots);  tok = ceil(S' / split)
    bw_cta  = min(cta_bandwidth, bw * mem_eff * fp8_eff * m / active)    one CTA's loads in flight cap its
                                                                          bandwidth; all CTAs share HBM (the
                                                                          m CTAs of one KV head share its reads)
    cta     = cta_overhead + max(cta_latency * D / 128 * fp8_cta,         pipeline fill of one CTA, overlapped
                                 tok D 2 kv_bytes / bw_cta,               with its KV stream
                                 4 tok D max(r / m, 16) / (peak * compute_eff / slots))
    graph   = [B <= graph_max_batch]                       a captured (CUDA-graph) batch runs in split-KV mode
    split_mode = [split > 1] or graph
    t_rows  = B h D (split_mode ? 10 split + 2 : 4) / (bw * mem_eff)      query rows: Q read, O written (split
                                                                          mode: Q per split, fp32 partial rows
                                                                          written and read back by the combine)
    latency = overhead + waves * cta + t_rows + [split > 1] combine + B (seq_time + graph * graph_seq_time)

Prefill attention (T new tokens per sequence over S = cached + T keys, causal, q tiles of ``q_tile`` rows;
``pack_gqa``: a tile packs the r = h / g query heads of one KV head, as FlashAttention 3 does)::

    rows   = T r (pack_gqa) or T;  tile tokens = q_tile / r (pack_gqa) or q_tile
    keys   = mean over rows of min(S - T + i + tile tokens / 2, window + tile tokens), at most S
             (rows i = 0..T: S - T + (T + tile tokens) / 2 without a window)   mean keys per query row
    units  = B g ceil(T r / q_tile) (pack_gqa) or B h ceil(T / q_tile);  wave_eff as for GEMM over SMs
    eff    = compute_eff * wave_eff * keys/(keys + k_half) * D/(D + d_half)
             [fp8 KV] x fp8_compute_factor / (1 + (D / fp8_d_half)^2)    fp8 Q/K/V tiles (0: no falloff)
    t_math = 4 units q_tile keys D / (peak * eff)
    t_kv   = B T (h D 4 + g D kv_traffic[kv dtype]) / (bw * mem_eff)       Q/O and KV-cache traffic
    t_tok  = ceil(B T / SMs) * token_s * [fp8 KV] fp8_token_factor         per-token CTAs (KV-cache write)
    multi  = [T h / g > tile_rows] multi_tile_overhead                     more than one packed query tile
    latency = overhead + [fp8 KV] (fp8_overhead + fp8_multi_tile_factor multi) + [bf16] multi
              + t_math + t_kv + t_tok

Fused MoE (two grouped GEMMs per expert shard: gate+up N = 2I, K = H; down N = H, K = I; c_e tokens on
expert e): the GEMM formula with ``batch`` = experts hit and M = tokens per expert, the MoE family's own
tile, efficiency and overhead (:func:`moe_coeffs`), and only the hit experts' weights read. The measured
vLLM call also runs the gate/up activation over every routed (token, expert) pair (under expert parallelism
the pairs of other ranks' experts too, as zero tiles): :func:`moe_routed_s`, and per-token passes over the
hidden vector (the top-k combine into the call's output, one row per token whatever top-k):
:func:`moe_token_pass_s`; both fitted with the kernel tables and reported; the cost path costs those as
its own element-wise ops.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from energylens.cost.distinct import distinct_call
from energylens.graph.precision import DTYPE_BYTES
from energylens.hardware.profile import GPU

ArrayLike = float | int | np.ndarray
SPLIT_K_MIN_K = 1024.0  # shortest K per split-K slice (chosen on vidur GEMM timings; see cost.roofline)
GEMM_DTYPES = ("bf16", "fp16", "fp8", "fp8_block", "nvfp4")
# GEMM kernel variants -> the tensor-core dtype whose peak they run at, and their operand bytes per element
# (values + scales: fp8 with one fp32 scale per 128x128 block, NVFP4 4 bits + one fp8 scale per 16)
KERNEL_MATH = {"fp8_block": "fp8", "nvfp4": "fp4"}
KERNEL_ELEM_BYTES = {"fp8_block": 1.0 + 4.0 / (128 * 128), "nvfp4": 0.5 + 1.0 / 16}
# Spec-derived defaults for a GPU whose profile has no fitted value (no kernel table): pure roofline.
DEFAULT_SOURCE = "default (no kernel table for this GPU): energylens/cost/families.py"


def _a(x: ArrayLike) -> np.ndarray:
    return np.asarray(x, dtype=float)


def _get(gpu: GPU, name: str, default: float) -> float:
    return gpu.q(name) if gpu.has(name) else float(default)


@dataclass(frozen=True)
class GemmCoeffs:
    """Coefficients of the GEMM formula for one GPU and dtype (SI units)."""

    peak_flops: float
    efficiency: float
    k_half: float
    tile_m: float
    tile_n: float
    sms: float
    bandwidth_bytes_per_s: float  # hbm_bandwidth x memory efficiency
    overhead_s: float
    prepass_bytes: float  # bytes moved per activation element by a quantisation pass (0 for bf16)
    split_overhead_s: float
    split_k: float = 1.0  # 1: split-K fills idle SMs (cuBLAS); 0: the kernel never splits K
    small_m: float = 0.0  # M at or below which the kernel runs a 64-row tile
    prepass_row_s: float = 0.0  # time per activation row per SM of the quantisation pass
    cta_bandwidth: float = 0.0  # operand bytes/s one CTA streams at most (0: no cap)
    elem_bytes: float = 2.0  # operand bytes per element (A and B)


_GEMM_COEFFS: dict[tuple, tuple[GPU, GemmCoeffs]] = {}


def gemm_coeffs(gpu: GPU, dtype: str) -> GemmCoeffs:
    """:func:`profile_gemm_coeffs`, kept per GPU object (profiles are immutable) and dtype."""
    hit = _GEMM_COEFFS.get((id(gpu), dtype))
    if hit is not None and hit[0] is gpu:
        return hit[1]
    c = profile_gemm_coeffs(gpu, dtype)
    if len(_GEMM_COEFFS) > 256:
        _GEMM_COEFFS.clear()
    _GEMM_COEFFS[(id(gpu), dtype)] = (gpu, c)
    return c


def profile_gemm_coeffs(gpu: GPU, dtype: str) -> GemmCoeffs:
    """The profile's GEMM coefficients for ``dtype`` (a plain dtype or a kernel variant of ``KERNEL_MATH``):
    ``*_<dtype>`` fields when fitted; a variant without its own fit takes its math dtype's coefficients
    (fp8_block on a GPU without an fp8_block table: the per-tensor fp8 ones); else the dtype-independent
    ones (``gemm_k_half``, ``gemm_tile_*``, ``max_memory_efficiency``, ``kernel_overhead``)."""
    math = KERNEL_MATH.get(dtype, dtype)
    if math != dtype:
        base = gemm_coeffs(gpu, math)
        eff = gpu.max_compute_efficiency(dtype) if gpu.has(f"max_compute_efficiency_{dtype}") else base.efficiency
        mem = _get(gpu, f"gemm_memory_efficiency_{dtype}", base.bandwidth_bytes_per_s / gpu.hbm_bandwidth_bytes_per_s)
        return replace(
            base, efficiency=eff, k_half=_get(gpu, f"gemm_k_half_{dtype}", base.k_half),
            tile_m=_get(gpu, f"gemm_tile_m_{dtype}", base.tile_m), tile_n=_get(gpu, f"gemm_tile_n_{dtype}", base.tile_n),
            bandwidth_bytes_per_s=gpu.hbm_bandwidth_bytes_per_s * mem,
            overhead_s=_get(gpu, f"gemm_overhead_{dtype}", base.overhead_s),
            prepass_bytes=_get(gpu, f"gemm_prepass_bytes_{dtype}", base.prepass_bytes),
            split_k=_get(gpu, f"gemm_split_k_{dtype}", base.split_k), small_m=_get(gpu, f"gemm_small_m_{dtype}", base.small_m),
            prepass_row_s=_get(gpu, f"gemm_prepass_row_{dtype}", base.prepass_row_s),
            cta_bandwidth=_get(gpu, f"gemm_cta_bandwidth_{dtype}", base.cta_bandwidth),
            elem_bytes=KERNEL_ELEM_BYTES[dtype])
    mem = _get(gpu, f"gemm_memory_efficiency_{dtype}", gpu.max_memory_efficiency)
    return GemmCoeffs(
        peak_flops=gpu.peak_flops(dtype),
        efficiency=gpu.max_compute_efficiency(dtype),
        k_half=_get(gpu, f"gemm_k_half_{dtype}", gpu.q("gemm_k_half")),
        tile_m=_get(gpu, f"gemm_tile_m_{dtype}", gpu.q("gemm_tile_m")),
        tile_n=_get(gpu, f"gemm_tile_n_{dtype}", gpu.q("gemm_tile_n")),
        sms=float(gpu.sm_count),
        bandwidth_bytes_per_s=gpu.hbm_bandwidth_bytes_per_s * mem,
        overhead_s=_get(gpu, f"gemm_overhead_{dtype}", gpu.kernel_overhead_s),
        prepass_bytes=_get(gpu, f"gemm_prepass_bytes_{dtype}", 0.0),
        split_overhead_s=gpu.kernel_overhead_s,
        split_k=_get(gpu, f"gemm_split_k_{dtype}", 1.0),
        small_m=_get(gpu, f"gemm_small_m_{dtype}", 0.0),
        prepass_row_s=_get(gpu, f"gemm_prepass_row_{dtype}", 0.0),
        cta_bandwidth=_get(gpu, f"gemm_cta_bandwidth_{dtype}", 0.0),
        elem_bytes=float(DTYPE_BYTES.get(dtype, 2.0)),
    )


def gemm_math_s(c: GemmCoeffs, m: ArrayLike, n: ArrayLike, k: ArrayLike, batch: ArrayLike = 1.0) -> np.ndarray:
    """Time of the tensor-core part of a GEMM (``t_math`` in the module docstring), without overhead."""
    m = np.maximum(_a(m), 1.0)
    n = np.maximum(_a(n), 1.0)
    k = np.maximum(_a(k), 1.0)
    batch = np.maximum(_a(batch), 1.0)
    tile_m = np.where(m <= c.small_m, min(c.tile_m, 64.0), c.tile_m)
    tiles = np.ceil(m / tile_m) * np.ceil(n / c.tile_n) * batch
    split = np.minimum(np.maximum(np.floor(c.sms / tiles), 1.0), np.maximum(1.0, np.floor(k / SPLIT_K_MIN_K)))
    split = np.where(c.split_k > 0, split, 1.0)
    units = tiles * split
    waves = np.ceil(units / c.sms)
    wave_eff = units / (waves * c.sms)
    k_split = k / split
    k_eff = k_split / (k_split + c.k_half)
    t = 2.0 * m * n * k * batch / (c.peak_flops * c.efficiency * wave_eff * k_eff)
    if c.cta_bandwidth > 0:
        t = np.maximum(t, waves * k_split * (tile_m + c.tile_n) * c.elem_bytes / c.cta_bandwidth)
    t = t + np.where(split > 1.0, c.split_overhead_s + 8.0 * m * n * batch * split / c.bandwidth_bytes_per_s, 0.0)
    return t + gemm_prepass_s(c, m, k, batch)


def gemm_prepass_s(c: GemmCoeffs, m: ArrayLike, k: ArrayLike, batch: ArrayLike = 1.0) -> np.ndarray:
    """Time of the activation quantisation pass before a quantised GEMM, counted in ``t_math`` (the cost
    path reads GEMMs through their efficiency): ``prepass_bytes`` HBM bytes per activation element plus one
    row wave per SM."""
    m, k, batch = (np.maximum(_a(x), 1.0) for x in (m, k, batch))
    return c.prepass_bytes * m * k * batch / c.bandwidth_bytes_per_s + np.ceil(m * batch / c.sms) * c.prepass_row_s


def gemm_latency_s(c: GemmCoeffs, m: ArrayLike, n: ArrayLike, k: ArrayLike, batch: ArrayLike = 1.0,
                   bytes_: ArrayLike | None = None, elem_bytes: float = 2.0) -> np.ndarray:
    """Latency of one GEMM kernel. ``bytes_`` defaults to A + B read at ``elem_bytes`` and C written in 16 bit."""
    if bytes_ is None:
        mm, nn, kk, bb = (np.maximum(_a(x), 1.0) for x in (m, n, k, batch))
        bytes_ = bb * ((mm * kk + nn * kk) * elem_bytes + 2.0 * mm * nn)
    return np.maximum(gemm_math_s(c, m, n, k, batch), _a(bytes_) / c.bandwidth_bytes_per_s) + c.overhead_s


@dataclass(frozen=True)
class AttentionCoeffs:
    """Coefficients of the decode and prefill attention formulas for one GPU (SI units)."""

    peak_flops: float
    sms: float
    hbm_bandwidth: float
    decode_overhead_s: float
    decode_memory_efficiency: float
    decode_cta_overhead_s: float
    decode_compute_efficiency: float
    decode_fp8_kv_efficiency: float
    decode_ctas_per_sm: float
    decode_split_min_tokens: float
    decode_max_splits: float
    decode_window_pad: float
    decode_cta_bandwidth: float
    decode_cta_latency_s: float
    decode_fp8_cta_factor: float
    decode_combine_s: float
    decode_q_rows: float
    decode_graph_max_batch: float
    decode_graph_seq_s: float
    decode_seq_s: float
    prefill_overhead_s: float
    prefill_compute_efficiency: float
    prefill_k_half: float
    prefill_d_half: float
    prefill_q_tile: float
    prefill_memory_efficiency: float
    prefill_kv_traffic_bf16: float
    prefill_kv_traffic_fp8: float
    prefill_token_s: float
    prefill_fp8_token_factor: float
    prefill_fp8_overhead_s: float
    prefill_tile_rows: float
    prefill_multi_tile_s: float
    prefill_fp8_multi_tile_factor: float
    prefill_fp8_compute_factor: float
    prefill_fp8_d_half: float
    prefill_pack_gqa: float


# field name in the profile -> (AttentionCoeffs attribute, default when the profile has none)
ATTENTION_FIELDS = {
    "decode_attn_overhead": ("decode_overhead_s", None),  # None: kernel_overhead
    "decode_attn_memory_efficiency": ("decode_memory_efficiency", None),  # None: max_memory_efficiency
    "decode_attn_cta_overhead": ("decode_cta_overhead_s", 0.0),
    "decode_attn_compute_efficiency": ("decode_compute_efficiency", 0.5),
    "decode_attn_fp8_kv_efficiency": ("decode_fp8_kv_efficiency", 1.0),
    "decode_attn_ctas_per_sm": ("decode_ctas_per_sm", 1.0),
    "decode_attn_split_min_tokens": ("decode_split_min_tokens", 64.0),
    "decode_attn_max_splits": ("decode_max_splits", 32.0),
    "decode_attn_window_pad": ("decode_window_pad", 0.0),
    "decode_attn_cta_bandwidth": ("decode_cta_bandwidth", None),  # None: an SM's even share of the stream
    "decode_attn_cta_latency": ("decode_cta_latency_s", 0.0),
    "decode_attn_fp8_cta_factor": ("decode_fp8_cta_factor", 1.0),
    "decode_attn_combine_overhead": ("decode_combine_s", 0.0),
    "decode_attn_q_rows": ("decode_q_rows", 128.0),
    "decode_attn_graph_max_batch": ("decode_graph_max_batch", 0.0),
    "decode_attn_graph_seq_time": ("decode_graph_seq_s", 0.0),
    "decode_attn_seq_time": ("decode_seq_s", 0.0),
    "prefill_attn_overhead": ("prefill_overhead_s", None),
    "prefill_attn_compute_efficiency": ("prefill_compute_efficiency", 0.5),
    "prefill_attn_k_half": ("prefill_k_half", 0.0),
    "prefill_attn_d_half": ("prefill_d_half", 0.0),
    "prefill_attn_q_tile": ("prefill_q_tile", 128.0),
    "prefill_attn_memory_efficiency": ("prefill_memory_efficiency", None),
    "prefill_attn_kv_traffic_bf16": ("prefill_kv_traffic_bf16", 4.0),
    "prefill_attn_kv_traffic_fp8": ("prefill_kv_traffic_fp8", 2.0),
    "prefill_attn_token_time": ("prefill_token_s", 0.0),
    "prefill_attn_fp8_token_factor": ("prefill_fp8_token_factor", 1.0),
    "prefill_attn_fp8_overhead": ("prefill_fp8_overhead_s", 0.0),
    "prefill_attn_tile_rows": ("prefill_tile_rows", 64.0),
    "prefill_attn_multi_tile_overhead": ("prefill_multi_tile_s", 0.0),
    "prefill_attn_fp8_multi_tile_factor": ("prefill_fp8_multi_tile_factor", 1.0),
    "prefill_attn_fp8_compute_factor": ("prefill_fp8_compute_factor", 1.0),
    "prefill_attn_fp8_d_half": ("prefill_fp8_d_half", 0.0),  # 0: no head-dim falloff
    "prefill_attn_pack_gqa": ("prefill_pack_gqa", 0.0),
}


def attention_coeffs(gpu: GPU, dtype: str = "bf16") -> AttentionCoeffs:
    """The profile's attention coefficients (defaults: a plain roofline at the GEMM efficiency of ``dtype``)."""
    vals = {}
    for field, (attr, default) in ATTENTION_FIELDS.items():
        if default is None and field == "decode_attn_cta_bandwidth":
            default = gpu.hbm_bandwidth_bytes_per_s * gpu.max_memory_efficiency / gpu.sm_count
        elif default is None:
            default = gpu.kernel_overhead_s if field.endswith("overhead") else gpu.max_memory_efficiency
        if field == "prefill_attn_compute_efficiency" and not gpu.has(field):
            default = gpu.max_compute_efficiency(dtype)
        vals[attr] = _get(gpu, field, default)
    return AttentionCoeffs(peak_flops=gpu.peak_flops(dtype), sms=float(gpu.sm_count),
                           hbm_bandwidth=gpu.hbm_bandwidth_bytes_per_s, **vals)


def decode_kv_tokens(c: AttentionCoeffs, s: ArrayLike, window: ArrayLike = 0.0) -> np.ndarray:
    """KV tokens a decode kernel reads per sequence: all ``s``, or the window plus the tile it straddles."""
    s = np.maximum(_a(s), 1.0)
    w = _a(window)
    return np.where(w > 0, np.minimum(s, w + c.decode_window_pad), s)


def decode_attention_latency_s(c: AttentionCoeffs, b: ArrayLike, s: ArrayLike, h: ArrayLike, g: ArrayLike,
                               d: ArrayLike, kv_bytes: ArrayLike = 2.0, window: ArrayLike = 0.0) -> np.ndarray:
    """Latency of one decode-attention call: ``b`` sequences, ``s`` KV tokens each (the new one included),
    ``h`` query heads, ``g`` KV heads, head dim ``d``, ``kv_bytes`` per KV element (2 bf16, 1 fp8).
    ``b < 1`` is an expected count (a call made in that share of iterations): ``b`` times one sequence's.
    Past the share, the call depends on ``b`` and ``g`` only through ``b g`` (its work units), ``h / g`` and
    whether ``b`` is a captured batch (``b <= graph_max_batch``): a sweep's (TP, batch) grid repeats few of
    those, so its contexts are costed once per distinct combination."""
    share = np.minimum(np.maximum(_a(b), 0.0), 1.0)  # (np.clip: the same, at more cost per call)
    g = np.maximum(_a(g), 1e-9)
    bb = np.maximum(_a(b), 1.0)
    graph = (bb <= c.decode_graph_max_batch).astype(float)
    args = (bb * g, np.maximum(_a(h), 1e-9) / g, s, d, kv_bytes, window, graph)
    if np.ndim(s) == 0:  # one context (a single prediction): nothing to fold
        lat = _decode_call_s(c, *args)
    else:
        lat = distinct_call(lambda *a: _decode_call_s(c, *a), args)
    lat = lat + bb * (c.decode_seq_s + graph * c.decode_graph_seq_s)
    return lat if bool((share == 1.0).all()) else share * lat  # (x 1.0 changes nothing)


def _decode_call_s(c: AttentionCoeffs, bg: ArrayLike, hg: ArrayLike, s: ArrayLike, d: ArrayLike,
                   kv_bytes: ArrayLike, window: ArrayLike, graph: ArrayLike = 0.0) -> np.ndarray:
    """One decode-attention call of ``bg`` (sequences x KV heads, at least one sequence) work units with
    ``hg`` query heads per KV head (``graph`` 1: a captured batch, split-KV mode on):
    :func:`decode_attention_latency_s` before its share and per-sequence term."""
    d, kv_bytes = (np.maximum(_a(x), 1e-9) for x in (d, kv_bytes))
    se = decode_kv_tokens(c, s, window)
    slots = c.sms * c.decode_ctas_per_sm
    m_blocks = np.ceil(hg / c.decode_q_rows)
    units = bg * m_blocks
    split = np.minimum(np.maximum(np.floor(slots / units), 1.0),
                       np.minimum(c.decode_max_splits, np.ceil(se / c.decode_split_min_tokens)))
    split_mode = (split > 1.0) | (_a(graph) > 0.0)
    ctas = units * split
    waves = np.ceil(ctas / slots)
    tok = np.ceil(se / split)
    fp8 = kv_bytes < 2.0
    eff = c.decode_memory_efficiency * np.where(fp8, c.decode_fp8_kv_efficiency, 1.0)
    bw_cta = np.minimum(c.decode_cta_bandwidth, c.hbm_bandwidth * eff * m_blocks / np.minimum(ctas, slots))
    t_mem = tok * d * 2.0 * kv_bytes / bw_cta
    t_math = 4.0 * tok * d * np.maximum(hg / m_blocks, 16.0) * slots / (c.peak_flops * c.decode_compute_efficiency)
    t_fill = c.decode_cta_latency_s * d / 128.0 * np.where(fp8, c.decode_fp8_cta_factor, 1.0)
    cta = c.decode_cta_overhead_s + np.maximum(t_fill, np.maximum(t_mem, t_math))
    # query-row elements (Q read, O written): split-KV mode reads Q per split, writes fp32 partial rows and
    # the combine reads them back and writes O
    rows = bg * hg * d
    row_bytes = np.where(split_mode, 10.0 * split + 2.0, 4.0)
    t_rows = rows * row_bytes / (c.hbm_bandwidth * c.decode_memory_efficiency)
    return c.decode_overhead_s + waves * cta + t_rows + np.where(split > 1.0, c.decode_combine_s, 0.0)


def prefill_keys(c: AttentionCoeffs, t: ArrayLike, s: ArrayLike, window: ArrayLike = 0.0,
                 r: ArrayLike = 1.0) -> np.ndarray:
    """Mean keys per query row of a causal prefill of ``t`` new tokens over ``s`` keys (q tiles included): a
    tile packs ``q_tile`` rows of ``r`` query heads per KV head, i.e. ``q_tile / r`` tokens."""
    t = np.maximum(_a(t), 1.0)
    s = np.maximum(_a(s), t)
    w = _a(window)
    tile_tokens = c.prefill_q_tile / np.maximum(_a(r), 1.0)
    lo = s - t + tile_tokens / 2.0  # keys of the first and last rows grow linearly from lo to hi
    hi = s + tile_tokens / 2.0
    keys = (lo + hi) / 2.0
    cap = w + tile_tokens  # a sliding window caps each row's keys: the mean of min(keys, cap) over the rows
    below = np.clip((cap - lo) / (hi - lo), 0.0, 1.0)
    capped = below * (lo + np.minimum(cap, hi)) / 2.0 + (1.0 - below) * cap
    keys = np.where(w > 0, np.minimum(keys, capped), keys)
    return np.minimum(keys, s)


def attention_tile_keys(c: AttentionCoeffs, t: ArrayLike, s: ArrayLike, window: ArrayLike = 0.0,
                        r: ArrayLike = 1.0) -> np.ndarray:
    """Keys per query row that a flash-attention call runs through its tensor cores, as its latency formula
    tiles it: decode (``t <= 1``) the KV tokens it reads (:func:`decode_kv_tokens`: a sliding window plus the
    tile it straddles); prefill the mean over its query rows (:func:`prefill_keys`: the causal diagonal tiles
    run whole, a sliding window runs the tile it straddles; with GQA packing a q tile holds ``q_tile / r``
    tokens). Kernel energy is charged on these FLOPs (``4 x query rows x keys x head dim``), padding included,
    as fused MoE is on its padded tiles (:mod:`energylens.cost.plan_eval`, :mod:`energylens.calibration.power`)."""
    t = _a(t)
    r = np.maximum(_a(r), 1.0) if c.prefill_pack_gqa > 0.0 else 1.0
    return np.where(t <= 1.0, decode_kv_tokens(c, s, window), prefill_keys(c, t, s, window, r))


def attention_mma_dtype(gpu: GPU, kv_bytes: float, act_dtype: str = "bf16") -> str:
    """Tensor-core dtype whose J/FLOP a flash-attention call is charged at: with an fp8 KV cache the kernels
    quantise Q and run fp8 Q/K/V tiles (the latency formula's fp8 kernel, ``prefill_attn_fp8_*``) where the
    GPU has fp8 tensor cores (``energy_per_flop_fp8``); otherwise the activation dtype (the cache dequantised)."""
    if kv_bytes < 2.0 and gpu.has("energy_per_flop_fp8") and gpu.has("peak_flops_fp8"):
        return "fp8"
    return act_dtype


def prefill_attention_latency_s(c: AttentionCoeffs, b: ArrayLike, t: ArrayLike, s: ArrayLike, h: ArrayLike,
                                g: ArrayLike, d: ArrayLike, kv_bytes: ArrayLike = 2.0,
                                window: ArrayLike = 0.0) -> np.ndarray:
    """Latency of one prefill-attention call: ``b`` sequences of ``t`` new tokens over ``s`` keys each
    (``b < 1``: an expected count, ``b`` times one sequence's call)."""
    share = np.minimum(np.maximum(_a(b), 0.0), 1.0)
    b = np.maximum(_a(b), 1.0)
    h, g, d = (np.maximum(_a(x), 1e-9) for x in (h, g, d))
    t = np.maximum(_a(t), 1.0)
    if c.prefill_pack_gqa > 0.0:  # the r query heads of a KV head packed into the q tiles
        r = np.maximum(h / g, 1.0)
        keys = prefill_keys(c, t, s, window, r)
        units = b * g * np.ceil(t * r / c.prefill_q_tile)
    else:  # one query head per tile
        keys = prefill_keys(c, t, s, window)
        units = b * h * np.ceil(t / c.prefill_q_tile)
    wave_eff = units / (np.ceil(units / c.sms) * c.sms)
    eff = (c.prefill_compute_efficiency * wave_eff * keys / (keys + c.prefill_k_half) * d / (d + c.prefill_d_half))
    fp8 = _a(kv_bytes) < 2.0
    if c.prefill_fp8_d_half > 0.0 or c.prefill_fp8_compute_factor != 1.0:  # the fp8 kernel (fp8 Q, K, V tiles)
        falloff = 1.0 / (1.0 + (d / c.prefill_fp8_d_half) ** 2) if c.prefill_fp8_d_half > 0.0 else 1.0
        eff = eff * np.where(fp8, c.prefill_fp8_compute_factor * falloff, 1.0)
    t_math = 4.0 * units * c.prefill_q_tile * keys * d / (c.peak_flops * eff)
    traffic = np.where(fp8, c.prefill_kv_traffic_fp8, c.prefill_kv_traffic_bf16)
    t_kv = b * t * (h * d * 4.0 + g * d * traffic) / (c.hbm_bandwidth * c.prefill_memory_efficiency)
    t_tok = np.ceil(b * t / c.sms) * c.prefill_token_s * np.where(fp8, c.prefill_fp8_token_factor, 1.0)
    multi = np.where(t * h / g > c.prefill_tile_rows, c.prefill_multi_tile_s, 0.0)  # > one packed query tile
    t_fixed = c.prefill_overhead_s + np.where(fp8, c.prefill_fp8_overhead_s + c.prefill_fp8_multi_tile_factor * multi,
                                              multi)
    return share * (t_fixed + t_math + t_kv + t_tok)


def attention_latency_s(c: AttentionCoeffs, b: ArrayLike, t: ArrayLike, s: ArrayLike, h: ArrayLike, g: ArrayLike,
                        d: ArrayLike, kv_bytes: ArrayLike = 2.0, window: ArrayLike = 0.0) -> np.ndarray:
    """Decode formula where ``t == 1`` (one new token per sequence), prefill formula elsewhere."""
    if np.ndim(t) == 0:  # one kind of call for all (a sweep's decode or prefill phase): only its formula
        if float(t) <= 1.0:
            return decode_attention_latency_s(c, b, s, h, g, d, kv_bytes, window)
        return prefill_attention_latency_s(c, b, t, s, h, g, d, kv_bytes, window)
    dec = decode_attention_latency_s(c, b, s, h, g, d, kv_bytes, window)
    pre = prefill_attention_latency_s(c, b, t, s, h, g, d, kv_bytes, window)
    return np.where(_a(t) <= 1.0, dec, pre)


MOE_FIELDS = {  # profile field prefix -> (GemmCoeffs attribute); suffix _<dtype>
    "moe_compute_efficiency": "efficiency", "moe_k_half": "k_half", "moe_tile_m": "tile_m", "moe_tile_n": "tile_n",
    "moe_memory_efficiency": "bandwidth_bytes_per_s", "moe_overhead": "overhead_s",
}


def moe_coeffs(gpu: GPU, dtype: str, format_key: str = "") -> GemmCoeffs:
    """Coefficients of the fused-MoE grouped GEMMs at tensor-core dtype ``dtype``: the ``moe_*_<format_key>``
    fields where the profile has a fit of the experts' own checkpoint format (the kernel vLLM runs for it, e.g.
    ``mxfp4``, ``int4``, ``nvfp4``, ``fp8_block``; see ``energylens.graph.precision.moe_format_key``), else
    ``moe_*_<dtype>`` fields when fitted, else the GEMM ones."""
    g = gemm_coeffs(gpu, dtype)
    if format_key and gpu.has(f"moe_overhead_{format_key}"):
        dtype = format_key
    mem = _get(gpu, f"moe_memory_efficiency_{dtype}", g.bandwidth_bytes_per_s / gpu.hbm_bandwidth_bytes_per_s)
    return replace(g, efficiency=_get(gpu, f"moe_compute_efficiency_{dtype}", g.efficiency),
                   k_half=_get(gpu, f"moe_k_half_{dtype}", g.k_half),
                   tile_m=_get(gpu, f"moe_tile_m_{dtype}", g.tile_m), tile_n=_get(gpu, f"moe_tile_n_{dtype}", g.tile_n),
                   bandwidth_bytes_per_s=gpu.hbm_bandwidth_bytes_per_s * mem,
                   overhead_s=_get(gpu, f"moe_overhead_{dtype}", g.overhead_s), prepass_bytes=0.0,
                   prepass_row_s=0.0, cta_bandwidth=0.0, split_k=0.0, small_m=0.0)


def expert_tiles(tokens: ArrayLike, hit: ArrayLike, tile_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sums over the expert axis (last) of ``tokens`` (expected tokens of expert e) and ``hit`` (probability
    that expert e gets any): (M-tiles, experts hit, tokens). A hit expert holds ``tokens / hit`` rows,
    padded to ``tile_m`` rows per tile."""
    tokens = _a(tokens)
    hit = np.clip(_a(hit), 0.0, 1.0)
    rows = np.where(hit > 0, tokens / np.maximum(hit, 1e-30), 0.0)
    return np.sum(hit * np.ceil(rows / tile_m), axis=-1), np.sum(hit, axis=-1), np.sum(tokens, axis=-1)


def grouped_gemm_math_s(c: GemmCoeffs, m_tiles: ArrayLike, n: ArrayLike, k: ArrayLike) -> np.ndarray:
    """Tensor-core time of a grouped GEMM with ``m_tiles`` expert row tiles (summed over experts), each
    ``tile_m`` rows, over N columns and a K-deep reduction: padded tile FLOPs over the wave-quantised rate."""
    n, k = _a(n), np.maximum(_a(k), 1.0)
    tiles = _a(m_tiles) * np.ceil(n / c.tile_n)
    wave_eff = np.where(tiles > 0, tiles / (np.maximum(np.ceil(tiles / c.sms), 1.0) * c.sms), 1.0)
    k_eff = k / (k + c.k_half)
    return 2.0 * tiles * c.tile_m * c.tile_n * k / (c.peak_flops * c.efficiency * wave_eff * k_eff)


def grouped_gemm_s(c: GemmCoeffs, m_tiles: ArrayLike, experts_hit: ArrayLike, tokens: ArrayLike, n: ArrayLike,
                   k: ArrayLike, elem_bytes: float = 2.0) -> np.ndarray:
    """One grouped GEMM over experts, from :func:`expert_tiles`: ``max(t_math, t_memory)`` (no overhead);
    only hit experts' weights are read."""
    n, k = _a(n), _a(k)
    t_math = grouped_gemm_math_s(c, m_tiles, n, k)
    moved = _a(experts_hit) * n * k * elem_bytes + _a(tokens) * (k * elem_bytes + 2.0 * n)
    return np.maximum(t_math, moved / c.bandwidth_bytes_per_s)


def fused_moe_latency_s(c: GemmCoeffs, tokens: ArrayLike, hit: ArrayLike, hidden: ArrayLike, inter: ArrayLike,
                        elem_bytes: float = 2.0) -> np.ndarray:
    """Latency of one fused-MoE call on one GPU: gate+up grouped GEMM (N = 2 ``inter``, K = ``hidden``) then
    down (N = ``hidden``, K = ``inter``), ``inter`` being this GPU's shard; ``tokens``/``hit`` per local
    expert on the last axis (see :func:`expert_tiles`)."""
    m_tiles, experts, total = expert_tiles(tokens, hit, c.tile_m)
    return moe_from_tiles_s(c, m_tiles, experts, total, hidden, inter, elem_bytes)


def moe_from_tiles_s(c: GemmCoeffs, m_tiles, experts, total, hidden, inter, elem_bytes: float = 2.0) -> np.ndarray:
    """:func:`fused_moe_latency_s` from the expert sums of :func:`expert_tiles`."""
    up = grouped_gemm_s(c, m_tiles, experts, total, 2.0 * _a(inter), hidden, elem_bytes)
    down = grouped_gemm_s(c, m_tiles, experts, total, hidden, inter, elem_bytes)
    return c.overhead_s + up + down


def moe_routed_s(routed: ArrayLike, inter: ArrayLike, bytes_inter: float, bandwidth_bytes_per_s: float) -> np.ndarray:
    """Time of the element-wise passes of a fused-MoE call over its ``routed`` (token, expert) pairs (all
    experts, not only this GPU's): ``bytes_inter`` HBM bytes per pair per element of the (sharded) intermediate
    (activation in and out, zero tiles of non-local experts)."""
    return _a(routed) * bytes_inter * _a(inter) / bandwidth_bytes_per_s


def moe_token_pass_s(tokens: ArrayLike, hidden: ArrayLike, bytes_hidden: float,
                     bandwidth_bytes_per_s: float) -> np.ndarray:
    """Time of a fused-MoE call's per-token passes over the hidden vector (the top-k combine writing each
    token's output row, whatever top-k): ``bytes_hidden`` HBM-equivalent bytes per token per hidden element.
    Fitted on the kernel tables, far above the bytes those passes move (a few per element): they run one row
    per CTA and are bound by each row's load latency, not by HBM bandwidth."""
    return _a(tokens) * bytes_hidden * _a(hidden) / bandwidth_bytes_per_s
