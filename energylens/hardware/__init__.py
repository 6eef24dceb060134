"""Hardware profiles (GPUs, links) loaded from sourced YAML data files."""

from energylens.hardware.profile import GPU, Quantity, known_gpus, load_gpu

__all__ = ["GPU", "Quantity", "known_gpus", "load_gpu"]
