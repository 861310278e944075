"""``fastprotect protect``: file formats, metadata, and bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms

from fastprotect.cli import main
from fastprotect.imageio import ImageReadError, load_image

from .conftest import needs_data

EIGHT = 8  # eta = 8/255 in configs/tiny.yaml, s_max = 1


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
def test_alpha_is_kept_untouched_and_grayscale_stays_grayscale(model, tmp_path):
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
    for name in ["pal.png", "cmyk.png"]:
        assert Image.open(tmp_path / "out" / name).mode == "RGB", name
    for name in ["gray.png", "deep.png"]:  # grayscale in, grayscale out, within the bound
        out = np.asarray(Image.open(tmp_path / "out" / name)).astype(int)
        assert Image.open(tmp_path / "out" / name).mode == "L", name
        diff = np.abs(out - np.asarray(Image.open(tmp_path / "gray.png")).astype(int))
        assert 0 < diff.max() <= EIGHT, name


@needs_data
def test_grey_la_keeps_its_alpha_and_rgb_grey_stays_grey(model, tmp_path):
    g = _rgb()[..., 1]
    alpha = np.random.default_rng(2).integers(0, 256, g.shape, dtype=np.uint8)
    Image.fromarray(np.dstack([g, alpha]), "LA").save(tmp_path / "la.png")
    Image.fromarray(np.dstack([g, g, g])).save(tmp_path / "greyrgb.png")  # grey, stored as RGB
    assert run(model, tmp_path, "--out", tmp_path / "out") == 0
    la = np.asarray(Image.open(tmp_path / "out" / "la.png"))
    assert Image.open(tmp_path / "out" / "la.png").mode == "LA"
    assert np.array_equal(la[..., 1], alpha)
    assert 0 < np.abs(la[..., 0].astype(int) - g).max() <= EIGHT
    rgb = np.asarray(Image.open(tmp_path / "out" / "greyrgb.png")).astype(int)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    assert 0 < np.abs(rgb[..., 0] - g).max() <= EIGHT


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
        path = tmp_path / "in" / name
        assert f"failed: {path}: " in err and f"{path}: {path}" not in err  # named once
    assert "Traceback" not in err and "1 protected" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png"]  # no partials


@needs_data
def test_resume_never_overwrites_and_skips_its_own_output(model, tmp_path, capsys):
    for i in range(2):
        Image.fromarray(_rgb(seed=i)).save(tmp_path / f"{i}.png")
    out = tmp_path / "protected"  # inside the input tree
    assert run(model, tmp_path, "--out", out) == 0
    first = (out / "0.png").read_bytes()
    capsys.readouterr()
    assert run(model, tmp_path, "--out", out) == 1  # exists, no --skip-existing
    assert "--overwrite replaces it, --skip-existing keeps it" in capsys.readouterr().err
    assert run(model, tmp_path, "--out", out, "--skip-existing") == 0
    assert "2 skipped" in capsys.readouterr().err
    assert (out / "0.png").read_bytes() == first
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "1.png"]  # no protected/protected
    # new settings replace the outputs only when asked
    assert run(model, tmp_path, "--out", out, "--overwrite", "--strength", "off") == 0
    assert "2 protected" in capsys.readouterr().err
    assert (out / "0.png").read_bytes() != first
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "1.png"]  # no temporaries left
    with pytest.raises(SystemExit):  # the two exclude each other
        run(model, tmp_path, "--out", out, "--overwrite", "--skip-existing")


@needs_data
def test_skip_existing_does_not_take_another_inputs_earlier_output(model, tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    Image.fromarray(_rgb(seed=1)).save(src / "x.jpg", quality=98)
    assert run(model, src, "--out", out) == 0  # x.jpg alone: written as out/x.png
    first = (out / "x.png").read_bytes()
    Image.fromarray(_rgb(seed=2)).save(src / "x.png")  # now x.png owns that name
    capsys.readouterr()
    assert run(model, src, "--out", out, "--skip-existing") == 1
    err = capsys.readouterr().err
    assert f"out/x.png exists but is the protected {src / 'x.jpg'} from an earlier run" in err
    assert "rerun with --overwrite" in err and "1 protected, 0 skipped, 1 failed" in err
    assert (out / "x.png").read_bytes() == first  # never overwritten without --overwrite
    assert (out / "x_jpg.png").exists()
    # once each output is its own input's, a rerun skips both
    assert run(model, src, "--out", out, "--overwrite") == 0
    capsys.readouterr()
    assert run(model, src, "--out", out, "--skip-existing") == 0
    assert "0 protected, 2 skipped, 0 failed" in capsys.readouterr().err


@needs_data
def test_same_names_get_distinct_outputs_and_gif_is_found(model, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for i, name in enumerate(["x.jpg", "x.png", "y.webp", "y.bmp", "z.gif"]):
        Image.fromarray(_rgb(seed=i)).save(src / name)
    assert run(model, src, "--out", tmp_path / "out") == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["x.png", "x_jpg.png", "y_bmp.png", "y_webp.png", "z.png"]
    # x.png (the input whose suffix is the output's) keeps its name
    out = np.asarray(Image.open(tmp_path / "out" / "x.png")).astype(int)
    assert np.abs(out - np.asarray(Image.open(src / "x.png")).astype(int)).max() <= EIGHT


@needs_data
def test_keep_format_writes_each_input_in_its_own_format(model, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    names = ["a.jpg", "b.PNG", "c.webp", "d.tif", "e.bmp", "f.gif"]
    for i, name in enumerate(names):
        Image.fromarray(_rgb(seed=i)).save(src / name)
    assert run(model, src, "--out", tmp_path / "out", "--keep-format", "--quality", "97") == 0
    assert "JPEG at quality" not in capsys.readouterr().err  # 95 and up measured no loss
    got = {p.name: Image.open(p).format for p in (tmp_path / "out").iterdir()}
    assert got == {
        "a.jpg": "JPEG", "b.PNG": "PNG", "c.webp": "WEBP", "d.tif": "TIFF", "e.bmp": "BMP",
        "f.png": "PNG",
    }  # fmt: skip
    for name in ["b.PNG", "c.webp", "d.tif", "e.bmp"]:  # lossless: the bound holds exactly
        out = np.asarray(Image.open(tmp_path / "out" / name).convert("RGB")).astype(int)
        diff = np.abs(out - np.asarray(Image.open(src / name).convert("RGB")).astype(int))
        assert 0 < diff.max() <= EIGHT, name


@needs_data
def test_jpeg_below_quality_95_is_warned_about(model, tmp_path, capsys):
    Image.fromarray(_rgb()).save(tmp_path / "a.jpg", quality=98)
    assert run(model, tmp_path / "a.jpg", "--out", tmp_path / "out", "--quality", "80") == 0
    assert "--format" not in capsys.readouterr().err  # PNG output: nothing to say
    args = ["--out", tmp_path / "out80", "--format", "jpeg", "--quality", "80"]
    assert run(model, tmp_path / "a.jpg", *args) == 0
    err = capsys.readouterr().err
    assert "warning: JPEG at quality 80 may weaken the protection" in err
    assert "prefer PNG or --quality 95" in err


@needs_data
def test_keep_format_tiff_inputs_stay_readable(model, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_rgb()).convert("CMYK").save(src / "cmyk.tif")
    Image.fromarray((_rgb()[..., 0] / 255).astype(np.float32), "F").save(src / "float.tif")
    assert run(model, src, "--out", tmp_path / "out", "--format", "keep") == 0
    cmyk = Image.open(tmp_path / "out" / "cmyk.tif")
    assert cmyk.format == "TIFF" and cmyk.mode == "RGB" and cmyk.size == (56, 40)
    grey = np.asarray(Image.open(tmp_path / "out" / "float.tif")).astype(int)
    assert grey.shape == (40, 56) and np.abs(grey - _rgb()[..., 0]).max() <= EIGHT


def test_quality_out_of_range_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["protect", str(tmp_path), "--quality", "150"])
    assert "JPEG quality must be 1 to 100, got 150" in capsys.readouterr().err


def test_strength_range_errors_name_the_option(tmp_path, capsys):
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    assert (
        main(["protect", str(tmp_path / "a.png"), "--s-min", "2", "--out", str(tmp_path / "o")])
        == 2
    )
    err = capsys.readouterr().err
    assert "--s-min must be between 0 and --s-max (1.0), got 2.0" in err
    assert (
        main(["protect", str(tmp_path / "a.png"), "--s-max", "1.5", "--out", str(tmp_path / "o")])
        == 2
    )
    assert "--s-max must be above 0 and at most 1, got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit):
        main(["protect", str(tmp_path), "--quality", "abc"])
    assert "JPEG quality must be a whole number, got 'abc'" in capsys.readouterr().err


@needs_data
def test_s_max_below_the_models_s_min_lowers_s_min_too(model, tmp_path):
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    assert run(model, tmp_path / "a.png", "--out", tmp_path / "o", "--s-max", "0.3") == 0
    out = np.asarray(Image.open(tmp_path / "o" / "a.png")).astype(int)
    assert np.abs(out - _rgb()).max() <= 2  # floor(255 * 0.3 * 8/255) = 2 levels


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


@needs_data
def test_tiff_layout_tags_stay_behind_and_large_exif_is_left_out_of_jpeg(model, tmp_path, capsys):
    """A TIFF input's layout tags (sizes, strips, compression, its ICC again) are not
    carried into the output's EXIF, its descriptive ones are; EXIF over the 64 KB a JPEG
    holds is left out of a JPEG output with a note, and kept in PNG."""
    src = tmp_path / "in"
    src.mkdir()
    tiff = Image.fromarray(_rgb(30, 50))
    tiff.save(src / "scan.tif", tiffinfo={0x010F: "ScanCo", 0x8298: "(c) the artist"})
    big = Image.Exif()
    big[0x010E] = "x" * 70_000  # a 70 kB image description
    Image.fromarray(_rgb(30, 50, seed=1)).save(src / "big.png", exif=big)
    assert run(model, src, "--out", tmp_path / "png") == 0
    exif = Image.open(tmp_path / "png" / "scan.png").getexif()
    assert exif.get(0x010F) == "ScanCo" and exif.get(0x8298) == "(c) the artist"
    assert not {0x0100, 0x0101, 0x0103, 0x0111, 0x0117} & set(exif), dict(exif)
    assert len(Image.open(tmp_path / "png" / "big.png").getexif()[0x010E]) == 70_000
    capsys.readouterr()
    assert run(model, src, "--out", tmp_path / "jpg", "--format", "jpeg") == 0
    err = capsys.readouterr().err
    assert f"{src / 'big.png'}: note: its EXIF (" in err and "was left out" in err
    assert "2 protected" in err and "Traceback" not in err
    assert 0x010E not in Image.open(tmp_path / "jpg" / "big.jpg").getexif()
    assert Image.open(tmp_path / "jpg" / "scan.jpg").getexif().get(0x010F) == "ScanCo"


@needs_data
def test_camera_mpo_is_its_first_frame_and_a_colour_key_becomes_alpha(model, tmp_path):
    photo, preview = _rgb(48, 64), _rgb(12, 16, seed=3)
    Image.fromarray(photo).save(
        tmp_path / "camera.jpg", "MPO", save_all=True, append_images=[Image.fromarray(preview)]
    )
    assert Image.open(tmp_path / "camera.jpg").n_frames == 2
    key = _rgb(40, 56, seed=4)
    key[:10] = (0, 255, 0)  # the transparent colour
    Image.fromarray(key).save(tmp_path / "key.png", transparency=(0, 255, 0))
    grey = key[..., 1].copy()
    Image.fromarray(grey, "L").save(tmp_path / "greykey.png", transparency=255)
    assert run(model, tmp_path, "--out", tmp_path / "out") == 0
    out = Image.open(tmp_path / "out" / "camera.png")
    assert out.size == (64, 48)
    first = np.asarray(Image.open(tmp_path / "camera.jpg").convert("RGB")).astype(int)
    assert np.abs(np.asarray(out).astype(int) - first).max() <= EIGHT
    rgba = Image.open(tmp_path / "out" / "key.png")
    assert rgba.mode == "RGBA"
    alpha = np.asarray(rgba)[..., 3]
    assert (alpha[:10] == 0).all() and (alpha[10:] == 255).all()
    la = Image.open(tmp_path / "out" / "greykey.png")
    assert la.mode == "LA" and np.array_equal(np.asarray(la)[..., 1], np.where(grey == 255, 0, 255))


@needs_data
def test_files_inside_out_are_never_taken_and_named_ones_are_said(model, tmp_path, capsys):
    """A shell-expanded glob names an earlier run's outputs one by one: they are not
    protected again (a second perturbation on the first), and the note names them."""
    art, out = tmp_path / "art", tmp_path / "art" / "protected"
    art.mkdir()
    Image.fromarray(_rgb()).save(art / "a.png")
    assert run(model, art / "a.png", "--out", out) == 0
    capsys.readouterr()
    # what `protect art/**/*.png --out art/protected` gets from the shell the second time
    assert run(model, art / "a.png", out / "a.png", "--out", out, "--skip-existing") == 0
    err = capsys.readouterr().err
    assert f"1 input(s) inside the output folder {out} were not taken ({out / 'a.png'})" in err
    assert "0 protected, 1 skipped" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]
    assert run(model, out / "a.png", "--out", out) == 1  # nothing else to do: a failure
    assert "name another --out to protect them" in capsys.readouterr().err


@needs_data
def test_an_unexpected_error_on_one_image_is_reported_and_the_batch_goes_on(
    model, tmp_path, capsys, monkeypatch
):
    from fastprotect.protector import Protector

    real = Protector.protect

    def failing(self, x, *args, **kwargs):
        if x.shape[-1] == 13:
            raise RuntimeError("can't allocate memory: you tried to allocate 3221225472 bytes")
        return real(self, x, *args, **kwargs)

    monkeypatch.setattr(Protector, "protect", failing)
    Image.fromarray(_rgb(20, 13)).save(tmp_path / "a_huge.png")
    Image.fromarray(_rgb()).save(tmp_path / "b_fine.png")
    assert run(model, tmp_path, "--out", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "a_huge.png: RuntimeError: can't allocate memory" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b_fine.png"]


@needs_data
def test_a_glob_takes_image_files_and_folders_as_a_folder_scan_does(model, tmp_path, capsys):
    src = tmp_path / "photos"
    (src / "trip").mkdir(parents=True)
    Image.fromarray(_rgb()).save(src / "a.png")
    Image.fromarray(_rgb(seed=1)).save(src / "trip" / "a.png")
    (src / "Thumbs.db").write_bytes(b"\x00\x00")
    (src / "notes.txt").write_text("not an image")
    (src / "trip" / "._a.png").write_bytes(b"\x00\x05\x16\x07")  # macOS's AppleDouble
    assert run(model, f"{src}/*", "--out", tmp_path / "out") == 0
    err = capsys.readouterr().err
    assert "2 protected, 0 skipped, 0 failed" in err and "notes.txt" not in err
    assert (tmp_path / "out" / "a.png").exists() and (tmp_path / "out" / "trip" / "a.png").exists()
    assert run(model, f"{src}/**", "--out", tmp_path / "deep") == 0  # the tree is kept
    found = sorted(
        str(p.relative_to(tmp_path / "deep")) for p in (tmp_path / "deep").rglob("*.png")
    )
    assert found == ["photos/a.png", "photos/trip/a.png"]
    assert run(model, f"{src}/*.txt", "--out", tmp_path / "out2") == 1
    assert "the glob matches no image file" in capsys.readouterr().err


def test_a_16_bit_colour_key_is_not_matched_against_8_bit_pixels(tmp_path):
    """Pillow reads a 16-bit RGB PNG as 8-bit RGB but keeps its tRNS key in 16-bit values:
    applying it would make the wrong pixels transparent, so it is left out, with a note."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + kind + data + crc

    w, h = 4, 2
    rows = b"".join(
        b"\x00" + b"".join(struct.pack(">HHH", 100 * (x + 1), 100, 100) for x in range(w))
        for _ in range(h)
    )
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
        + chunk(b"tRNS", struct.pack(">HHH", 100, 100, 100))  # the first column, in 16 bits
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    (tmp_path / "deep.png").write_bytes(png)
    image = load_image(tmp_path / "deep.png")
    assert image.alpha is None and image.rgb.shape == (3, 2, 4)
    assert image.notes == ["its 16-bit transparent colour was not kept: written opaque"]
