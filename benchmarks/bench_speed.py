"""Speed and scale figures of issue 19, one per line as ``name: value unit`` (medians of several runs).

    python benchmarks/bench_speed.py [--repeat 5] [--skip-95m] [--peers-path DIR]

Workloads (Llama-3.1-70B on H100 SXM, pinned to one CPU core, one BLAS thread):

* ``predict_no_detail`` / ``predict_detail``: the issue's 240 configurations (tp 1, 2, 4, 8 x batch 1..512 x
  input 512/2048/8192 x output 128/1024), one ``energylens.predict`` call each, warm (model, GPU, tables and
  compiled plans loaded), with ``detail=False`` (per-phase and per-GPU totals) and with full per-op detail:
  the median over runs of the mean time per call, wall clock and this process's CPU time
  (``*_cpu``: ``time.process_time``, less sensitive to other processes on a shared machine). The rows
  (per op, per collective, per GPU) are made when first read: ``predict_detail_rows_read`` also reads them all.
* ``sweep_240``: the same 240 configurations as one ``run_sweep`` (each sweep figure also as ``*_cpu``, by CPU
  time). A sweep table's columns are computed when read: the ``sweep_*`` figures evaluate the grid and build
  the table without reading it; ``*_front`` also take the decode-latency front of each workload (what
  ``--pareto-only`` keeps), ``*_all_columns`` compute every column (what writing the table does, before the
  file is written).
* ``sweep_layout_heavy``: tp x pp x dp in {1,2,4,8}^3, batch 1..512, 16 prompts, 16 outputs (163,840).
* ``sweep_length_heavy``: tp 1..8, batch 1..512, prompts 128..8192 step 128, outputs 64..2048 step 64
  (81,920 = 4 x 10 x 64 x 32): the workload axes dominate.
* ``sweep_serving``: the 240 configurations with ``serving=True`` (continuous-batching columns).
* ``sweep_serving_layout_heavy``: tp x pp x dp in {1,2,4,8}^3, batch 1..512, 16 prompts (256..6976), 16
  outputs (64..1024) with ``serving=True`` (163,840 configurations, every layout in one vectorised call);
  ``sweep_serving_columns_layout_heavy``: the same grid's rate for the ``serve_*`` columns alone (its time
  minus the same sweep without ``serving``).
* ``stream_95m``: the issue's 95 M-configuration grid streamed with ``--pareto-only`` in a
  subprocess (Llama-3.1-70B: prompt + output reach 69,632 tokens, beyond Llama-3-70B's 8 k context); peak RSS from ``resource.getrusage(RUSAGE_CHILDREN)`` (takes minutes; ``--skip-95m``).
* ``stream_chunk_<n>_cpu`` / ``_peak_rss``: the streamed summaries of ``--pareto-only`` over a 1.7 M slice of
  the 95 M grid with chunks of at most ``n`` configurations (how ``DEFAULT_CHUNK_CONFIGS`` was chosen).
* ``cold_cli``: wall time of ``python -m energylens.cli predict --json`` in a fresh process (bytecode
  cached, as after ``pip install``), next to ``python -c "import numpy"``, the floor on this machine,
  and ``cold_cli_beyond_numpy``: the CLI's own import and run time measured inside a fresh process
  after ``import numpy`` (less sensitive to the load of a shared machine).
* Peers, when importable (``--peers-path`` adds a directory to ``sys.path``; nothing is installed by
  this script): llm-analysis's ``infer`` on those of the 240 configurations it accepts (it refuses
  layouts whose memory does not fit; it has no Llama-3-70B config: Llama-2-70B, the same layer shapes
  but a 32 k vocabulary), and ``energylens.predict`` on the same configurations, as a time ratio.
  AIConfigurator needs a per-system performance database and is not wired here; the script says so.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL, GPU = "llama3.1-70b", "h100-sxm"  # 128 k context: the layout-heavy grid reaches 8,960 tokens
TP, BATCH, PROMPT, OUTPUT = (1, 2, 4, 8), tuple(2**i for i in range(10)), (512, 2048, 8192), (128, 1024)
GRID_95M = ["--model", MODEL, "--tp", "1:128:x2", "--pp", "1,2,4,8", "--dp", "1:64:x2", "--batch", "1:4096:x2",
            "--prompt-len", "128:65536:128", "--output-len", "64:4096:64"]


def emit(name: str, value: float, unit: str, fmt: str = ".4g") -> None:
    print(f"{name}: {value:{fmt}} {unit}", flush=True)


def configs():
    for tp in TP:
        for b in BATCH:
            for p in PROMPT:
                for o in OUTPUT:
                    yield tp, b, p, o


def time_calls(fn, items, repeat: int) -> tuple[float, float]:
    """Median over ``repeat`` runs of the mean seconds per call: (wall clock, CPU time of this process)."""
    walls, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        for it in items:
            fn(*it)
        walls.append((time.perf_counter() - t0) / len(items))
        cpus.append((time.process_time() - c0) / len(items))
    return statistics.median(walls), statistics.median(cpus)


def sweep_rate(spec, repeat: int, read=None) -> tuple[float, float]:
    """Configurations per second, median over runs: (by wall clock, by CPU time). ``read``: what is done with
    the table (its columns are computed when read): nothing by default."""
    from energylens.sweep import run_sweep

    walls, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        if read is None:
            run_sweep(spec)
        else:
            read(run_sweep(spec))  # (the table goes at once in both cases, as memory a later run could reuse)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return spec.size / statistics.median(walls), spec.size / statistics.median(cpus)


def workload_front(table) -> None:  # what --pareto-only keeps: the decode-latency front of each workload
    table.pareto("decode-latency", by=("model", "gpu", "prompt_len", "output_len"))


def every_column(table) -> None:  # what writing the table computes: all its columns
    table.columns  # noqa: B018


def emit_rate(name: str, rates: tuple[float, float]) -> None:
    emit(name, rates[0], "configs/s", ".4g")
    emit(f"{name}_cpu", rates[1], "configs/s", ".4g")


IN_PROCESS = ("import io, sys, time, contextlib, numpy\n"
              "t0 = time.perf_counter()\n"
              "from energylens.cli import main\n"
              "with contextlib.redirect_stdout(io.StringIO()):\n"
              "    main(['predict', '--json'])\n"
              "sys.stderr.write(repr(time.perf_counter() - t0))\n")


def cold_cli(repeat: int) -> tuple[float, float, float]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(ROOT)

    def wall(cmd) -> float:
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0

    def beyond_numpy() -> float:  # the CLI's own import and run time, after the interpreter and NumPy
        r = subprocess.run([sys.executable, "-c", IN_PROCESS], cwd=ROOT, env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        return float(r.stderr.strip().splitlines()[-1])

    cli = [sys.executable, "-m", "energylens.cli", "predict", "--json"]
    numpy = [sys.executable, "-c", "import numpy"]
    wall(cli)  # writes the bytecode cache
    runs = [(wall(cli), wall(numpy), beyond_numpy()) for _ in range(repeat)]
    return tuple(statistics.median(r[i] for r in runs) for i in range(3))


CHUNK_SIZES = (100_000, 250_000, 500_000)
STREAM_SUB = ("import resource, sys, time\n"
              "from energylens.sweep import SweepSpec\n"
              "from energylens.sweep.stream import stream_sweep\n"
              "spec = SweepSpec(models=(sys.argv[1],), gpus=(sys.argv[2],), tp=(4, 8), pp=(2,), dp=(1, 2),\n"
              "                 batch=tuple(2**i for i in range(13)), prompt_len=tuple(range(128, 65537, 128)),\n"
              "                 output_len=tuple(range(64, 4097, 64)))\n"
              "by = ('model', 'gpu', 'prompt_len', 'output_len')\n"
              "spreads = [(f'{ph}_energy_per_token_j', b) for ph in ('prefill', 'decode')\n"
              "           for b in ('model', ('model', 'prompt_len', 'output_len'))]\n"
              "c0 = time.process_time()\n"
              "stream_sweep(spec, fronts=[('decode-latency', by)], spreads=spreads, top_k=10,\n"
              "             max_chunk_configs=int(sys.argv[3]))\n"
              "print(spec.size / (time.process_time() - c0), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n")


def stream_chunks(repeat: int) -> None:
    """``stream_chunk_<n>``: the CLI's streamed summaries (--pareto-only: the per-workload decode-latency front,
    the spreads, top 10) over a 1.7 M-configuration slice of the 95 M grid (tp 4, 8 x pp 2 x dp 1, 2 x 13
    batches x 512 prompts x 64 outputs) with chunks of at most ``n`` configurations, in a fresh process each:
    configurations per CPU second (median of runs) and peak RSS (the largest)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for size in CHUNK_SIZES:
        runs = []
        for _ in range(max(1, repeat)):
            r = subprocess.run([sys.executable, "-c", STREAM_SUB, MODEL, GPU, str(size)], cwd=ROOT, env=env, check=True,
                               capture_output=True, text=True)
            runs.append(tuple(float(x) for x in r.stdout.split()))
        emit(f"stream_chunk_{size}_cpu", statistics.median(x for x, _ in runs), "configs/s", ".4g")
        emit(f"stream_chunk_{size}_peak_rss", max(y for _, y in runs), "MB", ".0f")


def stream_95m() -> tuple[float, float]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "energylens.cli", "sweep", *GRID_95M, "--pareto-only", "--json"],
                   cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


def peers(repeat: int, predict) -> None:
    try:
        import aiconfigurator  # noqa: F401
        print("peer_aiconfigurator: importable, not wired (needs a per-system performance database)")
    except ImportError:
        print("peer_aiconfigurator: not importable (pip install aiconfigurator, or --peers-path DIR)")
    try:
        import logging

        from llm_analysis.analysis import infer
    except ImportError:
        print("peer_llm_analysis: not importable (pip install llm-analysis, or --peers-path DIR)")
        return
    logging.getLogger("llm_analysis").setLevel(logging.ERROR)

    def one(tp, b, p, o):
        infer(model_name="upstage_Llama-2-70b-instruct-v2", gpu_name="h100-sxm-80gb", tp_size=tp,
              batch_size_per_gpu=b, seq_len=p, num_tokens_to_generate=o, log_level="ERROR")

    items = []
    for it in configs():  # llm-analysis refuses configurations whose memory does not fit
        try:
            one(*it)
        except AssertionError:
            continue
        items.append(it)
    if not items:
        print("peer_llm_analysis: no configuration accepted")
        return
    theirs = time_calls(one, items, repeat)[0]
    ours = time_calls(predict, items, repeat)[0]
    emit("peer_configs", len(items), "configs", "d")
    emit("peer_llm_analysis_predict", theirs * 1e3, "ms")
    emit("peer_energylens_predict_no_detail_same_configs", ours * 1e3, "ms")
    emit("ratio_predict_energylens_over_llm_analysis", ours / theirs, "x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--skip-95m", action="store_true")
    ap.add_argument("--peers-path", default=None)
    args = ap.parse_args()
    if args.peers_path:
        sys.path.append(args.peers_path)
    sys.path.insert(0, str(ROOT))
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import energylens
    from energylens.sweep import SweepSpec

    items = list(configs())

    def predict(tp, b, p, o):
        energylens.predict(MODEL, GPU, tp=tp, batch=b, prompt_len=p, output_len=o, detail=False)

    def predict_detail(tp, b, p, o):
        energylens.predict(MODEL, GPU, tp=tp, batch=b, prompt_len=p, output_len=o)

    def predict_detail_read(tp, b, p, o):  # every per-op, per-collective and per-GPU row made
        r = energylens.predict(MODEL, GPU, tp=tp, batch=b, prompt_len=p, output_len=o)
        for ph in (r.prefill, r.decode):
            len(ph.ops), len(ph.collectives), len(ph.per_gpu)

    runs = [("predict_no_detail", predict), ("predict_detail", predict_detail),
            ("predict_detail_rows_read", predict_detail_read)]
    try:
        predict(*items[0])
    except TypeError:  # a checkout before detail= existed (for before/after figures)
        print("predict_no_detail: not available (predict has no detail= argument)")
        runs = runs[1:]
    for _, fn in runs:
        for it in items:  # warm: every layout's plans compiled
            fn(*it)
    for name, fn in runs:
        wall, cpu = time_calls(fn, items, args.repeat)
        emit(name, wall * 1e3, "ms")
        emit(f"{name}_cpu", cpu * 1e3, "ms")
    small = SweepSpec(models=(MODEL,), gpus=(GPU,), tp=TP, batch=BATCH, prompt_len=PROMPT, output_len=OUTPUT)
    sweep_rate(small, 1)  # warm-up
    emit_rate("sweep_240", sweep_rate(small, args.repeat))
    layout = SweepSpec(models=(MODEL,), gpus=(GPU,), tp=TP, pp=TP, dp=TP, batch=BATCH,
                       prompt_len=tuple(range(256, 8193, 512)), output_len=tuple(range(64, 1025, 64)))
    sweep_rate(layout, 1)  # warm-up (plans compiled)
    emit_rate("sweep_layout_heavy", sweep_rate(layout, args.repeat))
    emit_rate("sweep_layout_heavy_front", sweep_rate(layout, args.repeat, workload_front))
    emit_rate("sweep_layout_heavy_all_columns", sweep_rate(layout, args.repeat, every_column))
    length = SweepSpec(models=(MODEL,), gpus=(GPU,), tp=TP, batch=BATCH, prompt_len=tuple(range(128, 8193, 128)),
                       output_len=tuple(range(64, 2049, 64)))
    sweep_rate(length, 1)
    emit_rate("sweep_length_heavy", sweep_rate(length, args.repeat))
    emit_rate("sweep_length_heavy_front", sweep_rate(length, args.repeat, workload_front))
    emit_rate("sweep_length_heavy_all_columns", sweep_rate(length, args.repeat, every_column))
    serving = SweepSpec(models=(MODEL,), gpus=(GPU,), tp=TP, batch=BATCH, prompt_len=PROMPT, output_len=OUTPUT,
                        serving=True)
    sweep_rate(serving, 1)  # warm-up (the serving coefficients and SciPy's Poisson quantile load on first use)
    emit_rate("sweep_serving_240", sweep_rate(serving, max(1, args.repeat // 2)))
    served = SweepSpec(models=(MODEL,), gpus=(GPU,), tp=TP, pp=TP, dp=TP, batch=BATCH,
                       prompt_len=tuple(range(256, 7169, 448)), output_len=tuple(range(64, 1025, 64)), serving=True)
    sweep_rate(served, 1)  # warm-up
    with_serving = sweep_rate(served, args.repeat)
    static_only = sweep_rate(replace(served, serving=False), args.repeat)
    for i, suffix in enumerate(("", "_cpu")):
        emit(f"sweep_serving_layout_heavy{suffix}", with_serving[i], "configs/s", ".4g")
        emit(f"sweep_serving_columns_layout_heavy{suffix}", served.size / max(
            served.size / with_serving[i] - served.size / static_only[i], 1e-9), "configs/s", ".4g")
    cli_s, numpy_s, own_s = cold_cli(args.repeat)
    emit("cold_cli_predict_json", cli_s, "s", ".3f")
    emit("python_import_numpy", numpy_s, "s", ".3f")
    emit("cold_cli_beyond_numpy", own_s, "s", ".3f")
    peers(args.repeat, predict)
    stream_chunks(args.repeat)
    if not args.skip_95m:
        wall, rss = stream_95m()
        emit("stream_95m_wall", wall, "s", ".0f")
        emit("stream_95m_peak_rss", rss, "MB", ".0f")


if __name__ == "__main__":
    main()
