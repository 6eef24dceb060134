"""Power-cap figure and table: what the DVFS model (energylens/cost/dvfs.py) predicts as the per-GPU
power limit of an H100 SXM goes from 700 W down to 250 W.

Usage::

    python tools/power_cap_figure.py [--out docs/power_cap_h100.png]

Left: decode-heavy serving (Llama-3.1-70B, 4x H100 TP4, 64 running requests, 512 prompt / 1024
output tokens; ``energylens serve --power-limit W``): energy per output token, TPOT and power per
GPU relative to the default 700 W. Right: compute-bound prefill and memory-bound decode of a static
batch (Llama-3-70B TP8, one 2048-token prompt, 128 output tokens; ``energylens predict --power-limit
W``), latency relative to 700 W, with the public reference: Splitwise's power-capped H100 rows
(repo:Mutinifni/splitwise-sim:data/perf_model.csv, ``h100-80gb-pcap``: prefill 1.30x, decode
iterations 1.00x the uncapped time for Llama-2-70B at TP 2/4/8; the cap value is not published with
the data). Prints the numbers it plots.
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

import energylens  # noqa: E402
from energylens.serving import serve  # noqa: E402

LIMITS = (700, 650, 600, 550, 500, 450, 400, 350, 300, 250)
SPLITWISE_PREFILL, SPLITWISE_DECODE = 1.30, 1.00  # h100-80gb-pcap / h100-80gb, every matched row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/power_cap_h100.png")
    args = ap.parse_args()
    kw = dict(num_gpus=4, tp=4, batch=64, input_len=512, output_len=1024)
    srv = {w: serve("llama3.1-70b", "h100-sxm", power_limit_w=None if w == 700 else float(w), **kw) for w in LIMITS}
    pk = dict(tp=8, batch=1, prompt_len=2048, output_len=128)
    pre = {w: energylens.predict("llama3-70b", "h100-sxm", power_limit_w=None if w == 700 else float(w), **pk)
           for w in LIMITS}
    b, p0 = srv[700], pre[700]
    print("limit_W  serve: J/token  TPOT_ms  W/GPU  | static: prefill_x  decode_x  prefill_J_x")
    for w in LIMITS:
        s, p = srv[w], pre[w]
        print(f"{w:7d}  {s.energy_per_output_token_j:13.4f}  {s.decode_step_latency_s * 1e3:7.2f}  "
              f"{s.avg_power_w / s.num_gpus:5.0f}  | {p.prefill.latency_s / p0.prefill.latency_s:9.3f}  "
              f"{p.decode.latency_s / p0.decode.latency_s:8.3f}  {p.prefill.energy_j / p0.prefill.energy_j:11.3f}")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.0, 3.6))
    x = list(LIMITS)
    a1.plot(x, [srv[w].energy_per_output_token_j / b.energy_per_output_token_j for w in x], "o-",
            label="energy per output token")
    a1.plot(x, [srv[w].decode_step_latency_s / b.decode_step_latency_s for w in x], "s-", label="TPOT")
    a1.plot(x, [srv[w].avg_power_w / b.avg_power_w for w in x], "^-", label="power per GPU")
    a1.set_title("decode-heavy serving: Llama-3.1-70B, 4x H100 TP4,\n64 running, 512 in / 1024 out", fontsize=8)
    a2.plot(x, [pre[w].prefill.latency_s / p0.prefill.latency_s for w in x], "o-", label="prefill latency (model)")
    a2.plot(x, [pre[w].decode.latency_s / p0.decode.latency_s for w in x], "s-", label="decode latency (model)")
    a2.plot(x, [pre[w].prefill.energy_j / p0.prefill.energy_j for w in x], "^-", label="prefill energy (model)")
    a2.axhline(SPLITWISE_PREFILL, color="C0", ls=":", label="Splitwise capped H100: prefill 1.30x")
    a2.axhline(SPLITWISE_DECODE, color="C1", ls=":", label="Splitwise capped H100: decode 1.00x")
    a2.set_title("static batch: Llama-3-70B TP8, 2048-token prompt", fontsize=8)
    for ax in (a1, a2):
        ax.set_xlabel("power limit per GPU (W)")
        ax.set_ylabel("relative to 700 W")
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5)
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
