"""Hooks a conftest.py or a pytest plugin can implement to extend the harness.

Registered by :mod:`harness.plugin` (``pytest_addhooks``). For example, in a
``conftest.py``::

    from harness.runners.base import Runner

    class MyRunner(Runner):
        name = "my_runner"
        formats = ("onnx",)
        devices = ("cpu",)
        ...

    def pytest_harness_runner_classes():
        return [MyRunner]

    def pytest_harness_env_extra(config):
        return {"rack": "B7"}
"""

from pluggy import HookspecMarker

hookspec = HookspecMarker("pytest")


@hookspec
def pytest_harness_runner_classes():
    """Return a list of Runner subclasses; each is registered under its ``name``
    before any suite is collected, so suites may name it as a target's runner."""


@hookspec
def pytest_harness_env_extra(config):
    """Return a dict (JSON-serialisable) recorded with the run's environment
    under ``extra``, e.g. the rack or the CI job. Results from all
    implementations are merged, later ones winning."""
