"""Join the results of an evaluation run in shards (``evaluate --shard I/N``) into one.

    python tools/merge_results.py runs/s1of5/results.json runs/s2of5/results.json --out DIR
    python tools/merge_results.py docs/data/purify512_split/*.json.gz --out runs/split_so_far

A long evaluation (per-image PGD on the whole validation split takes hours on a CPU) can
be run as N shards, on several machines or in several sessions, each shard every N-th
image. This checks that the inputs are shards of one run (the same settings but the shard
and what only describes the run: its command, seconds, threads, device name), that no
image is in two of them and no shard twice, and writes ``results.json`` and
``results.csv`` in the format ``evaluate`` writes, the images in the order of the whole
run, so ``tools/paired.py``, ``tools/purification_table.py`` and ``tools/report.py`` read
it. Its ``settings.shards`` names the shards joined and those still missing; where any is
missing the result is a sample of the run (each shard holds about 1/N of every domain),
and ``settings.partial`` says so. Inputs may be gzipped (``.json.gz``), as the results
kept in the repository are. Prints the table ``evaluate`` prints.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

from fastprotect.eval.run import EvaluationError, summarise, table, write_results

# settings that describe one shard's run, not what its rows measure
_PER_RUN = (
    "images",
    "shard",
    "command",
    "resumed_images",
    "torch_threads",
    "device_name",
    "partial",
)


def _load(path: Path) -> dict:
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        doc = json.loads(raw)
    except (OSError, ValueError) as e:
        raise EvaluationError(f"{path}: not a readable results.json ({e})") from None
    if not isinstance(doc, dict) or "settings" not in doc or "rows" not in doc:
        raise EvaluationError(f"{path}: not a results.json of fastprotect evaluate")
    return doc


def merge(docs: list[tuple[Path, dict]]) -> tuple[list[dict], dict]:
    """The rows of all shards in the whole run's order (shard i's k-th image is the run's
    image (k-1)N + i) and the joined settings."""
    first_path, first = docs[0]
    common = {k: v for k, v in first["settings"].items() if k not in _PER_RUN}
    n = None
    by_shard: dict[int, tuple[Path, dict]] = {}
    for path, doc in docs:
        s = doc["settings"]
        if "shard" not in s:
            raise EvaluationError(f"{path} is not a shard: it was not run with --shard I/N")
        i, sn = s["shard"]
        n = sn if n is None else n
        if sn != n:
            raise EvaluationError(f"{path} is shard {i}/{sn}, the others are of {n} shards")
        if i in by_shard:
            raise EvaluationError(f"shard {i}/{n} is given twice: {by_shard[i][0]} and {path}")
        differ = sorted(
            k
            for k in {*common, *s}
            if k not in _PER_RUN and common.get(k, "<absent>") != s.get(k, "<absent>")
        )
        if differ:
            raise EvaluationError(
                f"{path} and {first_path} are not shards of one run: their settings differ "
                f"in {', '.join(differ)}"
            )
        if "partial" in s:
            raise EvaluationError(
                f"{path} holds only part of shard {i}/{n} (read from an unfinished run's "
                "journal); finish that shard with evaluate --resume first"
            )
        by_shard[i] = (path, doc)
    images: dict[str, int] = {}
    ordered: list[list[str]] = []
    for i in sorted(by_shard):
        path, doc = by_shard[i]
        names = list(dict.fromkeys(r["image"] for r in doc["rows"]))
        for name in names:
            if name in images:
                raise EvaluationError(
                    f"{name} is in shard {images[name]} and in shard {i}: not shards of one run"
                )
            images[name] = i
        ordered.append(names)
    rows_of: dict[str, list[dict]] = {}
    for _, doc in by_shard.values():
        for r in doc["rows"]:
            rows_of.setdefault(r["image"], []).append(r)
    # interleave: the run's order is shard 1's first image, shard 2's first, ...
    rows = []
    for k in range(max(len(o) for o in ordered)):
        for names in ordered:
            if k < len(names):
                rows += rows_of[names[k]]
    missing = [i for i in range(1, n + 1) if i not in by_shard]
    settings = {**common, "images": len(images)}
    settings["shards"] = {
        "of": n,
        "joined": sorted(by_shard),
        "missing": missing,
        "commands": [by_shard[i][1]["settings"].get("command") for i in sorted(by_shard)],
        "seconds_from": "each shard's own run",
    }
    settings["command"] = "python tools/merge_results.py " + " ".join(
        str(by_shard[i][0]) for i in sorted(by_shard)
    )
    if missing:
        settings["partial"] = {
            "measured": len(images),
            "shards_missing": missing,
            "of_shards": n,
            "images": list(images),
        }
    return rows, settings


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, nargs="+", help="results.json (or .json.gz) of shards")
    ap.add_argument("--out", type=Path, required=True, help="folder for results.json/.csv")
    args = ap.parse_args()
    try:
        rows, settings = merge([(p, _load(p)) for p in args.results])
        written = write_results(args.out, rows, settings)
    except EvaluationError as e:
        print(f"merge_results: error: {e}", file=sys.stderr)
        return 2
    summary = summarise(rows)
    domains = ["all", *sorted({e["domain"] for e in summary} - {"all"})]
    print(table(summary, transforms=settings["transforms"], domains=domains))
    sh = settings["shards"]
    left = f"; missing {sh['missing']}" if sh["missing"] else " (all)"
    print(
        f"\n{settings['images']} images from shards {sh['joined']} of {sh['of']}{left}; "
        f"wrote {written[0]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
