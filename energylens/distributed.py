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

Grids too large for one table stream the same way as ``energylens.sweep.stream.stream_sweep``:
``stream_sweep_dask(spec, out="grid.parquet")`` makes ``grid.parquet/`` a partitioned Parquet
dataset (``part-00000.parquet``, one file per chunk, written by the worker that evaluated it; CSV
parts for a ``.csv`` name); workers send back only their chunk's fronts, spreads and top-k, which
the client folds in chunk order, so the result equals the local stream's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from energylens.errors import EnergyLensError, SpecError
from energylens.sweep.runner import assemble, evaluate_chunk, plan_chunks
from energylens.sweep.spec import SweepSpec
from energylens.sweep.stream import DEFAULT_CHUNK_CONFIGS, StreamResult, Summary, open_sink
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
    client, own = _client(dd, client, address)
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
        _close(own, address)
    skipped = list(dict.fromkeys(t.meta["skipped"] for t in tables if not t.names and "skipped" in t.meta))
    meta = {"spec": spec.to_dict(), "skipped": skipped, "chunks": len(chunks), "grid_configs": spec.size,
            "engine": "dask"}
    if skipped and not any(t.names for t in tables):
        raise EnergyLensError("spec", spec.name, "at least one group that can run: " + "; ".join(skipped))
    table = assemble(spec, chunks, list(tables), meta)
    table.meta["elapsed_s"] = time.perf_counter() - t0
    return table


def _client(dd, client, address):
    if client is not None:
        return client, None
    if address is not None:
        try:
            own = dd.Client(address, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise EnergyLensError("dask", address, f"a reachable Dask scheduler address (no answer within "
                                  f"{CONNECT_TIMEOUT_S:g} s: {exc.__class__.__name__}); or 'local'") from None
    else:
        own = dd.Client(dd.LocalCluster(processes=False, dashboard_address=None))
    return own, own


def _close(own, address) -> None:
    if own is not None:
        cluster = getattr(own, "cluster", None)
        own.close()
        if cluster is not None and address is None:
            cluster.close()


def _evaluate_part(spec: SweepSpec, index: int, out_dir: str | None, suffix: str, write_all: bool,
                   template: Summary, skip_errors: bool) -> tuple[Summary, str | None]:
    """On a worker: one chunk evaluated, its rows written as one part file, its summary returned."""
    t = _evaluate(spec, skip_errors)
    if not t.names:
        return template.chunk_summary(t), t.meta.get("skipped")
    if out_dir is not None:
        rows = t if write_all else t.feasible()
        if len(rows):
            sink = open_sink(Path(out_dir) / f"part-{index:05d}{suffix}")
            try:
                sink.write(rows)
            finally:
                sink.close()
    return template.chunk_summary(t), None


def stream_sweep_dask(spec: SweepSpec, *, out: str | Path | None = None, write_all: bool = False,
                      fronts=(("decode-latency", None),), spreads=(), top_k: int = 0,
                      top_by: str = "energy_per_output_token_j", client=None, address: str | None = None,
                      max_chunk_configs: int = DEFAULT_CHUNK_CONFIGS,
                      progress: Callable[[int, int], None] | None = None) -> StreamResult:
    """``stream_sweep`` on a Dask cluster: ``out`` (a name ending in .parquet or .csv) becomes a
    directory of part files, one per chunk; the summary is folded in chunk order as parts finish."""
    dd = _require_dask()
    summary = Summary(tuple(fronts), tuple(spreads), int(top_k), top_by)
    summary.chunk_summary(SweepTable({}))  # unknown front names fail before any work
    out_dir, suffix = None, ""
    if out is not None:
        suffix = Path(out).suffix.lower()
        if suffix not in (".csv", ".parquet", ".pq"):
            raise SpecError("out", str(out), "a name ending in .csv or .parquet (a directory of part files)")
        if suffix != ".csv":
            open_sink(Path(out) / "check.parquet")  # pyarrow missing: fail before any work (no file yet)
        Path(out).mkdir(parents=True, exist_ok=True)
        out_dir = str(out)
    t0 = time.perf_counter()
    chunks = plan_chunks(spec, max_chunk_configs)
    skip = len(spec.models) * len(spec.gpus) * len(spec.dtypes) > 1
    template = Summary(summary.fronts, summary.spreads, summary.top_k, summary.top_by)
    client, own = _client(dd, client, address)
    skipped: list[str] = []
    try:
        futures = [client.submit(_evaluate_part, c, i, out_dir, suffix, write_all, template, skip, pure=False)
                   for i, c in enumerate(chunks)]
        index = {f.key: i for i, f in enumerate(futures)}
        pending: dict[int, tuple] = {}
        next_i = 0
        for done, fut in enumerate(dd.as_completed(futures), start=1):
            pending[index[fut.key]] = fut.result()
            fut.release()
            while next_i in pending:  # fold in chunk order: ties resolve as in the local stream
                part, msg = pending.pop(next_i)
                summary.merge(part)
                if msg and msg not in skipped:
                    skipped.append(msg)
                next_i += 1
            if progress is not None:
                progress(done, len(chunks))
        del futures
    finally:
        _close(own, address)
    if skipped and not summary.valid_configs:
        raise EnergyLensError("spec", spec.name, "at least one group that can run: " + "; ".join(skipped))
    meta = {"spec": spec.to_dict(), "skipped": skipped, "chunks": len(chunks), "grid_configs": spec.size,
            "valid_configs": summary.valid_configs, "feasible_configs": summary.feasible_configs,
            "out": out_dir, "engine": "dask", "elapsed_s": time.perf_counter() - t0}
    return StreamResult(summary, meta)
