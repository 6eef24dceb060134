"""Record (``python tests/regression/record.py``) or compare the regression set.

A fixed set of configurations — dense / MoE, TP / PP / EP / DP / SP, overlap, serving, a sweep —
whose headline figures (per phase totals, per-op energies, serving figures) were recorded from the
code before the redesign. ``test_regression.py`` checks the current code reproduces every figure to
1e-9 relative. A deliberate behaviour change (a documented bug fix, a recalibrated profile)
re-records the file in its own commit and says why in the commit message.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).parent
FIXTURE = HERE / "predictions.json"

PREDICT_CASES = [
    dict(model="llama3-8b", gpu="h100-sxm", batch=1, prompt_len=2048, output_len=256),
    dict(model="llama3-70b", gpu="h100-sxm", tp=8, batch=16, prompt_len=2048, output_len=256),
    dict(model="llama3-70b", gpu="h100-sxm", tp=8, sp=True, batch=4, prompt_len=4096, output_len=128),
    dict(model="llama3-70b", gpu="h200", tp=4, pp=2, batch=16, prompt_len=1024, output_len=128),
    dict(model="llama3-70b", gpu="h100-sxm", tp=2, dp=2, batch=8, prompt_len=512, output_len=64),
    dict(model="qwen3-30b-a3b", gpu="h100-sxm", tp=1, dp=8, ep=8, batch=64, prompt_len=512, output_len=64),
    dict(model="qwen3-235b-a22b", gpu="h100-sxm", tp=8, ep=8, batch=32, prompt_len=1024, output_len=128,
         routing="zipf:1.2"),
    dict(model="llama3.1-405b", gpu="h100-sxm", tp=16, gpus_per_node=8, batch=8, prompt_len=1024, output_len=64),
    dict(model="llama3-8b", gpu="h100-sxm", batch=8, prompt_len=1024, output_len=128, dtype="fp8"),
    dict(model="openai/gpt-oss-20b", gpu="h100-sxm", batch=4, prompt_len=1024, output_len=128),
]

SERVE_CASES = [
    dict(model="meta-llama/Llama-3.1-70B-Instruct", gpu="h100-sxm", num_gpus=4, tp=4, batch=64, input_len=512,
         output_len=1024),
    dict(model="qwen3-30b-a3b", gpu="b200", num_gpus=2, tp=1, dp=2, ep=2, batch=128, input_len=1000,
         output_len=500),
    dict(model="llama3-8b", gpu="h100-sxm", batch=16, input_len=2000, output_len=300),
]

OVERLAP_CASES = [
    dict(model="llama3.1-70b", gpu="h100-sxm", tp=8, batch=1, prompt_len=16384, output_len=16, comm_sms=24,
         chunks=4),
]

SWEEP_SPEC = dict(models=["llama3-70b"], gpus=["h100-sxm"], tp=[2, 4, 8], pp=[1, 2], dp=[1, 2], batch=[1, 8, 64],
                  prompt_len=[512, 2048], output_len=[128])


def _phase(p) -> dict:
    return {"energy_j": p.energy_j, "latency_s": p.latency_s,
            "ops": {o.name: [o.energy_j, o.latency_s, o.flops, o.bytes] for o in p.ops},
            "collectives": {c.name: [c.energy_j, c.latency_s] for c in p.collectives},
            "per_gpu_energy_j": [g.energy_j for g in p.per_gpu]}


def compute() -> dict:
    import energylens
    from energylens.overlap import OverlapPlan, predict_with_overlap
    from energylens.serving import serve

    out: dict = {"predict": [], "serve": [], "overlap": []}
    for case in PREDICT_CASES:
        p = energylens.predict(**case)
        out["predict"].append({"case": case, "prefill": _phase(p.prefill), "decode": _phase(p.decode),
                               "memory_required_bytes": p.memory.required_bytes})
    for case in SERVE_CASES:
        r = serve(**case)
        out["serve"].append({"case": case, "figures": {k: getattr(r, k) for k in (
            "decode_step_latency_s", "mean_iteration_s", "avg_power_w", "energy_per_output_token_j",
            "output_tokens_per_s")}})
    for case in OVERLAP_CASES:
        c = dict(case)
        plan = OverlapPlan(comm_sms=c.pop("comm_sms"), chunks=c.pop("chunks"))
        r = predict_with_overlap(plans=plan, **c)
        out["overlap"].append({"case": case, "prefill": [r.prefill.energy_j, r.prefill.latency_s],
                               "decode": [r.decode.energy_j, r.decode.latency_s]})
    from energylens.sweep import SweepSpec, run_sweep

    spec = SweepSpec.from_dict(SWEEP_SPEC)
    table = run_sweep(spec)
    cols = ("tp", "pp", "dp", "batch", "prompt_len", "output_len", "prefill_energy_j", "decode_energy_j",
            "prefill_latency_s", "decode_latency_s")
    out["sweep"] = {c: [float(v) for v in table.columns[c]] for c in cols if c in table.columns}
    return out


if __name__ == "__main__":
    # record from this checkout's energylens, not whichever copy is installed
    sys.path.insert(0, str(HERE.parent.parent))
    FIXTURE.write_text(json.dumps(compute(), indent=1, sort_keys=True) + "\n")
    import energylens

    print(f"wrote {FIXTURE} from {Path(energylens.__file__).parent}", file=sys.stderr)
