"""Sweeps: evaluate many configurations at once, find Pareto fronts, draw them.

>>> from energylens.sweep import SweepSpec, run_sweep
>>> spec = SweepSpec(models=["llama3-70b"], gpus=["h100-sxm"], tp=[2, 4, 8], batch=[1, 8, 64])
>>> table = run_sweep(spec)                      # doctest: +SKIP
>>> table.pareto("decode-latency").rows(3)       # doctest: +SKIP

Compute-communication overlap is one more axis: ``overlap_comm_sms`` (SMs held by the communication
kernel; ``[0]``, no overlap, by default), ``overlap_chunks`` (``[1]``) and ``overlap_collective``
(a glob, ``"*"``). Each ``(comm_sms > 0, chunks)`` setting adds one row per configuration, equal to
``energylens.overlap.predict_with_overlap``; ``comm_sms = 0`` rows are today's rows, unchanged:

>>> spec = SweepSpec(models=["llama3-70b"], gpus=["h100-sxm"], tp=[4, 8], sp=[True],
...                  overlap_comm_sms=[0, 16, 32], overlap_chunks=[1, 4])
>>> spec.overlap_settings()
[(0, 1), (16, 1), (16, 4), (32, 1), (32, 4)]
>>> run_sweep(spec).pareto("prefill-latency")    # doctest: +SKIP

(CLI: ``energylens sweep --overlap-comm-sms 0,16,24,32 --overlap-chunks 1,2,4``.) Columns
``overlap_comm_sms``, ``overlap_chunks``, ``{prefill,decode}_overlap_saved_s`` / ``_saved_j``.
"""

from energylens.sweep.runner import evaluate_chunk, plan_chunks, run_sweep
from energylens.sweep.spec import Constraints, SweepSpec, parse_values
from energylens.sweep.stream import StreamResult, stream_sweep
from energylens.sweep.table import FRONTS, SweepTable, read_csv

__all__ = ["FRONTS", "Constraints", "StreamResult", "SweepSpec", "SweepTable", "evaluate_chunk", "parse_values",
           "plan_chunks", "read_csv", "run_sweep", "stream_sweep"]
