"""Export: TorchScript, lite interpreter and torch.export graphs equal the eager module."""

from __future__ import annotations

import pytest
import torch
import torchvision

import fastprotect.export as export_mod
from fastprotect.cli import main
from fastprotect.encoders import TinyAutoencoderEncoder
from fastprotect.export import ExportError, export_protector, load_exported
from fastprotect.mop import MixtureOfPerturbations, MoPConfig
from fastprotect.protect import load_protector
from fastprotect.protector import Protector
from fastprotect.strength import JNDMap, LPIPSMap

from .conftest import needs_data, needs_weights, tiny_args


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("model")
    # a floor of its own: the hook's graph must protect with it, as `protect` does
    args = tiny_args(tmp, "--trainer.max_steps=3", "--model.lr=0.05", "--model.strength_s_min=0.75")
    args += [
        "--trainer.callbacks+=fastprotect.callbacks.ExportGraph",
        "--trainer.callbacks.formats=[torchscript]",
        "--trainer.callbacks.strength=jnd",
    ]
    assert main(["fit", *args]) == 0
    return tmp / "model.safetensors"


def _images(*sizes, batch=1):
    g = torch.Generator().manual_seed(3)
    return [torch.rand(batch, 3, h, w, generator=g) for h, w in sizes]


@needs_data
@pytest.mark.parametrize("suffix", [".pt", ".ptl", ".pt2"])
def test_cli_export_reloads_equal_to_eager(model, tmp_path, suffix, capsys):
    out = tmp_path / f"graph{suffix}"
    assert main(["export", str(model), "--out", str(out), "--strength", "jnd"]) == 0
    assert "max |diff|" in capsys.readouterr().err
    graph = load_exported(out)
    protector, _ = load_protector(model, "jnd")
    with torch.no_grad():
        for x in _images((40, 56), (33, 17), (1, 1), (90, 3)):
            y = graph(x)
            assert y.shape == x.shape
            assert (y - protector(x)).abs().max().item() <= 1 / 255


@needs_data
def test_torchscript_graph_takes_a_batch(model, tmp_path):
    out = tmp_path / "g.pt"
    assert main(["export", str(model), "--out", str(out), "--strength", "off"]) == 0
    protector, _ = load_protector(model, "off")
    (x,) = _images((48, 40), batch=3)
    with torch.no_grad():
        assert (load_exported(out)(x) - protector(x)).abs().max().item() <= 1 / 255
        optimized = load_exported(out, optimize=True)  # frozen, oneDNN convolutions
        assert (optimized(x) - protector(x)).abs().max().item() <= 1 / 255


@needs_data
def test_export_hook_writes_the_graph_beside_the_model(model):
    graph_file = model.with_suffix(".pt")
    assert graph_file.is_file()
    protector, _ = load_protector(model, "jnd")
    (x,) = _images((64, 48))
    with torch.no_grad():
        assert (load_exported(graph_file)(x) - protector(x)).abs().max().item() <= 1 / 255


@needs_weights
def test_taef2_with_lpips_map_exports_to_every_format(tmp_path):
    """The real encoder and the LPIPS map (random AlexNet weights: the graph, not the values,
    is under test) survive tracing and torch.export at every size."""
    alexnet = tmp_path / "alexnet.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), alexnet)
    mop = MixtureOfPerturbations(
        MoPConfig(groups=2, resolution=32, assignment_resolution=64, latent_channels=32)
    )
    with torch.no_grad():
        mop.global_delta.uniform_(-4 / 255, 4 / 255)
        mop.group_delta.uniform_(-4 / 255, 4 / 255)
        mop.centroids.normal_()
        mop.target_entropy.uniform_(0, 5)
    protector = Protector(TinyAutoencoderEncoder("taef2"), mop, LPIPSMap(alexnet))
    for suffix in (".pt", ".pt2"):
        report = export_protector(protector, tmp_path / f"g{suffix}")
        assert max(report.max_abs_diff.values()) <= 1 / 255
        assert (1, 1) in report.max_abs_diff


@needs_data
def test_existing_output_is_refused_and_kept(model, tmp_path, capsys):
    out = tmp_path / "g.pt"
    out.write_bytes(b"keep me")
    assert main(["export", str(model), "--out", str(out), "--strength", "jnd"]) == 1
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert main(["export", str(model), "--out", str(out), "--strength", "jnd", "--overwrite"]) == 0
    assert out.read_bytes() != b"keep me"


@needs_data
def test_a_mismatching_graph_fails_and_leaves_nothing(model, tmp_path, monkeypatch):
    monkeypatch.setattr(export_mod, "compare", lambda *a, **k: {(8, 8): 0.5})
    protector, _ = load_protector(model, "jnd")
    with pytest.raises(ExportError, match="differs from the eager module"):
        export_protector(protector, tmp_path / "g.pt")
    assert list(tmp_path.iterdir()) == []


def test_bad_names_and_models_give_one_line(tmp_path, capsys):
    assert main(["export", "nope.safetensors", "--out", str(tmp_path / "g.onnx")]) == 2
    assert "cannot tell the format" in capsys.readouterr().err
    assert (
        main(["export", "m.safetensors", "--out", str(tmp_path / "g.pt"), "--format", "pt2"]) == 2
    )
    assert "should end in .pt2" in capsys.readouterr().err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    assert main(["export", str(bad), "--out", str(tmp_path / "g.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0]
    assert not (tmp_path / "g.pt").exists()


def test_jnd_map_needs_no_weights_and_traces():
    x = torch.rand(1, 3, 20, 30)
    with pytest.warns(FutureWarning):  # tracing is deprecated upstream
        graph = torch.jit.trace(JNDMap(), (x, x.flip(-1)))
    y = torch.rand(1, 3, 7, 9)
    assert torch.equal(graph(y, y.flip(-1)), JNDMap()(y, y.flip(-1)))
