"""The model file: one self-describing ``.safetensors`` file, loaded without pickle.

Tensors: ``global_delta`` (Tx3xRxR), ``group_delta`` (TxKx3xRxR), ``centroids``,
``target_entropy`` (float32), ``targets`` (uint8). The perturbations are float32, or float16
in the compact form the shipped model uses (``storage``; they are in ``[-eta, eta]``, where
float16 is exact to about 1e-5, far below one 8-bit level). Metadata ``fastprotect`` holds a
JSON document with the format version, the :class:`~fastprotect.mop.MoPConfig`, the target
recipe, the encoder identity (kind, name, weights sha256), the latent reduction, the
training recipe and, for a released model, its name and version.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import ModelFileError  # noqa: F401 (re-exported)
from .fileutil import atomic_output
from .mop import MixtureOfPerturbations, MoPConfig

FORMAT = "fastprotect-mop"
#: the newest format this code reads: v2 adds ``config.view`` (periodic canvases at the
#: attacker's scale), v3 ``config.isoluminant``, v4 ``config.luma_eta`` (and
#: ``luma_highpass``), v5 ``config.publish_cap``; each model is written in the oldest
#: version that holds it (:func:`format_version`)
FORMAT_VERSION = 5
TENSORS = ("global_delta", "group_delta", "centroids", "target_entropy", "targets")
#: tensors stored as float16 in the compact form (the centroids stay float32, so the
#: nearest-centroid choice is exactly the full model's)
COMPACT = ("global_delta", "group_delta")
STORAGES = ("float32", "float16")
#: the lowest strength of the adaptive map for models that do not name their own
DEFAULT_S_MIN = 0.5
REDUCTION = "adaptive_avg_pool2d(z, latent_grid) then flatten: C * latent_grid**2 features"


def _colour_line(c: MoPConfig) -> str:
    if not c.isoluminant:
        return "colour      luma and colour"
    if not c.luma_eta:
        return "colour      isoluminant: colour only, never luma (grey images almost unprotected)"
    highpass = f", high-passed (sigma {c.luma_highpass:g} px)" if c.luma_highpass else ""
    return (
        f"colour      colour first: luma changes at most {c.luma_eta * 255:.2f}/255"
        f"{highpass} (grey images get only that)"
    )


def format_version(config: MoPConfig) -> int:
    """The oldest format that can hold ``config``, so older readers refuse only what they
    would get wrong: 1 stretched perturbations, 2 view canvases, 3 isoluminant ones, 4 ones
    with a bounded luma part, 5 canvases whose published enlargement is capped."""
    if config.publish_cap:
        return 5
    if config.luma_eta:
        return 4
    if config.isoluminant:
        return 3
    return 2 if config.view else 1


def save_model(
    mop: MixtureOfPerturbations,
    path: str | os.PathLike,
    encoder: dict[str, str],
    recipe: dict[str, Any] | None = None,
    storage: str = "float32",
    release: dict[str, str] | None = None,
    inference: dict[str, Any] | None = None,
) -> Path:
    """Write ``mop`` to ``path`` atomically (temp file + rename).

    Args:
        mop: the trained mixture.
        path: destination ``.safetensors``.
        encoder: the encoder's identity (``Encoder.identity()``).
        recipe: how it was trained (loss terms, steps, data), free-form JSON.
        storage: ``float32``, or ``float16`` for the perturbations (half the size).
        release: ``{"name": ..., "version": ...}`` of a released model.
        inference: the model's own inference defaults (``{"s_min": ...}``), used where a
            command is not told otherwise.
    """
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": FORMAT,
        "format_version": format_version(mop.config),
        "config": mop.config.to_dict(),
        "encoder": encoder,
        "reduction": REDUCTION,
        "recipe": recipe or {},
        "storage": storage,
    }
    if release:
        doc["release"] = dict(release)
    if inference:
        doc["inference"] = dict(inference)
    tensors = {name: getattr(mop, name).detach().cpu().contiguous().clone() for name in TENSORS}
    if storage == "float16":
        tensors.update({name: tensors[name].half() for name in COMPACT})
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
    try:
        doc = json.loads(meta["fastprotect"])
        version = int(doc.get("format_version", -1))
    except (ValueError, TypeError, AttributeError) as e:  # not JSON, not an object, no int
        raise ModelFileError(f"{path}: its fastprotect metadata is damaged ({e})") from e
    if doc.get("format") != FORMAT:
        raise ModelFileError(f"{path}: unknown format {doc.get('format')!r}")
    if version > FORMAT_VERSION:
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
    try:
        config = MoPConfig(**cfg)
    except TypeError as e:  # a setting this code does not know
        raise ModelFileError(f"{path}: unknown model settings ({e}); upgrade fastprotect") from e
    except ValueError as e:  # settings out of range
        raise ModelFileError(f"{path}: invalid model settings: {e}") from e
    mop = MixtureOfPerturbations(config)
    try:
        tensors = load_file(str(path))
        state = {k: tensors[k] for k in TENSORS}
        for k in COMPACT:
            if state[k].dtype not in (torch.float16, torch.float32):
                raise RuntimeError(f"{k} is {state[k].dtype}, expected float16 or float32")
            state[k] = state[k].float()
        mop.load_state_dict(state, strict=True)
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
    release = doc.get("release")
    lines = [
        f"model       {path}",
        f"release     {release['name']} v{release['version']}" if release else "release     -",
        f"format      {doc['format']} v{doc['format_version']}, "
        f"perturbations {doc.get('storage', 'float32')}",
        f"encoder     {enc.get('kind')}:{enc.get('name')}",
        f"            weights sha256 {enc.get('weights_sha256')}",
        f"targets     {', '.join(c.targets)}",
        f"groups      K={c.groups} per target",
        f"eta         {c.eta:.6f} ({c.eta * 255:.2f}/255); max |global| {g * 255:.2f}/255, "
        f"max |group| {k * 255:.2f}/255",
        f"resolution  R={c.resolution}, assignment at {c.assignment_resolution}",
        f"entropy     {c.entropy_bins} bins on {list(c.entropy_range)}",
        f"reduction   {doc['reduction']} (grid {c.latent_grid}, D={c.feature_dim})",
        f"view        {c.view} px (periodic canvases at the attacker's scale)"
        + (f", enlarged at most {c.publish_cap:g}x in the file" if c.publish_cap else "")
        if c.view
        else "view        - (perturbations stretched to each image)",
        _colour_line(c),
        f"inference   s_min {doc.get('inference', {}).get('s_min', DEFAULT_S_MIN)}"
        + ("" if "s_min" in doc.get("inference", {}) else " (the general default)")
        + (
            f", luma part s_min {doc['inference']['luma_s_min']}"
            if "luma_s_min" in doc.get("inference", {})
            else ""
        )
        + (
            f", the JND map sees colour (weight {doc['inference']['colour_weight']:g})"
            if doc.get("inference", {}).get("colour_weight")
            else ""
        ),
    ]
    for key, value in doc.get("recipe", {}).items():
        lines.append(f"{'recipe.' + key:<11} {_short(value)}")
    return "\n".join(lines)


def _short(value: Any, shown: int = 3) -> str:
    """A recipe value on one readable line: long lists of names as a count and the first few
    (the whole list stays in the file's header: ``read_header``)."""
    names = isinstance(value, list) and all(isinstance(v, str) for v in value)
    if names and len(value) > 2 * shown:
        first = ", ".join(value[:shown])
        return f"{len(value)} files ({first}, ... {value[-1]})"
    return json.dumps(value)


def compact_copy(
    src: str | os.PathLike,
    dest: str | os.PathLike,
    release: dict[str, str] | None = None,
    inference: dict[str, Any] | None = None,
) -> Path:
    """Write the compact (float16-perturbation) form of the model file ``src`` to ``dest``,
    with the same header (plus ``release``; ``inference`` replaces the source's)."""
    mop, doc = load_model(src)
    return save_model(
        mop,
        dest,
        doc["encoder"],
        doc.get("recipe"),
        storage="float16",
        release=release,
        inference=inference if inference is not None else doc.get("inference"),
    )
