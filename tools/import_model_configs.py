"""Grow the shipped model catalogue from the aiconfigurator reference configs (run from the repo root).

``python tools/import_model_configs.py [--write]`` reads every ``<org>--<name>_config.json`` (and
``<org>--<name>_hf_quant_config.json``) under ``../shared/reference/aiconfigurator/model_configs/`` (or
``/work/shared/...``), and for each whose architecture the builders support and which is not shipped yet
copies it byte for byte to ``energylens/data/models/<org>__<name>.json`` (``.hf_quant_config.json`` beside
it). Architectures without a builder must be listed in ``energylens/data/models/unsupported.yaml`` with the
reason; an unlisted one is reported as an error. Prints the SOURCES.md rows of the files it copies.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CANDIDATES = (ROOT.parent / "shared" / "reference" / "aiconfigurator" / "model_configs",
              Path("/work/shared/reference/aiconfigurator/model_configs"))
DEST = ROOT / "energylens" / "data" / "models"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="copy the files (default: report only)")
    args = ap.parse_args(argv)
    src = next((p for p in CANDIDATES if p.is_dir()), None)
    if src is None:
        print("aiconfigurator model_configs not found", file=sys.stderr)
        return 1
    from energylens.models.builders import BUILDERS
    from energylens.models.hf_config import HFConfig
    from energylens.models.names import unsupported
    from energylens.models.registry import shipped_configs

    shipped = {k.lower() for k in shipped_configs()}
    table = unsupported()
    rows, missing = [], []
    for path in sorted(src.glob("*_config.json")):
        if path.name.endswith("_hf_quant_config.json"):
            continue
        org, _, name = path.name[: -len("_config.json")].partition("--")
        hf_id = f"{org}/{name}"
        cfg = HFConfig(json.loads(path.read_text()), str(path))
        mt = cfg.model_type
        if mt not in BUILDERS:
            if table["models"].get(hf_id) is None:
                missing.append(f"{hf_id} (model_type {mt})")
            continue
        if hf_id.lower() in shipped:
            continue
        quant = path.with_name(path.name.replace("_config.json", "_hf_quant_config.json"))
        dest = DEST / f"{org}__{name}.json"
        if args.write:
            shutil.copyfile(path, dest)
            if quant.is_file():
                shutil.copyfile(quant, DEST / f"{org}__{name}.hf_quant_config.json")
        extra = " + `hf_quant_config.json`" if quant.is_file() else ""
        rows.append(f"| `{dest.name}` | VERBATIM | aiconfigurator model_configs `{path.name}`{extra} | — | "
                    f"model_type `{mt}` |")
    print("\n".join(rows))
    if missing:
        print("no builder and not listed in unsupported.yaml: " + "; ".join(missing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
