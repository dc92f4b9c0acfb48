"""One run at a time in an output folder: a lock file holding its owner (process, host, start time).

Two ``run`` commands writing into one ``--out`` would race: the second would
clear or mark as failed what the first finishes.  The first takes an exclusive
``flock`` on ``DIR/run.lock`` (released by the system when the process ends,
however it ends, so a killed run leaves no stale lock); the second is refused
at once with a sentence naming the owner.  Where ``flock`` does not exist, the
file itself is the lock (created exclusively, removed at the end).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from ..errors import DeblendInputError

LOCK_NAME = "run.lock"

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


class RunFolderLock:
    """Hold ``folder/run.lock`` while a run writes into ``folder`` (a context manager).

    Parameters
    ----------
    folder : str or Path
        The run's output folder (must exist).

    Raises
    ------
    DeblendInputError
        On entering, when another run holds the folder.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> RunFolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock and write our owner record, or raise naming the run that holds it."""
        owner = {"pid": os.getpid(), "host": socket.gethostname(),
                 "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
        if fcntl is None:
            self._acquire_by_creation(owner)
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise DeblendInputError(self._busy_message()) from None
            try:  # the holder before us may have removed the file we locked: lock the one at the path
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(owner) + "\n").encode())
        self._fd = fd

    def _acquire_by_creation(self, owner: dict[str, Any]) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise DeblendInputError(self._busy_message(stale_hint=True)) from None
        os.write(fd, (json.dumps(owner) + "\n").encode())
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file, then let go of the lock."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)  # closing releases the flock
        self._fd = None

    def _busy_message(self, stale_hint: bool = False) -> str:
        try:
            owner = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            owner = {}
        who = (f" (process {owner.get('pid', '?')} on {owner.get('host', '?')}, started {owner.get('started', '?')})"
               if owner else "")  # fmt: skip
        hint = f"; if no run is going on, delete {self.path}" if stale_hint else ""
        return (f"--out {self.path.parent} is in use by another napari-deblend run{who}: "
                f"expected it to finish first, or another --out{hint}")
