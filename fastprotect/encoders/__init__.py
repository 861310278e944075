"""Encoders behind one interface, and a builder from a short name or an identity."""

from __future__ import annotations

import json

from .base import Encoder, state_sha256
from .diffusers_vae import TINY_CONFIG, DiffusersVAEEncoder
from .taesd import TinyAutoencoderDecoder, TinyAutoencoderEncoder

__all__ = [
    "Encoder",
    "DiffusersVAEEncoder",
    "TinyAutoencoderEncoder",
    "TinyAutoencoderDecoder",
    "TINY_CONFIG",
    "build_encoder",
    "encoder_from_identity",
    "EncoderMismatchError",
    "state_sha256",
]


class EncoderMismatchError(ValueError):
    """The encoder rebuilt for a model does not have the weights the model was trained on."""


def encoder_from_identity(identity: dict[str, str]) -> Encoder:
    """Rebuild the encoder a model file names, and check its weights' sha256.

    Raises:
        EncoderMismatchError: the rebuilt encoder's weights differ from the recorded ones.
    """
    if identity.get("kind") == "tiny":
        enc: Encoder = TinyAutoencoderEncoder(identity["name"])
    elif identity.get("kind") == "diffusers":
        if "init" not in identity:
            raise ValueError(f"the model file does not record how to rebuild {identity['name']}")
        enc = DiffusersVAEEncoder(**json.loads(identity["init"]))
    else:
        raise ValueError(f"unknown encoder kind {identity.get('kind')!r}")
    got = enc.identity()["weights_sha256"]
    if got != identity["weights_sha256"]:
        raise EncoderMismatchError(
            f"encoder {identity['name']} has weights {got[:12]}..., but the model was trained "
            f"with {identity['weights_sha256'][:12]}...; give the matching encoder weights"
        )
    return enc


def build_encoder(name: str) -> Encoder:
    """Build an encoder from a short name.

    ``taef2`` (and other TAESD variants with pinned weights), ``tiny-random`` (the tiny
    random AutoencoderKL of the tests), or ``diffusers:<hub id or path>`` (SD-1.5 etc.).
    """
    if name == "tiny-random":
        return DiffusersVAEEncoder(config=TINY_CONFIG)
    if name.startswith("diffusers:"):
        return DiffusersVAEEncoder(pretrained=name.split(":", 1)[1])
    return TinyAutoencoderEncoder(name)
