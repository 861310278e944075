"""``fastprotect predict``: protection as a Lightning predict job, equal to ``protect``."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from PIL import Image

from fastprotect.cli import main
from fastprotect.predict import ProtectDataset
from fastprotect.protect import Job, plan

from .conftest import REPO, needs_data

CONFIG = REPO / "configs" / "protect.yaml"


def _rgb(h=40, w=56, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _images(folder: Path) -> None:
    """Three PNGs of different sizes, one RGBA, one in a subfolder."""
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(_rgb(40, 56, 0)).save(folder / "a.png")
    Image.fromarray(_rgb(33, 21, 1)).save(folder / "sub" / "b.png")
    alpha = np.random.default_rng(2).integers(0, 256, (50, 30), dtype=np.uint8)
    Image.fromarray(np.dstack([_rgb(50, 30, 3), alpha]), "RGBA").save(folder / "c.png")


def predict(model, out, *inputs, extra=()) -> int:
    return main(
        [
            "predict",
            "--config",
            str(CONFIG),
            f"--model.model={model}",
            "--model.strength=jnd",
            f"--data.inputs=[{', '.join(map(str, inputs))}]",
            f"--data.out_dir={out}",
            "--data.num_workers=0",
            "--trainer.accelerator=cpu",
            "--trainer.devices=1",
            "--trainer.enable_progress_bar=false",
            *extra,
        ]
    )


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@needs_data
def test_predict_writes_the_same_bytes_as_protect(model, tmp_path, capsys):
    _images(tmp_path / "in")
    assert predict(model, tmp_path / "pred", tmp_path / "in", extra=["--data.num_workers=1"]) == 0
    err = capsys.readouterr().err
    assert "strength map: jnd" in err and "3 protected, 0 skipped, 0 failed" in err
    args = ["--model", str(model), "--strength", "jnd", "--out", str(tmp_path / "prot")]
    assert main(["protect", str(tmp_path / "in"), *args]) == 0
    pred, prot = _files(tmp_path / "pred"), _files(tmp_path / "prot")
    assert sorted(pred) == ["a.png", "c.png", "sub/b.png"]
    assert pred == prot
    assert Image.open(tmp_path / "pred" / "c.png").mode == "RGBA"


@needs_data
def test_bad_files_are_reported_and_the_rest_is_written(model, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    Image.fromarray(_rgb()).save(tmp_path / "in" / "good.png")
    (tmp_path / "in" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    buf = io.BytesIO()
    Image.fromarray(_rgb()).save(buf, "PNG")
    (tmp_path / "in" / "truncated.png").write_bytes(buf.getvalue()[:200])
    missing = tmp_path / "nothing*.png"
    assert predict(model, tmp_path / "out", tmp_path / "in", missing) == 1
    err = capsys.readouterr().err
    for bad in [tmp_path / "in" / "corrupt.png", tmp_path / "in" / "truncated.png", missing]:
        assert f"fastprotect: failed: {bad}: " in err
    assert "1 protected, 0 skipped, 3 failed" in err and "Traceback" not in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good.png"]  # no partial files


@needs_data
def test_skip_existing_resumes_and_never_overwrites(model, tmp_path, capsys):
    _images(tmp_path / "in")
    out = tmp_path / "out"
    assert predict(model, out, tmp_path / "in") == 0
    first = _files(out)
    (out / "a.png").unlink()  # as if interrupted before a.png
    capsys.readouterr()
    assert predict(model, out, tmp_path / "in") == 1  # existing outputs are failures
    err = capsys.readouterr().err
    assert f"failed: {tmp_path / 'in' / 'c.png'}: {out / 'c.png'} exists" in err
    assert "1 protected, 0 skipped, 2 failed" in err
    (out / "a.png").unlink()
    assert predict(model, out, tmp_path / "in", extra=["--data.skip_existing=true"]) == 0
    assert "1 protected, 2 skipped, 0 failed" in capsys.readouterr().err
    assert _files(out) == first


def test_bad_model_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"junk")
    assert predict(bad, tmp_path / "out", tmp_path) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert err.startswith("fastprotect: error: ") and "bad.safetensors" in err
    assert not (tmp_path / "out").exists()


def test_skip_existing_does_not_take_another_inputs_earlier_output(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    Image.fromarray(_rgb(20, 24, 1)).save(tmp_path / "in" / "x.jpg", quality=98)
    Image.fromarray(_rgb(20, 24, 2)).save(tmp_path / "in" / "x.png")
    (tmp_path / "in" / "x.webp").write_bytes(b"not an image")  # cannot decide, must not stop
    # an earlier run saw only x.jpg and wrote it as out/x.png
    Image.open(tmp_path / "in" / "x.jpg").save(tmp_path / "out" / "x.png")
    jobs, _ = plan([str(tmp_path / "in")], tmp_path / "out", "png")
    by_name = {j.source.name: j for j in jobs}
    assert by_name["x.png"].rivals == (tmp_path / "in" / "x.jpg", tmp_path / "in" / "x.webp")
    item = ProtectDataset(jobs, skip_existing=True)[jobs.index(by_name["x.png"])]
    assert not item.skipped
    assert f"is the protected {tmp_path / 'in' / 'x.jpg'} from an earlier run" in item.error
    # the output x.png's own input made: skipped as before
    Image.open(tmp_path / "in" / "x.png").save(tmp_path / "out" / "x.png")
    assert ProtectDataset(jobs, skip_existing=True)[jobs.index(by_name["x.png"])].skipped


def test_fewer_files_than_ranks_are_padded_with_empty_items(tmp_path):
    ds = ProtectDataset([Job(tmp_path / "a.png", tmp_path / "out" / "a.png")], min_length=3)
    shares = [list(UnrepeatedDistributedSampler(ds, 3, r, shuffle=False)) for r in range(3)]
    assert shares == [[0], [1], [2]]  # every rank gets an item, no file twice
    assert ds[0].job is not None and ds[1].job is None and ds[2].job is None
    assert len(ProtectDataset([], min_length=3)) == 3 and len(ProtectDataset([])) == 1


@needs_data
def test_nothing_found_is_reported_and_outputs_left_empty_are_redone(model, tmp_path, capsys):
    """With no file to protect the job still says why (Lightning runs no hook over an
    empty loader); an empty output, which a crash can leave, is not taken as done; the
    per-image warnings and notes are printed as protect prints them."""
    assert predict(model, tmp_path / "out", tmp_path / "nosuch.png") == 1
    err = capsys.readouterr().err
    assert f"failed: {tmp_path / 'nosuch.png'}: no such file, folder or matching glob" in err
    assert "0 protected, 0 skipped, 1 failed" in err
    (tmp_path / "in").mkdir()
    Image.fromarray(_rgb()[..., 0], "L").save(tmp_path / "in" / "grey.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "grey.png").write_bytes(b"")
    assert (
        predict(model, tmp_path / "out", tmp_path / "in", extra=["--data.skip_existing=true"]) == 0
    )
    err = capsys.readouterr().err
    assert "1 protected, 0 skipped" in err and (tmp_path / "out" / "grey.png").stat().st_size
    assert "grey.png: warning: only 56x40 px" in err


@needs_data
def test_ddp_two_cpu_processes_write_every_file_once(model, tmp_path, capfd):
    _images(tmp_path / "in")
    for i in range(2):
        Image.fromarray(_rgb(20 + i, 24, 10 + i)).save(tmp_path / "in" / f"extra{i}.png")
    (tmp_path / "in" / "b.png").write_text("not an image")  # second in order: rank 1's
    ddp = ["--trainer.strategy=ddp_spawn", "--trainer.devices=2"]
    assert predict(model, tmp_path / "ddp", tmp_path / "in", extra=ddp) == 1  # rank 1's failure
    err = capfd.readouterr().err
    assert "rank 0/2: 3 protected, 0 skipped, 0 failed" in err
    assert "rank 1/2: 2 protected, 0 skipped, 1 failed" in err
    assert f"failed: {tmp_path / 'in' / 'b.png'}: " in err
    assert predict(model, tmp_path / "one", tmp_path / "in") == 1
    ddp_files = _files(tmp_path / "ddp")
    assert len(ddp_files) == 5 and ddp_files == _files(tmp_path / "one")  # nothing partial


def test_config_parses(capsys):
    with pytest.raises(SystemExit) as e:
        main(["predict", "--config", str(CONFIG), "--print_config"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "ProtectedImageWriter" in out and "out_dir: protected" in out
