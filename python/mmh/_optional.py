"""Optional dependencies: the extras of ``pyproject.toml`` (``tensorboard``, ``bench``, ``export``, ``flow``).

They are imported only where used (never at module load); a missing one raises :class:`MissingExtraError`, which
names the extra to install::

    try:
        import tensorboard  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("tensorboard", "tensorboard", "train.tensorboard=true") from exc
"""

from __future__ import annotations

__all__ = ["MissingExtraError"]


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message says which extra provides it."""

    def __init__(self, module: str, extra: str, needed_for: str):
        self.module, self.extra, self.needed_for = module, extra, needed_for
        super().__init__(
            f"{needed_for} needs the optional dependency {module!r}, which is not installed: "
            f"pip install 'mmh[{extra}]' (or pip install {module})",
            name=module,
        )
