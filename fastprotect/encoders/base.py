"""The one interface every encoder implements."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class Encoder(nn.Module):
    """A frozen image encoder ``E`` with named intermediate feature maps.

    Images are ``Bx3xHxW`` RGB in ``[0, 1]``. Subclasses set the class attributes and
    implement :meth:`features`. The module is always frozen: ``train()`` keeps it in eval
    mode and its parameters never require gradients (gradients still flow to the input).

    Attributes:
        latent_channels: channels ``C`` of the latent ``z``.
        downsample: spatial factor between image and latent.
        feature_names: names accepted by :meth:`features`, shallow to deep.
        default_layers: the maps the multi-layer loss uses unless told otherwise.
        latent_range: ``(lo, hi)`` used by the latent-entropy histogram.
    """

    latent_channels: int = 0
    downsample: int = 8
    feature_names: tuple[str, ...] = ()
    default_layers: tuple[str, ...] = ()
    latent_range: tuple[float, float] = (-4.0, 4.0)

    def freeze(self) -> Encoder:
        self.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> Encoder:  # noqa: ARG002 - always eval
        return super().train(False)

    def features(self, x: Tensor, layers: Sequence[str] = ()) -> tuple[Tensor, list[Tensor]]:
        """Run the encoder once.

        Args:
            x: ``Bx3xHxW`` images in ``[0, 1]``.
            layers: names from :attr:`feature_names`, in any order.

        Returns:
            The latent ``BxCxhxw`` and the requested maps, in the order of ``layers``.
        """
        raise NotImplementedError

    def latent(self, x: Tensor) -> Tensor:
        """The latent ``z = E(x)`` of ``Bx3xHxW`` images in ``[0, 1]``."""
        return self.features(x, ())[0]

    def forward(self, x: Tensor) -> Tensor:
        return self.latent(x)

    def check_layers(self, layers: Sequence[str]) -> None:
        unknown = [n for n in layers if n not in self.feature_names]
        if unknown:
            raise ValueError(
                f"{type(self).__name__} has no feature maps {unknown}; "
                f"choose from {list(self.feature_names)}"
            )

    def identity(self) -> dict[str, str]:
        """What this encoder is: ``kind``, ``name`` and ``weights_sha256``, all strings."""
        raise NotImplementedError


def state_sha256(module: nn.Module) -> str:
    """sha256 over a module's parameters and buffers (names, shapes and float32 bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to(torch.float32).cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
