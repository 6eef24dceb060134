"""Which builder turns a config.json of each ``model_type`` into an einsum graph.

Each builder module lists its architectures in ``ARCHITECTURES`` (model_type -> builder); this
module collects them. Builder modules import nothing from the registry, so there is no cycle.
"""

from __future__ import annotations

from collections.abc import Callable

from energylens.graph.model import Model
from energylens.models.dense import ARCHITECTURES as DENSE
from energylens.models.gemma import ARCHITECTURES as GEMMA
from energylens.models.hf_config import HFConfig
from energylens.models.moe import ARCHITECTURES as MOE

Builder = Callable[[HFConfig, str, str], Model]

BUILDERS: dict[str, Builder] = {**DENSE, **MOE, **GEMMA}
