"""Table and figure of an ``evaluate --transforms clean ... purification`` run.

    python tools/purification_table.py outputs/eval_purify/results.json --out docs/purification.png
    python tools/purification_table.py runs/a/results.json --merge runs/b/results.json
    python tools/purification_table.py DIR/results.json --by-domain clean jpeg75

Prints a markdown table: per transform and method, the decode disruption (dB) after the
transform, the share of the method's clean disruption it keeps, and the latent pull; then
the margin of each method over the unprotected image after the same transform (what the
protection adds to the transform's own damage). In view mode a method published at the
attacker's view (per-image PGD) is measured against the ``resized`` method where the run
has one (the unprotected image published at the view: the transforms act on an image of
the same size). Then the clean visibility of each method (PSNR, SSIM, low-frequency PSNR).
``--by-domain T ...`` prints the disruption per domain after the named transforms. Writes a
bar chart of the disruption. To compare two methods' margins image by image, use
``tools/paired.py RESULTS A B --margins``.

``--merge`` adds the methods of another run of the same images and transforms
(evaluation is deterministic), so a reference measured once need not be measured again.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fastprotect.eval.run import margin_references


def _references(doc: dict) -> dict[str, str]:
    """The method each method's margin is measured over (``none``, or ``resized`` for a
    method published at the view)."""
    return margin_references(doc["settings"]["methods"], doc.get("rows", []))


def _check(doc: dict) -> None:
    """Refuse what the tables cannot read: several views (one table per view would be
    needed; the rows would mix), no clean transform (the share kept is of the clean
    disruption), no disruption (a run without a decoder)."""
    _one_view(doc, "the table")
    if "clean" not in doc["settings"]["transforms"]:
        raise SystemExit(
            "purification_table.py: the run has no 'clean' transform, which the share kept "
            "is measured against; run evaluate with --transforms clean ..."
        )
    if not doc["settings"].get("decoder", True):
        raise SystemExit(
            "purification_table.py: the run measured no decode disruption (its evaluation "
            "autoencoder has no decoder)"
        )


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
            kept = (
                f"{100 * e['disruption_db'] / c['disruption_db']:.0f} %"
                if c["disruption_db"]
                else "n/a"
            )
            cells.append(f"{e['disruption_db']:.2f} ({kept}) / {e['latent_pull']:.3f}")
        out.append(f"| {t} | " + " | ".join(cells) + " |")
    reference = _references(doc)
    caption = "Margin over the unprotected image after the same transform (dB):"
    if "resized" in methods:
        caption = (
            "Margin over the unprotected image after the same transform (dB; for methods "
            "published at the view, over `resized`, the unprotected image published there):"
        )
    out += [
        "",
        caption,
        "",
        "| transform | " + " | ".join(methods) + " |",
        "|---|" + "---:|" * len(methods),
    ]
    for t in s["transforms"]:
        cells = [
            f"{idx[(m, t)]['disruption_db'] - idx[(reference[m], t)]['disruption_db']:+.2f}"
            for m in methods
        ]
        out.append(f"| {t} | " + " | ".join(cells) + " |")
    shown = [
        (m, e)
        for m in methods
        if (e := idx.get((m, "clean"))) is not None
        and all(e.get(k) is not None for k in ("psnr", "ssim", "lf_psnr"))
    ]
    if shown:  # not for the unchanged images (infinite PSNR) nor runs without these metrics
        out += [
            "",
            "Visibility, clean (mean over the images; each method measured on the image it "
            "publishes, so a method published at the view against the original resized there):",
            "",
            "| method | PSNR dB | SSIM | low-frequency PSNR dB |",
            "|---|---:|---:|---:|",
        ]
        out += [
            f"| {m} | {e['psnr']:.2f} | {e['ssim']:.3f} | {e['lf_psnr']:.2f} |" for m, e in shown
        ]
    return "\n".join(out)


def _one_view(doc: dict, option: str) -> None:
    views = {r.get("view") for r in doc["rows"]}
    if len(views) > 1:
        raise SystemExit(
            f"purification_table.py: {option} reads a run of one view; this one has "
            f"{sorted(views, key=str)}"
        )


def by_domain(doc: dict, transforms: list[str]) -> str:
    """Decode disruption per domain (number of images in brackets) after each of
    ``transforms``, for every method and the unprotected image: the dB themselves, not
    margins (after a noise transform the unprotected image alone is several dB)."""
    _one_view(doc, "--by-domain")
    s = doc["settings"]
    missing = [t for t in transforms if t not in s["transforms"]]
    if missing:
        raise SystemExit(
            f"purification_table.py: --by-domain names transforms this run lacks: {missing}"
        )
    methods = ["none", *(m for m in s["methods"] if m != "none")]
    idx = {(e["method"], e["transform"], e["domain"]): e for e in doc["summary"]}
    domains = sorted({e["domain"] for e in doc["summary"] if e["domain"] != "all"})
    out = [
        "Decode disruption dB by domain, " + " / ".join(transforms) + ":",
        "",
        "| domain | " + " | ".join("unprotected" if m == "none" else m for m in methods) + " |",
        "|---|" + "---:|" * len(methods),
    ]
    for dom in domains:
        n = idx[("none", "clean", dom)]["n"] if ("none", "clean", dom) in idx else "?"
        cells = [
            " / ".join(f"{idx[(m, t, dom)]['disruption_db']:.2f}" for t in transforms)
            for m in methods
        ]
        out.append(f"| {dom} ({n}) | " + " | ".join(cells) + " |")
    return "\n".join(out)


def merge(doc: dict, other: dict) -> None:
    """Add ``other``'s methods (not ``none``, not a name ``doc`` has) to ``doc``; both runs
    must hold the same images and ``other`` every transform of ``doc``."""
    views, their_views = ({r.get("view") for r in d["rows"]} for d in (doc, other))
    if views != their_views:
        raise SystemExit(
            f"purification_table.py: --merge needs a run of the same view; "
            f"{sorted(views, key=str)} against {sorted(their_views, key=str)}"
        )
    images = {r["image"] for r in doc["rows"] if r["method"] == "none"}
    theirs = {r["image"] for r in other["rows"] if r["method"] == "none"}
    missing = [t for t in doc["settings"]["transforms"] if t not in other["settings"]["transforms"]]
    if images != theirs or missing:
        raise SystemExit(
            "purification_table.py: --merge needs a run of the same images with every "
            f"transform; images differ: {sorted(images ^ theirs)}, transforms missing: {missing}"
        )
    new = [m for m in other["settings"]["methods"] if m not in doc["settings"]["methods"]]
    doc["settings"]["methods"] += new
    doc["summary"] += [e for e in other["summary"] if e["method"] in new]
    doc["rows"] += [r for r in other["rows"] if r["method"] in new]


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
        names = {"none": "unprotected", "resized": "unprotected, published at the view"}
        ax.bar(xs, vals, width, label=names.get(m, m))
    ax.set_xticks(range(len(transforms)), transforms, rotation=30, ha="right")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("decode disruption, dB")
    ax.set_title(f"After each purification ({_images(s)}, {s['eval_encoder']})")
    ax.legend(ncol=len(methods), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _images(s: dict) -> str:
    """How many images, and whether they are only part of a run (an unfinished run read
    from its journal, or some of a run's shards)."""
    p = s.get("partial")
    which = {"val": "validation", "train": "training"}.get(s.get("split", "val"), "")
    images = f"{which} images" if which else "images"
    if p and "shards_missing" in p:  # tools/merge_results.py of some of a run's shards
        n = s["shards"]["of"]
        return (
            f"{p['measured']} of the {p['of']} {images}: "
            f"{n - len(p['shards_missing'])} of {n} shards"
        )
    if p:  # tools/journal_results.py of an unfinished run
        return f"{p['measured']} of the {p['of']} {images} of an unfinished run"
    return f"{s['images']} {images}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("results", type=Path, help="results.json of fastprotect evaluate")
    ap.add_argument("--out", type=Path, help="the figure (default: purification.png beside it)")
    ap.add_argument(
        "--merge",
        type=Path,
        action="append",
        default=[],
        help="results.json of another run of the same images and transforms: its methods join",
    )
    ap.add_argument(
        "--by-domain",
        nargs="+",
        metavar="T",
        default=[],
        help="print the disruption per domain after these transforms (e.g. clean jpeg75): "
        "dB as measured, the unprotected image's included, not margins",
    )
    args = ap.parse_args()
    doc = json.loads(args.results.read_text())
    print(f"From: {doc['settings']['command']}")
    if doc["settings"].get("partial"):
        print(f"Partial: {_images(doc['settings'])}")
    for path in args.merge:
        other = json.loads(path.read_text())
        merge(doc, other)
        print(f"With: {other['settings']['command']}")
    _check(doc)
    print()
    print(tables(doc))
    if args.by_domain:
        print()
        print(by_domain(doc, args.by_domain))
    out = args.out or args.results.with_name("purification.png")
    try:
        figure(doc, out)
    except ImportError:
        sys.exit("purification_table.py: the figure needs matplotlib (the project's .venv has it)")
    print(f"\nwrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
