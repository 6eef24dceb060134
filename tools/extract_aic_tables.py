"""Draw the compact, sourced subset of NVIDIA AIConfigurator's kernel tables shipped in
``energylens/data/calibration/aiconfigurator/`` (run once; the fit reads only the shipped subset).

    python tools/extract_aic_tables.py [--src /work/shared/reference/aiconfigurator]

Per GPU and family it keeps the kernel vLLM runs by default on that GPU (see ``KERNELS``), only the
columns the fit needs, and a deterministic subsample: a row is kept when ``crc32(its shape key) % 1000``
is below the family's per-mille share (``SHARE``), so the draw does not depend on row order. GEMM rows
are restricted to a grid of M, N, K values (``GEMM_M``, ``GEMM_NK``) instead. Standard library only.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import zlib
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "energylens" / "data" / "calibration" / "aiconfigurator"
GPUS = ("h100_sxm", "h200_sxm", "b200_sxm")
GEMM_M = {1, 2, 4, 8, 16, 17, 32, 33, 64, 65, 128, 129, 256, 257, 512, 513, 1024, 1025, 2048, 2049, 4096,
          4097, 8192, 16384, 32768}
GEMM_NK = {128, 256, 512, 1024, 1536, 2048, 3072, 4096, 5120, 6144, 7168, 8192, 12288, 16384}
# weight-only 4-bit MoE checkpoints, the kernel vLLM runs for each (as the table's kernel_source names it):
# gpt-oss MXFP4 experts -> OpenAI's Triton MXFP4 kernel on Hopper, FlashInfer TRT-LLM MXFP4 x bf16 on Blackwell;
# compressed-tensors int4 (W4A16, e.g. Kimi-K2.5) -> Marlin on every GPU
MOE_W4A16 = {"hopper": ("vllm_gptossmxfp4moe_triton_oaitritonmxfp4expertsmonolithic",
                        "vllm_compressedtensorswna16marlinmoe_marlin_marlinexperts"),
             "blackwell": ("vllm_gptossmxfp4moe_flashinfer_trtllm_mxfp4_bf16_trtllmmxfp4expertsmonolithic",
                           "vllm_compressedtensorswna16marlinmoe_marlin_marlinexperts")}
# MoE dtypes with few rows (one or two shapes): every row kept, whatever the family's share
MOE_ALL_ROWS = {"int4_wo", "w4a16_mxfp4"}
# family -> {gpu -> allowed kernel_source values}, None = all
KERNELS = {
    "gemm": {g: {"torch.nn.functional.linear", "CutlassFP8ScaledMMLinearKernel", "DeepGemmFp8BlockScaledMMKernel",
                 "FlashInferCuteDslNvFp4LinearKernel", "vllm_default"} for g in GPUS},
    "generation_attention": {"h100_sxm": {"vllm_flash_attn_fa3"}, "h200_sxm": {"vllm_flash_attn_fa3", "vllm_flash_attn"},
                             "b200_sxm": {"vllm_flashinfer_trtllmdecode", "vllm_flashinfer"}},
    "context_attention": {"h100_sxm": {"vllm_flash_attn_fa3"}, "h200_sxm": {"vllm_flash_attn_fa3", "vllm_flash_attn"},
                          "b200_sxm": {"vllm_flashinfer_trtllmprefill", "vllm_flashinfer"}},
    "moe": {"h100_sxm": {"vllm_unquantizedfusedmoe_triton_tritonexperts", "vllm_fp8moe_triton_tritonexperts",
                         "vllm_modeloptfp8moe_flashinfer_cutlass_flashinferexperts", *MOE_W4A16["hopper"]},
            "h200_sxm": {"vllm_unquantizedfusedmoe_triton_tritonexperts", "vllm_fp8moe_triton_tritonexperts",
                         "vllm_modeloptfp8moe_flashinfer_cutlass_flashinferexperts", "vllm_fused_moe",
                         *MOE_W4A16["hopper"]},
            "b200_sxm": {"vllm_unquantizedfusedmoe_flashinfer_trtllm_trtllmbf16experts",
                         "vllm_fp8moe_flashinfer_trtllm_trtllmfp8expertsmonolithic",
                         "vllm_modeloptfp8moe_flashinfer_trtllm_trtllmfp8expertsmonolithic",
                         "vllm_compressedtensorsw4a4nvfp4moe_flashinfer_trtllm_trtllmnvfp4expertsmonolithic",
                         "vllm_fused_moe", *MOE_W4A16["blackwell"]}},
    "custom_allreduce": None,
}
COLUMNS = {
    "gemm": ["gemm_dtype", "m", "n", "k"],
    "generation_attention": ["batch_size", "num_heads", "num_key_value_heads", "head_dim", "kv_cache_dtype", "step",
                             "window_size"],
    "context_attention": ["batch_size", "isl", "num_heads", "num_key_value_heads", "head_dim", "kv_cache_dtype",
                          "window_size"],
    "moe": ["moe_dtype", "num_tokens", "hidden_size", "inter_size", "topk", "num_experts", "moe_tp_size",
            "moe_ep_size", "distribution"],
    "custom_allreduce": ["backend", "num_gpus", "message_size"],
}
SHARE = {  # per-mille of rows kept: (latency tables, power tables)
    "generation_attention": (170, 80), "context_attention": (170, 80), "moe": (250, 80),
    "custom_allreduce": (1000, 0), "gemm": (1000, 0),
}
POWER_GEMM_NK = {256, 1024, 2048, 4096, 7168, 8192, 16384}
# power tables also keep this per-mille of the rows of at least POWER_LONG_MS: the rows whose replay runs long
# enough for NVML to read the kernel (the power fit uses only those; decode attention has few of them)
POWER_LONG_SHARE = {"generation_attention": 500, "context_attention": 120, "moe": 120}
POWER_LONG_MS = 0.1


def _keep(fam: str, row: dict, share: int, power: bool) -> bool:
    if fam == "gemm":
        nk = POWER_GEMM_NK if power else GEMM_NK
        return int(row["m"]) in GEMM_M and int(row["n"]) in nk and int(row["k"]) in nk
    if fam == "moe" and not power and row["moe_dtype"] in MOE_ALL_ROWS:
        return True
    key = "|".join(row[c] for c in COLUMNS[fam])
    if power and float(row["latency_ms"]) >= POWER_LONG_MS:
        share = max(share, POWER_LONG_SHARE.get(fam, 0))
    return zlib.crc32(key.encode()) % 1000 < share


def _fmt(x: str) -> str:
    return f"{float(x):.6g}"


def extract(src: Path, gpu: str, fam: str, power: bool) -> tuple[Path, int, int, str] | None:
    if power:
        name = f"{gpu}_vllm_0.22.0_{fam}.csv.gz"
        path = src / "kernels-power" / name
        extra = ["latency_ms", "avg_power_w", "power_limit_w"]
    else:
        name = f"{gpu}_vllm_0.24.0_{fam}.csv.gz"
        path = src / "kernels-latency" / name
        extra = ["latency"]
    if not path.is_file():
        return None
    allowed = (KERNELS[fam] or {}).get(gpu)
    share = SHARE[fam][1 if power else 0]
    out = OUT / (("power_" if power else "") + name.replace("_vllm_", "_"))
    n_in = n_out = 0
    with gzip.open(path, "rt", newline="") as fh, open(out, "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz, \
            io.TextIOWrapper(gz, newline="") as fo:  # mtime 0: the same bytes on every run
        w = csv.writer(fo, lineterminator="\n")
        cols = COLUMNS[fam] + (["kernel_source"] if fam != "custom_allreduce" else [])
        w.writerow(cols + ["latency_ms"] + (["avg_power_w", "power_limit_w"] if power else []))
        rows = []
        for row in csv.DictReader(fh):
            n_in += 1
            if allowed is not None and row["kernel_source"] not in allowed:
                continue
            if not _keep(fam, row, share, power):
                continue
            vals = [row[c] for c in cols] + [_fmt(row[c]) for c in extra]
            if power:
                vals = vals[:-1] + [str(int(float(row["power_limit_w"])))]
            rows.append(vals)
        rows.sort()
        w.writerows(rows)
        n_out = len(rows)
    return out, n_in, n_out, str(path.relative_to(src))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default="/work/shared/reference/aiconfigurator")
    args = ap.parse_args()
    src = Path(args.src)
    OUT.mkdir(parents=True, exist_ok=True)
    for power in (False, True):
        for gpu in GPUS:
            for fam in COLUMNS:
                if power and SHARE[fam][1] == 0 and fam != "gemm":
                    continue
                res = extract(src, gpu, fam, power)
                if res is not None:
                    out, n_in, n_out, rel = res
                    print(f"| `{out.name}` | `{rel}` | {n_in} | {n_out} |")


if __name__ == "__main__":
    main()
