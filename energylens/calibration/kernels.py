"""Fit the kernel-family latency formulas of :mod:`energylens.cost.families` to the shipped kernel tables.

Per GPU with tables (H100 SXM, H200, B200) and per family: bounded non-linear least squares on
``log(predicted / measured)`` (soft-L1 loss, so a few odd rows do not steer the fit), with the integer
tile sizes chosen by a small grid search. Whole shapes are held out (``HOLDOUT``): the coefficients are
fitted on the other rows only and the error is reported on the held-out shapes.

Which table rows each family uses:

* GEMM: ``<gpu>_0.24.0_gemm`` rows of the dtype (``bfloat16`` -> bf16, ``fp8`` per-tensor -> fp8, ``fp8_block``
  -> the fp8_block kernel variant (:func:`fit_gemm_block`: the table's host-side floor is reported, not
  costed), ``nvfp4`` -> the nvfp4 variant; ``energylens.graph.precision.gemm_kernel`` picks the variant).
* decode attention: ``<gpu>_0.24.0_generation_attention`` (``step`` + 1 KV tokens per sequence).
* prefill attention: ``<gpu>_0.24.0_context_attention`` (no cached prefix: T = S = ``isl``).
* fused MoE: ``<gpu>_0.24.0_moe`` rows of the dtype; expected tokens per expert from the table's routing
  distribution (:func:`aic_expert_loads`).
* all-reduce: ``<gpu>_0.24.0_custom_allreduce``, CUDA-graph rows up to 8 MiB (vLLM's custom all-reduce).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.optimize import least_squares

from energylens.calibration.tables import Table, load_table
from energylens.cost import families as K
from energylens.cost.custom_ar import CUSTOM_AR_MAX_BYTES
from energylens.graph.precision import format_named, gemm_dtype, int_weights
from energylens.hardware.profile import GPU

# held-out shapes: every row with one of these values is never fitted, only evaluated
HOLDOUT = {
    "gemm": {"n": (1536, 5120, 12288), "k": (1536, 5120, 12288)},
    "decode_attention": {"num_heads": (5, 12, 40), "num_key_value_heads": (2,), "head_dim": (192,)},
    "prefill_attention": {"num_heads": (5, 12, 40), "num_key_value_heads": (2,), "head_dim": (192,)},
    "moe": {"num_experts": (32, 160), "hidden_size": (2880, 5120)},
}
GEMM_TABLE_DTYPES = {"bfloat16": "bf16", "fp8": "fp8", "fp8_block": "fp8_block", "nvfp4": "nvfp4"}
_ELEM_BYTES = {"bf16": 2.0, "fp8": 1.0, "fp8_block": 1.0, "nvfp4": 0.5625}  # nvfp4: 4 bit + an fp8 scale per 16


@dataclass
class Coefficient:
    name: str  # profile field
    value: float
    unit: str
    reading: str  # physical reading, one line
    kind: str = "fitted"  # "model": fixed by the kernel vLLM runs, not fitted


@dataclass
class FamilyFit:
    """One family's fit on one GPU: coefficients, rows used and held-out errors."""

    gpu: str
    family: str  # e.g. "gemm bf16", "decode attention"
    source: str  # table file
    coefficients: list[Coefficient]
    rows_fit: int
    rows_held: int
    held_ape: np.ndarray = field(repr=False)  # |pred / measured - 1| on held-out rows
    fit_ape: np.ndarray = field(repr=False)
    in_profile: bool = True

    @property
    def held_median_pct(self) -> float:
        return 100.0 * float(np.median(self.held_ape)) if self.held_ape.size else float("nan")

    @property
    def held_mean_pct(self) -> float:
        return 100.0 * float(np.mean(self.held_ape)) if self.held_ape.size else float("nan")


def holdout_mask(table: Table, family: str) -> np.ndarray:
    mask = np.zeros(len(table), dtype=bool)
    for col, values in HOLDOUT[family].items():
        mask |= np.isin(table[col], values)
    return mask


def subsample(table: Table, every: int) -> Table:
    """Every ``every``-th row (deterministic), for quick checks."""
    return table if every <= 1 else table.select(np.arange(len(table)) % every == 0)


def _lsq(resid: Callable[[np.ndarray], np.ndarray], x0: Sequence[float], lo: Sequence[float],
         hi: Sequence[float], scale: Sequence[float]):
    return least_squares(resid, np.asarray(x0, float), bounds=(np.asarray(lo, float), np.asarray(hi, float)),
                         loss="soft_l1", f_scale=0.05, x_scale=np.asarray(scale, float), max_nfev=400)


def _grid_lsq(resid: Callable[[tuple, np.ndarray], np.ndarray], grid, x0: Sequence[float], lo: Sequence[float],
              hi: Sequence[float], scale: Sequence[float]) -> tuple[tuple, np.ndarray]:
    """Fit the free coefficients at every point of a grid of fixed (structural) values; the point whose fit has
    the smallest median |log residual| wins. Returns (grid point, fitted coefficients)."""
    best = None
    for fixed in grid:
        r = _lsq(lambda x, fixed=fixed: resid(fixed, x), x0, lo, hi, scale)
        cost = float(np.median(np.abs(r.fun)))
        if best is None or cost < best[0]:
            best = (cost, fixed, r.x)
    return best[1], best[2]


# ---------------------------------------------------------------- GEMM
# kernel structure of the GEMM vLLM runs per table dtype (not fitted): cuBLAS (bf16) splits K to fill idle
# SMs; CUTLASS scaled_mm (fp8), DeepGEMM (fp8_block) and FlashInfer CuTe-DSL (nvfp4) never do and run a
# 64-row tile for M <= 64 (small-M dispatch)
_GEMM_SPLIT_K = {"bf16": 1.0}
_GEMM_SMALL_M = {"fp8": 64.0, "fp8_block": 64.0, "nvfp4": 64.0}


def _gemm_model(gpu: GPU, dtype: str, x: np.ndarray, tile_m: float, tile_n: float) -> K.GemmCoeffs:
    eff, k_half, mem, ovh, prepass, prepass_row, cta_bw = x
    math = K.KERNEL_MATH.get(dtype, dtype)  # a weight-only MoE format (int4, mxfp4): bf16 until fit_moe sets it
    peak = gpu.peak_flops(math if gpu.has(f"peak_flops_{math}") else "bf16")
    return K.GemmCoeffs(peak, eff, k_half, tile_m, tile_n, float(gpu.sm_count), gpu.hbm_bandwidth_bytes_per_s * mem,
                        ovh, prepass, gpu.kernel_overhead_s, split_k=_GEMM_SPLIT_K.get(dtype, 0.0),
                        small_m=_GEMM_SMALL_M.get(dtype, 0.0), prepass_row_s=prepass_row, cta_bandwidth=cta_bw,
                        elem_bytes=_ELEM_BYTES.get(dtype, 2.0))


def fit_gemm_block(gpu: GPU, table: Table, fp8: FamilyFit) -> FamilyFit:
    """fp8 128x128 block-scaled GEMM (DeepGEMM on Hopper and Blackwell). Its table rows sit on a floor of
    ~90 us (H100/H200) to ~200 us (B200) up to M N K ~ 1e11, far above what the same shapes take per-tensor
    (~10 us) and above what served block-fp8 models allow (MiniMax-M2.5, 62 layers, decodes in 8 ms on 8 H200
    in ``silicon/silicon_vllm_dev.csv``): a host-side floor of the measurement, not kernel time. The table is
    read as ``max(host_floor, device latency)``; only the device coefficients that the rows above the floor
    determine are fitted (tensor-core efficiency, K half-point, the per-token-group quantisation pass), the rest
    (memory efficiency, overhead, CTA bandwidth, tiles, small-M dispatch, row pass) are the per-tensor fp8
    kernel's. The floor is reported, never costed."""
    t = table.select(table["gemm_dtype"] == "fp8_block")
    held = holdout_mask(t, "gemm")
    m, n, k, y = t["m"], t["n"], t["k"], t["latency_ms"] * 1e-3
    f = {c.name.removesuffix("_fp8"): c.value for c in fp8.coefficients}
    eb = _ELEM_BYTES["fp8_block"]

    def model(x, sel=slice(None)):
        fixed = [x[0], x[1], f["gemm_memory_efficiency"], f["gemm_overhead"], x[2], f["gemm_prepass_row"],
                 f["gemm_cta_bandwidth"]]
        c = _gemm_model(gpu, "fp8_block", np.array(fixed), f["gemm_tile_m"], f["gemm_tile_n"])
        return np.maximum(x[3], K.gemm_latency_s(c, m[sel], n[sel], k[sel], elem_bytes=eb))

    r = _lsq(lambda x: np.log(model(x, ~held) / y[~held]), [0.7, 256.0, 4.0, 9e-5], [0.05, 0.0, 0.0, 0.0],
             [1.0, 8192.0, 32.0, 1e-3], [1.0, 100.0, 1.0, 1e-5])
    x = r.x
    ape = np.abs(model(x) / y - 1.0)
    coeffs = [
        Coefficient("max_compute_efficiency_fp8_block", float(x[0]), "1",
                    "tensor-core fraction of the fp8 peak a long block-scaled GEMM reaches (block scales applied in the mainloop)"),
        Coefficient("gemm_k_half_fp8_block", float(x[1]), "1", "K at which per-tile prologue/epilogue halves the mainloop efficiency"),
        Coefficient("gemm_prepass_bytes_fp8_block", float(x[2]), "B",
                    "HBM bytes per activation element of the per-token-group (1x128) fp8 quantisation pass"),
        Coefficient("gemm_host_floor_fp8_block", float(x[3]), "s",
                    "floor of the table's timings (host-side, absent under CUDA graphs): reported, not costed", "reported"),
    ]
    above = held & (y > 1.5 * x[3])  # held-out rows the device formula decides (well above the floor)
    label = (f"gemm fp8_block (held-out rows above 1.5x the floor: {int(above.sum())}, median "
             f"{100 * float(np.median(ape[above])) if above.any() else float('nan'):.1f} %)")
    return FamilyFit(gpu.key, label, t.path, coeffs, int((~held).sum()), int(held.sum()), ape[held], ape[~held])


def fit_gemm(gpu: GPU, table: Table, table_dtype: str) -> FamilyFit:
    dtype = GEMM_TABLE_DTYPES[table_dtype]
    t = table.select(table["gemm_dtype"] == table_dtype)
    held = holdout_mask(t, "gemm")
    m, n, k, y = t["m"], t["n"], t["k"], t["latency_ms"] * 1e-3
    eb = _ELEM_BYTES[dtype]
    quant = dtype != "bf16"
    x0 = [0.7, 256.0, 0.8, 5e-6, 3.0 if quant else 0.0, 5e-7 if quant else 0.0, 2e11]
    lo = [0.05, 0.0, 0.05, 0.0, 0.0, 0.0, 1e10]
    hi = [1.0, 8192.0, 1.0, 1e-3, 16.0 if quant else 1e-9, 1e-5 if quant else 1e-15, 1e13]
    def resid(tiles, x):
        c = _gemm_model(gpu, dtype, x, *tiles)
        return np.log(K.gemm_latency_s(c, m[~held], n[~held], k[~held], elem_bytes=eb) / y[~held])
    (tm, tn), x = _grid_lsq(resid, itertools.product((64.0, 128.0), (64.0, 128.0, 256.0)), x0, lo, hi,
                            [1.0, 100.0, 1.0, 1e-6, 1.0, 1e-7, 1e11])
    c = _gemm_model(gpu, dtype, x, tm, tn)
    ape = np.abs(K.gemm_latency_s(c, m, n, k, elem_bytes=eb) / y - 1.0)
    d = dtype
    coeffs = [
        Coefficient(f"max_compute_efficiency_{d}", float(x[0]), "1", "tensor-core fraction of the spec peak a long, many-wave GEMM reaches"),
        Coefficient(f"gemm_k_half_{d}", float(x[1]), "1", "K at which per-tile prologue/epilogue halves the mainloop efficiency"),
        Coefficient(f"gemm_tile_m_{d}", tm, "1", "output tile rows per CTA (wave quantisation; grid 64/128)"),
        Coefficient(f"gemm_tile_n_{d}", tn, "1", "output tile columns per CTA (wave quantisation; grid 64/128/256)"),
        Coefficient(f"gemm_memory_efficiency_{d}", float(x[2]), "1", "fraction of HBM bandwidth a weight-streaming (small-M) GEMM reaches"),
        Coefficient(f"gemm_overhead_{d}", float(x[3]), "s", "fixed time per GEMM call (launch, setup, tail)"),
        Coefficient(f"gemm_cta_bandwidth_{d}", float(x[6]), "B/s", "operand bytes per second one CTA streams at most (loads in flight): caps few-tile GEMMs"),
        Coefficient(f"gemm_split_k_{d}", c.split_k, "1", "1: the kernel splits K to fill idle SMs (cuBLAS); 0: never (fixed per kernel)", "model"),
        Coefficient(f"gemm_small_m_{d}", c.small_m, "1", "M at or below which the kernel runs a 64-row tile (fixed per kernel; 0: none)", "model"),
    ]
    if quant:
        coeffs.append(Coefficient(f"gemm_prepass_bytes_{d}", float(x[4]), "B",
                                  "HBM bytes per activation element moved by the dynamic quantisation pass before the GEMM"))
        coeffs.append(Coefficient(f"gemm_prepass_row_{d}", float(x[5]), "s",
                                  "time per activation row per SM of the quantisation pass (one CTA reduces each row's scale)"))
    return FamilyFit(gpu.key, f"gemm {dtype}", t.path, coeffs, int((~held).sum()), int(held.sum()), ape[held], ape[~held])


# ---------------------------------------------------------------- attention
def _attn(gpu: GPU, **over: float) -> K.AttentionCoeffs:
    return replace(K.attention_coeffs(gpu), **over)


_DECODE_X = ("decode_overhead_s", "decode_memory_efficiency", "decode_cta_overhead_s", "decode_compute_efficiency",
             "decode_fp8_kv_efficiency", "decode_cta_bandwidth", "decode_cta_latency_s", "decode_fp8_cta_factor",
             "decode_combine_s", "decode_graph_seq_s", "decode_seq_s")
_DECODE_GRID = {"decode_ctas_per_sm": (1.0,), "decode_split_min_tokens": (64.0, 128.0, 256.0),
                "decode_max_splits": (32.0,), "decode_window_pad": (128.0,), "decode_q_rows": (32.0, 64.0, 128.0),
                "decode_graph_max_batch": (0.0, 512.0)}


def _decode_inputs(t: Table) -> tuple[np.ndarray, ...]:
    kvb = np.where(t["kv_cache_dtype"] == "fp8", 1.0, 2.0)
    return (t["batch_size"], t["step"] + 1.0, t["num_heads"], t["num_key_value_heads"], t["head_dim"], kvb,
            t["window_size"])


def fit_decode(gpu: GPU, table: Table) -> FamilyFit:
    held = holdout_mask(table, "decode_attention")
    args = _decode_inputs(table)
    fit_args = tuple(a[~held] for a in args)
    y = table["latency_ms"] * 1e-3
    x0 = [8e-6, 0.9, 1e-6, 0.2, 0.8, 6e10, 1e-6, 1.5, 2e-6, 1e-8, 1e-9]
    lo = [0.0, 0.05, 0.0, 0.01, 0.1, 5e9, 0.0, 0.5, 0.0, 0.0, 0.0]
    hi = [1e-4, 1.0, 2e-5, 1.0, 1.2, 1e12, 2e-5, 4.0, 3e-5, 1e-7, 1e-7]
    sc = [1e-6, 1.0, 1e-6, 0.1, 0.1, 1e10, 1e-6, 1.0, 1e-6, 1e-8, 1e-8]
    keys = list(_DECODE_GRID)

    def resid(combo, x):
        c = _attn(gpu, **dict(zip(keys, combo, strict=True)), **dict(zip(_DECODE_X, x, strict=True)))
        return np.log(K.decode_attention_latency_s(c, *fit_args) / y[~held])
    combo, x = _grid_lsq(resid, itertools.product(*(_DECODE_GRID[k] for k in keys)), x0, lo, hi, sc)
    fixed = dict(zip(keys, combo, strict=True))
    c = _attn(gpu, **fixed, **dict(zip(_DECODE_X, x, strict=True)))
    ape = np.abs(K.decode_attention_latency_s(c, *args) / y - 1.0)
    readings = {
        "decode_attn_overhead": ("s", "fixed time per decode-attention call (launches: KV-cache write, attention)"),
        "decode_attn_memory_efficiency": ("1", "fraction of HBM bandwidth the KV stream reaches when every CTA slot is busy"),
        "decode_attn_cta_overhead": ("s", "serial time per CTA wave (Q load, softmax state, output write)"),
        "decode_attn_compute_efficiency": ("1", "tensor-core efficiency of the QK/PV products (query heads padded to 16 rows)"),
        "decode_attn_fp8_kv_efficiency": ("1", "bandwidth factor of an fp8 KV cache (dequantisation in the loop)"),
        "decode_attn_ctas_per_sm": ("1", "CTAs resident per SM (fixed 1)"),
        "decode_attn_split_min_tokens": ("1", "fewest KV tokens per split-KV chunk (grid 64/128/256)"),
        "decode_attn_max_splits": ("1", "most split-KV chunks per sequence and KV head (fixed 32: vLLM's CUDA-graph cap)"),
        "decode_attn_window_pad": ("1", "extra KV tokens a sliding-window kernel reads (the straddled tile; fixed 128)"),
        "decode_attn_cta_bandwidth": ("B/s", "HBM bandwidth one CTA reaches alone (its loads in flight over the memory latency)"),
        "decode_attn_cta_latency": ("s", "pipeline fill of one CTA per 128 head-dim (first K/V tile before the first product), overlapped with its stream"),
        "decode_attn_fp8_cta_factor": ("1", "pipeline-fill factor of an fp8 KV cache (query quantisation, dequantising tile loads)"),
        "decode_attn_combine_overhead": ("s", "fixed time of the split-KV combine (a second kernel) when a call splits"),
        "decode_attn_q_rows": ("1", "query rows (heads of one KV head) per CTA (grid 32/64/128)"),
        "decode_attn_graph_max_batch": ("1", "largest batch vLLM runs as a captured CUDA graph (its default sizes end at "
                                        "512), where the kernel runs split-KV: fp32 partial rows and a combine (grid 0/512)"),
        "decode_attn_seq_time": ("s", "time per sequence of any call (its page-table and length reads; ~1-10 ns)"),
        "decode_attn_graph_seq_time": ("s", "time per sequence of a captured batch's split-KV path (per-sequence split "
                                       "scheduling; ~10-30 ns, a few us at batch 512)"),
    }
    vals = {**fixed, **dict(zip(_DECODE_X, x, strict=True))}
    coeffs = [Coefficient(f, float(vals[K.ATTENTION_FIELDS[f][0]]), u, rd) for f, (u, rd) in readings.items()]
    return FamilyFit(gpu.key, "decode attention", table.path, coeffs, int((~held).sum()), int(held.sum()), ape[held], ape[~held])


_PREFILL_X = ("prefill_overhead_s", "prefill_compute_efficiency", "prefill_k_half", "prefill_d_half",
              "prefill_kv_traffic_bf16", "prefill_kv_traffic_fp8", "prefill_token_s", "prefill_fp8_token_factor",
              "prefill_memory_efficiency", "prefill_fp8_overhead_s", "prefill_multi_tile_s", "prefill_fp8_multi_tile_factor",
              "prefill_fp8_compute_factor", "prefill_fp8_d_half")


_PREFILL_TILE_ROWS = (64.0, 128.0)


def _prefill_inputs(t: Table) -> tuple[np.ndarray, ...]:
    kvb = np.where(t["kv_cache_dtype"] == "fp8", 1.0, 2.0)
    return (t["batch_size"], t["isl"], t["isl"], t["num_heads"], t["num_key_value_heads"], t["head_dim"], kvb,
            t["window_size"])


def fit_prefill(gpu: GPU, table: Table) -> FamilyFit:
    held = holdout_mask(table, "prefill_attention")
    args = _prefill_inputs(table)
    fit_args = tuple(a[~held] for a in args)
    y = table["latency_ms"] * 1e-3
    x0 = [1e-5, 0.6, 128.0, 32.0, 8.0, 8.0, 1e-7, 1.5, 0.8, 1e-6, 2e-6, 1.5, 1.0, 300.0]
    lo = [0, 0.05, 0, 0, 0, 0, 0, 1.0, 0.05, 0.0, 0.0, 1.0, 0.3, 64.0]
    hi = [1e-4, 1.0, 1e5, 1e4, 200.0, 200.0, 1e-5, 4.0, 0.95, 2e-5, 2e-5, 4.0, 2.0, 1e4]
    sc = [1e-5, 1, 100, 10, 1, 1, 1e-7, 0.1, 0.1, 1e-6, 1e-6, 0.1, 0.1, 100.0]
    def resid(grid, x):
        c = _attn(gpu, prefill_q_tile=grid[0], prefill_tile_rows=grid[1], prefill_pack_gqa=grid[2],
                  **dict(zip(_PREFILL_X, x, strict=True)))
        return np.log(K.prefill_attention_latency_s(c, *fit_args) / y[~held])
    (q_tile, tile_rows, pack), x = _grid_lsq(resid, itertools.product((64.0, 128.0), _PREFILL_TILE_ROWS, (0.0, 1.0)),
                                             x0, lo, hi, sc)
    c = _attn(gpu, prefill_q_tile=q_tile, prefill_tile_rows=tile_rows, prefill_pack_gqa=pack,
              **dict(zip(_PREFILL_X, x, strict=True)))
    ape = np.abs(K.prefill_attention_latency_s(c, *args) / y - 1.0)
    vals = dict(zip(_PREFILL_X, x, strict=True))
    coeffs = [
        Coefficient("prefill_attn_overhead", float(vals["prefill_overhead_s"]), "s", "fixed time per prefill-attention call"),
        Coefficient("prefill_attn_compute_efficiency", float(vals["prefill_compute_efficiency"]), "1",
                    "tensor-core efficiency of long, wide flash-attention tiles"),
        Coefficient("prefill_attn_k_half", float(vals["prefill_k_half"]), "1", "keys per query row at which the per-tile softmax/epilogue halves efficiency"),
        Coefficient("prefill_attn_d_half", float(vals["prefill_d_half"]), "1", "head dim at which per-tile softmax work halves tensor-core efficiency"),
        Coefficient("prefill_attn_q_tile", q_tile, "1", "query rows per CTA (grid 64/128)"),
        Coefficient("prefill_attn_memory_efficiency", float(vals["prefill_memory_efficiency"]), "1",
                    "fraction of HBM bandwidth the Q/O and KV-cache streams reach"),
        Coefficient("prefill_attn_kv_traffic_bf16", float(vals["prefill_kv_traffic_bf16"]), "B",
                    "HBM bytes per token per KV head per head-dim element (KV-cache write + read; bf16 cache)"),
        Coefficient("prefill_attn_kv_traffic_fp8", float(vals["prefill_kv_traffic_fp8"]), "B",
                    "the same with an fp8 KV cache (quantising write and dequantising read)"),
        Coefficient("prefill_attn_token_time", float(vals["prefill_token_s"]), "s",
                    "time per new token per SM (the KV-cache write runs one CTA per token)"),
        Coefficient("prefill_attn_fp8_token_factor", float(vals["prefill_fp8_token_factor"]), "1",
                    "per-token time factor of an fp8 KV cache (quantising the written K/V and the query)"),
        Coefficient("prefill_attn_fp8_overhead", float(vals["prefill_fp8_overhead_s"]), "s",
                    "fixed time an fp8 KV cache adds per call (the query's fp8 quantisation launch; ~0.2-1 us)"),
        Coefficient("prefill_attn_pack_gqa", pack, "1",
                    "1: a q tile packs the query heads of one KV head (FlashAttention 3 with a paged cache); 0: one "
                    "query head per tile (grid 0/1)"),
        Coefficient("prefill_attn_tile_rows", tile_rows, "1",
                    "packed query rows (new tokens x query heads per KV head) of one tile (grid 64/128)"),
        Coefficient("prefill_attn_multi_tile_overhead", float(vals["prefill_multi_tile_s"]), "s",
                    "fixed time of a call whose sequences span more than one packed query tile (the multi-tile "
                    "scheduler's set-up; ~0.3-2 us)"),
        Coefficient("prefill_attn_fp8_multi_tile_factor", float(vals["prefill_fp8_multi_tile_factor"]), "1",
                    "factor on that time with an fp8 KV cache (~1.2-2)"),
        Coefficient("prefill_attn_fp8_compute_factor", float(vals["prefill_fp8_compute_factor"]), "1",
                    "tensor-core efficiency of the fp8 kernel (fp8 Q/K/V tiles) relative to bf16 at small head dim (~1-1.2)"),
        Coefficient("prefill_attn_fp8_d_half", float(vals["prefill_fp8_d_half"]), "1",
                    "head dim at which the fp8 kernel's efficiency halves (x 1/(1 + (D/this)^2): its in-kernel V "
                    "transpose and register pressure grow with D; ~350 on Hopper, at its 1e4 bound where a kernel shows none)"),
    ]
    return FamilyFit(gpu.key, "prefill attention", table.path, coeffs, int((~held).sum()), int(held.sum()), ape[held], ape[~held])


# ---------------------------------------------------------------- fused MoE
MOE_TABLE_DTYPES = {"bfloat16": "bf16", "fp8": "fp8", "fp8_block": "fp8_block", "nvfp4": "nvfp4",
                    "int4_wo": "int4", "w4a16_mxfp4": "mxfp4"}
# table dtype whose fit becomes the profile's MoE dtype, where it is not the same name: on Hopper vLLM runs fp8
# MoE checkpoints through the Triton fused-MoE kernel (the table's fp8_block rows); its per-tensor fp8 rows are
# FlashInfer's CUTLASS kernel, 2-3x slower than bf16 there, and stay reported only. Elsewhere the fit is stored
# under the checkpoint format's own MoE key (``energylens.graph.precision.moe_format_key``): fp8_block (B200),
# nvfp4, int4 (Marlin W4A16), mxfp4 (gpt-oss experts)
PROFILE_MOE_DTYPE = {g: {"fp8_block": "fp8", "fp8": ""} for g in ("h100-sxm", "h200")}
# holdout of the dtypes with one or two shapes (the generic MoE holdout would leave nothing to fit): mxfp4 keeps
# gpt-oss-120b's 128 experts and holds out the 32-expert shape; int4 (one shape, Kimi's) holds out the per-GPU
# shards of TP 4 and 16 (expert GEMM widths 512 and 128 never fitted)
HOLDOUT_MOE_DTYPE = {"w4a16_mxfp4": {"num_experts": (32,)}, "int4_wo": {"moe_tp_size": (4, 16)}}
# dtypes fitted on their tensor-parallel rows only (moe_ep_size 1): their EP rows carry a fixed ~30 us more per call
# (gpt-oss MXFP4 Triton on H100: 68 us at one token on EP 2..128 against 39-63 us on TP), which the formula has no
# term for; the served checkpoints of these formats (gpt-oss, Kimi-K2.5 int4) run TP experts
MOE_TP_ONLY = {"w4a16_mxfp4", "int4_wo"}
# dtypes fitted on their balanced-routing rows only, as the cost model routes by default (uniform): the table's
# power-law rows realise fewer hit experts at few tokens and a hot expert's critical path at many (B200 MXFP4, 2880
# hidden, 128 experts: 0.20 ms power-law vs 0.38 balanced at 32 tokens, 0.86 vs 0.69 at 512), which the expected
# loads of aic_expert_loads do not reproduce; mixing them pulled the fitted bandwidth of these kernels to 36-57 %
MOE_BALANCED_ONLY = {"w4a16_mxfp4", "int4_wo", "nvfp4"}
# weight format the table's MoE dtype stores (bytes per element with scales; math dtype as the cost model picks it)
MOE_TABLE_FORMAT = {"int4_wo": ("int4", 32), "w4a16_mxfp4": ("mxfp4", 0), "nvfp4": ("nvfp4", 0)}
_MOE_TILES_M = (16.0, 32.0, 64.0, 128.0)
# exponent scales tried for the tables' power-law routing (aic_expert_loads): their small-token rows hit more
# experts than a Zipf law of the named exponent gives (H100 fp8_block, 256 experts, top-8, 16 tokens: ~95 hit)
_ROUTING_SCALES = (0.6, 0.7, 0.85, 1.0)


def _inclusion(p: np.ndarray, k: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Chance that an expert is among a token's ``k`` distinct experts when it is drawn with weight ``p``
    (rows): ``1 - exp(-lam p)`` with ``lam`` solved so that the chances sum to ``k`` (geometric bisection)."""
    lo, hi = np.full(len(k), 1e-3), np.full(len(k), 1e9)
    for _ in range(60):
        mid = np.sqrt(lo * hi)
        big = np.sum(np.where(valid, -np.expm1(-mid[:, None] * p), 0.0), axis=1) > k
        hi, lo = np.where(big, mid, hi), np.where(big, lo, mid)
    pi = np.where(valid, -np.expm1(-np.sqrt(lo * hi)[:, None] * p), 0.0)
    return pi * (k / np.maximum(pi.sum(axis=1), 1e-30))[:, None]


def aic_expert_loads(tokens, topk, experts, ep, distribution, exponent_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Expected tokens and hit probability of each expert on the measured shard (rows x local experts,
    zero-padded). ``balanced``: the collector deals the ``tokens*topk`` routed pairs round-robin over the
    experts, so expert e gets ``floor(P / experts)`` pairs plus one where ``e < P mod experts`` and is hit
    exactly when that is at least one (few tokens hit the first experts, not a random spread: on H100 bf16,
    5120 hidden, 8192 inter, 128 experts, top-1, EP 32..128 calls at 2-8 tokens all take the ~0.13 ms of one
    expert's weights); ``power_law_A``: the expert of
    popularity rank i (0-based) is drawn with weight (i + 1)^-(``exponent_scale`` A), each token taking ``topk``
    distinct experts, so an expert gets at most every token and the draws a hot expert cannot take go to the
    others (:func:`_inclusion`: all tokens*topk routed pairs are kept). The shard holds one expert in every
    ``ep`` of the ranking (ranks 0, ep, 2 ep, ...): the table's EP rows run power-law routing 1.2-1.6x slower
    than balanced (B200 bf16, 128 experts, EP 8), less than a shard of the hottest experts would (4x)."""
    tokens, topk, experts, ep = (np.asarray(x, float) for x in (tokens, topk, experts, ep))
    local = np.maximum(experts / ep, 1.0)
    width = int(local.max())
    alpha = np.array([float(d.split("_")[-1]) if d.startswith("power_law") else 0.0 for d in distribution])
    load = np.zeros((len(tokens), width))
    hit = np.zeros((len(tokens), width))
    valid = np.arange(width, dtype=float)[None, :] < local[:, None]
    bal = alpha == 0.0
    if bal.any():
        pairs, n = (tokens * topk)[bal][:, None], experts[bal][:, None]
        glob = np.arange(width, dtype=float)[None, :] * ep[bal][:, None]  # global index of local expert j
        dealt = np.floor(pairs / n) + (glob < np.mod(pairs, n))
        load[bal] = np.where(valid[bal], dealt, 0.0)
        hit[bal] = (load[bal] > 0).astype(float)
    pl = ~bal
    if pl.any():
        idx = np.arange(int(experts[pl].max()), dtype=float)[None, :]
        every = idx < experts[pl][:, None]
        w = np.where(every, (idx + 1.0) ** -(exponent_scale * alpha[pl][:, None]), 0.0)
        pi = _inclusion(w / w.sum(axis=1, keepdims=True), topk[pl], every)
        ranks = np.minimum(np.arange(width)[None, :] * ep[pl][:, None], experts[pl][:, None] - 1.0).astype(int)
        share = np.take_along_axis(pi, ranks, axis=1)
        load[pl] = np.where(valid[pl], tokens[pl][:, None] * share, 0.0)
        hit[pl] = np.where(valid[pl], -np.expm1(-load[pl]), 0.0)  # Poisson chance of at least one token
    return load, hit


def fit_moe(gpu: GPU, table: Table, table_dtype: str) -> FamilyFit:
    dtype = MOE_TABLE_DTYPES[table_dtype]
    keep = table["moe_dtype"] == table_dtype
    if table_dtype in MOE_TP_ONLY:
        keep &= table["moe_ep_size"] == 1
    if table_dtype in MOE_BALANCED_ONLY:
        keep &= table["distribution"] == "balanced"
    t = table.select(keep)
    held = np.zeros(len(t), dtype=bool)
    for col, values in HOLDOUT_MOE_DTYPE.get(table_dtype, HOLDOUT["moe"]).items():
        held |= np.isin(t[col], values)
    y = t["latency_ms"] * 1e-3
    hidden, inter = t["hidden_size"], t["inter_size"] / t["moe_tp_size"]
    base = replace(_gemm_model(gpu, dtype, np.array([0.7, 0.0, 0.8, 1e-5, 0.0, 0.0, 0.0]), 64.0, 128.0),
                   split_k=0.0, small_m=0.0)
    eb = _ELEM_BYTES.get(dtype, 0.0)
    if table_dtype in MOE_TABLE_FORMAT:  # bytes and tensor-core rate exactly as the cost model takes them
        fmt = format_named(MOE_TABLE_FORMAT[table_dtype][0])
        if MOE_TABLE_FORMAT[table_dtype][1]:
            fmt = int_weights(4, MOE_TABLE_FORMAT[table_dtype][1])
        eb = fmt.bytes_per_element
        base = replace(base, peak_flops=gpu.peak_flops(gemm_dtype(fmt, "bf16", gpu)))
    scales = _ROUTING_SCALES if np.any(t["distribution"] != "balanced") else (1.0,)
    sums = {}
    for a in scales:
        load, hit = aic_expert_loads(t["num_tokens"], t["topk"], t["num_experts"], t["moe_ep_size"], t["distribution"], a)
        sums.update({(a, tm): K.expert_tiles(load, hit, tm) for tm in _MOE_TILES_M})
    tokens = t["num_tokens"]
    routed = tokens * t["topk"]
    bw = gpu.hbm_bandwidth_bytes_per_s
    x0, lo, hi = [0.6, 256.0, 0.7, 2e-5, 4.0, 20.0], [0.02, 0.0, 0.05, 0.0, 0.0, 0.0], [1.0, 8192.0, 1.0, 1e-3, 40.0, 200.0]
    sc = [1, 100, 1, 1e-5, 1, 1]
    fit_sums = {key: tuple(a[~held] for a in v) for key, v in sums.items()}

    def model(grid, x, sel=slice(None), s=None):
        a, tm, tn = grid
        c = replace(base, efficiency=x[0], k_half=x[1], bandwidth_bytes_per_s=bw * x[2], overhead_s=x[3], tile_m=tm,
                    tile_n=tn)
        return (K.moe_from_tiles_s(c, *(s or sums[a, tm]), hidden[sel], inter[sel], eb)
                + K.moe_routed_s(routed[sel], inter[sel], x[4], bw) + K.moe_token_pass_s(tokens[sel], hidden[sel], x[5], bw))

    def resid(grid, x):
        return np.log(model(grid, x, ~held, fit_sums[grid[:2]]) / y[~held])
    (a, tm, tn), x = _grid_lsq(resid, itertools.product(scales, _MOE_TILES_M, (64.0, 128.0)), x0, lo, hi, sc)
    ape = np.abs(model((a, tm, tn), x) / y - 1.0)
    d = PROFILE_MOE_DTYPE.get(gpu.key, {}).get(table_dtype, dtype)
    routed_note = "reported: the cost path costs these passes as its own element-wise ops (silu_mul, combine)"
    coeffs = [
        Coefficient(f"moe_compute_efficiency_{d or dtype}", float(x[0]), "1", "tensor-core efficiency of the grouped expert GEMMs"),
        Coefficient(f"moe_k_half_{d or dtype}", float(x[1]), "1", "K at which per-tile prologue/epilogue halves the expert GEMM efficiency"),
        Coefficient(f"moe_tile_m_{d or dtype}", tm, "1", "token rows per expert tile (padding of each expert's tokens; grid 16..128)"),
        Coefficient(f"moe_tile_n_{d or dtype}", tn, "1", "output columns per expert tile (grid 64/128)"),
        Coefficient(f"moe_memory_efficiency_{d or dtype}", float(x[2]), "1", "fraction of HBM bandwidth reached streaming the hit experts' weights"),
        Coefficient(f"moe_overhead_{d or dtype}", float(x[3]), "s", "fixed time per fused-MoE call (routing sort/align, launches)"),
        Coefficient(f"moe_routed_bytes_inter_{d or dtype}", float(x[4]), "B",
                    "HBM bytes per routed (token, expert) pair per intermediate element of the call's activation pass "
                    f"(and zero tiles of other ranks' experts); {routed_note}", "reported"),
        Coefficient(f"moe_token_bytes_hidden_{d or dtype}", float(x[5]), "B",
                    "HBM-equivalent bytes per token per hidden element of the call's per-token passes (top-k combine "
                    "into the output row; one row per CTA, latency-bound: tens of bytes where the data is a few); "
                    f"{routed_note}", "reported"),
        Coefficient(f"moe_table_routing_exponent_scale_{d or dtype}", a, "1",
                    "the table's power_law_A rows route as a Zipf law of exponent (this x A) (grid 0.6..1; 1 where the "
                    "fit has balanced rows only): a property of the collector's routing, not of the kernel", "reported"),
    ]
    label = f"moe {dtype}" + (f" (profile {d})" if d and d != dtype else "")
    return FamilyFit(gpu.key, label, t.path, coeffs, int((~held).sum()), int(held.sum()), ape[held], ape[~held],
                     in_profile=bool(d))


# ---------------------------------------------------------------- vLLM custom all-reduce
def fit_allreduce(gpu: GPU, table: Table) -> FamilyFit:
    """vLLM custom all-reduce under CUDA graphs (``energylens.cost.custom_ar``): ``t = alpha + 2 (n - 1) / n *
    bytes / bus_bw`` on the rows up to its 8 MiB buffer, fitted on 2 and 8 GPUs and checked on 4."""
    t = table.select((table["backend"] == "vllm_graph") & (table["message_size"] <= CUSTOM_AR_MAX_BYTES))
    held = t["num_gpus"] == 4
    n, msg, y = t["num_gpus"], t["message_size"], t["latency_ms"] * 1e-3

    def model(x):
        return x[0] * 1e-6 + 2.0 * (n - 1.0) / n * msg / (x[1] * 1e9)

    r = _lsq(lambda x: np.log(model(x) / y)[~held], [5.0, 200.0], [0.0, 1.0], [1e3, 1e4], [1.0, 100.0])
    ape = np.abs(model(r.x) / y - 1.0)
    coeffs = [Coefficient("custom_allreduce_latency", float(r.x[0]) * 1e-6, "s",
                          "fixed time of one custom all-reduce (launch, cross-GPU flag handshake)"),
              Coefficient("custom_allreduce_bus_bandwidth", float(r.x[1]) * 1e9, "B/s",
                          "NVLink bus bandwidth the custom all-reduce reaches (bytes x 2(n-1)/n per second)")]
    return FamilyFit(gpu.key, "all-reduce (vLLM custom, graph, <= 8 MiB)", t.path, coeffs, int((~held).sum()),
                     int(held.sum()), ape[held], ape[~held])


def fit_latency_families(gpu: GPU, every: int = 1) -> list[FamilyFit]:
    """All latency families with a table for this GPU (``every`` > 1 subsamples rows for quick checks)."""
    out: list[FamilyFit] = []
    gemm = subsample(load_table(gpu.key, "gemm"), every)
    fits = {}
    for td in GEMM_TABLE_DTYPES:
        if np.any(gemm["gemm_dtype"] == td):
            if td == "fp8_block" and "fp8" in fits:
                fits[td] = fit_gemm_block(gpu, gemm, fits["fp8"])
            elif td != "fp8_block":
                fits[td] = fit_gemm(gpu, gemm, td)
    out += fits.values()
    out.append(fit_decode(gpu, subsample(load_table(gpu.key, "generation_attention"), every)))
    out.append(fit_prefill(gpu, subsample(load_table(gpu.key, "context_attention"), every)))
    out.append(fit_allreduce(gpu, load_table(gpu.key, "custom_allreduce")))
    moe = subsample(load_table(gpu.key, "moe"), every)
    for td in MOE_TABLE_DTYPES:
        if np.any(moe["moe_dtype"] == td):
            out.append(fit_moe(gpu, moe, td))
    return out
