"""Tiny AutoEncoders of the TAESD family, including TAEF2 (FLUX.2 latent space).

Our own module definitions, laid out so that the upstream ``nn.Sequential`` state dicts
(github madebyollin/taesd, MIT) load with ``strict=True``:

Encoder (indices are state-dict keys)::

    0  conv 3->64            1      Block          <- "stage0" (full resolution)
    2  conv s2, no bias      3..5   3 Blocks       <- "stage1" (1/2)
    6  conv s2, no bias      7..9   3 Blocks       <- "stage2" (1/4)
    10 conv s2, no bias      11..13 3 Blocks       <- "stage3" (1/8)
    14 conv 64->C            latent

TAEF2's deepest ``pool_blocks`` encoder blocks (and the decoder's first ones) carry a
group-norm "pool" branch added before the block's convolutions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ..weights import REGISTRY, resolve_weights, sha256_file
from .base import Encoder


def _conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class Pool(nn.Sequential):
    """1x1 conv to 4x channels, GroupNorm(4), ReLU, 1x1 conv back (TAEF2 blocks)."""

    def __init__(self, n: int) -> None:
        super().__init__(
            nn.Conv2d(n, 4 * n, 1, bias=False),
            nn.GroupNorm(4, 4 * n),
            nn.ReLU(inplace=True),
            nn.Conv2d(4 * n, n, 1, bias=False),
        )


class Block(nn.Module):
    """Residual block: three 3x3 convs with ReLUs, optional pool branch first."""

    def __init__(self, n_in: int, n_out: int, pool: bool = False) -> None:
        super().__init__()
        # in-place ReLUs: each acts on a fresh convolution output or sum, never on a block's
        # input or a feature map the loss reads, so autograd and the outputs are unchanged;
        # it saves a tensor allocation per activation (docs/performance.md)
        self.conv = nn.Sequential(
            _conv(n_in, n_out),
            nn.ReLU(inplace=True),
            _conv(n_out, n_out),
            nn.ReLU(inplace=True),
            _conv(n_out, n_out),
        )
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU(inplace=True)
        self.pool = Pool(n_in) if pool else None

    def forward(self, x: Tensor) -> Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


class Clamp(nn.Module):
    """Soft clamp of latents to about [-3, 3]."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x / 3) * 3


def tiny_encoder(latent_channels: int, pool_blocks: int = 0, width: int = 64) -> nn.Sequential:
    """The TAESD-family encoder as an ``nn.Sequential`` (state-dict compatible)."""
    pooled = [i >= 9 - pool_blocks for i in range(9)]  # the 9 blocks after stage0
    blocks = iter(Block(width, width, pool=p) for p in pooled)
    layers: list[nn.Module] = [_conv(3, width), Block(width, width)]
    for _ in range(3):
        layers += [
            _conv(width, width, stride=2, bias=False),
            next(blocks),
            next(blocks),
            next(blocks),
        ]
    layers.append(_conv(width, latent_channels))
    return nn.Sequential(*layers)


def tiny_decoder(latent_channels: int, pool_blocks: int = 0, width: int = 64) -> nn.Sequential:
    """The TAESD-family decoder as an ``nn.Sequential`` (state-dict compatible)."""
    pooled = iter(i < pool_blocks for i in range(9))
    layers: list[nn.Module] = [Clamp(), _conv(latent_channels, width), nn.ReLU(inplace=True)]
    for _ in range(3):
        layers += [Block(width, width, pool=next(pooled)) for _ in range(3)]
        layers += [nn.Upsample(scale_factor=2), _conv(width, width, bias=False)]
    layers += [Block(width, width), _conv(width, 3)]
    return nn.Sequential(*layers)


# variant -> (latent channels, pool blocks, pinned encoder file, pinned decoder file)
VARIANTS: dict[str, tuple[int, int, str | None, str | None]] = {
    "taef2": (32, 3, "taef2_encoder.pth", "taef2_decoder.pth"),
    "taef1": (16, 0, None, None),
    "taesd": (4, 0, None, None),
    "taesdxl": (4, 0, None, None),
}

_STAGE_END = {"stage0": 1, "stage1": 5, "stage2": 9, "stage3": 13}


def _load(module: nn.Module, variant: str, pinned: str | None, path: str | None) -> str:
    """Load a state dict strictly; return the file's sha256."""
    if path is None and pinned is None:
        raise ValueError(
            f"{variant} has no pinned weights in this project; pass weights=<path to the .pth>"
        )
    if pinned is not None:
        file = resolve_weights(pinned, path)
        digest = REGISTRY[pinned].sha256
    else:
        file = Path(path).expanduser()
        digest = sha256_file(file)
    state = torch.load(file, map_location="cpu", weights_only=True)
    module.load_state_dict(state, strict=True)
    return digest


class TinyAutoencoderEncoder(Encoder):
    """A TAESD-family encoder (TAEF2 by default) behind the :class:`Encoder` interface.

    Args:
        variant: ``taef2`` (pinned weights), or ``taef1``/``taesd``/``taesdxl`` (give ``weights``).
        weights: explicit weight file; otherwise resolved as in :mod:`fastprotect.weights`.
        pretrained: ``False`` keeps random weights (tests only).

    Feature maps: ``stage0`` (64ch, 1x), ``stage1`` (1/2), ``stage2`` (1/4), ``stage3`` (1/8),
    each the output of the last residual block of its resolution. The multi-layer loss uses
    ``stage1``, ``stage2`` and ``stage3`` by default.
    """

    downsample = 8
    feature_names = tuple(_STAGE_END)
    default_layers = ("stage1", "stage2", "stage3")
    latent_range = (-4.0, 4.0)

    def __init__(self, variant: str = "taef2", weights: str | None = None, pretrained: bool = True):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown tiny autoencoder {variant!r}; choose from {list(VARIANTS)}")
        channels, pool_blocks, pinned, _ = VARIANTS[variant]
        self.variant = variant
        self.latent_channels = channels
        self.net = tiny_encoder(channels, pool_blocks)
        self.weights_sha256 = (
            _load(self.net, variant, pinned, weights) if pretrained else "random-init"
        )
        self.freeze()

    def features(self, x: Tensor, layers: Sequence[str] = ()) -> tuple[Tensor, list[Tensor]]:
        self.check_layers(layers)
        wanted = {_STAGE_END[n]: n for n in layers}
        found: dict[str, Tensor] = {}
        # channels-last convolutions are about a quarter faster on CPU (oneDNN), for the
        # same arithmetic up to float rounding; measured in docs/performance.md
        x = x.contiguous(memory_format=torch.channels_last)
        for i, layer in enumerate(self.net):
            x = layer(x)
            if i in wanted:
                found[wanted[i]] = x
        return x, [found[n] for n in layers]

    def identity(self) -> dict[str, str]:
        return {"kind": "tiny", "name": self.variant, "weights_sha256": self.weights_sha256}


class TinyAutoencoderDecoder(nn.Module):
    """The matching TAESD-family decoder ``D``: latent -> image in ``[0, 1]``."""

    def __init__(self, variant: str = "taef2", weights: str | None = None):
        super().__init__()
        channels, pool_blocks, _, pinned = VARIANTS[variant]
        self.net = tiny_decoder(channels, pool_blocks)
        self.weights_sha256 = _load(self.net, variant, pinned, weights)
        self.requires_grad_(False).eval()

    def forward(self, z: Tensor) -> Tensor:
        # channels last: faster on CPU, as in the encoder
        return self.net(z.contiguous(memory_format=torch.channels_last)).clamp(0, 1)
