"""harness: executable model-zoo numbers.

Suites (YAML) -> plan -> artifact -> runner -> measurement -> result -> store
-> gates and reports. Importing this package imports no framework: MindSpore,
ONNX Runtime, ais_bench and torch are imported inside the modules that wrap
them, so `import harness` works on any host.
"""

from harness.errors import UserError

__version__ = "0.1.0"

__all__ = ["UserError", "__version__"]
