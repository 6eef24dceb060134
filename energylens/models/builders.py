"""Which builder turns a config.json of each ``model_type`` into an einsum graph.

Each builder module lists its architectures in ``ARCHITECTURES`` (model_type -> builder); this
module collects them. Builder modules import nothing from the registry, so there is no cycle.
"""

from __future__ import annotations

from collections.abc import Callable

from energylens.graph.model import Model
from energylens.models import dense, gemma, moe
from energylens.models.hf_config import HFConfig

Builder = Callable[[HFConfig, str, str], Model]

BUILDERS: dict[str, Builder] = {**dense.ARCHITECTURES, **moe.ARCHITECTURES, **gemma.ARCHITECTURES}
