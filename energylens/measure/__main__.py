"""``python -m energylens.measure measure|calibrate ...``: the commands without the main CLI."""

from __future__ import annotations

import sys

from energylens.cli.measure_cmd import measure_app
from energylens.errors import EnergyLensError


def main() -> int:
    try:
        measure_app(standalone_mode=False)
    except EnergyLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
