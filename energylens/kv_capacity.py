"""KV-cache capacity of a vLLM deployment: how many requests fit in GPU memory at once.

vLLM sizes its KV cache at start-up: of ``gpu_memory_utilization x HBM capacity`` per GPU it
subtracts the weights and the peak activation memory of a profiling forward pass over
``max_num_batched_tokens`` tokens (plus the runtime's own buffers); the rest becomes paged KV blocks
of ``block_tokens`` tokens. Here, per GPU (the most loaded one, :func:`energylens.cost.phase.memory_per_gpu`):

* ``usable_bytes = gpu_memory_utilization * capacity``;
* ``free_bytes = usable_bytes - weights - workspace`` (workspace: the runtime overhead plus twice
  the largest activation of a ``max_num_batched_tokens`` chunk);
* ``kv_tokens = free_bytes / kv_bytes_per_token`` tokens of context per replica (every GPU of a
  replica holds its shard of each token's keys and values);
* a running request holds its prompt plus, on average over its life, half its output, rounded up
  to whole blocks (mean half a block wasted): ``footprint = input + output / 2 + block_tokens / 2``;
  ``max_running = floor(kv_tokens / footprint)`` requests per replica run at once on average
  (vLLM admits while blocks are free and preempts when they run out; the mean footprint sets the
  steady state). A request whose whole context ``input + output`` does not fit cannot run.

Everything is vectorised over ``input_len``/``output_len`` arrays; the layout is a scalar.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from energylens.cost.phase import PREFILL_CHUNK_TOKENS, memory_per_gpu
from energylens.engines import VLLM
from energylens.errors import LayoutError, WorkloadError
from energylens.graph.model import Model
from energylens.hardware.profile import GPU
from energylens.parallel.layout import Layout
from energylens.program import build_program

BLOCK_TOKENS = 16  # vLLM's default --block-size (tokens per paged-KV block, vllm/config CacheConfig.block_size)


@dataclass
class KVCapacity:
    """Memory budget of one GPU of the deployment (bytes) and the KV tokens of one replica."""

    capacity_bytes: float
    usable_bytes: float
    weights_bytes: float
    workspace_bytes: float
    free_bytes: float  # usable - weights - workspace (negative: the weights do not fit)
    kv_bytes_per_token: float  # per GPU
    kv_tokens: float  # per replica (0 when nothing is free)
    gpu_memory_utilization: float

    @property
    def fits(self) -> bool:
        return self.free_bytes > 0

    def footprint_tokens(self, input_len, output_len, block_tokens: int = BLOCK_TOKENS) -> np.ndarray:
        """Mean KV tokens a running request holds (prompt + half the output + half a block)."""
        return np.asarray(input_len, dtype=float) + np.asarray(output_len, dtype=float) / 2.0 + block_tokens / 2.0

    def max_running(self, input_len, output_len, block_tokens: int = BLOCK_TOKENS) -> np.ndarray:
        """Requests per replica that fit at once on average (0 where not even one fits)."""
        i, o = np.broadcast_arrays(np.asarray(input_len, dtype=float), np.asarray(output_len, dtype=float))
        full = np.ceil((i + o) / block_tokens) * block_tokens
        n = np.floor(self.kv_tokens / self.footprint_tokens(i, o, block_tokens))
        return np.where(full <= self.kv_tokens, np.maximum(n, 1.0), 0.0)

    def to_dict(self) -> dict:
        return {k: float(getattr(self, k)) for k in ("capacity_bytes", "usable_bytes", "weights_bytes",
                                                      "workspace_bytes", "free_bytes", "kv_bytes_per_token",
                                                      "kv_tokens", "gpu_memory_utilization")}


def check_utilization(gpu_memory_utilization: float) -> float:
    v = gpu_memory_utilization
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v) \
            or not 0 < v <= 1:
        raise WorkloadError("gpu_memory_utilization", v, "a fraction in (0, 1] (vLLM default 0.9)")
    return float(v)


def kv_capacity(model: Model, gpu: GPU, layout: Layout, *, gpu_memory_utilization: float = VLLM.gpu_memory_utilization,
                max_batched_tokens: int = VLLM.max_batched_tokens, program=None) -> KVCapacity:
    """KV-cache budget of a scalar ``layout`` (see the module docstring)."""
    util = check_utilization(gpu_memory_utilization)
    program = program or build_program(model, layout)
    chunk = float(max(1, min(int(max_batched_tokens), int(PREFILL_CHUNK_TOKENS))))
    mem = memory_per_gpu(model, layout, program, gpu, 1.0, 1.0, chunk)
    per_token = float(memory_per_gpu(model, layout, program, gpu, 1.0, 1.0, 1.0)["kv_cache_bytes"])
    cap = float(mem["capacity_bytes"])
    weights = float(mem["weights_bytes"])
    work = float(mem["workspace_bytes"])
    usable = util * cap
    free = usable - weights - work
    tokens = max(free, 0.0) / per_token if per_token > 0 else float("inf")
    return KVCapacity(cap, usable, weights, work, free, per_token, tokens, util)


def require_fit(cap: KVCapacity, *, gpu: str, layout: Layout, input_len: float | None = None,
                output_len: float | None = None) -> None:
    """Raise ``LayoutError`` naming the numbers when the weights (or one request) do not fit."""
    gib = 2.0**30
    where = f"tp={layout.tp} pp={layout.pp} dp={layout.dp} ep={layout.ep} on {gpu}"
    if not cap.fits:
        raise LayoutError("layout", where, f"weights {cap.weights_bytes / gib:.1f} GiB + workspace "
                          f"{cap.workspace_bytes / gib:.1f} GiB per GPU exceed gpu_memory_utilization "
                          f"{cap.gpu_memory_utilization:g} x {cap.capacity_bytes / gib:.1f} GiB = "
                          f"{cap.usable_bytes / gib:.1f} GiB: no room for a KV cache (more GPUs per replica, "
                          "a smaller dtype or a larger GPU)")
    if input_len is not None and output_len is not None:
        need = float(np.ceil((input_len + output_len) / BLOCK_TOKENS) * BLOCK_TOKENS)
        if need > cap.kv_tokens:
            raise WorkloadError("input_len + output_len", input_len + output_len,
                                f"at most the KV cache of one replica: {cap.kv_tokens:.0f} tokens "
                                f"({cap.free_bytes / gib:.2f} GiB free per GPU / "
                                f"{cap.kv_bytes_per_token:.0f} bytes per token per GPU) with {where}")
