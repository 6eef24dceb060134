"""``energylens gpus`` and ``energylens models``: what is built in."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from energylens.cli import app


@app.command("gpus")
def gpus_command() -> None:
    """List the built-in GPU profiles with their key figures and the kind of each number."""
    from energylens.hardware import known_gpus, load_gpu

    table = Table(title="GPU profiles (energylens/data/hardware/gpus)")
    for col in ("key", "name", "bf16 TFLOP/s", "HBM TB/s", "HBM GB", "power limit W", "idle W", "pJ/byte HBM"):
        table.add_column(col)
    for key in known_gpus():
        g = load_gpu(key)
        table.add_row(key, g.name, f"{g.peak_flops('bf16') / 1e12:.0f}", f"{g.hbm_bandwidth_bytes_per_s / 1e12:.2f}",
                      f"{g.hbm_capacity_bytes / 1e9:.0f}", f"{g.power_limit_w:.0f}",
                      f"{g.idle_power_w:.0f} ({g.quantities['idle_power'].kind})",
                      f"{g.energy_per_byte_j * 1e12:.0f} ({g.quantities['energy_per_byte_hbm'].kind})")
    Console().print(table)


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
    Console().print(table)
