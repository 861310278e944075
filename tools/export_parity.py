"""Parity between every protection path and the eager module, on real images.

    python tools/export_parity.py --model runs/final/mop.safetensors --data ../shared/data \
        [--max-side 768] [--strength auto] [--limit N] [--no-cpp]

Loads the protector (eager), exports it to a temporary folder as TorchScript (``.pt``),
lite interpreter (``.ptl``) and ``torch.export`` (``.pt2``) with ``export_protector``, adds
the TorchScript graph loaded with ``optimize=True`` (frozen, optimised for inference) as a
fourth path, and builds the C++ example (``tools/cpp/build.sh``) as a fifth, unless
``--no-cpp`` or no compiler (``$CXX`` or ``g++``) is found.

Every image under ``--data`` (recursive; shrunk so that its longer side is at most
``--max-side``; ``--limit`` takes the first N in sorted order) runs through the eager
module and through each path, on the CPU. Per path, over all images:

- max float diff: ``max |path(x) - eager(x)|`` over every value, in units of 1/255 (the
  C++ program writes only 8-bit PPM, so it has none);
- max 8-bit diff: ``max |u8(path) - u8(eager)|`` in levels, where ``u8`` is
  ``fastprotect.imageio.to_uint8`` (round(255 * clamp(y, 0, 1))) and the C++ output is its
  PPM read with PIL;
- pixels differing: the share of pixels (H x W positions, any channel) whose 8-bit value
  differs from eager's, over all pixels of all images.

A path is within 1/255 when its max float diff is at most 1 unit and its max 8-bit diff at
most 1 level. Prints a one-line header and a markdown table to stdout; progress goes to
stderr.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Parity:
    """Running maxima and counts for one path."""

    images: int = 0
    max_float: float | None = None  # in units of 1/255; None: no float output
    max_levels: int = 0
    differing: int = 0
    pixels: int = 0
    failures: int = 0
    seconds: float = 0.0

    def add(self, float_diff: float | None, u8: np.ndarray, ref_u8: np.ndarray) -> None:
        self.images += 1
        if float_diff is not None:
            self.max_float = max(self.max_float or 0.0, float_diff)
        diff = np.abs(u8.astype(np.int16) - ref_u8.astype(np.int16))
        self.max_levels = max(self.max_levels, int(diff.max()))
        self.differing += int((diff > 0).any(axis=-1).sum())
        self.pixels += diff.shape[0] * diff.shape[1]

    def within(self) -> bool:
        return (
            self.failures == 0
            and self.images > 0
            and (self.max_float is None or self.max_float <= 1.0)
            and self.max_levels <= 1
        )


def read_longer_side(path: Path, max_side: int) -> torch.Tensor:
    """``read_rgb`` with the *longer* side at most ``max_side``.

    ``read_rgb(path, s)`` bounds the shorter side by ``s``; asking it for the largest
    shorter side whose longer side (rounded as ``read_rgb`` rounds) fits keeps its decoding
    and resampling.
    """
    from fastprotect.data.files import read_rgb

    with Image.open(path) as im:
        w, h = im.size  # EXIF rotation swaps them, which changes neither min nor max
    short, long = min(w, h), max(w, h)
    if long <= max_side:
        return read_rgb(path)
    target = max(1, round(max_side * short / long))
    while target > 1 and round(long * target / short) > max_side:
        target -= 1
    return read_rgb(path, target)


def write_ppm(path: Path, rgb: torch.Tensor) -> None:
    """``3xHxW`` uint8 -> binary PPM."""
    Image.fromarray(rgb.permute(1, 2, 0).numpy(), "RGB").save(path, format="PPM")


def start_cpp_build(out: Path, no_cpp: bool) -> tuple[subprocess.Popen | None, str]:
    """Start ``tools/cpp/build.sh`` in the background; (process, reason when skipped)."""
    if no_cpp:
        return None, "skipped (--no-cpp)"
    cxx = os.environ.get("CXX", "g++")
    compiler = shlex.split(cxx)[0] if cxx.strip() else "g++"
    if shutil.which(compiler) is None:
        return None, f"skipped (no C++ compiler: {compiler!r} not found; set $CXX)"
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.Popen(
        ["bash", str(ROOT / "tools" / "cpp" / "build.sh"), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    return proc, ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", required=True, help="model file (.safetensors)")
    ap.add_argument("--data", nargs="+", required=True, help="image files or folders (recursive)")
    ap.add_argument("--max-side", type=int, default=768, help="shrink so the longer side <= this")
    ap.add_argument("--strength", default="auto", choices=["auto", "lpips", "jnd", "off"])
    ap.add_argument("--limit", type=int, help="take only the first N images (sorted)")
    ap.add_argument("--no-cpp", action="store_true", help="skip building and running C++")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (and the C++ one's)")
    args = ap.parse_args()

    from fastprotect.data.files import list_images
    from fastprotect.export import FORMATS, export_protector, load_exported
    from fastprotect.imageio import to_uint8
    from fastprotect.protect import load_protector

    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    files = list_images(args.data)
    if args.limit is not None:
        files = files[: args.limit]
    if not files:
        sys.exit(f"no images under {' '.join(args.data)}")

    tmp_dir = tempfile.TemporaryDirectory(prefix="export_parity_")
    tmp = Path(tmp_dir.name)
    binary = tmp / "protect"
    build, cpp_note = start_cpp_build(binary, args.no_cpp)

    protector, strength = load_protector(args.model, args.strength)
    protector = protector.cpu().eval()
    paths: dict[str, object] = {}
    for fmt, suffix in FORMATS.items():
        t = time.perf_counter()
        out = tmp / f"model{suffix}"
        export_protector(protector, out, fmt)
        paths[f"{fmt} ({suffix})"] = load_exported(out, fmt)
        print(f"exported {fmt} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    pt = tmp / f"model{FORMATS['torchscript']}"
    paths["torchscript, optimize=True"] = load_exported(pt, "torchscript", optimize=True)

    cpp_name = "C++ (tools/cpp, .pt)"
    if build is not None:
        log, _ = build.communicate()
        if build.returncode:
            cpp_note = f"build failed (exit {build.returncode}): {log.strip()[-2000:]}"
            print(f"C++: {cpp_note}", file=sys.stderr)
        else:
            print(f"built {binary}", file=sys.stderr)
    cpp_ok = build is not None and build.returncode == 0

    images = [read_longer_side(f, args.max_side) for f in files]
    sizes = [tuple(im.shape[1:]) for im in images]
    smallest = min(sizes, key=lambda s: s[0] * s[1])
    largest = max(sizes, key=lambda s: s[0] * s[1])

    stats = {name: Parity() for name in paths}
    if cpp_ok:
        stats[cpp_name] = Parity()
    cpp_env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    with torch.no_grad():
        for i, (f, rgb) in enumerate(zip(files, images, strict=True)):
            t_img = time.perf_counter()
            x = rgb[None].float().div(255)
            ref = protector(x)
            ref_u8 = to_uint8(ref[0])
            notes = []
            for name, graph in paths.items():
                t = time.perf_counter()
                try:
                    y = graph(x)
                except Exception as e:  # noqa: BLE001 - report any failure, keep going
                    stats[name].failures += 1
                    notes.append(f"{name} failed: {type(e).__name__}: {e}")
                    continue
                stats[name].seconds += time.perf_counter() - t
                diff = 255 * (y - ref).abs().max().item()
                stats[name].add(diff, to_uint8(y[0]), ref_u8)
            if cpp_ok:
                src, dst = tmp / f"in{i}.ppm", tmp / f"out{i}.ppm"
                write_ppm(src, rgb)
                t = time.perf_counter()
                run = subprocess.run(
                    [str(binary), str(pt), str(src), str(dst)],
                    capture_output=True,
                    text=True,
                    env=cpp_env,
                )
                if run.returncode:
                    stats[cpp_name].failures += 1
                    notes.append(f"C++ failed (exit {run.returncode}): {run.stderr.strip()}")
                else:
                    stats[cpp_name].seconds += time.perf_counter() - t
                    with Image.open(dst) as im:
                        out_u8 = np.asarray(im.convert("RGB"))
                    stats[cpp_name].add(None, out_u8, ref_u8)
                src.unlink(missing_ok=True)
                dst.unlink(missing_ok=True)
            h, w = rgb.shape[1:]
            print(
                f"[{i + 1}/{len(files)}] {f} {h}x{w} {time.perf_counter() - t_img:.1f} s"
                + "".join(f"\n  {n}" for n in notes),
                file=sys.stderr,
            )

    cpus = f"CPU ({os.cpu_count()} cores visible, {torch.get_num_threads()} torch threads)"
    print(
        f"device: {cpus}; torch {torch.__version__}; model {args.model}; "
        f"strength map: {strength}; {len(files)} images, longer side <= {args.max_side}, "
        f"sizes (HxW) {smallest[0]}x{smallest[1]} to {largest[0]}x{largest[1]}"
    )
    print()
    print(
        "| path | images | max float diff (1/255 units) | max 8-bit diff (levels) | "
        "pixels differing (%) |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, s in stats.items():
        done = f"{s.images}" + (f" ({s.failures} failed)" if s.failures else "")
        flt = "n/a (8-bit output)" if s.max_float is None else f"{s.max_float:.3g}"
        pct = f"{100 * s.differing / s.pixels:.4f}" if s.pixels else "n/a"
        lev = f"{s.max_levels}" if s.images else "n/a"
        print(f"| {name} | {done} | {flt} | {lev} | {pct} |")
    if not cpp_ok:
        print(f"| {cpp_name} | 0 | {cpp_note} | | |")
    bad = [name for name, s in stats.items() if not s.within()]
    verdict = (
        "every path is within 1/255 of eager (max float diff <= 1 unit, max 8-bit diff <= 1 level)"
        if not bad
        else "NOT every path is within 1/255 of eager: " + ", ".join(bad)
    )
    print(f"\n{verdict}" + ("" if cpp_ok else " (C++ not run)") + ".")
    print(f"total {time.perf_counter() - t_start:.0f} s", file=sys.stderr)
    tmp_dir.cleanup()


if __name__ == "__main__":
    main()
