"""Helpers shared by several test files."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def preset_path(name: str) -> Path:
    """The YAML file of a named preset."""
    return REPO / "configs" / f"{name}.yaml"
