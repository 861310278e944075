"""Baselines keep the budget exactly and do what they claim on a tiny encoder."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastprotect.eval.baselines import pgd, pgd_untargeted, photoguard, sign_noise, uniform_noise

ETA = 8 / 255


def _x(seed=0, shape=(2, 3, 16, 16)):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=g).float() / 255  # 8-bit images


def _encoder():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 4, 3, 2, 1)).eval()


def _eight_bit_bound(x, x_hat):
    moved = ((x_hat * 255).round() - x * 255).abs().max().item()
    return moved <= 8 and 0 <= x_hat.min() and x_hat.max() <= 1


@pytest.mark.parametrize("fn", [uniform_noise, sign_noise])
def test_noise_baselines_respect_the_budget(fn):
    x = _x()
    x_hat = fn(x, ETA, seed=3)
    assert (x_hat - x).abs().max().item() <= ETA + 1e-7
    assert _eight_bit_bound(x, x_hat)
    assert torch.equal(x_hat, fn(x, ETA, seed=3))


def test_sign_noise_uses_the_whole_budget_away_from_the_borders():
    x = torch.full((1, 3, 8, 8), 0.5)
    d = (sign_noise(x, ETA) - x).abs()
    assert torch.allclose(d, torch.full_like(d, ETA), atol=1e-6)


def test_pgd_pulls_toward_the_target_within_the_budget():
    enc, x = _encoder(), _x(1)
    with torch.no_grad():
        z_t = enc(_x(2))
        before = (enc(x) - z_t).pow(2).sum()
    x_hat = pgd(x, enc, z_t, ETA, steps=20)
    with torch.no_grad():
        after = (enc(x_hat) - z_t).pow(2).sum()
    assert after < 0.9 * before
    assert (x_hat - x).abs().max().item() <= ETA + 1e-6
    assert _eight_bit_bound(x, x_hat)
    assert not x_hat.requires_grad


def test_photoguard_pulls_toward_grey():
    enc, x = _encoder(), _x(4)
    with torch.no_grad():
        z_grey = enc(torch.full_like(x[:1], 0.5))
        before = (enc(x) - z_grey).pow(2).sum()
    x_hat = photoguard(x, enc, ETA, steps=10)
    with torch.no_grad():
        assert (enc(x_hat) - z_grey).pow(2).sum() < before
    assert (x_hat - x).abs().max().item() <= ETA + 1e-6


def test_untargeted_pgd_moves_the_latent_away_within_the_budget():
    enc, x = _encoder(), _x(5)
    with torch.no_grad():
        z = enc(x)
        noise = (enc(sign_noise(x, ETA)) - z).pow(2).sum()
    x_hat = pgd_untargeted(x, enc, ETA, steps=10)
    with torch.no_grad():
        moved = (enc(x_hat) - z).pow(2).sum()
    assert moved > 2 * noise  # far beyond what random signs of the same size do
    assert _eight_bit_bound(x, x_hat)
    assert torch.equal(x_hat, pgd_untargeted(x, enc, ETA, steps=10))  # seeded start


def test_impress_moves_a_full_size_image_toward_what_the_autoencoder_reproduces():
    """Averaged over the pixels, IMPRESS's loss has a gradient per pixel below Adam's epsilon
    on a large image, and its steps shrink as the image grows (the setting before
    2026-12-01, an average with an epsilon of 1e-5 and a step of 0.01: 19 % less
    inconsistency at 256 px, 2 % at 512x1024); summed over the pixels, each step is about
    the learning rate at any size (55 % less at both)."""
    import torch.nn.functional as F

    from fastprotect.eval.purify import IMPRESS, impress

    def enc(x):  # an autoencoder that reproduces 8x8 block means
        return F.avg_pool2d(x, 8)

    def dec(z):
        return F.interpolate(z, scale_factor=8, mode="nearest")

    def inconsistency(y):
        return ((dec(enc(y)) - y) ** 2).mean().item()

    for h, w in ((256, 256), (512, 1024)):  # the same strength at any size
        x = 0.5 + 0.02 * torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(7))
        x = (x * 255).round() / 255
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
        start = x + IMPRESS["noise"] * noise  # where impress starts (its seed 0)
        calls = []
        y = impress(
            x, enc, dec, lambda a, b: torch.zeros(a.shape[0]), trace=lambda *a, c=calls: c.append(a)
        )
        assert inconsistency(y) < 0.5 * inconsistency(start), (h, w)
        assert y.shape == x.shape and torch.equal((y * 255).round() / 255, y)  # 8-bit levels
        # the trace sees every step and the 8-bit result
        assert [c[0] for c in calls] == list(range(IMPRESS["steps"] + 1))
        assert calls[-1][1] == pytest.approx(inconsistency(y)) and torch.equal(calls[-1][3], y)
