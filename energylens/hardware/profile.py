"""GPU profiles: every number a ``Quantity`` with a unit, a kind and a source.

A profile is one YAML file (``energylens/data/hardware/gpus/<key>.yaml`` or any path a user
gives). Schema::

    key: h100-sxm                       # short name used by --gpu
    name: NVIDIA H100 SXM5 80GB
    aliases: [h100, "NVIDIA H100 80GB HBM3", H100]
    link: nvlink4                       # intra-node link key (see links.yaml)
    quantities:
      <field>: {value: <SI number or null>, unit: <SI unit>, kind: spec|measured|derived|fitted|assumed,
                source: <URL, paper, repo path or measurement file>, note: <optional text>}

Units are SI and are checked against ``FIELDS``. Fields named ``*_<dtype>`` exist per dtype
(bf16, fp16, fp8, fp32; optionally fp4, int8); a ``null`` value means the GPU does not support it, which is an error
only when a prediction asks for that dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from energylens.datafiles import data_path, safe_load
from energylens.errors import SpecError, UnknownNameError
from energylens.graph.precision import DTYPE_BYTES  # noqa: F401 - re-exported: bytes per element of each dtype

DTYPES = ("bf16", "fp16", "fp8", "fp32")  # every profile lists these (null = unsupported)
OPTIONAL_DTYPES = ("fp4", "int8")  # listed where a profile has them (B200: fp4)
# checkpoint formats whose kernels have their own fit (``moe_*_<format>``: the fused-MoE kernel vLLM runs for
# experts in that format; see energylens.graph.precision.moe_format_key)
KERNEL_FORMATS = ("fp8_block", "nvfp4", "int4", "mxfp4")
KINDS = ("spec", "measured", "derived", "fitted", "assumed", "model", "estimate", "user")

# field -> (unit, required). Per-dtype fields are listed once with the suffix "{dtype}".
FIELDS: dict[str, tuple[str, bool]] = {
    "peak_flops_{dtype}": ("FLOP/s", False),
    "max_compute_efficiency_{dtype}": ("1", False),
    "energy_per_flop_{dtype}": ("J/FLOP", False),
    "hbm_bandwidth": ("B/s", True),
    "max_memory_efficiency": ("1", True),
    "hbm_capacity": ("B", True),
    "energy_per_byte_hbm": ("J/B", True),
    "l2_capacity": ("B", True),
    "sm_count": ("1", True),
    "power_limit": ("W", True),
    "idle_power": ("W", True),
    "busy_power": ("W", False),  # above idle while a kernel runs (0 when absent); fitted on kernel power tables
    "kernel_overhead": ("s", True),
    "gemm_tile_m": ("1", True),
    "gemm_tile_n": ("1", True),
    "gemm_k_half": ("1", True),
    "nic_bandwidth": ("B/s", False),
}
# Kernel-family coefficients (energylens/cost/families.py), fitted on NVIDIA's kernel tables where a GPU
# has them (python tools/calibrate_tables.py); a GPU without tables lacks them and gets spec-derived defaults.
KERNEL_FAMILY_FIELDS: dict[str, tuple[str, bool]] = {
    "moe_byte_energy_ratio": ("1", False),  # a fused-MoE kernel's J per HBM byte over energy_per_byte_hbm (1 when absent)
    "gemm_k_half_{dtype}": ("1", False),
    "gemm_tile_m_{dtype}": ("1", False),
    "gemm_tile_n_{dtype}": ("1", False),
    "gemm_memory_efficiency_{dtype}": ("1", False),
    "gemm_overhead_{dtype}": ("s", False),
    "gemm_prepass_bytes_{dtype}": ("B", False),
    "gemm_split_k_{dtype}": ("1", False),
    "gemm_small_m_{dtype}": ("1", False),
    "gemm_prepass_row_{dtype}": ("s", False),
    "gemm_cta_bandwidth_{dtype}": ("B/s", False),
    "decode_attn_overhead": ("s", False),
    "decode_attn_memory_efficiency": ("1", False),
    "decode_attn_cta_overhead": ("s", False),
    "decode_attn_compute_efficiency": ("1", False),
    "decode_attn_fp8_kv_efficiency": ("1", False),
    "decode_attn_ctas_per_sm": ("1", False),
    "decode_attn_split_min_tokens": ("1", False),
    "decode_attn_max_splits": ("1", False),
    "decode_attn_window_pad": ("1", False),
    "decode_attn_cta_bandwidth": ("B/s", False),
    "decode_attn_cta_latency": ("s", False),
    "decode_attn_fp8_cta_factor": ("1", False),
    "decode_attn_combine_overhead": ("s", False),
    "decode_attn_q_rows": ("1", False),
    "decode_attn_graph_max_batch": ("1", False),
    "decode_attn_graph_seq_time": ("s", False),
    "decode_attn_seq_time": ("s", False),
    "prefill_attn_overhead": ("s", False),
    "prefill_attn_compute_efficiency": ("1", False),
    "prefill_attn_k_half": ("1", False),
    "prefill_attn_d_half": ("1", False),
    "prefill_attn_q_tile": ("1", False),
    "prefill_attn_memory_efficiency": ("1", False),
    "prefill_attn_kv_traffic_{dtype}": ("B", False),
    "prefill_attn_token_time": ("s", False),
    "prefill_attn_fp8_token_factor": ("1", False),
    "prefill_attn_fp8_overhead": ("s", False),
    "prefill_attn_tile_rows": ("1", False),
    "prefill_attn_multi_tile_overhead": ("s", False),
    "prefill_attn_fp8_multi_tile_factor": ("1", False),
    "prefill_attn_fp8_compute_factor": ("1", False),
    "prefill_attn_fp8_d_half": ("1", False),
    "prefill_attn_pack_gqa": ("1", False),
    "moe_compute_efficiency_{dtype}": ("1", False),
    "moe_k_half_{dtype}": ("1", False),
    "moe_tile_m_{dtype}": ("1", False),
    "moe_tile_n_{dtype}": ("1", False),
    "moe_memory_efficiency_{dtype}": ("1", False),
    "moe_overhead_{dtype}": ("s", False),
    "custom_allreduce_latency": ("s", False),
    "custom_allreduce_bus_bandwidth": ("B/s", False),
}
FIELDS.update(KERNEL_FAMILY_FIELDS)


@dataclass(frozen=True)
class Quantity:
    """One sourced number."""

    value: float | None
    unit: str
    kind: str
    source: str
    note: str = ""

    def to_dict(self) -> dict:
        d = {"value": self.value, "unit": self.unit, "kind": self.kind, "source": self.source}
        if self.note:
            d["note"] = self.note
        return d


def _expected_unit(name: str) -> tuple[str, bool] | None:
    if name in FIELDS:
        return FIELDS[name]
    for dt in DTYPES + OPTIONAL_DTYPES + KERNEL_FORMATS:
        suffix = "_" + dt
        if name.endswith(suffix):
            key = name[: -len(suffix)] + "_{dtype}"
            if key in FIELDS:
                return FIELDS[key]
    return None


def parse_quantity(entry: object, where: str, unit: str) -> Quantity:
    """Validate one ``{value, unit, kind, source[, note]}`` mapping; ``where`` names it in errors."""
    if not isinstance(entry, dict):
        raise SpecError(where, entry, "{value, unit, kind, source}")
    for k in ("value", "unit", "kind", "source"):
        if k not in entry:
            raise SpecError(f"{where}.{k}", None, "every number needs value, unit, kind and source")
    if str(entry["unit"]) != unit:
        raise SpecError(f"{where}.unit", entry["unit"], f"expected SI unit {unit!r}")
    kind = str(entry["kind"])
    if kind not in KINDS:
        raise SpecError(f"{where}.kind", kind, "one of " + ", ".join(KINDS))
    source = str(entry["source"]).strip()
    if not source:
        raise SpecError(f"{where}.source", source, "a non-empty source")
    value = entry["value"]
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{where}.value", value, "a number or null")
        try:
            value = float(value)
        except OverflowError:
            raise SpecError(f"{where}.value", value, "a finite number or null") from None
        if not math.isfinite(value) or value < 0:
            raise SpecError(f"{where}.value", value, "a finite, non-negative number or null")
    return Quantity(value, unit, kind, source, str(entry.get("note", "")))


class Sourced:
    """Accessors shared by sourced profiles (GPUs, links): ``quantities`` name -> Quantity."""

    key: str
    quantities: dict[str, Quantity]
    _what = "profile"

    def q(self, name: str) -> float:
        qty = self.quantities.get(name)
        if qty is None or qty.value is None:
            raise SpecError(f"{self._what}[{self.key}].{name}", None, f"this {self._what} has no value for it")
        return float(qty.value)

    def has(self, name: str) -> bool:
        qty = self.quantities.get(name)
        return qty is not None and qty.value is not None


@dataclass(frozen=True)
class OperatingPoint:
    """A user-set power limit and/or locked SM clock (``energylens.cost.dvfs.with_operating_point``).

    ``reference_*`` keep the profile's own values (the GPU at its maximum SM clock and default limit)."""

    reference_power_limit_w: float
    reference_idle_power_w: float
    sm_clock_mhz: float | None = None


@dataclass(frozen=True)
class GPU(Sourced):
    """A GPU profile. Accessors return SI floats; ``quantities`` keeps the provenance."""

    key: str
    name: str
    link: str
    quantities: dict[str, Quantity] = field(repr=False)
    aliases: tuple[str, ...] = ()
    path: str = ""
    operating: OperatingPoint | None = None  # None: default limit, clocks free (energylens.cost.dvfs)

    _what = "gpu"

    def _dtype_q(self, prefix: str, dtype: str) -> float:
        name = f"{prefix}_{dtype}"
        if not self.has(name):
            supported = [d for d in DTYPES + OPTIONAL_DTYPES if self.has(f"peak_flops_{d}")]
            raise SpecError("dtype", dtype, f"{self.name} supports {', '.join(supported)}")
        return self.q(name)

    def peak_flops(self, dtype: str) -> float:
        return self._dtype_q("peak_flops", dtype)

    def max_compute_efficiency(self, dtype: str) -> float:
        return self._dtype_q("max_compute_efficiency", dtype)

    def energy_per_flop_j(self, dtype: str) -> float:
        return self._dtype_q("energy_per_flop", dtype)

    @property
    def hbm_bandwidth_bytes_per_s(self) -> float:
        return self.q("hbm_bandwidth")

    @property
    def max_memory_efficiency(self) -> float:
        return self.q("max_memory_efficiency")

    @property
    def hbm_capacity_bytes(self) -> float:
        return self.q("hbm_capacity")

    @property
    def energy_per_byte_j(self) -> float:
        return self.q("energy_per_byte_hbm")

    @property
    def l2_bytes(self) -> float:
        return self.q("l2_capacity")

    @property
    def sm_count(self) -> int:
        return int(self.q("sm_count"))

    @property
    def power_limit_w(self) -> float:
        return self.q("power_limit")

    @property
    def idle_power_w(self) -> float:
        return self.q("idle_power")

    @property
    def busy_power_w(self) -> float:
        """Power above idle while any kernel runs at the maximum clock (W); 0 for a profile without it."""
        return self.q("busy_power") if self.has("busy_power") else 0.0

    @property
    def moe_byte_energy_ratio(self) -> float:
        """Energy per HBM byte of a fused-MoE kernel over ``energy_per_byte_hbm`` (1 for a profile without it)."""
        return self.q("moe_byte_energy_ratio") if self.has("moe_byte_energy_ratio") else 1.0

    @property
    def kernel_overhead_s(self) -> float:
        return self.q("kernel_overhead")

    def to_dict(self) -> dict:
        return {
            "key": self.key,
            "name": self.name,
            "aliases": list(self.aliases),
            "link": self.link,
            "quantities": {k: v.to_dict() for k, v in self.quantities.items()},
        }

    def with_quantities(self, updates: dict[str, Quantity]) -> GPU:
        q = dict(self.quantities)
        q.update(updates)
        return GPU(self.key, self.name, self.link, q, self.aliases, self.path, self.operating)


def parse_gpu(data: object, origin: str) -> GPU:
    """Validate a profile mapping and build a GPU. ``origin`` names the file in errors."""
    if not isinstance(data, dict):
        raise SpecError(origin, type(data).__name__, "a GPU profile must be a YAML mapping")
    for req in ("key", "name", "link", "quantities"):
        if req not in data:
            raise SpecError(f"{origin}: {req}", None, "required top-level field")
    raw = data["quantities"]
    if not isinstance(raw, dict):
        raise SpecError(f"{origin}: quantities", raw, "a mapping of field -> {value, unit, kind, source}")
    quantities: dict[str, Quantity] = {}
    for name, entry in raw.items():
        where = f"{origin}: quantities.{name}"
        expected = _expected_unit(name)
        if expected is None:
            raise SpecError(where, name, "unknown field; known: " + ", ".join(sorted(FIELDS)))
        quantities[name] = parse_quantity(entry, where, expected[0])
    for name, (_unit, required) in FIELDS.items():
        if required and "{dtype}" not in name and name not in quantities:
            raise SpecError(f"{origin}: quantities.{name}", None, "required field is missing")
    if not any(quantities.get(f"peak_flops_{d}") and quantities[f"peak_flops_{d}"].value for d in DTYPES):
        raise SpecError(f"{origin}: quantities.peak_flops_*", None, "at least one dtype's peak is required")
    sanity_check(quantities, origin)
    aliases = data.get("aliases", []) or []
    if not isinstance(aliases, list):
        raise SpecError(f"{origin}: aliases", aliases, "a list of names")
    aliases = tuple(str(a) for a in aliases)
    return GPU(str(data["key"]), str(data["name"]), str(data["link"]), quantities, aliases, origin)


POSITIVE_FIELDS = ("hbm_bandwidth", "hbm_capacity", "sm_count", "power_limit", "gemm_tile_m", "gemm_tile_n",
                   "l2_capacity")
INTEGER_FIELDS = ("sm_count", "gemm_tile_m", "gemm_tile_n")
MAX_TILE = 4096


def sanity_check(quantities: dict[str, Quantity], origin: str) -> None:
    """Physical sense of a profile (units are already checked): capacities, bandwidths, the SM count
    and the power limit positive; idle power below the power limit; every efficiency in (0, 1];
    GEMM tiles and the SM count positive integers; energies per FLOP/byte and overheads finite."""
    def val(name: str) -> float | None:
        q = quantities.get(name)
        return None if q is None else q.value

    for name in POSITIVE_FIELDS:
        v = val(name)
        if v is not None and not v > 0:
            raise SpecError(f"{origin}: quantities.{name}.value", v, "a positive number")
    for name in INTEGER_FIELDS:
        v = val(name)
        if v is not None and (v != int(v) or not 1 <= v <= MAX_TILE * 64):
            raise SpecError(f"{origin}: quantities.{name}.value", v, "a positive integer")
    for name in ("gemm_tile_m", "gemm_tile_n"):
        v = val(name)
        if v is not None and v > MAX_TILE:
            raise SpecError(f"{origin}: quantities.{name}.value", v, f"a tile size of at most {MAX_TILE}")
    for name in quantities:
        if name == "max_memory_efficiency" or name.startswith("max_compute_efficiency_"):
            v = val(name)
            if v is not None and not 0 < v <= 1:
                raise SpecError(f"{origin}: quantities.{name}.value", v, "an efficiency in (0, 1]")
        if name.startswith("peak_flops_"):
            v = val(name)
            if v is not None and not v > 0:
                raise SpecError(f"{origin}: quantities.{name}.value", v, "a positive FLOP/s or null (unsupported)")
    idle, limit = val("idle_power"), val("power_limit")
    if idle is not None and limit is not None and not idle < limit:
        raise SpecError(f"{origin}: quantities.idle_power.value", idle,
                        f"an idle power below the power limit ({limit:g} W)")
    busy = val("busy_power")
    if busy is not None and (not busy >= 0 or (idle is not None and limit is not None and not idle + busy < limit)):
        raise SpecError(f"{origin}: quantities.busy_power.value", busy,
                        "a busy power of at least 0 W that keeps idle_power + busy_power below the power limit")
    ratio = val("moe_byte_energy_ratio")
    if ratio is not None and not 0 < ratio <= 10:
        raise SpecError(f"{origin}: quantities.moe_byte_energy_ratio.value", ratio, "a ratio in (0, 10]")
    k_half = val("gemm_k_half")
    if k_half is not None and k_half > 1e9:
        raise SpecError(f"{origin}: quantities.gemm_k_half.value", k_half, "at most 1e9")


def _data_dir():
    return data_path("hardware", "gpus")


class _BuiltinCatalog:
    """The shipped profiles, each parsed the first time it is asked for (``load_gpu("h100-sxm")``
    reads one file; an alias or ``known_gpus()`` reads them all). ``cache_clear()`` forgets them."""

    def __init__(self) -> None:
        self.files: dict[str, GPU | None] = {}
        self.everything: dict[str, GPU] | None = None

    def cache_clear(self) -> None:
        self.files.clear()
        self.everything = None

    def file(self, stem: str) -> GPU | None:
        """The profile in ``<stem>.yaml`` (a fitted profile in the repo replaces it), or None."""
        if stem not in self.files:
            entry = _data_dir() / f"{stem}.yaml"
            gpu = None
            if "/" not in stem and entry.is_file():
                gpu = parse_gpu(safe_load(entry.read_text()), f"energylens/data/hardware/gpus/{entry.name}")
                from energylens.hardware.fitted import fitted_profile_path

                fitted = fitted_profile_path(gpu.key)
                if fitted is not None:  # a profile calibrated from real records in the repo is the default
                    measured = parse_gpu(safe_load(fitted.read_text()), str(fitted))
                    gpu = GPU(gpu.key, measured.name, measured.link, measured.quantities,
                              tuple(dict.fromkeys(gpu.aliases + measured.aliases)), str(fitted))
            self.files[stem] = gpu
        return self.files[stem]

    def __call__(self) -> dict[str, GPU]:
        if self.everything is None:
            gpus: dict[str, GPU] = {}
            for entry in sorted(_data_dir().iterdir(), key=lambda p: p.name):
                if entry.name.endswith(".yaml"):
                    gpu = self.file(entry.name[: -len(".yaml")])
                    gpus[gpu.key] = gpu
            self.everything = gpus
        return self.everything


_builtin = _BuiltinCatalog()


def _norm(name: str) -> str:
    """Compact form for matching: lower case, letters and digits only ("H100 SXM" = "h100-sxm" = "H100_SXM")."""
    return "".join(c for c in name.strip().lower() if c.isalnum())


# Names that stand for more than one profile: an error naming the candidates, never a silent pick.
AMBIGUOUS = {"a100": ("a100-sxm-40gb", "a100-sxm-80gb"), "a100sxm": ("a100-sxm-40gb", "a100-sxm-80gb"),
             "a100sxm4": ("a100-sxm-40gb", "a100-sxm-80gb"), "nvidiaa100": ("a100-sxm-40gb", "a100-sxm-80gb")}


def known_gpus() -> list[str]:
    return sorted(_builtin())


def forget_loaded_profiles() -> None:
    """Make the next :func:`load_gpu` re-read the built-in profiles (after a tool rewrote one of them)."""
    _builtin.cache_clear()


def gpu_names(gpu: GPU) -> tuple[str, ...]:
    """Every name a built-in GPU answers to: key, full name and aliases."""
    return tuple(dict.fromkeys((gpu.key, gpu.name, *gpu.aliases)))


def load_gpu(name_or_path: str | GPU) -> GPU:
    """A built-in GPU by key, name or alias (case, spaces, dashes and underscores ignored), or a profile
    YAML path. A name that fits several profiles (``A100``: 40 or 80 GB) is an error naming them."""
    if isinstance(name_or_path, GPU):
        return name_or_path
    from energylens.checks import MAX_CONFIG_BYTES, is_file, parse_yaml, read_text, text

    name = text("gpu", name_or_path, error=SpecError, what="a GPU key/alias or a profile .yaml path")
    if name.endswith((".yaml", ".yml")) or is_file(name):
        if not is_file(name):
            raise SpecError("gpu", name, "a built-in GPU name or an existing profile .yaml file")
        source = read_text(name, "gpu", max_bytes=MAX_CONFIG_BYTES, what="a GPU profile .yaml file")
        return parse_gpu(parse_yaml(source, "gpu", name), name)
    wanted = _norm(name)
    stem = name.strip().lower().replace("_", "-").replace(" ", "-")
    one = _builtin.file(stem) if stem and stem.replace("-", "").isalnum() else None
    if one is not None and one.key == stem:  # a key: only its own file is read
        return one
    builtin = _builtin()
    hits = [g for g in builtin.values() if wanted in {_norm(n) for n in gpu_names(g)}]
    if len(hits) == 1:
        return hits[0]
    candidates = tuple(g.key for g in hits) or AMBIGUOUS.get(wanted, ())
    if len(candidates) > 1:
        raise SpecError("gpu", name, "ambiguous: it names " + " or ".join(
            f"{k} ({builtin[k].name})" for k in candidates if k in builtin) + "; name one of them")
    raise UnknownNameError("gpu", name, builtin.keys())
