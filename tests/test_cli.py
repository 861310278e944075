"""The real CLI, in-process: fit, validate, --print_config, info, targets, W&B, DDP."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from fastprotect.cli import main
from fastprotect.modelfile import ModelFileError, load_model, read_header, summary

from .conftest import REPO, needs_data, tiny_args


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny fit through the CLI, shared by the tests of this module."""
    tmp = tmp_path_factory.mktemp("fit")
    assert main(["fit", *tiny_args(tmp)]) == 0
    return tmp / "model.safetensors"


@needs_data
def test_fit_writes_a_self_describing_model(trained):
    doc = read_header(trained)
    assert doc["format"] == "fastprotect-mop" and doc["format_version"] == 1
    assert doc["config"]["groups"] == 2 and doc["config"]["resolution"] == 32
    assert doc["config"]["targets"] == ["low", "mid", "high"]
    assert doc["encoder"]["kind"] == "diffusers" and len(doc["encoder"]["weights_sha256"]) == 64
    assert doc["recipe"]["steps"] == 6 and doc["recipe"]["losses"][1]["layers"] == ["down1", "mid"]
    assert "adaptive_avg_pool2d" in doc["reduction"]
    with safe_open(str(trained), framework="pt") as f:
        assert set(f.keys()) == {
            "global_delta",
            "group_delta",
            "centroids",
            "target_entropy",
            "targets",
        }
    mop, _ = load_model(trained)
    eta = mop.config.eta
    assert mop.global_delta.abs().max() <= eta / 2 + 1e-7
    assert mop.group_delta.abs().max() <= eta / 2 + 1e-7
    assert mop.centroids.abs().sum() > 0 and mop.target_entropy.abs().sum() > 0


@needs_data
def test_info_prints_a_summary(trained, capsys):
    assert main(["info", str(trained)]) == 0
    out = capsys.readouterr().out
    assert "K=2" in out and "8.00/255" in out and "low, mid, high" in out
    assert summary(trained).splitlines()[0].endswith("model.safetensors")
    assert trained.stat().st_mode & 0o777 == 0o666 & ~_umask()  # not private to its writer
    files = read_header(trained)["recipe"]["train_files"]
    line = next(ln for ln in out.splitlines() if ln.startswith("recipe.train_files"))
    if len(files) > 6:  # long lists as a count and a few names, not one endless line
        assert f"{len(files)} files (" in line and line.count(", ") <= 3


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_info_on_a_bad_file_is_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastprotect:") and "bad.safetensors" in err and "\n" not in err
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "missing.safetensors")


def test_model_file_loads_without_pickle(trained, monkeypatch):
    import pickle

    def forbidden(*a, **k):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    mop, doc = load_model(trained)
    assert mop.global_delta.shape == (3, 3, 32, 32)


@needs_data
def test_validate_subcommand(trained, tmp_path):
    assert main(["validate", *tiny_args(tmp_path)]) == 0


def test_print_config_resolves_interpolation(capsys):
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(REPO / "configs" / "taef2.yaml"), "--print_config"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "save_dir: runs/taef2" in out  # ${trainer.default_root_dir} resolved


def test_bad_data_dir_is_a_clear_error(tmp_path, capsys):
    code = main(["fit", *tiny_args(tmp_path), f"--data.data_dirs=[{tmp_path / 'nowhere'}]"])
    assert code == 2
    err = capsys.readouterr().err
    assert "fastprotect: error:" in err and "nowhere" in err and "Traceback" not in err


def test_empty_data_dir_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    code = main(["fit", *tiny_args(tmp_path), f"--data.data_dirs=[{tmp_path / 'empty'}]"])
    assert code == 2
    assert "no image files" in capsys.readouterr().err


def test_only_unreadable_images_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.png").write_bytes(b"not a png")
    (tmp_path / "junk" / "b.jpg").write_bytes(b"")
    code = main(
        [
            "fit",
            *tiny_args(tmp_path),
            "--data.val_fraction=0",
            f"--data.data_dirs=[{tmp_path / 'junk'}]",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "could be read" in err and "Traceback" not in err


def test_targets_command_writes_pngs(tmp_path, capsys):
    assert main(["targets", "--out", str(tmp_path), "--size", "64"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "target_0_low.png",
        "target_1_mid.png",
        "target_2_high.png",
    ]


def settled_history(path, last_key: str, timeout: float = 120.0) -> dict[str, list[float | str]]:
    """The run's history once W&B's writer has flushed it.

    W&B writes the ``.wandb`` file from a separate service process; on a loaded machine
    ``wandb.finish()`` can return before the records reach the file (seen once: an empty
    history). Poll until ``last_key`` (logged last) is there, for at most ``timeout`` s."""
    import time

    deadline = time.monotonic() + timeout
    from google.protobuf.message import DecodeError

    while True:
        try:
            history = read_wandb_history(path)
        except DecodeError:  # a record half written
            history = {}
        if last_key in history or time.monotonic() > deadline:
            return history
        time.sleep(0.5)


def read_wandb_history(path) -> dict[str, list[float | str]]:
    """Every history value in an offline ``.wandb`` file, by key.

    The file is a LevelDB-style log (7-byte file header, 32 KiB blocks, records with a
    7-byte header: crc32, little-endian length, type) of W&B ``Record`` protobufs.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, out = 32768, 7, b"", {}
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:
            pos += room
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(pending)
            if rec.WhichOneof("record_type") == "history":
                for item in rec.history.item:
                    key = item.key or "/".join(item.nested_key)
                    out.setdefault(key, []).append(json.loads(item.value_json))
    return out


@needs_data
@pytest.mark.slow
def test_wandb_offline_run_holds_the_metrics(tmp_path):
    # W&B second, after CSV, as the v2 configs have them: the panels must reach it too
    loggers = tmp_path / "loggers.yaml"
    loggers.write_text(
        "trainer:\n  logger:\n"
        "    - class_path: lightning.pytorch.loggers.CSVLogger\n"
        f"      init_args: {{save_dir: {tmp_path}, name: csv}}\n"
        "    - class_path: lightning.pytorch.loggers.WandbLogger\n"
        f"      init_args: {{offline: true, save_dir: {tmp_path}, project: fastprotect-test}}\n"
    )
    args = tiny_args(
        tmp_path,
        "--config",
        str(loggers),
        "--trainer.callbacks=fastprotect.callbacks.ImagePanel",
        "--trainer.callbacks.every_n_steps=3",
    )
    assert main(["fit", *args]) == 0
    import wandb

    wandb.finish()  # a CLI process finishes the run at exit; in-process we do it here
    (run,) = list((tmp_path / "wandb").glob("offline-run-*/*.wandb"))
    history = settled_history(run, "val/psnr")
    for key in ["train/latent", "train/multilayer", "train/loss", "val/latent_pull", "val/psnr"]:
        assert key in history, (key, sorted(history))
    assert len(history["train/loss"]) == 6  # log_every_n_steps=1, six steps
    assert all(0 < v < 1.5 for v in history["val/latent_pull"])
    assert history["train/panel/_type"] == ["images/separated"] * 2  # panels at steps 3, 6
    assert sorted(p.name for p in (tmp_path / "panels").iterdir()) == [
        "step000003.png",
        "step000006.png",
    ]


@needs_data
@pytest.mark.slow
def test_ddp_two_cpu_processes_end_identical(tmp_path):
    args = tiny_args(
        tmp_path,
        "--trainer.strategy=ddp_spawn",
        "--trainer.devices=2",
        "--trainer.callbacks=fastprotect.callbacks.RankDigest",
        f"--trainer.callbacks.out_dir={tmp_path}",
    )
    assert main(["fit", *args]) == 0
    digests = sorted(tmp_path.glob("rank*.json"))
    assert [p.name for p in digests] == ["rank0.json", "rank1.json"]
    a, b = (json.loads(p.read_text()) for p in digests)
    assert a["sha256"] == b["sha256"] and a["steps"] == b["steps"] > 0
    assert (tmp_path / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "names",
    [[p.stem] for p in sorted((REPO / "configs").glob("*.yaml")) if p.stem != "protect"]
    + [["taef2", "taef2_uap"]],
)
def test_every_config_parses(names, capsys):
    configs = [a for n in names for a in ("--config", str(REPO / "configs" / f"{n}.yaml"))]
    with pytest.raises(SystemExit) as e:
        main(["fit", *configs, "--print_config"])
    assert e.value.code == 0
    assert "encoder:" in capsys.readouterr().out


def test_sd15_config_builds_the_paper_setup_from_a_local_vae(tmp_path):
    """configs/sd15.yaml's encoder path with a local (tiny, random) diffusers VAE folder."""
    from diffusers import AutoencoderKL

    from fastprotect.encoders import TINY_CONFIG, DiffusersVAEEncoder

    AutoencoderKL(**TINY_CONFIG).save_pretrained(tmp_path / "pipe" / "vae")
    enc = DiffusersVAEEncoder(pretrained=str(tmp_path / "pipe"), subfolder="vae")
    assert enc.latent(torch.rand(1, 3, 32, 32)).shape == (1, 4, 16, 16)
    assert enc.identity()["name"].startswith(str(tmp_path / "pipe"))


ABLATION = {
    # name: (targets, groups, grouping, loss terms)
    "1_uap": (["mid"], 0, "kmeans", ["LatentLoss"]),
    "2_mop_random": (["mid"], 4, "random", ["LatentLoss"]),
    "3_mop": (["mid"], 4, "kmeans", ["LatentLoss"]),
    "4_multilayer": (["mid"], 4, "kmeans", ["LatentLoss", "MultiLayerLoss"]),
    "5_adaptive": (["low", "mid", "high"], 4, "kmeans", ["LatentLoss", "MultiLayerLoss"]),
    "fixed_low": (["low"], 4, "kmeans", ["LatentLoss", "MultiLayerLoss"]),
    "fixed_high": (["high"], 4, "kmeans", ["LatentLoss", "MultiLayerLoss"]),
    "6_jpeg": (
        ["low", "mid", "high"],
        4,
        "kmeans",
        ["LatentLoss", "MultiLayerLoss", "JpegRobustLoss"],
    ),
}


@pytest.mark.parametrize("name", sorted(ABLATION))
def test_ablation_configs_differ_only_in_their_step(name, capsys):
    """Each ablation overlay changes what its step names; budget, data and seed are shared."""
    import yaml

    configs = ["taef2.yaml", "ablation/budget.yaml", f"ablation/{name}.yaml"]
    args = [a for c in configs for a in ("--config", str(REPO / "configs" / c))]
    with pytest.raises(SystemExit) as e:
        main(["fit", *args, "--print_config"])
    assert e.value.code == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    targets, groups, grouping, losses = ABLATION[name]
    assert cfg["model"]["targets"] == targets and cfg["model"]["groups"] == groups
    assert cfg["data"]["grouping"] == grouping
    assert [t["class_path"].rsplit(".", 1)[1] for t in cfg["model"]["losses"]] == losses
    assert cfg["trainer"]["max_steps"] == 300 and cfg["seed_everything"] == 0
    assert cfg["model"]["lr"] == 0.003 and cfg["data"]["val_fraction"] == 0.2
    assert cfg["model"]["eta"] == pytest.approx(8 / 255)
    assert cfg["trainer"]["default_root_dir"] == f"runs/ablation/{name}"


def test_front_door_lists_every_command_and_answers_typos(capsys):
    from fastprotect import __version__
    from fastprotect.cli import COMMANDS

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ["protect", "demo", "info", "export", "evaluate", "targets", "samples", "fit",
                 "validate", "predict"]:  # fmt: skip
        assert f"  {name} " in out and COMMANDS[name] in out, name
    assert main([]) == 2
    assert "commands:" in capsys.readouterr().err
    assert main(["protct", "x.png"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'protct'; did you mean 'protect'?" in err and "Traceback" not in err
    assert main(["--versoin"]) == 2
    assert "unknown option '--versoin'; did you mean '--version'?" in capsys.readouterr().err
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"fastprotect {__version__}"


def test_help_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from fastprotect.cli import main\n"
        "main(['--help'])\n"
        "try:\n"
        "    main(['protect', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('torch', 'lightning', 'diffusers', 'wandb')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert "usage: fastprotect protect" in out.stdout


def test_info_and_export_take_the_model_as_the_other_commands_do(capsys):
    assert main(["info", "--model", "fastprotect-taef2-v1"]) == 0
    assert "release     fastprotect-taef2 v1" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["export", "fastprotect-taef2-v1", "--model", "fastprotect-taef2-v2", "--out", "x.pt"])
    assert "two models named" in capsys.readouterr().err
