"""The model that ships inside the package: used whenever no ``--model`` is named.

The file lives in ``fastprotect/assets/`` in its compact form (float16 perturbations, see
:mod:`fastprotect.modelfile`), is versioned by name, and is checked against its pinned
sha256 before use. Earlier releases stay in the package and are named like a model file:
``--model fastprotect-taef2-v1``. How it was trained and what it was measured to do:
``docs/model-card.md``. It holds only the perturbations and the assignment; the TAEF2
encoder it needs is resolved like any other weights (:mod:`fastprotect.weights`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .modelfile import ModelFileError
from .weights import ChecksumError, sha256_file

NAME = "fastprotect-taef2"
#: every released version that ships in the package, with the sha256 of its file; a
#: released file is never replaced in place, a new release gets a new version
RELEASES = {
    "1": "3dbab87c69d3e69d7dfbb53689771685888d1cd31ae824971d0e6253b8fa3865",
    "2": "8c2930d997b591a9a45fb35cee9ccfcbd787316f6e73c6112a80ddd6b434b434",
}
#: the default: used whenever no model is named
VERSION = "2"


def file_name(version: str) -> str:
    """The packaged file name of release ``version``."""
    return f"{NAME}-v{version}.safetensors"


FILE = file_name(VERSION)
SHA256 = RELEASES[VERSION]
ASSETS = Path(__file__).parent / "assets"


def default_model() -> Path:
    """The shipped default model file, verified.

    Raises:
        ModelFileError: the file is missing from this installation.
        ChecksumError: its bytes are not the released ones.
    """
    return released_model(VERSION)


def released_model(version: str) -> Path:
    """The packaged file of release ``version`` (``"1"``, ``"2"``, ...), verified.

    Raises:
        ModelFileError: no such release, or its file is missing from this installation.
        ChecksumError: its bytes are not the released ones.
    """
    if version not in RELEASES:
        known = ", ".join(f"{NAME}-v{v}" for v in RELEASES)
        raise ModelFileError(f"{NAME} has no release v{version}; the releases are {known}")
    file = file_name(version)
    path = ASSETS / file
    if not path.is_file():
        raise ModelFileError(
            f"the model {file} is missing from this installation ({path}); "
            "reinstall fastprotect, or name a model with --model"
        )
    digest = sha256_file(path)
    if digest != RELEASES[version]:
        raise ChecksumError(
            f"{path}: sha256 {digest} is not the released {RELEASES[version]} of {NAME} "
            f"v{version}; reinstall fastprotect"
        )
    return path


def resolve_model(model: str | os.PathLike | None) -> Path:
    """``model`` as a path; the shipped default when it is ``None`` or empty; a packaged
    release when it is a release's bare name (``fastprotect-taef2-v1``, or its file name
    ``fastprotect-taef2-v1.safetensors``) and no file of that name is in the working
    directory."""
    if not model:
        return default_model()
    path = Path(model)
    name = re.fullmatch(rf"{re.escape(NAME)}-v(\d+)(\.safetensors)?", str(model))
    if name and len(path.parts) == 1 and not path.is_file():
        return released_model(name.group(1))
    return path
