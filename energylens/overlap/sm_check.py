"""Check (not fit) the SM-split compute model against MuxServe's measured latency vs share of SMs.

MuxServe (hao-ai-lab/MuxServe, ``examples/placement/llama.json``; ``/work/shared/reference/
muxserve-sm-latency``) measured one LLaMA forward pass (prefill of ``batch x seq_len`` tokens, or one
decode step over a ``batch x seq_len`` KV cache) on A100-80GB with NVIDIA MPS limiting the process to
30-100 % of the SMs, at tensor parallelism 1-8. energylens predicts the same iterations with the
process on :func:`energylens.overlap.cost.gpu_partition` (``round(108 x pct / 100)`` SMs) and the
comparison is on the *slowdown* ``latency(pct) / latency(100 %)`` (MuxServe's runtime overheads and
the core's absolute accuracy cancel). Nothing here is fitted: the numbers are what the core predicts.

Run ``python -m energylens.overlap.sm_check [CSV]``.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from energylens.cost.phase import evaluate_phase
from energylens.errors import SpecError
from energylens.hardware import load_gpu
from energylens.models.dense import build_dense
from energylens.models.hf_config import HFConfig
from energylens.overlap.cost import gpu_partition
from energylens.parallel.layout import Layout
from energylens.program import build_program

DEFAULT_CSV = Path(__file__).resolve().parents[1] / "data" / "validation" / "muxserve" / "muxserve_llama_a100_sm_latency.csv"

# LLaMA-1 shapes (Touvron et al. 2023, arXiv 2302.13971, Table 2; FFN widths as in the released
# checkpoints' params, e.g. huggyllama/llama-*/config.json): hidden, FFN, heads, layers. fp16, vocab 32000.
LLAMA1: dict[str, tuple[int, int, int, int]] = {
    "llama-7b": (4096, 11008, 32, 32),
    "llama-13b": (5120, 13824, 40, 40),
    "llama-30b": (6656, 17920, 52, 60),
    "llama-65b": (8192, 22016, 64, 80),
}


def llama1_model(name: str):
    d, f, h, n = LLAMA1[name]
    cfg = {"model_type": "llama", "hidden_size": d, "intermediate_size": f, "num_attention_heads": h,
           "num_key_value_heads": h, "num_hidden_layers": n, "vocab_size": 32000, "torch_dtype": "float16"}
    return build_dense(HFConfig(cfg, f"LLaMA-1 {name} (arXiv 2302.13971)"), name)


@dataclass(frozen=True)
class SMCheck:
    """Rows of the comparison (arrays) and the summary errors."""

    model: np.ndarray
    tp: np.ndarray
    sm_percent: np.ndarray
    phase: np.ndarray
    batch: np.ndarray
    seq_len: np.ndarray
    measured_s: np.ndarray
    predicted_s: np.ndarray
    measured_slowdown: np.ndarray  # latency / latency at 100 % SMs
    predicted_slowdown: np.ndarray

    def mape(self, phase: str | None = None, min_percent: int = 0) -> float:
        """Mean absolute percentage error of the predicted slowdown (rows below 100 % SMs)."""
        sel = (self.sm_percent < 100) & (self.sm_percent >= min_percent)
        if phase is not None:
            sel &= self.phase == phase
        err = np.abs(self.predicted_slowdown[sel] / self.measured_slowdown[sel] - 1.0)
        return float(np.mean(err)) if err.size else float("nan")

    def bias(self, phase: str | None = None, min_percent: int = 0) -> float:
        """Mean signed error of the slowdown (positive: the model predicts too much slowdown)."""
        sel = (self.sm_percent < 100) & (self.sm_percent >= min_percent)
        if phase is not None:
            sel &= self.phase == phase
        return float(np.mean(self.predicted_slowdown[sel] / self.measured_slowdown[sel] - 1.0))

    def summary(self) -> list[dict]:
        out = []
        for phase in ("prefill", "decode"):
            for lo in (30, 70):
                sel = (self.phase == phase) & (self.sm_percent < 100) & (self.sm_percent >= lo)
                out.append({"phase": phase, "sm_percent": f">= {lo} %", "rows": int(np.sum(sel)),
                            "mape": self.mape(phase, lo), "bias": self.bias(phase, lo)})
        return out


def load_rows(path: str | Path = DEFAULT_CSV) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise SpecError("muxserve csv", str(p), "the MuxServe SM-latency CSV (shared/reference/muxserve-sm-latency)")
    with p.open() as fh:
        return list(csv.DictReader(fh))


def run_check(path: str | Path = DEFAULT_CSV, gpu: str = "a100-sxm-80gb", models: tuple[str, ...] | None = None) -> SMCheck:
    """Predict every MuxServe row (vectorised over batch x seq_len per model, TP and SM share)."""
    g = load_gpu(gpu)
    rows = load_rows(path)
    cols: dict[str, list] = {k: [] for k in ("model", "tp", "pct", "phase", "batch", "seq", "meas", "pred")}
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        if models is None or r["model"] in models:
            groups.setdefault((r["model"], int(r["num_gpus"])), []).append(r)
    for (name, tp), grp in sorted(groups.items()):
        model = llama1_model(name)
        layout = Layout(tp=tp)
        program = build_program(model, layout)
        keys = sorted({(int(r["batch_size"]), int(r["seq_len"])) for r in grp})
        b = np.array([k[0] for k in keys], dtype=float)
        s = np.array([k[1] for k in keys], dtype=float)
        index = {k: i for i, k in enumerate(keys)}
        pred: dict[tuple[int, str], np.ndarray] = {}
        for pct in sorted({int(r["sm_percent"]) for r in grp}):
            part = gpu_partition(g, max(1, round(g.sm_count * pct / 100)))
            pre = evaluate_phase(model, part, layout, program, {"b": b, "t": s, "s": s}, np.asarray(1.0),
                                 decode=False)
            dec = evaluate_phase(model, part, layout, program, {"b": b, "t": np.ones_like(s), "s": s + 1.0},
                                 np.asarray(1.0), decode=False)
            pred[(pct, "prefill")] = np.broadcast_to(pre.latency_s, b.shape)
            pred[(pct, "decode")] = np.broadcast_to(dec.latency_s, b.shape)
        base = {(int(r["batch_size"]), int(r["seq_len"])): r for r in grp if int(r["sm_percent"]) == 100}
        for r in grp:
            key = (int(r["batch_size"]), int(r["seq_len"]))
            if key not in base:
                continue
            pct = int(r["sm_percent"])
            for phase, col in (("prefill", "prefill_ms"), ("decode", "decoding_ms")):
                meas, meas100 = float(r[col]), float(base[key][col])
                if not (meas > 0 and meas100 > 0):  # MuxServe left some cells empty (0 or negative zero)
                    continue
                cols["model"].append(name)
                cols["tp"].append(tp)
                cols["pct"].append(pct)
                cols["phase"].append(phase)
                cols["batch"].append(key[0])
                cols["seq"].append(key[1])
                cols["meas"].append((meas, meas100))
                cols["pred"].append((float(pred[(pct, phase)][index[key]]), float(pred[(100, phase)][index[key]])))
    meas = np.array(cols["meas"]) * 1e-3
    pr = np.array(cols["pred"])
    return SMCheck(np.array(cols["model"]), np.array(cols["tp"]), np.array(cols["pct"]), np.array(cols["phase"]),
                   np.array(cols["batch"]), np.array(cols["seq"]), meas[:, 0], pr[:, 0], meas[:, 0] / meas[:, 1],
                   pr[:, 0] / pr[:, 1])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chk = run_check(argv[0] if argv else DEFAULT_CSV)
    print(f"MuxServe A100-80GB, {len(chk.phase)} rows (slowdown = latency / latency at 100 % SMs)")
    print(f"{'phase':8s} {'SM share':10s} {'rows':>5s} {'MAPE':>7s} {'bias':>7s}")
    for s in chk.summary():
        print(f"{s['phase']:8s} {s['sm_percent']:10s} {s['rows']:5d} {s['mape']:7.1%} {s['bias']:+7.1%}")
    print("mean slowdown by SM share (measured / predicted), prefill | decode:")
    for pct in sorted(set(chk.sm_percent.tolist())):
        parts = []
        for phase in ("prefill", "decode"):
            sel = (chk.sm_percent == pct) & (chk.phase == phase)
            parts.append(f"{np.mean(chk.measured_slowdown[sel]):.2f} / {np.mean(chk.predicted_slowdown[sel]):.2f}")
        print(f"  {pct:3d} %: {parts[0]} | {parts[1]}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
