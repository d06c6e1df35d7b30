"""Sweep files that ship with the package, runnable by name: ``groundtruth sweep run synthsaebench-small``."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).parent
SHIPPED = tuple(sorted(p.stem for p in _HERE.glob("*.toml")))


def shipped_path(name_or_path: str | Path) -> Path:
    """The shipped sweep file called ``name_or_path``, or ``name_or_path`` itself when it names no shipped file."""
    if str(name_or_path) in SHIPPED:
        return _HERE / f"{name_or_path}.toml"
    return Path(name_or_path)


__all__ = ["SHIPPED", "shipped_path"]
