"""Sweeps: evaluate many configurations at once, find Pareto fronts, draw them.

>>> from energylens.sweep import SweepSpec, run_sweep
>>> spec = SweepSpec(models=["llama3-70b"], gpus=["h100-sxm"], tp=[2, 4, 8], batch=[1, 8, 64])
>>> table = run_sweep(spec)                      # doctest: +SKIP
>>> table.pareto("decode-latency").rows(3)       # doctest: +SKIP
"""

from energylens.sweep.engine import evaluate_chunk, plan_chunks, run_sweep
from energylens.sweep.spec import Constraints, SweepSpec, parse_values
from energylens.sweep.table import FRONTS, SweepTable, read_csv

__all__ = ["FRONTS", "Constraints", "SweepSpec", "SweepTable", "evaluate_chunk", "parse_values", "plan_chunks",
           "read_csv", "run_sweep"]
