"""Atomic outputs: complete or absent, and never overwriting unless asked."""

from __future__ import annotations

import errno
import os

import pytest

from fastprotect.fileutil import atomic_output


@pytest.mark.parametrize("hard_links", [True, False])
def test_atomic_output_never_overwrites_unless_asked(tmp_path, monkeypatch, hard_links):
    if not hard_links:  # FAT, exFAT, some network shares

        def no_links(src, dst):
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(os, "link", no_links)
    dest = tmp_path / "out" / "a.png"
    with atomic_output(dest, overwrite=False) as tmp:
        tmp.write_bytes(b"first")
    assert dest.read_bytes() == b"first"
    with pytest.raises(FileExistsError):
        with atomic_output(dest, overwrite=False) as tmp:
            tmp.write_bytes(b"second")
    assert dest.read_bytes() == b"first"
    with atomic_output(dest, overwrite=True) as tmp:
        tmp.write_bytes(b"third")
    assert dest.read_bytes() == b"third"
    with pytest.raises(RuntimeError):  # a failing writer leaves nothing behind
        with atomic_output(tmp_path / "out" / "b.png", overwrite=False) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("writer failed")
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a.png"]
