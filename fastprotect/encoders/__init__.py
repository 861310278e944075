"""Encoders behind one interface, and a builder from a short name or an identity."""

from __future__ import annotations

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
    "state_sha256",
]


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
