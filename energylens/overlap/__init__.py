"""Compute-communication overlap: SM allocation between a GEMM and its collective, and its Pareto front.

>>> from energylens.overlap import OverlapPlan, predict_with_overlap, sweep_overlap
>>> p = predict_with_overlap("llama3-70b", "h100-sxm", tp=8, sp=True, batch=8,
...                          plans=[OverlapPlan("*", chunks=4, comm_sms=16)])      # doctest: +SKIP
>>> s = sweep_overlap("llama3-70b", "h100-sxm", tp=8, prompt_len=2048)            # doctest: +SKIP
>>> s.rows()[0]["baseline"], s.pareto_indices()                                    # doctest: +SKIP

Modules: ``plan`` (which collective overlaps which GEMM), ``model`` (SM split, chunked pipeline,
shared power cap, phase totals), ``search`` (predictions, sweeps, Pareto), ``plot``, ``sm_check``
(the SM-split model against MuxServe's measurements).
"""

from energylens.overlap.rules import CONSUMER, PRODUCER, OverlapPlan, resolve_pairs, step_sequence

# ``cost`` (the overlap cost model) and ``search`` (which builds on ``energylens.predict``) load on first
# use: a prediction without overlap plans needs only ``rules`` (``Execution.overlap``), and importing the
# package must not import ``predict`` (cold start, issue 19).
_COST_NAMES = ("ASSUMPTION_SOURCES", "OverlapAssumptions", "OverlapPhase", "PairCost", "Timeline",
               "evaluate_overlap", "gpu_partition", "overlap_timeline")
_SEARCH_NAMES = ("DEFAULT_CHUNKS", "DEFAULT_COMM_SMS", "OverlapPhaseResult", "OverlapPrediction", "OverlapSweep",
                 "PairResult", "predict_with_overlap", "sweep_overlap")


def __getattr__(name: str):
    if name in _COST_NAMES:
        from energylens.overlap import cost

        return getattr(cost, name)
    if name in _SEARCH_NAMES:
        from energylens.overlap import search

        return getattr(search, name)
    raise AttributeError(f"module 'energylens.overlap' has no attribute {name!r}")


__all__ = [
    "ASSUMPTION_SOURCES",
    "CONSUMER",
    "DEFAULT_CHUNKS",
    "DEFAULT_COMM_SMS",
    "PRODUCER",
    "OverlapAssumptions",
    "OverlapPhase",
    "OverlapPhaseResult",
    "OverlapPlan",
    "OverlapPrediction",
    "OverlapSweep",
    "PairCost",
    "PairResult",
    "Timeline",
    "evaluate_overlap",
    "gpu_partition",
    "overlap_timeline",
    "predict_with_overlap",
    "resolve_pairs",
    "step_sequence",
    "sweep_overlap",
]
