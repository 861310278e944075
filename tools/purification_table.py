"""Table and figure of an ``evaluate --transforms clean ... purification`` run.

    python tools/purification_table.py outputs/eval_purify/results.json --out docs/purification.png

Prints a markdown table: per transform and method, the decode disruption (dB) after the
transform, the share of the method's clean disruption it keeps, and the latent pull; then
the margin of each method over the unprotected image after the same transform (what the
protection adds to the transform's own damage). Writes a bar chart of the disruption.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def tables(doc: dict) -> str:
    s = doc["settings"]
    idx = {(e["method"], e["transform"]): e for e in doc["summary"] if e["domain"] == "all"}
    methods = [m for m in s["methods"] if m != "none"]
    head = "| transform | unprotected | " + " | ".join(methods) + " |"
    rule = "|---|---:|" + "---:|" * len(methods)
    out = [
        "Decode disruption dB after the transform (share of the method's clean disruption "
        "kept) / latent pull:",
        "",
        head,
        rule,
    ]
    for t in s["transforms"]:
        cells = [f"{idx[('none', t)]['disruption_db']:.2f}"]
        for m in methods:
            e, c = idx[(m, t)], idx[(m, "clean")]
            kept = 100 * e["disruption_db"] / c["disruption_db"] if c["disruption_db"] else 0
            cells.append(f"{e['disruption_db']:.2f} ({kept:.0f} %) / {e['latent_pull']:.3f}")
        out.append(f"| {t} | " + " | ".join(cells) + " |")
    out += [
        "",
        "Margin over the unprotected image after the same transform (dB):",
        "",
        "| transform | " + " | ".join(methods) + " |",
        "|---|" + "---:|" * len(methods),
    ]
    for t in s["transforms"]:
        base = idx[("none", t)]["disruption_db"]
        cells = [f"{idx[(m, t)]['disruption_db'] - base:+.2f}" for m in methods]
        out.append(f"| {t} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def figure(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = doc["settings"]
    idx = {(e["method"], e["transform"]): e for e in doc["summary"] if e["domain"] == "all"}
    methods, transforms = s["methods"], s["transforms"]
    fig, ax = plt.subplots(figsize=(11, 4.2), dpi=110)
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        vals = [idx[(m, t)]["disruption_db"] for t in transforms]
        xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(transforms))]
        ax.bar(xs, vals, width, label="unprotected" if m == "none" else m)
    ax.set_xticks(range(len(transforms)), transforms, rotation=30, ha="right")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("decode disruption, dB")
    ax.set_title(f"After each purification ({s['images']} validation images, {s['eval_encoder']})")
    ax.legend(ncol=len(methods), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("results", type=Path, help="results.json of fastprotect evaluate")
    ap.add_argument("--out", type=Path, help="the figure (default: purification.png beside it)")
    args = ap.parse_args()
    doc = json.loads(args.results.read_text())
    print(f"From: {doc['settings']['command']}\n")
    print(tables(doc))
    out = args.out or args.results.with_name("purification.png")
    try:
        figure(doc, out)
    except ImportError:
        sys.exit("purification_table.py: the figure needs matplotlib (the project's .venv has it)")
    print(f"\nwrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
