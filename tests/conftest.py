"""Shared test set-up: weights and data from ../shared (or $FASTPROTECT_SHARED), caches in
a temp dir, W&B offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# ../shared beside the checkout; FASTPROTECT_SHARED elsewhere (a staged copy on a GPU machine)
SHARED = Path(os.environ.get("FASTPROTECT_SHARED") or REPO.parent / "shared")
DATA = SHARED / "data"
WEIGHTS = SHARED / "weights"

os.environ.setdefault("FASTPROTECT_WEIGHTS_DIR", str(WEIGHTS))
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
torch.set_num_threads(min(2, torch.get_num_threads()))

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared images not found at {DATA}")
needs_weights = pytest.mark.skipif(
    not (Path(os.environ["FASTPROTECT_WEIGHTS_DIR"]) / "taef2" / "taef2_encoder.pth").is_file(),
    reason="TAEF2 weights not found (set FASTPROTECT_WEIGHTS_DIR)",
)


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory):
    """Assignments and downloads go to a per-session temp cache, never ~/.cache."""
    path = tmp_path_factory.mktemp("cache")
    old = os.environ.get("FASTPROTECT_CACHE_DIR")
    os.environ["FASTPROTECT_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("FASTPROTECT_CACHE_DIR", None)
    else:
        os.environ["FASTPROTECT_CACHE_DIR"] = old


def tiny_args(tmp_path: Path, *extra: str) -> list[str]:
    """CLI arguments of a tiny fit (configs/tiny.yaml) writing only under ``tmp_path``."""
    return [
        "--config",
        str(REPO / "configs" / "tiny.yaml"),
        f"--trainer.default_root_dir={tmp_path}",
        f"--data.data_dirs=[{DATA / 'objects'}]",
        f"--model.model_file={tmp_path / 'model.safetensors'}",
        "--trainer.enable_progress_bar=false",
        *extra,
    ]


@pytest.fixture(scope="session")
def model(tmp_path_factory):
    """A tiny model file (configs/tiny.yaml, 3 steps on the shared objects), trained once per
    test session and shared by the tests that only read it."""
    from fastprotect.cli import main

    tmp = tmp_path_factory.mktemp("model")
    assert main(["fit", *tiny_args(tmp, "--trainer.max_steps=3", "--model.lr=0.05")]) == 0
    return tmp / "model.safetensors"
