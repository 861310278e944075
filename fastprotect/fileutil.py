"""Atomic file output: a file appears complete at its name, or not at all."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_output(dest: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success move it to ``dest``.

    The temporary file gets the usual permissions (``0666 & ~umask``), is removed on any
    error, and never leaves a partial ``dest``.

    Args:
        dest: the final file.
        overwrite: replace an existing ``dest``; ``False`` fails with ``FileExistsError``
            instead (the check and the move are one atomic ``link``).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield Path(tmp)
        if overwrite:
            os.replace(tmp, dest)
        else:
            os.link(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
