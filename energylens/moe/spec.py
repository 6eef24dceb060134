"""The routing of tokens to experts as a value: ``Routing`` (uniform, Zipf, Dirichlet, recorded
histograms) and the limits of the routing model. Forms and maths: :mod:`energylens.moe.routing`."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from energylens.errors import EnergyLensError, SpecError, UnknownNameError

ROUTING_FORMS = (
    "uniform",
    "zipf:S",
    "zipf:S:sorted",
    "zipf:S:SEED",
    "dirichlet:A",
    "dirichlet:A:SEED",
    "<file>.json",
    "<file>.csv",
    "<file>.npy",
)
HISTOGRAM_SUFFIXES = (".json", ".csv", ".npy")
DEFAULT_PERMUTATION_SEED = 0
DEFAULT_DIRICHLET_SEED = 0
MAX_ZIPF_EXPONENT = 100.0
DEFAULT_SAMPLES = 2000
MIN_SAMPLES = 100
POOL_TOKENS = 1 << 16
POOL_SEED = 0x5EED
MC_MAX_TOKENS = 128
METHODS = ("auto", "monte-carlo", "normal")
_DETERMINISTIC_TOL = 1e-12
_QUAD_TOL = 1e-9
_MC_CHUNK_ASSIGNMENTS = 1 << 22
_MODEL_CACHE_SIZE = 16
_RESULT_CACHE_SIZE = 4096



# --------------------------------------------------------------------------------------------
# Routing distributions
# --------------------------------------------------------------------------------------------


def _format_number(x: float) -> str:
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


def _check_n_experts(n_experts: object) -> int:
    if isinstance(n_experts, bool) or not isinstance(n_experts, (int, np.integer)) or n_experts < 1:
        raise EnergyLensError("n_experts", n_experts, "an integer >= 1")
    return int(n_experts)


@dataclass(frozen=True, eq=False)
class Routing:
    """A routing distribution: how popular each expert is, per layer.

    Build one with ``parse_routing`` (CLI strings), ``Routing.uniform()``, ``Routing.zipf(S)``,
    ``Routing.dirichlet(A)`` or ``load_histogram(path)``. Two routings are equal when they
    give the same probabilities (same kind, parameters, seed and, for files, counts).
    """

    kind: str  # "uniform" | "zipf" | "dirichlet" | "histogram"
    parameter: float | None = None  # zipf exponent S or dirichlet concentration A
    sorted_experts: bool = False  # zipf only: hottest experts on rank 0
    seed: int | None = None  # zipf permutation seed / dirichlet draw seed
    path: str | None = None  # histogram file
    counts: np.ndarray | None = field(default=None, repr=False)  # [n_layers_recorded, E]
    recorded_top_k: int | None = None  # top_k stated in a JSON histogram, informational
    source: str | None = None  # provenance stated in a JSON histogram

    def __post_init__(self) -> None:
        if self.kind == "uniform":
            return
        if self.kind in ("zipf", "dirichlet"):
            what = "zipf exponent S" if self.kind == "zipf" else "dirichlet concentration A"
            upper = MAX_ZIPF_EXPONENT if self.kind == "zipf" else math.inf
            value = self.parameter
            if (
                value is None
                or isinstance(value, bool)
                or not isinstance(value, (int, float, np.floating, np.integer))
                or not math.isfinite(float(value))
                or not 0.0 < float(value) <= upper
            ):
                bound = f"0 < S <= {_format_number(upper)}" if self.kind == "zipf" else "A > 0 (finite)"
                raise EnergyLensError(
                    "routing", f"{self.kind}:{value}", f"{what} must be a number with {bound}"
                )
            object.__setattr__(self, "parameter", float(value))
            default = DEFAULT_PERMUTATION_SEED if self.kind == "zipf" else DEFAULT_DIRICHLET_SEED
            seed = default if self.seed is None else self.seed
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
                raise EnergyLensError(
                    "routing", f"{self.kind} seed {seed!r}", "a seed must be an integer >= 0"
                )
            if self.kind == "zipf" and self.sorted_experts:
                seed = DEFAULT_PERMUTATION_SEED  # no permutation: the seed is irrelevant
            object.__setattr__(self, "seed", int(seed))
            return
        if self.kind == "histogram":
            if self.counts is None:
                raise SpecError("routing", self.path, "a histogram routing needs a counts matrix")
            counts = _validate_counts(np.asarray(self.counts), str(self.path))
            counts.setflags(write=False)
            object.__setattr__(self, "counts", counts)
            return
        raise UnknownNameError("routing", self.kind, ("uniform", "zipf", "dirichlet", "histogram"))

    # constructors ---------------------------------------------------------------------------
    @classmethod
    def uniform(cls) -> Routing:
        """Every token picks k distinct experts uniformly at random."""
        return cls("uniform")

    @classmethod
    def zipf(
        cls, exponent: float, *, sorted_experts: bool = False, seed: int = DEFAULT_PERMUTATION_SEED
    ) -> Routing:
        """Zipf popularity ``1/rank**exponent``; ranks permuted over experts by ``seed`` unless sorted."""
        return cls("zipf", parameter=exponent, sorted_experts=bool(sorted_experts), seed=seed)

    @classmethod
    def dirichlet(cls, concentration: float, *, seed: int = DEFAULT_DIRICHLET_SEED) -> Routing:
        """Popularity drawn once from ``Dirichlet(concentration * ones(E))`` with ``seed``."""
        return cls("dirichlet", parameter=concentration, seed=seed)

    # identity -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """Short text for reports; ``parse_routing(name)`` rebuilds the same routing."""
        if self.kind == "uniform":
            return "uniform"
        if self.kind == "zipf":
            text = f"zipf:{_format_number(self.parameter)}"  # type: ignore[arg-type]
            if self.sorted_experts:
                return text + ":sorted"
            return text if self.seed == DEFAULT_PERMUTATION_SEED else f"{text}:{self.seed}"
        if self.kind == "dirichlet":
            text = f"dirichlet:{_format_number(self.parameter)}"  # type: ignore[arg-type]
            return text if self.seed == DEFAULT_DIRICHLET_SEED else f"{text}:{self.seed}"
        return str(self.path)

    @property
    def n_layers_recorded(self) -> int | None:
        """Rows in a histogram file (None for synthetic routings)."""
        return None if self.counts is None else int(self.counts.shape[0])

    def _key(self) -> tuple:
        if self.kind == "histogram":
            assert self.counts is not None
            digest = hashlib.sha1(np.ascontiguousarray(self.counts, dtype=np.float64).tobytes()).hexdigest()
            return ("histogram", self.counts.shape, digest)
        return (self.kind, self.parameter, self.sorted_experts, self.seed)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Routing) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    # probabilities --------------------------------------------------------------------------
    def probabilities(self, n_experts: int, layer: int = 0) -> np.ndarray:
        """Popularity ``p`` (shape ``(n_experts,)``, sums to 1) of every expert in ``layer``."""
        n = _check_n_experts(n_experts)
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or layer < 0:
            raise EnergyLensError("layer", layer, "an integer >= 0")
        if self.kind == "uniform":
            return np.full(n, 1.0 / n)
        if self.kind == "zipf":
            if self.sorted_experts:
                ranks = np.arange(1, n + 1, dtype=np.float64)
            else:
                ranks = np.random.default_rng(self.seed).permutation(n).astype(np.float64) + 1.0
            weights = np.exp(-float(self.parameter) * np.log(ranks))  # type: ignore[arg-type]
            return weights / weights.sum()
        if self.kind == "dirichlet":
            rng = np.random.default_rng(self.seed)
            draw = rng.dirichlet(np.full(n, float(self.parameter)))  # type: ignore[arg-type]
            total = draw.sum()
            if not np.all(np.isfinite(draw)) or total <= 0.0:
                raise EnergyLensError(
                    "routing", self.name, "the Dirichlet draw is degenerate; use a larger concentration A"
                )
            return draw / total
        assert self.counts is not None
        recorded = self.counts.shape[1]
        if recorded != n:
            raise SpecError(
                "routing",
                self.path,
                f"the histogram file records n_experts={recorded} but the model has n_experts={n}",
            )
        row = self.counts[layer % self.counts.shape[0]]
        return row / row.sum()


def _validate_counts(counts: np.ndarray, where: str) -> np.ndarray:
    if counts.dtype == object or not (
        np.issubdtype(counts.dtype, np.number) or np.issubdtype(counts.dtype, np.bool_)
    ):
        raise SpecError("routing", where, f"expert counts must be numbers, got dtype {counts.dtype}")
    if counts.ndim == 1:
        counts = counts.reshape(1, -1)
    if counts.ndim != 2 or counts.shape[0] < 1 or counts.shape[1] < 1:
        raise SpecError(
            "routing",
            where,
            f"expert counts must be a matrix [n_layers, n_experts], got shape {counts.shape}",
        )
    counts = np.array(counts, dtype=np.float64)
    bad = ~np.isfinite(counts) | (counts < 0)
    if bad.any():
        layer, expert = (int(v) for v in np.argwhere(bad)[0])
        raise SpecError(
            "routing",
            where,
            f"expert counts must be finite and >= 0; layer {layer}, expert {expert} has {counts[layer, expert]!r}",
        )
    empty = np.nonzero(counts.sum(axis=1) <= 0)[0]
    if empty.size:
        raise SpecError(
            "routing", where, f"every layer needs a positive total count; layer {int(empty[0])} is all zeros"
        )
    return counts
