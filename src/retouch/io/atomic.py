"""Atomic file writes: a reader sees the old file or the whole new one, never half of it.

Write to a temporary file in the same folder, fsync it, then ``os.replace`` it over the
target (atomic on POSIX and Windows when both live on one file system). The temporary file is
created with mode 0666 and the process umask, as ``open(path, "w")`` would, so outputs are as
readable as any other file the user writes (``tempfile.mkstemp`` would make them 0600).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from retouch.errors import RetouchError

TEMP_SUFFIX = ".tmp"


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    path = Path(path)
    fd, temp_name = _create_temp(path.parent, f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as JSON; a NaN or infinity raises ``ValueError`` instead of writing a bare
    ``NaN``, which is not JSON and which other readers refuse."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def check_writable(folder: str | os.PathLike[str]) -> None:
    """Create ``folder`` and prove a file can be written there, before any work starts."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = _create_temp(folder, ".write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise RetouchError(f"cannot write to output folder {folder}: {e.strerror or e}") from e


def remove_stale_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary files that a killed writer left behind in ``folder``."""
    removed = []
    for temp in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        temp.unlink(missing_ok=True)
        removed.append(temp)
    return removed


def _create_temp(folder: Path, prefix: str) -> tuple[int, str]:
    """A new file ``folder/{prefix}{random}.tmp`` opened for writing: mode 0666 less the umask,
    applied by the kernel (``O_EXCL``: never an existing file)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        name = os.path.join(folder, f"{prefix}{secrets.token_hex(6)}{TEMP_SUFFIX}")
        try:
            return os.open(name, flags, 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name in {folder}")


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not every platform lets a folder be opened.
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
