"""Model versions: the active pointer, the registry in the models bucket, and switching."""

from facerank.registry.locate import default_model, find_model_dir, load_model
from facerank.registry.pointer import ActivePointer, ModelRef
from facerank.registry.registry import ModelRegistry, SwitchInProgressError
from facerank.registry.switch import switch_model
from facerank.registry.tracker import ServingModels

__all__ = [
    "ActivePointer",
    "ModelRef",
    "ModelRegistry",
    "ServingModels",
    "SwitchInProgressError",
    "default_model",
    "find_model_dir",
    "load_model",
    "switch_model",
]
