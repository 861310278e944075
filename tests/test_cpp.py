"""The C++ example (tools/cpp) builds against the wheel's libtorch and matches Python."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from fastprotect.cli import main
from fastprotect.imageio import to_uint8
from fastprotect.protect import load_protector

from .conftest import DATA, REPO, needs_data, tiny_args

CXX = os.environ.get("CXX", "g++")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which(CXX) is None, reason=f"no C++ compiler ({CXX}) on PATH"),
]


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    out = tmp_path_factory.mktemp("cpp") / "protect"
    subprocess.run(
        ["bash", str(REPO / "tools" / "cpp" / "build.sh"), str(out)],
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("model")
    assert main(["fit", *tiny_args(tmp, "--trainer.max_steps=3", "--model.lr=0.05")]) == 0
    model = tmp / "model.safetensors"
    assert main(["export", str(model), "--out", str(tmp / "model.pt"), "--strength", "jnd"]) == 0
    return model, tmp / "model.pt"


def _python(model, rgb: np.ndarray) -> np.ndarray:
    protector, _ = load_protector(model, "jnd")
    x = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    with torch.no_grad():
        return to_uint8(protector(x[None])[0])


@needs_data
def test_cpp_output_equals_python_within_one_level(binary, graph, tmp_path):
    model, pt = graph
    photo = np.asarray(Image.open(sorted((DATA / "objects").iterdir())[0]).convert("RGB"))
    images = {
        "noise": np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8),
        "photo": photo[::4, ::4].copy(),
        "thin": np.random.default_rng(1).integers(0, 256, (1, 40, 3), dtype=np.uint8),
    }
    for name, rgb in images.items():
        src, dst = tmp_path / f"{name}.ppm", tmp_path / f"{name}-protected.ppm"
        Image.fromarray(rgb).save(src)
        run = subprocess.run(
            [str(binary), str(pt), str(src), str(dst)], capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        out = np.asarray(Image.open(dst)).astype(int)
        assert out.shape == rgb.shape
        assert np.abs(out - _python(model, rgb)).max() <= 1, name
        assert np.abs(out - rgb).max() <= 8, name  # within eta = 8/255
        if name == "noise":
            assert np.abs(out - rgb).max() > 0


def test_cpp_reads_16_bit_and_gray_pnm_and_rejects_bad_files(binary, graph, tmp_path):
    _, pt = graph
    gray = tmp_path / "gray.pgm"
    Image.fromarray(np.full((9, 11), 128, np.uint8)).save(gray)
    deep = tmp_path / "deep.ppm"
    pixels = np.full((5, 4, 3), 65535 // 2, ">u2")
    deep.write_bytes(b"P6\n# sixteen bits\n4 5\n65535\n" + pixels.tobytes())
    # a comment straight after a value ends it, as whitespace does (netpbm's rule)
    glued = tmp_path / "glued.ppm"
    glued.write_bytes(b"P6#c\n4#w\n5 255\n" + bytes([128]) * 60)
    for src in (gray, deep, glued):
        run = subprocess.run(
            [str(binary), str(pt), str(src), str(tmp_path / f"{src.stem}-out.ppm")],
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stderr
        assert (
            np.abs(np.asarray(Image.open(tmp_path / f"{src.stem}-out.ppm")).astype(int) - 128).max()
            <= 9
        )
    bad = tmp_path / "bad.ppm"
    bad.write_bytes(b"P6\n4 5\n255\n" + b"\x00" * 10)
    run = subprocess.run(
        [str(binary), str(pt), str(bad), str(tmp_path / "o.ppm")], capture_output=True, text=True
    )
    assert run.returncode == 1 and "bad.ppm: truncated pixel data" in run.stderr
    assert not (tmp_path / "o.ppm").exists()
    assert not [p.name for p in tmp_path.iterdir() if ".part" in p.name]
    run = subprocess.run(
        [str(binary), str(tmp_path / "none.pt"), str(gray), str(tmp_path / "q.ppm")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "none.pt: no such file" in run.stderr
    run = subprocess.run(
        [str(binary), str(pt), str(gray), str(gray)], capture_output=True, text=True
    )
    assert run.returncode == 2 and "refusing to overwrite" in run.stderr
    pt2 = tmp_path / "model.pt2"
    pt2.write_bytes(b"not TorchScript")
    run = subprocess.run(
        [str(binary), str(pt2), str(gray), str(tmp_path / "p.ppm")], capture_output=True, text=True
    )
    assert run.returncode == 2 and "export with --out model.pt" in run.stderr
