"""Files a daemon finds in its scratch dir when it starts (`prepare` of the start fixture)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

__all__ = ["leave_dump"]


def leave_dump(data: bytes | str) -> Callable[[Path], None]:
    """A `prepare` for start(): `data` as the DB dump in the daemon's run dir
    (what --restart restores, or what `persistent = true` reads back)."""
    def prepare(scratch: Path) -> None:
        run = scratch / "run" / "xenstored"
        run.mkdir(parents=True, exist_ok=True)
        path = run / "db"
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data, encoding="latin-1")
    return prepare
