"""energylens: predict the energy (J) and latency (s) of LLM inference on one or many GPUs.

>>> import energylens
>>> p = energylens.predict("llama3-8b", "h100-sxm", batch=1, prompt_len=2048, output_len=256)
>>> p.prefill.energy_j, p.decode.energy_per_token_j  # doctest: +SKIP
"""

from energylens.errors import EnergyLensError
from energylens.hardware import known_gpus, load_gpu
from energylens.models import known_models, load_model
from energylens.parallel.layout import Layout
from energylens.predict import predict
from energylens.workload import Workload

__all__ = ["EnergyLensError", "Layout", "Workload", "known_gpus", "known_models", "load_gpu", "load_model", "predict"]
__version__ = "0.1.0"
