"""vLLM's custom all-reduce: the tensor-parallel all-reduce of small messages on one NVLink node.

vLLM reduces messages up to its buffer size (``CUSTOM_AR_MAX_BYTES``, 8 MiB) among 2, 4, 6 or 8 GPUs of one
node with its own one-shot/two-shot kernels instead of NCCL. On a GPU whose profile has the fit (H100 SXM,
H200, B200: ``python tools/calibrate_tables.py`` on NVIDIA's measured ``<gpu>_0.24.0_custom_allreduce`` table,
CUDA-graph rows up to 8 MiB, fitted on 2 and 8 GPUs, checked on 4)::

    t_custom = custom_allreduce_latency + 2 (p - 1) / p * bytes / custom_allreduce_bus_bandwidth

and a single-node all-reduce of at most 8 MiB costs ``min(t_custom, t_nccl)`` (the faster path: the
measured custom kernels beat NCCL's latency floor for small messages; larger ones keep NCCL, whose tables
model the rest, ``energylens.cost.collectives``). Other GPUs and group sizes keep NCCL.
"""

from __future__ import annotations

import numpy as np

from energylens.hardware.profile import GPU

CUSTOM_AR_MAX_BYTES = 8.0 * 2**20  # vLLM CustomAllreduce default max_size
CUSTOM_AR_GROUPS = (2, 4, 6, 8)  # world sizes vLLM's custom all-reduce supports


def custom_allreduce_s(kind: str, n: np.ndarray, p: int, gpu: GPU, nccl_s: np.ndarray) -> np.ndarray:
    """Latency of a single-node collective of ``n`` bytes on ``p`` GPUs: the custom all-reduce where it
    applies and is faster, else ``nccl_s`` (the NCCL model's time for the same messages)."""
    if kind != "all_reduce" or p not in CUSTOM_AR_GROUPS or not gpu.has("custom_allreduce_latency"):
        return nccl_s
    t = gpu.q("custom_allreduce_latency") + 2.0 * (p - 1) / p * n / gpu.q("custom_allreduce_bus_bandwidth")
    return np.where(n <= CUSTOM_AR_MAX_BYTES, np.minimum(t, nccl_s), nccl_s)
