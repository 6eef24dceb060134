"""Routing statistics for mixture-of-experts (MoE) layers.

Setting
-------
A batch of ``T`` tokens passes one MoE layer with ``E`` experts. Every token picks ``k``
*distinct* experts (top-k); each (token, expert) pair is one *assignment*, so a batch makes
``T*k`` assignments. Experts are split evenly and contiguously over ``ep`` expert-parallel
ranks: rank ``r`` holds experts ``r*E/ep ... (r+1)*E/ep - 1``. The busiest rank sets the pace of
the layer, and in decode only experts hit by at least one token have their weights read.

Routing distributions (``parse_routing``)
-----------------------------------------
Every routing gives a popularity vector ``p`` (``Routing.probabilities(E, layer)``, sums to 1).
A token's top-k set is drawn by *successive sampling without replacement* with weights ``p``
(draw one expert with probability ``p``, remove it, renormalise, repeat ``k`` times), which is
the same distribution as Gumbel-top-k and as the "exponential race" (expert ``i`` arrives at
time ``Exp(1)/p_i``; the first ``k`` arrivals are chosen).

``uniform``
    ``p_i = 1/E``.
``zipf:S`` (``0 < S <= 100``)
    ``p_i`` proportional to ``1/rank_i**S``. The popularity ranks ``1..E`` are assigned to experts by
    ``numpy.random.default_rng(0).permutation(E)`` (``zipf:S:SEED`` picks another seed), so the
    hot experts are scattered over the ranks as a trained router's would be. ``zipf:S:sorted``
    gives expert ``i`` rank ``i+1``: the hottest experts are packed on rank 0 (worst case).
``dirichlet:A`` (``A > 0``)
    ``p = numpy.random.default_rng(0).dirichlet(A * ones(E))`` (``dirichlet:A:SEED`` for another
    seed). Small ``A`` is skewed, large ``A`` tends to uniform.
``FILE.json`` / ``FILE.csv`` / ``FILE.npy``
    recorded per-layer expert-count histograms, a matrix ``[n_layers_recorded, E]`` of
    token-to-expert assignment counts (non-negative, finite; fractional counts are accepted);
    popularity of a layer is ``counts/sum``. JSON: ``{"n_experts": E, "top_k": k,
    "layers": [[...], ...], "source": "..."}``; CSV: one row per layer, ``E`` columns, an optional
    header row, ``#`` comment lines; NPY: a 2-D (or 1-D, one layer) numeric array. A model with
    more layers than recorded rows cycles through them: layer ``l`` uses row
    ``l % n_layers_recorded``. The file's ``E`` must equal the model's ``E``.

Synthetic routings (uniform, zipf, dirichlet) use the same popularity for every layer.
If fewer than ``k`` experts have ``p > 0`` (possible in histograms), every token takes all of
them and fills the remaining slots uniformly among the zero-popularity experts.

What is exact and what is estimated
-----------------------------------
``expert_inclusion_probability`` ``pi_i = P(i in a token's top-k set)``
    ``k/E`` for uniform; otherwise the exact one-dimensional integral of the exponential race,
    ``pi_i = int_0^inf p_i exp(-p_i t) P(fewer than k of the other experts arrived by t) dt``,
    with the Poisson-binomial probability computed by leave-one-out prefix/suffix dynamic
    programming and the integral by the trapezoid rule in ``log t`` (step 0.25, halved until
    ``|sum(pi) - k| < 1e-9``; the integrand is analytic so the rule converges geometrically,
    errors are ~1e-12). The residual is reported as ``inclusion_probability_error``.
``tokens_per_expert_mean = T*pi_i``, ``tokens_per_rank_mean``, ``mean_rank_tokens = T*k/ep``
    exact (linearity of expectation).
``experts_hit = sum_i (1 - (1 - pi_i)**T)`` and ``experts_hit_per_rank_mean``
    exact: the ``T`` tokens are independent, so ``P(expert i missed by all) = (1 - pi_i)**T``
    holds exactly for each expert; the expectation of a sum of indicators needs no independence
    *between* experts (which would be false: a token's k picks are negatively correlated). For
    uniform routing this is the closed form ``E*(1 - (1 - k/E)**T)``; for ``T = 1`` it is ``k``.
``max_rank_tokens``, ``experts_hit_per_rank_max``, ``per_rank_tokens_max_expert``
    expectations of maxima, estimated with a fixed seed (``seed``) and reported with standard
    errors (``*_stderr``, 0 where exact):

    * exact when routing is deterministic (every ``pi_i`` within 1e-12 of 0 or 1), and for
      ``ep == 1`` (``max_rank_tokens = T*k``, ``experts_hit_per_rank_max = experts_hit``);
    * ``T <= MC_MAX_TOKENS`` (128): Monte Carlo over ``samples`` (default 2000) batches of ``T``
      tokens. Each token's top-k set is drawn (with replacement) from a pool of
      ``POOL_TOKENS`` = 65536 exact draws (``sample_topk``) made once per ``(p, k)`` with a fixed
      seed and cached. The first-order error of the finite pool is removed from
      ``max_rank_tokens`` by the delta method: ``+ T * sum_r P(r busiest) * (mu_r - mu_pool_r)``
      with ``mu`` the exact and ``mu_pool`` the pool's mean assignments per rank and token (ties
      for busiest split evenly), and likewise from ``per_rank_tokens_max_expert`` with the
      probability of each expert being the busiest one. The remaining pool error, measured over
      six pool seeds, is about one stderr (<= 0.2 % of ``max_rank_tokens`` and
      ``per_rank_tokens_max_expert``; <= 0.3 % of ``experts_hit_per_rank_max``, which is not
      corrected) and is not included in the stderr;
    * ``T > MC_MAX_TOKENS``: normal approximation (central limit theorem over the independent
      tokens) with a skewness correction. Per-expert counts are ``T*pi + sqrt(T)*W + c``:
      ``W`` has the exact one-token covariance ``P(i and j chosen) - pi_i*pi_j`` (closed form
      for uniform routing, estimated from the pool otherwise), and ``c = (1 - 2 pi_i)/6 *
      (z_i**2 - 1)`` (``z_i`` the standardised ``W_i``) is the first Cornish-Fisher term that
      gives each count the skewness of its exact Binomial(T, pi_i) marginal. Rank loads are
      sums of these counts; the expectation of the maximum is an average over ``samples``
      fixed-seed draws. Hits per rank use independent Bernoulli(``1 - (1 - pi_i)**T``)
      indicators (exact marginals; the weak negative correlation between experts' hit
      indicators is ignored) and are exact once every expert is hit with probability
      > 1 - 1e-12. Against Monte Carlo at ``T = 128..256`` the approximation agrees within
      0.5 % on ``max_rank_tokens`` and ``experts_hit_per_rank_max`` and 1 % on
      ``per_rank_tokens_max_expert`` (tested for uniform, zipf and dirichlet routings).

Cost (E=128, k=8, ep=8, one CPU core): the first call for a routing builds the pool and the
inclusion probabilities (0.05-0.4 s, more for very skewed routings whose tokens need the
exponential-race completion); afterwards a new token count costs < 25 ms by Monte Carlo and
~1-2 ms by the normal approximation, and a repeated one < 1 ms.

Calls are vectorised over ``tokens`` (any shape; results take that shape) and cached per
unique token count, so ``routing_stats(r, np.array([...]), ...)`` equals a loop of scalar calls.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from energylens.errors import EnergyLensError, LayoutError, SpecError, UnknownNameError, WorkloadError

__all__ = [
    "MC_MAX_TOKENS",
    "POOL_TOKENS",
    "ROUTING_FORMS",
    "Routing",
    "RoutingStats",
    "example_histogram_path",
    "inclusion_probabilities",
    "load_histogram",
    "parse_routing",
    "routing_stats",
    "sample_topk",
    "save_histogram",
    "synthetic_histogram",
]

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


def parse_routing(text: str) -> Routing:
    """Parse a CLI routing string: ``uniform``, ``zipf:S[:sorted|:SEED]``, ``dirichlet:A[:SEED]``
    or a path to a ``.json``/``.csv``/``.npy`` histogram file."""
    if isinstance(text, Routing):
        return text
    if not isinstance(text, str) or not text.strip():
        raise UnknownNameError("routing", text, ROUTING_FORMS)
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered == "uniform":
        return Routing.uniform()
    if Path(stripped).suffix.lower() in HISTOGRAM_SUFFIXES:
        return load_histogram(stripped)
    head, _, rest = lowered.partition(":")
    if head in ("zipf", "dirichlet") and rest:
        parts = rest.split(":")
        what = (
            "zipf:S[:sorted|:SEED] with 0 < S <= 100" if head == "zipf" else "dirichlet:A[:SEED] with A > 0"
        )
        if len(parts) > 2:
            raise EnergyLensError("routing", text, f"expected {what}")
        try:
            value = float(parts[0])
        except ValueError:
            raise EnergyLensError("routing", text, f"the parameter must be a number: {what}") from None
        sorted_experts = False
        seed = DEFAULT_PERMUTATION_SEED if head == "zipf" else DEFAULT_DIRICHLET_SEED
        if len(parts) == 2:
            option = parts[1].strip()
            if head == "zipf" and option == "sorted":
                sorted_experts = True
            elif option.isdigit():
                seed = int(option)
            else:
                raise EnergyLensError("routing", text, f"the option after the parameter must be {what}")
        if not math.isfinite(value) or value <= 0.0 or (head == "zipf" and value > MAX_ZIPF_EXPONENT):
            raise EnergyLensError("routing", text, f"the parameter is out of range: {what}")
        if head == "zipf":
            return Routing.zipf(value, sorted_experts=sorted_experts, seed=seed)
        return Routing.dirichlet(value, seed=seed)
    raise UnknownNameError("routing", text, ROUTING_FORMS)


# --------------------------------------------------------------------------------------------
# Histogram files
# --------------------------------------------------------------------------------------------


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


def _load_json(path: Path) -> tuple[np.ndarray, int | None, str | None]:
    where = str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError("routing", where, f"a readable JSON histogram file ({exc})") from None
    if not isinstance(data, dict) or "layers" not in data:
        raise SpecError(
            "routing", where, 'a JSON object {"n_experts": E, "top_k": k, "layers": [[...]], "source": ...}'
        )
    layers = data["layers"]
    if not isinstance(layers, list) or not layers or not all(isinstance(row, list) for row in layers):
        raise SpecError("routing", where, '"layers" must be a non-empty list of lists of expert counts')
    widths = {len(row) for row in layers}
    if len(widths) != 1:
        raise SpecError(
            "routing", where, f'every row of "layers" needs the same number of experts, got {sorted(widths)}'
        )
    for i, row in enumerate(layers):
        for j, value in enumerate(row):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SpecError(
                    "routing", where, f"expert counts must be numbers; layer {i}, expert {j} is {value!r}"
                )
    counts = _validate_counts(np.array(layers, dtype=np.float64), where)
    n_experts = data.get("n_experts")
    if n_experts is not None and (isinstance(n_experts, bool) or n_experts != counts.shape[1]):
        raise SpecError(
            "routing",
            where,
            f'"n_experts" is {n_experts!r} but each row of "layers" has {counts.shape[1]} counts',
        )
    top_k = data.get("top_k")
    if top_k is not None and (
        isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= counts.shape[1]
    ):
        raise SpecError(
            "routing", where, f'"top_k" is {top_k!r}; it must be an integer in 1..{counts.shape[1]}'
        )
    source = data.get("source")
    if source is not None and not isinstance(source, str):
        raise SpecError("routing", where, '"source" must be a string')
    return counts, top_k, source


def _load_csv(path: Path) -> np.ndarray:
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError("routing", where, f"a readable CSV histogram file ({exc})") from None
    rows: list[list[float]] = []
    seen_line = False
    for line_no, cells in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [c.strip() for c in cells]
        if not cells or all(c == "" for c in cells) or cells[0].startswith("#"):
            continue
        try:
            values = [float(c) for c in cells]
        except ValueError:
            if not seen_line:  # header row
                seen_line = True
                continue
            raise SpecError(
                "routing",
                where,
                f"line {line_no}: expert counts must be numbers (only the first row may be a header)",
            ) from None
        seen_line = True
        rows.append(values)
    if not rows:
        raise SpecError("routing", where, "a CSV file with one row of expert counts per layer")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise SpecError("routing", where, f"every row needs the same number of experts, got {sorted(widths)}")
    return np.array(rows, dtype=np.float64)


def load_histogram(path: str | Path) -> Routing:
    """Load recorded per-layer expert-count histograms (``.json``, ``.csv`` or ``.npy``)."""
    file = Path(path)
    where = str(path)
    suffix = file.suffix.lower()
    if suffix not in HISTOGRAM_SUFFIXES:
        raise SpecError("routing", where, "a histogram file ending in .json, .csv or .npy")
    if not file.is_file():
        raise SpecError("routing", where, "an existing histogram file (.json, .csv or .npy); no such file")
    top_k: int | None = None
    source: str | None = None
    if suffix == ".json":
        counts, top_k, source = _load_json(file)
    elif suffix == ".csv":
        counts = _load_csv(file)
    else:
        try:
            counts = np.load(file, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise SpecError("routing", where, f"a readable .npy array of expert counts ({exc})") from None
    return Routing(
        "histogram",
        path=where,
        counts=_validate_counts(np.asarray(counts), where),
        recorded_top_k=top_k,
        source=source,
    )


def save_histogram(
    path: str | Path, counts: np.ndarray, *, top_k: int | None = None, source: str = ""
) -> Path:
    """Write expert-count histograms ``[n_layers, E]`` as ``.json``, ``.csv`` or ``.npy``."""
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in HISTOGRAM_SUFFIXES:
        raise SpecError("path", str(path), "a file name ending in .json, .csv or .npy")
    matrix = _validate_counts(np.asarray(counts), str(path))
    integral = bool(np.all(matrix == np.round(matrix)))
    if suffix == ".npy":
        np.save(file, matrix.astype(np.int64) if integral else matrix)
        return file
    rows = [[int(v) if integral else float(v) for v in row] for row in matrix]
    if suffix == ".json":
        payload: dict[str, object] = {"n_experts": int(matrix.shape[1])}
        if top_k is not None:
            payload["top_k"] = int(top_k)
        payload["source"] = source
        head = json.dumps(payload, indent=2)[:-2]  # without the closing "\n}"
        body = ",\n".join("    " + json.dumps(row, separators=(",", ":")) for row in rows)
        file.write_text(f'{head},\n  "layers": [\n{body}\n  ]\n}}\n', encoding="utf-8")
        return file
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([f"expert_{i}" for i in range(matrix.shape[1])])
    writer.writerows(rows)
    file.write_text(buffer.getvalue(), encoding="utf-8")
    return file


def example_histogram_path() -> Path:
    """The shipped synthetic example histogram (E=128, k=8; see its ``source`` field)."""
    return Path(str(resources.files("energylens") / "data" / "routing" / "example_skewed_qwen3_30b.json"))


def synthetic_histogram(
    n_experts: int = 128,
    top_k: int = 8,
    n_layers: int = 4,
    tokens_per_layer: int = 4096,
    exponent: float = 1.2,
    seed: int = 2025,
) -> np.ndarray:
    """Synthetic (NOT recorded) expert-count histograms ``[n_layers, n_experts]`` (int64).

    Layer ``l`` uses popularity ``zipf:exponent`` with permutation seed ``seed + l`` and routes
    ``tokens_per_layer`` tokens by ``sample_topk(p, top_k, tokens_per_layer,
    numpy.random.default_rng([seed, l]))``; counts are the per-expert assignment totals. The
    shipped ``example_skewed_qwen3_30b.json`` is ``synthetic_histogram()`` with the defaults.
    """
    n = _check_n_experts(n_experts)
    k = _check_top_k(top_k, n)
    out = np.zeros((n_layers, n), dtype=np.int64)
    for layer in range(n_layers):
        p = Routing.zipf(exponent, seed=seed + layer).probabilities(n)
        picks = sample_topk(p, k, tokens_per_layer, np.random.default_rng([seed, layer]))
        out[layer] = np.bincount(picks.ravel(), minlength=n)
    return out


# --------------------------------------------------------------------------------------------
# Per-token top-k distribution: exact inclusion probabilities and an exact sampler
# --------------------------------------------------------------------------------------------


def _check_top_k(top_k: object, n_experts: int) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= n_experts:
        raise EnergyLensError("top_k", top_k, f"an integer with 1 <= top_k <= n_experts={n_experts}")
    return int(top_k)


def _race_integral(q: np.ndarray, k: int, step: float) -> np.ndarray:
    """Trapezoid rule in log t for pi_i = int q_i e^{-q_i t} P(< k others arrived by t) dt."""
    n = q.size
    ordered = np.sort(q)[::-1]
    t_lo = 1e-15 / ordered[0]  # the part below t_lo is < q_i*t_lo <= 1e-15
    t_hi = 45.0 / ordered[k]  # beyond t_hi, >= k others arrived with probability > 1 - k e^-45
    x = np.arange(math.log(t_lo), math.log(t_hi) + step, step)
    t = np.exp(x)
    qt = np.outer(t, q)
    waiting = np.exp(-qt)  # expert j not yet arrived at t
    arrived = -np.expm1(-qt)
    m = t.size
    prefix = np.zeros((m, n + 1, k))  # prefix[:, j, c] = P(c of experts < j arrived), c < k
    prefix[:, 0, 0] = 1.0
    for j in range(n):
        prefix[:, j + 1] = prefix[:, j] * waiting[:, j, None]
        prefix[:, j + 1, 1:] += prefix[:, j, :-1] * arrived[:, j, None]
    suffix = np.zeros((m, n + 1, k))  # suffix[:, j, c] = P(c of experts >= j arrived)
    suffix[:, n, 0] = 1.0
    for j in range(n - 1, -1, -1):
        suffix[:, j] = suffix[:, j + 1] * waiting[:, j, None]
        suffix[:, j, 1:] += suffix[:, j + 1, :-1] * arrived[:, j, None]
    suffix_cdf = np.cumsum(suffix, axis=2)
    # P(others arrived <= k-1) = sum_a prefix_i[a] * suffix_cdf_{i+1}[k-1-a]
    fewer = np.einsum("tia,tia->ti", prefix[:, :n], suffix_cdf[:, 1:, ::-1])
    return np.einsum("t,ti->i", step * t, q[None, :] * waiting * fewer)


def _inclusion(p: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Exact P(expert i in a token's top-k set) and the quadrature residual |sum - k|."""
    n = p.size
    if k == n:
        return np.ones(n), 0.0
    if np.all(p == p[0]):
        return np.full(n, k / n), 0.0
    positive = p > 0
    n_positive = int(positive.sum())
    if n_positive <= k:
        pi = np.where(positive, 1.0, (k - n_positive) / (n - n_positive))
        return pi, 0.0
    q = p[positive] / p[positive].sum()
    step = 0.25
    for _ in range(4):
        sub = _race_integral(q, k, step)
        residual = abs(float(sub.sum()) - k)
        if residual < _QUAD_TOL:
            break
        step /= 2.0
    sub = np.clip(sub * (k / sub.sum()), 0.0, 1.0)
    pi = np.zeros(n)
    pi[positive] = sub
    return pi, residual


def inclusion_probabilities(p: np.ndarray, k: int) -> np.ndarray:
    """``pi_i = P(expert i is among a token's k picks)`` under successive sampling with weights ``p``.

    Exact up to a quadrature error ~1e-12 (see the module docstring); ``sum(pi) == k``.
    """
    weights = np.asarray(p, dtype=np.float64)
    if weights.ndim != 1 or weights.size < 1 or not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise EnergyLensError("p", "array", "a 1-D array of finite, non-negative expert popularities")
    if weights.sum() <= 0:
        raise EnergyLensError("p", "array", "popularities with a positive sum")
    return _inclusion(weights / weights.sum(), _check_top_k(k, weights.size))[0]


def _alias_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker/Vose alias table: draw ``i ~ U{0..n-1}``, keep ``i`` w.p. ``prob[i]`` else ``alias[i]``."""
    n = weights.size
    scaled = weights * (n / weights.sum())
    prob = np.ones(n)
    alias = np.arange(n)
    small = [int(i) for i in np.nonzero(scaled < 1.0)[0]]
    large = [int(i) for i in np.nonzero(scaled >= 1.0)[0]]
    while small and large:
        s, g = small.pop(), large.pop()
        prob[s] = scaled[s]
        alias[s] = g
        scaled[g] = (scaled[g] + scaled[s]) - 1.0
        (small if scaled[g] < 1.0 else large).append(g)
    # leftovers (rounding) keep prob 1; a zero-weight expert is never among them (it would need
    # a missing mass of a whole 1/n), so it is never drawn
    return prob, alias


def _first_distinct(candidates: np.ndarray, k: int, n_values: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the set of the first ``k`` distinct values in draw order (unused slots -1) and
    how many were found (<= k)."""
    rows, width = candidates.shape
    pos_bits = max(1, (width - 1).bit_length())
    val_bits = max(1, (n_values - 1).bit_length())
    key = (candidates.astype(np.int64) << pos_bits) | np.arange(width, dtype=np.int64)
    key.sort(axis=1)
    values = key >> pos_bits
    first = np.ones((rows, width), dtype=bool)
    first[:, 1:] = values[:, 1:] != values[:, :-1]
    found = np.minimum(first.sum(axis=1), k)
    never = np.iinfo(np.int64).max
    by_position = np.where(first, ((key & ((1 << pos_bits) - 1)) << val_bits) | values, never)
    by_position.sort(axis=1)
    head = by_position[:, :k]
    out = np.where(head == never, -1, head & ((1 << val_bits) - 1))
    return out, found


def sample_topk(p: np.ndarray, k: int, n_tokens: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n_tokens`` top-k sets (shape ``(n_tokens, k)``, expert ids, unordered) by
    successive sampling without replacement with weights ``p``.

    Exact: each token draws experts i.i.d. from ``p`` (alias method) and keeps the first ``k``
    distinct ones, which is identical in law to drawing without replacement; tokens that have
    not found ``k`` distinct experts after ``3k`` draws are completed by an exponential race over
    the experts they have not picked, the exact conditional law given the picked set. Experts
    with ``p = 0`` are used only when fewer than ``k`` have ``p > 0``, uniformly at random.
    """
    weights = np.asarray(p, dtype=np.float64)
    n = weights.size
    k = _check_top_k(k, n)
    positive = weights > 0
    if np.all(weights == weights[0]):
        candidates = rng.integers(0, n, size=(n_tokens, 3 * k))
    else:
        prob, alias = _alias_table(weights)
        candidates = rng.integers(0, n, size=(n_tokens, 3 * k))
        candidates = np.where(rng.random((n_tokens, 3 * k)) < prob[candidates], candidates, alias[candidates])
    picks, found = _first_distinct(candidates, k, n)
    todo = np.nonzero(found < k)[0]
    if not todo.size:
        return picks
    smallest = float(weights[positive].min())
    use_log = smallest < 1e-250
    if use_log:
        log_w = np.log(np.where(positive, weights, 1.0))
    chunk = max(1, (1 << 20) // n)
    slot = np.arange(k)[None, :]
    for start in range(0, todo.size, chunk):
        rows = todo[start : start + chunk]
        arrival = rng.standard_exponential((rows.size, n))
        if use_log:  # log arrival times; p = 0 experts after all others (|log p| < 745)
            arrival = np.log(arrival)
            keys = np.where(positive, arrival - log_w, 1e4 + arrival)
        else:  # arrival times Exp/p <= 1e270; p = 0 experts after all others
            keys = np.where(positive, arrival / np.where(positive, weights, 1.0), 1e300 * (1.0 + arrival))
        taken = picks[rows]
        have = found[rows]
        r_idx, c_idx = np.nonzero(taken >= 0)
        keys[r_idx, taken[r_idx, c_idx]] = np.inf
        nearest = np.argpartition(keys, k - 1, axis=1)[:, :k]
        nearest = np.take_along_axis(
            nearest, np.take_along_axis(keys, nearest, axis=1).argsort(axis=1), axis=1
        )
        source = np.clip(slot - have[:, None], 0, k - 1)
        picks[rows] = np.where(slot >= have[:, None], np.take_along_axis(nearest, source, axis=1), taken)
    return picks


# --------------------------------------------------------------------------------------------
# Cached per-(p, k) model of one token's choice
# --------------------------------------------------------------------------------------------


class _TokenModel:
    """Everything about one token's top-k choice under popularity ``p``; lazily cached."""

    def __init__(self, p: np.ndarray, k: int) -> None:
        self.p = p
        self.k = k
        self.n = p.size
        self.uniform = bool(np.all(p == p[0]))
        self.pi, self.pi_residual = _inclusion(p, k)
        self.deterministic = bool(np.all(np.minimum(self.pi, 1.0 - self.pi) <= _DETERMINISTIC_TOL))
        self._pool: np.ndarray | None = None
        self.pool_pi = self.pi
        self._fluctuations: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._rank_fluctuations: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._uniforms: dict[tuple[int, int], np.ndarray] = {}
        self.results: OrderedDict[tuple, dict[str, float | str]] = OrderedDict()

    @property
    def pool(self) -> np.ndarray:
        if self._pool is None:
            self._pool = sample_topk(self.p, self.k, POOL_TOKENS, np.random.default_rng(POOL_SEED)).astype(
                np.int32
            )
            self.pool_pi = np.bincount(self._pool.ravel(), minlength=self.n) / self._pool.shape[0]
        return self._pool

    def covariance(self) -> np.ndarray:
        """One token's covariance of expert indicators, Cov(1[i chosen], 1[j chosen])."""
        n, k = self.n, self.k
        if self.uniform:
            pair = k * (k - 1) / (n * (n - 1)) if n > 1 else 0.0
            both = np.full((n, n), pair)
            np.fill_diagonal(both, k / n)
            pi = np.full(n, k / n)
        else:
            pool = self.pool.astype(np.int64)
            pairs = (pool[:, :, None] * n + pool[:, None, :]).ravel()
            both = np.bincount(pairs, minlength=n * n).reshape(n, n) / pool.shape[0]
            pi = np.diag(both).copy()
        return both - np.outer(pi, pi)

    def fluctuations(self, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``samples`` zero-mean draws ``W`` (rows) with one token's expert covariance, and the
        Cornish-Fisher skewness term of the T-token counts (independent of T, see ``_normal``)."""
        key = (samples, seed)
        if key not in self._fluctuations:
            cov = self.covariance()
            values, vectors = np.linalg.eigh(cov)
            root = vectors * np.sqrt(np.clip(values, 0.0, None))
            z = np.random.default_rng([seed, 2]).standard_normal((samples, self.n))
            fluct = z @ root.T
            sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
            standard = np.divide(fluct, sd, out=np.zeros_like(fluct), where=sd > 0)
            skew = (1.0 - 2.0 * self.pi) / 6.0 * (standard**2 - 1.0)
            self._fluctuations[key] = (fluct, skew)
        return self._fluctuations[key]

    def rank_fluctuations(self, ep: int, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``fluctuations`` summed over the experts of each rank, shape ``(samples, ep)``."""
        key = (ep, samples, seed)
        if key not in self._rank_fluctuations:
            fluct, skew = self.fluctuations(samples, seed)
            shape = (samples, ep, self.n // ep)
            self._rank_fluctuations[key] = (fluct.reshape(shape).sum(axis=2), skew.reshape(shape).sum(axis=2))
        return self._rank_fluctuations[key]

    def uniforms(self, samples: int, seed: int) -> np.ndarray:
        key = (samples, seed)
        if key not in self._uniforms:
            self._uniforms[key] = np.random.default_rng([seed, 3]).random((samples, self.n))
        return self._uniforms[key]


_MODELS: OrderedDict[tuple, _TokenModel] = OrderedDict()


def _token_model(p: np.ndarray, k: int) -> _TokenModel:
    key = (hashlib.sha1(p.tobytes()).hexdigest(), p.size, k)
    model = _MODELS.get(key)
    if model is None:
        model = _TokenModel(p, k)
        _MODELS[key] = model
        while len(_MODELS) > _MODEL_CACHE_SIZE:
            _MODELS.popitem(last=False)
    else:
        _MODELS.move_to_end(key)
    return model


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RoutingStats:
    """Routing statistics of one MoE layer for a batch of ``tokens`` tokens.

    "tokens" of a rank or expert count *assignments* (token, expert) pairs: a batch of ``T``
    tokens makes ``T*top_k`` of them. Arrays have the shape of ``tokens`` (``...``), with a
    trailing axis of ``n_experts`` or ``ep`` where stated.
    """

    routing: str  # Routing.name
    n_experts: int
    top_k: int
    ep: int
    layer: int
    tokens: np.ndarray  # (...) tokens in the batch
    expert_inclusion_probability: np.ndarray  # (E,) P(expert i in a token's top-k set)
    inclusion_probability_error: float  # quadrature residual |sum(pi) - k|
    tokens_per_expert_mean: np.ndarray  # (..., E) expected assignments per expert, exact
    tokens_per_rank_mean: np.ndarray  # (..., ep) expected assignments per rank, exact
    mean_rank_tokens: np.ndarray  # (...) T*k/ep, exact
    max_rank_tokens: np.ndarray  # (...) E[max over ranks of assignments]
    max_rank_tokens_stderr: np.ndarray  # (...) standard error of max_rank_tokens (0 if exact)
    imbalance: np.ndarray  # (...) max_rank_tokens / mean_rank_tokens, >= 1
    experts_hit: np.ndarray  # (...) E[distinct experts with >= 1 assignment], exact
    experts_hit_per_rank_mean: np.ndarray  # (..., ep) E[distinct experts hit on each rank], exact
    experts_hit_per_rank_max: np.ndarray  # (...) E[max over ranks of distinct experts hit]
    experts_hit_per_rank_max_stderr: np.ndarray  # (...)
    per_rank_tokens_max_expert: np.ndarray  # (...) E[assignments of the busiest expert on the busiest rank]
    per_rank_tokens_max_expert_stderr: np.ndarray  # (...)
    method: np.ndarray  # (...) how max_rank_tokens was found: "exact" | "monte-carlo" | "normal"


def _mean_stderr(values: np.ndarray) -> tuple[float, float]:
    n = values.size
    mean = float(values.mean())
    stderr = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return mean, stderr


def _monte_carlo(model: _TokenModel, ep: int, tokens: int, samples: int, seed: int) -> dict[str, float | str]:
    n, k = model.n, model.k
    per_rank = n // ep
    pool = model.pool
    rng = np.random.default_rng([seed, tokens, 1])
    rows_per_chunk = max(1, _MC_CHUNK_ASSIGNMENTS // (tokens * k))
    load_max = np.empty(samples)
    hits_max = np.empty(samples)
    busiest = np.empty(samples)
    argmax_share = np.zeros(ep)  # how often each rank is the busiest (ties split evenly)
    busiest_share = np.zeros((ep, per_rank))  # how often each expert is the busiest expert there
    for start in range(0, samples, rows_per_chunk):
        rows = min(rows_per_chunk, samples - start)
        picks = pool[rng.integers(0, pool.shape[0], size=(rows, tokens))].reshape(rows, tokens * k)
        flat = (picks + (np.arange(rows) * n)[:, None]).ravel()
        counts = np.bincount(flat, minlength=rows * n).reshape(rows, ep, per_rank)
        hits_max[start : start + rows] = (counts > 0).sum(axis=2).max(axis=1)
        loads = counts.sum(axis=2)
        top = loads.argmax(axis=1)
        peak = loads[np.arange(rows), top]
        load_max[start : start + rows] = peak
        tied = loads == peak[:, None]
        argmax_share += (tied / tied.sum(axis=1, keepdims=True)).sum(axis=0)
        value = counts[np.arange(rows), top].max(axis=1)
        busiest[start : start + rows] = value
        chosen = tied[:, :, None] & (counts == value[:, None, None])
        busiest_share += (chosen / chosen.sum(axis=(1, 2))[:, None, None]).sum(axis=0)
    out: dict[str, float | str] = {"method": "monte-carlo"}
    out["max_rank"], out["max_rank_se"] = _mean_stderr(load_max)
    # First-order pool correction (delta method): dE[max_r L_r]/d(mean L_r) = P(r is the
    # busiest), applied to the difference between the exact and the pool's mean loads; the same
    # for the busiest expert with P(expert i is the busiest expert on a busiest rank).
    pool_error = tokens * (model.pi - model.pool_pi).reshape(ep, per_rank)
    out["max_rank"] = float(out["max_rank"]) + float(argmax_share @ pool_error.sum(axis=1)) / samples
    out["busiest"], out["busiest_se"] = _mean_stderr(busiest)
    out["busiest"] = float(out["busiest"]) + float((busiest_share * pool_error).sum()) / samples
    out["hits_max"], out["hits_max_se"] = _mean_stderr(hits_max)
    return out


def _hit_probability(pi: np.ndarray, tokens: int) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return -np.expm1(tokens * np.log1p(-pi))


def _normal(model: _TokenModel, ep: int, tokens: int, samples: int, seed: int) -> dict[str, float | str]:
    n = model.n
    per_rank = n // ep
    fluct, skew = model.fluctuations(samples, seed)
    rank_fluct, rank_skew = model.rank_fluctuations(ep, samples, seed)
    root_t = math.sqrt(tokens)
    mean = tokens * model.pi.reshape(ep, per_rank)
    loads = mean.sum(axis=1) + root_t * rank_fluct + rank_skew
    top = loads.argmax(axis=1)
    rows = np.arange(samples)
    out: dict[str, float | str] = {"method": "normal"}
    out["max_rank"], out["max_rank_se"] = _mean_stderr(loads[rows, top])
    top_counts = (
        mean[top]
        + root_t * fluct.reshape(samples, ep, per_rank)[rows, top]
        + skew.reshape(samples, ep, per_rank)[rows, top]
    )
    out["busiest"], out["busiest_se"] = _mean_stderr(top_counts.max(axis=1))
    hit = _hit_probability(model.pi, tokens)
    if float(hit.min()) >= 1.0 - _DETERMINISTIC_TOL:
        out["hits_max"], out["hits_max_se"] = float(hit.reshape(ep, per_rank).sum(axis=1).max()), 0.0
    else:
        drawn = (model.uniforms(samples, seed) < hit).reshape(samples, ep, per_rank).sum(axis=2).max(axis=1)
        out["hits_max"], out["hits_max_se"] = _mean_stderr(drawn.astype(np.float64))
    return out


def _scalar_stats(
    model: _TokenModel, ep: int, tokens: int, samples: int, method: str, seed: int
) -> dict[str, float | str]:
    key = (ep, tokens, samples, method, seed)
    cached = model.results.get(key)
    if cached is not None:
        model.results.move_to_end(key)
        return cached
    n, k = model.n, model.k
    per_rank = n // ep
    if model.deterministic:
        chosen = (model.pi > 0.5).reshape(ep, per_rank)
        out: dict[str, float | str] = {
            "method": "exact",
            "max_rank": float(tokens * chosen.sum(axis=1).max()),
            "max_rank_se": 0.0,
            "hits_max": float(chosen.sum(axis=1).max()),
            "hits_max_se": 0.0,
            "busiest": float(tokens),
            "busiest_se": 0.0,
        }
    else:
        use_mc = method == "monte-carlo" or (method == "auto" and tokens <= MC_MAX_TOKENS)
        out = (_monte_carlo if use_mc else _normal)(model, ep, tokens, samples, seed)
        if ep == 1:
            out["method"] = "exact"
            out["max_rank"], out["max_rank_se"] = float(tokens * k), 0.0
            out["hits_max"], out["hits_max_se"] = float(_hit_probability(model.pi, tokens).sum()), 0.0
    model.results[key] = out
    while len(model.results) > _RESULT_CACHE_SIZE:
        model.results.popitem(last=False)
    return out


def _check_tokens(tokens: object) -> np.ndarray:
    array = np.asarray(tokens)
    if array.dtype == object or array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise WorkloadError("tokens", tokens, "an integer >= 1 or an array of them")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise WorkloadError("tokens", tokens, "whole numbers of tokens (>= 1)")
    if array.size == 0:
        raise WorkloadError("tokens", tokens, "at least one token count")
    if np.any(array < 1):
        raise WorkloadError("tokens", tokens, "token counts >= 1")
    return array.astype(np.int64)


def _readonly(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    array.setflags(write=False)
    return array


def routing_stats(
    routing: Routing | str,
    tokens: int | np.ndarray,
    n_experts: int,
    top_k: int,
    ep: int,
    *,
    layer: int = 0,
    samples: int = DEFAULT_SAMPLES,
    method: str = "auto",
    seed: int = 0,
) -> RoutingStats:
    """Routing statistics of one MoE layer for batches of ``tokens`` tokens (int or int array).

    ``method``: ``"auto"`` (Monte Carlo for ``tokens <= MC_MAX_TOKENS``, normal approximation
    above), ``"monte-carlo"`` or ``"normal"`` (forced; exact cases stay exact). ``samples``
    Monte Carlo / normal draws per token count, fixed ``seed``. See the module docstring.
    """
    route = parse_routing(routing) if isinstance(routing, str) else routing
    if not isinstance(route, Routing):
        raise EnergyLensError(
            "routing", routing, "a Routing or a routing string: " + ", ".join(ROUTING_FORMS)
        )
    n = _check_n_experts(n_experts)
    k = _check_top_k(top_k, n)
    if isinstance(ep, bool) or not isinstance(ep, (int, np.integer)) or ep < 1 or n % ep:
        raise LayoutError("ep", ep, f"an integer >= 1 that divides n_experts={n}")
    ep = int(ep)
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < MIN_SAMPLES:
        raise EnergyLensError("samples", samples, f"an integer >= {MIN_SAMPLES}")
    if method not in METHODS:
        raise UnknownNameError("method", method, METHODS)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise EnergyLensError("seed", seed, "an integer >= 0")
    token_array = _check_tokens(tokens)
    p = route.probabilities(n, layer)
    model = _token_model(p, k)

    unique, inverse = np.unique(token_array, return_inverse=True)
    per_value = [_scalar_stats(model, ep, int(t), int(samples), method, int(seed)) for t in unique]
    inverse = inverse.reshape(token_array.shape)

    def gather(name: str) -> np.ndarray:
        return np.array([v[name] for v in per_value], dtype=np.float64)[inverse]

    t = token_array.astype(np.float64)
    pi = model.pi
    per_rank = n // ep
    mean_rank = t * k / ep
    max_rank = np.clip(gather("max_rank"), mean_rank, t * min(k, per_rank))
    hit_prob = _hit_probability(pi[None, :], unique[:, None])  # (unique, E)
    hits = hit_prob.sum(axis=1)
    hits[unique == 1] = float(k)  # exact identity: one token hits exactly k experts
    hits_rank = hit_prob.reshape(unique.size, ep, per_rank).sum(axis=2)
    return RoutingStats(
        routing=route.name,
        n_experts=n,
        top_k=k,
        ep=ep,
        layer=int(layer),
        tokens=_readonly(token_array),
        expert_inclusion_probability=_readonly(pi.copy()),
        inclusion_probability_error=float(model.pi_residual),
        tokens_per_expert_mean=_readonly(t[..., None] * pi),
        tokens_per_rank_mean=_readonly(t[..., None] * pi.reshape(ep, per_rank).sum(axis=1)),
        mean_rank_tokens=_readonly(mean_rank),
        max_rank_tokens=_readonly(max_rank),
        max_rank_tokens_stderr=_readonly(gather("max_rank_se")),
        imbalance=_readonly(max_rank / mean_rank),
        experts_hit=_readonly(hits[inverse]),
        experts_hit_per_rank_mean=_readonly(hits_rank[inverse]),
        experts_hit_per_rank_max=_readonly(gather("hits_max")),
        experts_hit_per_rank_max_stderr=_readonly(gather("hits_max_se")),
        per_rank_tokens_max_expert=_readonly(np.clip(gather("busiest"), 1.0, t)),
        per_rank_tokens_max_expert_stderr=_readonly(gather("busiest_se")),
        method=_readonly(np.array([v["method"] for v in per_value], dtype=str)[inverse]),
    )
