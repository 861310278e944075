"""The per-image verdict: checks for tiny and flat images, and the latent shift against
the noise floor, in ``protect`` and the demo report."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fastprotect.cli import main
from fastprotect.encoders import DiffusersVAEEncoder
from fastprotect.encoders.diffusers_vae import TINY_CONFIG
from fastprotect.verdict import Verdict, checks, label, noise_ratio, sign_noise, verdict_view

from .conftest import needs_data, tiny_args


def test_checks_warn_on_tiny_and_flat_images_only():
    textured = torch.rand(1, 3, 300, 400, generator=torch.Generator().manual_seed(0))
    assert checks(textured) == []
    (tiny,) = checks(torch.rand(1, 3, 40, 50, generator=torch.Generator().manual_seed(0)))
    assert "only 50x40 px" in tiny and "13x" in tiny
    flat = torch.full((1, 3, 300, 400), 0.6)
    flat[..., :30, :] = textured[..., :30, :]  # 10 % texture, 90 % flat
    (warning,) = checks(flat)
    share = int(warning.split(" % of the image is flat colour")[0])
    assert 85 <= share <= 90  # the window blurs the border between the two
    flat[..., :60, :] = textured[..., :60, :]  # 20 % texture: no warning
    assert checks(flat) == []


def test_noise_ratio_is_one_for_the_noise_itself_and_labels_follow_thresholds():
    enc = DiffusersVAEEncoder(config=TINY_CONFIG, seed=0)
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    eta = 8 / 255
    assert noise_ratio(enc, x, sign_noise(x, eta), eta, view=64) == pytest.approx(1.0)
    assert noise_ratio(enc, x, x, eta, view=64) == 0.0
    bigger = noise_ratio(enc, x, (x + 3 * (sign_noise(x, eta) - x)).clamp(0, 1), eta, view=64)
    assert bigger > 1.5
    assert [label(r) for r in (0.5, 1.2, 1.99, 2.0)] == ["weak", "moderate", "moderate", "strong"]
    grey = x[:, :1].expand(-1, 3, -1, -1)
    noisy = sign_noise(grey, eta)
    assert (noisy[:, 0] == noisy[:, 1]).all() and (noisy[:, 1] == noisy[:, 2]).all()


def test_the_view_of_a_long_thin_image_stays_small():
    assert verdict_view(torch.rand(1, 3, 4, 600)).shape[-2:] == (8, 2048)  # 4 views long at most
    assert verdict_view(torch.rand(1, 3, 100, 3000)).shape[-2:] == (64, 2048)  # 4 views long
    assert verdict_view(torch.rand(1, 3, 300, 400)).shape[-2:] == (512, 680)
    assert Verdict().line() == "no problem found"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("model")
    assert main(["fit", *tiny_args(tmp, "--trainer.max_steps=3", "--model.lr=0.05")]) == 0
    return tmp / "model.safetensors"


@needs_data
def test_protect_warns_by_default_and_judges_on_request(model, tmp_path, capsys):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(tmp_path / "t.png")
    Image.fromarray(np.full((96, 128, 3), 200, np.uint8)).save(tmp_path / "flat.png")
    base = ["protect", "--model", str(model), "--strength", "jnd", str(tmp_path / "t.png")]
    assert main([*base, str(tmp_path / "flat.png"), "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "flat.png: warning: 100 % of the image is flat colour" in err
    assert "/t.png:" not in err and "1 with a warning" in err
    assert main([*base, "--out", str(tmp_path / "b"), "--verdict"]) == 0
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if "/t.png:" in ln)
    assert "as far as under random noise of the same budget (512-px view)" in line
    assert "verdicts: 1 " in err


def test_a_grey_image_under_a_colour_only_model_is_reported_unprotected():
    from fastprotect.encoders import TINY_CONFIG, DiffusersVAEEncoder
    from fastprotect.mop import MixtureOfPerturbations, MoPConfig
    from fastprotect.protector import Protector

    g = torch.Generator().manual_seed(0)
    grey = torch.rand(1, 1, 96, 96, generator=g).expand(1, 3, 96, 96).clone()
    colour = torch.rand(1, 3, 96, 96, generator=g)
    unprotected = "almost unprotected"
    assert any(unprotected in w for w in checks(grey, colour_only=True))
    # and it names the packaged release that does protect grey images
    assert any("--model fastprotect-taef2-v1" in w for w in checks(grey, colour_only=True))
    assert not any(unprotected in w for w in checks(grey))
    assert not any(unprotected in w for w in checks(colour, colour_only=True))
    # and it is true: an isoluminant model changes a grey image far less than a colour one
    # (what is left is the luma of the clipping, at the budget and at black and white)
    cfg = MoPConfig(targets=["noise"], groups=0, resolution=32, view=32, isoluminant=True)
    mop = MixtureOfPerturbations(cfg)
    with torch.no_grad():
        mop.global_delta.uniform_(-cfg.eta, cfg.eta, generator=g)
        p = Protector(DiffusersVAEEncoder(config=TINY_CONFIG), mop)
        grey_change = (p(grey) - grey).abs().mean()
        colour_change = (p(colour) - colour).abs().mean()
    assert grey_change < 0.2 * colour_change
