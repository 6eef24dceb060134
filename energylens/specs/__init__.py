"""The three typed specs of a prediction: ``Model`` (the einsum graph, ``energylens.graph``; read from
YAML by ``model_yaml``), ``Execution`` (how it runs) and ``System`` (what it runs on)."""

from energylens.graph.model import Block, Model
from energylens.specs.execution import Execution
from energylens.specs.model_yaml import load_model_spec, model_from_dict, model_to_dict, save_model_spec
from energylens.specs.system import System

__all__ = ["Block", "Execution", "Model", "System", "load_model_spec", "model_from_dict", "model_to_dict",
           "save_model_spec"]
