"""The model file: one self-describing ``.safetensors`` file, loaded without pickle.

Tensors: ``global_delta`` (TxHxRxR... float32), ``group_delta``, ``centroids``,
``target_entropy``, ``targets`` (uint8). Metadata ``fastprotect`` holds a JSON document
with the format version, the :class:`~fastprotect.mop.MoPConfig`, the target recipe, the
encoder identity (kind, name, weights sha256), the latent reduction and the training recipe.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .fileutil import atomic_output
from .mop import MixtureOfPerturbations, MoPConfig

FORMAT = "fastprotect-mop"
FORMAT_VERSION = 1
TENSORS = ("global_delta", "group_delta", "centroids", "target_entropy", "targets")
REDUCTION = "adaptive_avg_pool2d(z, latent_grid) then flatten: C * latent_grid**2 features"


class ModelFileError(ValueError):
    """A model file is missing, corrupt, or not a fastprotect model."""


def save_model(
    mop: MixtureOfPerturbations,
    path: str | os.PathLike,
    encoder: dict[str, str],
    recipe: dict[str, Any] | None = None,
) -> Path:
    """Write ``mop`` to ``path`` atomically (temp file + rename).

    Args:
        mop: the trained mixture.
        path: destination ``.safetensors``.
        encoder: the encoder's identity (``Encoder.identity()``).
        recipe: how it was trained (loss terms, steps, data), free-form JSON.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": mop.config.to_dict(),
        "encoder": encoder,
        "reduction": REDUCTION,
        "recipe": recipe or {},
    }
    tensors = {name: getattr(mop, name).detach().cpu().contiguous().clone() for name in TENSORS}
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata={"fastprotect": json.dumps(doc)})
    return path


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON document of a model file, validated."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise ModelFileError(f"{path}: not a readable safetensors file ({e})") from e
    if "fastprotect" not in meta:
        raise ModelFileError(f"{path}: a safetensors file, but not a fastprotect model")
    doc = json.loads(meta["fastprotect"])
    if doc.get("format") != FORMAT:
        raise ModelFileError(f"{path}: unknown format {doc.get('format')!r}")
    if int(doc.get("format_version", -1)) > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: format version {doc['format_version']} is newer than this fastprotect "
            f"understands ({FORMAT_VERSION}); upgrade fastprotect"
        )
    return doc


def load_model(path: str | os.PathLike) -> tuple[MixtureOfPerturbations, dict[str, Any]]:
    """Load a model file without pickle.

    Returns:
        The mixture (on CPU, eval mode) and the file's JSON document.
    """
    doc = read_header(path)
    cfg = dict(doc["config"])
    cfg["entropy_range"] = tuple(cfg["entropy_range"])
    mop = MixtureOfPerturbations(MoPConfig(**cfg))
    try:
        tensors = load_file(str(path))
        mop.load_state_dict({k: tensors[k] for k in TENSORS}, strict=True)
    except (SafetensorError, KeyError, RuntimeError) as e:
        raise ModelFileError(f"{path}: tensors do not match the header ({e})") from e
    return mop.eval(), doc


def summary(path: str | os.PathLike) -> str:
    """A human-readable summary of a model file (``fastprotect info``)."""
    mop, doc = load_model(path)
    c = mop.config
    enc = doc["encoder"]
    g = mop.global_delta.abs().amax().item()
    k = mop.group_delta.abs().amax().item() if c.groups else 0.0
    lines = [
        f"model       {path}",
        f"format      {doc['format']} v{doc['format_version']}",
        f"encoder     {enc.get('kind')}:{enc.get('name')}",
        f"            weights sha256 {enc.get('weights_sha256')}",
        f"targets     {', '.join(c.targets)}",
        f"groups      K={c.groups} per target",
        f"eta         {c.eta:.6f} ({c.eta * 255:.2f}/255); max |global| {g * 255:.2f}/255, "
        f"max |group| {k * 255:.2f}/255",
        f"resolution  R={c.resolution}, assignment at {c.assignment_resolution}",
        f"entropy     {c.entropy_bins} bins on {list(c.entropy_range)}",
        f"reduction   {doc['reduction']} (grid {c.latent_grid}, D={c.feature_dim})",
    ]
    for key, value in doc.get("recipe", {}).items():
        lines.append(f"{'recipe.' + key:<11} {json.dumps(value)}")
    return "\n".join(lines)
