"""dgbatch's own PyTorch DiffusionGemma: config, weights, cache, encoder/decoder passes, tokenizer.

`generate`, `Engine`, `Request`, `Completion` and `GenerationParams` are re-exported lazily from the
engine modules (model/generate.py, model/engine.py, model/params.py) so importing the model stays light.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from model.cache import KVCache
from model.config import DiffusionGemmaConfig, GenerationDefaults, TextConfig
from model.tokenizer import load_tokenizer
from model.transformer import DiffusionGemma

__all__ = [
    "DiffusionGemma",
    "DiffusionGemmaConfig",
    "TextConfig",
    "GenerationDefaults",
    "KVCache",
    "load_tokenizer",
    "generate",
    "Engine",
    "Request",
    "Completion",
    "GenerationParams",
]

# name -> modules to look in, in order (the engine engineer may place them in either)
_LAZY = {
    "generate": ("model.generate",),
    "Engine": ("model.engine", "model.generate"),
    "Request": ("model.engine", "model.params", "model.generate"),
    "Completion": ("model.engine", "model.params", "model.generate"),
    "GenerationParams": ("model.params", "model.generate", "model.engine"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    for mod_name in _LAZY[name]:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name != mod_name:
                raise
            continue
        if hasattr(mod, name):
            value = getattr(mod, name)
            globals()[name] = value
            return value
    raise AttributeError(f"module 'model' has no attribute {name!r} (looked in {', '.join(_LAZY[name])})")


class _Package(types.ModuleType):
    """Keeps `model.generate` bound to the *function* model.generate.generate.

    Importing the submodule model/generate.py makes Python bind the package attribute `generate` to that
    module, which would shadow the function for a later `from model import generate`. We bind the function
    instead; the submodule itself stays importable (`from model.generate import ...`, sys.modules).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "generate" and isinstance(value, types.ModuleType) and hasattr(value, "generate"):
            value = value.generate
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
