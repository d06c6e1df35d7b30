"""The config base: every frozen config dataclass gets ``replace``, ``to_dict``/``from_dict`` and a
JSON round trip from :class:`Config`.

A nested config is written as a dict of its fields plus ``"kind"`` (its class name), so a union-typed
field (a firing schedule that may be Zipf or Geometric) reads back as the right class; the top level
needs no ``"kind"``, since the caller names the class. Lists read back as tuples (configs are frozen).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, Self

_KINDS: dict[str, type[Config]] = {}


class Config:
    """Mixin for frozen config dataclasses; subclasses are registered by class name for ``"kind"``."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        _KINDS[cls.__name__] = cls

    def replace(self, **changes) -> Self:
        """A copy with ``changes`` applied (and validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values (nested configs with their ``"kind"``)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`. Unknown fields raise ``ValueError``; missing ones take defaults."""
        if not isinstance(data, Mapping):
            raise TypeError(f"data must be a dict of {cls.__name__} fields, got {type(data).__name__}")
        data = dict(data)
        kind = data.pop("kind", cls.__name__)
        if kind != cls.__name__:
            raise ValueError(f"data describes a {kind!r}, not a {cls.__name__}")
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {unknown}")
        return cls(**{key: _thaw(value) for key, value in data.items()})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Self:
        return cls.from_dict(json.loads(text))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Config):
        return {"kind": type(value).__name__, **value.to_dict()}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping) and "kind" in value:
        cls = _KINDS.get(value["kind"])
        if cls is None:
            raise ValueError(f"unknown config kind {value['kind']!r}")
        return cls.from_dict(value)
    if isinstance(value, list | tuple):
        return tuple(_thaw(v) for v in value)
    return value


__all__ = ["Config"]
