"""The one rule every name registry of mmh follows (datasets, models, methods)."""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")


def check_name(kind: str, name: Any) -> str:
    """``name`` must be a non-empty string (ValueError naming the registry otherwise)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{kind} name must be a non-empty string, got {name!r}")
    return name


def register_unique(table: dict[str, Any], kind: str, name: str, entry: Any, obj: T) -> T:
    """Put ``entry`` under ``name`` in ``table``; a *different* ``obj`` under a taken name is refused (re-registering
    the same object, e.g. on a module reload, is allowed). Returns ``obj`` so decorators can return it."""
    current = table.get(name)
    if current is not None and (current[0] if isinstance(current, tuple) else current) is not obj:
        raise ValueError(f"a {kind} named {name!r} is already registered")
    table[name] = entry
    return obj
