"""Quantised checkpoints: formats read from config.json / hf_quant_config.json, bytes with scales, kernel paths."""

from __future__ import annotations

import json

import pytest

import energylens
from energylens.cli import main
from energylens.errors import EnergyLensError, SpecError
from energylens.graph.precision import fp8, gemm_dtype, int_weights, mxfp4, nvfp4, plain
from energylens.hardware import load_gpu
from energylens.models import load_model
from energylens.models.registry import shipped_configs


def weights_gb(model, gpu="h100-sxm", **kw):
    return energylens.predict(model, gpu, batch=1, prompt_len=128, output_len=8, **kw).memory.weights_bytes / 1e9


def test_qwen3_8b_fp8_offline_weights_about_half_of_bf16(capsys):
    rc = main(["predict", "--model", "Qwen/Qwen3-8B-FP8", "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    pred = json.loads(out)
    bf16 = weights_gb("Qwen/Qwen3-8B")
    ratio = pred["memory"]["weights_bytes"] / 1e9 / bf16
    # 6.95 B attention/MLP weights at 1 byte (+ block-128 scales), embedding and LM head (1.24 B) at 2 bytes
    assert 0.5 < ratio < 0.6
    prec = pred["precision"]
    assert "fp8" in prec["classes"]["mlp"]["format"] and "block 128x128" in prec["classes"]["mlp"]["format"]
    assert prec["classes"]["mlp"]["gemm"] == "fp8 x fp8 GEMM at the fp8 rate (fp8_block kernel coefficients)"
    assert prec["classes"]["lm_head"]["format"] == "bf16"
    assert any("assumed the architecture of Qwen/Qwen3-8B" in n for n in prec["notes"])


def test_nvidia_llama_70b_fp8_tp4_about_18_gb_of_weights_per_gpu():
    m = load_model("nvidia/Llama-3.1-70B-Instruct-FP8")  # hf_quant_config.json: ModelOpt FP8, lm_head excluded
    assert m.weight_format("mlp.w_gate").name == "fp8" and m.weight_format("lm_head.weight").name == "bf16"
    gb = weights_gb("nvidia/Llama-3.1-70B-Instruct-FP8", tp=4)
    assert 17.5 < gb < 19.0  # (68.5 B x 1 + 2.1 B x 2) / 4


def _awq_config(tmp_path, base="meta-llama/Llama-3.1-70B-Instruct"):
    data = json.loads((energylens.models.registry._config_dir() / shipped_configs()[base]).read_text())
    data["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True,
                                   "version": "gemm", "modules_to_not_convert": None}
    path = tmp_path / "awq" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(data))
    return path


def test_local_awq_int4_config_is_under_45_percent_of_bf16(tmp_path):
    path = _awq_config(tmp_path)
    awq = load_model(str(path))
    fmt = awq.weight_format("attn.wq")
    assert fmt.name == "int4" and fmt.activation is None
    assert fmt.bytes_per_element == pytest.approx(0.5 + (2 + 0.5) / 128)  # fp16 scale + int4 zero per 128
    assert awq.weight_format("embed.weight").name == "bf16" and awq.weight_format("lm_head.weight").name == "bf16"
    ratio = weights_gb(str(path), tp=4) / weights_gb("meta-llama/Llama-3.1-70B-Instruct", tp=4)
    assert ratio < 0.45
    # w4a16: a dequantising GEMM at the activation dtype, whatever the GPU
    for gpu in ("h100-sxm", "b200", "a100-sxm-80gb"):
        assert gemm_dtype(fmt, "bf16", load_gpu(gpu)) == "bf16"


@pytest.mark.parametrize("fmt,gpu,expected", [
    (fp8("block"), "h100-sxm", "fp8"), (fp8("tensor"), "b200", "fp8"),
    (fp8("tensor"), "a100-sxm-80gb", "bf16"),  # no fp8 tensor cores: weight-only fp8 (Marlin)
    (nvfp4(), "b200", "fp4"), (nvfp4(), "h100-sxm", "bf16"), (nvfp4(activation=None), "b200", "bf16"),
    (mxfp4(), "b200", "bf16"), (mxfp4(activation="fp8"), "h100-sxm", "fp8"),
    (int_weights(4, 128), "h100-sxm", "bf16"), (int_weights(4, 128, activation="fp8"), "h100-sxm", "fp8"),
    (int_weights(8, None, k=4096, activation="int8"), "h100-sxm", "bf16"),  # no int8 rate in the profiles
    (plain("bf16"), "h100-sxm", "bf16"),
])
def test_kernel_path_per_format_and_gpu(fmt, gpu, expected):
    assert gemm_dtype(fmt, "bf16", load_gpu(gpu)) == expected


def test_scale_bytes_per_format():
    assert fp8("block").bytes_per_element == pytest.approx(1 + 4 / 128**2)
    assert nvfp4().bytes_per_element == pytest.approx(4.5 / 8)
    assert mxfp4().bytes_per_element == pytest.approx(4.25 / 8)
    assert int_weights(4, 128).bytes_per_element == pytest.approx(0.5 + 2 / 128)
    assert int_weights(4, 32, symmetric=False).bytes_per_element == pytest.approx(0.5 + 2.5 / 32)


def test_nvfp4_runs_at_the_fp4_rate_on_b200_and_dequantised_on_h100():
    kw = dict(batch=32, prompt_len=2048, output_len=1)
    b_fp4 = energylens.predict("qwen3-8b", "b200", dtype="nvfp4", **kw)
    b_fp8 = energylens.predict("qwen3-8b", "b200", dtype="fp8", **kw)
    b_bf16 = energylens.predict("qwen3-8b", "b200", **kw)
    assert b_fp4.prefill.latency_s < b_fp8.prefill.latency_s < b_bf16.prefill.latency_s  # compute-bound prefill
    h_fp4 = energylens.predict("qwen3-8b", "h100-sxm", dtype="nvfp4", **kw)
    h_bf16 = energylens.predict("qwen3-8b", "h100-sxm", **kw)
    mlp = [o for o in h_fp4.prefill.ops if o.name.endswith("down_proj")][0]
    mlp_bf = [o for o in h_bf16.prefill.ops if o.name.endswith("down_proj")][0]
    assert mlp.flops == mlp_bf.flops and mlp.bytes < mlp_bf.bytes  # same math (bf16), fewer weight bytes
    assert "dequantising" in h_fp4.extra["precision"]["classes"]["mlp"]["gemm"]
    assert b_fp4.extra["precision"]["classes"]["mlp"]["gemm"] == "fp4 x fp4 GEMM at the fp4 rate (nvfp4 kernel coefficients)"


def test_checkpoint_formats_of_shipped_quantised_models():
    kimi = load_model("moonshotai/Kimi-K2.5")  # compressed-tensors int4 group 32, experts only
    assert kimi.weight_format("moe.experts.w_up").name == "int4"
    assert kimi.weight_format("moe.experts.w_up").bytes_per_element == pytest.approx(0.5 + 2 / 32)
    assert {kimi.weight_format(n).name for n in ("attn.w_q_a", "moe.shared.w_up", "mlp.w_up")} == {"bf16"}
    ds = load_model("nvidia/DeepSeek-V3.1-NVFP4")  # MLA projections excluded, o_proj and experts NVFP4
    assert ds.weight_format("attn.w_q_a").name == "bf16" and ds.weight_format("attn.wo").name == "nvfp4"
    assert ds.weight_format("moe.experts.w_down").name == "nvfp4" and ds.weight_dtype == "nvfp4"
    oss = load_model("openai/gpt-oss-120b")
    assert oss.weight_dtype == "mxfp4" and oss.weight_format("attn.wq").name == "bf16"
    dsv3 = load_model("deepseek-v3")
    assert dsv3.weight_format("moe.experts.w_up").scheme == "block 128x128 fp32 scales"
    assert dsv3.weight_format("moe.router.weight").name == "bf16"


def test_mixed_precision_and_unknown_method(tmp_path):
    base = json.loads((energylens.models.registry._config_dir() / shipped_configs()["Qwen/Qwen3-8B"]).read_text())
    d = tmp_path / "mixed"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(base))
    (d / "hf_quant_config.json").write_text(json.dumps({"quantization": {
        "quant_algo": "MIXED_PRECISION", "kv_cache_quant_algo": "FP8", "quantized_layers": {
            **{f"model.layers.{i}.mlp.down_proj": {"quant_algo": "W4A16_NVFP4", "group_size": 16} for i in range(36)},
            **{f"model.layers.{i}.self_attn.q_proj": {"quant_algo": "FP8"} for i in range(30)}}}}))
    m = load_model(str(d))
    assert m.weight_format("mlp.w_down").name == "nvfp4" and m.weight_format("mlp.w_down").activation is None
    assert m.weight_format("mlp.w_up").name == "bf16" and m.weight_format("attn.wq").name == "fp8"
    assert any("attn.wq differs by layer" in n for n in m.precision.notes)
    # a ModelOpt FP8 KV-cache config: vLLM's --kv-cache-dtype auto resolves to fp8, so the cache is costed in fp8
    assert m.kv_dtype == "fp8" and any("quantises the KV cache to FP8" in n for n in m.precision.notes)
    base["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (tmp_path / "bnb.json").write_text(json.dumps(base))
    with pytest.raises(SpecError) as err:
        load_model(str(tmp_path / "bnb.json"))
    assert "quant_method" in str(err.value) and "awq" in str(err.value)


def test_dtype_flags_int4_and_fp8_kv_cache(capsys):
    base = energylens.predict("llama3.1-8b", "h100-sxm", batch=8, prompt_len=4096, output_len=64)
    int4 = energylens.predict("llama3.1-8b", "h100-sxm", batch=8, prompt_len=4096, output_len=64, dtype="int4")
    assert int4.dtype == "int4" and int4.memory.weights_bytes < 0.45 * base.memory.weights_bytes
    kv8 = energylens.predict("llama3.1-8b", "h100-sxm", batch=8, prompt_len=4096, output_len=64, kv_cache_dtype="fp8")
    assert kv8.memory.kv_cache_bytes == pytest.approx(base.memory.kv_cache_bytes / 2)
    assert kv8.extra["precision"]["classes"]["kv_cache"]["format"] == "fp8"
    rc = main(["predict", "--model", "llama3.1-8b", "--weight-dtype", "int4", "--kv-cache-dtype", "fp8"])
    out = capsys.readouterr().out
    assert rc == 0 and "int4 (w4a16" in out and "dequantising GEMM" in out
    with pytest.raises(EnergyLensError):
        energylens.predict("llama3.1-8b", "h100-sxm", kv_cache_dtype="int2")
    with pytest.raises(EnergyLensError):
        energylens.predict("llama3.1-8b", "h100-sxm", dtype="fp8", weight_dtype="int4")


def test_context_length_is_checked(capsys):
    rc = main(["predict", "--model", "llama3-8b", "--prompt-len", "1000000"])
    err = capsys.readouterr().err
    assert rc == 2 and "1000256" in err and "8192" in err and "Traceback" not in err
    rc = main(["serve", "--model", "qwen3-8b", "--input-len", "40000", "--output-len", "2000"])
    err = capsys.readouterr().err
    assert rc == 2 and "42000" in err and "40960" in err
    assert energylens.predict("gemma3-12b", "h100-sxm", prompt_len=100000, output_len=16).total_energy_j > 0


def test_modelopt_fp8_kv_cache_is_the_default_and_can_be_overridden():
    """nvidia/*-NVFP4 checkpoints set kv_cache_quant_algo FP8 (or an 8-bit float kv_cache_scheme): vLLM serves their
    KV cache in fp8 unless told otherwise, halving the bytes per token; publisher checkpoints without it keep bf16."""
    kw = dict(batch=8, prompt_len=4096, output_len=64)
    nv = energylens.predict("nvidia/MiniMax-M2.5-NVFP4", "b200", **kw)
    pub = energylens.predict("MiniMaxAI/MiniMax-M2.5", "b200", **kw)  # block-fp8 weights, no KV-cache scales
    assert nv.extra["precision"]["classes"]["kv_cache"]["format"] == "fp8"
    assert pub.extra["precision"]["classes"]["kv_cache"]["format"] == "bf16"
    assert nv.memory.kv_cache_bytes == pytest.approx(pub.memory.kv_cache_bytes / 2)
    kimi = load_model("nvidia/Kimi-K2.5-NVFP4")  # ModelOpt 0.41 format: kv_cache_scheme {num_bits: 8, type: float}
    assert kimi.kv_dtype == "fp8"
    back = energylens.predict("nvidia/MiniMax-M2.5-NVFP4", "b200", kv_cache_dtype="bf16", **kw)
    assert back.memory.kv_cache_bytes == pytest.approx(pub.memory.kv_cache_bytes)
    # --kv-cache-dtype auto is vLLM's auto: the checkpoint's own cache (fp8 here), not the activation dtype
    auto = energylens.predict("nvidia/MiniMax-M2.5-NVFP4", "b200", kv_cache_dtype="auto", **kw)
    assert auto.memory.kv_cache_bytes == nv.memory.kv_cache_bytes
    assert energylens.predict("llama3.1-8b", "h100-sxm", kv_cache_dtype="auto", **kw).extra["precision"]["classes"][
        "kv_cache"]["format"] == "bf16"
