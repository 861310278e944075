"""The LightningModule and the fit loop on the tiny config."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from fastprotect.cli import make_cli
from fastprotect.encoders import TINY_CONFIG, DiffusersVAEEncoder
from fastprotect.losses import LatentLoss, MultiLayerLoss
from fastprotect.module import MoPModule

from .conftest import needs_data, tiny_args


class BoundChecker(L.Callback):
    """Records the largest |delta| / radius after every optimizer step."""

    def __init__(self) -> None:
        self.ratios: list[float] = []
        self.losses: list[float] = []
        self.terms: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        c = pl_module.mop.config
        g = pl_module.mop.global_delta.abs().max().item() / c.radius_global
        k = pl_module.mop.group_delta.abs().max().item() / c.radius_group if c.groups else 0.0
        self.ratios.append(max(g, k))
        self.losses.append(float(outputs["loss"]))
        m = trainer.callback_metrics
        self.terms.append(
            {n: float(m[f"train/{n}"]) for n in ("latent", "multilayer") if f"train/{n}" in m}
        )


def fit_tiny(tmp_path, *extra: str) -> tuple[object, BoundChecker]:
    cli = make_cli(tiny_args(tmp_path, *extra), run=False)
    checker = BoundChecker()
    cli.trainer.callbacks.append(checker)
    cli.trainer.fit(cli.model, cli.datamodule)
    return cli, checker


def test_module_rejects_bad_settings():
    enc = DiffusersVAEEncoder(config=TINY_CONFIG)
    with pytest.raises(ValueError, match="routing"):
        MoPModule(enc, routing="sometimes", resolution=32)
    with pytest.raises(ValueError, match="multiple of"):
        MoPModule(enc, resolution=33)
    with pytest.raises(ValueError, match="at least one loss"):
        MoPModule(enc, resolution=32, losses=[])


def test_only_perturbations_are_optimised():
    enc = DiffusersVAEEncoder(config=TINY_CONFIG)
    m = MoPModule(enc, resolution=32, groups=2)
    opt = m.configure_optimizers()
    params = {id(p) for g in opt.param_groups for p in g["params"]}
    assert params == {id(m.mop.global_delta), id(m.mop.group_delta)}
    assert "encoder" not in m.hparams and "losses" not in m.hparams


@needs_data
@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--trainer.accumulate_grad_batches=2"],
        ["--trainer.precision=bf16-mixed"],
        ["--model.groups=0"],
    ],
    ids=["plain", "accumulate", "bf16-mixed", "uap"],
)
def test_bound_holds_after_every_step(tmp_path, extra):
    cli, checker = fit_tiny(tmp_path, "--model.lr=0.05", *extra)
    assert len(checker.ratios) >= 6
    assert max(checker.ratios) <= 1.0 + 1e-6
    # a big learning rate drives the perturbations to the edge of their balls
    assert max(checker.ratios) > 0.99


@needs_data
def test_losses_decrease_and_model_file_is_written(tmp_path):
    cli, checker = fit_tiny(tmp_path, "--trainer.max_steps=30", "--model.lr=0.005")
    first, last = sum(checker.losses[:5]) / 5, sum(checker.losses[-5:]) / 5
    assert last < 0.9 * first, (first, last)
    assert (tmp_path / "model.safetensors").is_file()
    assert cli.model.written_model == tmp_path / "model.safetensors"


@needs_data
def test_each_term_decreases_and_is_logged(tmp_path):
    cli, checker = fit_tiny(tmp_path, "--trainer.max_steps=30", "--model.lr=0.005")
    for name in ("latent", "multilayer"):
        values = [t[name] for t in checker.terms]
        assert len(values) == 30
        assert sum(values[-5:]) < 0.95 * sum(values[:5]), (name, values[:5], values[-5:])
    logged = cli.trainer.logged_metrics
    for key in ["train/latent", "train/multilayer", "train/loss", "val/latent_pull", "val/psnr"]:
        assert key in logged, key
    assert logged["val/latent_pull"] < 1.0  # protected latents are closer to the target
    assert logged["val/psnr"] > 30  # 8/255 budget


@needs_data
def test_all_targets_routing_trains_every_target(tmp_path):
    cli, _ = fit_tiny(tmp_path, "--data.routing=all", "--model.routing=all", "--model.lr=0.01")
    assert all(cli.model.mop.global_delta[t].abs().sum() > 0 for t in range(3))


@needs_data
def test_checkpoint_has_no_encoder_and_resumes(tmp_path):
    cli, _ = fit_tiny(tmp_path, "--trainer.enable_checkpointing=true")
    (ckpt,) = list(tmp_path.rglob("*.ckpt"))
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert not any(k.startswith("encoder.") for k in state["state_dict"])
    assert "encoder" not in state["hyper_parameters"]
    m = cli.model
    loaded = MoPModule.load_from_checkpoint(ckpt, encoder=DiffusersVAEEncoder(config=TINY_CONFIG))
    assert torch.equal(loaded.mop.global_delta, m.mop.global_delta)
    assert torch.equal(loaded.mop.centroids, m.mop.centroids)


def test_resume_notes_name_each_changed_or_unknown_hyperparameter(tmp_path, capsys):
    from types import SimpleNamespace

    from fastprotect.fitcli import ProjectCLI

    ckpt = tmp_path / "x.ckpt"
    old = {"_instantiator": "x", "lr": 0.005, "strength_s_min": 0.75, "targets": ["noise"],
           "entropy_range": (0.0, 4.0), "renamed_away": 3}  # fmt: skip
    torch.save({"hyper_parameters": old, "state_dict": {}}, ckpt)
    model = {"lr": 0.005, "strength_s_min": 0.5, "targets": ["noise"], "entropy_range": [0.0, 4.0]}
    cli = SimpleNamespace(
        config={"subcommand": "fit", "fit": {"ckpt_path": str(ckpt), "model": model}}
    )
    ProjectCLI._parse_ckpt_path(cli)
    notes = capsys.readouterr().err.strip().splitlines()
    assert len(notes) == 2, notes  # unchanged values, tuples read back as lists: no note
    assert "model.renamed_away = 3, which this version does not take" in notes[0]
    assert "model.strength_s_min is 0.5 here, 0.75 in" in notes[1]
    assert cli.config["fit"]["model"]["strength_s_min"] == 0.5  # the config's value stands


@needs_data
def test_a_resume_trains_with_the_configs_hyperparameters_and_names_each_change(tmp_path, capsys):
    """LightningCLI on its own would take the checkpoint's values over the config's."""
    from fastprotect.cli import main
    from fastprotect.modelfile import read_header

    first = tmp_path / "first"
    args = ["--trainer.max_steps=2", "--trainer.enable_checkpointing=true"]
    assert main(["fit", *tiny_args(first, *args, "--model.strength_s_min=0.75")]) == 0
    (ckpt,) = list(first.rglob("*.ckpt"))
    capsys.readouterr()
    again = tmp_path / "again"
    resumed = tiny_args(again, "--trainer.max_steps=3", "--model.strength_s_min=0.5")
    assert main(["fit", *resumed, f"--ckpt_path={ckpt}"]) == 0
    err = capsys.readouterr().err
    assert "model.strength_s_min is 0.5 here, 0.75 in" in err
    named = [line.split()[2] for line in err.splitlines() if "fastprotect: note: model." in line]
    assert named == ["model.model_file", "model.strength_s_min"]  # unchanged ones are not
    assert read_header(again / "model.safetensors")["inference"]["s_min"] == 0.5


@needs_data
def test_model_file_is_never_overwritten_and_assignment_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTPROTECT_CACHE_DIR", str(tmp_path / "cache"))
    fit_tiny(tmp_path, "--trainer.max_steps=2")
    import fastprotect.data.datamodule as dm

    def no_refit(*a, **k):
        raise AssertionError("assignment recomputed despite the cache")

    monkeypatch.setattr(dm, "fit_assignment", no_refit)
    fit_tiny(tmp_path, "--trainer.max_steps=2")
    assert (tmp_path / "model.safetensors").is_file()
    assert (tmp_path / "model-1.safetensors").is_file()
    # each run's config beside its model, the first one's kept
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "config-1.yaml").is_file()
    assert len(list((tmp_path / "cache" / "assignments").glob("*.safetensors"))) == 1


def test_custom_loss_term_needs_no_module_change():
    from fastprotect.losses import LossTerm

    class PixelL2(LossTerm):
        name = "pixel"

        def forward(self, inputs):
            return (inputs.x_hat - inputs.x).pow(2).mean()

    enc = DiffusersVAEEncoder(config=TINY_CONFIG)
    m = MoPModule(
        enc,
        resolution=32,
        groups=1,
        losses=[LatentLoss(), MultiLayerLoss(0.5, ["mid"]), PixelL2(2.0)],
    )
    m.prepare_targets()
    x = torch.rand(2, 3, 32, 32)
    t = torch.tensor([0, 1])
    out = m._terms(m._loss_inputs(x, m.mop.apply(x, t, torch.tensor([0, 0])), t))
    assert set(out) == {"latent", "multilayer", "pixel", "loss"}
    assert torch.isclose(out["loss"], out["latent"] + 0.5 * out["multilayer"] + 2.0 * out["pixel"])
    assert m.layers == ("mid",)


class Interrupt(L.Callback):
    """Ctrl-C after the second step (a KeyboardInterrupt where Lightning expects one)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == 2:
            raise KeyboardInterrupt


def _run_args(root, overlay, *extra):
    from .conftest import DATA, REPO

    return [
        "fit",
        "--config",
        str(REPO / "configs" / "tiny.yaml"),
        "--config",
        str(overlay),
        f"--trainer.default_root_dir={root}",
        f"--data.data_dirs=[{DATA / 'objects'}]",
        "--trainer.enable_progress_bar=false",
        "--trainer.max_steps=3",
        *extra,
    ]


@needs_data
def test_run_folders_follow_the_root_and_runs_do_not_mix(tmp_path, capsys):
    """A config's ${trainer.default_root_dir} is resolved in its own file: the command
    line's root must still take the logs and checkpoints. A new run does not start in an
    earlier run's checkpoint folder, a resume cannot change the stored mixture, and Ctrl-C
    leaves the model trained so far."""
    import signal

    from fastprotect.cli import main

    overlay = tmp_path / "run.yaml"
    overlay.write_text(
        f"trainer:\n  default_root_dir: {tmp_path / 'config_root'}\n"
        "  enable_checkpointing: true\n"
        "  logger:\n    - class_path: lightning.pytorch.loggers.CSVLogger\n"
        '      init_args: {save_dir: "${trainer.default_root_dir}", name: csv}\n'
        "  callbacks:\n    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        '      init_args: {dirpath: "${trainer.default_root_dir}/checkpoints", save_last: true,\n'
        "                  every_n_train_steps: 1}\n"
    )
    root = tmp_path / "run"
    assert main(_run_args(root, overlay)) == 0
    assert (root / "checkpoints" / "last.ckpt").is_file() and (root / "csv").is_dir()
    assert (root / "model.safetensors").is_file() and not (tmp_path / "config_root").exists()
    capsys.readouterr()
    # the same folder again, without --ckpt_path: refused, the first run's files untouched
    assert main(_run_args(root, overlay)) == 2
    err = capsys.readouterr().err
    assert "holds an earlier run's checkpoints: resume it with --ckpt_path" in err
    assert "Traceback" not in err and not (root / "model-1.safetensors").exists()
    last = root / "checkpoints" / "last.ckpt"
    assert main(_run_args(root, overlay, f"--ckpt_path={last}", "--model.targets=[low]")) == 2
    assert "model.targets is ['low'] here" in capsys.readouterr().err
    assert main(_run_args(root, overlay, f"--ckpt_path={root / 'model.safetensors'}")) == 2
    assert "not a Lightning checkpoint (a model file?" in capsys.readouterr().err
    assert main(_run_args(tmp_path / "typo", overlay, "--model.targets=[lowx]")) == 2
    err = capsys.readouterr().err
    assert "cannot build the run from its config: target 'lowx'" in err and "Traceback" not in err
    # Ctrl-C in a fresh folder: the perturbations so far are kept, the checkpoint named
    sigint = signal.getsignal(signal.SIGINT)
    second = tmp_path / "second"
    try:
        with pytest.raises(SystemExit):
            main(_run_args(second, overlay, "--trainer.callbacks+=tests.test_training.Interrupt"))
    finally:
        signal.signal(signal.SIGINT, sigint)  # Lightning ignores Ctrl-C after the first
    err = capsys.readouterr().err
    assert (second / "model-interrupted.safetensors").is_file()
    assert not (second / "model.safetensors").exists()
    assert "stopped at step 2" in err and "--ckpt_path" in err


def test_log_and_checkpoint_folders_move_under_the_final_root(tmp_path):
    """Only paths under a root a config named move, into the deepest such root's place;
    a path already under the final root stays."""
    from types import SimpleNamespace

    from jsonargparse import Namespace

    from fastprotect.fitcli import ProjectCLI

    base, inner = tmp_path / "base.yaml", tmp_path / "inner.yaml"
    base.write_text(f"trainer:\n  default_root_dir: {tmp_path / 'runs'}\n")
    inner.write_text(f"trainer:\n  default_root_dir: {tmp_path / 'runs' / 'base'}\n")

    def entries(root, *dirs):
        callbacks = [
            Namespace(class_path="ModelCheckpoint", init_args=Namespace(dirpath=str(d)))
            for d in dirs
        ]
        trainer = Namespace(default_root_dir=str(root), logger=False, callbacks=callbacks)
        config = {"fit": Namespace(trainer=trainer, config=[base, inner], ckpt_path="last")}
        cli = SimpleNamespace(config={"subcommand": "fit", **config})
        ProjectCLI.before_instantiate_classes(cli)
        return [c.init_args.dirpath for c in callbacks]

    runs = tmp_path / "runs"
    assert entries(tmp_path / "new", runs / "base" / "ck", runs / "x" / "ck", tmp_path / "own") == [
        str(tmp_path / "new" / "ck"),  # the deepest root holding it, runs/base
        str(tmp_path / "new" / "x" / "ck"),
        str(tmp_path / "own"),  # under no root a config named: left alone
    ]
    # the final root inside an earlier one: what is already under it stays
    assert entries(runs / "base" / "fine", runs / "base" / "fine" / "ck") == [
        str(runs / "base" / "fine" / "ck")
    ]


def test_a_checkpoint_name_lightning_resolves_is_passed_on(tmp_path):
    from types import SimpleNamespace

    from jsonargparse import Namespace

    from fastprotect.fitcli import ProjectCLI

    for value in ("last", "best", "s3://bucket/run.ckpt", str(tmp_path)):
        config = Namespace(subcommand="fit", fit=Namespace(ckpt_path=value))
        ProjectCLI._parse_ckpt_path(SimpleNamespace(config=config))  # Lightning resolves it
    config = Namespace(subcommand="fit", fit=Namespace(ckpt_path=str(tmp_path / "no.ckpt")))
    with pytest.raises(ValueError, match="no.ckpt: no such file"):
        ProjectCLI._parse_ckpt_path(SimpleNamespace(config=config))
