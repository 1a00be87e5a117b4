"""Resolving a user's Python callable named in a job spec as "package.module:function": the structured-output
validator (pipeline/validators.py) and the template's value filter (pipeline/rows.py `input.
template_filter`). The job spec's checks call `load_callable` before any work, so a typo fails the job at
load; replicas call it again, where importlib's module cache makes it a lookup."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def load_callable(name: str) -> Callable[..., Any]:
    """The callable that `name` ("package.module:function", or "module:Class.method") names.

    Raises ValueError saying what is wrong: the syntax, an import that fails (with its exception), a
    missing attribute, or an attribute that is not callable."""
    module, sep, attr = name.partition(":")
    if not sep or not all(p.isidentifier() for p in module.split(".")) \
            or not all(p.isidentifier() for p in attr.split(".")):
        raise ValueError(f"{name!r} is not of the form 'module:function' (e.g. 'my_checks:valid_grid')")
    try:
        obj: Any = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any failure to import user code is a spec error
        raise ValueError(f"{name!r}: cannot import module {module!r}: {type(exc).__name__}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{name!r}: module {module!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{name!r}: {attr!r} is a {type(obj).__name__}, not a callable")
    return obj
