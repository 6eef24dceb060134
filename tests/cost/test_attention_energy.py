"""Flash-attention compute energy: charged on the FLOPs its tiles run (cost/families.py:attention_tile_keys, the
causal diagonal tiles whole, a sliding window's straddled tile), at the J/FLOP of the tensor-core dtype it runs
(fp8 with an fp8 KV cache where the GPU has fp8 tensor cores); the kernel power fit counts the same FLOPs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from energylens.calibration.power import _counts
from energylens.calibration.tables import Table
from energylens.cost import families as K
from energylens.cost.kernels import causal_fraction
from energylens.cost.phase import evaluate_phase
from energylens.hardware import load_gpu
from energylens.hardware.profile import Quantity
from energylens.models import load_model
from energylens.parallel.layout import Layout
from energylens.program import build_program
from energylens.workload import Workload, prefill_sizes

H200 = load_gpu("h200")


def test_tile_keys_hand_counted():
    c = replace(K.attention_coeffs(H200), prefill_q_tile=128.0, prefill_pack_gqa=0.0, decode_window_pad=128.0)
    # prefill of 1024 tokens, no cache: rows see 1..1024 keys, the diagonal 128-token tiles run whole: (1024 + 128) / 2
    assert float(K.attention_tile_keys(c, 1024, 1024)) == pytest.approx(576.0)
    # packed GQA (r = 4 query heads per KV head in a 128-row tile = 32 tokens): (1024 + 32) / 2; unpacked ignores r
    assert float(K.attention_tile_keys(replace(c, prefill_pack_gqa=1.0), 1024, 1024, r=4)) == pytest.approx(528.0)
    assert float(K.attention_tile_keys(c, 1024, 1024, r=4)) == pytest.approx(576.0)
    # a 128 window over 8192 tokens: every row past the first 128 + 64 runs 128 + 128 keys
    f = 192 / 8192  # rows 64 .. 256 keys (ramp) before the cap of 256
    assert float(K.attention_tile_keys(c, 8192, 8192, 128)) == pytest.approx(f * (64 + 256) / 2 + (1 - f) * 256)
    # decode (t = 1): every cached key, or the window plus the tile it straddles
    got = K.attention_tile_keys(c, np.array([1.0, 1.0]), np.array([1000.0, 1000.0]), np.array([0.0, 128.0]))
    np.testing.assert_allclose(got, [1000.0, 256.0])


def test_attention_mma_dtype():
    assert K.attention_mma_dtype(H200, 1.0) == "fp8" and K.attention_mma_dtype(H200, 2.0) == "bf16"
    assert K.attention_mma_dtype(load_gpu("a100-sxm-80gb"), 1.0) == "bf16"  # no fp8 tensor cores: dequantised


def _flash(gpu, model: str = "llama3-8b", prompt: int = 2048, kv: str | None = None, what: str = "energy") -> dict:
    m = load_model(model).with_dtypes(kv_dtype=kv)
    lay = Layout(tp=1)
    sizes, w = prefill_sizes(Workload(2, prompt, 64), 2)
    phase = evaluate_phase(m, gpu, lay, build_program(m, lay), sizes, w, decode=False)
    return {r.name: float(np.ravel(r.cost.compute_energy_j if what == "energy" else r.flops)[0])
            for _, r in phase.kernels if r.name.endswith(".flash")}


def test_prefill_flash_energy_on_tile_flops():
    # unpacked 128- vs 512-row q tiles: the QK and PV einsums (4 b h t keys k FLOPs) run (t + tile) / 2 keys per
    # row, so the energy differs by 4 x 2 x 32 x 2048 x (512 - 128) / 2 x 128 FLOPs x J/FLOP; softmax the same
    def tiled(tile):
        return H200.with_quantities({"prefill_attn_q_tile": Quantity(tile, "1", "user", "test"),
                                     "prefill_attn_pack_gqa": Quantity(0.0, "1", "user", "test")})
    small, large = _flash(tiled(128.0)), _flash(tiled(512.0))
    (name,) = small
    d_flops = 4 * 2 * 32 * 2048 * (512 - 128) / 2 * 128
    assert large[name] - small[name] == pytest.approx(d_flops * H200.energy_per_flop_j("bf16"), rel=1e-9)


def test_fp8_kv_cache_attention_runs_at_the_fp8_flop_energy():
    # the same kernel with an fp8 KV cache: its einsums' energy scales by J/FLOP(fp8) / J/FLOP(bf16) (the softmax,
    # elementwise fp32, the same); on a GPU without fp8 tensor cores nothing changes
    flop_j = {dt: H200.with_quantities({"energy_per_flop_fp8": Quantity(x, "J/FLOP", "user", "test")})
              for dt, x in (("same", H200.energy_per_flop_j("bf16")), ("half", 0.5 * H200.energy_per_flop_j("bf16")))}
    bf16, same, half = _flash(H200), _flash(flop_j["same"], kv="fp8"), _flash(flop_j["half"], kv="fp8")
    (name,) = bf16
    assert same[name] == pytest.approx(bf16[name], rel=1e-12)
    einsum_j = 2.0 * (same[name] - half[name])  # half the einsums' energy went
    assert 0.8 * same[name] < einsum_j < same[name]  # the einsums are most of the kernel's compute energy
    a100 = load_gpu("a100-sxm-80gb")
    assert _flash(a100, kv="fp8")[name] == pytest.approx(_flash(a100)[name], rel=1e-12)


def test_sliding_window_prefill_is_charged_its_window_tiles():
    # gpt-oss sliding layers (window 128): the useful causal count of the einsums is 0 past 2 x window (the
    # causal share of a windowed key axis), but the kernel runs about window + tile keys per row
    got = _flash(H200, "gpt-oss-20b", 4096)
    sliding = [v for n, v in got.items() if "sliding" in n]
    full = [v for n, v in got.items() if "full" in n]
    assert sliding and full
    c = K.attention_coeffs(H200)
    m = load_model("gpt-oss-20b")
    h, g, k = m.dims["g"] * m.dims["r"], m.dims["g"], m.dims["k"]
    keys = float(K.attention_tile_keys(c, 4096, 4096, 128, h / g))
    assert 128 < keys < 128 + 128
    assert sliding[0] >= 4 * 2 * h * 4096 * keys * k * H200.energy_per_flop_j("bf16")
    assert sliding[0] < 0.2 * full[0]
    # the useful FLOPs it reports: rows 1..4096 see min(i, 128) keys, mean (128 x 129 / 2 + 3968 x 128) / 4096
    flops = [v for n, v in _flash(H200, "gpt-oss-20b", 4096, what="flops").items() if "sliding" in n]
    useful = 4 * 2 * h * 4096 * k * (128 * 129 / 2 + 3968 * 128) / 4096
    assert useful <= flops[0] < 1.05 * useful  # QK and PV, and the softmax's few element-wise FLOPs


def test_causal_fraction_with_a_window_hand_counted():
    # 8 new tokens, no cache, window 3: rows see 1, 2, 3, 3, 3, 3, 3, 3 keys of the 3 the einsum counts
    assert float(causal_fraction(8, 8, 3)) == pytest.approx(21 / 8 / 3)
    # 4 new tokens after 6 cached, window 8: rows see 7, 8, 8, 8 of 8
    assert float(causal_fraction(4, 10, 8)) == pytest.approx(31 / 4 / 8)
    # no window: s - (t - 1) / 2 of s; decode (t = 1) computes every key it counts, window or not
    assert float(causal_fraction(8, 8)) == pytest.approx(4.5 / 8)
    np.testing.assert_allclose(causal_fraction(1, np.array([100.0, 100.0]), np.array([0.0, 3.0])), [1.0, 1.0])


def test_power_fit_counts_attention_tile_flops_and_fp8_class():
    n = 2
    cols = {"batch_size": np.full(n, 4.0), "isl": np.full(n, 1024.0), "num_heads": np.full(n, 32.0),
            "num_key_value_heads": np.full(n, 8.0), "head_dim": np.full(n, 128.0), "window_size": np.zeros(n),
            "kv_cache_dtype": np.array(["bfloat16", "fp8"])}
    flops, byts, cls = _counts("context_attention", Table("test", cols), H200)
    keys = float(K.attention_tile_keys(K.attention_coeffs(H200), 1024, 1024, 0.0, 4.0))
    np.testing.assert_allclose(flops, 4 * 4 * 32 * 1024 * keys * 128)
    np.testing.assert_allclose(byts, [4 * 1024 * (32 * 128 * 4 + 8 * 128 * 2 * 2), 4 * 1024 * (32 * 128 * 4 + 8 * 128 * 2)])
    assert list(cls) == ["bf16", "fp8"]
    dec = {"batch_size": np.full(n, 8.0), "step": np.full(n, 4095.0), "num_heads": np.full(n, 32.0),
           "num_key_value_heads": np.full(n, 8.0), "head_dim": np.full(n, 128.0), "window_size": np.array([0.0, 1024.0]),
           "kv_cache_dtype": np.array(["bfloat16", "bfloat16"])}
    flops, byts, _ = _counts("generation_attention", Table("test", dec), H200)
    pad = H200.q("decode_attn_window_pad")
    np.testing.assert_allclose(flops, [4 * 8 * 32 * 4096 * 128, 4 * 8 * 32 * (1024 + pad) * 128])
    np.testing.assert_allclose(byts, [8 * 4096 * 8 * 128 * 4 + 4 * 8 * 32 * 128, 8 * 1024 * 8 * 128 * 4 + 4 * 8 * 32 * 128])
