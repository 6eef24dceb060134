"""PyTorch workloads for the ``micro`` suite: GEMMs, HBM copy/read, SDPA attention, element-wise ops.

Every builder takes the ``torch`` module and a device explicitly: nothing here imports torch at
import time. Small workloads rotate through several independent input sets so that consecutive calls
do not find their operands in L2 (the analytic ``bytes`` assume HBM traffic).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from energylens.errors import MeasurementError
from energylens.measure.points import PointSpec, attention_flops_bytes

L2_MULTIPLE = 3.0  # a rotation cycle touches at least this many L2 capacities
MAX_ROTATION = 256


@dataclass
class Workload:
    """A callable to measure, plus what the record should say about how it ran."""

    fn: Callable[[], object]
    spec: PointSpec
    graphable: bool = True
    force_graph: bool = False
    rotation: int = 1
    info: dict = field(default_factory=dict)


def rotation_count(
    footprint_bytes: float, l2_bytes: float, free_bytes: float, max_sets: int = MAX_ROTATION
) -> int:
    """Independent input sets to cycle through: enough to touch ``L2_MULTIPLE`` x L2 per cycle, within
    half the free memory and ``max_sets``."""
    if footprint_bytes <= 0:
        return 1
    want = math.ceil(L2_MULTIPLE * l2_bytes / footprint_bytes) if l2_bytes > 0 else 1
    fit = int(0.5 * free_bytes // footprint_bytes) if free_bytes > 0 else 1
    return int(max(1, min(want, fit, max_sets)))


def _cycle(sets: list[tuple], body: Callable[..., object]) -> Callable[[], object]:
    state = {"i": 0}
    n = len(sets)

    def fn() -> object:
        i = state["i"]
        state["i"] = (i + 1) % n
        return body(*sets[i])

    return fn


def _randn(
    torch: object, shape: tuple[int, ...], device: object, dtype: object, scale: float = 1.0
) -> object:
    t = torch.empty(shape, device=device, dtype=dtype)
    t.normal_(0.0, scale)
    return t


# --------------------------------------------------------------------------- GEMM


def fp8_supported(torch: object, device: object) -> tuple[bool, str]:
    """(supported, why not): fp8 GEMMs need torch._scaled_mm and compute capability >= 8.9."""
    if not hasattr(torch, "_scaled_mm") or not hasattr(torch, "float8_e4m3fn"):
        return False, "this PyTorch has no torch._scaled_mm / float8_e4m3fn"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        return False, f"compute capability {major}.{minor} < 8.9 has no fp8 tensor cores"
    try:
        a = torch.zeros((16, 32), device=device, dtype=torch.bfloat16).to(torch.float8_e4m3fn)
        b = torch.zeros((16, 32), device=device, dtype=torch.bfloat16).to(torch.float8_e4m3fn)
        _scaled_mm(torch, a, b.t(), torch.ones((), device=device, dtype=torch.float32))
        torch.cuda.synchronize(device)
    except Exception as exc:  # the exact error type varies by version
        return False, f"torch._scaled_mm failed: {str(exc).splitlines()[0][:160]}"
    return True, ""


def _scaled_mm(torch: object, a: object, b: object, scale: object) -> object:
    out = torch._scaled_mm(a, b, scale_a=scale, scale_b=scale, out_dtype=torch.bfloat16)
    return out[0] if isinstance(out, tuple) else out  # torch < 2.4 returned (out, amax)


def build_gemm(torch: object, device: object, spec: PointSpec, rotation: int) -> Workload:
    """[m,k] x [n,k]^T (nn.Linear layout) into a preallocated [m,n]; ``batch`` > 1 runs a batched
    (grouped, equal tokens per expert) GEMM [b,m,k] x [b,k,n]; fp8 runs ``torch._scaled_mm``."""
    d = spec.dims
    m, n, k, b = int(d["m"]), int(d["n"]), int(d["k"]), int(d["batch"])
    bf16 = torch.bfloat16
    scale_in = 1.0 / math.sqrt(k)
    sets: list[tuple] = []
    if spec.dtype == "fp8":
        if b != 1:
            raise MeasurementError("gemm.batch", b, "fp8 GEMMs are measured unbatched")
        one = torch.ones((), device=device, dtype=torch.float32)
        for _ in range(rotation):
            a = _randn(torch, (m, k), device, bf16).to(torch.float8_e4m3fn)
            w = _randn(torch, (n, k), device, bf16, scale_in).to(torch.float8_e4m3fn)
            sets.append((a, w.t(), one))

        def body(a: object, wt: object, s: object) -> object:
            return _scaled_mm(torch, a, wt, s)

        return Workload(_cycle(sets, body), spec, rotation=rotation, info={"impl": "torch._scaled_mm e4m3"})
    if spec.dtype != "bf16":
        raise MeasurementError("gemm.dtype", spec.dtype, "bf16 or fp8")
    for _ in range(rotation):
        if b == 1:
            sets.append(
                (
                    _randn(torch, (m, k), device, bf16),
                    _randn(torch, (n, k), device, bf16, scale_in).t(),
                    torch.empty((m, n), device=device, dtype=bf16),
                )
            )
        else:
            sets.append(
                (
                    _randn(torch, (b, m, k), device, bf16),
                    _randn(torch, (b, k, n), device, bf16, scale_in),
                    torch.empty((b, m, n), device=device, dtype=bf16),
                )
            )
    if b == 1:

        def body(a: object, wt: object, c: object) -> object:
            return torch.mm(a, wt, out=c)

        impl = "torch.mm"
    else:

        def body(a: object, w: object, c: object) -> object:
            return torch.bmm(a, w, out=c)

        impl = "torch.bmm (grouped, equal tokens per expert)"
    return Workload(_cycle(sets, body), spec, rotation=rotation, info={"impl": impl})


# --------------------------------------------------------------------------- HBM


def build_memcpy(torch: object, device: object, spec: PointSpec, rotation: int) -> Workload:
    """``copy``: dst.copy_(src); ``read``: a float32-accumulated sum over src."""
    size = int(spec.dims["size_bytes"])
    numel = size // 2
    sets = []
    for _ in range(rotation):
        src = _randn(torch, (numel,), device, torch.bfloat16)
        dst = torch.empty_like(src) if spec.dims["op"] == "copy" else None
        sets.append((src, dst))
    if spec.dims["op"] == "copy":

        def body(src: object, dst: object) -> object:
            return dst.copy_(src)

    else:

        def body(src: object, dst: object) -> object:
            return torch.sum(src, dtype=torch.float32)

    return Workload(_cycle(sets, body), spec, rotation=rotation, info={"impl": f"torch {spec.dims['op']}"})


# --------------------------------------------------------------------------- attention


def flash_context(torch: object) -> Callable[[], object]:
    """A factory of context managers restricting SDPA to the flash backend."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return lambda: sdpa_kernel(SDPBackend.FLASH_ATTENTION)
    except ImportError:  # torch < 2.3
        return lambda: torch.backends.cuda.sdp_kernel(
            enable_flash=True, enable_math=False, enable_mem_efficient=False
        )


def native_gqa(torch: object, device: object) -> bool:
    """Whether flash SDPA accepts fewer K/V heads than query heads (``enable_gqa=True``)."""
    ctx = flash_context(torch)
    F = torch.nn.functional
    try:
        q = torch.zeros((1, 4, 16, 64), device=device, dtype=torch.bfloat16)
        kv = torch.zeros((1, 2, 16, 64), device=device, dtype=torch.bfloat16)
        with ctx():
            F.scaled_dot_product_attention(q, kv, kv, is_causal=True, enable_gqa=True)
        torch.cuda.synchronize(device)
        return True
    except Exception:
        return False


def gqa_attention(torch: object, q: object, k: object, v: object, causal: bool, native: bool) -> object:
    """SDPA for q [b,H,s,d] and k/v [b,Hkv,L,d] without materialising expanded K/V where possible.

    Decode (s == 1, not causal) folds each group's query heads into the query length; prefill without
    native GQA support needs K/V already expanded by the caller.
    """
    F = torch.nn.functional
    b, heads, s, d = q.shape
    kvh = k.shape[1]
    if kvh == heads:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    if native:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
    if s == 1 and not causal:
        group = heads // kvh
        qf = q.reshape(b, kvh, group, d)
        return F.scaled_dot_product_attention(qf, k, v).reshape(b, heads, 1, d)
    raise MeasurementError("attention", "grouped-query prefill", "K/V expanded to the query heads first")


def build_attention(torch: object, device: object, spec: PointSpec, rotation: int) -> Workload:
    d = spec.dims
    b, heads, kvh, hd = int(d["batch"]), int(d["heads"]), int(d["kv_heads"]), int(d["head_dim"])
    s, kv, causal = int(d["q_len"]), int(d["kv_len"]), bool(d["causal"])
    bf16 = torch.bfloat16
    native = native_gqa(torch, device)
    expand = kvh != heads and not native and not (s == 1 and not causal)
    stored = heads if expand else kvh
    sets = []
    for _ in range(rotation):
        q = _randn(torch, (b, heads, s, hd), device, bf16)
        k = _randn(torch, (b, stored, kv, hd), device, bf16)
        v = _randn(torch, (b, stored, kv, hd), device, bf16)
        sets.append((q, k, v))
    ctx = flash_context(torch)

    def body(q: object, k: object, v: object) -> object:
        with ctx():
            return gqa_attention(torch, q, k, v, causal, native)

    mode = "native" if native else ("expanded" if expand else ("fold" if kvh != heads else "none"))
    if expand:
        flops, nbytes = attention_flops_bytes(
            b, heads, kvh, hd, s, kv, causal, spec.dtype or "bf16", kv_heads_read=heads
        )
        spec = replace(spec, flops=flops, bytes=nbytes)
    fn = _cycle(sets, body)
    try:  # fail here (not inside the timed loop) when flash cannot run this shape
        fn()
        torch.cuda.synchronize(device)
    except MeasurementError:
        raise
    except Exception as exc:
        raise MeasurementError(
            "attention", spec.name, f"flash SDPA could not run it: {str(exc).splitlines()[0][:160]}"
        ) from exc
    return Workload(fn, spec, rotation=rotation, info={"impl": "sdpa flash", "gqa": mode})


# --------------------------------------------------------------------------- element-wise


def rmsnorm(torch: object, x: object, w: object, eps: float = 1e-6) -> object:
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w


def silu_mul(torch: object, gate_up: object) -> object:
    g, u = gate_up.chunk(2, dim=-1)
    return torch.nn.functional.silu(g) * u


def rope(torch: object, x: object, cos: object, sin: object) -> object:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def build_elementwise(
    torch: object, device: object, spec: PointSpec, rotation: int, compile: bool = True
) -> Workload:
    d = spec.dims
    t, width, heads = int(d["tokens"]), int(d["width"]), int(d["heads"])
    bf16 = torch.bfloat16
    sets = []
    op = d["op"]
    for _ in range(rotation):
        if op == "rmsnorm":
            sets.append((_randn(torch, (t, width), device, bf16), _randn(torch, (width,), device, bf16)))
        elif op == "silu_mul":
            sets.append((_randn(torch, (t, 2 * width), device, bf16),))
        elif op == "rope":
            ang = _randn(torch, (t, 1, width // 2), device, torch.float32)
            sets.append(
                (_randn(torch, (t, heads, width), device, bf16), ang.cos().to(bf16), ang.sin().to(bf16))
            )
        else:
            raise MeasurementError("elementwise.op", op, "rmsnorm, silu_mul or rope")
    if op == "rmsnorm":

        def eager(x: object, w: object) -> object:
            return rmsnorm(torch, x, w)

    elif op == "silu_mul":

        def eager(gu: object) -> object:
            return silu_mul(torch, gu)

    else:

        def eager(x: object, c: object, s: object) -> object:
            return rope(torch, x, c, s)

    body, impl = eager, "eager (unfused torch ops)"
    if compile and hasattr(torch, "compile"):
        try:
            compiled = torch.compile(eager, dynamic=False)
            compiled(*sets[0])
            torch.cuda.synchronize(device)
            body, impl = compiled, "torch.compile (fused)"
        except Exception:  # no triton / compiler problems: measure the eager ops instead
            body, impl = eager, "eager (torch.compile failed)"
    return Workload(_cycle(sets, body), spec, rotation=rotation, info={"impl": impl})


def build_micro(
    torch: object, device: object, spec: PointSpec, l2_bytes: float, free_bytes: float, compile: bool = True
) -> Workload:
    """The workload for one ``micro`` point (not ``idle``, which needs no workload)."""
    rotation = rotation_count(spec.footprint_bytes, l2_bytes, free_bytes)
    if spec.kind == "gemm":
        w = build_gemm(torch, device, spec, rotation)
    elif spec.kind == "memcpy":
        w = build_memcpy(torch, device, spec, rotation)
    elif spec.kind == "attention":
        w = build_attention(torch, device, spec, rotation)
    elif spec.kind == "elementwise":
        w = build_elementwise(torch, device, spec, rotation, compile=compile)
    else:
        raise MeasurementError("point.kind", spec.kind, "gemm, memcpy, attention or elementwise")
    w.info["rotation"] = rotation
    return w
