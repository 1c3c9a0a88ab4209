"""The method registry: a method is a named recipe ``recipe(cfg) -> list[Stage]`` with the defaults of the config
sections it reads.

A method declares, where it registers, the defaults of its ``loss.<section>`` entries
(``register_method("rad", defaults={"rad": RAD_DEFAULTS})``); the registry hands them down to the config schema
(:func:`mmh.config.declare_loss_defaults`), which :func:`mmh.config.load_config` builds on. The built-in methods'
sections are data of the config layer as well (:data:`mmh.config.METHOD_DEFAULTS`, where their constants come from),
so a config loads without this package imported. A section read by several methods (``loss.rad`` by every RAD
variant) is declared by each with the same values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..config import check_loss_defaults, declare_loss_defaults, loss_defaults
from ..utils.registry import check_name, register_unique
from .base import Stage

__all__ = ["register_method", "get_method", "list_methods", "method_stages", "method_defaults", "Recipe"]

Recipe = Callable[[Mapping[str, Any]], list[Stage]]
_METHODS: dict[str, tuple[Recipe, str]] = {}


def register_method(
    name: str, description: str = "", *, defaults: Mapping[str, Mapping[str, Any]] | None = None
) -> Callable[[Recipe], Recipe]:
    """Register ``recipe(cfg) -> list[Stage]`` under ``name`` (ValueError on a duplicate name).

    ``defaults``: ``{section: {key: value}}``, the defaults of the ``loss.<section>`` entries the method reads
    (a config may set exactly these keys), declared to the config schema once the recipe is registered. Checked here,
    before anything is registered (:func:`mmh.config.check_loss_defaults`): ValueError when a section is already
    declared with other values or is a framework key, TypeError when ``defaults`` is not a mapping of mappings.
    """
    check_name("method", name)
    if defaults is not None and not isinstance(defaults, Mapping):
        raise TypeError(f"method {name!r}: defaults must be a mapping {{section: {{key: value}}}}, got {defaults!r}")
    owner = f"method {name!r}"
    sections = {section: check_loss_defaults(section, values, owner) for section, values in (defaults or {}).items()}

    def deco(recipe: Recipe) -> Recipe:
        summary = description or (recipe.__doc__ or "").strip().split("\n")[0]
        register_unique(_METHODS, "method", name, (recipe, summary), recipe)
        for section, values in sections.items():
            declare_loss_defaults(section, values, owner)
        return recipe

    return deco


def method_defaults() -> dict[str, dict[str, Any]]:
    """``{section: defaults}`` of every ``loss.<section>`` of the config schema (a copy; the same as
    :func:`mmh.config.loss_defaults`): the built-in methods' and those declared by registered methods."""
    return loss_defaults()


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
            raise ValueError(
                f"stage {st.name!r} of method {cfg['method']!r} takes inputs {missing} that no earlier stage produces"
            )
        seen.add(st.name)
    if not stages:
        raise ValueError(f"method {cfg['method']!r} has no stages")
    return stages
