"""Pinned weight files and how they are found.

Every file the project may load is declared once as a :class:`WeightFile` (name, url,
sha256). :func:`resolve_weights` finds it, in this order:

1. an explicit path given by the caller;
2. the directory named by ``FASTPROTECT_WEIGHTS_DIR`` (``$DIR/<group>/<name>`` or ``$DIR/<name>``);
3. the user cache (``$XDG_CACHE_HOME/fastprotect`` or ``~/.cache/fastprotect``);
4. a download from the pinned URL into the user cache, with a progress bar and a sha256 check.

Nothing is ever written into the working directory.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .errors import ChecksumError, WeightsNotFoundError  # noqa: F401 (re-exported)
from .fileutil import atomic_output

ENV_WEIGHTS_DIR = "FASTPROTECT_WEIGHTS_DIR"
ENV_CACHE_DIR = "FASTPROTECT_CACHE_DIR"


@dataclass(frozen=True)
class WeightFile:
    """One pinned file: where it lives upstream and what its bytes hash to."""

    name: str
    group: str
    url: str
    sha256: str


_TAESD_COMMIT = "5cccb12dc72074a4be35680c3b108548a7c69978"
_TAESD_RAW = f"https://github.com/madebyollin/taesd/raw/{_TAESD_COMMIT}"

REGISTRY: dict[str, WeightFile] = {
    w.name: w
    for w in [
        WeightFile(
            "taef2_encoder.pth",
            "taef2",
            f"{_TAESD_RAW}/taef2_encoder.pth",
            "10a4e1021e89d7551eaf161352da8dbd0b1aa83872ae28b150c1df1ce2f147b6",
        ),
        WeightFile(
            "taef2_decoder.pth",
            "taef2",
            f"{_TAESD_RAW}/taef2_decoder.pth",
            "0a44a31e1ae59eb9dbf9359d24942fd3ef5928162c1800d97a28c61d51be0ab5",
        ),
    ]
}


def cache_dir() -> Path:
    """The user cache directory of fastprotect (created on demand by writers)."""
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "fastprotect"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _verified(path: Path, spec: WeightFile) -> Path:
    digest = sha256_file(path)
    if digest != spec.sha256:
        raise ChecksumError(
            f"{path}: sha256 {digest} does not match the pinned {spec.sha256} of {spec.name}; "
            "delete the file or point to the right one."
        )
    return path


def _download(spec: WeightFile, dest: Path) -> Path:
    with atomic_output(dest) as tmp:
        with urllib.request.urlopen(spec.url, timeout=60) as resp, open(tmp, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {spec.name}") as bar:
                while block := resp.read(1 << 16):
                    out.write(block)
                    bar.update(len(block))
        _verified(tmp, spec)
    return dest


def resolve_weights(
    name: str, path: str | os.PathLike | None = None, download: bool = True
) -> Path:
    """Find a pinned weight file, downloading it into the user cache if needed.

    Args:
        name: a key of :data:`REGISTRY`, e.g. ``"taef2_encoder.pth"``.
        path: an explicit file; used as is after its checksum is verified.
        download: allow fetching from the pinned URL.

    Returns:
        The path of a file whose sha256 matches the registry.

    Raises:
        WeightsNotFoundError: not found anywhere and the download failed or was not allowed.
        ChecksumError: a found file has the wrong bytes.
    """
    if name not in REGISTRY:
        raise KeyError(f"unknown weight file {name!r}; known: {sorted(REGISTRY)}")
    spec = REGISTRY[name]
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise WeightsNotFoundError(f"{p}: no such weight file (expected {spec.name})")
        return _verified(p, spec)
    candidates: list[Path] = []
    if os.environ.get(ENV_WEIGHTS_DIR):
        root = Path(os.environ[ENV_WEIGHTS_DIR]).expanduser()
        candidates += [root / spec.group / spec.name, root / spec.name]
    cached = cache_dir() / "weights" / spec.group / spec.name
    candidates.append(cached)
    for c in candidates:
        if c.is_file():
            return _verified(c, spec)
    if download:
        try:
            return _download(spec, cached)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            reason = f"download failed: {e}"
    else:
        reason = "downloads are disabled"
    raise WeightsNotFoundError(
        f"weight file {spec.name} not found ({reason}). Put it in ${ENV_WEIGHTS_DIR}"
        f"/{spec.group}/ (set {ENV_WEIGHTS_DIR}), or in {cached.parent}/, or download it from "
        f"{spec.url} (sha256 {spec.sha256})."
    )
