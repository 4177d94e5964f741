"""File locks that the operating system releases when their process dies, even by ``kill -9``.

A lock is ``fcntl.flock`` on a small lock file, so no stale lock ever needs a person to delete
it. Two processes writing one output folder use them to split its work (a lock per batch job)
or to refuse (one trainer per folder). Where ``fcntl`` is missing (Windows) every lock is
granted: outputs are still written atomically, but two runs on one folder are not kept apart.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

from retouch.errors import RetouchError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class FileLock:
    """An exclusive or shared lock on ``path`` (created when missing, mode 0666 less the umask).

    Example::

        lock = FileLock(out / ".job.lock")
        if lock.acquire():  # exclusive, without waiting
            try:
                ...
            finally:
                lock.release(remove=True)
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, *, shared: bool = False, blocking: bool = False) -> bool:
        """Take the lock; without ``blocking``, return False at once when another process holds it."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already locked by this object")
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
            if fcntl is not None:
                mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
                try:
                    fcntl.flock(fd, mode)
                except BlockingIOError:
                    os.close(fd)
                    return False
            # The holder before us may have removed the file as it let go: then the lock we hold
            # guards a file nobody else will open, so open the path again.
            if _same_file(fd, self.path):
                self._fd = fd
                return True
            os.close(fd)

    def share(self) -> None:
        """Turn a held exclusive lock into a shared one (others may then take shared locks too)."""
        if self._fd is not None and fcntl is not None:
            fcntl.flock(self._fd, fcntl.LOCK_SH)

    def try_exclusive(self) -> bool:
        """Turn a held shared lock into an exclusive one if no other process shares it."""
        if self._fd is None or fcntl is None:
            return self._fd is not None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def write_note(self, text: str) -> None:
        """Put ``text`` (who holds the lock) in the lock file, for the message another process shows."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, text.encode(), 0)

    def read_note(self) -> str:
        try:
            return self.path.read_text(errors="replace").strip()
        except OSError:
            return ""

    def release(self, *, remove: bool = False) -> None:
        """Let go; ``remove`` deletes the lock file first (only safe while holding it exclusively)."""
        if self._fd is None:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)  # closing the last descriptor releases the flock
        self._fd = None

    def __enter__(self) -> FileLock:
        self.acquire(blocking=True)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def lock_folder(folder: str | os.PathLike[str], name: str, what: str) -> FileLock:
    """This process's exclusive lock ``folder/name``, or a ``RetouchError`` saying that another
    ``what`` (e.g. "retouch train") holds it. Release it with ``release(remove=True)``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / name)
    if not lock.acquire():
        raise RetouchError(busy_message(lock, what))
    lock.write_note(f"pid {os.getpid()}")
    return lock


def folder_busy(folder: str | os.PathLike[str], name: str, what: str) -> str | None:
    """The message ``lock_folder`` would raise now, or None when the folder is free."""
    path = Path(folder) / name
    if not path.exists():
        return None
    lock = FileLock(path)
    if lock.acquire(shared=True):
        lock.release()
        return None
    return busy_message(lock, what)


def busy_message(lock: FileLock, what: str) -> str:
    holder = lock.read_note()
    return (
        f"another {what} is writing to {lock.path.parent}{f' ({holder})' if holder else ''}; "
        "wait for it to finish, or choose another output folder"
    )
