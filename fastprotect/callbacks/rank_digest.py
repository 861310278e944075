"""At the end of fit, each rank writes a digest of its perturbations (DDP consistency check)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning as L


class RankDigest(L.Callback):
    """Writes ``rank<N>.json`` with the sha256 of the rank's perturbations and centroids.

    Under DDP all ranks must end identical; comparing the files proves it.

    Args:
        out_dir: folder for the files (default: the trainer's ``default_root_dir``).
    """

    def __init__(self, out_dir: str | None = None) -> None:
        self.out_dir = out_dir

    def on_fit_end(self, trainer, pl_module) -> None:
        h = hashlib.sha256()
        for name in ("global_delta", "group_delta", "centroids"):
            h.update(getattr(pl_module.mop, name).detach().cpu().contiguous().numpy().tobytes())
        out = Path(self.out_dir or trainer.default_root_dir)
        out.mkdir(parents=True, exist_ok=True)
        doc = {"rank": trainer.global_rank, "steps": trainer.global_step, "sha256": h.hexdigest()}
        (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(doc))
