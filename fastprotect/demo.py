"""The one-command demo: protect images with the shipped model and write an HTML report.

``fastprotect demo [INPUTS...] [--out DIR]`` protects the inputs (scikit-image's bundled
sample photos when none are named) into ``DIR/protected/`` exactly as ``fastprotect
protect`` would (lossless PNG, never overwriting), then writes ``DIR/report.html``: per
image the original, the protected image, their difference amplified, and what an
attacker's autoencoder (TAEF2, the FLUX.2 latent space) reconstructs from each, with the
metrics of :mod:`fastprotect.eval.metrics`.

Invisibility (PSNR, SSIM, largest change) is measured on the full-resolution files as
written. The attacker's view is measured the way a fine-tuning pipeline sees the images:
both files are resized (antialiased) so that the longer side is at most ``analysis_side``
(512 by default, the usual LoRA training resolution), then encoded and decoded.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from . import verdict
from .fileutil import atomic_output
from .imageio import load_image, to_uint8
from .protect import plan, protect_files
from .protector import Protector
from .release import VERSION as DEFAULT_VERSION

REPORT = "report.html"
FIGURES = "report_files"
#: the difference image maps -eta..+eta to black..white around mid-grey
DIFF_CAPTION = "difference x{gain:.0f} (grey = unchanged)"


@dataclass
class Row:
    """One image of the report."""

    name: str
    source: Path
    protected: Path
    size: tuple[int, int]
    figures: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


def _resize_longer(x: Tensor, side: int) -> Tensor:
    """``1x3xHxW`` resized (antialiased bilinear) so the longer side is at most ``side``."""
    h, w = x.shape[-2:]
    if max(h, w) <= side:
        return x
    s = side / max(h, w)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def _crop16(x: Tensor) -> Tensor:
    """Top-left crop to multiples of 16 px; an image under 16 px on a side is first
    enlarged (bilinear, isotropically) so that side is 16, as an attacker's resize would."""
    h, w = x.shape[-2:]
    if min(h, w) < 16:
        s = 16 / min(h, w)
        size = (max(16, round(h * s)), max(16, round(w * s)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        h, w = size
    return x[..., : h // 16 * 16, : w // 16 * 16]


def _save(x: Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, keep_suffix=True) as tmp:
        # the report's figures: fast compression (level 1), a few seconds less per demo
        Image.fromarray(to_uint8(x[0])).save(tmp, "PNG", compress_level=1)


@torch.no_grad()
def analyse(
    protector: Protector,
    decoder: torch.nn.Module | None,
    x: Tensor,
    x_hat: Tensor,
    analysis_side: int = 512,
    target: int | None = None,
    pull: bool = True,
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Metrics and figures of one image (``1x3xHxW`` original and protected, ``[0, 1]``).

    ``target`` is the index of the target the protection used (chosen again, at the
    analysis size, when not given). ``pull=False`` leaves out the latent pull, which costs
    an encoder pass of the target image (the demo report does; ``evaluate`` and ``serve``
    measure it).

    Returns:
        The metrics (PSNR, SSIM, largest change in 8-bit levels on the full image; target,
        latent pull, reconstruction PSNRs and disruption at the analysis size; the verdict
        of :mod:`fastprotect.verdict` with its ratio and warnings) and the
        figures (original, protected, amplified difference, and the two reconstructions,
        all at the analysis size).
    """
    from .eval.metrics import latent_pull, psnr, ssim

    eta = protector.mop.config.eta
    metrics: dict[str, Any] = {
        "psnr_db": float(psnr(x, x_hat)[0]),
        "ssim": float(ssim(x, x_hat)[0]),
        "max_change_levels": int(
            np.abs(to_uint8(x_hat[0]).astype(int) - to_uint8(x[0]).astype(int)).max()
        ),
    }
    # the autoencoder works on multiples of 16 px: crop the attacker's view to them
    xs, xs_hat, diff_full = (
        _crop16(_resize_longer(v, analysis_side)) for v in (x, x_hat, x_hat - x)
    )
    figures = {
        "original": xs,
        "protected": xs_hat,
        "difference": (0.5 + diff_full * (0.5 / eta)).clamp(0, 1),
    }
    t = protector.choose(xs)[0] if target is None else torch.tensor([target])
    metrics["target"] = protector.mop.config.targets[int(t)]
    z, z_hat = protector.encoder.latent(xs), protector.encoder.latent(xs_hat)
    if pull:
        z_y = protector.encoder.latent(protector.mop.target_image(t, xs.shape[-2:]))
        metrics["latent_pull"] = float(latent_pull(z_hat, z, z_y)[0])
    # the verdict: the same view of ±eta sign noise published at full resolution
    xs_noise = _crop16(_resize_longer(verdict.sign_noise(x, eta), analysis_side))
    ratio = verdict.shift_ratio(z, z_hat, protector.encoder.latent(xs_noise))
    metrics["noise_shift_ratio"] = ratio
    metrics["verdict"] = verdict.label(ratio)
    metrics["warnings"] = verdict.checks(x, analysis_side, protector.mop.config.isoluminant)
    if decoder is not None:
        r, r_hat = decoder(z).clamp(0, 1), decoder(z_hat).clamp(0, 1)
        figures["reconstruction of the original"] = r
        figures["reconstruction of the protected"] = r_hat
        metrics["recon_psnr_original_db"] = float(psnr(xs, r)[0])
        metrics["recon_psnr_protected_db"] = float(psnr(xs, r_hat)[0])
        metrics["disruption_db"] = (
            metrics["recon_psnr_original_db"] - metrics["recon_psnr_protected_db"]
        )
    return metrics, figures


def _decoder_for(protector: Protector) -> torch.nn.Module | None:
    from .encoders.taesd import TinyAutoencoderDecoder, TinyAutoencoderEncoder

    if isinstance(protector.encoder, TinyAutoencoderEncoder):
        return TinyAutoencoderDecoder(protector.encoder.variant)
    return None  # a diffusers VAE model: no decoder is loaded for the demo


def run_demo(
    inputs: list[str],
    out: Path,
    protector: Protector,
    about: dict[str, str],
    analysis_side: int = 512,
    progress: bool = True,
) -> tuple[Path, list[Row], list[tuple[Path, str]]]:
    """Protect ``inputs`` into ``out/protected`` and write ``out/report.html``.

    Args:
        inputs: files, folders (recursive) and globs, as ``fastprotect protect`` takes them.
        out: the demo folder; must not hold a report yet.
        protector: the inference module.
        about: lines for the report's header (model, strength map, ...).
        analysis_side: longer side of the attacker's view.

    Returns:
        The report's path, its rows, and the inputs that failed with why.

    Raises:
        FileExistsError: ``out`` already holds a report.
        WeightsNotFoundError: the attacker's decoder has no weights here (raised before any
            image is protected).
    """
    from tqdm import tqdm

    report = out / REPORT
    if report.exists():
        raise FileExistsError(f"{report} exists; choose another --out (nothing is overwritten)")
    if (out / "protected").is_dir() and any((out / "protected").iterdir()):
        raise FileExistsError(
            f"{out / 'protected'} holds images from an earlier demo that did not finish; "
            "choose another --out or remove that folder (nothing is overwritten)"
        )
    # before any image is written: missing decoder weights fail here, not after protecting
    decoder = _decoder_for(protector)
    jobs, failed = plan(inputs, out / "protected", "png")
    summary = protect_files(protector, jobs, "png", skip_existing=False, progress=progress)
    failed = failed + summary.failed
    per_image = summary.model_seconds / max(len(summary.written), 1)
    written = set(summary.written)
    rows: list[Row] = []
    # each image is encoded and decoded twice at the attacker's view: slower than protecting
    what = "report: attacker's autoencoder and metrics"
    for i, job in enumerate(tqdm(jobs, desc=what, unit="image", disable=not progress)):
        if job.dest not in written:
            continue
        x = load_image(job.source).rgb[None]
        x_hat = load_image(job.dest).rgb[None]  # exactly what was written
        target = summary.targets[job.source]
        # no latent pull: the target's encoder pass would cost the demo a ninth of its time
        try:
            metrics, figures = analyse(
                protector, decoder, x, x_hat, analysis_side, target, pull=False
            )
        except Exception as e:  # noqa: BLE001 - one image's report, not the whole report
            failed.append((job.source, f"protected, but not analysed ({type(e).__name__}: {e})"))
            continue
        rel = job.dest.relative_to(out / "protected")
        row = Row(rel.as_posix(), job.source, job.dest, tuple(x.shape[-2:]), metrics=metrics)
        for k, (label, fig) in enumerate(figures.items()):
            path = out / FIGURES / f"{i:03d}_{k}.png"
            _save(fig, path)
            row.figures[label] = path.relative_to(out).as_posix()
        rows.append(row)
    about = {**about, "model time per image": f"{per_image:.2f} s (this machine)"}
    _write_html(report, rows, failed, about, protector.mop.config.eta, analysis_side)
    with atomic_output(out / "metrics.json") as tmp:
        tmp.write_text(
            json.dumps(
                {
                    "about": about,
                    "images": [
                        {
                            "image": r.name,
                            "source": str(r.source),
                            "size": list(r.size),
                            **r.metrics,
                        }
                        for r in rows
                    ],
                    "failed": [[str(p), why] for p, why in failed],
                },
                indent=2,
            )
        )
    return report, rows, failed


def _fmt(v: float | str | None, spec: str) -> str:
    return "n/a" if v is None else (v if isinstance(v, str) else format(v, spec))


def _write_html(
    path: Path,
    rows: list[Row],
    failed: list[tuple[Path, str]],
    about: dict[str, str],
    eta: float,
    analysis_side: int,
) -> None:
    e = html.escape
    gain = 0.5 / eta
    head = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in about.items())
    body = []
    for r in rows:
        m = r.metrics
        cells = []
        for label, src in r.figures.items():
            cap = DIFF_CAPTION.format(gain=gain) if label == "difference" else label
            cells.append(
                f'<figure><a href="{e(src)}"><img src="{e(src)}" loading="lazy" '
                f'alt="{e(cap)}"></a><figcaption>{e(cap)}</figcaption></figure>'
            )
        stats = [
            (
                "verdict",
                f"{m.get('verdict')}: latent shift {_fmt(m.get('noise_shift_ratio'), '.1f')}x "
                "that of random noise",
            ),
            *(("warning", w) for w in m.get("warnings", [])),
            ("PSNR", f"{_fmt(m.get('psnr_db'), '.2f')} dB"),
            ("SSIM", _fmt(m.get("ssim"), ".4f")),
            ("largest change", f"{m.get('max_change_levels')}/255"),
            ("target", _fmt(m.get("target"), "")),
            *((("latent pull", _fmt(m["latent_pull"], ".3f")),) if "latent_pull" in m else ()),
            ("reconstruction PSNR, original", f"{_fmt(m.get('recon_psnr_original_db'), '.2f')} dB"),
            (
                "reconstruction PSNR, protected",
                f"{_fmt(m.get('recon_psnr_protected_db'), '.2f')} dB",
            ),
            ("disruption", f"{_fmt(m.get('disruption_db'), '.2f')} dB"),
        ]
        dl = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in stats)
        link = quote(Path("protected", r.name).as_posix())  # a # or ? in a name is no URL part
        body.append(
            f"<section><h2>{e(r.name)} <small>{r.size[1]}x{r.size[0]} · "
            f'<a href="{e(link)}">protected PNG</a></small></h2>'
            f'<div class="row">{"".join(cells)}</div><table class="m">{dl}</table></section>'
        )
    fails = ""
    if failed:
        items = "".join(f"<li>{e(str(p))}: {e(why)}</li>" for p, why in failed)
        fails = f"<section><h2>Not protected</h2><ul>{items}</ul></section>"
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fastprotect report</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
h1 {{ font-size: 1.5em; margin: 0 0 .3em; }} h2 {{ font-size: 1.1em; margin: 1.2em 0 .4em; }}
small {{ font-weight: normal; color: #666; }}
table {{ border-collapse: collapse; }} th {{ text-align: left; padding-right: 1em;
  font-weight: 600; }} td, th {{ padding: 1px 6px 1px 0; vertical-align: top; }}
.row {{ display: flex; gap: 8px; flex-wrap: wrap; }}
figure {{ margin: 0; width: 220px; }} figure img {{ width: 220px; height: auto;
  image-rendering: auto; border: 1px solid #ccc; display: block; }}
figcaption {{ font-size: 12px; color: #555; }}
table.m {{ margin-top: .4em; font-size: 13px; }}
section {{ border-top: 1px solid #ddd; }}
.note {{ color: #555; max-width: 60em; }}
</style></head><body>
<h1>fastprotect report</h1>
<table>{head}</table>
<p class="note">Invisibility (PSNR, SSIM, largest change) is measured on the protected PNG
as written, at full resolution. The attacker's view is the TAEF2 autoencoder (FLUX.2 latent
space) on both images resized to at most {analysis_side} px on the longer side, as a
fine-tuning pipeline would: <b>disruption</b> is how many dB of reconstruction PSNR
the protection costs the autoencoder (higher is stronger); the <b>verdict</b> compares how
far the protection moves the attacker's latent with how far &plusmn;eta random sign noise
moves it (strong from 2x, moderate from 1.2x, weak below), and warns about tiny or mostly
flat images. The pull toward the target texture is left to <code>fastprotect evaluate</code>
(it would cost this report a ninth of its time). Click an image for full size.</p>
{"".join(body)}
{fails}
</body></html>
"""
    with atomic_output(path) as tmp:
        tmp.write_text(doc, encoding="utf-8")


def describe_model(doc: dict, path: Path, strength: str, s_min: float, s_max: float) -> dict:
    """Header lines of the report for a loaded model file."""
    release = doc.get("release")
    c = doc["config"]
    if release:
        default = release["version"] == DEFAULT_VERSION
        model = f"{release['name']} v{release['version']} ({'shipped' if default else 'packaged'})"
    else:
        model = str(path)
    return {
        "model": model,
        "encoder": f"{doc['encoder'].get('kind')}:{doc['encoder'].get('name')}",
        "budget": f"eta = {c['eta'] * 255:.0f}/255, targets {', '.join(c['targets'])}, "
        f"K = {c['groups']}",
        "strength map": strength if strength == "off" else f"{strength}, s in [{s_min}, {s_max}]",
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
