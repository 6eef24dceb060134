"""How often the 80 % intervals that ``plan`` puts on TTFT and TPOT contain NVIDIA's measured values.

    python tools/silicon_interval_coverage.py [--staggered | --no-staggered]

The plan's TTFT and TPOT intervals are the inter-token-latency residual range of the ML.ENERGY development
runs (``energylens.intervals``; no measured TTFT is in that set). This script predicts every supported row
of AIConfigurator's silicon runs (``shared/reference/aiconfigurator/silicon/silicon_vllm_dev.csv``, closed
loop, as ``energylens validate`` does; validation only: nothing is fitted on these rows) and prints the
fraction of rows whose measured TTFT and TPOT fall inside ``[predicted x low, predicted x high]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REL = Path("shared") / "reference" / "aiconfigurator" / "silicon" / "silicon_vllm_dev.csv"
# the reference data sits beside the checkout (shared/) or, for a git worktree, two levels up
SILICON = next((base / REL for base in (ROOT, ROOT.parent, ROOT.parent.parent) if (base / REL).is_file()), ROOT / REL)


def coverage(path: Path, staggered: bool | None = None, level: float = 0.8) -> dict:
    from energylens.intervals import factors
    from energylens.validate_silicon import validate_silicon_csv

    v = validate_silicon_csv(path, staggered=staggered)
    inside = {"ttft_s": 0, "tpot_s": 0}
    rows = 0
    for r in v.ok:
        f = factors(r.family, r.gpu, "decode_step_latency_s", level)
        if f is None:
            continue
        rows += 1
        for m in inside:
            inside[m] += f[0] * r.predicted[m] <= r.measured[m] <= f[1] * r.predicted[m]
    return {"rows": rows, **{m: n / max(rows, 1) for m, n in inside.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(SILICON))
    ap.add_argument("--staggered", action=argparse.BooleanOptionalAction, default=None,
                    help="clients after the first wave spread over the cycle, or not (default: the assumption)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    c = coverage(Path(args.data), args.staggered)
    print(f"rows: {c['rows']}")
    print(f"80 % interval covers the measured TTFT of {100 * c['ttft_s']:.1f} % and TPOT of {100 * c['tpot_s']:.1f} % "
          "of the rows (" + {None: "the assumed run", True: "staggered clients", False: "synchronised clients"}[
              args.staggered] + ")")


if __name__ == "__main__":
    main()
