"""energylens: predict the energy (J) and latency (s) of LLM inference on one or many GPUs.

>>> import energylens
>>> p = energylens.predict("llama3-8b", "h100-sxm", batch=1, prompt_len=2048, output_len=256)
>>> p.prefill.energy_j, p.decode.energy_per_token_j  # doctest: +SKIP

The core call takes the three specs (``energylens.specs``; a model may be a spec .yaml file,
``docs/einsum-spec.md``):

>>> p = energylens.predict("llama3-70b", energylens.Execution(tp=8, batch=16),
...                        energylens.System("h100-sxm", gpus_per_node=8, nodes=1))  # doctest: +SKIP
"""

from energylens.errors import EnergyLensError
from energylens.hardware import known_gpus, load_gpu
from energylens.models import known_models, load_model
from energylens.parallel.layout import Layout
from energylens.predict import predict
from energylens.specs import Execution, System
from energylens.workload import Workload

__all__ = ["EnergyLensError", "Execution", "Layout", "System", "Workload", "known_gpus", "known_models", "load_gpu", "load_model", "predict"]
__version__ = "0.1.0"
