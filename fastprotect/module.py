"""The LightningModule: training glue around :class:`~fastprotect.mop.MixtureOfPerturbations`."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from torch import Tensor

from .encoders import Encoder
from .fileutil import next_free
from .filters import luma
from .losses import LossInputs, LossTerm, default_losses
from .modelfile import save_model
from .mop import MixtureOfPerturbations, MoPConfig
from .protector import budget_bound
from .strength import JNDMap
from .targets import make_targets
from .views import AttackerViews


class MoPModule(L.LightningModule):
    """Trains one global and ``K`` group perturbations per target with Adam.

    Args:
        encoder: the frozen encoder ``E`` (not optimised, not in hparams, not checkpointed).
        targets: target specs (``low``/``mid``/``high``/``repeat:N``/image path).
        groups: ``K``, group perturbations per target (0: a single universal perturbation).
        eta: L-inf budget on the [0, 1] scale; each perturbation gets ``eta/2``.
        resolution: ``R``, training resolution and perturbation size.
        assignment_resolution: input size for routing and grouping (default ``R``).
        lr: Adam learning rate.
        losses: loss terms (default: latent + multi-layer with ``lambda = 1``).
        routing: ``entropy`` (each image trains its routed target) or ``all``.
        entropy_bins: bins of the latent-entropy histogram.
        entropy_range: its value range (default: the encoder's ``latent_range``).
        latent_grid: the k-means reduction pools latents to ``grid x grid``.
        view: the attacker's working size (shorter side, px) the perturbations are defined
            at, as periodic canvases of period ``resolution`` view pixels; 0: legacy models
            whose perturbations are stretched to each image.
        views: the expectation over the attacker's view used in training (a view model's
            default: :class:`~fastprotect.views.AttackerViews` with its defaults).
        isoluminant: perturbations that change colour only, never luma
            (:class:`~fastprotect.mop.MoPConfig`).
        luma_eta: with ``isoluminant``, the largest luma change allowed (0: colour only).
        luma_highpass: with ``luma_eta``, the sigma (perturbation pixels) of the Gaussian
            whose blur is taken out of the luma part (0: none).
        strength_s_min: train through the inference strength map: each crop's perturbation
            is scaled by the weights-free JND map with this ``s_min`` (``None``: full strength).
        strength_luma_s_min: with ``strength_s_min``: the luma part of each perturbation
            gets its own floor, as :class:`~fastprotect.protector.Protector`'s
            ``luma_s_min`` (``None``: the same ``s_min`` as the colour part).
        strength_colour_weight: with ``strength_s_min``: how much the JND map counts a
            colour change (:class:`~fastprotect.strength.JNDMap`; 0: luma only). Written
            to the model file as its inference ``colour_weight``, so ``protect`` scales as
            training did.
        publish_cap: a view model's canvas is enlarged at most this many times in the
            published file (0: no cap; :class:`~fastprotect.mop.MoPConfig`); the attacker's
            views of training follow it.
        model_file: where ``fit`` writes the model (default
            ``<trainer.default_root_dir>/model.safetensors``); never overwrites: an existing
            file gets a numbered sibling.
    """

    def __init__(
        self,
        encoder: Encoder,
        targets: list[str] | None = None,
        groups: int = 4,
        eta: float = 8 / 255,
        resolution: int = 512,
        assignment_resolution: int | None = None,
        lr: float = 1e-3,
        losses: list[LossTerm] | None = None,
        routing: str = "entropy",
        entropy_bins: int = 64,
        entropy_range: tuple[float, float] | None = None,
        latent_grid: int = 4,
        view: int = 0,
        views: AttackerViews | None = None,
        isoluminant: bool = False,
        luma_eta: float = 0.0,
        luma_highpass: float = 0.0,
        strength_s_min: float | None = None,
        strength_luma_s_min: float | None = None,
        strength_colour_weight: float = 0.0,
        publish_cap: float = 0.0,
        model_file: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["encoder", "losses", "views"])
        if view < 0:
            raise ValueError(f"view must be >= 0 (0: no view), got {view}")
        if views is not None and not view:
            raise ValueError("views (the attacker's-view augmentation) need a view size > 0")
        if strength_s_min is not None and not 0 <= strength_s_min <= 1:
            raise ValueError(f"strength_s_min must be in [0, 1], got {strength_s_min}")
        if strength_luma_s_min is not None and (
            strength_s_min is None or not 0 <= strength_luma_s_min <= 1
        ):
            raise ValueError(
                "strength_luma_s_min must be in [0, 1] and needs strength_s_min, got "
                f"{strength_luma_s_min} (strength_s_min {strength_s_min})"
            )
        if strength_colour_weight and (
            strength_s_min is None or not 0 < strength_colour_weight <= 1
        ):
            raise ValueError(
                "strength_colour_weight must be in [0, 1] and needs strength_s_min, got "
                f"{strength_colour_weight} (strength_s_min {strength_s_min})"
            )
        if routing not in ("entropy", "all"):
            raise ValueError(f"routing must be 'entropy' or 'all', got {routing!r}")
        if resolution % encoder.downsample:
            raise ValueError(f"resolution {resolution} is not a multiple of {encoder.downsample}")
        self.encoder = encoder.freeze()
        config = MoPConfig(
            targets=list(targets or ["low", "mid", "high"]),
            groups=groups,
            eta=eta,
            resolution=resolution,
            assignment_resolution=assignment_resolution or resolution,
            entropy_bins=entropy_bins,
            entropy_range=tuple(entropy_range or encoder.latent_range),
            latent_grid=latent_grid,
            latent_channels=encoder.latent_channels,
            view=view,
            isoluminant=isoluminant,
            luma_eta=luma_eta,
            luma_highpass=luma_highpass,
            publish_cap=publish_cap,
        )
        self.mop = MixtureOfPerturbations(config)
        with torch.no_grad():
            self.mop.targets.copy_((make_targets(config.targets, resolution) * 255).round())
        self.loss_terms = torch.nn.ModuleList(losses if losses is not None else default_losses())
        if not len(self.loss_terms):
            raise ValueError("at least one loss term is needed")
        self.layers = tuple(
            dict.fromkeys(n for term in self.loss_terms for n in term.layers(encoder))
        )
        self.views = (views or AttackerViews()) if view else None
        if self.views is not None:
            self.views.publish_cap = publish_cap
        self.strength_map = (
            JNDMap(colour_weight=strength_colour_weight) if strength_s_min is not None else None
        )
        self.strength_s_min = strength_s_min
        self.strength_luma_s_min = strength_luma_s_min
        self.strength_colour_weight = float(strength_colour_weight)
        self.lr = lr
        self.routing = routing
        self.model_file = model_file
        self.written_model: Path | None = None
        self.strict_loading = False  # checkpoints carry no encoder weights
        self._target_cache: tuple[Tensor, list[Tensor]] | None = None
        self._fit_started: float | None = None

    # -- targets and assignment --------------------------------------------------------
    @torch.no_grad()
    def prepare_targets(self) -> None:
        """Compute target latents, features and entropies on the current device (idempotent)."""
        device = self.mop.targets.device
        if self._target_cache is not None and self._target_cache[0].device == device:
            return
        y = self.mop.targets.float() / 255
        z, feats = self.encoder.features(y, self.layers)
        self._target_cache = (z, feats)
        z_assign = self.encoder.latent(self.mop.assignment_input(y))
        self.mop.target_entropy.copy_(self.mop.entropy(z_assign))

    def set_assignment(self, centroids: Tensor) -> None:
        """Install the fitted k-means++ centroids (``TxKxD``)."""
        self.mop.centroids.copy_(centroids.to(self.mop.centroids))

    def on_fit_start(self) -> None:
        self._fit_started = time.perf_counter()
        self.prepare_targets()

    def on_validation_start(self) -> None:
        self.prepare_targets()

    # -- the loss ----------------------------------------------------------------------
    def _loss_inputs(
        self, x: Tensor, x_hat: Tensor, target: Tensor, target_images: Tensor | None = None
    ) -> LossInputs:
        """``target_images``: each sample's own target image (a view of the target canvas);
        default: the cached full targets."""
        self.prepare_targets()
        if target_images is None:
            z_y, f_y = self._target_cache
            z_y, f_y = z_y[target], [f[target] for f in f_y]
        else:
            with torch.no_grad():
                z_y, f_y = self.encoder.features(target_images, self.layers)
        latent, feats = self.encoder.features(x_hat, self.layers)
        return LossInputs(
            x=x,
            x_hat=x_hat,
            latent=latent,
            features=dict(zip(self.layers, feats, strict=True)),
            target_latent=z_y,
            target_features=dict(zip(self.layers, f_y, strict=True)),
            encoder=self.encoder,
            eta=self.mop.config.eta,
        )

    def _terms(self, inputs: LossInputs) -> dict[str, Tensor]:
        out = {term.name: term(inputs) for term in self.loss_terms}
        out["loss"] = sum(term.weight * out[term.name] for term in self.loss_terms)
        return out

    def _strength(self, x: Tensor, delta: Tensor) -> Tensor:
        """``delta`` scaled as the inference strength map would (JND, ``s_min``..1; the luma
        part ``luma_s_min``..1 where that is set)."""
        if self.strength_map is None:
            return delta
        with torch.no_grad():
            m = self.strength_map(x, (x + delta).clamp(0, 1))
        scaled = delta * (1 - (1 - self.strength_s_min) * m)
        if self.strength_luma_s_min is None:
            return scaled  # within the budget: every factor is at most 1
        y = luma(delta)
        scaled = scaled + y * (self.strength_luma_s_min - self.strength_s_min) * m
        # the colour part alone may exceed the budget where its luma part fades: clip as
        # Protector.scale does
        bound = budget_bound(self.mop.config.eta)
        return scaled.clamp(-bound, bound)

    def protect_views(
        self, x: Tensor, target: Tensor, group: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """Training samples as the attacker sees them: the protected crops and their
        target images (a view model: a random attacker's view of each canvas and of its
        target; a legacy model: the ``RxR`` perturbation added as it is, and ``None``, the
        full targets whose latents are cached)."""
        delta = self.mop.perturbation(target, group)
        y = None
        if self.views is not None:
            delta, y = self.views(delta, self.mop.targets[target].float() / 255, x.shape[-1])
        return (x + self._strength(x, delta)).clamp(0, 1), y

    @staticmethod
    def _routed(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Images, their routed target, and their group under that target."""
        target = batch["target"]
        return batch["image"], target, batch["groups"].gather(1, target[:, None])[:, 0]

    def _expand(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Images, target and group per training sample (``all`` routing: every target)."""
        x, groups = batch["image"], batch["groups"]
        if self.routing == "all":
            t_count = self.mop.num_targets
            target = torch.arange(t_count, device=x.device).repeat_interleave(x.shape[0])
            return x.repeat(t_count, 1, 1, 1), target, groups.T.reshape(-1)
        return self._routed(batch)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        x, target, group = self._expand(batch)
        x_hat, y = self.protect_views(x, target, group)
        out = self._terms(self._loss_inputs(x, x_hat, target, y))
        self.log_dict({f"train/{k}": v for k, v in out.items()}, prog_bar=True, batch_size=len(x))
        return out["loss"]

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        # Validation protects as inference does: the routed target, its nearest group.
        x, target, group = self._routed(batch)
        x_hat = self.mop.apply(x, target, group)
        inputs = self._loss_inputs(x, x_hat, target)
        out = self._terms(inputs)
        z_y = inputs.target_latent
        pull = (inputs.latent - z_y).pow(2).flatten(1).sum(1) / (self.encoder.latent(x) - z_y).pow(
            2
        ).flatten(1).sum(1)
        mse = F.mse_loss(x_hat, x, reduction="none").flatten(1).mean(1)
        out["latent_pull"] = pull.mean()
        out["psnr"] = (10 * torch.log10(1 / mse.clamp_min(1e-12))).mean()
        self.log_dict({f"val/{k}": v for k, v in out.items()}, batch_size=len(x), sync_dist=True)

    # -- optimisation ------------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.mop.parameters(), lr=self.lr)

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        self.mop.project_()

    # -- checkpoints and the model file -------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("encoder.")]:
            del state[key]

    def recipe(self) -> dict:
        """How this model was trained, for the model file."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer else None
        return {
            "losses": [t.describe(self.encoder) for t in self.loss_terms],
            "lr": self.lr,
            "routing": self.routing,
            "views": self.views.describe() if self.views is not None else None,
            "strength_s_min": self.strength_s_min,
            "strength_luma_s_min": self.strength_luma_s_min,
            "strength_colour_weight": self.strength_colour_weight,
            "steps": int(self.global_step),
            "fit_seconds": round(time.perf_counter() - self._fit_started, 1)
            if self._fit_started
            else None,
            "batch_size": getattr(dm, "batch_size", None),
            "train_files": [f.name for f in getattr(dm, "train_files", [])],
            "val_files": [f.name for f in getattr(dm, "val_files", [])],
        }

    def on_fit_end(self) -> None:
        self._write_model()

    def inference(self) -> dict | None:
        """The model file's ``inference`` settings: a model trained through the strength map
        protects with the same floors and colour weight by default."""
        if self.strength_s_min is None:
            return None
        inference = {"s_min": self.strength_s_min}
        if self.strength_luma_s_min is not None:
            inference["luma_s_min"] = self.strength_luma_s_min
        if self.strength_colour_weight:
            inference["colour_weight"] = self.strength_colour_weight
        return inference

    def model_path(self, interrupted: bool = False) -> Path:
        """Where ``fit`` writes the model: ``model_file``, or ``model.safetensors`` in the
        trainer's root; never over an existing file (``model-1.safetensors``, ...). A run
        stopped early writes ``model-interrupted.safetensors`` (or ``NAME-interrupted``)."""
        root = Path(self.trainer.default_root_dir)
        path = Path(self.model_file) if self.model_file else root / "model.safetensors"
        if path.is_dir():  # a folder named as the model file: the model goes into it
            path = path / "model.safetensors"
        if interrupted:
            path = path.with_name(f"{path.stem}-interrupted{path.suffix or '.safetensors'}")
        return next_free(path)

    @rank_zero_only
    def _write_model(self, interrupted: bool = False) -> None:
        path = self.model_path(interrupted)
        self.written_model = save_model(
            self.mop, path, self.encoder.identity(), self.recipe(), inference=self.inference()
        )
        rank_zero_info(f"fastprotect: wrote model {path}")
