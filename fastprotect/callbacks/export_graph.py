"""The export hook: write the inference graph at the end of ``fit``, beside the model file."""

from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from ..export import FORMATS, export_protector
from ..fileutil import next_free
from ..protect import configure


class ExportGraph(L.Callback):
    """Export the trained model as one graph per format when ``fit`` ends (rank zero).

    The graph is the same :class:`~fastprotect.protector.Protector` ``fastprotect protect``
    runs, built from the module's encoder and perturbations; each file is reloaded and
    compared with the eager module before it appears (see :mod:`fastprotect.export`).

    Args:
        formats: any of ``torchscript`` (``.pt``), ``lite`` (``.ptl``), ``pt2``.
        strength: the strength map baked in: ``auto``, ``lpips``, ``jnd`` or ``off``.
        s_min, s_max: the strength range; ``s_min`` ``None``: the model's own, as
            ``fastprotect protect`` takes it from the model file (its floors and the
            strength map's colour weight), else 0.5.
        dirpath: folder for the files; default: beside the model file, same stem.
    """

    def __init__(
        self,
        formats: list[str] | None = None,
        strength: str = "auto",
        s_min: float | None = None,
        s_max: float = 1.0,
        dirpath: str | None = None,
    ) -> None:
        self.formats = list(formats or ["torchscript"])
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise ValueError(f"unknown export formats {unknown}; choose from {list(FORMATS)}")
        self.strength = strength
        self.s_min, self.s_max = s_min, s_max
        self.dirpath = dirpath
        self.written: list[Path] = []

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Runs before the module writes its model file, so both get the same free stem.
        model_path = pl_module.model_path()
        folder = Path(self.dirpath) if self.dirpath else model_path.parent
        mop = copy.deepcopy(pl_module.mop).cpu()
        encoder = copy.deepcopy(pl_module.encoder).cpu()
        # the same protector `fastprotect protect` builds from the model file written next
        doc = {"inference": pl_module.inference() or {}}
        protector, _ = configure(encoder, mop, doc, self.strength, self.s_min, self.s_max)
        for fmt in self.formats:
            path = next_free(folder / (model_path.stem + FORMATS[fmt]))
            report = export_protector(protector, path, fmt)
            self.written.append(path)
            rank_zero_info(f"fastprotect: {report.line()}")
