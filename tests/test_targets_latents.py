import math

import numpy as np
import pytest
import torch
from PIL import Image

from fastprotect.latents import latent_entropy, nearest, reduce_latent, resize_square, route
from fastprotect.targets import REPEATS, make_target, make_targets, procedural_target, save_targets


def test_procedural_targets_are_deterministic_and_any_size():
    a = procedural_target(4, (48, 80))
    assert a.shape == (3, 48, 80)
    assert torch.equal(a, procedural_target(4, (48, 80)))
    assert 0 <= a.min() and a.max() <= 1
    assert a.std() > 0.3  # high contrast


def test_repetition_repeats_the_tile():
    y = procedural_target(4, 64)
    assert torch.allclose(y[:, :16, :16], y[:, 16:32, 32:48])
    assert not torch.allclose(procedural_target(1, 64), procedural_target(4, 64))


def test_noise_target_is_binary_band_limited_and_has_no_short_period():
    y = make_target("noise", 128)
    assert y.shape == (3, 128, 128) and torch.equal(y, make_target("noise:0", 128))
    assert not torch.equal(y, make_target("noise:1", 128))
    assert set(y.unique().tolist()) == {0.0, 1.0} and 0.4 < y.mean() < 0.6
    # the energy sits at 16-43 cycles per frame: almost none below 8 (but the mean)
    power = torch.fft.fft2(y - y.mean(dim=(1, 2), keepdim=True)).abs().pow(2)
    k = torch.fft.fftfreq(128) * 128
    radius = torch.hypot(k[:, None], k[None, :])
    assert power[:, radius < 8].sum() < 0.05 * power.sum()
    # no tile: a shift by a fraction of the frame never reproduces it (a repeated tile would)
    for period in (64, 32, 16, 8):
        assert (y - y.roll(period, -1)).abs().mean() > 0.3


def test_named_targets_and_files(tmp_path):
    t = make_targets(list(REPEATS), 32)
    assert t.shape == (3, 3, 32, 32)
    paths = save_targets(["low", "repeat:3"], 32, tmp_path)
    assert [p.name for p in paths] == ["target_0_low.png", "target_1_repeat3.png"]
    back = make_target(str(paths[0]), 32)
    assert (back - t[0]).abs().max() <= 1 / 255 + 1e-6
    with pytest.raises(ValueError, match="neither"):
        make_target("nope.png", 32)
    with pytest.raises(ValueError, match="'noise:abc': noise:N needs a whole number"):
        make_target("noise:abc", 32)
    assert torch.equal(make_target("noise:0", 32), make_target("noise", 32))


def test_entropy_hand_computed():
    # channel 0: half the values in one bin, half in another -> 1 bit; channel 1: constant -> 0.
    z = torch.zeros(1, 2, 2, 2)
    z[0, 0, 0] = -3.0
    z[0, 0, 1] = 3.0
    h = latent_entropy(z, bins=4, lo=-4.0, hi=4.0)
    assert torch.allclose(h, torch.tensor([[1.0, 0.0]]))
    # four distinct bins, uniform -> 2 bits; out-of-range values land in the end bins
    z = torch.tensor([-9.0, -1.0, 1.0, 9.0]).reshape(1, 1, 2, 2)
    assert math.isclose(latent_entropy(z, 4, -4.0, 4.0).item(), 2.0, rel_tol=1e-6)


def test_reduce_route_nearest():
    z = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    r = reduce_latent(z, 2)
    assert r.shape == (2, 12)
    assert r[0, 0] == z[0, 0, :2, :2].mean()
    h = torch.tensor([[0.0, 1.0], [5.0, 5.0]])
    targets = torch.tensor([[0.0, 0.0], [4.0, 4.0], [10.0, 10.0]])
    assert route(h, targets).tolist() == [0, 1]
    assert nearest(torch.tensor([[0.9, 0.0]]), torch.tensor([[0.0, 0.0], [1.0, 0.0]])).tolist() == [
        1
    ]


def test_resize_square():
    x = torch.rand(1, 3, 30, 50)
    assert resize_square(x, 16).shape == (1, 3, 16, 16)
    assert resize_square(x[..., :16, :16], 16) is not None


def test_target_png_looks_like_the_tensor(tmp_path):
    (p,) = save_targets(["high"], 24, tmp_path)
    arr = np.asarray(Image.open(p))
    assert arr.shape == (24, 24, 3) and arr.dtype == np.uint8
