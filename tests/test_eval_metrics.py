"""Evaluation metrics against hand-computed values; robustness transforms do what they say."""

from __future__ import annotations

import math

import pytest
import torch

from fastprotect.eval import (
    ROBUSTNESS,
    TRANSFORMS,
    blur,
    disruption,
    gaussian_noise,
    jpeg,
    latent_pull,
    psnr,
    resize_down_up,
    ssim,
)


def test_psnr_is_per_image_and_matches_the_formula():
    x = torch.zeros(2, 3, 4, 5)
    y = x.clone()
    y[0] += 0.1  # MSE 0.01 -> 20 dB
    y[1, :, :2] += 0.2  # 30 of 60 values off by 0.2: MSE 0.02 -> 16.99 dB
    got = psnr(x, y)
    assert got.shape == (2,)
    assert got[0].item() == pytest.approx(20.0, abs=1e-4)
    assert got[1].item() == pytest.approx(-10 * math.log10(0.02), abs=1e-4)


def test_ssim_is_one_for_identical_images_and_lower_otherwise():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-5)
    # A constant offset c on a locally constant image: luminance term only,
    # SSIM = (2 mu (mu + c) + C1) / (mu^2 + (mu + c)^2 + C1) with C1 = 0.01^2.
    flat = torch.full((1, 3, 32, 32), 0.4)
    mu, c, c1 = 0.4, 0.1, 0.01**2
    expected = (2 * mu * (mu + c) + c1) / (mu**2 + (mu + c) ** 2 + c1)
    assert ssim(flat, flat + c).item() == pytest.approx(expected, abs=1e-4)


def test_latent_pull_by_hand():
    z = torch.tensor([[0.0, 0.0]])
    z_y = torch.tensor([[2.0, 0.0]])
    z_hat = torch.tensor([[1.0, 0.0]])  # 1 / 4 of the distance left, squared
    assert latent_pull(z_hat, z, z_y).item() == pytest.approx(0.25)
    assert latent_pull(z, z, z_y).item() == pytest.approx(1.0)


def test_disruption_by_hand():
    # E = identity, D = halve: D(E(0.2)) = 0.1, 0.1 off -> 20 dB; D(E(0.8)) = 0.4,
    # 0.2 off -> 13.98 dB; the disruption is 20 log10(2) = 6.02 dB.
    x = torch.full((1, 3, 8, 8), 0.2)
    x_hat = torch.full((1, 3, 8, 8), 0.8)
    got = disruption(x, x_hat, lambda t: t, lambda z: 0.5 * z)
    assert got.item() == pytest.approx(20 * math.log10(2), abs=1e-4)
    assert disruption(x, x, lambda t: t, lambda z: 0.5 * z).item() == pytest.approx(0.0)


def _photo_like(h=48, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy = torch.linspace(0, 1, h)[:, None].expand(h, w)
    xx = torch.linspace(0, 1, w)[None, :].expand(h, w)
    base = torch.stack([yy, xx, (yy + xx) / 2])[None]
    return (0.8 * base + 0.2 * torch.rand(1, 3, h, w, generator=g)).clamp(0, 1)


def test_jpeg_quantises_and_lower_quality_loses_more():
    x = _photo_like()
    q75, q90 = jpeg(x, 75), jpeg(x, 90)
    assert q75.shape == x.shape
    assert torch.equal((q75 * 255).round(), q75 * 255)  # 8-bit values
    err75, err90 = (q75 - x).abs().mean(), (q90 - x).abs().mean()
    assert 0 < err90 < err75


def test_resize_down_up_removes_what_half_resolution_cannot_hold():
    flat = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(resize_down_up(flat), flat, atol=1e-6)
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None]) % 2
    x = checker.float().expand(1, 3, 16, 16)
    y = resize_down_up(x)
    assert y.shape == x.shape
    assert (y - 0.5).abs().max() < 0.05  # 1-px checkerboard averages to grey


def test_blur_keeps_flat_images_and_spreads_an_impulse():
    flat = torch.full((1, 3, 15, 15), 0.6)
    assert torch.allclose(blur(flat), flat, atol=1e-6)
    x = torch.zeros(1, 3, 15, 15)
    x[..., 7, 7] = 1.0
    y = blur(x, 1.0)
    assert y[..., 7, 7].max() < 0.2  # 1 / (2 pi sigma^2) = 0.159
    assert y[..., 7, 7][0, 0].item() == pytest.approx(1 / (2 * math.pi), rel=0.05)
    assert torch.allclose(y.sum((-1, -2)), torch.ones(1, 3), atol=1e-4)


def test_noise_has_the_stated_sigma_and_is_reproducible():
    x = torch.full((1, 3, 64, 64), 0.5)
    y = gaussian_noise(x, 0.05, seed=1)
    assert (y - x).std().item() == pytest.approx(0.05, rel=0.05)
    assert torch.equal(y, gaussian_noise(x, 0.05, seed=1))
    assert not torch.equal(y, gaussian_noise(x, 0.05, seed=2))


def test_robustness_set_is_the_spec_set_and_keeps_shapes():
    assert set(ROBUSTNESS) == {"clean", "jpeg75", "jpeg90", "resize0.5", "blur1", "noise0.05"}
    assert set(TRANSFORMS) == set(ROBUSTNESS) | {"jpeg95_444"}
    x = _photo_like(21, 17)
    for name, t in ROBUSTNESS.items():
        y = t(x)
        assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1, name


def test_jpeg95_444_is_what_protect_writes(tmp_path):
    import numpy as np
    from PIL import Image

    from fastprotect.imageio import LoadedImage, save_image

    x = (_photo_like(40, 56) * 255).round() / 255
    save_image(LoadedImage(rgb=x[0]), x[0], tmp_path / "p.jpg", "jpeg", 95)
    written = torch.from_numpy(np.asarray(Image.open(tmp_path / "p.jpg")).copy())
    expected = (TRANSFORMS["jpeg95_444"](x)[0] * 255).round().to(torch.uint8).permute(1, 2, 0)
    assert torch.equal(written, expected)
    assert not torch.equal(
        expected, (ROBUSTNESS["jpeg90"](x)[0] * 255).round().byte().permute(1, 2, 0)
    )
