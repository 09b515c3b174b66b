"""The `gptbert` command line (see main.py for the command table)."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
