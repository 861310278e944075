"""The LightningDataModule: image folders -> cluster-labelled, augmented training crops."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..weights import cache_dir as user_cache_dir
from .assignment import Assignment, encode_for_assignment, file_digest, fit_assignment
from .files import NoImagesError, list_images, read_all, split_files


def _to_float(img: Tensor) -> Tensor:
    return img.float() / 255


def square_crop(img: Tensor, top: int, left: int, side: int, size: int) -> Tensor:
    """Crop ``side x side`` at ``(top, left)`` from uint8 ``3xHxW``, resize to ``size`` (float)."""
    crop = _to_float(img[:, top : top + side, left : left + side])[None]
    return F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True)[0].clamp(0, 1)


class TrainCrops(Dataset):
    """Random square crops at several scales, resized to ``R``, randomly flipped.

    A crop's side is ``s * min(H, W)`` with ``s`` uniform in ``crop_scale``; it inherits the
    routing target and groups of its source image.
    """

    def __init__(
        self,
        images: Sequence[Tensor],
        assignment: Assignment,
        size: int,
        length: int,
        crop_scale: tuple[float, float] = (0.35, 1.0),
        flip: bool = True,
    ) -> None:
        self.images, self.a, self.size, self.length = images, assignment, size, length
        self.crop_scale, self.flip = crop_scale, flip

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        j = i % len(self.images)
        img = self.images[j]
        h, w = img.shape[-2:]
        lo, hi = self.crop_scale
        s = lo + (hi - lo) * torch.rand(()).item()
        side = max(1, round(s * min(h, w)))
        top = int(torch.randint(0, h - side + 1, ()))
        left = int(torch.randint(0, w - side + 1, ()))
        x = square_crop(img, top, left, side, self.size)
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return {"image": x, "target": self.a.routes[j], "groups": self.a.groups[j], "index": j}


class CentreCrops(Dataset):
    """The largest centred square of each image, resized to ``R`` (validation)."""

    def __init__(self, images: Sequence[Tensor], assignment: Assignment, size: int) -> None:
        self.images, self.a, self.size = images, assignment, size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, j: int) -> dict[str, Tensor]:
        img = self.images[j]
        h, w = img.shape[-2:]
        m = min(h, w)
        x = square_crop(img, (h - m) // 2, (w - m) // 2, m, self.size)
        return {"image": x, "target": self.a.routes[j], "groups": self.a.groups[j], "index": j}


class MoPDataModule(L.LightningDataModule):
    """Image folders split into train/val, labelled with targets and k-means++ groups.

    The labels and centroids need the model's encoder and targets, so they are computed in
    ``prepare_data`` (rank zero only) from ``trainer.lightning_module``, cached on disk under
    a key of encoder identity, file contents and settings, and read back by every rank in
    ``setup``, which also hands the centroids to the model.

    Args:
        data_dirs: folders (searched recursively) or files.
        val_fraction: share of files held out, chosen by a hash of ``folder/name``.
        batch_size: images per step and rank.
        num_workers: DataLoader workers.
        samples_per_epoch: training crops per epoch (default ``8 x`` training images).
        crop_scale: range of the crop side as a fraction of the image's shorter side.
        flip: random horizontal flips.
        max_side: images are shrunk on load so their shorter side is at most this
            (default ``2 R``); it bounds memory and crop-resize time.
        routing: ``entropy`` (each image trains its routed target) or ``all`` (every target
            on every image, the ablation).
        grouping: ``kmeans`` (the assignment function: k-means++ on the reduced latents) or
            ``random`` (the paper's "MoP without assignment" ablation: each image gets a
            random group; the centroids are the means of those random groups).
        seed: k-means++ (or random grouping) seed.
        cache_dir: where assignments are cached (default: the user cache).
    """

    def __init__(
        self,
        data_dirs: list[str],
        val_fraction: float = 0.2,
        batch_size: int = 4,
        num_workers: int = 0,
        samples_per_epoch: int | None = None,
        crop_scale: tuple[float, float] = (0.35, 1.0),
        flip: bool = True,
        max_side: int | None = None,
        routing: str = "entropy",
        grouping: str = "kmeans",
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        if routing not in ("entropy", "all"):
            raise ValueError(f"routing must be 'entropy' or 'all', got {routing!r}")
        if grouping not in ("kmeans", "random"):
            raise ValueError(f"grouping must be 'kmeans' or 'random', got {grouping!r}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if len(crop_scale) != 2 or not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(
                f"crop_scale must be [lo, hi] with 0 < lo <= hi <= 1 (fractions of the "
                f"shorter side), got {list(crop_scale)}"
            )
        self.data_dirs = list(data_dirs)
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.samples_per_epoch = samples_per_epoch
        self.crop_scale = tuple(crop_scale)
        self.flip = flip
        self.max_side = max_side
        self.routing = routing
        self.grouping = grouping
        self.seed = seed
        self.cache_dir = Path(cache_dir) if cache_dir else user_cache_dir() / "assignments"
        self.train_files: list[Path] = []
        self.val_files: list[Path] = []
        self.assignment: Assignment | None = None

    # -- helpers -----------------------------------------------------------------------
    def _model(self):
        model = getattr(self.trainer, "lightning_module", None) if self.trainer else None
        if model is None:
            raise RuntimeError("MoPDataModule needs a Trainer with a MoPModule attached")
        return model

    def _files(self) -> tuple[list[Path], list[Path]]:
        files = list_images(self.data_dirs)
        if not files:
            raise NoImagesError(
                f"no image files (png/jpg/jpeg/webp/bmp/tif/tiff) under {self.data_dirs}"
            )
        train, val = split_files(files, self.val_fraction)
        if not train:
            raise NoImagesError(f"the split left no training images among {len(files)} files")
        return train, val

    def _max_side(self, resolution: int) -> int:
        return self.max_side or 2 * resolution

    def _cache_path(self, model, train: Sequence[Path]) -> tuple[Path, dict]:
        meta = {
            "encoder": model.encoder.identity(),
            "data": file_digest(train),
            "mop": model.mop.config.to_dict(),
            "target_entropy": [round(v, 5) for v in model.mop.target_entropy.flatten().tolist()],
            "routing": self.routing,
            "grouping": self.grouping,
            "seed": self.seed,
            "max_side": self._max_side(model.mop.config.resolution),
        }
        key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:32]
        return self.cache_dir / f"{key}.safetensors", meta

    # -- Lightning hooks ---------------------------------------------------------------
    def prepare_data(self) -> None:
        model = self._model()
        model.prepare_targets()
        train, _ = self._files()
        path, meta = self._cache_path(model, train)
        if path.is_file():
            rank_zero_info(f"fastprotect: using cached assignment {path}")
            return
        train, images = read_all(train, self._max_side(model.mop.config.resolution))
        if not images:
            raise NoImagesError(f"none of the training files under {self.data_dirs} could be read")
        # Unreadable files were skipped: key the cache by the files actually used.
        path, meta = self._cache_path(model, train)
        rank_zero_info(f"fastprotect: encoding {len(images)} training images for the assignment")
        latents = encode_for_assignment(model.mop, model.encoder, images, progress=True)
        assignment = fit_assignment(model.mop, latents, self.routing, self.seed, self.grouping)
        assignment.save(path, {**meta, "files": [str(f) for f in train]})
        counts = torch.bincount(assignment.routes, minlength=model.mop.num_targets).tolist()
        per_target = dict(zip(model.mop.config.targets, counts, strict=True))
        rank_zero_info(f"fastprotect: training images per target {per_target}")

    def setup(self, stage: str) -> None:
        model = self._model()
        model.prepare_targets()
        train, val = self._files()
        size = model.mop.config.resolution
        train, train_images = read_all(train, self._max_side(size))
        if not train_images:
            raise NoImagesError(f"none of the training files under {self.data_dirs} could be read")
        path, _ = self._cache_path(model, train)
        if not path.is_file():
            self.prepare_data()
        self.assignment = Assignment.load(path)
        model.set_assignment(self.assignment.centroids)
        self.train_files = train
        length = self.samples_per_epoch or 8 * len(train_images)
        self.train_set = TrainCrops(
            train_images, self.assignment, size, length, self.crop_scale, self.flip
        )
        val, val_images = read_all(val, self._max_side(size))
        self.val_files = val
        if val_images:
            val_latents = encode_for_assignment(model.mop, model.encoder, val_images)
            val_assignment = Assignment(
                routes=model.mop.route(val_latents).cpu(),
                groups=model.mop.assign_all(val_latents).cpu(),
                centroids=self.assignment.centroids,
                entropy=model.mop.entropy(val_latents).cpu(),
            )
            self.val_set = CentreCrops(val_images, val_assignment, size)
        else:
            self.val_set = None

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            drop_last=len(self.train_set) >= self.batch_size,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.num_workers)
