"""One sweep per folder at a time: a lock file naming its holder, taken over when the holder is dead."""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

LOCK = ".sweep.lock"


class SweepLocked(RuntimeError):
    """Another live sweep holds the folder; the message names it."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class SweepLock:
    """``with SweepLock(folder):`` holds ``folder/.sweep.lock`` (pid, host, start time) for the block.

    A lock whose holder is a process of this host that no longer exists is stale and taken over; a lock
    from another host is respected (its process cannot be checked from here).
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK
        self.mine = {"pid": os.getpid(), "host": socket.gethostname(),
                     "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(self.mine, fh)
        except OSError:  # a full disk: no empty lock is left behind to confuse the next sweep
            self.path.unlink(missing_ok=True)
            raise
        return True

    def holder(self) -> dict | None:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable or half-written: treated as dead
        return data if isinstance(data, dict) else {}

    def __enter__(self) -> SweepLock:
        for _ in range(3):
            if self._create():
                return self
            held = self.holder()
            if held is None:
                continue  # released meanwhile
            pid, host = held.get("pid"), held.get("host")
            if isinstance(pid, int) and (host != self.mine["host"] or _alive(pid)):
                raise SweepLocked(f"{self.path.parent} is in use by another sweep (pid {pid} on {host}, since "
                                  f"{held.get('started_utc', '?')}): wait for it to end, or choose another folder "
                                  "(sweep.name=... or hydra.sweep.dir=...)")
            self.path.unlink(missing_ok=True)  # stale: its holder is dead
        raise SweepLocked(f"could not take {self.path}: other sweeps keep taking it")

    def __exit__(self, *exc: object) -> None:
        if self.holder() == self.mine:
            self.path.unlink(missing_ok=True)
