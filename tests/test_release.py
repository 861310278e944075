"""The shipped default model: pinned bytes, no pickle, bounds, compact parity,
and every command using it when no model is named."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastprotect import release
from fastprotect.cli import main
from fastprotect.modelfile import ModelFileError, compact_copy, load_model, read_header
from fastprotect.weights import ChecksumError, sha256_file

from .conftest import needs_data, needs_weights, tiny_args

SHIPPED = release.ASSETS / release.FILE


def test_shipped_file_has_the_pinned_sha256_and_is_compact():
    assert SHIPPED.is_file(), "the shipped model is missing from fastprotect/assets"
    assert sha256_file(SHIPPED) == release.SHA256
    assert SHIPPED.stat().st_size <= 12 * 1000 * 1000
    assert release.default_model() == SHIPPED


def test_shipped_file_is_plain_safetensors_not_pickle():
    raw = SHIPPED.read_bytes()
    assert not raw.startswith(b"PK") and raw[:1] != b"\x80"  # neither a zip nor a pickle
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])  # plain JSON header, then raw tensor bytes
    assert header["global_delta"]["dtype"] == "F16" and header["group_delta"]["dtype"] == "F16"
    assert header["centroids"]["dtype"] == "F32"


def test_shipped_model_is_versioned_and_within_its_budget():
    mop, doc = load_model(SHIPPED)
    assert doc["release"] == {"name": release.NAME, "version": release.VERSION}
    assert doc["storage"] == "float16" and doc["encoder"]["name"] == "taef2"
    c = mop.config
    # v2: one universal colour-only perturbation at the attacker's 512-px view
    assert c.targets == ["noise"] and c.groups == 0
    assert c.view == 512 and c.isoluminant and c.luma_eta == 0 and c.publish_cap == 1.25
    assert c.eta == pytest.approx(8 / 255)
    assert mop.global_delta.dtype == torch.float32  # widened on load
    assert mop.global_delta.abs().max() <= c.radius_global + 1e-6
    assert mop.global_delta.abs().max() > 0.9 * c.radius_global  # trained, not zeros
    # the validation images were held out of its training
    assert set(doc["recipe"]["train_files"]).isdisjoint(doc["recipe"]["val_files"])


def test_earlier_release_is_still_packaged_and_named_by_its_release_name(tmp_path, monkeypatch):
    v1 = release.resolve_model("fastprotect-taef2-v1")
    assert v1 == release.ASSETS / "fastprotect-taef2-v1.safetensors" != SHIPPED
    assert sha256_file(v1) == release.RELEASES["1"]
    mop, doc = load_model(v1)
    assert doc["release"] == {"name": release.NAME, "version": "1"}
    assert mop.config.targets == ["low", "mid", "high"] and mop.config.groups == 4
    assert release.resolve_model(None) == release.resolve_model("") == SHIPPED
    with pytest.raises(
        ModelFileError, match="no release v9; the releases are fastprotect-taef2-v1"
    ):
        release.resolve_model("fastprotect-taef2-v9")
    assert release.resolve_model("fastprotect-taef2-v1.safetensors") == v1  # its file name
    # v1 changes luma, which is why the colour-only v2's grey-image warning names it
    assert not mop.config.isoluminant
    # a directory of that name is not a model file; a file of that name is one like any other
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fastprotect-taef2-v1").mkdir()
    assert release.resolve_model("fastprotect-taef2-v1") == v1
    (tmp_path / "fastprotect-taef2-v1.safetensors").write_bytes(b"mine")
    mine = release.resolve_model("fastprotect-taef2-v1.safetensors")
    assert mine == Path("fastprotect-taef2-v1.safetensors")
    # a path with a folder is never a release name
    assert release.resolve_model("sub/fastprotect-taef2-v9") == Path("sub/fastprotect-taef2-v9")


def test_missing_or_altered_asset_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(release, "ASSETS", tmp_path)
    with pytest.raises(ModelFileError, match="missing from this installation"):
        release.default_model()
    raw = SHIPPED.read_bytes()
    (tmp_path / release.FILE).write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))  # one bit flipped
    with pytest.raises(ChecksumError, match="reinstall"):
        release.default_model()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("model")
    assert main(["fit", *tiny_args(tmp, "--trainer.max_steps=3", "--model.lr=0.05")]) == 0
    return tmp / "model.safetensors"


@needs_data
def test_compact_copy_changes_no_pixel_by_more_than_one_level(tiny_model, tmp_path):
    from fastprotect.imageio import to_uint8
    from fastprotect.protect import load_protector

    small = compact_copy(tiny_model, tmp_path / "small.safetensors", {"name": "t", "version": "9"})
    assert small.stat().st_size < 0.6 * tiny_model.stat().st_size
    assert read_header(small)["release"]["version"] == "9"
    full, _ = load_protector(tiny_model, "jnd")
    compact, _ = load_protector(small, "jnd")
    x = torch.rand(3, 3, 61, 87, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = full(x), compact(x)
    assert (a - b).abs().max() <= 1 / 255
    for i in range(3):
        diff = np.abs(to_uint8(a[i]).astype(int) - to_uint8(b[i]).astype(int))
        assert diff.max() <= 1


@needs_data
def test_pack_model_keeps_the_models_other_settings_and_leaves_nothing_on_failure(
    tiny_model, tmp_path
):
    import subprocess
    import sys

    from .conftest import REPO

    source = compact_copy(
        tiny_model,
        tmp_path / "source.safetensors",
        inference={"s_min": 0.75, "luma_s_min": 0.3, "colour_weight": 0.05},
    )
    tool = [sys.executable, str(REPO / "tools" / "pack_model.py"), "--model", str(source)]
    out = tmp_path / "packed.safetensors"
    (tmp_path / "empty").mkdir()
    run = subprocess.run(
        [*tool, "--out", str(out), "--version", "9", "--data", str(tmp_path / "empty")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1 and "no images under" in run.stderr and not out.exists()
    (tmp_path / "data").mkdir()
    _image(tmp_path / "data" / "a.png")
    args = ["--out", str(out), "--version", "9", "--data", str(tmp_path / "data")]
    run = subprocess.run(
        [*tool, *args, "--s-min", "0.6", "--strength", "jnd"], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert read_header(out)["inference"] == {"s_min": 0.6, "luma_s_min": 0.3, "colour_weight": 0.05}


def _image(path, h=48, w=64, seed=0):
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)


@needs_weights
def test_protect_and_info_use_the_shipped_model_by_default(tmp_path, capsys):
    _image(tmp_path / "a.png")
    assert main(["protect", str(tmp_path / "a.png"), "--out", str(tmp_path / "o")]) == 0
    diff = np.abs(
        np.asarray(Image.open(tmp_path / "o" / "a.png")).astype(int)
        - np.asarray(Image.open(tmp_path / "a.png")).astype(int)
    )
    assert 0 < diff.max() <= 8
    capsys.readouterr()
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"release     {release.NAME} v{release.VERSION}" in out and "float16" in out


@needs_weights
def test_export_uses_the_shipped_model_by_default(tmp_path):
    from fastprotect.export import load_exported
    from fastprotect.protect import load_protector

    assert main(["export", "--out", str(tmp_path / "m.pt"), "--strength", "jnd"]) == 0
    graph = load_exported(tmp_path / "m.pt", "torchscript")
    eager, _ = load_protector(None, "jnd")
    x = torch.rand(1, 3, 40, 50, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (graph(x) - eager(x)).abs().max() <= 1 / 255


@needs_weights
def test_demo_protects_and_writes_a_report(tmp_path, capsys, monkeypatch):
    from fastprotect.encoders.taesd import TinyAutoencoderEncoder

    passes = []
    features = TinyAutoencoderEncoder.features

    def counted(self, x, layers=()):
        passes.append(tuple(x.shape[-2:]))
        return features(self, x, layers)

    monkeypatch.setattr(TinyAutoencoderEncoder, "features", counted)
    src = tmp_path / "in"
    src.mkdir()
    _image(src / "a.png", 48, 64, 0)
    _image(src / "b.png", 40, 40, 1)
    (src / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "demo"
    assert main(["demo", str(src), "--out", str(out), "--strength", "jnd"]) == 1  # broken.png
    err = capsys.readouterr().err
    assert "broken.png" in err
    assert sorted(p.name for p in (out / "protected").iterdir()) == ["a.png", "b.png"]
    page = (out / "report.html").read_text()
    assert "a.png" in page and "b.png" in page and "Not protected" in page
    assert f"{release.NAME} v{release.VERSION}" in page
    # three encoder passes per image: the original, the protected image and the noise floor
    # at the view. The shipped model is universal (one target, no groups), so protecting
    # needs no pass to choose; none for the latent pull's target, left to evaluate
    assert len(passes) == 6
    metrics = json.loads((out / "metrics.json").read_text())
    rows = {r["image"]: r for r in metrics["images"]}
    assert set(rows) == {"a.png", "b.png"} and len(metrics["failed"]) == 1
    for r in rows.values():
        assert 0 < r["max_change_levels"] <= 8 and r["psnr_db"] > 30
        assert r["target"] == "noise" and "latent_pull" not in r
        assert r["verdict"] in ("strong", "moderate", "weak") and r["noise_shift_ratio"] > 0
        assert isinstance(r["warnings"], list) and f"{r['verdict']}: latent shift" in page
        assert r["disruption_db"] == pytest.approx(
            r["recon_psnr_original_db"] - r["recon_psnr_protected_db"]
        )
    figures = list((out / "report_files").iterdir())
    assert len(figures) == 10  # five per image
    for f in figures:
        assert f.name in page
    # the report is never overwritten
    assert main(["demo", str(src / "a.png"), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


@needs_weights
def test_demo_links_any_file_name_and_refuses_an_unfinished_folder(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    _image(src / "h#1 ?.png", 40, 40, 2)
    out = tmp_path / "demo"
    assert main(["demo", str(src), "--out", str(out), "--strength", "jnd"]) == 0
    assert 'href="protected/h%231%20%3F.png"' in (out / "report.html").read_text()
    (out / "report.html").unlink()  # as an interrupted demo leaves its folder
    capsys.readouterr()
    assert main(["demo", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds images from an earlier demo that did not finish" in err
    assert "--overwrite" not in err  # no option demo lacks
    (tmp_path / "file").write_text("x")
    assert main(["demo", "--out", str(tmp_path / "file")]) == 2
    assert "is a file; name a folder" in capsys.readouterr().err


@needs_weights
def test_evaluate_takes_mop_without_a_path_as_the_shipped_model():
    from fastprotect.eval.run import parse_methods

    methods, ref = parse_methods(["mop", "sign"], "off", None, 1 / 255)
    assert [m.name for m in methods] == ["none", "shipped", "sign"]
    assert ref.mop.config.resolution == load_model(SHIPPED)[0].config.resolution


@needs_weights
def test_predict_config_uses_the_shipped_model_like_protect(tmp_path, capsys):
    from .conftest import REPO

    (tmp_path / "in").mkdir()
    _image(tmp_path / "in" / "a.png")
    common = [f"--data.inputs=[{tmp_path / 'in'}]", "--data.num_workers=0"]
    args = ["--config", str(REPO / "configs" / "protect.yaml"), "--model.strength=jnd"]
    args += [*common, f"--data.out_dir={tmp_path / 'pred'}", "--trainer.accelerator=cpu"]
    assert (
        main(["predict", *args, "--trainer.devices=1", "--trainer.enable_progress_bar=false"]) == 0
    )
    assert (
        main(["protect", str(tmp_path / "in"), "--strength", "jnd", "--out", str(tmp_path / "p")])
        == 0
    )
    assert (tmp_path / "pred" / "a.png").read_bytes() == (tmp_path / "p" / "a.png").read_bytes()


@needs_weights
def test_demo_without_decoder_weights_fails_before_writing_anything(tmp_path, monkeypatch, capsys):
    import os
    import urllib.error

    from fastprotect import weights

    only_encoder = tmp_path / "weights" / "taef2"
    only_encoder.mkdir(parents=True)
    real = Path(os.environ["FASTPROTECT_WEIGHTS_DIR"]) / "taef2" / "taef2_encoder.pth"
    (only_encoder / real.name).symlink_to(real)
    monkeypatch.setenv("FASTPROTECT_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv(weights.ENV_CACHE_DIR, str(tmp_path / "cache"))

    def offline(spec, dest):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(weights, "_download", offline)
    src = tmp_path / "in"
    src.mkdir()
    _image(src / "a.png", 48, 64, 0)
    out = tmp_path / "demo"
    assert main(["demo", str(src), "--out", str(out), "--strength", "jnd"]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and "taef2_decoder.pth not found" in err
    assert not (out / "protected").exists()  # failed before protecting


def test_report_calls_the_default_release_shipped_and_an_earlier_one_packaged():
    from fastprotect.demo import describe_model

    for version, word in ((release.VERSION, "shipped"), ("1", "packaged")):
        path = release.released_model(version)
        line = describe_model(read_header(path), path, "jnd", 0.5, 1.0)["model"]
        assert line == f"{release.NAME} v{version} ({word})"
