"""Fit the kernel-family latency and power coefficients of the H100 SXM, H200 and B200 profiles to the
shipped NVIDIA AIConfigurator kernel tables and print the held-out error tables (markdown).

    python tools/calibrate_tables.py              # fit, write the profiles, print the tables
    python tools/calibrate_tables.py --no-write   # fit and print only
    python tools/calibrate_tables.py --every 4    # every 4th row (quick look; do not write)
    python tools/calibrate_tables.py --structural # write the structural power fit instead (experiment only)
    python tools/calibrate_tables.py --structural --gaps generation_attention --no-moe-ratio   # a variant

Data: energylens/data/calibration/aiconfigurator/ (see its SOURCE.md). Formulas: energylens/cost/families.py
(latency) and energylens/cost/roofline.py + cost/power.py (energy: idle + busy power, J/FLOP, J/B, the fused-MoE J/B
ratio, power cap; decode-attention readings of runs under 1 s read through the collector's idle gap, calibration/power.py);
fitting: energylens/calibration/{kernels,power,report}.py. H100 SXM has no power table: it takes the H200 power fit.
The other built-in GPUs (A100, H100 PCIe, L40S) get busy power and J/FLOP by the rule in
energylens/calibration/derived_power.py (written after the fitted profiles).
"""

from __future__ import annotations

import argparse
import time

from energylens.calibration.derived_power import derived_profiles
from energylens.calibration.power import FAMILIES
from energylens.calibration.profiles import write_profile
from energylens.calibration.report import calibrate, markdown_table, power_for, profile_updates
from energylens.calibration.tables import GPU_TAGS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-write", action="store_true", help="do not write the GPU profiles")
    ap.add_argument("--every", type=int, default=1, help="use every N-th table row (quick look; implies --no-write)")
    ap.add_argument("--gpu", action="append", choices=sorted(GPU_TAGS), help="only this GPU (repeatable)")
    ap.add_argument("--structural", action="store_true",
                    help="write the structural power fit (replay gaps, MoE J/B ratio) instead of the shipped one: "
                         "an experiment (e.g. then python tools/fit_serving.py --dry-run), not to be committed")
    ap.add_argument("--gaps", default=",".join(FAMILIES), metavar="FAMILY[,FAMILY]",
                    help="structural fit: the families with a replay gap (" + ", ".join(FAMILIES) + "; 'none')")
    ap.add_argument("--no-moe-ratio", action="store_true", help="structural fit: no fused-MoE J/B ratio")
    args = ap.parse_args()
    gaps = tuple(f for f in args.gaps.split(",") if f and f != "none")
    if set(gaps) - set(FAMILIES):
        ap.error(f"--gaps {args.gaps!r}: expected families among {', '.join(FAMILIES)} or 'none'")
    t0 = time.perf_counter()
    gpus = tuple(args.gpu or GPU_TAGS)
    fits, powers = calibrate(gpus, max(1, args.every),
                             structural={"gap_families": gaps, "moe_ratio": not args.no_moe_ratio})
    if not args.no_write and args.every <= 1:
        for key in gpus:
            path = write_profile(key, profile_updates(fits, key, power_for(powers, key, structural=args.structural)))
            print(f"wrote {path}")
        for key, updates in ({} if args.structural else derived_profiles()).items():  # untabled GPUs, from the
            # profiles just written (not in the structural experiment: its busy share is not the derivation's)
            print(f"wrote {write_profile(key, updates)} (derived kernel power)")
    print(markdown_table(fits, powers))
    print(f"\n({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
