"""Sample colour photos that ship inside scikit-image's wheel.

No download, and nothing copied into this repository.
"""

from __future__ import annotations

import shutil
from pathlib import Path

SAMPLES = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "ihc.png",
)


def write_samples(out_dir: str | Path) -> list[Path]:
    """Copy scikit-image's bundled colour photos into ``out_dir``; existing files are kept."""
    import skimage.data

    src = Path(skimage.data.data_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in SAMPLES:
        dest = out / name
        if not dest.exists():
            shutil.copyfile(src / name, dest)
        written.append(dest)
    return written
