"""Batch protection as a Lightning predict job (``fastprotect predict --config FILE``).

The same protection as ``fastprotect protect`` (same :class:`~fastprotect.protector.Protector`,
same file handling, byte-identical outputs on the CPU), scaled out with Lightning:
``--trainer.devices=8 --trainer.strategy=ddp`` gives each rank a disjoint share of the files.

- :class:`ProtectDataModule` plans the jobs (rank zero scans the inputs and broadcasts the
  list, so every rank splits the same list) and decodes one image per item, in
  ``num_workers`` loader processes; a file that cannot be read becomes an error item.
- :class:`ProtectModule` runs the protector.
- :class:`ProtectedImageWriter` writes each result atomically, never overwriting, and
  prints each rank's summary and failures at the end.

Under DDP, Lightning puts an ``UnrepeatedDistributedSampler`` in front of the predict
loader: no rank sees an item twice and no item is repeated to even out the shares (a
padding ``DistributedSampler`` would make a second rank find the first one's output and
report it as existing). That sampler needs at least one item per rank, so the dataset
is padded with empty items when there are fewer files than ranks.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .fileutil import drop_empty_leftover
from .imageio import ImageReadError, LoadedImage, load_image, save_image
from .protect import (
    Job,
    Summary,
    fallback_notes,
    jpeg_warning,
    load_protector,
    plan,
    taken_by_rival,
)
from .verdict import Verdict, checks

# ``trainer.callback_metrics`` key holding the number of failed files over all ranks; it
# survives ``ddp_spawn`` (Lightning copies rank zero's callback metrics to the main process).
FAILED_KEY = "fastprotect/failed"


class ProtectorLoadError(ValueError):
    """The model file or the strength map could not be loaded; the message says why."""


@dataclass
class ProtectItem:
    """One unit of work: a job and its decoded image, or why there is nothing to protect.

    ``job`` is ``None`` only for padding items (fewer files than ranks); the writer ignores
    them. ``protected`` and ``model_seconds`` are filled in by :class:`ProtectModule`.
    """

    job: Job | None
    image: LoadedImage | None = None
    error: str | None = None
    skipped: bool = False
    protected: Tensor | None = None
    model_seconds: float = 0.0


class ProtectDataset(Dataset):
    """Decodes each job's source; an existing destination is skipped or an error, not read.

    Args:
        jobs: what to protect.
        skip_existing: an existing destination is skipped (resume) instead of a failure.
        min_length: pad with empty items up to this length (the number of ranks); at least
            one item, so that with nothing to protect the writer still reports the inputs
            that were not found (Lightning runs no hook over an empty loader).
    """

    def __init__(self, jobs: list[Job], skip_existing: bool = False, min_length: int = 0) -> None:
        self.jobs = jobs
        self.skip_existing = skip_existing
        self.length = max(len(jobs), min_length, 1)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> ProtectItem:
        if index >= len(self.jobs):
            return ProtectItem(job=None)
        job = self.jobs[index]
        drop_empty_leftover(job.dest)
        if job.dest.exists():
            if self.skip_existing and (taken := taken_by_rival(job)):
                return ProtectItem(job, error=taken + "; delete it and rerun")
            if self.skip_existing:
                return ProtectItem(job, skipped=True)
            return ProtectItem(job, error=f"{job.dest} exists (use --data.skip_existing=true)")
        try:
            return ProtectItem(job, image=load_image(job.source))
        except (ImageReadError, OSError) as e:
            return ProtectItem(job, error=str(e).removeprefix(f"{job.source}: "))  # path once


def collate_one(items: list[ProtectItem]) -> ProtectItem:
    """``batch_size=1`` collate: images differ in size, so a batch is one item as it is."""
    (item,) = items
    return item


class ProtectDataModule(L.LightningDataModule):
    """The files to protect and where their outputs go (the mapping of ``fastprotect protect``).

    Args:
        inputs: files, folders (searched recursively) and glob patterns.
        out_dir: output folder; files found in a folder keep their relative path.
        format: ``png`` (lossless) or ``jpeg`` (below quality 95 it may weaken the
            protection).
        skip_existing: resume: keep existing outputs and count them as skipped; otherwise
            an existing output is reported as a failure and left alone.
        num_workers: loader processes decoding images (per rank).
    """

    def __init__(
        self,
        inputs: list[str],
        out_dir: str = "protected",
        format: Literal["png", "jpeg"] = "png",
        skip_existing: bool = False,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if format not in ("png", "jpeg"):
            raise ValueError(f"format must be png or jpeg, got {format!r}")
        self.inputs = list(inputs)
        self.out_dir = Path(out_dir)
        self.format = format
        self.skip_existing = skip_existing
        self.num_workers = num_workers
        self.jobs: list[Job] = []
        self.problems: list[tuple[Path, str]] = []

    def setup(self, stage: str | None = None) -> None:
        strategy = self.trainer.strategy if self.trainer is not None else None
        if strategy is None or strategy.is_global_zero:
            planned = plan(self.inputs, self.out_dir, self.format)
        else:
            planned = None
        if strategy is not None:
            # one scan, one order: ranks that listed a changing folder separately could
            # split different lists and miss or repeat files
            planned = strategy.broadcast(planned, src=0)
        self.jobs, self.problems = planned

    def predict_dataloader(self) -> DataLoader:
        ranks = self.trainer.world_size if self.trainer is not None else 1
        dataset = ProtectDataset(self.jobs, self.skip_existing, min_length=ranks)
        return DataLoader(
            dataset,
            batch_size=1,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=collate_one,
        )


class ProtectModule(L.LightningModule):
    """The protector of a trained model file, for ``Trainer.predict``.

    Args:
        model: a ``.safetensors`` model file from ``fastprotect fit``; ``None``: the model
            shipped in the package.
        strength: adaptive strength map: ``auto`` (LPIPS if its weights are local, else
            JND), ``lpips``, ``jnd`` or ``off`` (full strength everywhere).
        s_min, s_max: the strength range (``s_min`` null: the model's own, else 0.5).

    Raises:
        ProtectorLoadError: the model file or the strength map could not be loaded.
    """

    def __init__(
        self,
        model: str | None = None,
        strength: Literal["auto", "lpips", "jnd", "off"] = "auto",
        s_min: float | None = None,
        s_max: float = 1.0,
    ) -> None:
        super().__init__()
        self.model_file = model
        try:
            with fallback_notes() as notes:
                self.protector, self.strength_name = load_protector(model, strength, s_min, s_max)
        except Exception as e:  # noqa: BLE001 - one line for the user
            name = model or "default model"
            why = str(e) if str(name) in str(e) else f"{name}: {e}"
            raise ProtectorLoadError(why) from e
        self.notes = notes

    def on_predict_start(self) -> None:
        if self.trainer.is_global_zero:
            for note in self.notes:
                print(f"fastprotect: note: {note}", file=sys.stderr)
            print(f"fastprotect: strength map: {self.strength_name}", file=sys.stderr)

    def forward(self, x: Tensor) -> Tensor:
        """Protect ``Bx3xHxW`` images in ``[0, 1]``."""
        return self.protector(x)

    def predict_step(self, batch: ProtectItem, batch_idx: int) -> ProtectItem:
        """Set ``batch.protected`` (``3xHxW``, on the module's device) when there is an image."""
        if batch.image is not None:
            t = time.perf_counter()
            with torch.no_grad():
                batch.protected = self.protector(batch.image.rgb[None])[0]
            if batch.protected.is_cuda:
                torch.cuda.synchronize(batch.protected.device)  # the writer waits for it anyway
            batch.model_seconds = time.perf_counter() - t
        return batch


class ProtectedImageWriter(BasePredictionWriter):
    """Writes each protected image to its job's destination with the input's metadata.

    Outputs appear atomically and are never overwritten (one that appeared meanwhile is a
    failure). At the end each rank prints its failures (``fastprotect: failed: FILE: WHY``)
    and a one-line summary to stderr; rank zero also reports inputs that matched nothing.
    The number of failures over all ranks goes to ``trainer.callback_metrics[FAILED_KEY]``
    (``fastprotect predict`` exits 1 when it is not zero).

    Args:
        format: ``png`` or ``jpeg``; ``None`` follows the data module's ``format``.
        quality: JPEG quality.
    """

    def __init__(self, format: Literal["png", "jpeg"] | None = None, quality: int = 95) -> None:
        if not 1 <= quality <= 100:
            raise ValueError(f"JPEG quality must be 1 to 100, got {quality}")
        super().__init__(write_interval="batch")
        self.format = format
        self.quality = quality
        self.summary = Summary()
        self._fmt = format or "png"
        self._t0 = 0.0

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        data_fmt = getattr(trainer.datamodule, "format", None)
        if self.format is not None and data_fmt is not None and self.format != data_fmt:
            raise ValueError(
                f"the writer's format ({self.format}) differs from data.format ({data_fmt}); "
                "set data.format only"
            )
        self._fmt = self.format or data_fmt or "png"
        self.summary = Summary()
        if trainer.is_global_zero:
            self.summary.failed.extend(getattr(trainer.datamodule, "problems", []))
            if self._fmt == "jpeg" and (warning := jpeg_warning(self.quality)):
                print(f"fastprotect: warning: {warning}", file=sys.stderr)
        self._t0 = time.perf_counter()

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        item: ProtectItem = prediction
        if item.job is None:
            return
        if item.skipped:
            self.summary.skipped.append(item.job.source)
            return
        if item.error is not None or item.image is None or item.protected is None:
            self.summary.failed.append((item.job.source, item.error or "not protected"))
            return
        try:
            save_image(item.image, item.protected, item.job.dest, self._fmt, self.quality)
        except OSError as e:
            self.summary.failed.append((item.job.source, str(e)))
            return
        self.summary.written.append(item.job.dest)
        self.summary.model_seconds += item.model_seconds
        if item.image.notes:
            self.summary.notes[item.job.source] = list(item.image.notes)
        # the cheap checks protect makes of every image: tiny, flat, grey under a colour model
        colour_only = pl_module.protector.mop.config.isoluminant
        if found := checks(item.image.rgb[None], colour_only=colour_only):
            self.summary.verdicts[item.job.source] = Verdict(warnings=found)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.summary.seconds = time.perf_counter() - self._t0
        for src, why in self.summary.failed:
            print(f"fastprotect: failed: {src}: {why}", file=sys.stderr)
        for src, notes in self.summary.notes.items():
            for note in notes:
                print(f"fastprotect: {src}: note: {note}", file=sys.stderr)
        for src, verdict in self.summary.verdicts.items():
            print(f"fastprotect: {src}: {verdict.line()}", file=sys.stderr)
        ranks = trainer.world_size
        rank = f"rank {trainer.global_rank}/{ranks}: " if ranks > 1 else ""
        out = getattr(trainer.datamodule, "out_dir", None)
        where = f"; output in {out}" if out is not None else ""
        print(f"fastprotect: {rank}{self.summary.line()}{where}", file=sys.stderr)
        failed = torch.tensor(len(self.summary.failed), device=pl_module.device)
        total = trainer.strategy.reduce(failed, reduce_op="sum")
        trainer.callback_metrics[FAILED_KEY] = total.detach().cpu()
