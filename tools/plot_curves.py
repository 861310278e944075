"""Learning curves of a training run from its CSV log (Lightning's ``CSVLogger``).

    python tools/plot_curves.py runs/taef2_v2/csv/version_0/metrics.csv \
        --out docs/training_v2_curves.png [--smooth 10]

One panel with every ``train/*`` term (a running mean over ``--smooth`` logged points),
one per validation metric named by ``--val`` (default ``val/latent_pull`` and
``val/psnr``) against the step. Prints the first and last value of each
curve, so the numbers in the docs can be pasted from here. Needs matplotlib (the ``dev``
extra). Refuses to overwrite ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def read_curves(path: Path) -> dict[str, list[tuple[int, float]]]:
    """``{metric: [(step, value), ...]}`` from a CSVLogger file (empty cells skipped)."""
    curves: dict[str, list[tuple[int, float]]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            step = int(row["step"])
            for key, value in row.items():
                if key in ("step", "epoch") or value in ("", None):
                    continue
                curves.setdefault(key, []).append((step, float(value)))
    return curves


def running_mean(values: list[float], n: int) -> list[float]:
    """Mean of the last ``n`` values at each point (fewer at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= n:
            total -= values[i - n]
        out.append(total / min(i + 1, n))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("metrics", type=Path, help="metrics.csv of a CSVLogger run")
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--smooth", type=int, default=10, help="running mean over N logged points")
    ap.add_argument(
        "--val",
        nargs="*",
        help="validation metrics to plot (default: val/latent_pull and val/psnr where the "
        "log has them; a run without validation has none)",
    )
    ap.add_argument("--title", default=None)
    args = ap.parse_args(argv)
    if args.out.exists():
        print(f"plot_curves: {args.out} exists; choose another --out", file=sys.stderr)
        return 2
    if args.smooth < 1:
        print(f"plot_curves: --smooth must be at least 1, not {args.smooth}", file=sys.stderr)
        return 2
    if not args.metrics.is_file():
        print(f"plot_curves: {args.metrics}: no such file", file=sys.stderr)
        return 2
    curves = read_curves(args.metrics)
    train = {k: v for k, v in curves.items() if k.startswith("train/")}
    if args.val is None:
        args.val = [k for k in ("val/latent_pull", "val/psnr") if k in curves]
    missing = [k for k in args.val if k not in curves]
    if missing:
        known = ", ".join(sorted(k for k in curves if k.startswith("val/"))) or "none"
        print(
            f"plot_curves: {args.metrics} has no {', '.join(missing)} (val metrics: {known})",
            file=sys.stderr,
        )
        return 2
    val = {k: curves[k] for k in args.val}
    if not train:
        print(f"plot_curves: no train/* metrics in {args.metrics}", file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 1 + len(val)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), squeeze=False)
    ax = axes[0][0]
    for key, points in sorted(train.items()):
        steps = [s for s, _ in points]
        smooth = running_mean([v for _, v in points], args.smooth)
        ax.plot(steps, smooth, label=key)
        print(f"{key}: {smooth[0]:.4f} at step {steps[0]} -> {smooth[-1]:.4f} at step {steps[-1]}")
    ax.set_xlabel("step")
    ax.set_title(f"training terms (running mean of {args.smooth})")
    ax.legend(fontsize=8)
    for ax, (key, points) in zip(axes[0][1:], val.items(), strict=True):
        steps = [s for s, _ in points]
        values = [v for _, v in points]
        ax.plot(steps, values, marker="o")
        ax.set_xlabel("step")
        ax.set_title(key)
        print(f"{key}: " + ", ".join(f"{v:.4f} (step {s})" for s, v in points))
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"plot_curves: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
