"""Any ``diffusers.AutoencoderKL`` (SD-1.5, SD-2.x, SDXL, FLUX) behind the Encoder interface."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .base import Encoder, state_sha256

# A tiny random AutoencoderKL in diffusers' own testing style (fast unit tests).
TINY_CONFIG: dict[str, Any] = {
    "block_out_channels": [8, 16],
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
    "latent_channels": 4,
    "norm_num_groups": 4,
    "layers_per_block": 1,
    "sample_size": 32,
}


class DiffusersVAEEncoder(Encoder):
    """The encoder half of a diffusers ``AutoencoderKL``.

    Latent: the posterior mean, shifted and scaled like the diffusion model sees it,
    ``(mean - shift_factor) * scaling_factor``. Feature maps: ``down0 .. down{N-1}`` (the
    output of each down block) and ``mid`` (the mid block). The multi-layer loss uses all
    down blocks after the first, plus ``mid``.

    Args:
        pretrained: hub id or local directory
            (e.g. ``stable-diffusion-v1-5/stable-diffusion-v1-5``).
        subfolder: where the VAE lives inside ``pretrained`` (``"vae"`` for pipelines).
        revision: hub revision (commit) to pin.
        config: build a randomly initialised model from this config instead (tests).
        seed: seed for the random initialisation.
    """

    latent_range = (-4.0, 4.0)

    def __init__(
        self,
        pretrained: str | None = None,
        subfolder: str | None = "vae",
        revision: str | None = None,
        config: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        from diffusers import AutoencoderKL

        if (pretrained is None) == (config is None):
            raise ValueError("give exactly one of pretrained (hub id or path) or config")
        if pretrained is not None:
            vae = AutoencoderKL.from_pretrained(pretrained, subfolder=subfolder, revision=revision)
            self._name = f"{pretrained}:{subfolder or ''}@{revision or 'default'}"
        else:
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                vae = AutoencoderKL(**config)
            self._name = f"random-config-seed{seed}"
        self._config = config
        self._seed = seed
        self._source = (pretrained, subfolder, revision)
        self.encoder = vae.encoder
        self.quant_conv = vae.quant_conv
        self.scaling_factor = float(vae.config.scaling_factor)
        self.shift_factor = float(vae.config.get("shift_factor") or 0.0)
        self.latent_channels = int(vae.config.latent_channels)
        n = len(self.encoder.down_blocks)
        self.downsample = 2 ** (n - 1)
        self.feature_names = tuple(f"down{i}" for i in range(n)) + ("mid",)
        self.default_layers = self.feature_names[1:]
        self._sha: str | None = None
        self.freeze()

    def features(self, x: Tensor, layers: Sequence[str] = ()) -> tuple[Tensor, list[Tensor]]:
        self.check_layers(layers)
        enc = self.encoder
        found: dict[str, Tensor] = {}
        h = enc.conv_in(x * 2 - 1)
        for i, block in enumerate(enc.down_blocks):
            h = block(h)
            found[f"down{i}"] = h
        h = enc.mid_block(h)
        found["mid"] = h
        h = enc.conv_out(enc.conv_act(enc.conv_norm_out(h)))
        if self.quant_conv is not None:
            h = self.quant_conv(h)
        mean = h[:, : self.latent_channels]
        z = (mean - self.shift_factor) * self.scaling_factor
        return z, [found[n] for n in layers]

    def identity(self) -> dict[str, str]:
        if self._sha is None:
            self._sha = state_sha256(self)
        pretrained, subfolder, revision = self._source
        init = (
            {"config": self._config, "seed": self._seed}
            if self._config is not None
            else {"pretrained": pretrained, "subfolder": subfolder, "revision": revision}
        )
        return {
            "kind": "diffusers",
            "name": self._name,
            "weights_sha256": self._sha,
            "init": json.dumps(init, sort_keys=True),
        }
