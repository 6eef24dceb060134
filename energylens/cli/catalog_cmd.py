"""``energylens gpus`` and ``energylens models``: what is built in."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from energylens.cli import app


@app.command("gpus")
def gpus_command() -> None:
    """List the built-in GPU profiles: key figures, then every name each answers to (all accepted by --gpu)."""
    from energylens.hardware import known_gpus, load_gpu
    from energylens.hardware.profile import gpu_names

    def tf(g, dt: str) -> str:
        return f"{g.peak_flops(dt) / 1e12:.0f}" if g.has(f"peak_flops_{dt}") else "-"

    table = Table(title="GPU profiles (energylens/data/hardware/gpus)")
    for col, just in (("key", "left"), ("TFLOP/s bf16/fp8/fp4", "right"), ("HBM GiB usable", "right"), ("TB/s", "right"),
                      ("W max/idle", "right"), ("pJ/B", "right")):
        table.add_column(col, justify=just)
    gpus = [load_gpu(k) for k in known_gpus()]
    for g in gpus:
        table.add_row(g.key, f"{tf(g, 'bf16')}/{tf(g, 'fp8')}/{tf(g, 'fp4')}", f"{g.hbm_capacity_bytes / 2**30:.1f}",
                      f"{g.hbm_bandwidth_bytes_per_s / 1e12:.2f}", f"{g.power_limit_w:.0f}/{g.idle_power_w:.0f}",
                      f"{g.energy_per_byte_j * 1e12:.0f}")
    con = Console()
    con.print(table)
    con.print("Names accepted by --gpu (case, spaces, dashes and underscores ignored):")
    for g in gpus:
        con.print(f"  {g.key}: " + "; ".join(n for n in gpu_names(g) if n != g.key), highlight=False)
    con.print("'A100' alone is ambiguous (a100-sxm-40gb or a100-sxm-80gb): name the part.", highlight=False)


@app.command("models")
def models_command(all_ids: bool = typer.Option(False, "--all", help="Also list Hugging Face ids.")) -> None:
    """List the shipped model configs (short names and Hugging Face ids)."""
    from energylens.models.registry import SHORT_NAMES, shipped_configs

    table = Table(title="Shipped models (energylens/data/models)")
    table.add_column("short name")
    table.add_column("Hugging Face id")
    for short, hf in sorted(SHORT_NAMES.items()):
        table.add_row(short, hf)
    if all_ids:
        for hf in sorted(shipped_configs()):
            table.add_row("", hf)
    con = Console()
    con.print(table)
    con.print(f"{len(shipped_configs())} shipped configs ('--all' lists them); published variants of them "
              "(-Instruct, -2507, -FP8, -AWQ, -NVFP4, ...) resolve offline, any Hugging Face id online.",
              highlight=False)
    if all_ids:
        from energylens.models.names import unsupported

        con.print("Not supported (no builder for the architecture):", highlight=False)
        for mt, why in unsupported()["architectures"].items():
            con.print(f"  {mt}: {why}", highlight=False)
