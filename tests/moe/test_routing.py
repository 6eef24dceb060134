"""Tests for energylens.moe.routing: routing distributions and per-rank routing statistics."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from energylens.errors import EnergyLensError, LayoutError, SpecError, UnknownNameError, WorkloadError
from energylens.moe import (
    Routing,
    example_histogram_path,
    inclusion_probabilities,
    load_histogram,
    parse_routing,
    routing_stats,
    sample_topk,
    save_histogram,
    synthetic_histogram,
)

E, K, EP = 128, 8, 8


def _brute_force_inclusion(p: np.ndarray, k: int) -> np.ndarray:
    """Exact P(i in top-k) for successive sampling, by enumerating every ordered pick sequence."""
    p = np.asarray(p, dtype=float) / np.sum(p)
    pi = np.zeros(p.size)
    for seq in itertools.permutations(range(p.size), k):
        prob, left = 1.0, 1.0
        for i in seq:
            if left <= 0:
                prob = 0.0
                break
            prob *= p[i] / left
            left -= p[i]
        for i in seq:
            pi[i] += prob
    return pi


def _successive_draws(p: np.ndarray, k: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Reference sampler independent of the module: k sequential draws, renormalising each time."""
    out = np.empty((n, k), dtype=np.int64)
    weights = np.tile(np.asarray(p, dtype=float), (n, 1))
    for j in range(k):
        cdf = np.cumsum(weights, axis=1)
        u = rng.random(n) * cdf[:, -1]
        pick = (cdf <= u[:, None]).sum(axis=1)
        out[:, j] = pick
        weights[np.arange(n), pick] = 0.0
    return out


# ---------------------------------------------------------------------------------------------
# imbalance
# ---------------------------------------------------------------------------------------------


def test_uniform_imbalance_tends_to_one_with_many_tokens() -> None:
    stats = routing_stats("uniform", np.array([1, 4, 64, 1024, 1_000_000]), E, K, EP)
    imbalance = stats.imbalance
    assert imbalance[-1] < 1.01
    assert imbalance[0] > 1.5 and imbalance[1] > 1.2  # small batches are clearly imbalanced
    assert np.all(np.diff(imbalance) < 0)
    assert np.all(imbalance >= 1.0)


def test_skewed_sorted_routing_is_worse_than_scattered() -> None:
    scattered = routing_stats("zipf:1.2", 4096, E, K, EP)
    packed = routing_stats("zipf:1.2:sorted", 4096, E, K, EP)
    uniform = routing_stats("uniform", 4096, E, K, EP)
    assert float(uniform.imbalance) < float(scattered.imbalance) < float(packed.imbalance)


def test_all_tokens_on_one_expert_top1_loads_one_rank(tmp_path: Path) -> None:
    counts = np.zeros((2, 64))
    counts[:, 0] = 1000.0
    path = save_histogram(tmp_path / "hot.json", counts, top_k=1, source="test")
    stats = routing_stats(str(path), np.array([1, 5, 300]), 64, 1, 8)
    assert np.array_equal(stats.max_rank_tokens, [1.0, 5.0, 300.0])  # exact: T*k with k=1
    assert np.array_equal(stats.imbalance, [8.0, 8.0, 8.0])
    assert np.all(stats.method == "exact") and np.all(stats.max_rank_tokens_stderr == 0)
    assert np.array_equal(stats.experts_hit, [1.0, 1.0, 1.0])
    assert np.allclose(stats.tokens_per_rank_mean[:, 0], [1, 5, 300])


def test_all_tokens_on_one_expert_top_k_hot_rank_gets_at_least_t(tmp_path: Path) -> None:
    counts = np.zeros((1, E))
    counts[0, 0] = 5.0
    path = save_histogram(tmp_path / "hot.csv", counts)
    tokens = np.array([1, 16, 128, 4096])
    stats = routing_stats(str(path), tokens, E, K, EP)
    # expert 0 is in every token's set; the other k-1 picks spread uniformly over the rest
    assert np.all(stats.tokens_per_rank_mean[:, 0] >= tokens)
    assert np.all(stats.max_rank_tokens >= tokens)
    assert np.allclose(stats.expert_inclusion_probability[0], 1.0)
    assert np.allclose(stats.expert_inclusion_probability[1:], (K - 1) / (E - 1))
    # huge zipf exponent, hottest experts packed on rank 0: all k picks land there
    packed = routing_stats("zipf:100:sorted", tokens, E, K, EP)
    assert np.all(packed.max_rank_tokens >= tokens)
    assert np.allclose(packed.max_rank_tokens, tokens * K, rtol=1e-4)
    assert np.allclose(packed.imbalance, EP, rtol=1e-4)


def test_deterministic_routing_is_exact(tmp_path: Path) -> None:
    counts = np.zeros((1, 16))
    counts[0, [0, 1, 5]] = [3.0, 1.0, 2.0]  # exactly k experts with p > 0
    path = save_histogram(tmp_path / "det.npy", counts)
    stats = routing_stats(str(path), np.array([1, 10, 1000]), 16, 3, 4)
    assert np.all(stats.method == "exact")
    assert np.array_equal(stats.max_rank_tokens, [2.0, 20.0, 2000.0])  # rank 0 holds experts 0 and 1
    assert np.array_equal(stats.experts_hit_per_rank_max, [2.0, 2.0, 2.0])
    assert np.array_equal(stats.per_rank_tokens_max_expert, [1.0, 10.0, 1000.0])


def test_single_rank_is_exact() -> None:
    stats = routing_stats("zipf:1.2", np.array([3, 500]), E, K, 1)
    assert np.array_equal(stats.max_rank_tokens, [3.0 * K, 500.0 * K])
    assert np.array_equal(stats.imbalance, [1.0, 1.0])
    assert np.allclose(stats.experts_hit_per_rank_max, stats.experts_hit)


# ---------------------------------------------------------------------------------------------
# inclusion probabilities, sampler, distinct experts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "p, k",
    [
        ([0.5, 0.2, 0.15, 0.1, 0.05], 2),
        ([0.7, 0.1, 0.1, 0.05, 0.03, 0.02], 3),
        ([1e-6, 0.3, 0.2, 0.0, 0.5 - 1e-6], 2),
        ([0.9, 0.1, 0.0, 0.0, 0.0], 3),  # fewer than k experts with p > 0
        ([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0], 4),
    ],
)
def test_inclusion_probabilities_match_enumeration(p: list[float], k: int) -> None:
    pi = inclusion_probabilities(np.array(p), k)
    expected = _brute_force_inclusion(np.array(p), k)
    if np.count_nonzero(p) < k:  # zero-popularity experts fill the free slots uniformly
        zeros = np.array(p) == 0
        expected[zeros] = (k - np.count_nonzero(p)) / zeros.sum()
        expected[~zeros] = 1.0
    assert np.allclose(pi, expected, atol=1e-10)
    assert abs(pi.sum() - k) < 1e-10


@pytest.mark.parametrize("routing", ["zipf:1.2:sorted", "dirichlet:0.2", "zipf:3"])
def test_sampler_frequencies_match_inclusion_probabilities(routing: str) -> None:
    p = parse_routing(routing).probabilities(32)
    picks = sample_topk(p, 4, 40_000, np.random.default_rng(7))
    assert picks.shape == (40_000, 4)
    assert np.all(np.sort(picks, axis=1)[:, 1:] != np.sort(picks, axis=1)[:, :-1])  # distinct
    freq = np.bincount(picks.ravel(), minlength=32) / picks.shape[0]
    pi = inclusion_probabilities(p, 4)
    stderr = np.sqrt(pi * (1 - pi) / picks.shape[0]) + 1e-9
    assert np.max(np.abs(freq - pi) / stderr) < 4.5
    # and against an independent sequential sampler (two-sample check)
    ref = _successive_draws(p, 4, 20_000, np.random.default_rng(8))
    ref_freq = np.bincount(ref.ravel(), minlength=32) / ref.shape[0]
    assert np.max(np.abs(ref_freq - pi) / (np.sqrt(pi * (1 - pi) / ref.shape[0]) + 1e-9)) < 4.5


def test_experts_hit_closed_form_against_actual_draws() -> None:
    rng = np.random.default_rng(123)
    n_exp, k = 32, 4
    for tokens in (1, 3, 10, 40):
        samples = 4000
        keys = rng.random((samples, tokens, n_exp))
        picks = np.argpartition(keys, k - 1, axis=2)[:, :, :k]  # uniform k distinct experts per token
        hit = np.zeros((samples, n_exp), dtype=bool)
        hit[np.repeat(np.arange(samples), tokens * k), picks.reshape(samples, -1).ravel()] = True
        distinct = hit.sum(axis=1)
        closed = n_exp * (1 - (1 - k / n_exp) ** tokens)
        stderr = distinct.std(ddof=1) / np.sqrt(samples)
        assert abs(distinct.mean() - closed) < 3 * stderr + 1e-12
        stats = routing_stats("uniform", tokens, n_exp, k, 4)
        assert float(stats.experts_hit) == pytest.approx(closed, rel=1e-12)


def test_experts_hit_nonuniform_against_actual_draws() -> None:
    p = parse_routing("zipf:1.5:sorted").probabilities(32)
    rng = np.random.default_rng(5)
    tokens, samples, k = 12, 3000, 4
    picks = _successive_draws(p, k, tokens * samples, rng).reshape(samples, tokens * k)
    hit = np.zeros((samples, 32), dtype=bool)
    hit[np.repeat(np.arange(samples), tokens * k), picks.ravel()] = True
    distinct = hit.sum(axis=1)
    stats = routing_stats("zipf:1.5:sorted", tokens, 32, k, 4)
    stderr = distinct.std(ddof=1) / np.sqrt(samples)
    assert abs(distinct.mean() - float(stats.experts_hit)) < 3 * stderr
    # the per-rank maximum of distinct experts hit, by Monte Carlo inside the module
    per_rank_max = hit.reshape(samples, 4, 8).sum(axis=2).max(axis=1)
    combined = np.hypot(
        per_rank_max.std(ddof=1) / np.sqrt(samples), float(stats.experts_hit_per_rank_max_stderr)
    )
    assert abs(per_rank_max.mean() - float(stats.experts_hit_per_rank_max)) < 3.5 * combined + 0.01
    # the expected maximum rank load, same check
    ranks = picks // 8
    loads = np.stack([(ranks == r).sum(axis=1) for r in range(4)], axis=1).max(axis=1)
    combined = np.hypot(loads.std(ddof=1) / np.sqrt(samples), float(stats.max_rank_tokens_stderr))
    assert abs(loads.mean() - float(stats.max_rank_tokens)) < 3.5 * combined + 0.01


@pytest.mark.parametrize("routing", ["uniform", "zipf:1.2", "zipf:2:sorted", "dirichlet:0.1"])
def test_decode_batch_of_one_hits_exactly_k(routing: str) -> None:
    stats = routing_stats(routing, 1, E, K, EP)
    assert float(stats.experts_hit) == K
    assert float(stats.per_rank_tokens_max_expert) == 1.0
    # with one token, distinct experts on a rank == assignments on it (same Monte Carlo draws;
    # only max_rank_tokens carries the first-order pool correction, a ~1e-3 shift)
    assert float(stats.experts_hit_per_rank_max) == pytest.approx(float(stats.max_rank_tokens), rel=3e-3)
    assert float(stats.max_rank_tokens) > K / EP


# ---------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------

ROUTINGS = st.one_of(
    st.just("uniform"),
    st.builds(lambda s: f"zipf:{s}", st.sampled_from([0.5, 1.0, 2.5])),
    st.builds(lambda s: f"zipf:{s}:sorted", st.sampled_from([0.8, 1.6])),
    st.builds(lambda a: f"dirichlet:{a}", st.sampled_from([0.05, 1.0])),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    routing=ROUTINGS,
    n_exp=st.sampled_from([8, 16, 32]),
    k_frac=st.floats(0.0, 1.0),
    tokens=st.integers(1, 5000),
)
def test_conservation_and_bounds(routing: str, n_exp: int, k_frac: float, tokens: int) -> None:
    k = 1 + int(k_frac * (min(n_exp, 8) - 1))
    per_ep = []
    for ep in [d for d in (1, 2, 4, 8) if n_exp % d == 0]:
        stats = routing_stats(routing, tokens, n_exp, k, ep, samples=200)
        assert float(stats.tokens_per_rank_mean.sum()) == pytest.approx(tokens * k, rel=1e-9)
        assert float(stats.tokens_per_expert_mean.sum()) == pytest.approx(tokens * k, rel=1e-9)
        assert float(stats.mean_rank_tokens) == pytest.approx(tokens * k / ep)
        assert float(stats.imbalance) >= 1.0
        assert float(stats.max_rank_tokens) <= tokens * min(k, n_exp // ep) + 1e-6 + 5 * float(
            stats.max_rank_tokens_stderr
        )
        assert min(k, n_exp) - 1e-9 <= float(stats.experts_hit) <= min(n_exp, tokens * k) + 1e-9
        assert float(stats.experts_hit_per_rank_max) <= n_exp // ep + 1e-9
        assert float(stats.experts_hit_per_rank_max) >= float(stats.experts_hit) / ep - 1e-6 - 5 * float(
            stats.experts_hit_per_rank_max_stderr
        )
        per_ep.append(stats)
    # per-expert means and distinct experts do not depend on how experts are split over ranks
    for other in per_ep[1:]:
        assert np.allclose(other.tokens_per_expert_mean, per_ep[0].tokens_per_expert_mean)
        assert float(other.experts_hit) == float(per_ep[0].experts_hit)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(1, 3000), min_size=1, max_size=6), st.sampled_from(["uniform", "zipf:1.1"]))
def test_vectorised_tokens_equal_scalar_loop(values: list[int], routing: str) -> None:
    tokens = np.array(values).reshape(-1, 1) if len(values) % 2 else np.array(values).reshape(2, -1)
    stats = routing_stats(routing, tokens, 64, 4, 8, samples=300)
    assert stats.max_rank_tokens.shape == tokens.shape
    assert stats.tokens_per_rank_mean.shape == (*tokens.shape, 8)
    assert stats.tokens_per_expert_mean.shape == (*tokens.shape, 64)
    for index in np.ndindex(tokens.shape):
        one = routing_stats(routing, int(tokens[index]), 64, 4, 8, samples=300)
        for name in (
            "max_rank_tokens",
            "max_rank_tokens_stderr",
            "imbalance",
            "experts_hit",
            "experts_hit_per_rank_max",
            "per_rank_tokens_max_expert",
            "tokens_per_rank_mean",
            "experts_hit_per_rank_mean",
        ):
            assert np.array_equal(getattr(stats, name)[index], getattr(one, name)), name
        assert stats.method[index] == one.method


def test_vectorised_call_is_deterministic_and_cached() -> None:
    tokens = np.array([[1, 17], [300, 17]])
    a = routing_stats("dirichlet:0.5", tokens, E, K, EP)
    b = routing_stats("dirichlet:0.5", tokens, E, K, EP)
    assert np.array_equal(a.max_rank_tokens, b.max_rank_tokens)
    assert a.max_rank_tokens[0, 1] == a.max_rank_tokens[1, 1]
    assert list(a.method.ravel()) == ["monte-carlo", "monte-carlo", "normal", "monte-carlo"]
    with pytest.raises(ValueError):
        a.max_rank_tokens[0, 0] = 0.0  # results are read-only


# ---------------------------------------------------------------------------------------------
# Monte Carlo vs normal approximation where they overlap
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "routing, n_exp, k, ep",
    [
        ("uniform", E, K, EP),
        ("zipf:1.2:sorted", E, K, EP),
        ("dirichlet:0.3", 64, 2, 4),
        ("uniform", 32, 4, 32),  # one expert per rank: the most skewed per-rank counts
    ],
)
@pytest.mark.parametrize("tokens", [128, 256])
def test_monte_carlo_and_normal_agree_on_overlap(
    routing: str, n_exp: int, k: int, ep: int, tokens: int
) -> None:
    mc = routing_stats(routing, tokens, n_exp, k, ep, method="monte-carlo", samples=3000)
    normal = routing_stats(routing, tokens, n_exp, k, ep, method="normal", samples=3000)
    assert str(mc.method) == "monte-carlo" and str(normal.method) == "normal"
    assert float(normal.max_rank_tokens) == pytest.approx(float(mc.max_rank_tokens), rel=0.007)
    assert float(normal.experts_hit_per_rank_max) == pytest.approx(
        float(mc.experts_hit_per_rank_max), rel=0.01
    )
    assert float(normal.per_rank_tokens_max_expert) == pytest.approx(
        float(mc.per_rank_tokens_max_expert), rel=0.015
    )


def test_monte_carlo_stderr_is_honest() -> None:
    """Two independent seeds differ by about their stated standard errors."""
    diffs = []
    for seed in range(1, 9):
        a = routing_stats("uniform", 24, 64, 4, 8, seed=seed, samples=1000)
        b = routing_stats("uniform", 24, 64, 4, 8, seed=seed + 100, samples=1000)
        diffs.append(
            (float(a.max_rank_tokens) - float(b.max_rank_tokens))
            / np.hypot(float(a.max_rank_tokens_stderr), float(b.max_rank_tokens_stderr))
        )
    assert 0.3 < np.std(diffs) < 2.5


@pytest.mark.parametrize(
    "text",
    ["zipf:-1", "zipf:abc", "foo", "zipf:0", "zipf:1:bogus", "dirichlet:-2", "dirichlet:", "zipf:1e9", ""],
)
def test_parse_routing_errors_name_the_field(text: str) -> None:
    with pytest.raises(EnergyLensError) as info:
        parse_routing(text)
    assert info.value.field == "routing"
    assert "routing=" in str(info.value) and repr(text) in str(info.value)


def test_parse_unknown_lists_known_forms() -> None:
    with pytest.raises(UnknownNameError) as info:
        parse_routing("foo")
    assert "uniform" in str(info.value) and "zipf:S" in str(info.value)


def test_missing_histogram_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(SpecError) as info:
        parse_routing(str(missing))
    assert info.value.field == "routing" and str(missing) in str(info.value)


@pytest.mark.parametrize(
    "text, name",
    [
        ("uniform", "uniform"),
        ("Zipf:1.2", "zipf:1.2"),
        ("zipf:2:sorted", "zipf:2:sorted"),
        ("zipf:0.9:7", "zipf:0.9:7"),
        ("dirichlet:0.5", "dirichlet:0.5"),
        ("dirichlet:0.5:3", "dirichlet:0.5:3"),
    ],
)
def test_routing_name_round_trips(text: str, name: str) -> None:
    routing = parse_routing(text)
    assert routing.name == name
    assert parse_routing(routing.name) == routing
    assert np.array_equal(parse_routing(routing.name).probabilities(64), routing.probabilities(64))


def test_distribution_shapes() -> None:
    for text in ("uniform", "zipf:1.2", "zipf:1.2:sorted", "dirichlet:0.3"):
        p = parse_routing(text).probabilities(E, layer=3)
        assert p.shape == (E,) and np.all(p >= 0) and p.sum() == pytest.approx(1.0)
    sorted_p = parse_routing("zipf:1.2:sorted").probabilities(E)
    assert np.all(np.diff(sorted_p) < 0)
    assert sorted_p[0] / sorted_p[1] == pytest.approx(2**1.2)
    scattered = parse_routing("zipf:1.2").probabilities(E)
    assert np.allclose(np.sort(scattered), np.sort(sorted_p))
    hottest_ranks = np.argsort(scattered)[::-1][:K] // (E // EP)
    assert len(set(hottest_ranks.tolist())) > 1  # hot experts are not all on rank 0
    assert not np.array_equal(parse_routing("zipf:1.2:1").probabilities(E), scattered)
    d = parse_routing("dirichlet:0.3").probabilities(E)
    assert np.array_equal(d, parse_routing("dirichlet:0.3").probabilities(E))  # fixed seed
    assert not np.array_equal(d, parse_routing("dirichlet:0.3:1").probabilities(E))


def test_bad_model_arguments() -> None:
    with pytest.raises(EnergyLensError) as info:
        routing_stats("uniform", 4, E, E + 1, EP)
    assert info.value.field == "top_k"
    with pytest.raises(LayoutError) as info:
        routing_stats("uniform", 4, E, K, 3)
    assert info.value.field == "ep" and "divides n_experts=128" in str(info.value)
    with pytest.raises(WorkloadError) as info:
        routing_stats("uniform", np.array([4, 0]), E, K, EP)
    assert info.value.field == "tokens"
    with pytest.raises(WorkloadError):
        routing_stats("uniform", 2.5, E, K, EP)
    with pytest.raises(EnergyLensError) as info:
        routing_stats("uniform", 4, 0, K, EP)
    assert info.value.field == "n_experts"
    with pytest.raises(UnknownNameError) as info:
        routing_stats("uniform", 4, E, K, EP, method="exactish")
    assert info.value.field == "method"
    with pytest.raises(EnergyLensError) as info:
        Routing.zipf(-1.0)
    assert info.value.field == "routing"
    with pytest.raises(EnergyLensError) as info:
        parse_routing("uniform").probabilities(E, layer=-1)
    assert info.value.field == "layer"


# ---------------------------------------------------------------------------------------------
# histogram files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".csv", ".npy"])
def test_histogram_round_trip(tmp_path: Path, suffix: str) -> None:
    counts = np.random.default_rng(3).integers(0, 50, size=(3, 16)).astype(float)
    counts[:, 0] += 1  # every layer has tokens
    path = save_histogram(tmp_path / f"h{suffix}", counts, top_k=2, source="unit test")
    routing = parse_routing(str(path))
    assert routing.kind == "histogram" and routing.name == str(path)
    assert np.array_equal(routing.counts, counts)
    for layer in range(3):
        assert np.allclose(routing.probabilities(16, layer), counts[layer] / counts[layer].sum())
    # more model layers than recorded rows: cycle
    assert np.array_equal(routing.probabilities(16, 3), routing.probabilities(16, 0))
    assert np.array_equal(routing.probabilities(16, 7), routing.probabilities(16, 1))
    if suffix == ".json":
        assert routing.recorded_top_k == 2 and routing.source == "unit test"
    # statistics follow the layer's histogram
    s0 = routing_stats(routing, 1000, 16, 2, 4, layer=0)
    s1 = routing_stats(routing, 1000, 16, 2, 4, layer=1)
    s4 = routing_stats(routing, 1000, 16, 2, 4, layer=4)
    assert not np.allclose(s0.tokens_per_expert_mean, s1.tokens_per_expert_mean)
    assert np.array_equal(s1.max_rank_tokens, s4.max_rank_tokens)


def test_histogram_expert_count_mismatch(tmp_path: Path) -> None:
    path = save_histogram(tmp_path / "h.json", np.ones((2, 64)), top_k=4)
    with pytest.raises(SpecError) as info:
        routing_stats(str(path), 10, E, K, EP)
    message = str(info.value)
    assert info.value.field == "routing" and str(path) in message and "64" in message and "128" in message


def test_csv_with_header_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("# recorded counts\ne0,e1,e2,e3\n1,2,3,4\n\n4,3,2,1\n")
    routing = load_histogram(path)
    assert routing.counts.shape == (2, 4)
    assert np.allclose(routing.probabilities(4, 1), [0.4, 0.3, 0.2, 0.1])


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("neg.json", json.dumps({"n_experts": 3, "layers": [[1, -2, 3]]}), "layer 0, expert 1"),
        ("ragged.json", json.dumps({"layers": [[1, 2, 3], [1, 2]]}), "same number of experts"),
        ("e.json", json.dumps({"n_experts": 4, "layers": [[1, 2, 3]]}), '"n_experts" is 4'),
        ("k.json", json.dumps({"top_k": 9, "layers": [[1, 2, 3]]}), '"top_k" is 9'),
        ("zero.json", json.dumps({"layers": [[0, 0, 0]]}), "all zeros"),
        ("text.json", json.dumps({"layers": [[1, "x", 3]]}), "must be numbers"),
        ("nolayers.json", json.dumps({"counts": [[1, 2]]}), "JSON object"),
        ("broken.json", "{not json", "readable JSON"),
        ("neg.csv", "1,2,3\n1,-1,3\n", "layer 1, expert 1"),
        ("ragged.csv", "1,2,3\n1,2\n", "same number of experts"),
        ("words.csv", "a,b\n1,2\nx,y\n", "line 3"),
        ("nan.csv", "1,nan,3\n", "finite"),
        ("empty.csv", "# nothing\n", "one row of expert counts"),
    ],
)
def test_malformed_histogram_files(tmp_path: Path, name: str, content: str, fragment: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(SpecError) as info:
        parse_routing(str(path))
    assert info.value.field == "routing"
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_malformed_npy(tmp_path: Path) -> None:
    path = tmp_path / "neg.npy"
    np.save(path, np.array([[1.0, -3.0]]))
    with pytest.raises(SpecError, match="expert counts must be finite and >= 0"):
        load_histogram(path)
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not an npy file")
    with pytest.raises(SpecError, match="readable .npy"):
        load_histogram(garbage)


def test_shipped_example_histogram_is_labelled_synthetic_and_reproducible() -> None:
    path = example_histogram_path()
    data = json.loads(path.read_text())
    assert data["n_experts"] == 128 and data["top_k"] == 8
    assert "SYNTHETIC" in data["source"] and "NOT real router statistics" in data["source"]
    assert "energylens.moe.routing.synthetic_histogram(" in data["source"]
    routing = parse_routing(str(path))
    assert routing.counts.shape == (4, 128)
    assert np.all(routing.counts.sum(axis=1) == 4096 * 8)
    assert np.array_equal(routing.counts, synthetic_histogram())  # the documented generator
    stats = routing_stats(routing, 4096, 128, 8, 8, layer=5)
    assert 1.05 < float(stats.imbalance) < 3.0  # skewed, scattered hot experts
