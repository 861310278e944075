"""tools/model_variant.py: a checkpoint's mixture as a model file, and a model's luma or
colour part."""

from __future__ import annotations

import importlib.util

import torch

from fastprotect.encoders import build_encoder
from fastprotect.filters import luma
from fastprotect.modelfile import load_model, read_header, summary
from fastprotect.module import MoPModule

from .conftest import REPO

spec = importlib.util.spec_from_file_location("model_variant", REPO / "tools" / "model_variant.py")
model_variant = importlib.util.module_from_spec(spec)
spec.loader.exec_module(model_variant)


def _checkpoint(
    tmp_path,
    isoluminant: bool,
    luma_eta: float = 0.0,
    luma_highpass: float = 0.0,
    luma_s_min: float | None = None,
    colour_weight: float = 0.0,
):
    m = MoPModule(
        build_encoder("tiny-random"),
        targets=["noise"],
        groups=0,
        resolution=16,
        view=32,
        isoluminant=isoluminant,
        luma_eta=luma_eta,
        luma_highpass=luma_highpass,
        strength_s_min=0.75,
        strength_luma_s_min=luma_s_min,
        strength_colour_weight=colour_weight,
    )
    with torch.no_grad():
        m.mop.global_delta.uniform_(-0.03, 0.03, generator=torch.Generator().manual_seed(0))
    state = {k: v for k, v in m.state_dict().items() if not k.startswith("encoder.")}
    path = tmp_path / "step.ckpt"
    torch.save({"hyper_parameters": dict(m.hparams), "state_dict": state, "global_step": 7}, path)
    return m, path


def test_a_checkpoint_becomes_the_same_model(tmp_path):
    m, ckpt = _checkpoint(tmp_path, isoluminant=True)
    out = tmp_path / "m.safetensors"
    argv = ["from-checkpoint", str(ckpt), str(out), "--encoder", "tiny-random"]
    assert model_variant.main(argv) == 0
    mop, doc = load_model(out)
    assert torch.equal(mop.global_delta, m.mop.global_delta)
    assert mop.config.isoluminant and mop.config.view == 32 and mop.config.targets == ["noise"]
    assert doc["recipe"]["steps"] == 7 and doc["inference"] == {"s_min": 0.75}
    assert model_variant.main(argv) == 2  # never over an existing file


def test_wrong_inputs_are_one_line_errors(tmp_path, capsys):
    _, ckpt = _checkpoint(tmp_path, isoluminant=False)
    out = str(tmp_path / "x.safetensors")
    assert (
        model_variant.main(["split", str(tmp_path / "none.safetensors"), out, "--part=luma"]) == 2
    )
    assert "none.safetensors: no such file" in capsys.readouterr().err
    # a tiny-random checkpoint read as TAEF2's: the mixture's shapes differ
    assert model_variant.main(["from-checkpoint", str(ckpt), out, "--encoder", "taef2"]) == 2
    assert "does not fit a mixture for --encoder taef2" in capsys.readouterr().err


def test_luma_and_colour_parts_add_up_to_the_model(tmp_path):
    m, ckpt = _checkpoint(tmp_path, isoluminant=False)
    full = tmp_path / "full.safetensors"
    model_variant.main(["from-checkpoint", str(ckpt), str(full), "--encoder", "tiny-random"])
    for part in ("luma", "colour"):
        model_variant.main(["split", str(full), "--part", part, str(tmp_path / f"{part}.st")])
    d = load_model(full)[0].global_delta
    y = load_model(tmp_path / "luma.st")[0].global_delta
    c = load_model(tmp_path / "colour.st")[0].global_delta
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])  # grey
    assert luma(c).abs().max() < 1e-7  # no luma change
    assert torch.allclose(y + c, d, atol=1e-7)
    assert read_header(tmp_path / "colour.st")["recipe"]["split"]["part"] == "colour"


def test_a_colour_first_models_luma_part_is_cut_to_a_lower_bound(tmp_path, capsys):
    m, ckpt = _checkpoint(tmp_path, isoluminant=True, luma_eta=4 / 255)
    full = tmp_path / "full.safetensors"
    model_variant.main(["from-checkpoint", str(ckpt), str(full), "--encoder", "tiny-random"])
    assert load_model(full)[0].config.luma_eta == 4 / 255
    cut = tmp_path / "cut.safetensors"
    assert model_variant.main(["luma-eta", str(full), "1.5", str(cut)]) == 0
    mop = load_model(cut)[0]
    assert mop.config.luma_eta == 1.5 / 255
    zero = torch.zeros(1, dtype=torch.long)
    d4, d15 = m.mop.perturbation(zero, zero), mop.perturbation(zero, zero)
    # where the budget clip (which may add some luma) cuts neither
    eta = mop.config.eta
    uncut = ((d4.abs() < eta - 1e-6) & (d15.abs() < eta - 1e-6)).all(1, keepdim=True)
    assert uncut.float().mean() > 0.3
    assert luma(d4)[uncut].abs().max() > 3 / 255  # the parameter's luma part is large enough
    assert luma(d15)[uncut].abs().max() <= 1.5 / 255 + 1e-6
    colour4, colour15 = d4 - luma(d4), d15 - luma(d15)
    assert (colour15 - colour4).abs().amax(1, keepdim=True)[uncut].max() < 1e-6  # same colour
    # never above the trained bound: that luma was never trained
    assert model_variant.main(["luma-eta", str(full), "5", str(tmp_path / "x.st")]) == 2
    assert "between 0 and the model's own 4.00/255" in capsys.readouterr().err


def test_cutting_all_luma_drops_the_high_pass_and_plain_models_are_refused(tmp_path, capsys):
    _, ckpt = _checkpoint(tmp_path, isoluminant=True, luma_eta=4 / 255, luma_highpass=1.0)
    full = tmp_path / "full.safetensors"
    model_variant.main(["from-checkpoint", str(ckpt), str(full), "--encoder", "tiny-random"])
    assert load_model(full)[0].config.luma_highpass == 1.0
    assert model_variant.main(["luma-eta", str(full), "0", str(tmp_path / "c.st")]) == 0
    c = load_model(tmp_path / "c.st")[0].config  # loads: a colour-only model again
    assert (
        c.luma_eta == 0
        and c.luma_highpass == 0
        and read_header(tmp_path / "c.st")["format_version"] == 3
    )
    _, plain = _checkpoint(tmp_path, isoluminant=True)
    iso = tmp_path / "iso.safetensors"
    model_variant.main(["from-checkpoint", str(plain), str(iso), "--encoder", "tiny-random"])
    assert model_variant.main(["luma-eta", str(iso), "1", str(tmp_path / "x.st")]) == 2
    assert "not a colour-first model" in capsys.readouterr().err


def test_a_models_own_luma_floor_reaches_the_protector(tmp_path, capsys):
    from fastprotect.protect import load_protector

    _, ckpt = _checkpoint(tmp_path, isoluminant=True, luma_eta=4 / 255)
    full = tmp_path / "full.safetensors"
    model_variant.main(["from-checkpoint", str(ckpt), str(full), "--encoder", "tiny-random"])
    assert load_protector(full, "jnd")[0].luma_s_min is None
    faded = tmp_path / "faded.safetensors"
    assert model_variant.main(["inference", str(full), str(faded), "--luma-s-min", "0.2"]) == 0
    assert read_header(faded)["inference"] == {"s_min": 0.75, "luma_s_min": 0.2}
    p = load_protector(faded, "jnd")[0]
    assert (p.s_min, p.luma_s_min) == (0.75, 0.2)
    assert load_protector(faded, "jnd", s_max=0.1)[0].luma_s_min == 0.1  # never above s_max
    # an s_min asked for is the floor of the whole perturbation, luma part included
    assert load_protector(faded, "jnd", s_min=0.9)[0].luma_s_min is None
    assert "luma part s_min 0.2" in summary(faded) and "luma part" not in summary(full)
    back = tmp_path / "back.safetensors"
    assert model_variant.main(["inference", str(faded), str(back), "--luma-s-min", "none"]) == 0
    assert read_header(back)["inference"] == {"s_min": 0.75}
    assert model_variant.main(["inference", str(full), str(tmp_path / "x"), "--s-min", "2"]) == 2
    assert "s_min must be between 0 and 1" in capsys.readouterr().err


def test_a_models_own_colour_weight_reaches_its_strength_map(tmp_path, capsys):
    from fastprotect.protect import load_protector

    _, ckpt = _checkpoint(tmp_path, isoluminant=True)
    full = tmp_path / "full.safetensors"
    model_variant.main(["from-checkpoint", str(ckpt), str(full), "--encoder", "tiny-random"])
    assert load_protector(full, "jnd")[0].strength_map.colour_weight == 0.0
    seen = tmp_path / "seen.safetensors"
    args = ["inference", str(full), str(seen), "--colour-weight", "1", "--s-min", "0.5"]
    assert model_variant.main(args) == 0
    assert read_header(seen)["inference"] == {"s_min": 0.5, "colour_weight": 1.0}
    assert "the JND map sees colour (weight 1)" in summary(seen)
    assert "sees colour" not in summary(full)
    p = load_protector(seen, "jnd")[0]
    assert p.strength_map.colour_weight == 1.0 and p.s_min == 0.5
    # an s_min asked for changes the floor, not what the map sees
    assert load_protector(seen, "jnd", s_min=0.9)[0].strength_map.colour_weight == 1.0
    assert load_protector(seen, "off")[0].strength_map is None
    # the colour-only perturbation on a flat colour image: the luma map lowers nothing,
    # the map that sees colour (at full weight, for this tiny model's faint perturbation)
    # brings it toward s_min
    x = torch.tensor([0.8, 0.6, 0.55]).view(1, 3, 1, 1).expand(1, 3, 64, 64).contiguous()
    with torch.no_grad():
        blind = (load_protector(full, "jnd", s_min=0.5)[0](x) - x).abs().mean()
        seeing = (p(x) - x).abs().mean()
    assert seeing < 0.8 * blind, (seeing, blind)
    # the exported graph is the same module, map included
    from fastprotect.export import export_protector, load_exported

    export_protector(p, tmp_path / "seen.pt")
    with torch.no_grad():
        exported = load_exported(tmp_path / "seen.pt")(x)
        assert (exported - p(x)).abs().max() <= 1 / 255
    back = tmp_path / "back.safetensors"
    assert model_variant.main(["inference", str(seen), str(back), "--colour-weight", "0"]) == 0
    assert read_header(back)["inference"] == {"s_min": 0.5}
    bad = ["inference", str(full), str(tmp_path / "x"), "--colour-weight", "3"]
    assert model_variant.main(bad) == 2
    assert "colour_weight must be between 0 and 1" in capsys.readouterr().err


def test_a_run_trained_with_a_luma_floor_keeps_it_in_its_model_file(tmp_path):
    _, ckpt = _checkpoint(tmp_path, isoluminant=True, luma_eta=4 / 255, luma_s_min=0.0)
    out = tmp_path / "m.safetensors"
    assert (
        model_variant.main(["from-checkpoint", str(ckpt), str(out), "--encoder", "tiny-random"])
        == 0
    )
    assert read_header(out)["inference"] == {"s_min": 0.75, "luma_s_min": 0.0}


def test_a_view_models_canvases_can_be_defined_at_another_view(tmp_path, capsys):
    from fastprotect.protector import Protector

    _, ckpt = _checkpoint(tmp_path, isoluminant=True)
    full = tmp_path / "full.safetensors"
    model_variant.main(["from-checkpoint", str(ckpt), str(full), "--encoder", "tiny-random"])
    wide = tmp_path / "wide.safetensors"
    assert model_variant.main(["view", str(full), "64", str(wide)]) == 0
    a, b = load_model(full)[0], load_model(wide)[0]
    assert (a.config.view, b.config.view) == (32, 64)
    assert torch.equal(a.global_delta, b.global_delta)
    # on a 64-px image the canvas (period 16 view px) repeats every 32 px at view 32 and
    # every 16 px at view 64
    enc = build_encoder("tiny-random")
    x = torch.tensor([0.5, 0.45, 0.55]).view(1, 3, 1, 1).expand(1, 3, 64, 64)  # not grey
    with torch.no_grad():
        da = Protector(enc, a, None)(x) - x
        db = Protector(enc, b, None)(x) - x
    assert db.abs().max() > 0.01
    torch.testing.assert_close(db[..., :16, :16], db[..., 16:32, 16:32])
    assert not torch.allclose(da[..., :16, :16], da[..., 16:32, 16:32], atol=1e-3)
    assert model_variant.main(["view", str(full), "4", str(tmp_path / "x.st")]) == 2
    assert "at least 8" in capsys.readouterr().err


def test_a_publish_cap_is_set_on_a_view_model(tmp_path, capsys):
    _, ckpt = _checkpoint(tmp_path, isoluminant=True)
    full = tmp_path / "full.safetensors"
    model_variant.main(["from-checkpoint", str(ckpt), str(full), "--encoder", "tiny-random"])
    capped = tmp_path / "capped.safetensors"
    assert model_variant.main(["publish-cap", str(full), "1.25", str(capped)]) == 0
    assert load_model(capped)[0].config.publish_cap == 1.25
    assert read_header(capped)["format_version"] == 5
    assert model_variant.main(["publish-cap", str(full), "0.5", str(tmp_path / "x.st")]) == 2
    assert "publish_cap must be 0 (none) or at least 1" in capsys.readouterr().err


def test_a_run_trained_through_the_colour_seeing_map_keeps_it_in_its_model_file(tmp_path):
    import pytest

    from fastprotect.protect import load_protector

    m, ckpt = _checkpoint(tmp_path, isoluminant=True, colour_weight=0.05)
    assert m.strength_map.colour_weight == 0.05  # training scales as protect will
    assert m.recipe()["strength_colour_weight"] == 0.05
    out = tmp_path / "m.safetensors"
    args = ["from-checkpoint", str(ckpt), str(out), "--encoder", "tiny-random"]
    assert model_variant.main(args) == 0
    assert read_header(out)["inference"] == {"s_min": 0.75, "colour_weight": 0.05}
    assert load_protector(out, "jnd")[0].strength_map.colour_weight == 0.05
    with pytest.raises(ValueError, match="strength_colour_weight must be in"):
        MoPModule(build_encoder("tiny-random"), targets=["noise"], groups=0,
                  resolution=16, strength_colour_weight=0.05)  # fmt: skip
