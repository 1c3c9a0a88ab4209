"""The method registry: a method is a named recipe ``recipe(cfg) -> list[Stage]``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..utils.registry import check_name, register_unique
from .base import Stage

__all__ = ["register_method", "get_method", "list_methods", "method_stages", "Recipe"]

Recipe = Callable[[Mapping[str, Any]], list[Stage]]
_METHODS: dict[str, tuple[Recipe, str]] = {}


def register_method(name: str, description: str = "") -> Callable[[Recipe], Recipe]:
    """Register ``recipe(cfg) -> list[Stage]`` under ``name`` (ValueError on a duplicate name)."""
    check_name("method", name)

    def deco(recipe: Recipe) -> Recipe:
        summary = description or (recipe.__doc__ or "").strip().split("\n")[0]
        return register_unique(_METHODS, "method", name, (recipe, summary), recipe)

    return deco


def get_method(name: str) -> Recipe:
    """The recipe registered as ``name`` (KeyError listing the known methods)."""
    if name not in _METHODS:
        raise KeyError(f"unknown method {name!r}; registered methods: {list_methods()}")
    return _METHODS[name][0]


def list_methods(with_descriptions: bool = False) -> list[str] | dict[str, str]:
    """Registered method names (sorted), or ``{name: one-line description}``."""
    if with_descriptions:
        return {k: _METHODS[k][1] for k in sorted(_METHODS)}
    return sorted(_METHODS)


def method_stages(cfg: Mapping[str, Any]) -> list[Stage]:
    """The stages of ``cfg["method"]``, checked: unique names, inputs refer to earlier stages."""
    stages = get_method(cfg["method"])(cfg)
    seen: set[str] = set()
    for st in stages:
        if st.name in seen:
            raise ValueError(f"method {cfg['method']!r} has two stages named {st.name!r}")
        missing = [i for i in st.inputs if i not in seen]
        if missing:
            raise ValueError(f"stage {st.name!r} of method {cfg['method']!r} takes inputs {missing} that no earlier "
                             f"stage produces")
        seen.add(st.name)
    if not stages:
        raise ValueError(f"method {cfg['method']!r} has no stages")
    return stages
