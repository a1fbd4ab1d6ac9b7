"""Runners: one small module each, registered by name.

A runner loads an artifact on a device, runs a batch, synchronises, reports
its version and closes. The framework it wraps is imported inside its own
module, which is imported only when the runner is asked for by name, so
`import harness` works on hosts without MindSpore, CANN or CUDA.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Callable

from harness.errors import UserError
from harness.runners.base import Runner

# name -> "module:Class". Built-ins are listed here (imported lazily);
# third-party runners call register_runner().
_BUILTIN = {
    "null": "harness.runners.null:NullRunner",
    "onnxruntime": "harness.runners.onnxruntime:OnnxRuntimeRunner",
    "mindspore": "harness.runners.mindspore:MindSporeRunner",
    "ais_bench": "harness.runners.ais_bench:AisBenchRunner",
}
_REGISTERED: dict[str, type[Runner]] = {}


def register_runner(name: str) -> Callable[[type[Runner]], type[Runner]]:
    """Class decorator: make a Runner subclass available under `name`."""

    def deco(cls: type[Runner]) -> type[Runner]:
        cls.name = name
        _REGISTERED[name] = cls
        return cls

    return deco


def runner_names() -> list[str]:
    return sorted(set(_BUILTIN) | set(_REGISTERED))


def get_runner_class(name: str) -> type[Runner]:
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _BUILTIN:
        near = difflib.get_close_matches(name, runner_names(), n=3)
        hint = f" Did you mean {', '.join(near)}?" if near else ""
        raise UserError(f"unknown runner {name!r}.{hint}",
                        fix=f"use one of: {', '.join(runner_names())}")
    module, cls = _BUILTIN[name].split(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["Runner", "register_runner", "runner_names", "get_runner_class"]
