"""The model that ships inside the package: used whenever no ``--model`` is named.

The file lives in ``fastprotect/assets/`` in its compact form (float16 perturbations, see
:mod:`fastprotect.modelfile`), is versioned by name, and is checked against its pinned
sha256 before use. How it was trained and what it was measured to do:
``docs/model-card.md``. It holds only the perturbations and the assignment; the TAEF2
encoder it needs is resolved like any other weights (:mod:`fastprotect.weights`).
"""

from __future__ import annotations

import os
from pathlib import Path

from .modelfile import ModelFileError
from .weights import ChecksumError, sha256_file

NAME = "fastprotect-taef2"
VERSION = "1"
FILE = f"{NAME}-v{VERSION}.safetensors"
SHA256 = "3dbab87c69d3e69d7dfbb53689771685888d1cd31ae824971d0e6253b8fa3865"
ASSETS = Path(__file__).parent / "assets"


def default_model() -> Path:
    """The shipped model file, verified.

    Raises:
        ModelFileError: the file is missing from this installation.
        ChecksumError: its bytes are not the released ones.
    """
    path = ASSETS / FILE
    if not path.is_file():
        raise ModelFileError(
            f"the default model {FILE} is missing from this installation ({path}); "
            "reinstall fastprotect, or name a model with --model"
        )
    digest = sha256_file(path)
    if digest != SHA256:
        raise ChecksumError(
            f"{path}: sha256 {digest} is not the released {SHA256} of {NAME} v{VERSION}; "
            "reinstall fastprotect"
        )
    return path


def resolve_model(model: str | os.PathLike | None) -> Path:
    """``model`` as a path, or the shipped model when it is ``None`` or empty."""
    return Path(model) if model else default_model()
