"""``fastprotect protect``: file formats, metadata, and bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms

from fastprotect.cli import main
from fastprotect.imageio import ImageReadError, load_image

from .conftest import needs_data, tiny_args

EIGHT = 8  # eta = 8/255 in configs/tiny.yaml, s_max = 1


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("model")
    assert main(["fit", *tiny_args(tmp, "--trainer.max_steps=3", "--model.lr=0.05")]) == 0
    return tmp / "model.safetensors"


def _rgb(h=40, w=56, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def run(model, *args) -> int:
    return main(["protect", "--model", str(model), "--strength", "jnd", *map(str, args)])


@needs_data
def test_rgb_png_is_protected_within_the_bound(model, tmp_path):
    src = tmp_path / "in" / "a.png"
    src.parent.mkdir()
    Image.fromarray(_rgb()).save(src)
    assert run(model, src, "--out", tmp_path / "out") == 0
    out = np.asarray(Image.open(tmp_path / "out" / "a.png")).astype(int)
    diff = np.abs(out - np.asarray(Image.open(src)).astype(int))
    assert out.shape == (40, 56, 3) and 0 < diff.max() <= EIGHT


@needs_data
def test_alpha_is_kept_untouched_and_grayscale_becomes_rgb(model, tmp_path):
    rgba = np.dstack([_rgb(), np.random.default_rng(1).integers(0, 256, (40, 56), dtype=np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(_rgb()[..., 0], "L").save(tmp_path / "gray.png")
    Image.fromarray(_rgb()).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "pal.png")
    Image.fromarray(_rgb()).convert("CMYK").save(tmp_path / "cmyk.tiff")
    Image.fromarray(_rgb()[..., 0].astype(np.uint16) * 257).save(tmp_path / "deep.png")
    assert run(model, tmp_path, "--out", tmp_path / "out") == 0
    out = Image.open(tmp_path / "out" / "rgba.png")
    assert out.mode == "RGBA"
    assert np.array_equal(np.asarray(out)[..., 3], rgba[..., 3])
    for name in ["gray.png", "pal.png", "cmyk.png", "deep.png"]:
        assert Image.open(tmp_path / "out" / name).mode == "RGB", name


@needs_data
def test_exif_orientation_is_applied_and_icc_carried(model, tmp_path):
    im = Image.fromarray(_rgb(30, 50))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    exif[0x010F] = "TestCam"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    im.save(tmp_path / "rot.jpg", exif=exif, icc_profile=icc, quality=95)
    assert run(model, tmp_path / "rot.jpg", "--out", tmp_path / "out") == 0
    out = Image.open(tmp_path / "out" / "rot.png")
    assert out.size == (30, 50)  # width and height swapped by the orientation
    assert out.info.get("icc_profile") == icc
    assert out.getexif().get(0x0112) is None and out.getexif().get(0x010F) == "TestCam"


@needs_data
def test_one_bad_file_is_reported_and_the_batch_goes_on(model, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    Image.fromarray(_rgb()).save(tmp_path / "in" / "good.png")
    (tmp_path / "in" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    (tmp_path / "in" / "text.jpg").write_text("not an image")
    buf = io.BytesIO()
    Image.fromarray(_rgb()).save(buf, "PNG")
    (tmp_path / "in" / "truncated.png").write_bytes(buf.getvalue()[:200])
    code = run(model, tmp_path / "in", "--out", tmp_path / "out")
    assert code == 1
    err = capsys.readouterr().err
    for name in ["corrupt.png", "text.jpg", "truncated.png"]:
        assert f"failed: {tmp_path / 'in' / name}" in err
    assert "Traceback" not in err and "1 protected" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png"]  # no partials


@needs_data
def test_resume_never_overwrites_and_skips_its_own_output(model, tmp_path, capsys):
    for i in range(2):
        Image.fromarray(_rgb(seed=i)).save(tmp_path / f"{i}.png")
    out = tmp_path / "protected"  # inside the input tree
    assert run(model, tmp_path, "--out", out) == 0
    first = (out / "0.png").read_bytes()
    assert run(model, tmp_path, "--out", out) == 1  # exists, no --skip-existing
    assert run(model, tmp_path, "--out", out, "--skip-existing") == 0
    assert "2 skipped" in capsys.readouterr().err
    assert (out / "0.png").read_bytes() == first
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "1.png"]  # no protected/protected


def test_missing_or_corrupt_model_is_one_line(tmp_path, capsys):
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"junk")
    assert (
        main(
            ["protect", str(tmp_path / "a.png"), "--model", str(bad), "--out", str(tmp_path / "o")]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "bad.safetensors" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_load_image_refuses_animations_and_bombs(tmp_path, monkeypatch):
    frames = [Image.fromarray(_rgb(seed=i)) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageReadError, match="animated"):
        load_image(tmp_path / "anim.gif")
    Image.fromarray(_rgb(100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageReadError, match="decompression bomb"):
        load_image(tmp_path / "big.png")


def test_tiny_and_thin_images(tmp_path):
    for size in [(1, 1), (1, 300), (300, 2)]:
        Image.fromarray(_rgb(*size)).save(tmp_path / "t.png")
        assert load_image(tmp_path / "t.png").rgb.shape == (3, *size)
