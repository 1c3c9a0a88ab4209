"""Reading ``torch.save`` files without running code from them (checkpoints, model artifacts, pretrained weights).

:func:`safe_load` is ``torch.load(weights_only=True)`` with no extra allowed globals: only tensors, numbers, strings,
None and dict / list / tuple containers are rebuilt, so a shared run folder, cache or downloaded weight file cannot
run code. A file that asks to import anything (a planted ``__reduce__`` payload, a numpy array, any class) is refused
with :class:`UnsafeFileError` naming the file, before anything of it is built.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["UnsafeFileError", "safe_load"]


class UnsafeFileError(ValueError):
    """A checkpoint / artifact holds pickled objects other than tensors and plain containers; it was not loaded."""


def _refusal_reason(exc: BaseException) -> str:
    """The line of torch's weights-only error that says what the file asked for (e.g. ``GLOBAL posix.system``)."""
    text = str(exc)
    m = re.search(r"(?:unsupported|Unsupported global:) GLOBAL ([\w.]+)", text)
    if m:
        return f"it asks to import {m.group(1)}"
    for line in text.splitlines():
        if "Unsupported" in line or "unsupported" in line:
            return line.strip()
    return "it holds pickled objects that are not tensors or plain containers"


def safe_load(path: str | os.PathLike, what: str = "checkpoint", *, allow_legacy: bool = False) -> Any:
    """Read a ``torch.save`` file on CPU without running code from it.

    ``torch.load(weights_only=True)``: only tensors, numbers, strings, None and dict / list / tuple containers are
    rebuilt. Raises FileNotFoundError, :class:`UnsafeFileError` (the file asks for anything else: refused, nothing
    of it runs) or ValueError (truncated, empty, not a ``torch.save`` archive), each naming ``path`` and ``what``.
    ``allow_legacy``: also read the pre-zip ``torch.save`` format (PyTorch < 1.6, the format of many published
    weight files), through the same restricted unpickler; mmh's own files are always zip archives, so their
    readers leave it off and never hand a raw pickle to any unpickler.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p}")
    if not allow_legacy and not zipfile.is_zipfile(p):  # a raw pickle is never handed to any unpickler
        raise ValueError(
            f"corrupt {what} {p}: not a torch.save archive (truncated, empty or another format, "
            f"e.g. a raw pickle, which is never loaded)"
        )
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeFileError(
            f"refused to load {what} {p}: {_refusal_reason(exc)}; run folders, checkpoints and weight files "
            f"may hold only tensors and plain containers, and loading never runs code from a file"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any other failure means a damaged archive
        raise ValueError(f"corrupt or unreadable {what} {p}: {type(exc).__name__}: {exc}") from None
