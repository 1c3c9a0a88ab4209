"""Access to the compiled operators (``mmh_ext``), imported on first use with a clear error if not built."""

from __future__ import annotations

from types import ModuleType

__all__ = ["require_ext"]


def require_ext() -> ModuleType:
    """``import mmh_ext``; ImportError saying how to build it if that fails."""
    try:
        import mmh_ext
    except ImportError as exc:
        raise ImportError(
            "this method needs the mmh_ext operators (RAD/DAD); build them with "
            "`pip install --no-build-isolation -e .` at the repository root "
            f"(import failed: {exc})"
        ) from exc
    return mmh_ext
