"""Run a sweep on a Dask cluster: the same vectorised chunks, mapped over workers.

Why Dask (optional extra ``energylens[distributed]``): it is pure Python, installs from PyPI with
no binary daemon, and ``LocalCluster(processes=False)`` runs inside the test suite on two cores;
the same code then scales to a ``dask.distributed`` cluster on many machines
(``Client("scheduler:8786")``). Ray would work too but needs its own runtime and is heavier to
install and to start in CI.

The grid is split by :func:`energylens.sweep.runner.plan_chunks` (one chunk per model/GPU/dtype/
sp group, large groups halved along their longest axis) and every chunk is evaluated by
:func:`energylens.sweep.runner.evaluate_chunk`, the function ``run_sweep`` uses locally, so the
concatenated table is identical to a local run, row for row.

>>> from energylens.distributed import run_sweep_dask
>>> table = run_sweep_dask(spec, address="tcp://scheduler:8786")   # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable

from energylens.errors import EnergyLensError
from energylens.sweep.runner import assemble, evaluate_chunk, plan_chunks
from energylens.sweep.spec import SweepSpec
from energylens.sweep.table import SweepTable

DEFAULT_DASK_CHUNK_CONFIGS = 500_000
CONNECT_TIMEOUT_S = 5.0


def _require_dask():
    try:
        import dask.distributed as dd
    except ImportError as exc:
        raise EnergyLensError("distributed", "dask", "install the optional extra: pip install 'energylens[distributed]'") \
            from exc
    return dd


def _evaluate(spec: SweepSpec, skip_errors: bool) -> SweepTable:
    try:
        return evaluate_chunk(spec)
    except EnergyLensError as exc:  # as run_sweep: a group that cannot run is skipped and listed
        if not skip_errors:
            raise
        return SweepTable({}, {"skipped": f"{spec.models[0]} on {spec.gpus[0]} "
                                          f"({spec.dtypes[0] or 'default dtype'}): {exc}"})


def run_sweep_dask(spec: SweepSpec, *, client=None, address: str | None = None,
                   max_chunk_configs: int = DEFAULT_DASK_CHUNK_CONFIGS,
                   progress: Callable[[int, int], None] | None = None) -> SweepTable:
    """Evaluate ``spec`` on a Dask cluster and return the same table as ``run_sweep``.

    ``client``: an existing ``dask.distributed.Client``; else ``address`` of a scheduler; else a
    temporary in-process ``LocalCluster`` (threads, no worker processes) that is closed at the end.
    """
    from energylens.sweep.guard import check_size

    check_size(spec)  # the gathered table must fit in this process's memory
    dd = _require_dask()
    t0 = time.perf_counter()
    chunks = plan_chunks(spec, max_chunk_configs)
    own = None
    if client is None:
        if address is not None:
            try:
                client = own = dd.Client(address, timeout=CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError) as exc:
                raise EnergyLensError("dask", address, f"a reachable Dask scheduler address (no answer within "
                                      f"{CONNECT_TIMEOUT_S:g} s: {exc.__class__.__name__}); or 'local'") from None
        else:
            cluster = dd.LocalCluster(processes=False, dashboard_address=None)
            client = own = dd.Client(cluster)
    try:
        skip = len(spec.models) * len(spec.gpus) * len(spec.dtypes) > 1
        futures = client.map(_evaluate, chunks, [skip] * len(chunks), pure=False)
        done = 0
        for _ in dd.as_completed(futures):
            done += 1
            if progress is not None:
                progress(done, len(chunks))
        tables = client.gather(futures)  # in chunk order, whatever order they finished in
    finally:
        if own is not None:
            cluster = getattr(own, "cluster", None)
            own.close()
            if cluster is not None and address is None:
                cluster.close()
    skipped = list(dict.fromkeys(t.meta["skipped"] for t in tables if not t.columns and "skipped" in t.meta))
    meta = {"spec": spec.to_dict(), "skipped": skipped, "chunks": len(chunks), "grid_configs": spec.size,
            "engine": "dask"}
    if skipped and not any(t.columns for t in tables):
        raise EnergyLensError("spec", spec.name, "at least one group that can run: " + "; ".join(skipped))
    table = assemble(spec, chunks, list(tables), meta)
    table.meta["elapsed_s"] = time.perf_counter() - t0
    return table
