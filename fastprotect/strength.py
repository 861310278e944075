"""Perceptual visibility maps ``M(x, x + delta)`` in ``[0, 1]`` for adaptive strength.

``LPIPSMap``: the spatial LPIPS distance (AlexNet backbone, ``lpips`` package), divided by
``tau`` and clamped. It needs torchvision's AlexNet weights, resolved from the torch hub
cache or ``$FASTPROTECT_WEIGHTS_DIR/torchvision/`` (never downloaded at run time here).

``JNDMap``: weights-free. A just-noticeable-difference threshold per pixel from luminance
masking (Chou & Li 1995: the eye tolerates larger changes on dark and bright backgrounds)
and texture masking (larger changes hide in high local gradient), as Impasto used; the
map is the luma difference in JND units, blurred, clamped to ``[0, 1]``.

Both are ``nn.Module``\\ s taking ``Bx3xHxW`` images in ``[0, 1]`` and returning ``Bx1xHxW``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
_LUMA = (0.299, 0.587, 0.114)


def _luma(x: Tensor) -> Tensor:
    r, g, b = _LUMA
    return r * x[:, 0:1] + g * x[:, 1:2] + b * x[:, 2:3]


def _box(x: Tensor, k: int) -> Tensor:
    return F.avg_pool2d(F.pad(x, [k // 2] * 4, mode="replicate"), k, stride=1)


class JNDMap(nn.Module):
    """Weights-free visibility map: ``clamp(blur(|Y(x_hat) - Y(x)| / JND(x)), 0, 1)``.

    Args:
        texture_weight: how much local gradient (0-255 scale) raises the threshold.
    """

    def __init__(self, texture_weight: float = 0.12) -> None:
        super().__init__()
        self.texture_weight = texture_weight

    def threshold(self, x: Tensor) -> Tensor:
        """Per-pixel JND on the 0-255 luma scale, ``Bx1xHxW``."""
        y = _luma(x) * 255
        bg = _box(y, 5)
        dark = 17 * (1 - torch.sqrt(bg.clamp(0, 127) / 127)) + 3
        bright = 3 / 128 * (bg - 127) + 3
        lum = torch.where(bg <= 127, dark, bright)
        s = F.pad(_box(y, 3), [1, 1, 1, 1], mode="replicate")
        gx = s[..., 1:-1, 2:] - s[..., 1:-1, :-2]
        gy = s[..., 2:, 1:-1] - s[..., :-2, 1:-1]
        grad = gx.abs().maximum(gy.abs())
        return lum.maximum(self.texture_weight * _box(grad, 5) * 4)

    def forward(self, x: Tensor, x_hat: Tensor) -> Tensor:
        diff = (_luma(x_hat) - _luma(x)).abs() * 255
        return _box(diff / self.threshold(x), 5).clamp(0, 1)


def find_alexnet() -> Path | None:
    """torchvision's AlexNet weights, if present locally (torch hub cache or weights dir)."""
    candidates = [Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE]
    if os.environ.get("FASTPROTECT_WEIGHTS_DIR"):
        root = Path(os.environ["FASTPROTECT_WEIGHTS_DIR"])
        candidates += [root / "torchvision" / ALEXNET_FILE, root / ALEXNET_FILE]
    return next((c for c in candidates if c.is_file()), None)


class LPIPSMap(nn.Module):
    """Spatial LPIPS (AlexNet) distance divided by ``tau``, clamped to ``[0, 1]``.

    Args:
        alexnet: path of torchvision's ``alexnet-owt-7be5be79.pth``.
        tau: LPIPS distance that counts as fully visible.
    """

    def __init__(self, alexnet: str | Path, tau: float = 0.1) -> None:
        super().__init__()
        import lpips
        import torchvision

        with warnings.catch_warnings():
            # lpips asks torchvision for alexnet(pretrained=False), a deprecated spelling.
            warnings.simplefilter("ignore", UserWarning)
            net = lpips.LPIPS(net="alex", spatial=True, pnet_rand=True, verbose=False)
        features = torchvision.models.alexnet().features
        state = torch.load(alexnet, map_location="cpu", weights_only=True)
        features.load_state_dict(
            {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        )
        for piece in (
            net.net.slice1,
            net.net.slice2,
            net.net.slice3,
            net.net.slice4,
            net.net.slice5,
        ):
            for name, module in piece.named_children():
                module.load_state_dict(features[int(name)].state_dict())
        self.net = net.eval().requires_grad_(False)
        self.tau = tau
        self.border = 32

    def forward(self, x: Tensor, x_hat: Tensor) -> Tensor:
        # AlexNet needs at least 31 px; a fixed replicate border makes every size work
        # (1x1 included) with one graph for all sizes, and is cropped off again.
        p = self.border
        pair = F.pad(torch.cat([x, x_hat]) * 2 - 1, [p, p, p, p], mode="replicate")
        d = self.net(pair[: x.shape[0]], pair[x.shape[0] :])  # spatial: input size
        return (d[..., p:-p, p:-p] / self.tau).clamp(0, 1)


def build_strength_map(kind: str = "auto") -> tuple[nn.Module, str]:
    """The visibility map to use: ``lpips``, ``jnd``, or ``auto`` (LPIPS when its backbone
    weights are present, else JND, announced once as a warning).

    Returns:
        The module and its name.
    """
    if kind not in ("auto", "lpips", "jnd"):
        raise ValueError(f"strength map must be auto, lpips or jnd, got {kind!r}")
    if kind == "jnd":
        return JNDMap(), "jnd"
    path = find_alexnet()
    if path is not None:
        return LPIPSMap(path), "lpips"
    if kind == "lpips":
        raise FileNotFoundError(
            f"LPIPS needs torchvision's {ALEXNET_FILE} in {torch.hub.get_dir()}/checkpoints/ "
            "or $FASTPROTECT_WEIGHTS_DIR/torchvision/"
        )
    warnings.warn(
        f"LPIPS backbone weights ({ALEXNET_FILE}) not found; adaptive strength uses the "
        "weights-free JND map instead",
        stacklevel=2,
    )
    return JNDMap(), "jnd"
