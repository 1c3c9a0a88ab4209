"""Atomic, durable writes of JSON, text, copies and torch checkpoints (a killed run never leaves a half-written file).

Every write goes to a temporary file ``.<name>.<random>.tmp`` in the target's folder, is flushed and ``fsync``-ed,
then renamed over the target (``os.replace``, atomic on POSIX), and the folder is synced. So:

* a kill at any point leaves either the previous file or the new one, never a mix;
* the temporary file is removed on every exit path Python sees (an exception, KeyboardInterrupt, SystemExit);
  only SIGKILL or a power cut can leave one behind, and :func:`remove_stale_temps` clears those;
* files follow the umask (``0o666 & ~umask``, as ``open()`` would create them), not ``mkstemp``'s 0600, so a
  run folder can be shared with a group;
* a failed write (ENOSPC, EDQUOT, EIO ...) raises :class:`OSError` naming the file, and the previous file stays.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

__all__ = [
    "atomic_torch_save",
    "write_json",
    "write_text",
    "atomic_copy",
    "read_json",
    "remove_stale_temps",
    "json_form",
    "TEMP_SUFFIX",
    "temp_file_beside",
    "fsync_file",
    "sync_dir",
]

#: Suffix of the temporary files of the atomic writes (``.<name>.<random>.tmp``).
TEMP_SUFFIX = ".tmp"


def _open_temp(path: Path) -> tuple[int, Path]:
    """A new file beside ``path``, created with mode 0o666 (the umask applies), opened for writing."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"cannot create a temporary file beside {path}")


def temp_file_beside(path: str | os.PathLike) -> Path:
    """A new empty file ``.<name>.<random>.tmp`` beside ``path`` (mode 0o666, so the umask applies), for a writer
    that needs a path rather than an open file (e.g. an exporter); the caller renames it into place or removes it."""
    fd, tmp = _open_temp(Path(path))
    os.close(fd)
    return tmp


def fsync_file(path: str | os.PathLike) -> None:
    """Flush ``path``'s content to the disk before it is renamed into place (so a crash leaves no empty file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_dir(folder: Path) -> None:
    """fsync a folder so that a rename in it survives a crash (best effort: not every system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """``write(fh)`` into a temporary file beside ``path``, fsync, rename over ``path``; the temporary file is
    removed on any failure (BaseException included) and an OSError names ``path``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _open_temp(path)
    except OSError as exc:
        raise _named(exc, path) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise _named(exc, path) from None
        raise
    sync_dir(path.parent)


def _named(exc: OSError, path: Path) -> OSError:
    """``exc`` as an OSError of the same errno whose message names ``path`` (and says the previous file stays)."""
    reason = exc.strerror or str(exc)
    if str(path) in reason:
        return exc
    out = OSError(exc.errno, f"cannot write {path}: {reason} (any previous {path.name} is left as it was)")
    return out if exc.errno is not None else OSError(f"cannot write {path}: {reason}")


def remove_stale_temps(
    folder: str | os.PathLike, names: tuple[str, ...], older_than: float | None = None
) -> list[Path]:
    """Remove the temporary files of interrupted atomic writes of ``names`` in ``folder`` (left by SIGKILL or a
    power cut; the files themselves are intact); returns what was removed.

    ``older_than`` (seconds): only temporary files not modified for that long. Without it, call this only where no
    other process writes the same files at the same time (a run's own stage folder); with it, also in a folder that
    other processes write (the shared stage cache): a live writer's temporary file is modified while it is written,
    so one untouched for minutes belongs to a killed writer."""
    removed = []
    folder = Path(folder)
    now = time.time()
    for name in names:
        for tmp in folder.glob(f".{name}.*{TEMP_SUFFIX}"):
            try:
                if older_than is not None and now - tmp.stat().st_mtime < older_than:
                    continue
                tmp.unlink()
                removed.append(tmp)
            except FileNotFoundError:
                pass
    return removed


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    _atomic_write(Path(path), lambda fh: torch.save(obj, fh))


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n", path)


def write_text(text: str, path: str | os.PathLike, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically and durably (see the module docstring); OSError naming ``path``."""
    data = text.encode(encoding)
    _atomic_write(Path(path), lambda fh: fh.write(data))


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy ``src`` over ``dst`` atomically and durably (concurrent copies of the same content are harmless);
    OSError naming ``dst`` (or FileNotFoundError naming ``src``)."""
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(errno.ENOENT, f"cannot copy {src}: no such file")

    def copy(fh: IO[bytes]) -> None:
        with open(src, "rb") as fin:
            shutil.copyfileobj(fin, fh, 1 << 20)

    _atomic_write(Path(dst), copy)


def json_form(obj: Any) -> Any:
    """``obj`` as :func:`write_json` writes it and :func:`read_json` reads it back (tuples become lists, tensors and
    arrays numbers or lists): what a value compares equal to once it has been through a JSON file."""
    return json.loads(json.dumps(obj, default=_json_default))


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; FileNotFoundError / ValueError name the file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such JSON file: {p}")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"corrupt JSON file {p}: {exc}") from exc


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")
