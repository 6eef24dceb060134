"""NCCL collectives, energy per GPU rank. Launch one process per GPU with torchrun::

    torchrun --standalone --nproc-per-node 8 -m energylens.measure.collective_suite --out data/measurements/h100-sxm/collectives/

Every rank reads its own GPU's NVML energy counter around the same windows; all data-dependent loop
counts are agreed with a MAX all-reduce so the ranks issue identical collective calls. Rank 0 gathers
the per-rank results and writes one record: ``energy_j`` is the mean energy per rank per call, with
``energy_j_per_rank`` and ``latency_s_per_rank`` alongside. ``size_bytes`` is nccl-tests' size (the
all-reduce buffer, the all-gather output, the reduce-scatter input, the all-to-all buffer, the
point-to-point message); ``bytes`` repeats it and ``dims.bus_bytes`` applies nccl-tests' bus factor.

With one GPU (no ``WORLD_SIZE`` > 1) a record with no points says that no collective can be measured.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from energylens.errors import MeasurementError
from energylens.measure.points import PointSpec, plan_collectives
from energylens.measure.records import write_record
from energylens.measure.runner import RunSettings, measure_callable, prepare_invoke


def _collective_fn(
    torch: object, dist: object, spec: PointSpec, rank: int, world: int, device: object
) -> Callable[[], object]:
    op = spec.dims["op"]
    size = int(spec.dims["size_bytes"])
    numel = max(world, size // 2 // world * world)  # bf16 elements, divisible by the world size
    bf16 = torch.bfloat16

    def buf(n: int) -> object:
        return torch.empty((n,), device=device, dtype=bf16).normal_()

    if op == "all_reduce":
        t = buf(numel)
        return lambda: dist.all_reduce(t)
    if op == "all_gather":
        out, inp = buf(numel), buf(numel // world)
        return lambda: dist.all_gather_into_tensor(out, inp)
    if op == "reduce_scatter":
        inp, out = buf(numel), buf(numel // world)
        return lambda: dist.reduce_scatter_tensor(out, inp)
    if op == "all_to_all":
        inp, out = buf(numel), buf(numel)
        return lambda: dist.all_to_all_single(out, inp)
    if op == "send_recv":
        peer = rank ^ 1
        if peer >= world:  # odd world size: the last rank has no partner and idles
            return lambda: None
        send, recv = buf(numel), buf(numel)

        def p2p() -> None:
            ops = [dist.P2POp(dist.isend, send, peer), dist.P2POp(dist.irecv, recv, peer)]
            for req in dist.batch_isend_irecv(ops):
                req.wait()

        return p2p
    raise MeasurementError(
        "collective.op", op, "all_reduce, all_gather, reduce_scatter, all_to_all, send_recv"
    )


def run_collectives(
    out: str | Path, settings: RunSettings, options: object, log: Callable[[str], None] = print
) -> Path:
    """Measure the collectives (called on every rank under torchrun); rank 0 writes the record."""
    from energylens.measure.session import GpuSession, apply_shard, new_record, point_dict, record_path

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(getattr(options, "device_index", 0))))
    when = _dt.datetime.now(_dt.timezone.utc)
    if world < 2:
        sess = GpuSession(local, settings)
        if sess.torch.cuda.device_count() > 1:
            raise MeasurementError(
                "collectives",
                f"{sess.torch.cuda.device_count()} GPUs, one process",
                "launch one process per GPU: torchrun --standalone --nproc-per-node N -m energylens.measure.collective_suite --out DIR",
            )
        idle = sess.idle_power()
        meta = {
            **sess.metadata,
            "world_size": 1,
            "complete": True,
            "note": "one GPU: no collective can be measured (needs torchrun with >= 2 GPUs)",
        }
        path = record_path(out, "collectives", when, socket.gethostname())
        write_record(new_record("collectives", meta, idle, idle, []), path)
        log(f"one GPU visible: no collective can be measured; wrote {path}")
        return path

    sess = GpuSession(local, settings)
    torch = sess.torch
    dist = torch.distributed
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl")
    flag = torch.zeros((1,), device=sess.device, dtype=torch.int64)

    def agree(x: int) -> int:
        flag.fill_(int(x))
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    dist.barrier()
    idle_before = sess.idle_power()
    specs = apply_shard(
        plan_collectives(getattr(options, "size", "default"), world), getattr(options, "shard", None)
    )
    budget = getattr(options, "budget_s", None)
    t0 = time.monotonic()
    points, skipped = [], []
    for spec in specs:
        if budget is not None and agree(int(time.monotonic() - t0 > budget)):
            skipped.append({"name": spec.name, "reason": "time budget spent"})
            continue
        fn = invoke = None
        try:
            fn = _collective_fn(torch, dist, spec, rank, world, sess.device)
            invoke, per, launch = prepare_invoke(fn, sess.backend, settings, graphable=False)
            m = measure_callable(
                invoke,
                backend=sess.backend,
                meter=sess.nv,
                settings=settings,
                idle_power_w=idle_before,
                calls_per_invoke=per,
                launch=launch,
                sampler=sess.sampler(),
                power_limit_w=sess.power_limit_w,
                agree=agree,
            )
            mine = point_dict(spec, m)
        except torch.cuda.OutOfMemoryError as exc:  # the same size fails on every rank alike
            mine = {"error": f"OutOfMemoryError: {str(exc)[:160]}"}
        finally:
            fn = invoke = None
            sess.release()
        gathered: list = [None] * world
        dist.all_gather_object(gathered, mine)
        if rank != 0:
            continue
        errors = [g["error"] for g in gathered if "error" in g]
        if errors:
            skipped.append({"name": spec.name, "reason": errors[0]})
            continue
        p = dict(gathered[0])
        for field in ("energy_j", "energy_j_idle_subtracted", "avg_power_w", "latency_s"):
            per_rank = [float(g[field]) for g in gathered]
            p[f"{field}_per_rank"] = per_rank
            p[field] = statistics.fmean(per_rank)
        p["energy_j_std"] = statistics.fmean(float(g["energy_j_std"]) for g in gathered)
        p["latency_s_std"] = statistics.fmean(float(g["latency_s_std"]) for g in gathered)
        p["power_capped"] = any(bool(g.get("power_capped")) for g in gathered)
        points.append(p)
        log(f"{p['name']}: {p['latency_s'] * 1e6:,.1f} us, {p['energy_j'] * 1e3:,.3f} mJ per rank")
    idle_after = sess.idle_power()
    metas: list = [None] * world
    dist.all_gather_object(
        metas,
        {
            "gpu_name": sess.metadata["gpu_name"],
            "power_limit_w": sess.power_limit_w,
            "gpu_uuid": sess.metadata.get("gpu_uuid"),
            "idle_before": idle_before,
            "idle_after": idle_after,
        },
    )
    path = record_path(out, "collectives", when, socket.gethostname(), getattr(options, "shard", None))
    if rank == 0:
        meta = {
            **sess.metadata,
            "world_size": world,
            "ranks": metas,
            "settings": asdict(settings),
            "complete": True,
            "skipped": skipped,
        }
        ib = statistics.fmean(m["idle_before"] for m in metas)
        ia = statistics.fmean(m["idle_after"] for m in metas)
        write_record(new_record("collectives", meta, ib, ia, points), path)
        log(f"{len(points)} collective points -> {path}")
    dist.barrier()
    dist.destroy_process_group()
    return path


def main(argv: list[str] | None = None) -> int:
    from energylens.measure.session import SuiteOptions, parse_shard

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="record directory or .json file")
    ap.add_argument("--size", default="default", choices=("small", "default", "full"))
    ap.add_argument("--seconds", type=float, default=1.0, help="seconds of steady work per repetition")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget-s", type=float, default=None)
    ap.add_argument("--shard", default=None)
    args = ap.parse_args(argv)
    settings = RunSettings(target_s=args.seconds, repeats=args.repeats).validate()
    options = SuiteOptions(size=args.size, budget_s=args.budget_s, shard=parse_shard(args.shard)).validate(
        "collectives"
    )
    quiet = int(os.environ.get("RANK", "0")) != 0
    run_collectives(args.out, settings, options, log=(lambda s: None) if quiet else print)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
