"""``fastprotect serve``: a local web page for artists and an HTTP API for platforms.

Built on FastAPI (Starlette under uvicorn) rather than Gradio, because:

- the API must return *exactly* the bytes ``fastprotect protect`` writes; here the handler
  writes the response itself, where Gradio's image components re-encode and cache uploads
  and results on disk (uploads must not be kept);
- raw request bodies are read in memory with a size cap while they stream in, so nothing
  touches the disk and oversize uploads are refused early;
- FastAPI publishes the API as OpenAPI (``/docs``, ``/openapi.json``) for platforms;
- it adds 17 MB to the slim install, where a fresh venv holding Gradio alone measured
  367 MB (pandas among its dependencies).

The page (``fastprotect/assets/serve.html``) is one self-contained file, with no outside
scripts, fonts or images, so it works offline.

Every request runs the same :class:`~fastprotect.protector.Protector` and the same writer as
``fastprotect protect`` (:func:`fastprotect.imageio.image_bytes`), so the same settings give
byte-identical PNGs. At most ``MAX_ADMITTED_REQUESTS`` (8) requests are admitted at once,
from reading their body to answering (the others wait, unread); a body that sends nothing
for 30 s or is not complete after 300 s is refused (408). Within, at most
``MAX_ACTIVE_REQUESTS`` (2) are handled at once (the others wait with their body read),
and the model protects one image at a time (a lock): memory stays bounded, a slow client
never holds up the others' protection, and each image gets every core.

Routes:

- ``GET /``: the page.
- ``GET /api/config``: intensities, limits, model.
- ``POST /api/protect``: body = an image file; answer = the protected PNG, or with
  ``?metrics=true`` JSON with the PNG in base64 and the metrics.
- ``POST /api/inspect``: what the page shows for one image (protected PNG, amplified
  difference, the attacker's reconstructions, metrics), as JSON.
- ``POST /api/unzip``: body = a zip file; answer = the images in it (base64), for the page.
- ``GET /api/health``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import ipaddress
import math
import sys
import threading
import zipfile
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

import torch
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .encoders import encoder_from_identity
from .imageio import (
    UPLOAD_FORMATS,
    ImageReadError,
    ImageTooLargeError,
    image_bytes,
    load_image,
    to_uint8,
)
from .modelfile import load_model
from .protect import PROTECT_EXTENSIONS, configure, fallback_notes
from .protector import Protector
from .release import resolve_model

#: the largest image protected: 4096x4096 (16.8 million pixels), which protects within
#: 2 GB of memory (docs/performance.md)
DEFAULT_MAX_PIXELS = 4096 * 4096
#: the largest upload, in MB (a zip counts as one upload)
DEFAULT_MAX_UPLOAD_MB = 64
#: the most images taken from one zip file
ZIP_MAX_IMAGES = 200
#: zip files with more entries (files and folders) are refused unread
ZIP_MAX_ENTRIES = 2000
#: requests handled at once, from decoding to the answer; more wait their turn with their
#: body read (at most MAX_ADMITTED_REQUESTS in all), which bounds memory. Measured
#: (tools/load_serve.py): two concurrent 4096x4096 uploads peak at 2.3 GB, one at a time
#: at 2.0 GB; with 1024x1024 images two give 3.4 images/s against 2.7 for one.
MAX_ACTIVE_REQUESTS = 2
#: requests admitted at once, from reading the body to the answer (each body at most the
#: upload limit, 64 MB by default, so at most 512 MB of bodies held); the others wait
#: unread. Admitted requests read their bodies at once and take one of the
#: MAX_ACTIVE_REQUESTS places when read, so a client that sends slowly holds one of these
#: places only, never the others' protection
MAX_ADMITTED_REQUESTS = 8
#: an upload that sends nothing for this many seconds is refused (408)
UPLOAD_IDLE_SECONDS = 30.0
#: an upload not complete after this many seconds is refused (408): 64 MB at 0.2 MB/s
UPLOAD_DEADLINE_SECONDS = 300.0
#: the first bytes of a TIFF (classic and BigTIFF, either byte order), which browsers do
#: not show
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


@dataclass(frozen=True)
class Intensity:
    """One stop of the page's intensity control: a documented ``protect`` setting."""

    name: str
    what: str
    #: the same setting on the command line
    cli: str
    strength: str = "auto"
    s_min: float | None = None
    s_max: float = 1.0


INTENSITIES = {
    i.name: i
    for i in (
        Intensity(
            "lighter",
            "never more than 3/4 of the budget: less visible, less protection",
            "--s-max 0.75",
            s_max=0.75,
        ),
        Intensity(
            "default",
            "the model's own setting: the strength map lowers the perturbation where it "
            "measures it would show",
            "(no options)",
        ),
        Intensity(
            "stronger",
            "at least 90 % of the budget everywhere: more protection, more visible",
            "--s-min 0.9",
            s_min=0.9,
        ),
        Intensity(
            "strongest",
            "the full budget everywhere (adaptive strength off): the most protection",
            "--strength off",
            strength="off",
        ),
    )
}
DEFAULT_INTENSITY = "default"


class UploadError(Exception):
    """A request the server refuses; ``status`` is its HTTP status, the message its reason."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def check_intensity(intensity: str) -> None:
    """Refuse an unknown intensity (422), before any upload is read."""
    if intensity not in INTENSITIES:
        raise UploadError(f"unknown intensity {intensity!r}; one of {', '.join(INTENSITIES)}", 422)


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by ``None`` (JSON has no infinity; the
    PSNR of an unchanged image is infinite)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _png_data_url(x: torch.Tensor) -> str:
    """``1x3xHxW`` in [0, 1] as a PNG data URL (fast compression: figures only)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(to_uint8(x[0])).save(buf, "PNG", compress_level=1)
    return "data:image/png;base64," + _b64(buf.getvalue())


def disposition(filename: str) -> str:
    """A ``Content-Disposition`` header naming a download: an ASCII fallback for old
    clients, and the exact name, UTF-8 and percent-encoded (RFC 6266)."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def protected_name(name: str) -> str:
    """The download name of an upload's protected PNG: ``art.jpg`` -> ``art_protected.png``."""
    stem = PurePosixPath(name.replace("\\", "/")).stem or "image"
    return f"{stem}_protected.png"


class Service:
    """The models and limits behind the app; one image is protected at a time.

    Args:
        model: a model file; ``None``: the shipped default.
        max_pixels: larger images are refused (HTTP 413) before they are decoded.
        max_upload_bytes: larger request bodies are refused (HTTP 413) while they arrive.
        analysis_side: the attacker's view of the page's metrics and figures (longer side).
        decoder: load the attacker's decoder for the page's reconstructions (when the
            model's encoder has one and its weights can be found).
    """

    def __init__(
        self,
        model: str | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 2**20,
        analysis_side: int = 512,
        decoder: bool = True,
    ) -> None:
        self.model = model
        self.max_pixels = max_pixels
        self.max_upload_bytes = max_upload_bytes
        self.analysis_side = analysis_side
        self.notes: list[str] = []
        self._lock = threading.Lock()
        self._protectors: dict[str, Protector] = {}
        self.strength_map = ""
        # the model file and its encoder are loaded once; each intensity shares them
        mop, self._doc = load_model(resolve_model(model))
        self._model = (encoder_from_identity(self._doc["encoder"]), mop)
        # every intensity now: a bad model file fails at start, not on first use, and the
        # warnings machinery that collects the strength map's notes (process-wide state)
        # never runs beside a request
        for intensity in INTENSITIES:
            self.protector(intensity)
        self.decoder = self._load_decoder() if decoder else None

    def _load_decoder(self) -> torch.nn.Module | None:
        from .demo import _decoder_for

        try:
            return _decoder_for(self._protectors[DEFAULT_INTENSITY])
        except Exception as e:  # noqa: BLE001 - the page works without reconstructions
            self.notes.append(f"no reconstructions on the page: {e}")
            return None

    def protector(self, intensity: str) -> Protector:
        """The protector of one intensity (all are built when the service starts)."""
        check_intensity(intensity)
        if intensity not in self._protectors:
            i = INTENSITIES[intensity]
            with fallback_notes() as notes:
                protector, name = configure(*self._model, self._doc, i.strength, i.s_min, i.s_max)
            self.notes.extend(n for n in notes if n not in self.notes)
            if intensity == DEFAULT_INTENSITY:
                self.strength_map = name
            self._protectors[intensity] = protector
        return self._protectors[intensity]

    def config(self) -> dict[str, Any]:
        """What the page and API clients need to know."""
        mop = self._protectors[DEFAULT_INTENSITY].mop
        return {
            "version": __version__,
            "model": self.model or "the shipped default model",
            "eta_levels": round(255 * mop.config.eta),
            "strength_map": self.strength_map,
            "intensities": [asdict(i) for i in INTENSITIES.values()],
            "default_intensity": DEFAULT_INTENSITY,
            "max_pixels": self.max_pixels,
            "max_upload_bytes": self.max_upload_bytes,
            "zip_max_images": ZIP_MAX_IMAGES,
            "reconstructions": self.decoder is not None,
            "notes": self.notes,
        }

    def _load(self, data: bytes, name: str):
        if not data:
            raise UploadError(f"{name}: the upload is empty; send the image file as the body")
        try:
            return load_image(
                io.BytesIO(data), name=name, max_pixels=self.max_pixels, formats=UPLOAD_FORMATS
            )
        except ImageTooLargeError as e:
            raise UploadError(str(e), 413) from e
        except ImageReadError as e:
            raise UploadError(str(e)) from e

    @torch.no_grad()
    def protect(
        self, data: bytes, intensity: str = DEFAULT_INTENSITY, name: str = "image"
    ) -> tuple[bytes, Any, torch.Tensor, torch.Tensor, int]:
        """The protected PNG of an uploaded image file, as ``fastprotect protect`` writes it;
        also the decoded image, the original and protected tensors (``1x3xHxW``) and the
        index of the target the protection used."""
        image = self._load(data, name)
        with self._lock:
            protector = self.protector(intensity)
            x = image.rgb[None]
            x_hat, target = protector.protect(x)
        return image_bytes(image, x_hat[0], "png"), image, x, x_hat, int(target[0])

    @torch.no_grad()
    def metrics(
        self,
        x: torch.Tensor,
        x_hat: torch.Tensor,
        intensity: str,
        figures: bool = False,
        target: int | None = None,
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """The demo report's metrics plus the latent pull toward ``target`` (the one the
        protection used; chosen again when not given), and on request the figures as PNG
        data URLs."""
        from .demo import analyse

        with self._lock:
            protector = self.protector(intensity)
            m, f = analyse(protector, self.decoder, x, x_hat, self.analysis_side, target)
        return m, ({k: _png_data_url(v) for k, v in f.items()} if figures else {})

    def unzip(self, data: bytes) -> dict[str, Any]:
        """The images of a zip file (base64), and what was skipped and why."""
        try:
            zf = zipfile.ZipFile(io.BytesIO(data))
            infos = zf.infolist()
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise UploadError(f"not a readable zip file ({e})") from e
        if len(infos) > ZIP_MAX_ENTRIES:
            raise UploadError(
                f"the zip file holds {len(infos):,} entries; at most {ZIP_MAX_ENTRIES:,} are read",
                413,
            )
        images, skipped = [], []
        limit = self.max_upload_bytes
        # what every entry unpacks counts against the budget, an entry's that then fails (a
        # bad CRC after 64 MB) too, at its declared size (zipfile never unpacks more), so a
        # small zip cannot keep the server unpacking
        spent, budget = 0, 4 * limit
        spent_reason = f"the zip's unpacking budget ({budget / 2**20:.3g} MB) is spent"
        for info in infos:
            name = info.filename
            base = PurePosixPath(name.replace("\\", "/")).name
            if info.is_dir() or name.startswith("__MACOSX/") or base.startswith("."):
                continue
            if PurePosixPath(base).suffix.lower() not in PROTECT_EXTENSIONS:
                skipped.append({"name": name, "reason": "not an image file name"})
                continue
            if len(images) == ZIP_MAX_IMAGES:
                skipped.append({"name": name, "reason": f"over {ZIP_MAX_IMAGES} images"})
                continue
            if info.file_size > limit:
                skipped.append({"name": name, "reason": "too large once unpacked"})
                continue
            if spent + info.file_size > budget:
                skipped.append({"name": name, "reason": spent_reason})
                continue
            chunks: list[bytes] = []
            size = 0
            try:
                with zf.open(info) as f:
                    # headers can lie: never read past the cap or the budget
                    while size <= limit and spent + size <= budget:
                        chunk = f.read(2**20)
                        if not chunk:
                            break
                        chunks.append(chunk)
                        size += len(chunk)
            except Exception as e:  # noqa: BLE001 - zlib, lzma, bz2, CRC: this entry only
                # the read that fails (at the CRC check, at the end) does not return its bytes
                spent += max(size, info.file_size)
                skipped.append(
                    {"name": name, "reason": f"cannot be unpacked ({type(e).__name__}: {e})"}
                )
                continue
            spent += size
            if size > limit:  # the header lied about the size
                skipped.append({"name": name, "reason": "too large once unpacked"})
                continue
            if spent > budget:
                skipped.append({"name": name, "reason": spent_reason})
                continue
            images.append({"name": name, "data_base64": _b64(b"".join(chunks))})
            del chunks
        n_skipped = len(skipped)
        if n_skipped > 50:
            skipped = [*skipped[:50], {"name": "...", "reason": f"{n_skipped - 50} more"}]
        if not images:
            why = "; ".join(f"{s['name']}: {s['reason']}" for s in skipped[:3])
            more = f" and {n_skipped - 3} more" if n_skipped > 3 else ""
            raise UploadError(
                "the zip file holds no image to protect" + (f" ({why}{more})" if why else "")
            )
        return {"images": images, "skipped": skipped}


def create_app(service: Service):
    """The FastAPI app of ``service``."""
    app = FastAPI(
        title="fastprotect",
        version=__version__,
        description=(
            "Protect images against mimicry by personalised diffusion models. Send an image "
            "file as the request body; get back the protected PNG. Uploads and results are "
            "kept in memory only, never on disk."
        ),
    )
    body_doc = {
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    }

    @app.exception_handler(UploadError)
    async def _refused(request: Request, e: UploadError):
        return JSONResponse({"error": str(e)}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        what = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'][1:]) or err['loc'][0]}: {err['msg']}"
            for err in e.errors()
        )
        return JSONResponse({"error": f"invalid request ({what})"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        return JSONResponse({"error": str(e.detail)}, status_code=e.status_code)

    @app.exception_handler(Exception)
    async def _failed(request: Request, e: Exception):  # the next request is still served
        return JSONResponse({"error": f"internal error ({type(e).__name__}: {e})"}, 500)

    # Admission: at most MAX_ADMITTED_REQUESTS requests between starting to read their body
    # and answering (the others wait unread), each body refused when it passes the upload
    # limit, sends nothing for UPLOAD_IDLE_SECONDS or is not complete after
    # UPLOAD_DEADLINE_SECONDS; within, at most MAX_ACTIVE_REQUESTS are handled at once
    # (the model runs one image at a time), the others waiting with their body read.
    admitted = asyncio.Semaphore(MAX_ADMITTED_REQUESTS)
    active = asyncio.Semaphore(MAX_ACTIVE_REQUESTS)

    async def body(request: Request) -> bytes:
        """The request body (of an admitted request), refused as soon as it passes the
        upload limit, stalls, or takes too long."""
        limit = service.max_upload_bytes
        too_big = UploadError(f"the upload is over the limit of {limit / 2**20:.3g} MB", 413)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise too_big
        chunks, size = [], 0
        stream = request.stream().__aiter__()
        deadline = asyncio.get_running_loop().time() + UPLOAD_DEADLINE_SECONDS
        while True:
            left = deadline - asyncio.get_running_loop().time()
            try:
                chunk = await asyncio.wait_for(anext(stream), min(UPLOAD_IDLE_SECONDS, left))
            except StopAsyncIteration:
                break
            except TimeoutError:
                why = (
                    f"nothing arrived for {UPLOAD_IDLE_SECONDS:g} s"
                    if left > UPLOAD_IDLE_SECONDS
                    else f"not complete after {UPLOAD_DEADLINE_SECONDS:g} s"
                )
                raise UploadError(f"the upload stalled: {why}", 408) from None
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    async def json_response(content: dict) -> JSONResponse:
        """JSON encoded off the event loop (an unzip answer can hold 256 MB of base64)."""
        return await run_in_threadpool(lambda: JSONResponse(finite(content)))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page():
        return resources.files("fastprotect").joinpath("assets/serve.html").read_text("utf-8")

    @app.get("/api/health")
    def health() -> dict:
        return {"status": "ok", "version": __version__}

    @app.get("/api/config")
    def config() -> dict:
        return service.config()

    @asynccontextmanager
    async def handling(request: Request):
        """Admit the request, read its body, then wait for a place among the active ones;
        the body inside."""
        async with admitted:
            data = await body(request)
            async with active:
                yield data

    @app.post("/api/protect", openapi_extra=body_doc)
    async def protect(
        request: Request,
        intensity: str = DEFAULT_INTENSITY,
        metrics: bool = False,
        name: str = "image",
    ):
        """Protect one image (PNG, JPEG, WebP, TIFF, BMP, GIF; the file as the body).

        Answers the protected PNG (what ``fastprotect protect`` writes with the same
        intensity), or with ``metrics=true`` JSON: ``png_base64`` and the ``metrics`` of the
        demo report (PSNR, SSIM, largest change, disruption, verdict) plus the latent pull."""
        check_intensity(intensity)
        async with handling(request) as data:
            png, _, x, x_hat, target = await run_in_threadpool(
                service.protect, data, intensity, name
            )
            del data
            filename = protected_name(name)
            if not metrics:
                return Response(
                    png,
                    media_type="image/png",
                    headers={"Content-Disposition": disposition(filename)},
                )
            m, _ = await run_in_threadpool(service.metrics, x, x_hat, intensity, False, target)
            return await json_response(
                {"name": filename, "intensity": intensity, "metrics": m, "png_base64": _b64(png)}
            )

    @app.post("/api/inspect", openapi_extra=body_doc)
    async def inspect(request: Request, intensity: str = DEFAULT_INTENSITY, name: str = "image"):
        """What the page shows for one image: the protected PNG (base64), the figures at the
        attacker's view as PNG data URLs (original, protected, amplified difference and,
        where the decoder is present, the attacker's reconstructions of both), metrics. For
        a TIFF upload, which browsers do not show, also ``original_png_base64``: the
        original as it was protected (8-bit, orientation applied), at its own size."""
        check_intensity(intensity)
        async with handling(request) as data:
            png, image, x, x_hat, target = await run_in_threadpool(
                service.protect, data, intensity, name
            )
            tiff = data[:4] in TIFF_SIGNATURES
            del data
            m, figures = await run_in_threadpool(service.metrics, x, x_hat, intensity, True, target)
            answer = {
                "name": protected_name(name),
                "intensity": intensity,
                "width": int(x.shape[-1]),
                "height": int(x.shape[-2]),
                "notes": image.notes,
                "metrics": m,
                "figures": figures,
                "png_base64": _b64(png),
            }
            if tiff:
                original = await run_in_threadpool(image_bytes, image, image.rgb, "png")
                answer["original_png_base64"] = _b64(original)
            return await json_response(answer)

    @app.post("/api/unzip", openapi_extra=body_doc)
    async def unzip(request: Request):
        """The images inside a zip file (base64, at most ``zip_max_images``), and what was
        skipped and why."""
        async with handling(request) as data:
            return await json_response(await run_in_threadpool(service.unzip, data))

    return app


def is_loopback(host: str) -> bool:
    """``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    host: str = "127.0.0.1",
    port: int = 7860,
    model: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
) -> int:
    """Run the app until interrupted (``fastprotect serve``)."""
    import uvicorn

    if not is_loopback(host):
        print(
            f"fastprotect: warning: listening on {host}: anyone who can reach this machine "
            f"on port {port} can use this server; it has no log-in",
            file=sys.stderr,
        )
    service = Service(model, max_pixels, int(max_upload_mb * 2**20))
    for note in service.notes:
        print(f"fastprotect: note: {note}", file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    print(
        f"fastprotect: strength map: {service.strength_map}; open http://{shown}:{port}/ "
        f"(API docs at /docs; Ctrl+C stops)",
        file=sys.stderr,
    )
    uvicorn.run(create_app(service), host=host, port=port, log_level="warning", access_log=False)
    return 0
