"""Target images ``y^t``: procedural textures with low, mid and high repetition, or files.

A procedural target is one high-contrast tile (binary rings, an inverted cross and
coloured quadrants) repeated ``n x n`` times over the frame. It is rendered analytically at
4x supersampling and box-filtered, so it is deterministic at any resolution and owes
nothing to a third-party image. Default repetitions: ``low`` 1, ``mid`` 4, ``high`` 12 tiles
per side (chosen by ``tools/target_routing.py``: on TAEF2 at 256 px they split the shared
training images between the three targets; see docs/method.md). A target spec is one of
``low``, ``mid``, ``high``, ``repeat:N``, ``noise`` / ``noise:SEED`` or an image path.

``noise`` is a texture without a repeating tile: per channel, white noise band-passed to
16-43 cycles per frame (FFT, so it wraps around seamlessly: a periodic canvas of it has no
seam) and thresholded at 0, a binary colour texture with features of 6-16 pixels at 256.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

REPEATS = {"low": 1, "mid": 4, "high": 12}
SUPERSAMPLE = 4


def _tile(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The motif on tile coordinates ``u, v`` in [0, 1): returns ``...x3`` in {0, 1}."""
    r = np.hypot(u - 0.5, v - 0.5)
    rings = (np.cos(2 * np.pi * 2 * r) > 0).astype(np.float32)
    cross = (np.abs(u - 0.5) < 0.07) | (np.abs(v - 0.5) < 0.07)
    rings = np.where(cross, 1 - rings, rings)
    quadrant = (u < 0.5).astype(np.int64) * 2 + (v < 0.5).astype(np.int64)
    tint = np.array([[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1]], dtype=np.float32)[quadrant]
    return (
        rings[..., None] * np.maximum(tint, 0.25 * (1 - tint) + tint)
        + (1 - rings[..., None]) * (1 - tint) * 0.15
    )


def procedural_target(repeats: int, size: int | tuple[int, int]) -> Tensor:
    """Render the tile repeated ``repeats`` times per side at ``size`` (``H, W``).

    Returns:
        ``3xHxW`` float32 in ``[0, 1]``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    h, w = (size, size) if isinstance(size, int) else size
    s = SUPERSAMPLE
    ys = (np.arange(h * s) + 0.5) / (h * s) * repeats
    xs = (np.arange(w * s) + 0.5) / (w * s) * repeats
    v, u = np.meshgrid(ys % 1.0, xs % 1.0, indexing="ij")
    img = torch.from_numpy(_tile(u, v)).permute(2, 0, 1)[None]
    return F.avg_pool2d(img, s)[0].clamp(0, 1).float()


NOISE_BAND = (16.0, 256 / 6)  # cycles per frame


def noise_target(size: int, seed: int = 0) -> Tensor:
    """The ``noise`` target at ``size x size``, ``3xSxS`` float32 in ``{0, 1}``.

    Deterministic for a size and seed (numpy's ``default_rng(seed)``)."""
    rng = np.random.default_rng(seed)
    k = np.fft.fftfreq(size) * size  # cycles per frame
    radius = np.hypot(k[:, None], k[None, :])
    band = (radius > NOISE_BAND[0]) & (radius < NOISE_BAND[1])
    chans = []
    for _ in range(3):
        spec = np.fft.fft2(rng.standard_normal((size, size))) * band
        chans.append((np.real(np.fft.ifft2(spec)) > 0).astype(np.float32))
    return torch.from_numpy(np.stack(chans))


def load_target(path: str | Path, size: int) -> Tensor:
    """A user's target image: centre square crop, resized to ``size x size``, ``3xSxS``."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(arr).permute(2, 0, 1)[None]
    h, w = x.shape[-2:]
    m = min(h, w)
    x = x[..., (h - m) // 2 : (h - m) // 2 + m, (w - m) // 2 : (w - m) // 2 + m]
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)[0].clamp(0, 1)


def make_target(spec: str, size: int) -> Tensor:
    """One target from its spec (see module docstring), ``3 x size x size``."""
    if spec in REPEATS:
        return procedural_target(REPEATS[spec], size)
    if spec.startswith(("repeat:", "noise:")):
        kind, number = spec.split(":", 1)
        if not number.strip().lstrip("-").isdigit():
            raise ValueError(f"target {spec!r}: {kind}:N needs a whole number, not {number!r}")
        if kind == "repeat":
            return procedural_target(int(number), size)
        return noise_target(size, int(number))
    if spec == "noise":
        return noise_target(size, 0)
    if not Path(spec).is_file():
        raise ValueError(
            f"target {spec!r} is neither one of {list(REPEATS)}, 'repeat:N', 'noise[:SEED]', "
            "nor an image file"
        )
    return load_target(spec, size)


def make_targets(specs: Sequence[str], size: int) -> Tensor:
    """All targets stacked, ``Tx3xSxS``."""
    if not specs:
        raise ValueError("at least one target is needed")
    return torch.stack([make_target(s, size) for s in specs])


def save_targets(specs: Sequence[str], size: int, out_dir: str | Path) -> list[Path]:
    """Write each target as ``target_<i>_<name>.png`` into ``out_dir``; returns the paths.

    Raises:
        FileExistsError: a file of that name is already there (nothing is overwritten).
    """
    out = Path(out_dir)
    names = [Path(s).stem if Path(s).suffix else s.replace(":", "") for s in specs]
    paths = [out / f"target_{i}_{n}.png" for i, n in enumerate(names)]
    taken = [str(p) for p in paths if p.exists()]
    if taken:
        raise FileExistsError(f"not overwriting {', '.join(taken)}; choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    for p, img in zip(paths, make_targets(specs, size), strict=True):
        arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(arr).save(p)
    return paths
