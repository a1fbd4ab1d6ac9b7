"""Runners: one small module each, registered by name.

A runner loads an artifact on a device, runs a batch, synchronises, reports
its version and closes (:class:`harness.runners.base.Runner`), and declares
the artifact formats and device families it supports. The framework it wraps
is imported inside its own module, which is imported only when the runner is
asked for by name, so `import harness` works on hosts without MindSpore,
CANN or CUDA.

Three ways in: the built-ins below; a separate package's entry point in the
``harness.runners`` group (``name = "pkg.module:RunnerClass"``); and
:func:`register_runner` (also what the ``pytest_harness_runner_classes`` hook feeds).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
from typing import Callable

from harness.errors import UserError
from harness.runners.base import Runner

ENTRY_POINT_GROUP = "harness.runners"

# name -> "module:Class", imported lazily.
_BUILTIN = {
    "null": "harness.runners.null:NullRunner",
    "onnxruntime": "harness.runners.onnxruntime:OnnxRuntimeRunner",
    "mindspore": "harness.runners.mindspore:MindSporeRunner",
    "ais_bench": "harness.runners.ais_bench:AisBenchRunner",
    "trtexec": "harness.runners.trtexec:TrtexecRunner",
    "torch": "harness.runners.torch_runner:TorchRunner",
}
_REGISTERED: dict[str, type[Runner]] = {}


def register_runner(name: str) -> Callable[[type[Runner]], type[Runner]]:
    """Class decorator: make a Runner subclass available under `name`."""

    def deco(cls: type[Runner]) -> type[Runner]:
        cls.name = name
        _REGISTERED[name] = cls
        return cls

    return deco


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def runner_names() -> list[str]:
    return sorted(set(_BUILTIN) | set(_REGISTERED) | set(_entry_points()))


def get_runner_class(name: str) -> type[Runner]:
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in _BUILTIN:
        module, cls = _BUILTIN[name].split(":")
        return getattr(importlib.import_module(module), cls)
    eps = _entry_points()
    if name in eps:
        try:
            cls = eps[name].load()
        except Exception as exc:  # a broken plugin names itself, not a traceback
            raise UserError(f"runner {name!r} from entry point {eps[name].value!r} failed to load: {exc}",
                            fix="reinstall the package that provides it") from None
        _REGISTERED[name] = cls
        return cls
    near = difflib.get_close_matches(name, runner_names(), n=3)
    hint = f" Did you mean {', '.join(near)}?" if near else ""
    raise UserError(f"unknown runner {name!r}.{hint}", fix=f"use one of: {', '.join(runner_names())}")


def why_unavailable(cls: type[Runner], options: dict | None, device: str | None) -> str | None:
    """``cls.unavailable`` for this device: why the runner cannot run here (its runtime
    piece is absent, with the install that brings it), or None. A runner written
    before ``unavailable`` took the device is asked without it."""
    fn = getattr(cls, "unavailable", None)
    if fn is None:
        return None
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    return fn(options, device=device) if "device" in params else fn(options)


__all__ = ["Runner", "register_runner", "runner_names", "get_runner_class", "why_unavailable", "ENTRY_POINT_GROUP"]
