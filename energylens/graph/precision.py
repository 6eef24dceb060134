"""Number formats of a model's tensors: the stored format of every weight, the activation and KV-cache dtypes,
and the GEMM kernel path each weight format takes on a given GPU.

A quantised checkpoint stores weights in a narrow format plus scales (and zero points). What it costs:

* **bytes**: ``WeightFormat.bytes_per_element`` counts the values *and* their scales, so weight reads and
  weight memory include the scales (e.g. NVFP4: 4 bits + one fp8 scale per 16 values = 4.5 bits);
* **math**: ``gemm_dtype`` picks the tensor-core dtype the GEMM runs in: the wider of the weight format and
  the activation format the checkpoint quantises activations to (fp8 x fp8 at the fp8 rate, NVFP4 x FP4 at
  the fp4 rate). A weight-only format (w4a16: AWQ, GPTQ, MXFP4 experts) dequantises in the kernel and
  multiplies at the activation dtype; so does any format whose rate the GPU profile lacks (fp8 on A100,
  fp4 on Hopper), as vLLM's Marlin kernels do there.

Weight tensors are grouped into classes (``weight_class``) for display and for ``--weight-dtype``:
attention, mlp, experts, shared_experts, router, embedding, lm_head (norm weights are never quantised).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from energylens.errors import SpecError

# Storage bytes per element of plain dtypes (quantised formats add their scales, see WeightFormat).
DTYPE_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "fp32": 4.0, "int8": 1.0, "int4": 0.5, "fp4": 0.5,
               "mxfp4": 4.25 / 8, "int32": 4.0}  # mxfp4: 4-bit values + one 8-bit scale per 32 (OCP MX spec)
BITS = {"fp4": 4, "int4": 4, "fp8": 8, "int8": 8, "bf16": 16, "fp16": 16, "fp32": 32}
FLOAT_DTYPES = ("bf16", "fp16", "fp32")
WEIGHT_CLASSES = ("attention", "mlp", "experts", "shared_experts", "router", "embedding", "lm_head")
QUANTISABLE = ("attention", "mlp", "experts", "shared_experts")  # what --weight-dtype converts
FP32_SCALE_BYTES = 4.0


def weight_class(name: str) -> str:
    """Class of a weight tensor by its graph name (``energylens.models`` builders name them)."""
    if name.endswith("norm.weight"):
        return "norm"
    for prefix, cls in (("moe.experts.", "experts"), ("moe.shared.", "shared_experts"), ("moe.router", "router"),
                        ("attn.", "attention"), ("mlp.", "mlp")):
        if name.startswith(prefix):
            return cls
    return {"embed.weight": "embedding", "lm_head.weight": "lm_head"}.get(name, "other")


@dataclass(frozen=True)
class WeightFormat:
    """How one weight tensor is stored and which activation format its GEMM takes.

    ``storage``: element dtype (bf16, fp16, fp32, fp8, int8, int4, fp4); ``bytes_per_element`` includes
    scales and zero points; ``activation``: the format activations are quantised to for this GEMM (fp8, fp4,
    int8) or None for weight-only formats (the GEMM runs at the model's activation dtype)."""

    name: str
    storage: str
    bytes_per_element: float
    activation: str | None = None
    scheme: str = ""
    method: str = ""

    @property
    def quantised(self) -> bool:
        return self.storage not in FLOAT_DTYPES

    @property
    def label(self) -> str:
        if not self.quantised:
            return self.name
        act = f"a{BITS[self.activation]}" if self.activation else "a16"
        bits = self.bytes_per_element * 8
        return f"{self.name} (w{BITS[self.storage]}{act}, {self.scheme}, {bits:.4g} bits/weight)"


def plain(dtype: str) -> WeightFormat:
    if dtype not in FLOAT_DTYPES:
        raise SpecError("dtype", dtype, "one of " + ", ".join(FLOAT_DTYPES))
    return WeightFormat(dtype, dtype, DTYPE_BYTES[dtype])


def fp8(scheme: str = "tensor", *, activation: str | None = "fp8", k: int = 0, block: tuple[int, int] = (128, 128),
        method: str = "fp8") -> WeightFormat:
    """FP8 e4m3 weights with fp32 scales per tensor, per output channel (over ``k`` inputs) or per block."""
    if scheme == "block":
        extra, text = FP32_SCALE_BYTES / (block[0] * block[1]), f"block {block[0]}x{block[1]} fp32 scales"
    elif scheme == "channel":
        extra, text = FP32_SCALE_BYTES / max(k, 1), "per-channel fp32 scales"
    else:
        extra, text = 0.0, "per-tensor scale"
    return WeightFormat("fp8", "fp8", 1.0 + extra, activation, text, method)


def int_weights(bits: int, group: int | None, *, symmetric: bool = True, k: int = 0, scale_bytes: float = 2.0,
                activation: str | None = None, method: str = "") -> WeightFormat:
    """Integer weights (AWQ, GPTQ, compressed-tensors) with one scale (and zero point when asymmetric) per
    ``group`` input elements, or per output channel (``group`` None: one per ``k`` inputs)."""
    if bits not in (4, 8):
        raise SpecError("quantization bits", bits, "4 or 8 (int4 or int8 weights)")
    n = group if group and group > 0 else max(k, 1)
    extra = (scale_bytes + (0.0 if symmetric else bits / 8.0)) / n
    text = (f"group {group}" if group and group > 0 else "per-channel") + \
        (" fp16 scales" if symmetric else " fp16 scales + zero points")
    return WeightFormat(f"int{bits}", f"int{bits}", bits / 8.0 + extra, activation, text, method)


def nvfp4(*, activation: str | None = "fp4", method: str = "modelopt") -> WeightFormat:
    """NVFP4: e2m1 values, one fp8 (e4m3) scale per 16 values (plus one fp32 scale per tensor)."""
    return WeightFormat("nvfp4", "fp4", 0.5 + 1.0 / 16, activation, "block 16 fp8 scales", method)


def mxfp4(*, activation: str | None = None, method: str = "mxfp4") -> WeightFormat:
    """MXFP4 (OCP MX): e2m1 values, one e8m0 scale per 32 values."""
    return WeightFormat("mxfp4", "fp4", 0.5 + 1.0 / 32, activation, "block 32 e8m0 scales", method)


# --weight-dtype names -> format (what a serving engine's on-the-fly or default quantisation of that name is)
WEIGHT_DTYPE_NAMES = ("bf16", "fp16", "fp32", "fp8", "int8", "int4", "nvfp4", "mxfp4")


def format_named(name: str, *, k: int = 0) -> WeightFormat:
    """The format a ``--weight-dtype`` name stands for: fp8 = per-tensor w8a8 (vLLM ``--quantization fp8``),
    int8 = per-channel w8a8, int4 = group-128 w4a16 (GPTQ/AWQ-style), nvfp4 = w4a4 block 16,
    mxfp4 = w4a16 block 32."""
    key = name.strip().lower()
    if key in FLOAT_DTYPES:
        return plain(key)
    if key == "fp8":
        return fp8("tensor", method="--weight-dtype fp8")
    if key == "int8":
        return int_weights(8, None, k=k, scale_bytes=FP32_SCALE_BYTES, activation="int8", method="--weight-dtype int8")
    if key == "int4":
        return int_weights(4, 128, method="--weight-dtype int4")
    if key == "nvfp4":
        return nvfp4(method="--weight-dtype nvfp4")
    if key == "mxfp4":
        return mxfp4(method="--weight-dtype mxfp4")
    raise SpecError("weight dtype", name, "one of " + ", ".join(WEIGHT_DTYPE_NAMES))


ACTIVATION_DTYPES = ("bf16", "fp16", "fp8", "fp4")
KV_CACHE_DTYPES = ("bf16", "fp16", "fp8")


def gemm_dtype(fmt: WeightFormat, act_dtype: str, gpu) -> str:
    """Tensor-core dtype a GEMM with weights in ``fmt`` runs at on ``gpu`` (activations held in ``act_dtype``)."""
    if fmt.activation is None or not fmt.quantised:
        return act_dtype
    math = fmt.storage if BITS[fmt.storage] >= BITS[fmt.activation] else fmt.activation
    if math == "int4" or not gpu.has(f"peak_flops_{math}"):
        return act_dtype  # dequantised in the kernel (Marlin-style) where the GPU lacks the rate
    return math


def moe_format_key(fmt: WeightFormat) -> str:
    """Key of the fused-MoE kernel fit for experts stored in ``fmt`` (profile fields ``moe_*_<key>``): the
    format's name, ``fp8_block`` for block-scaled fp8 (another kernel than per-tensor fp8 on Blackwell)."""
    if fmt.name == "fp8" and fmt.scheme.startswith("block"):
        return "fp8_block"
    return fmt.name


def gemm_kernel(fmt: WeightFormat, act_dtype: str, gpu) -> str:
    """The GEMM kernel family whose fitted coefficients cost this weight format on ``gpu``: the math dtype of
    :func:`gemm_dtype`, or a kernel variant of it: ``fp8_block`` (fp8 weights with 128x128 block scales and
    per-token-group fp8 activations: DeepSeek-V3, Qwen3-FP8, MiniMax) and ``nvfp4`` (NVFP4 x FP4 on the fp4
    rate). A GPU without a table for the variant costs it with its math dtype's coefficients
    (``energylens.cost.families.gemm_coeffs``; :func:`kernel_path` says so)."""
    math = gemm_dtype(fmt, act_dtype, gpu)
    if math == "fp8" and fmt.storage == "fp8" and fmt.scheme.startswith("block"):
        return "fp8_block"
    if math == "fp4" and fmt.name == "nvfp4":
        return "nvfp4"
    return math


def kernel_path(fmt: WeightFormat, act_dtype: str, gpu) -> str:
    """One line: how the GEMMs of this weight format are costed on ``gpu``."""
    math = gemm_dtype(fmt, act_dtype, gpu)
    if not fmt.quantised:
        return f"{math} GEMM"
    kernel = gemm_kernel(fmt, act_dtype, gpu)
    if kernel != math:
        own = gpu.has(f"gemm_overhead_{kernel}") or gpu.has(f"gemm_k_half_{kernel}")
        fit = f"{kernel} kernel coefficients" if own else \
            f"no {kernel} kernel table for {gpu.key}: the {math} GEMM coefficients"
        return f"{math} x {math} GEMM at the {math} rate ({fit})"
    if fmt.activation is None:
        return f"dequantising GEMM: {fmt.name} weights read, {math} math"
    if math == act_dtype:
        return f"dequantising GEMM ({gpu.key} has no {fmt.activation if fmt.activation != 'int8' else 'int8'} " \
               f"rate in its profile): {fmt.name} weights read, {math} math"
    return f"{math} x {math} GEMM at the {math} rate"


@dataclass(frozen=True)
class Precision:
    """Every weight tensor's format, the activation dtype and the KV-cache dtype of a model.

    ``weights`` maps weight tensor names to formats; names not in it are stored as ``default`` (the
    checkpoint's float dtype). ``source`` says where the formats were read; ``notes`` what was assumed."""

    default: WeightFormat
    activation: str
    kv_cache: str
    weights: Mapping[str, WeightFormat] = field(default_factory=dict)
    source: str = ""
    notes: tuple[str, ...] = ()

    def format_of(self, name: str) -> WeightFormat:
        return self.weights.get(name, self.default)

    def classes(self, names: Iterable[str]) -> dict[str, list[WeightFormat]]:
        """Weight class -> distinct formats of its tensors (in first-seen order)."""
        out: dict[str, list[WeightFormat]] = {}
        for n in names:
            cls = weight_class(n)
            if cls in ("norm", "other"):
                continue
            fmts = out.setdefault(cls, [])
            f = self.format_of(n)
            if f not in fmts:
                fmts.append(f)
        return {c: out[c] for c in WEIGHT_CLASSES if c in out}

    def headline(self, names: Iterable[str]) -> str:
        """The format name of the bulk of the weights: experts if any, else the MLP, else attention."""
        cls = self.classes(names)
        for c in ("experts", "mlp", "attention"):
            if c in cls:
                return cls[c][0].name
        return self.default.name

    def override(self, names: Iterable[str], *, weight: str | None = None, kv_cache: str | None = None,
                 activation: str | None = None, k: int = 0) -> Precision:
        """A copy with ``--weight-dtype`` (quantisable classes), ``--kv-cache-dtype`` and ``--activation-dtype``
        applied. bf16/fp16 weights convert every weight (an unquantised copy of the checkpoint)."""
        names = list(names)
        weights = dict(self.weights)
        default = self.default
        act = self.activation
        notes = list(self.notes)
        if weight is not None:
            fmt = format_named(weight, k=k)
            if fmt.quantised:
                for n in names:
                    if weight_class(n) in QUANTISABLE:
                        weights[n] = fmt
            else:
                weights, default = {}, fmt
                act = fmt.name if fmt.name != "fp32" else act
            notes.append(f"weights set by --weight-dtype {weight}: {fmt.label}")
        if activation is not None:
            a = activation.strip().lower()
            if a not in ACTIVATION_DTYPES:
                raise SpecError("activation dtype", activation, "one of " + ", ".join(ACTIVATION_DTYPES))
            if a in FLOAT_DTYPES:
                act = a
                weights = {n: replace(f, activation=None) for n, f in weights.items()}
                if default.quantised:
                    default = replace(default, activation=None)
            else:
                weights = {n: (replace(f, activation=a) if f.quantised else f) for n, f in weights.items()}
            notes.append(f"GEMM activations set by --activation-dtype {a}")
        kv = self.kv_cache
        if kv_cache is not None and kv_cache.strip().lower() == "auto":
            kv_cache = None  # vLLM's default: the checkpoint's own (fp8 where its ModelOpt config quantises the cache)
        if kv_cache is not None:
            kv = {"fp8_e4m3": "fp8", "fp8_e5m2": "fp8"}.get(kv_cache.strip().lower(), kv_cache.strip().lower())
            if kv not in KV_CACHE_DTYPES:
                raise SpecError("kv cache dtype", kv_cache, "one of auto, " + ", ".join(KV_CACHE_DTYPES))
        elif weight is not None and not format_named(weight).quantised:
            kv = act
        return Precision(default, act, kv, weights, self.source, tuple(notes))

    def describe(self, names: Iterable[str], gpu=None) -> dict:
        """Per class: format label (and, given a GPU, the kernel path); plus activations and KV cache."""
        out: dict = {}
        for cls, fmts in self.classes(names).items():
            out[cls] = {"format": " + ".join(f.label for f in fmts)}
            if gpu is not None:
                out[cls]["gemm"] = "row lookup (no GEMM)" if cls == "embedding" else \
                    "; ".join(dict.fromkeys(kernel_path(f, self.activation, gpu) for f in fmts))
        out["activations"] = {"format": self.activation}
        out["kv_cache"] = {"format": self.kv_cache}
        return out


def plain_precision(weight_dtype: str, act_dtype: str, kv_dtype: str, names: Iterable[str] = ()) -> Precision:
    """Precision of a model built with one dtype for every weight (``names``: its weight tensors)."""
    fmt = plain(weight_dtype) if weight_dtype in FLOAT_DTYPES else format_named(weight_dtype)
    if fmt.quantised:
        return Precision(plain(act_dtype), act_dtype, kv_dtype, dict.fromkeys(names, fmt), "model dtypes")
    return Precision(fmt, act_dtype, kv_dtype, {}, "model dtypes")
