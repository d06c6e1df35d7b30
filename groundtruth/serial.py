"""JSON round trips for nested frozen config dataclasses.

Each dataclass is written as a dict of its fields plus ``"kind"`` (the class name), so a union-typed
field (e.g. a firing schedule that may be Zipf or Geometric) reads back as the right class.
"""

from __future__ import annotations

import dataclasses
from typing import Any

_REGISTRY: dict[str, type] = {}


def serializable(cls: type) -> type:
    """Class decorator: register a config dataclass for :func:`from_jsonable`."""
    _REGISTRY[cls.__name__] = cls
    return cls


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {"kind": type(obj).__name__}
        for f in dataclasses.fields(obj):
            out[f.name] = to_jsonable(getattr(obj, f.name))
        return out
    if isinstance(obj, tuple | list):
        return [to_jsonable(v) for v in obj]
    return obj


def from_jsonable(data: Any) -> Any:
    if isinstance(data, dict) and "kind" in data:
        cls = _REGISTRY.get(data["kind"])
        if cls is None:
            raise ValueError(f"unknown config kind {data['kind']!r}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in data.items():
            if key == "kind":
                continue
            if key not in fields:
                raise ValueError(f"{data['kind']} has no field {key!r}")
            value = from_jsonable(value)
            kwargs[key] = tuple(value) if isinstance(value, list) else value
        return cls(**kwargs)
    if isinstance(data, list):
        return [from_jsonable(v) for v in data]
    return data
