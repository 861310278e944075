"""The inference module: bound, shapes, strength maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastprotect.encoders import TINY_CONFIG, DiffusersVAEEncoder
from fastprotect.mop import MixtureOfPerturbations, MoPConfig
from fastprotect.protector import Protector
from fastprotect.strength import JNDMap, build_strength_map


@pytest.fixture(scope="module")
def protector_factory():
    enc = DiffusersVAEEncoder(config=TINY_CONFIG)
    cfg = MoPConfig(groups=2, resolution=32, assignment_resolution=16, latent_channels=4)
    mop = MixtureOfPerturbations(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        # saturated random perturbations: the worst case for the bound
        mop.global_delta.copy_(torch.randint(0, 2, mop.global_delta.shape, generator=g) * 2 - 1.0)
        mop.group_delta.copy_(torch.randint(0, 2, mop.group_delta.shape, generator=g) * 2 - 1.0)
        mop.project_()
        mop.centroids.normal_(generator=g)
        mop.target_entropy.uniform_(0, 4, generator=g)

    def make(strength, s_min=0.5, s_max=1.0, luma_s_min=None):
        return Protector(enc, mop, strength, s_min, s_max, luma_s_min)

    return make


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 70),
    w=st.integers(1, 70),
    seed=st.integers(0, 2**16),
    content=st.sampled_from(["noise", "flat", "black", "white", "edges"]),
    adaptive=st.booleans(),
    s_max=st.sampled_from([1.0, 0.75, 0.5]),
    luma_floor=st.sampled_from([None, 0.0, 0.3]),
)
def test_bound_holds_after_8bit_rounding(
    protector_factory, h, w, seed, content, adaptive, s_max, luma_floor
):
    g = torch.Generator().manual_seed(seed)
    if content == "noise":
        x8 = torch.randint(0, 256, (1, 3, h, w), generator=g)
    elif content == "flat":
        x8 = torch.full((1, 3, h, w), int(torch.randint(0, 256, (), generator=g)))
    elif content == "black":
        x8 = torch.zeros(1, 3, h, w, dtype=torch.long)
    elif content == "white":
        x8 = torch.full((1, 3, h, w), 255)
    else:
        x8 = (torch.arange(w).repeat(h, 1) % 2 * 255).expand(1, 3, h, w)
    x = x8.float() / 255
    luma_s_min = None if luma_floor is None else luma_floor * s_max
    p = protector_factory(
        JNDMap() if adaptive else None, s_min=0.5 * s_max, s_max=s_max, luma_s_min=luma_s_min
    )
    with torch.no_grad():
        out = p(x)
    assert out.shape == x.shape
    out8 = (out * 255).round().long()
    eta255 = s_max * p.mop.config.eta * 255
    assert (out8 - x8).abs().max().item() <= eta255 + 1e-6
    assert 0 <= out.min() and out.max() <= 1


def test_non_adaptive_uses_the_full_budget_on_mid_grey(protector_factory):
    p = protector_factory(None)
    x = torch.full((1, 3, 32, 32), 0.5)
    with torch.no_grad():
        d = (p(x) - x).abs()
    assert torch.isclose(d.max(), torch.tensor(8 / 255), atol=1e-6)


def test_adaptive_gives_less_to_flat_than_to_textured_regions(protector_factory):
    torch.manual_seed(0)
    x = torch.full((1, 3, 64, 64), 0.5)
    x[..., 32:] = torch.rand(1, 3, 64, 32)  # right half: strong texture
    p = protector_factory(JNDMap(), s_min=0.25, s_max=1.0)
    with torch.no_grad():
        d = (p(x) - x).abs()
    flat, textured = d[..., 4:60, 4:28].mean(), d[..., 4:60, 36:60].mean()
    assert textured > 1.5 * flat, (flat, textured)


def test_a_luma_floor_scales_the_luma_part_alone(protector_factory):
    """``luma_s_min``: where the map says fully visible (a flat mid-tone image), the colour
    part gets ``s_min`` and the luma part ``luma_s_min``; a floor equal to ``s_min`` is the
    plain map; on texture the luma part stays."""
    from fastprotect.filters import luma

    x = torch.tensor([0.5, 0.45, 0.55]).view(1, 3, 1, 1).expand(1, 3, 32, 32)  # flat, not grey
    with torch.no_grad():
        plain = protector_factory(JNDMap(), s_min=0.5)
        delta = plain.resized_perturbation(*plain.choose(x), x)
        seen = (JNDMap()(x, (x + delta).clamp(0, 1)) == 1).expand_as(x)  # S(1 - m) = s_min
        assert seen.float().mean() > 0.2
        faded = protector_factory(JNDMap(), s_min=0.5, luma_s_min=0.0)(x) - x
        expected = (0.5 * (delta - luma(delta))).clamp(-8 / 255, 8 / 255)
        torch.testing.assert_close(faded[seen], expected[seen])
        assert luma(faded)[seen[:, :1]].abs().max() < 1e-6
        same = protector_factory(JNDMap(), s_min=0.5, luma_s_min=0.5)(x)
        torch.testing.assert_close(same, plain(x))
        torch.manual_seed(0)
        t = torch.rand(1, 3, 32, 32)  # strong texture: the luma part stays
        kept = luma(protector_factory(JNDMap(), s_min=0.5, luma_s_min=0.0)(t) - t).abs().mean()
        assert kept > 0.5 * luma(plain(t) - t).abs().mean()
    with pytest.raises(ValueError, match="luma_s_min"):
        protector_factory(JNDMap(), s_min=0.5, luma_s_min=1.5)


def test_jnd_threshold_is_higher_on_dark_and_textured_backgrounds():
    jnd = JNDMap()
    mid = jnd.threshold(torch.full((1, 3, 16, 16), 0.5)).mean()
    dark = jnd.threshold(torch.full((1, 3, 16, 16), 0.02)).mean()
    checker = torch.tensor(np.indices((16, 16)).sum(0) % 2, dtype=torch.float32).expand(
        1, 3, 16, 16
    )
    textured = jnd.threshold(checker * 0.6 + 0.2).mean()
    assert dark > mid and textured > mid


def test_a_colour_weight_lets_the_jnd_map_see_a_colour_change():
    """A colour-only change (zero luma) is invisible to the luma map and seen with a colour
    weight, as a luma change of sqrt(weight) times its colour length; a luma-only change
    is measured the same either way."""
    from fastprotect.filters import luma

    x = torch.full((1, 3, 24, 24), 0.5)  # flat mid-grey
    colour = torch.tensor([2.0, -1.0, 0.0]).view(1, 3, 1, 1) / 255
    colour = colour - luma(colour)  # luma exactly 0
    length = float(colour.mul(255).pow(2).sum().sqrt())
    assert float(JNDMap()(x, x + colour).max()) == pytest.approx(0.0, abs=1e-5)
    for w in (0.05, 0.2):
        m = JNDMap(colour_weight=w)(x, x + colour)
        # in JND units at mid-grey (threshold about 3 levels)
        expected = min(1.0, w**0.5 * length / float(JNDMap().threshold(x).mean()))
        torch.testing.assert_close(m, torch.full_like(m, expected), atol=1e-4, rtol=1e-4)
    grey = torch.full((1, 3, 1, 1), 2 / 255)  # luma only
    torch.testing.assert_close(JNDMap(colour_weight=0.2)(x, x + grey), JNDMap()(x, x + grey))
    with pytest.raises(ValueError, match="colour_weight"):
        JNDMap(colour_weight=-1)
    assert build_strength_map("jnd", colour_weight=0.05)[0].colour_weight == 0.05


def test_auto_strength_map_falls_back_to_jnd_with_one_warning(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.delenv("FASTPROTECT_WEIGHTS_DIR", raising=False)
    with pytest.warns(UserWarning, match="JND map instead"):
        module, name = build_strength_map("auto")
    assert name == "jnd" and isinstance(module, JNDMap)
    with pytest.raises(FileNotFoundError, match="alexnet"):
        build_strength_map("lpips")


def test_bad_strength_settings():
    with pytest.raises(ValueError):
        build_strength_map("maybe")


def test_a_universal_model_protects_without_an_encoder_pass():
    """One target, no groups: nothing to choose, so ``protect`` never runs the encoder (the
    same output as with the choice made, which can only be target 0, group 0)."""

    class Counting(DiffusersVAEEncoder):
        calls = 0

        def latent(self, x):
            Counting.calls += 1
            return super().latent(x)

    enc = Counting(config=TINY_CONFIG)
    cfg = MoPConfig(targets=["noise"], groups=0, resolution=32, assignment_resolution=16)
    mop = MixtureOfPerturbations(cfg)
    with torch.no_grad():
        mop.global_delta.uniform_(-cfg.eta, cfg.eta, generator=torch.Generator().manual_seed(0))
    p = Protector(enc, mop, JNDMap())
    x = torch.rand(2, 3, 40, 56)
    assert not p.needs_choice
    with torch.no_grad():
        out = p(x)
        assert Counting.calls == 0
        zero = torch.zeros(2, dtype=torch.long)
        expected = p.scale(x, p.resized_perturbation(zero, zero, x)).add_(x).clamp_(0, 1)
    assert torch.equal(out, expected)
    # a model with a choice to make still encodes
    cfg2 = MoPConfig(groups=2, resolution=32, assignment_resolution=16, latent_channels=4)
    chooser = Protector(enc, MixtureOfPerturbations(cfg2))
    assert chooser.needs_choice
    with torch.no_grad():
        chooser(x)
    assert Counting.calls > 0
