"""Atomic file output: a file appears complete at its name, or not at all."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_output(
    dest: str | os.PathLike, overwrite: bool = True, keep_suffix: bool = False
) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success move it to ``dest``.

    The temporary file gets the usual permissions (``0666 & ~umask``), is removed on any
    error, and never leaves a partial ``dest`` (where the file system has no hard links
    and ``overwrite`` is ``False``, a crash at the last step can leave it empty).

    Args:
        dest: the final file.
        overwrite: replace an existing ``dest``; ``False`` fails with ``FileExistsError``
            instead (the check and the move are one atomic ``link`` where the file system
            has hard links; else an exclusive create, then a rename).
        keep_suffix: end the temporary name in ``dest``'s suffix too (for writers that
            insist on one).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".part" + (dest.suffix if keep_suffix else "")
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield Path(tmp)
        # again: some writers (safetensors) replace the file and leave it private (0600)
        os.chmod(tmp, 0o666 & ~umask)
        if overwrite:
            os.replace(tmp, dest)
        else:
            _move_without_overwriting(Path(tmp), dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _move_without_overwriting(tmp: Path, dest: Path) -> None:
    """Move ``tmp`` to ``dest`` unless ``dest`` exists (``FileExistsError``): one atomic
    hard link where the file system has them; where it has none (FAT, exFAT, some network
    shares) ``dest`` is claimed by an exclusive create and then replaced, so it is empty for
    a moment but never overwritten."""
    try:
        os.link(tmp, dest)
        return
    except FileExistsError:
        raise
    except OSError:  # no hard links here
        pass
    fd = os.open(dest, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # FileExistsError if taken
    os.close(fd)
    try:
        os.replace(tmp, dest)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


def drop_empty_leftover(path: Path) -> None:
    """Remove ``path`` if it is an empty file: no finished output, but what a crash can leave
    where the file system has no hard links (:func:`atomic_output`); it is redone, never
    skipped as done."""
    if path.is_file() and path.stat().st_size == 0:
        path.unlink()


def next_free(path: str | os.PathLike) -> Path:
    """``path`` if it does not exist, else the first free ``stem-N.suffix`` beside it."""
    path = Path(path)
    stem, n = path.stem, 1
    while path.exists():
        path = path.with_name(f"{stem}-{n}{path.suffix}")
        n += 1
    return path


def is_within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (both resolved: links and ``..``)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents
