"""Full-resolution crops of the flattest region of each image, one column per method.

Invisibility is judged at 100 % zoom on flat regions (skin, sky, studio backgrounds): a
structured or coloured pattern shows there first. This takes the example images that
``fastprotect evaluate --view N --examples K`` writes (``<examples>/<domain>/<image>/``
holding ``original.png`` and one ``<method>.png`` per method, each as published), finds in
each original the ``--crop``-pixel square with the least local contrast (ignoring nearly
black or white regions, where clamping hides a perturbation), and cuts the same region out
of every method's image at that image's own resolution (per-image PGD is published at the
attacker's view, so its crop covers the same content in fewer pixels). Crops are never
resampled. With ``--amplify A`` a second row per image shows ``0.5 + A * (x_hat - x)``.

    python tools/flat_crops.py outputs/eval_view/examples --methods shipped pgd50 sign \
        --out docs/flat_crops.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LABEL_HEIGHT = 18


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255


def flattest_window(img: np.ndarray, side: int, stride: int = 8) -> tuple[int, int]:
    """Top-left corner of the ``side x side`` window with the smallest mean absolute luma
    gradient, among windows whose mean luma lies in ``[0.06, 0.94]``."""
    luma = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    grad = np.zeros_like(luma)
    grad[:, 1:] += np.abs(np.diff(luma, axis=1))
    grad[1:, :] += np.abs(np.diff(luma, axis=0))
    h, w = luma.shape
    if h < side or w < side:
        raise ValueError(f"image {w}x{h} is smaller than the {side}-px crop")
    gi = np.pad(grad, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    li = np.pad(luma, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    best, where = np.inf, (0, 0)
    for top in range(0, h - side + 1, stride):
        for left in range(0, w - side + 1, stride):
            b, r = top + side, left + side

            def total(s, top=top, left=left, b=b, r=r):
                return s[b, r] - s[top, r] - s[b, left] + s[top, left]

            mean = total(li) / side**2
            if not 0.06 <= mean <= 0.94:
                continue
            g = total(gi)
            if g < best:
                best, where = g, (top, left)
    return where


def _crop(img: np.ndarray, top: int, left: int, side: int, ref_shape) -> np.ndarray:
    """The same region of ``img``, which may be a resized copy of the reference image."""
    sy, sx = img.shape[0] / ref_shape[0], img.shape[1] / ref_shape[1]
    t, lf = round(top * sy), round(left * sx)
    return img[t : t + round(side * sy), lf : lf + round(side * sx)]


def _labelled(tiles: list[np.ndarray], labels: list[str], cell: int) -> Image.Image:
    """One row of tiles in ``cell``-pixel columns."""
    font = ImageFont.load_default()
    row = Image.new("RGB", (len(tiles) * (cell + 4), cell + LABEL_HEIGHT), "white")
    draw = ImageDraw.Draw(row)
    for i, (tile, label) in enumerate(zip(tiles, labels, strict=True)):
        arr = (np.clip(tile, 0, 1) * 255).round().astype(np.uint8)
        row.paste(Image.fromarray(arr), (i * (cell + 4), LABEL_HEIGHT))
        draw.text((i * (cell + 4) + 2, 3), label, fill="black", font=font)
    return row


def build(
    examples: Path, methods: list[str], side: int, amplify: float | None
) -> tuple[Image.Image, list[str]]:
    """The figure and one line per image (where its crop was taken).

    Every column of the sheet is as wide as the largest crop: a method published above the
    original's resolution (a small image's per-image PGD, made at a larger view) has a
    larger crop of the same region, shown unresampled, and the columns stay aligned."""
    rows, lines = [], []
    for folder in sorted(p for p in examples.glob("*/*") if (p / "original.png").is_file()):
        missing = [m for m in methods if not (folder / f"{m}.png").is_file()]
        if missing:
            raise FileNotFoundError(f"{folder}: no {', '.join(m + '.png' for m in missing)}")
        original = _read(folder / "original.png")
        top, left = flattest_window(original, side)
        images = [original] + [_read(folder / f"{m}.png") for m in methods]
        tiles = [_crop(im, top, left, side, original.shape) for im in images]
        labels = [f"{folder.name[:22]} original"] + methods
        rows.append((tiles, labels))
        if amplify:
            diffs = [np.zeros_like(tiles[0]) + 0.5]
            for im, tile in zip(images[1:], tiles[1:], strict=True):
                if im.shape == original.shape:
                    base = tiles[0]
                else:
                    base = _crop(_resized(original, im.shape), top, left, side, original.shape)
                diffs.append(0.5 + amplify * (tile - base))
            rows.append((diffs, [f"difference x{amplify:g}"] + methods))
        lines.append(
            f"{folder.parent.name}/{folder.name}: {side}x{side} at ({left}, {top}) of "
            f"{original.shape[1]}x{original.shape[0]}"
        )
    if not rows:
        raise FileNotFoundError(f"no <domain>/<image>/original.png under {examples}")
    cell = max([side] + [max(t.shape[:2]) for tiles, _ in rows for t in tiles])
    rows = [_labelled(tiles, labels, cell) for tiles, labels in rows]
    width = max(r.width for r in rows)
    sheet = Image.new("RGB", (width, sum(r.height + 6 for r in rows)), "white")
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height + 6
    return sheet, lines


def _resized(img: np.ndarray, shape) -> np.ndarray:
    """The original at a method's resolution (bilinear, antialiased, as the view is made)."""
    import torch

    from fastprotect.views import attacker_resize

    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    out = attacker_resize(x, min(shape[0], shape[1]))
    return out[0].permute(1, 2, 0).numpy()[: shape[0], : shape[1]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("examples", type=Path, help="evaluate's examples folder")
    parser.add_argument("--methods", nargs="+", required=True, help="method names, as columns")
    parser.add_argument("--crop", type=int, default=160, help="crop side in original pixels")
    parser.add_argument("--amplify", type=float, help="add rows of amplified differences")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write (not overwritten)")
    args = parser.parse_args(argv)
    if args.out.exists():
        print(f"flat_crops: {args.out} exists; choose another --out", file=sys.stderr)
        return 2
    try:
        sheet, lines = build(args.examples, args.methods, args.crop, args.amplify)
    except (FileNotFoundError, ValueError) as e:
        print(f"flat_crops: error: {e}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print("\n".join(lines))
    print(f"flat_crops: wrote {args.out} ({sheet.width}x{sheet.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
