"""Grey copies of the images a ``fastprotect evaluate`` run used, to measure grey images.

    python tools/grey_copies.py runs/taef2_v2_iso_jpeg/eval/results.json /tmp/grey

Writes each image of the run's rows as an 8-bit grey PNG (Pillow's ``convert("L")``) to
``OUT/<domain folder>/<name>.png``, so ``fastprotect evaluate OUT/<domain> ... --split all``
scores the same images in grey (``protect`` keeps grey images grey). Never overwrites.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="results.json of fastprotect evaluate")
    ap.add_argument("out", type=Path, help="folder for the grey copies")
    args = ap.parse_args(argv)
    rows = json.loads(args.results.read_text())["rows"]
    for src in sorted({Path(r["image"]) for r in rows}):
        dest = args.out / src.parent.name / f"{src.stem}.png"
        if dest.exists():
            print(f"grey_copies: {dest} exists; choose another folder", file=sys.stderr)
            return 2
        dest.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(src) as im:
            im.convert("L").save(dest)
        print(f"grey_copies: wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
