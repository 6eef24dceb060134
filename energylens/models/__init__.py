"""Model builders: Hugging Face ``config.json`` -> einsum graph."""

from energylens.models.registry import known_models, load_model

__all__ = ["known_models", "load_model"]
