"""The ways in from outside: the ``groundtruth`` console script (:mod:`groundtruth_entry.cli`) and the
pytest plugin (:mod:`groundtruth_entry.pytest_plugin`).

The environment imports these on its own (pytest loads the plugin in every session, of every project), and
the names of groundtruth's layers (``analysis``, ``games``, ...) are common: a user's project may well have
an ``analysis/`` package of its own. So importing this package imports nothing else of groundtruth, nor
torch, and it sits outside the ``groundtruth`` package, whose ``__init__`` imports torch. The layers are
imported only when a groundtruth command runs or a groundtruth option is given, through
:func:`import_own`, which finds them in this installation before any folder on ``sys.path`` and says
plainly when a package of the same name was imported first.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from pathlib import Path
from types import ModuleType

PACKAGES = ("groundtruth", "games", "toymodels", "analysis")  # the layers, bottom first
_ROOT = Path(__file__).resolve().parent.parent  # the folder that holds them: site-packages or the checkout


class _OwnPackages(importlib.abc.MetaPathFinder):
    """Finds the layers in this installation, ahead of ``sys.path`` (where the current folder comes first)."""

    def find_spec(self, name: str, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        if name not in PACKAGES:
            return None  # submodules follow their package's __path__
        return importlib.machinery.PathFinder.find_spec(name, [str(_ROOT)])


def _is_own(module: ModuleType) -> bool:
    file = getattr(module, "__file__", None)  # None for a namespace package: a folder without __init__.py
    return file is not None and Path(file).resolve().parent.parent == _ROOT


def import_own(name: str) -> ModuleType:
    """Import ``name`` (a module of one of :data:`PACKAGES`, e.g. ``"analysis.cli"``) from this installation.

    From the first call on, the layers' names resolve to this installation in this process, whatever
    folders come first on ``sys.path``. A package of the same name imported before that cannot be
    replaced: then this raises an ``ImportError`` naming it and where it came from."""
    top = name.partition(".")[0]
    if top not in PACKAGES:
        raise ValueError(f"name must be a module of one of {PACKAGES}, got {name!r}")
    if not any(isinstance(finder, _OwnPackages) for finder in sys.meta_path):
        sys.meta_path.insert(0, _OwnPackages())
    try:
        module = importlib.import_module(name)
    except ImportError as err:
        foreign = _foreign()
        if not foreign:
            raise
        raise ImportError(_shadowed(name, foreign)) from err
    if not _is_own(sys.modules[top]):
        raise ImportError(_shadowed(name, _foreign()))
    return module


def _foreign() -> dict[str, ModuleType]:
    """The layers' names that this process imported from somewhere else."""
    return {n: m for n in PACKAGES if (m := sys.modules.get(n)) is not None and not _is_own(m)}


def _shadowed(name: str, foreign: dict[str, ModuleType]) -> str:
    where = ", ".join(f"{n!r} from {getattr(m, '__file__', None) or list(m.__path__)}" for n, m in foreign.items())
    return (
        f"cannot import groundtruth's {name!r}: this process imported another package of the same name first "
        f"({where}); run groundtruth where that package is not imported"
    )
