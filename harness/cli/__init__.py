"""The `harness` command: one module per command group."""

from harness.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
