"""The protect-only install: protect, demo, info and export run without the training
packages (Lightning, diffusers, W&B, LPIPS, torchvision, scikit-learn), and the training
commands say what to install instead of failing with a traceback.

The packages are blocked inside a subprocess of the full environment, which is what a
clean ``bash tools/setup.sh protect`` venv lacks (docs/performance.md measures that venv's
size and speed).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image

from .conftest import needs_weights

TRAINING_ONLY = (
    "lightning",
    "diffusers",
    "wandb",
    "lpips",
    "torchvision",
    "sklearn",
    "jsonargparse",
    "omegaconf",
    "matplotlib",
)
RUNNER = f"""
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {TRAINING_ONLY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Block())
from fastprotect.cli import main
code = main(sys.argv[1:])
leaked = sorted(m for m in {TRAINING_ONLY!r} if m in sys.modules)
assert not leaked, leaked
sys.exit(code)
"""


def slim(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", RUNNER, *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


@needs_weights
def test_protect_demo_info_export_need_no_training_packages(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    run = slim("protect", tmp_path / "a.png", "--out", tmp_path / "out")  # strength auto
    assert run.returncode == 0, run.stderr
    assert "strength map: jnd" in run.stderr
    out = np.asarray(Image.open(tmp_path / "out" / "a.png")).astype(int)
    assert 0 < np.abs(out - rgb).max() <= 8
    run = slim("demo", tmp_path / "a.png", "--out", tmp_path / "demo")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "demo" / "report.html").is_file()
    assert slim("info").returncode == 0
    run = slim("export", "--out", tmp_path / "m.pt")
    assert run.returncode == 0, run.stderr
    src = tmp_path / "data" / "objects"
    src.mkdir(parents=True)
    Image.fromarray(rgb).save(src / "b.png")
    ev = ["--split", "all", "--size", "32", "--transforms", "clean", "--out", tmp_path / "ev"]
    run = slim("evaluate", src, "--method", "mop", "--method", "sign", *ev)
    assert run.returncode == 0, run.stderr
    run = slim("protect", tmp_path / "a.png", "--out", tmp_path / "o2", "--strength", "lpips")
    assert run.returncode == 2 and "LPIPS needs the lpips and torchvision packages" in run.stderr


def test_training_commands_name_the_full_install(tmp_path):
    for command in ("fit", "predict"):
        run = slim(command, "--config", "x.yaml")
        assert run.returncode == 2, run.stderr
        assert f"'{command}' needs the training install" in run.stderr
        assert "Traceback" not in run.stderr


@needs_weights
def test_the_web_app_needs_no_training_packages():
    """``serve`` starts in the slim install: the app, its default model and the decoder
    load (uvicorn's loop is replaced by a stub that records the call)."""
    stub = "import uvicorn; uvicorn.run = lambda app, **kw: print('would serve', kw['port'])\n"
    runner = RUNNER.replace(
        "from fastprotect.cli import main", stub + "from fastprotect.cli import main"
    )
    run = subprocess.run(
        [sys.executable, "-c", runner, "serve", "--port", "7999"], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert "would serve 7999" in run.stdout
    assert "open http://127.0.0.1:7999/" in run.stderr
