"""A small discrete-event simulation of a continuous-batching engine (the check of the load models).

Iteration by iteration, like vLLM's scheduler: every running request whose prompt is done decodes one
token; the rest of the token budget goes to unfinished prompts (oldest first), then to waiting
requests admitted FIFO while a slot is free (the last prompt admitted may be chunked). An iteration
with ``b`` running requests and ``x`` prompt tokens takes ``tau(b, x)`` seconds; a prompt's first
token comes at the end of the iteration that completes it, and a request finishes after
``output_len`` tokens. Arrivals are Poisson (open loop) or one per client, sent the moment its
previous request finishes (closed loop), so it waits for the next iteration boundary; an idle
engine starts at once."""

from __future__ import annotations

import heapq
from collections import deque

import numpy as np


def simulate(tau, input_len: int, output_len: int, slots: int, budget: int, *, rate: float | None = None,
             clients: int | None = None, start_spread_s: float = 0.0, requests: int = 4000, warmup: int = 500,
             seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    arrivals: list[tuple[float, int]] = []  # heap of (time, client)
    if rate is not None:
        t_next = 0.0
        for _ in range(requests + warmup):
            t_next += rng.exponential(1.0 / rate)
            arrivals.append((t_next, -1))
    else:
        for c in range(clients):
            arrivals.append((rng.uniform(0.0, start_spread_s) if start_spread_s else 0.0, c))
    heapq.heapify(arrivals)
    waiting: deque = deque()
    running: list[dict] = []
    done: list[dict] = []
    t = 0.0
    busy_b = busy_t = 0.0
    total = requests + warmup
    while len(done) < total:
        while arrivals and arrivals[0][0] <= t:
            ta, c = heapq.heappop(arrivals)
            waiting.append({"arrival": ta, "client": c, "prompt": input_len, "tokens": 0, "first": None})
        if not running and not waiting:
            if not arrivals:
                break
            t = arrivals[0][0]
            continue
        decoding = {id(r) for r in running if r["prompt"] == 0}
        left = budget - len(decoding)
        x = 0
        for r in running:
            if r["prompt"] > 0 and left > 0:
                take = min(r["prompt"], left)
                r["prompt"] -= take
                r["_took"] = True
                left -= take
                x += take
        while waiting and len(running) < slots and left > 0:
            r = waiting.popleft()
            take = min(r["prompt"], left)
            r["prompt"] -= take
            r["_took"] = True
            left -= take
            x += take
            running.append(r)
        dt = tau(len(running), x)
        busy_b += len(running) * dt
        busy_t += dt
        t += dt
        keep = []
        for r in running:
            if r["prompt"] == 0 and (id(r) in decoding or r.get("_took", False)):
                r["tokens"] += 1
                if r["first"] is None:
                    r["first"] = t
            r.pop("_took", None)
            if r["tokens"] >= output_len:
                r["finish"] = t
                done.append(r)
                if r["client"] >= 0:
                    heapq.heappush(arrivals, (t + 1e-12, r["client"]))
            else:
                keep.append(r)
        running = keep
    rows = done[warmup:]
    ttft = np.array([r["first"] - r["arrival"] for r in rows])
    tpot = np.array([(r["finish"] - r["first"]) / max(output_len - 1, 1) for r in rows])
    span_s = rows[-1]["finish"] - rows[0]["finish"]
    return {"ttft_s": float(ttft.mean()), "ttft_p90_s": float(np.quantile(ttft, 0.9)), "tpot_s": float(tpot.mean()),
            "tpot_p90_s": float(np.quantile(tpot, 0.9)), "running": busy_b / t, "busy_running": busy_b / busy_t,
            "requests_per_s": (len(rows) - 1) / span_s if span_s > 0 else float("nan")}


def simulate_kv(tau, input_len: int, output_len: int, kv_tokens: int, budget: int, *, clients: int,
                requests: int = 800, warmup: int = 200, seed: int = 0) -> dict:
    """Closed loop under vLLM's KV-cache admission and preemption (no request-count limit).

    Per iteration, as vLLM's scheduler: the running requests first, in admission order (a decode needs one
    KV token, an unfinished prompt a chunk of the budget); when the cache cannot hold a request's new
    tokens, the most recently admitted running request is preempted (its KV freed; it goes back to the
    front of the waiting queue and later recomputes its prompt and the tokens it already produced; its
    first token stays delivered). Then, if nothing was preempted, waiting requests are admitted in order
    while their next chunk fits the cache and the budget (head-of-line). An iteration with ``b`` requests
    scheduled and ``x`` prompt (or recomputed) tokens takes ``tau(b, x)``."""
    rng = np.random.default_rng(seed)
    arrivals = [(float(rng.uniform(0.0, 1e-6)), c) for c in range(clients)]
    heapq.heapify(arrivals)
    waiting: deque = deque()
    running: list[dict] = []
    done: list[dict] = []
    t = busy_b = 0.0
    preemptions = 0
    while len(done) < requests + warmup:
        while arrivals and arrivals[0][0] <= t:
            ta, c = heapq.heappop(arrivals)
            waiting.append({"arrival": ta, "client": c, "todo": input_len, "kv": 0, "tokens": 0, "first": None})
        if not running and not waiting:
            t = arrivals[0][0]
            continue
        used = sum(r["kv"] for r in running)
        left, x, sched, preempted, i = budget, 0, [], False, 0
        while i < len(running):
            r = running[i]
            need = min(r["todo"], left) if r["todo"] > 0 else 1
            if need <= 0:
                i += 1
                continue
            while used + need > kv_tokens and len(running) > i:
                victim = running.pop()  # the most recently admitted (may be r itself)
                used -= victim["kv"]
                victim.update(todo=input_len + victim["tokens"], kv=0)
                waiting.appendleft(victim)
                sched = [s for s in sched if s[0] is not victim]
                preempted, preemptions = True, preemptions + 1
            if i >= len(running):
                break
            sched.append((r, need))
            used += need
            left -= need
            x += need if r["todo"] > 0 else 0
            i += 1
        while not preempted and waiting and left > 0:
            r = waiting[0]
            take = min(r["todo"], left)
            if used + take > kv_tokens:
                break
            running.append(waiting.popleft())
            sched.append((r, take))
            used += take
            left -= take
            x += take
        dt = tau(len(sched), x)
        busy_b += len(sched) * dt
        t += dt
        for r, n in sched:
            r["kv"] += n
            if r["todo"] > 0:
                r["todo"] -= n
                if r["todo"] > 0:
                    continue
            r["tokens"] += 1
            if r["first"] is None:
                r["first"] = t
        keep = []
        for r in running:
            if r["tokens"] >= output_len:
                r["finish"] = t
                done.append(r)
                heapq.heappush(arrivals, (t + 1e-12, r["client"]))
            else:
                keep.append(r)
        running = keep
    rows = done[warmup:]
    span_s = rows[-1]["finish"] - rows[0]["finish"]
    return {"ttft_s": float(np.mean([r["first"] - r["arrival"] for r in rows])),
            "tpot_s": float(np.mean([(r["finish"] - r["first"]) / max(output_len - 1, 1) for r in rows])),
            "running": busy_b / t, "requests_per_s": (len(rows) - 1) / span_s,
            "preemptions_per_request": preemptions / len(done)}
