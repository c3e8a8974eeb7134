"""Files written whole or not at all: the plan files, CLI output files, the sandbox settings."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO


@contextlib.contextmanager
def replacing(target: Path, *, mode: int = 0o666, newline: str | None = None) -> Iterator[TextIO]:
    """A text file that replaces ``target`` atomically once the block ends without an error.

    The text goes to a new temporary file next to ``target`` (created with ``mode``, before the
    umask), is flushed to disk, then moved over ``target`` with ``os.replace``: a crash or an
    error never leaves half a file, nor truncates the previous one. On any error the temporary
    file is removed and the error propagates (``OSError`` for the callers to put in words).
    """
    temp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        raise
