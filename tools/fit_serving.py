"""Fit the serving coefficients and the prediction-interval table (reproducible; the fitting core is
``energylens/calibration/serving_fit.py``, whose docstring says what is fitted on what).

    python tools/fit_serving.py            # writes energylens/data/validation/serving_{coefficients,intervals}.yaml
    python tools/fit_serving.py --dry-run  # prints the fit and the held-out checks only
    python tools/fit_serving.py --floor    # also the per-(model, GPU) noise floor of the model form

Run from the repository root with the worktree first on the path (``PYTHONPATH=. python tools/...``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from energylens.calibration.serving_fit import flat, mape, run
from energylens.validate import METRICS, read_rows, shipped_dev_csv


def fmt(d: dict) -> str:
    names = {"decode_step_latency_s": "ITL", "avg_power_w": "power", "energy_per_output_token_j": "energy"}
    return "  ".join(f"{names[k]}={100 * d[k]:5.1f}%" for k in METRICS)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(shipped_dev_csv()))
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--floor", action="store_true", help="also print the per-(model, GPU) noise floor")
    ap.add_argument("--input-len", action="append", default=[], metavar="TASK=TOKENS",
                    help="override a task's assumed prompt length (sensitivity; implies nothing is written)")
    args = ap.parse_args(argv)
    overrides = {}
    for item in args.input_len:
        task, _, n = item.partition("=")
        try:
            overrides[task.strip()] = float(n)
        except ValueError:
            ap.error(f"--input-len {item!r}: expected TASK=TOKENS")
    if overrides:
        args.dry_run = True
    data_name = "energylens/data/validation/mlenergy-v3/dev.csv" \
        if Path(args.data).resolve() == shipped_dev_csv().resolve() else str(args.data)
    out = run(read_rows(args.data), data_name=data_name, floor=args.floor, input_lens=overrides or None)
    n_rows, n_ok, n_fit, n_test = out["counts"]
    print(f"rows: {n_rows}, supported: {n_ok} (FIT {n_fit}, TEST {n_test}); not GPU-paced (left out of every fit, "
          f"still scored): {len(out['screened'])}")
    print("FIT models :", ", ".join(out["fit_ids"]))
    print("TEST models:", ", ".join(out["test_ids"]))
    b, s = out["base"], out["split"]
    print("no coefficients   FIT ", fmt(b["fit"]), "| TEST", fmt(b["test"]), "| ALL", fmt(b["all"]))
    print("fitted on FIT     FIT ", fmt(s["fit"]), "| TEST", fmt(s["test"]), "| ALL", fmt(s["all"]))
    print("                  ALL GPU-paced rows", fmt(s["all_gpu_paced"]))
    print("coefficients:", flat(out["coefficients"]))
    print("routing skew profile (stage-a loss on the FIT half):",
          "  ".join(f"{k:g}:{v:.4f}" for k, v in out["skew_profile"].items()))
    print("pooled overheads on every GPU  TEST", fmt(s["test_pooled_only"]), "| ALL", fmt(s["all_pooled_only"]))
    for g, v in out["lopo"].items():
        print(f"leave-platform-out {g:9s} (pooled fit on the other GPUs)", fmt(v))
    for g, v in out["lofo"].items():
        print(f"leave-family-out   {g:9s} (fitted on the other family) ", fmt(v))
    lomo = out["lomo"]
    print("leave-one-model-out MAPE        ", fmt(lomo["mape"]))
    for title, table in (("family", out["lomo_by_family"]), ("GPU", out["lomo_by_gpu"]),
                         ("family/GPU", out["lomo_by_family_gpu"])):
        for k, v in table.items():
            print(f"  LOMO by {title:10s} {k:16s} ({v['n']:3d} rows)", fmt(v))
    for k, v in out["lomo_gpu_paced"].items():
        print(f"  LOMO GPU-paced rows {k:14s} ({v['n']:3d} rows)", fmt(v))
    for lv in ("0.5", "0.8", "0.9"):
        print(f"leave-one-model-out coverage {lv} ", fmt(lomo["coverage"][lv]))
    print("in-sample coverage 0.8          ", fmt(out["insample_coverage_80"]))
    print("worst rows (leave-one-model-out):")
    for r in out["worst_lomo"]:
        errs = "  ".join(f"{k}={r.predicted[m] / r.measured[m] - 1:+.0%}" for k, m in
                         zip(("ITL", "power", "energy"), METRICS, strict=True))
        print(f"  row {r.index:3d} {r.row['model_id']:45s} {r.row['gpu_model']:5s} {r.parallelism:8s} "
              f"{r.row['task']:14s} batch {float(r.row['avg_batch_size']):6.0f}  {errs}")
    if args.floor:
        fl = out["floor"]
        print("floor: per-(model, GPU) coefficients, in sample   ALL", fmt(mape(fl)))
        for g in sorted({r.gpu for r in fl}):
            print(f"                                       {g:9s}", fmt(mape([r for r in fl if r.gpu == g])))
        print("                        GPU-paced rows   ALL", fmt(mape([r for r in fl if not r.not_gpu_limited])))
    if args.dry_run:
        return 0
    import yaml

    root = Path(__file__).resolve().parents[1] / "energylens" / "data" / "validation"
    (root / "serving_coefficients.yaml").write_text(yaml.safe_dump(out["coefficient_doc"], sort_keys=False, width=110))
    (root / "serving_intervals.yaml").write_text(yaml.safe_dump(out["interval_doc"], sort_keys=False, width=110))
    print("wrote", root / "serving_coefficients.yaml", "and", root / "serving_intervals.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
