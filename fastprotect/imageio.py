"""Reading images for protection and writing the protected result, losing nothing.

What each input becomes (the protected output is always 8 bits per channel):

| input | protected as | written as |
|---|---|---|
| RGB, 8-bit | RGB | RGB PNG (or JPEG on request) |
| RGBA / LA / palette with transparency | RGB | RGBA: the alpha channel copied untouched |
| RGB or L with a transparent colour key (PNG tRNS) | RGB | RGBA (LA): the key as alpha |
| grayscale (L, LA), 1-bit | grey RGB (the perturbation keeps only its luma) | L (LA with alpha) |
| palette (P) without transparency | RGB | RGB |
| CMYK | converted to RGB | RGB; the CMYK ICC profile is dropped (it does not describe RGB) |
| 16-bit (I;16, I) or float (F) grayscale | scaled to 8 bits, grey | 8-bit grayscale |
| 16-bit RGB(A) PNG | scaled to 8 bits, RGB | RGB |
| a camera's MPO JPEG (the photo, then previews) | the first frame, the photo | RGB |
| animated or multi-page (several frames; GIF, APNG, WebP, TIFF) | refused with a clear error | — |

Output formats (``fmt``): ``png`` (default), ``jpeg`` (at a quality), and for
``--format keep`` also ``webp`` (lossless; Pillow writes grey as RGB with equal channels),
``tiff`` (deflate-compressed; the ICC profile is kept, EXIF is not, since a TIFF's EXIF
holds its old pixel layout) and ``bmp`` (no metadata); :func:`keep_format` says which one
an input keeps.

EXIF orientation is applied before protection (and the orientation tag dropped), so the
output looks the same as the input in every viewer; the ICC profile and the remaining EXIF
are carried over to PNG and JPEG outputs. Of a TIFF input's tags only the descriptive ones
(:data:`TIFF_EXIF_TAGS`: camera, date, author, copyright, resolution, the EXIF and GPS
sub-directories) are carried, never its layout (sizes, strips, compression). JPEG holds
at most 64 KB of EXIF: larger EXIF is left out of a JPEG output, with a note.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from .fileutil import atomic_output


class ImageReadError(ValueError):
    """An input file could not be used; the message names the file and the problem."""


class ImageTooLargeError(ImageReadError):
    """An image has more pixels than the caller allows (checked before it is decoded)."""


#: Pillow's name and the usual suffix of each output format
FORMATS = {
    "png": ("PNG", ".png"),
    "jpeg": ("JPEG", ".jpg"),
    "webp": ("WEBP", ".webp"),
    "tiff": ("TIFF", ".tif"),
    "bmp": ("BMP", ".bmp"),
}
#: what uploads to the web server may be (Pillow's names)
UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF")
#: zlib level of PNG outputs. Protected images are noisy and compress poorly at any level;
#: measured on 2048x2048 protected photos, level 4 writes files 2 % larger than Pillow's
#: default 6 in a third of the time (0.46 s against 1.31 s on 2 cores).
PNG_COMPRESS_LEVEL = 4
#: modes whose images are grayscale: protected as grey and written as grayscale
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
#: the tags of a TIFF input's directory that are carried over as EXIF (the rest describe
#: its own pixel layout: sizes, strips, compression, and its ICC profile again):
#: description, make, model, orientation (applied, then dropped), resolution and its unit,
#: software, date, artist, host, copyright, and the pointers to the EXIF and GPS sub-directories
TIFF_EXIF_TAGS = frozenset(
    (
        0x010E,
        0x010F,
        0x0110,
        0x0112,
        0x011A,
        0x011B,
        0x0128,
        0x0131,
        0x0132,
        0x013B,
        0x013C,
        0x8298,
        0x8769,
        0x8825,
    )
)
#: the most EXIF a JPEG file can hold (one APP1 segment), as Pillow counts it
JPEG_MAX_EXIF = 65533
#: formats whose extra frames are not animation: a camera's MPO JPEG holds the photo, then
#: previews or depth maps; the first frame is the photo
FIRST_FRAME_FORMATS = ("MPO",)
# Image.open is done under this lock: it turns Pillow's decompression-bomb warning into an
# error through the process-wide warnings filters, which two threads (the web server's)
# must not change at once (their exits could restore each other's state).
_OPEN_LOCK = threading.Lock()


def keep_format(source: str | os.PathLike) -> tuple[str, str]:
    """The output format and suffix that keep ``source``'s format: lossless formats stay
    (PNG, lossless WebP, TIFF, BMP), JPEG stays JPEG (re-encoded at the chosen quality, which
    costs some protection: docs/evaluation.md), and GIF becomes PNG (a 256-colour palette
    would quantise the perturbation away). Other suffixes become PNG."""
    suffix = Path(source).suffix
    low = suffix.lower()
    if low in (".jpg", ".jpeg"):
        return "jpeg", suffix
    for fmt in ("png", "webp", "bmp"):
        if low == FORMATS[fmt][1]:
            return fmt, suffix
    if low in (".tif", ".tiff"):
        return "tiff", suffix
    return "png", ".png"


@dataclass
class LoadedImage:
    """A decoded input: RGB in [0, 1], the untouched alpha channel, and what to carry over."""

    rgb: Tensor
    alpha: np.ndarray | None = None
    icc_profile: bytes | None = None
    exif: bytes | None = None
    source_mode: str = "RGB"
    notes: list[str] = field(default_factory=list)

    @property
    def grey(self) -> bool:
        """The input was a grayscale image (written back as grayscale)."""
        return self.source_mode in GREY_MODES


def _to_8bit_rgb(im: Image.Image, notes: list[str]) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 or im.mode.startswith("I;16") else 255.0
        notes.append(f"{im.mode} scaled to 8 bits")
        arr8 = np.clip(np.round(arr / peak * 255), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if im.mode == "F":  # 32-bit float grey: 0..1 or 0..255
        arr = np.asarray(im, dtype=np.float64)
        peak = 1.0 if arr.max() <= 1.0 else 255.0
        notes.append("32-bit float scaled to 8 bits")
        arr8 = np.clip(np.round(arr / peak * 255), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if im.mode == "CMYK":
        notes.append("CMYK converted to RGB")
    return im.convert("RGB")


def load_image(
    source: str | os.PathLike | BinaryIO,
    name: str | None = None,
    max_pixels: int | None = None,
    formats: Sequence[str] | None = None,
) -> LoadedImage:
    """Decode ``source`` (a path, or an open binary file such as an upload's bytes in a
    ``BytesIO``) for protection.

    Args:
        name: what messages call the image (default: the path; ``"image"`` for a file).
        max_pixels: refuse images with more pixels, before decoding them (Pillow's own
            decompression-bomb guard, about 89 million pixels, applies first).
        formats: Pillow format names to try (``None``: every format Pillow knows); the
            web server passes :data:`UPLOAD_FORMATS`, so that no upload reaches a decoder
            that calls an outside program (EPS calls Ghostscript).

    Raises:
        ImageTooLargeError: over ``max_pixels``.
        ImageReadError: unreadable, truncated, not an image, a decompression bomb, animated,
            or empty.
    """
    path = source if hasattr(source, "read") else Path(source)
    if name is None:
        name = "image" if hasattr(source, "read") else str(path)
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(path, formats=formats)
        with opened as im:
            if max_pixels is not None and im.width * im.height > max_pixels:
                raise ImageTooLargeError(
                    f"{name}: {im.width}x{im.height} is {im.width * im.height:,} pixels, "
                    f"over the limit of {max_pixels:,}"
                )
            if getattr(im, "n_frames", 1) > 1 and im.format not in FIRST_FRAME_FORMATS:
                raise ImageReadError(
                    f"{name}: {im.n_frames} frames (an animated or multi-page image) are "
                    "not supported; export the frame you want as a still image"
                )
            # a 16-bit colour key names 16-bit values, which Pillow's 8-bit RGB cannot match
            deep_key = "transparency" in im.info and any(
                ";16" in str(t[3]) for t in (getattr(im, "tile", None) or [])
            )
            im.load()
            icc = im.info.get("icc_profile")
            exif = im.getexif()
            if im.format == "TIFF":
                for tag in [t for t in exif if t not in TIFF_EXIF_TAGS]:
                    del exif[tag]
            im = ImageOps.exif_transpose(im)
            notes: list[str] = []
            mode = im.mode
            alpha = None
            if mode in ("P", "L", "RGB") and "transparency" in im.info:
                if deep_key:
                    notes.append("its 16-bit transparent colour was not kept: written opaque")
                else:
                    im = im.convert("LA" if mode == "L" else "RGBA")
            if im.mode in ("RGBA", "LA", "PA"):
                alpha = np.asarray(im.getchannel("A")).copy()
                im = im.convert("RGB")
            if mode == "CMYK":
                icc = None
            rgb = _to_8bit_rgb(im, notes)
            arr = np.asarray(rgb, dtype=np.uint8)
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(f"{name}: refused as a possible decompression bomb ({e})") from e
    except FileNotFoundError as e:
        raise ImageReadError(f"{name}: no such file") from e
    except UnidentifiedImageError as e:  # its message names the path or a BytesIO object
        known = "one of " + ", ".join(formats) if formats else "any format Pillow knows"
        raise ImageReadError(f"{name}: not a readable image (not {known})") from e
    except Exception as e:  # noqa: BLE001 - any decoder failure is this file's problem
        raise ImageReadError(f"{name}: not a readable image ({type(e).__name__}: {e})") from e
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageReadError(f"{name}: empty image")
    exif.pop(0x0112, None)  # orientation was applied
    tensor = torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255
    return LoadedImage(
        rgb=tensor,
        alpha=alpha,
        icc_profile=icc,
        exif=exif.tobytes() if len(exif) else None,
        source_mode=mode,
        notes=notes,
    )


def to_uint8(rgb: Tensor) -> np.ndarray:
    """``3xHxW`` in [0, 1] -> ``HxWx3`` uint8 (rounded)."""
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _encoded(image: LoadedImage, rgb: Tensor, fmt: str, quality: int) -> tuple[Image.Image, dict]:
    """The Pillow image and ``save`` options that write the protected ``rgb`` as ``fmt``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; one of {list(FORMATS)}")
    arr = to_uint8(rgb)
    if image.grey:
        arr = np.round(arr.mean(axis=2)).astype(np.uint8)
    alpha = image.alpha if fmt != "jpeg" else None
    if alpha is not None:
        out = Image.fromarray(np.dstack([arr, alpha]), "LA" if image.grey else "RGBA")
    else:
        out = Image.fromarray(arr, "L" if image.grey else "RGB")
    kwargs: dict = {"format": FORMATS[fmt][0]}
    if fmt != "bmp":
        if image.icc_profile:
            kwargs["icc_profile"] = image.icc_profile
        # A TIFF input's EXIF holds its own layout tags (bits per sample, CMYK, strips), which
        # would describe the new pixels wrongly: TIFF outputs keep the ICC profile only.
        if image.exif and fmt != "tiff":
            if fmt == "jpeg" and len(image.exif) > JPEG_MAX_EXIF:
                note = (
                    f"its EXIF ({len(image.exif):,} bytes) is over the {JPEG_MAX_EXIF:,} bytes "
                    "a JPEG file holds and was left out; PNG keeps it"
                )
                if note not in image.notes:
                    image.notes.append(note)
            else:
                kwargs["exif"] = image.exif
    if fmt == "png":
        kwargs.update(compress_level=PNG_COMPRESS_LEVEL)
    elif fmt == "jpeg":
        kwargs.update(quality=quality, subsampling=0)
    elif fmt == "webp":
        kwargs.update(lossless=True, quality=100, exact=True)
    elif fmt == "tiff":
        kwargs.update(compression="tiff_deflate")
    return out, kwargs


def image_bytes(image: LoadedImage, rgb: Tensor, fmt: str = "png", quality: int = 95) -> bytes:
    """The protected ``rgb`` encoded in memory, byte for byte what :func:`save_image` writes
    with the same arguments (the web app's responses)."""
    out, kwargs = _encoded(image, rgb, fmt, quality)
    buf = io.BytesIO()
    out.save(buf, **kwargs)
    return buf.getvalue()


def save_image(
    image: LoadedImage,
    rgb: Tensor,
    path: str | os.PathLike,
    fmt: str = "png",
    quality: int = 95,
    overwrite: bool = False,
) -> Path:
    """Write the protected ``rgb`` with the input's alpha, ICC and EXIF, atomically.

    The file appears complete or not at all (temp file in the same folder, then rename).
    Grayscale inputs are written as grayscale (the channels' mean, which for the
    :class:`~fastprotect.protector.Protector`'s grey output is each channel). Alpha is kept
    in every format but JPEG.

    Args:
        fmt: a key of :data:`FORMATS`.
        overwrite: replace an existing ``path``; ``False``: never replace it.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    out, kwargs = _encoded(image, rgb, fmt, quality)  # checks fmt first
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists; not overwriting")
    # without overwrite: link, not replace, so a file that appeared meanwhile is kept
    with atomic_output(path, overwrite=overwrite) as tmp:
        out.save(tmp, **kwargs)
    return path
