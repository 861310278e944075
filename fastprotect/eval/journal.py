"""The per-image rows of an ``evaluate`` run, kept on disk as each image finishes.

A long evaluation (per-image PGD on a whole split takes hours on a CPU) can be stopped at
any moment and continued later with the same command and ``--resume``: images already in
the journal are not measured again. ``evaluate`` is deterministic per image (every random
baseline and transform draws from a fixed seed), so a resumed run gives the same rows as
an uninterrupted one.

The file is JSON lines: the first line holds the run's *key* (everything that decides the
rows: images, methods, transforms, views, budget, strength settings); each further line
holds one image's rows. A resumed run must have the same key, so that rows of different
settings are never mixed. A last line cut short by a kill is dropped on resume.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..fileutil import atomic_output


class JournalError(ValueError):
    """A journal that cannot be continued: another run's, or present without ``--resume``."""


def _tail(name: str) -> str:
    """A path, normalised, without its leading ``..`` parts: ``../data/a.png`` ->
    ``/data/a.png``."""
    parts = list(Path(os.path.normpath(name)).parts)
    while parts and parts[0] in ("..", "."):
        parts.pop(0)
    return "/" + "/".join(parts).lstrip("/")


def journalled_names(files: Sequence[str], done: Mapping[str, list]) -> dict[str, str]:
    """For each of a run's images (absolute paths, as the key holds them) the name its
    rows are journalled under: the path as the run was given it, often relative to a
    working directory the journal does not record (found by its absolute form from here,
    else by the one journalled path that ends as it does). Images not journalled are
    left out.

    Raises:
        JournalError: a journalled name that could be more than one of the images.
    """
    names: dict[str, str] = {}
    wanted = set(files)
    for d in done:  # the name itself, or what it names from this working folder
        if d in wanted:
            names[d] = d
        elif (r := str(Path(d).resolve())) in wanted and r not in names:
            names[r] = d
    # what no file took: a path relative to another working folder, matched by its tail
    # (an index by file name keeps this linear)
    used = set(names.values())
    left = [d for d in done if d not in used]
    by_name: dict[str, list[str]] = {}
    for f in files:
        if f not in names:
            by_name.setdefault(Path(f).name, []).append(f)
    taken: dict[str, list[str]] = {}
    for d in left:
        tail = _tail(d)
        ends = [f for f in by_name.get(Path(d).name, []) if f.endswith(tail)]
        if len(ends) == 1:
            names[ends[0]] = d
        elif len(ends) > 1:
            taken[d] = ends
    if taken:
        d, fs = next(iter(taken.items()))
        raise JournalError(
            f"the journal's {d} could be any of {', '.join(fs)}: run this from the "
            "folder the evaluation ran in"
        )
    return names


def _normalise(key: Mapping) -> dict:
    """The key as it reads back from JSON (tuples become lists, paths strings)."""
    return json.loads(json.dumps(dict(key), default=str, sort_keys=True))


def _entries(path: Path, resuming: bool = True) -> list[dict]:
    """The journal's lines, parsed and checked (a cut-short last line dropped). Errors
    advise starting over only to a run about to resume (``resuming``), never to a reader,
    which may have been handed another file by mistake."""
    lines = path.read_text().splitlines()
    entries = []
    start_over = f"delete {path} to start over" if resuming else "name an OUT/partial.jsonl"
    for i, line in enumerate(lines):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:  # only the last line can be cut short by a kill
                damaged = "the file is damaged; " if resuming else "is it a journal? "
                raise JournalError(
                    f"{path} line {i + 1} is not JSON: {damaged}{start_over}"
                ) from None
    if not entries or not isinstance(entries[0], dict) or "key" not in entries[0]:
        raise JournalError(f"{path} is not an evaluation journal; {start_over}")
    if not all(isinstance(e, dict) and {"image", "rows"} <= e.keys() for e in entries[1:]):
        raise JournalError(f"{path} has lines that are not an image's rows; {start_over}")
    return entries


def read_journal(path: str | os.PathLike) -> tuple[dict, dict[str, list[dict]]]:
    """The key and the rows per image of the journal at ``path``, without opening it for
    writing: what a run measured so far, while it runs or after it was stopped."""
    path = Path(path)
    if not path.exists():
        raise JournalError(f"{path} does not exist")
    entries = _entries(path, resuming=False)
    return entries[0]["key"], {e["image"]: e["rows"] for e in entries[1:]}


class RunJournal:
    """Rows of finished images, appended and flushed to ``path`` one image at a time."""

    def __init__(self, path: Path, key: Mapping, done: dict[str, list[dict]]):
        self.path = Path(path)
        self.key = _normalise(key)
        self.done = done

    @classmethod
    def open(cls, path: str | os.PathLike, key: Mapping, resume: bool) -> RunJournal:
        """Start a journal at ``path``, or continue the one there when ``resume``.

        Raises :class:`JournalError` when a journal is there and ``resume`` is false (an
        interrupted run's rows are never overwritten), or when the one there was written
        with a different key.
        """
        path = Path(path)
        key = _normalise(key)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(path, overwrite=False) as tmp:
                tmp.write_text(json.dumps({"key": key}) + "\n")
            return cls(path, key, {})
        entries = _entries(path)
        done = {e["image"]: e["rows"] for e in entries[1:]}
        start_over = f"delete {path} to start over"
        if not resume:
            raise JournalError(
                f"{path} holds the rows of an interrupted run ({len(done)} images measured); "
                "add --resume to continue it with the same command, or choose another --out"
            )
        old = entries[0]["key"]
        differ = sorted(k for k in old.keys() | key.keys() if old.get(k) != key.get(k))
        if differ:
            raise JournalError(
                f"{path} was written by a run with other settings (they differ in: "
                f"{', '.join(differ)}); resume with the same command and models, choose "
                f"another --out, or {start_over}"
            )
        # rewrite without a cut-short last line, so appends start on a line of their own
        with atomic_output(path) as tmp:
            tmp.write_text("".join(json.dumps(e) + "\n" for e in entries))
        return cls(path, key, done)

    def record(self, image: str, rows: Sequence[dict]) -> None:
        """Append one image's rows and push them to disk before going on."""
        with self.path.open("a") as f:
            f.write(json.dumps({"image": image, "rows": list(rows)}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.done[image] = list(rows)
