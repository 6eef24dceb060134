"""The three typed specs of a prediction: ``Model`` (the einsum graph, ``energylens.graph``; read from
YAML by ``model_yaml``), ``Execution`` (how it runs) and ``System`` (what it runs on)."""

# Loaded on first use (module ``__getattr__``): the YAML spec language is not needed to predict a shipped
# model, so ``import energylens.specs.execution`` does not pull it (cold start, issue 19).
_EXPORTS = {
    "Block": "energylens.graph.model",
    "Model": "energylens.graph.model",
    "Execution": "energylens.specs.execution",
    "System": "energylens.specs.system",
    "load_model_spec": "energylens.specs.model_yaml",
    "model_from_dict": "energylens.specs.model_yaml",
    "model_to_dict": "energylens.specs.model_yaml",
    "save_model_spec": "energylens.specs.model_yaml",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'energylens.specs' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = ["Block", "Execution", "Model", "System", "load_model_spec", "model_from_dict", "model_to_dict",
           "save_model_spec"]
