"""Number of perturbation groups K at the same training budget: train, evaluate, tabulate.

For each K, writes a copy of the base recipe with ``model.groups = K`` and its own output
folder, trains it with ``fastprotect fit`` (resuming from the run's last checkpoint when one
exists, skipping training when the run's model file exists), evaluates it with
``fastprotect evaluate --view`` on the same validation images, and prints one table (all
images, then per domain) from the evaluation results. Every K gets the same steps, batch,
data, seed and recipe; only the number of groups differs.

    python tools/k_sweep.py --ks 0 4 8 16 --steps 200 --targets noise --out runs/ksweep

The paper leaves K open; with K = 0 the model is a single universal perturbation per target.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

DATA = [f"../shared/data/{d}" for d in ("objects", "faces", "cartoon", "extras")]


def derived_config(base: dict, k: int, steps: int, root: Path, targets: list[str] | None) -> dict:
    """The base recipe with K groups, ``steps`` steps and every output path under ``root``."""
    cfg = json.loads(json.dumps(base))  # deep copy
    old = str(cfg["trainer"]["default_root_dir"])

    def repath(v):
        if isinstance(v, str):
            return v.replace("${trainer.default_root_dir}", str(root)).replace(old, str(root))
        if isinstance(v, dict):
            return {a: repath(b) for a, b in v.items()}
        if isinstance(v, list):
            return [repath(b) for b in v]
        return v

    cfg = repath(cfg)
    cfg["trainer"]["default_root_dir"] = str(root)
    cfg["trainer"]["max_steps"] = steps
    cfg["trainer"]["limit_val_batches"] = 0  # the evaluation below scores every K alike
    loggers = cfg["trainer"].get("logger")
    # a config may give no logger (false), one (a mapping or a class path) or a list
    loggers = loggers if isinstance(loggers, list) else [loggers]
    for lg in loggers:
        if isinstance(lg, dict) and "Wandb" in lg.get("class_path", ""):
            lg.setdefault("init_args", {})
            lg["init_args"]["name"] = f"{lg['init_args'].get('name', 'run')}_k{k}"
    cfg["model"]["groups"] = k
    if targets:
        cfg["model"]["targets"] = targets
    return cfg


def run(cmd: list[str], log: Path) -> None:
    print("$", " ".join(cmd), f"> {log}", flush=True)
    with open(log, "a") as f:
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    if rc:
        sys.exit(f"failed with exit status {rc}; see {log}")


def table(out: Path, ks: list[int]) -> str:
    lines = [
        "| K | domain | n | PSNR dB | SSIM | low-freq PSNR dB | latent pull | disruption dB "
        "| after JPEG q75 dB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k in ks:
        js = out / f"k{k}" / "eval" / "results.json"
        if not js.exists():
            continue
        summary = json.loads(js.read_text())["summary"]
        rows = {(r["transform"], r["domain"]): r for r in summary if r["method"] == f"k{k}"}
        for dom in ["all"] + sorted({d for _, d in rows if d != "all"}):
            c, j = rows.get(("clean", dom)), rows.get(("jpeg75", dom))
            if c is None:
                continue
            after = f"{j['disruption_db']:.2f}" if j else "n/a"
            lines.append(
                f"| {k} | {dom} | {c['n']} | {c['psnr']:.2f} | {c['ssim']:.3f} "
                f"| {c['lf_psnr']:.2f} "
                f"| {c['latent_pull']:.3f} | {c['disruption_db']:.2f} | {after} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    d = " (default: %(default)s)"
    ap.add_argument("--config", default="configs/taef2_v2.yaml", help="base recipe" + d)
    ap.add_argument("--ks", type=int, nargs="+", default=[0, 4, 8, 16], help="group counts" + d)
    ap.add_argument("--steps", type=int, default=200, help="training steps per K" + d)
    ap.add_argument("--targets", nargs="+", help="override the recipe's targets, e.g. noise")
    ap.add_argument("--out", type=Path, default=Path("runs/ksweep"), help="one folder per K" + d)
    ap.add_argument("--view", type=int, default=512, help="evaluation view" + d)
    ap.add_argument("--per-domain", type=int, default=2, help="validation images per domain" + d)
    ap.add_argument("--table-only", action="store_true", help="print the finished runs' table")
    args = ap.parse_args()

    if not args.table_only:
        base = yaml.safe_load(Path(args.config).read_text())
        for k in args.ks:
            root = args.out / f"k{k}"
            root.mkdir(parents=True, exist_ok=True)
            model = root / "model.safetensors"
            if not model.exists():
                cfg_path = root / "sweep_config.yaml"
                cfg = derived_config(base, k, args.steps, root, args.targets)
                cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
                cmd = [sys.executable, "-m", "fastprotect", "fit", "--config", str(cfg_path)]
                last = root / "checkpoints" / "last.ckpt"
                if last.exists():
                    cmd += ["--ckpt_path", str(last)]
                run(cmd, root / "fit.log")
            if not (root / "eval" / "results.json").exists():
                run(
                    [
                        sys.executable,
                        "-m",
                        "fastprotect",
                        "evaluate",
                        *DATA,
                        "--method",
                        f"k{k}=mop:{model}",
                        "--view",
                        str(args.view),
                        "--transforms",
                        "clean",
                        "jpeg75",
                        "--per-domain",
                        str(args.per_domain),
                        "--strength",
                        "jnd",
                        "--examples",
                        "0",
                        "--out",
                        str(root / "eval"),
                    ],
                    root / "eval.log",
                )
            print(table(args.out, [k]).splitlines()[2], flush=True)
    print(table(args.out, args.ks))


if __name__ == "__main__":
    main()
