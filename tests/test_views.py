"""The attacker's view: periodic canvases mapped isotropically, training views, view models
end to end (protect, bound, export, model file)."""

from __future__ import annotations

import pytest
import torch

from fastprotect.encoders import TINY_CONFIG, DiffusersVAEEncoder
from fastprotect.export import export_protector, load_exported
from fastprotect.filters import luma
from fastprotect.losses import LatentLoss, VisibilityLoss
from fastprotect.modelfile import load_model, read_header, save_model, summary
from fastprotect.module import MoPModule
from fastprotect.mop import MixtureOfPerturbations, MoPConfig
from fastprotect.protector import Protector
from fastprotect.strength import JNDMap
from fastprotect.views import (
    MAX_FRAME_UPSCALE,
    AttackerViews,
    attacker_resize,
    canvas_to_image,
    frame_view,
    tile_canvas,
    view_frame,
)

R = 16


def _canvas(seed: int = 0, smooth: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if not smooth:
        return torch.rand(1, 3, R, R, generator=g) * 2 - 1
    t = torch.arange(R) * 2 * torch.pi / R
    wave = torch.sin(t)[:, None] * torch.cos(t)[None, :]
    return wave.expand(1, 3, R, R).clone()


@pytest.mark.parametrize(
    ("h", "w", "expected"),
    [(64, 96, (32, 48)), (96, 64, (48, 32)), (50, 50, (32, 32)), (7, 300, (32, 1372))],
)
def test_view_frame_puts_the_shorter_side_at_the_view_and_covers_the_image(h, w, expected):
    assert view_frame(h, w, 32) == expected


def test_tiling_is_periodic_and_starts_at_the_phase():
    c = _canvas()
    out = tile_canvas(c, 40, 37, top=5, left=3)
    i, j = torch.meshgrid(torch.arange(40), torch.arange(37), indexing="ij")
    assert torch.equal(out, c[:, :, (i + 5) % R, (j + 3) % R])


def test_image_at_the_view_size_carries_the_canvas_one_to_one():
    c = _canvas()
    out = canvas_to_image(c, 32, 48, view=32)
    assert torch.allclose(out, tile_canvas(c, 32, 48), atol=1e-6)


def test_a_larger_image_carries_the_pattern_scaled_alike_on_both_axes():
    # 2x the view on the short side, a 3:2 aspect: the pattern's period is 2R in both
    # directions (a stretch to the image would give different periods)
    out = canvas_to_image(_canvas(smooth=True), 64, 96, view=32)
    inner = out[..., 4:-36, 4:-36]
    assert torch.allclose(inner, out[..., 4 + 2 * R : -36 + 2 * R, 4:-36], atol=1e-5)
    assert torch.allclose(inner, out[..., 4:-36, 4 + 2 * R : -36 + 2 * R], atol=1e-5)
    assert not torch.allclose(inner, out[..., 4 + R : -36 + R, 4:-36], atol=1e-2)


def test_the_attacker_at_the_view_sees_the_canvas():
    # protect a 3x larger, non-square image; the attacker's resize to the view gives back
    # the canvas (smooth, so the two bilinear resizes cost little)
    c = _canvas(smooth=True) * 0.1
    x = torch.full((1, 3, 96, 144), 0.5)
    seen = attacker_resize(x + canvas_to_image(c, 96, 144, view=32), 32) - 0.5
    assert seen.shape[-2:] == (32, 48)
    assert (seen - tile_canvas(c, 32, 48)).abs().max() < 0.1 * 0.08


def _view_mop(view: int = 32, groups: int = 2) -> MixtureOfPerturbations:
    mop = MixtureOfPerturbations(
        MoPConfig(groups=groups, resolution=R, assignment_resolution=16, view=view)
    )
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        mop.global_delta.copy_(torch.randint(0, 2, mop.global_delta.shape, generator=g) * 2 - 1.0)
        mop.group_delta.copy_(torch.randint(0, 2, mop.group_delta.shape, generator=g) * 2 - 1.0)
        mop.project_()
        mop.centroids.normal_(generator=g)
        mop.target_entropy.uniform_(0, 4, generator=g)
        mop.targets.random_(0, 256, generator=g)
    return mop


@pytest.fixture(scope="module")
def encoder():
    return DiffusersVAEEncoder(config=TINY_CONFIG)


@pytest.mark.parametrize("size", [(1, 1), (7, 300), (33, 17), (64, 96)])
@pytest.mark.parametrize("adaptive", [False, True])
def test_view_model_keeps_the_bound_after_8bit_rounding(encoder, size, adaptive):
    p = Protector(encoder, _view_mop(), JNDMap() if adaptive else None)
    g = torch.Generator().manual_seed(0)
    x8 = torch.randint(0, 256, (1, 3, *size), generator=g)
    with torch.no_grad():
        out = p(x8.float() / 255)
    assert out.shape == x8.shape
    assert ((out * 255).round().long() - x8).abs().max() <= 8


def test_view_model_target_image_is_mapped_like_the_perturbation():
    mop = _view_mop()
    t = torch.tensor([1])
    y = mop.target_image(t, (64, 96))
    expected = canvas_to_image(mop.targets[t].float() / 255, 64, 96, 32).clamp(0, 1)
    assert torch.allclose(y, expected)


@pytest.mark.parametrize("suffix", [".pt", ".pt2"])
def test_view_model_exports_equal_to_eager_at_every_size(encoder, tmp_path, suffix):
    p = Protector(encoder, _view_mop(), JNDMap())
    report = export_protector(p, tmp_path / f"g{suffix}", check_sizes=((40, 56), (33, 17), (1, 1)))
    assert max(report.max_abs_diff.values()) <= 1 / 255
    graph = load_exported(tmp_path / f"g{suffix}")
    x = torch.rand(1, 3, 70, 45)
    with torch.no_grad():
        assert (graph(x) - p(x)).abs().max() <= 1 / 255


def test_a_thin_strip_gets_a_frame_of_bounded_size(encoder, tmp_path, monkeypatch):
    """An image whose shorter side is under view / 16 is laid over a frame 16 times its
    size, not one at the view (a 1 x 4000 strip at view 512 would need 12 GB); every other
    image's frame is unchanged; the exported graph does the same."""
    assert MAX_FRAME_UPSCALE == 16
    assert frame_view(1, 4000, 512) == 16 and frame_view(31, 100, 512) == 496
    assert frame_view(32, 100, 512) == 512 and frame_view(2000, 3000, 512, 1.25) == 1600
    import fastprotect.views as views

    frames = []
    real = views.tile_canvas

    def recording(canvas, hv, wv, top=0, left=0):
        frames.append((int(hv), int(wv)))
        return real(canvas, hv, wv, top, left)

    monkeypatch.setattr(views, "tile_canvas", recording)
    p = Protector(encoder, _view_mop(), JNDMap())  # view 32: strips under 2 px are limited
    x8 = torch.randint(0, 256, (1, 3, 1, 3000), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = p(x8.float() / 255)
    assert frames == [(16, 48000)]  # not (32, 96000)
    assert ((out * 255).round().long() - x8).abs().max() <= 8
    monkeypatch.setattr(views, "tile_canvas", real)
    report = export_protector(p, tmp_path / "g.pt", check_sizes=((1, 300), (2, 5), (40, 56)))
    assert max(report.max_abs_diff.values()) <= 1 / 255


def test_view_model_file_round_trips_as_format_2(tmp_path, encoder):
    mop = _view_mop(view=48)
    path = save_model(mop, tmp_path / "m.safetensors", {"kind": "test"})
    doc = read_header(path)
    assert doc["format_version"] == 2 and doc["config"]["view"] == 48
    loaded, _ = load_model(path)
    assert loaded.config.view == 48
    x = torch.rand(1, 3, 50, 80)
    with torch.no_grad():
        a = Protector(encoder, mop, None)(x)
        b = Protector(encoder, loaded, None)(x)
    assert torch.equal(a, b)


def test_legacy_model_files_stay_format_1_without_a_view(tmp_path):
    mop = MixtureOfPerturbations(MoPConfig(groups=1, resolution=R))
    path = save_model(mop, tmp_path / "m.safetensors", {"kind": "test"})
    doc = read_header(path)
    assert doc["format_version"] == 1
    assert load_model(path)[0].config.view == 0


def test_training_view_at_scale_one_is_the_canvas_crop_and_targets_move_with_it():
    views = AttackerViews(scales=(1, 1), publish=(1, 1))
    c, y = _canvas(0), _canvas(1)
    d, t = views(c, y, crop=24, g=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    views.sample(g)
    top, left = (int(v) for v in torch.randint(R, (2,), generator=g))
    # crop 24 needs a 26-px frame; the crop is its centre (offset 1)
    assert torch.allclose(d[0], tile_canvas(c, 26, 26, top, left)[0, :, 1:25, 1:25], atol=1e-6)
    assert torch.allclose(t[0], tile_canvas(y, 26, 26, top, left)[0, :, 1:25, 1:25], atol=1e-6)


def test_training_view_at_scale_two_doubles_the_period():
    views = AttackerViews(scales=(2, 2), publish=(1, 1))
    d, _ = views(_canvas(smooth=True), _canvas(smooth=True), crop=64)
    assert d.shape == (1, 3, 64, 64)
    assert torch.allclose(d[..., :, : 64 - 2 * R], d[..., :, 2 * R :], atol=1e-5)


def test_training_views_are_differentiable_and_publishing_blurs_only_the_perturbation():
    views = AttackerViews(scales=(0.75, 2.0), publish=(2.0, 3.0), filters=["bicubic"])
    c = _canvas().requires_grad_(True)
    d, y = views(c.expand(3, -1, -1, -1), _canvas(1).expand(3, -1, -1, -1), crop=32)
    assert d.shape == y.shape == (3, 3, 32, 32)
    d.sum().backward()
    assert c.grad is not None and c.grad.abs().sum() > 0
    assert y.min() >= -1 and y.max() <= 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scales": (0, 1)}, "view scales"),
        ({"publish": (2, 1)}, "publish"),
        ({"filters": ["lanczos"]}, "filters"),
    ],
)
def test_bad_view_settings_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AttackerViews(**kwargs)


def test_view_module_trains_toward_the_target_views(encoder):
    m = MoPModule(
        encoder,
        resolution=R,
        groups=1,
        view=32,
        strength_s_min=0.5,
        losses=[LatentLoss(), VisibilityLoss(0.1)],
    )
    m.prepare_targets()
    x = torch.rand(2, 3, R, R)
    target = torch.tensor([0, 2])
    x_hat, y = m.protect_views(x, target, torch.tensor([0, 0]))
    assert x_hat.shape == y.shape == x.shape
    # the strength map only lowers the perturbation: at most eta everywhere
    assert (x_hat - x).abs().max() <= m.mop.config.eta + 1e-6
    out = m._terms(m._loss_inputs(x, x_hat, target, y))
    out["loss"].backward()
    assert m.mop.global_delta.grad.abs().sum() > 0
    assert set(out) == {"latent", "visibility", "loss"}
    recipe = m.recipe()
    assert recipe["views"]["scales"] == [0.75, 2.0] and recipe["strength_s_min"] == 0.5


def test_training_scales_the_luma_part_as_protect_does(encoder):
    """``strength_luma_s_min`` in training is ``Protector.luma_s_min`` at protect time: the
    same scaled perturbation for the same image and perturbation."""
    from fastprotect.protector import Protector
    from fastprotect.strength import JNDMap

    m = MoPModule(encoder, resolution=R, groups=1, strength_s_min=0.75, strength_luma_s_min=0.1)
    p = Protector(encoder, m.mop, JNDMap(), s_min=0.75, luma_s_min=0.1)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, R, R, generator=g)
    x[..., : R // 2] = torch.tensor([0.5, 0.4, 0.6]).view(1, 3, 1, 1)  # a flat half
    # at the full budget: where the luma part fades, the colour part alone can exceed it
    # ((-8, -8, +8)/255 has luma -3.2/255), and both clip it
    eta = m.mop.config.eta
    delta = (torch.randint(0, 2, (1, 3, R, R), generator=g) * 2 - 1) * eta
    trained = m._strength(x, delta)
    assert trained.abs().max() <= eta + 1e-7
    torch.testing.assert_close(trained, p.scale(x, delta.clone()))
    plain = MoPModule(encoder, resolution=R, groups=1, strength_s_min=0.75)._strength(x, delta)
    assert not torch.allclose(trained, plain)  # the floor did something: the flat half


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"view": -1}, "view"),
        ({"views": AttackerViews()}, "view size"),
        ({"strength_s_min": 2}, "s_min"),
        ({"strength_luma_s_min": 0.5}, "needs strength_s_min"),
    ],
)
def test_bad_module_view_settings_are_clear_errors(encoder, kwargs, match):
    with pytest.raises(ValueError, match=match):
        MoPModule(encoder, resolution=R, **kwargs)


def test_a_models_own_s_min_is_the_default_and_an_explicit_one_wins(tmp_path):
    from fastprotect.modelfile import compact_copy, summary
    from fastprotect.protect import load_protector

    mop = _view_mop()
    ident = DiffusersVAEEncoder(config=TINY_CONFIG).identity()
    own = save_model(mop, tmp_path / "own.safetensors", ident, inference={"s_min": 0.8})
    plain = save_model(mop, tmp_path / "plain.safetensors", ident)
    assert load_protector(own, "jnd")[0].s_min == 0.8
    assert load_protector(own, "jnd", s_min=0.6)[0].s_min == 0.6
    assert load_protector(plain, "jnd")[0].s_min == 0.5
    assert "s_min 0.8" in summary(own) and "view        32 px" in summary(own)
    assert "(the general default)" in summary(plain)
    # the compact copy keeps it, or takes a new one
    kept = compact_copy(own, tmp_path / "kept.safetensors")
    assert read_header(kept)["inference"] == {"s_min": 0.8}
    changed = compact_copy(own, tmp_path / "new.safetensors", inference={"s_min": 0.7})
    assert load_protector(changed, "jnd")[0].s_min == 0.7


def _isoluminant_mop(groups: int = 2) -> MixtureOfPerturbations:
    """Random perturbations inside the budget (not saturated signs, whose colour part is
    zero wherever the clip does not cut), global and group summing to at most 0.75 eta."""
    mop = _view_mop(groups=groups)
    mop.config.isoluminant = True
    eta, g = mop.config.eta, torch.Generator().manual_seed(3)
    with torch.no_grad():
        mop.global_delta.uniform_(-eta / 2, eta / 2, generator=g)
        mop.group_delta.uniform_(-eta / 4, eta / 4, generator=g)
    return mop


@pytest.mark.parametrize("groups", [0, 2])
def test_isoluminant_perturbation_has_no_luma_and_keeps_the_budget(groups):
    mop = _isoluminant_mop(groups)
    target, group = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 0]) * min(groups, 1)
    delta = mop.perturbation(target, group)
    eta = mop.config.eta
    assert delta.abs().max() <= eta + 1e-7
    # the clip to the budget leaves some luma where a channel was cut; where none was,
    # the luma change is zero, and the colour change is not
    uncut = (delta.abs() < eta - 1e-7).all(1, keepdim=True)
    y = luma(delta)
    assert uncut.float().mean() > 0.5
    assert y[uncut].abs().max() < 1e-7
    assert delta.abs().amax(1, keepdim=True)[uncut].mean() > eta / 4
    # the full (unclipped) model would carry luma: the option is what removes it
    mop.config.isoluminant = False
    assert luma(mop.perturbation(target, group))[uncut].abs().max() > eta / 10


def test_luma_eta_bounds_the_luma_part_and_keeps_the_colour_part():
    mop = _isoluminant_mop(groups=2)
    target, group = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 0])
    colour_only = mop.perturbation(target, group)
    mop.config.luma_eta = 2 / 255
    delta = mop.perturbation(target, group)
    eta = mop.config.eta
    assert delta.abs().max() <= eta + 1e-7
    uncut = (delta.abs() < eta - 1e-7).all(1, keepdim=True)
    y = luma(delta)
    assert uncut.float().mean() > 0.5
    # where the budget clip did not cut: luma within luma_eta and reaching it (the random
    # parameter's luma part is often larger), colour exactly the colour-only model's
    assert y[uncut].abs().max() <= 2 / 255 + 1e-6
    assert y[uncut].abs().max() > 1.9 / 255
    chroma, chroma0 = delta - y, colour_only - luma(colour_only)
    both = uncut & (colour_only.abs() < eta - 1e-7).all(1, keepdim=True)
    assert (chroma - chroma0).abs().amax(1, keepdim=True)[both].max() < 1e-6


def test_luma_eta_is_checked_and_needs_an_isoluminant_model(tmp_path, encoder):
    with pytest.raises(ValueError, match="luma_eta must be in"):
        MoPConfig(eta=8 / 255, isoluminant=True, luma_eta=9 / 255)
    with pytest.raises(ValueError, match="isoluminant model only"):
        MoPConfig(luma_eta=1 / 255)
    mop = _isoluminant_mop()
    mop.config.luma_eta = 3 / 255
    path = save_model(mop, tmp_path / "m.safetensors", {"kind": "test"})
    doc = read_header(path)
    assert doc["format_version"] == 4 and doc["config"]["luma_eta"] == 3 / 255
    assert "luma changes at most 3.00/255" in summary(path)
    loaded, _ = load_model(path)
    assert loaded.config.luma_eta == 3 / 255
    x = torch.rand(1, 3, 50, 80)
    with torch.no_grad():
        assert torch.equal(Protector(encoder, mop, None)(x), Protector(encoder, loaded, None)(x))
    # a colour-only model does not name it, so format-3 readers still read that one
    iso = save_model(_isoluminant_mop(), tmp_path / "iso.safetensors", {"kind": "test"})
    assert "luma_eta" not in read_header(iso)["config"]


def test_luma_highpass_keeps_the_low_frequencies_out_of_the_luma_part(tmp_path, encoder):
    mop = _isoluminant_mop(groups=0)
    mop.config.luma_eta, mop.config.luma_highpass = 4 / 255, 1.0
    zero = torch.zeros(1, dtype=torch.long)
    eta = mop.config.eta
    with torch.no_grad():  # a smooth grey ramp plus a little colour: all of its luma is slow
        ramp = torch.linspace(-1, 1, R).view(1, 1, 1, R) * torch.ones(1, 3, R, 1) * (3 / 255)
        colour = torch.tensor([1.0, -0.5, -0.5]).view(1, 3, 1, 1) * (2 / 255)
        mop.global_delta.copy_(ramp + colour)
        y_smooth = luma(mop.perturbation(zero, zero))
        mop.config.luma_highpass = 0.0
        y_plain = luma(mop.perturbation(zero, zero))
    assert y_plain.abs().max() > 2.5 / 255  # without the high-pass the ramp passes
    # with it only the ramp's wrap-around edge (the canvas tiles) is left
    interior = y_smooth[..., :, 4:-4]  # the kernel reaches 3 px
    assert interior.abs().max() < 0.05 / 255
    # random parameters: the luma part has no mean (the periodic blur keeps the sum) and
    # stays within its bound where the budget clip does not cut
    mop.config.luma_highpass = 1.0
    with torch.no_grad():
        mop.global_delta.uniform_(-eta / 2, eta / 2, generator=torch.Generator().manual_seed(5))
        d = mop.perturbation(zero, zero)
    uncut = (d.abs() < eta - 1e-7).all(1, keepdim=True)
    assert luma(d)[uncut].abs().max() <= 4 / 255 + 1e-6 and luma(d).abs().max() > 1 / 255
    assert abs(luma(d).mean()) < 0.05 / 255
    with pytest.raises(ValueError, match="needs luma_eta > 0"):
        MoPConfig(isoluminant=True, luma_highpass=1.0)
    path = save_model(mop, tmp_path / "hp.safetensors", {"kind": "test"})
    doc = read_header(path)
    assert doc["format_version"] == 4 and doc["config"]["luma_highpass"] == 1.0
    assert "high-passed (sigma 1 px)" in summary(path)
    loaded, _ = load_model(path)
    p = Protector(encoder, loaded, JNDMap())
    x = torch.rand(1, 3, 45, 70)
    with torch.no_grad():
        assert torch.equal(p(x), Protector(encoder, mop, JNDMap())(x))
    report = export_protector(p, tmp_path / "g.pt", check_sizes=((40, 56), (1, 1)))
    assert max(report.max_abs_diff.values()) <= 1 / 255


def test_a_luma_floor_fades_the_luma_part_on_flat_regions_and_exports(tmp_path, encoder):
    mop = _isoluminant_mop(groups=0)
    mop.config.luma_eta = 4 / 255
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a grey +-4/255 pattern: a luma change the JND map calls visible
        mop.global_delta.copy_((torch.randint(0, 2, (1, 1, R, R), generator=g) * 2 - 1) * 4 / 255)
        mop.global_delta.add_(torch.tensor([1.0, -0.5, -0.5]).view(1, 3, 1, 1) * 2 / 255)
    plain = Protector(encoder, mop, JNDMap(), s_min=0.75)
    faded = Protector(encoder, mop, JNDMap(), s_min=0.75, luma_s_min=0.0)
    flat = torch.tensor([0.5, 0.45, 0.55]).view(1, 3, 1, 1).expand(1, 3, 45, 70).contiguous()
    with torch.no_grad():
        kept = (luma(plain(flat)) - luma(flat)).abs().mean()
        left = (luma(faded(flat)) - luma(flat)).abs().mean()
    assert kept > 2 / 255 and left < kept / 4
    # the floor is part of the same module: the exported graph does it too
    report = export_protector(faded, tmp_path / "f.pt", check_sizes=((40, 56), (1, 1)))
    assert max(report.max_abs_diff.values()) <= 1 / 255
    with torch.no_grad():
        assert (load_exported(tmp_path / "f.pt")(flat) - faded(flat)).abs().max() <= 1 / 255


def test_luma_eta_module_trains_a_luma_part(encoder):
    m = MoPModule(encoder, resolution=R, groups=0, view=32, isoluminant=True, luma_eta=2 / 255)
    m.prepare_targets()
    x = torch.rand(2, 3, R, R)
    target = torch.tensor([0, 2])
    x_hat, y = m.protect_views(x, target, torch.tensor([0, 0]))
    m._terms(m._loss_inputs(x, x_hat, target, y))["loss"].backward()
    grad = m.mop.global_delta.grad
    # unlike a colour-only model, the loss now depends on a grey change of the parameter
    assert grad.sum(1).abs().max() > 1e-3 * grad.abs().max()


def test_isoluminant_model_protects_without_changing_luma_on_mid_tones(encoder):
    mop = _isoluminant_mop()
    with torch.no_grad():  # a perturbation small enough that the budget clip never cuts
        mop.global_delta.mul_(0.5)
        mop.group_delta.mul_(0.5)
    x = torch.rand(1, 3, 40, 70) * 0.5 + 0.25  # no clipping at 0 or 1 either
    with torch.no_grad():
        out = Protector(encoder, mop, JNDMap())(x)
    assert (out - x).abs().max() > 1 / 255
    assert (luma(out) - luma(x)).abs().max() < 1e-6


def test_isoluminant_model_file_is_format_3_and_round_trips(tmp_path, encoder):
    mop = _isoluminant_mop()
    path = save_model(mop, tmp_path / "m.safetensors", {"kind": "test"})
    doc = read_header(path)
    assert doc["format_version"] == 3 and doc["config"]["isoluminant"] is True
    assert "colour      isoluminant" in summary(path)
    # other models do not name the setting, so readers before format 3 still read them
    plain = save_model(_view_mop(), tmp_path / "plain.safetensors", {"kind": "test"})
    assert "isoluminant" not in read_header(plain)["config"]
    loaded, _ = load_model(path)
    assert loaded.config.isoluminant
    x = torch.rand(1, 3, 50, 80)
    with torch.no_grad():
        assert torch.equal(Protector(encoder, mop, None)(x), Protector(encoder, loaded, None)(x))


@pytest.mark.parametrize("universal", [False, True])
def test_isoluminant_model_exports_equal_to_eager(encoder, tmp_path, universal):
    mop = _isoluminant_mop()
    if universal:  # one target, no groups: nothing to choose
        mop = MixtureOfPerturbations(
            MoPConfig(targets=["noise"], groups=0, resolution=R, view=32, isoluminant=True)
        )
        with torch.no_grad():
            mop.global_delta.uniform_(-0.03, 0.03, generator=torch.Generator().manual_seed(2))
    p = Protector(encoder, mop, JNDMap())
    assert p.needs_choice is not universal
    report = export_protector(p, tmp_path / "g.pt", check_sizes=((40, 56), (1, 1)))
    assert max(report.max_abs_diff.values()) <= 1 / 255
    x = torch.rand(1, 3, 45, 70)
    with torch.no_grad():
        assert (load_exported(tmp_path / "g.pt")(x) - p(x)).abs().max() <= 1 / 255


def test_isoluminant_module_trains_only_the_colour_part(encoder):
    m = MoPModule(encoder, resolution=R, groups=0, view=32, isoluminant=True)
    assert m.mop.config.isoluminant
    m.prepare_targets()
    x = torch.rand(2, 3, R, R)
    target = torch.tensor([0, 2])
    x_hat, y = m.protect_views(x, target, torch.tensor([0, 0]))
    m._terms(m._loss_inputs(x, x_hat, target, y))["loss"].backward()
    grad = m.mop.global_delta.grad
    assert grad.abs().sum() > 0
    # a grey change of the parameter (the same on R, G and B) is removed with the luma, so
    # the loss cannot depend on it: per pixel, the gradient sums to zero over the channels
    # (nothing is cut by the clip at the start, where the parameter is zero)
    assert grad.sum(1).abs().max() < 1e-6 * grad.abs().max()


def test_a_model_file_newer_than_this_code_is_refused_clearly(tmp_path):
    import json

    from safetensors.torch import load_file, save_file

    from fastprotect.errors import ModelFileError

    path = save_model(_isoluminant_mop(), tmp_path / "m.safetensors", {"kind": "test"})
    doc = read_header(path)
    doc["format_version"] = 99
    newer = tmp_path / "newer.safetensors"
    save_file(load_file(str(path)), str(newer), metadata={"fastprotect": json.dumps(doc)})
    with pytest.raises(ModelFileError, match="format version 99 is newer.*upgrade"):
        load_model(newer)
    # a setting this code does not know, under a version it reads: a clear error too
    doc["format_version"] = 3
    doc["config"]["future_setting"] = 1
    unknown = tmp_path / "unknown.safetensors"
    save_file(load_file(str(path)), str(unknown), metadata={"fastprotect": json.dumps(doc)})
    with pytest.raises(ModelFileError, match="unknown model settings.*upgrade"):
        load_model(unknown)


def test_a_publish_cap_keeps_the_canvas_fine_on_large_images(encoder, tmp_path):
    """``publish_cap``: the canvas is laid over a frame of shorter side at least
    ``min(h, w) / cap``, so it is enlarged at most ``cap`` times; small images are as
    before; the model file is format 5; the exported graph does the same at every size."""
    from fastprotect.views import capped_view

    assert capped_view(1350, 2000, 512, 1.25) == 1080
    assert capped_view(600, 800, 512, 1.25) == 512 and capped_view(1350, 2000, 512) == 512
    with pytest.raises(ValueError, match="publish_cap"):
        MoPConfig(view=32, publish_cap=0.5)
    with pytest.raises(ValueError, match="publish_cap"):
        MoPConfig(view=0, publish_cap=1.25)
    mop = _view_mop()
    capped = _view_mop()
    capped.config.publish_cap = 1.25
    canvas = mop.global_delta[:1]
    # 128 px: uncapped, the 16-px canvas is enlarged 4x (period 64); capped, 1.25x
    # (a frame of 103 view px, period 16 * 128 / 103 = 19.9 px)
    free = canvas_to_image(canvas, 128, 128, 32)
    fine = canvas_to_image(canvas, 128, 128, 32, 1.25)
    a, b = (slice(16, 48), slice(16, 48)), (slice(80, 112), slice(80, 112))  # off the borders
    torch.testing.assert_close(free[..., a[0], a[1]], free[..., b[0], b[1]])
    assert not torch.allclose(fine[..., a[0], a[1]], fine[..., b[0], b[1]], atol=1e-3)
    small = torch.rand(1, 3, 36, 50)  # shorter side 36 < 32 * 1.25: the cap changes nothing
    with torch.no_grad():
        torch.testing.assert_close(
            Protector(encoder, capped, None)(small), Protector(encoder, mop, None)(small)
        )
    path = save_model(capped, tmp_path / "c.safetensors", {"kind": "test"})
    assert read_header(path)["format_version"] == 5
    assert "enlarged at most 1.25x" in summary(path)
    assert load_model(path)[0].config.publish_cap == 1.25
    assert (
        "publish_cap"
        not in read_header(save_model(mop, tmp_path / "m.st", {"kind": "t"}))["config"]
    )
    p = Protector(encoder, capped, JNDMap())
    report = export_protector(p, tmp_path / "g.pt", check_sizes=((40, 56), (90, 130), (1, 1)))
    assert max(report.max_abs_diff.values()) <= 1 / 255
    x = torch.rand(1, 3, 120, 75)
    with torch.no_grad():
        assert (load_exported(tmp_path / "g.pt")(x) - p(x)).abs().max() <= 1 / 255
        assert (p(x) - Protector(encoder, mop, JNDMap())(x)).abs().max() > 1 / 255


def test_training_views_follow_the_publish_cap(monkeypatch):
    """A draw that publishes the canvas enlarged p > cap times publishes it cap times
    instead, and the attacker, who shrinks by p, sees it scaled by s * cap / p."""
    views = AttackerViews()
    views.publish_cap = 1.25
    monkeypatch.setattr(views, "sample", lambda g=None: (1.5, 3.0, "bilinear"))
    seen = []
    monkeypatch.setattr(views, "view_of", lambda c, crop, s, p, *a, **k: seen.append((s, p)) or c)
    delta = torch.zeros(1, 3, R, R)
    views(delta, delta, R)
    assert seen[0] == pytest.approx((1.5 * 1.25 / 3.0, 1.25))
    assert views.describe()["publish_cap"] == 1.25
