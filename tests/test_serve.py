"""``fastprotect serve``: the HTTP API in process, bad uploads, and the page in a real browser."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import socket
import threading
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from fastprotect.cli import main
from fastprotect.serve import INTENSITIES, Service, create_app, is_loopback, protected_name

from .conftest import needs_data, needs_weights

EIGHT = 8  # eta = 8/255 in configs/tiny.yaml


@pytest.fixture(scope="module")
def client(model):
    from fastapi.testclient import TestClient

    # small limits so that the refusals are cheap to trigger
    service = Service(str(model), max_pixels=200 * 200, max_upload_bytes=300_000)
    with TestClient(create_app(service)) as c:
        yield c


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "PNG")
    return buf.getvalue()


def _rgb(h=40, w=56, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _assert_served(client) -> None:
    """The server still answers, and still protects."""
    assert client.get("/api/health").json()["status"] == "ok"
    r = client.post("/api/protect", content=_png(_rgb(seed=9)))
    assert r.status_code == 200 and r.content.startswith(b"\x89PNG")


@needs_data
@pytest.mark.parametrize("intensity", ["default", "strongest", "lighter"])
def test_api_answers_the_bytes_protect_writes(model, client, tmp_path, intensity):
    i = INTENSITIES[intensity]
    sources = {
        "rgb.png": _png(_rgb()),
        "grey.png": _png(_rgb()[..., 0], "L"),
        "rgba.png": _png(np.dstack([_rgb(), _rgb(seed=1)[..., 0]]), "RGBA"),
    }
    flags = ["--strength", i.strength, "--s-max", str(i.s_max)]
    if i.s_min is not None:
        flags += ["--s-min", str(i.s_min)]
    for name, data in sources.items():
        (tmp_path / name).write_bytes(data)
    out = tmp_path / "out"
    assert main(["protect", str(tmp_path), "--model", str(model), "--out", str(out), *flags]) == 0
    for name, data in sources.items():
        r = client.post(f"/api/protect?intensity={intensity}&name={name}", content=data)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/png"
        stem = name.removesuffix(".png")
        assert f'filename="{stem}_protected.png"' in r.headers["content-disposition"]
        assert r.content == (out / name).read_bytes(), name


@needs_data
def test_metrics_on_request_and_the_bound_holds(client, monkeypatch):
    from fastprotect.protector import Protector

    chosen = []
    choose = Protector.choose
    monkeypatch.setattr(Protector, "choose", lambda self, x: chosen.append(1) or choose(self, x))
    rgb = _rgb(64, 48, seed=3)
    plain = client.post("/api/protect?intensity=strongest", content=_png(rgb))
    r = client.post("/api/protect?intensity=strongest&metrics=true", content=_png(rgb))
    assert r.status_code == 200
    body = r.json()
    png = base64.b64decode(body["png_base64"])
    assert png == plain.content
    out = np.asarray(Image.open(io.BytesIO(png))).astype(int)
    assert 0 < np.abs(out - rgb).max() <= EIGHT
    m = body["metrics"]
    assert m["max_change_levels"] == np.abs(out - rgb).max()
    assert 20 < m["psnr_db"] < 60 and 0 < m["ssim"] < 1
    assert m["verdict"] in ("strong", "moderate", "weak")
    # the metrics use the target the protection chose, not a second choice at the view
    assert len(chosen) == 2 and m["latent_pull"] > 0 and m["target"]


def _bomb() -> bytes:
    # 12000x12000 1-bit PNG: 144 million pixels (over Pillow's bomb limit) in a few KB
    buf = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buf, "PNG")
    return buf.getvalue()


def _animated() -> bytes:
    buf = io.BytesIO()
    frames = [Image.new("RGB", (20, 20), c) for c in ("red", "blue")]
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


BAD_UPLOADS = {
    "empty": (b"", 400, "the upload is empty"),
    "text": (b"hello, this is not an image", 400, "not a readable image"),
    "truncated png": (_png(_rgb(120, 120))[:900], 400, "not a readable image"),
    "decompression bomb": (_bomb(), 400, "decompression bomb"),
    "over the pixel limit": (_png(_rgb(300, 300)), 413, "over the limit of 40,000"),
    "oversize upload": (b"\x89PNG" + bytes(400_000), 413, "over the limit of 0.286 MB"),
    "animated gif": (_animated(), 400, "2 frames (an animated or multi-page image)"),
}


def _eps() -> bytes:
    # Pillow reads EPS through Ghostscript, an outside program: uploads may not reach it
    return b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"


BAD_UPLOADS["EPS"] = (_eps(), 400, "not one of PNG, JPEG, WEBP, TIFF, BMP, GIF")


@needs_data
@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_uploads_get_a_clear_error_and_the_next_request_is_served(client, case):
    data, status, message = BAD_UPLOADS[case]
    for route in ("/api/protect", "/api/inspect"):
        r = client.post(f"{route}?name=upload.png", content=data)
        assert r.status_code == status, (route, r.text)
        assert message in r.json()["error"], r.json()
    _assert_served(client)


@needs_data
def test_an_upload_without_a_length_is_cut_off_at_the_limit(client):
    def chunks():  # chunked transfer: no Content-Length to refuse early
        for _ in range(10):
            yield bytes(100_000)

    r = client.post("/api/protect", content=chunks())
    assert r.status_code == 413 and "over the limit" in r.json()["error"]
    _assert_served(client)


@needs_data
def test_framework_errors_have_the_same_shape(client):
    r = client.post("/api/protect?metrics=maybe", content=_png(_rgb()))
    assert r.status_code == 422
    assert r.json() == {
        "error": "invalid request (metrics: Input should be a valid boolean, "
        "unable to interpret input)"
    }
    r = client.get("/api/nothing")
    assert r.status_code == 404 and r.json() == {"error": "Not Found"}


@needs_data
def test_download_names_survive_any_upload_name(client):
    cases = [
        ("絵.png", "__protected.png", "%E7%B5%B5_protected.png"),
        ('a"b\r\n.png', "a_b___protected.png", "a%22b%0D%0A_protected.png"),
    ]
    for name, fallback, exact in cases:
        r = client.post("/api/protect", params={"name": name}, content=_png(_rgb()))
        assert r.status_code == 200, r.text
        assert r.headers["content-disposition"] == (
            f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{exact}"
        )


@needs_data
def test_unknown_intensity_is_refused(client):
    r = client.post("/api/protect?intensity=max", content=_png(_rgb()))
    assert r.status_code == 422
    assert (
        r.json()["error"] == "unknown intensity 'max'; one of lighter, default, stronger, strongest"
    )


@needs_data
def test_unknown_intensity_is_refused_before_the_body_is_read(model):
    app = create_app(Service(str(model), decoder=False))
    sent = _asgi(app, "/api/protect", b"intensity=max", [b"ab"], stall=True, timeout=5)
    assert sent[0]["status"] == 422 and b"unknown intensity" in sent[1]["body"]


async def _acall(app, path, query, chunks, stall=False):
    """Call the ASGI ``app`` directly with a POST whose body arrives as ``chunks`` and
    then, with ``stall``, never ends; the messages the app sent."""
    import asyncio

    pending = list(chunks)
    sent = []

    async def receive():
        if pending:
            return {"type": "http.request", "body": pending.pop(0), "more_body": True}
        if stall:
            await asyncio.Event().wait()
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
        "root_path": "", "query_string": query, "server": ("test", 80),
        "client": ("test", 1), "headers": [(b"content-length", b"100000")],
    }  # fmt: skip
    await app(scope, receive, send)
    return sent


def _asgi(app, path, query, chunks, stall=False, timeout=5.0):
    import asyncio

    return asyncio.run(asyncio.wait_for(_acall(app, path, query, chunks, stall), timeout))


@needs_data
def test_stalled_uploads_are_dropped_and_do_not_hold_up_the_others(model, monkeypatch):
    """More stalled uploads than requests handled at once: a real one is served while they
    wait, and they are refused (408) when nothing arrives for the idle time."""
    import asyncio

    import fastprotect.serve as serve

    monkeypatch.setattr(serve, "UPLOAD_IDLE_SECONDS", 3.0)
    app = create_app(Service(str(model), decoder=False))

    async def scenario():
        stalled = [
            asyncio.ensure_future(_acall(app, "/api/protect", b"", [b"ab"], stall=True))
            for _ in range(serve.MAX_ACTIVE_REQUESTS + 1)
        ]
        await asyncio.sleep(0.1)
        ok = await _acall(app, "/api/protect", b"", [_png(_rgb())])
        waiting = [not t.done() for t in stalled]
        return ok, waiting, await asyncio.wait_for(asyncio.gather(*stalled), 30)

    ok, waiting, refused = asyncio.run(scenario())
    assert ok[0]["status"] == 200 and ok[1]["body"].startswith(b"\x89PNG")
    assert all(waiting)  # served while the stalled uploads still waited
    for sent in refused:
        assert sent[0]["status"] == 408
        assert b"the upload stalled: nothing arrived for 3 s" in sent[1]["body"]


@needs_data
def test_a_slow_upload_is_refused_at_the_deadline(model, monkeypatch):
    import asyncio

    import fastprotect.serve as serve

    monkeypatch.setattr(serve, "UPLOAD_DEADLINE_SECONDS", 0.5)
    app = create_app(Service(str(model), decoder=False))

    async def trickle():
        async def receive():
            await asyncio.sleep(0.05)  # a byte at a time, never idle for long
            return {"type": "http.request", "body": b"x", "more_body": True}

        sent = []

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/api/protect",
            "raw_path": b"/api/protect", "root_path": "", "query_string": b"",
            "server": ("test", 80), "client": ("test", 1), "headers": [],
        }  # fmt: skip
        await asyncio.wait_for(app(scope, receive, send), 30)
        return sent

    sent = asyncio.run(trickle())
    assert sent[0]["status"] == 408 and b"not complete after 0.5 s" in sent[1]["body"]


@needs_data
def test_inspect_and_metrics_work_on_images_a_few_pixels_thin(client):
    for h, w in [(1, 1), (3, 180), (180, 3), (7, 9)]:
        r = client.post("/api/inspect?name=thin.png", content=_png(_rgb(h, w)))
        assert r.status_code == 200, (h, w, r.text)
        m = r.json()["metrics"]
        assert m["ssim"] <= 1 and m["max_change_levels"] <= EIGHT
        r = client.post("/api/protect?metrics=true", content=_png(_rgb(h, w)))
        assert r.status_code == 200, (h, w, r.text)


@needs_data
def test_inspect_sends_a_tiffs_original_as_png(client):
    rgb = _rgb(30, 50)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "TIFF")
    body = client.post("/api/inspect?name=scan.tif", content=buf.getvalue()).json()
    original = Image.open(io.BytesIO(base64.b64decode(body["original_png_base64"])))
    assert original.format == "PNG" and np.array_equal(np.asarray(original), rgb)
    png = client.post("/api/inspect?name=a.png", content=_png(rgb)).json()
    assert "original_png_base64" not in png


@needs_data
def test_unzip_counts_what_failed_entries_unpacked_and_every_skipped_entry(client):
    """Entries that unpack fully and then fail their CRC spend the zip's budget (4 times
    the upload limit, 1.2 MB here) like the others: once they have spent it, even a small
    good image is not unpacked. The refusal of a zip counts every skipped entry."""
    first = _png(_rgb(8, 8))
    rest = 1_200_000 - len(first)  # what four failing entries spend, to the byte
    sizes = [rest // 4] * 3 + [rest - 3 * (rest // 4)]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("first.png", first)
        for k, size in enumerate(sizes):
            z.writestr(f"{k}.png", bytes(size))  # zeros: a few hundred bytes packed
        z.writestr("good.png", _png(_rgb()))
    raw = bytearray(buf.getvalue())
    at = raw.find(b"PK\x01\x02")
    for k in range(6):  # the four zero entries' central-directory CRCs set wrong
        if 1 <= k <= 4:
            raw[at + 16 : at + 20] = b"\x00\x00\x00\x00"
        at = raw.find(b"PK\x01\x02", at + 4)
    r = client.post("/api/unzip", content=bytes(raw))
    assert r.status_code == 200, r.text
    body = r.json()
    assert [i["name"] for i in body["images"]] == ["first.png"]
    reasons = {s["name"]: s["reason"] for s in body["skipped"]}
    assert all("cannot be unpacked (BadZipFile" in reasons[f"{k}.png"] for k in range(4))
    assert reasons["good.png"] == "the zip's unpacking budget (1.14 MB) is spent"
    many = io.BytesIO()
    with zipfile.ZipFile(many, "w") as z:
        for k in range(100):
            z.writestr(f"{k}.txt", b"")
    r = client.post("/api/unzip", content=many.getvalue())
    assert r.json()["error"].endswith("2.txt: not an image file name and 97 more)")


@needs_data
def test_unzip_takes_images_and_says_what_it_skipped(client):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("art/a.png", _png(_rgb()))
        z.writestr("b.JPG", b"jpeg bytes are checked later, by protect")
        z.writestr("notes.txt", b"hi")
        z.writestr("__MACOSX/art/._a.png", b"resource fork")
        z.writestr("art/", b"")
        z.writestr("big.png", bytes(400_000))  # compresses to little, unpacks over the cap
    r = client.post("/api/unzip", content=buf.getvalue())
    assert r.status_code == 200, r.text
    body = r.json()
    assert [i["name"] for i in body["images"]] == ["art/a.png", "b.JPG"]
    assert base64.b64decode(body["images"][0]["data_base64"]) == _png(_rgb())
    assert body["skipped"] == [
        {"name": "notes.txt", "reason": "not an image file name"},
        {"name": "big.png", "reason": "too large once unpacked"},
    ]
    empty = io.BytesIO()
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("readme.txt", b"no images here")
    r = client.post("/api/unzip", content=empty.getvalue())
    assert r.status_code == 400
    assert r.json()["error"] == (
        "the zip file holds no image to protect (readme.txt: not an image file name)"
    )
    # a corrupt deflate stream in one entry skips that entry only
    broken = io.BytesIO()
    with zipfile.ZipFile(broken, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("good.png", _png(_rgb()))
        z.writestr("bad.png", _png(_rgb(seed=2)))
    raw = bytearray(broken.getvalue())
    at = raw.find(b"bad.png") + len(b"bad.png")  # the local header's name, then the data
    raw[at + 5 : at + 25] = bytes(range(20))
    r = client.post("/api/unzip", content=bytes(raw))
    assert r.status_code == 200, r.text
    assert [i["name"] for i in r.json()["images"]] == ["good.png"]
    assert r.json()["skipped"][0]["name"] == "bad.png"
    assert "cannot be unpacked" in r.json()["skipped"][0]["reason"]
    many = io.BytesIO()
    with zipfile.ZipFile(many, "w") as z:
        for k in range(2001):
            z.writestr(f"{k}.txt", b"")
    r = client.post("/api/unzip", content=many.getvalue())
    assert r.status_code == 413 and "2,001 entries" in r.json()["error"]
    r = client.post("/api/unzip", content=b"PK\x03\x04 broken")
    assert r.status_code == 400 and "not a readable zip file" in r.json()["error"]
    _assert_served(client)


@needs_data
def test_page_is_self_contained_and_the_api_is_documented(client):
    page = client.get("/")
    assert page.status_code == 200 and "<title>fastprotect" in page.text
    # no outside scripts, styles or fonts: the page works offline
    assert "http://" not in page.text and "https://" not in page.text
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/api/protect"]["post"]["requestBody"]["content"]
    assert body["application/octet-stream"]["schema"]["format"] == "binary"
    config = client.get("/api/config").json()
    assert [i["name"] for i in config["intensities"]] == list(INTENSITIES)
    assert config["default_intensity"] == "default" and config["eta_levels"] == EIGHT


def test_names_and_bindings():
    assert protected_name("art.final.jpg") == "art.final_protected.png"
    assert protected_name("C:\\x\\y.png") == "y_protected.png"
    assert protected_name("") == "image_protected.png"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


@needs_data
def test_public_binding_warns(model, monkeypatch, capsys):
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    assert main(["serve", "--model", str(model), "--host", "0.0.0.0", "--port", "9"]) == 0
    err = capsys.readouterr().err
    assert "warning: listening on 0.0.0.0" in err and "no log-in" in err
    assert seen["host"] == "0.0.0.0" and seen["port"] == 9
    assert main(["serve", "--model", str(model)]) == 0
    err = capsys.readouterr().err
    assert "warning" not in err and "open http://127.0.0.1:7860/" in err


def test_a_bad_model_fails_at_start(tmp_path, capsys):
    bad = tmp_path / "m.safetensors"
    bad.write_bytes(b"not a model")
    assert main(["serve", "--model", str(bad)]) == 2
    assert "error:" in capsys.readouterr().err


@needs_weights
def test_inspect_shows_the_attackers_reconstructions():
    from fastapi.testclient import TestClient
    from skimage import data

    service = Service(None)  # the shipped model on TAEF2, with its decoder
    assert service.decoder is not None
    rgb = np.asarray(Image.fromarray(data.astronaut()).resize((128, 96)))
    with TestClient(create_app(service)) as c:
        body = c.post("/api/inspect?name=astronaut.png", content=_png(rgb)).json()
    assert body["name"] == "astronaut_protected.png"
    assert (body["width"], body["height"]) == (128, 96)
    assert set(body["figures"]) == {
        "original",
        "protected",
        "difference",
        "reconstruction of the original",
        "reconstruction of the protected",
    }
    assert body["figures"]["difference"].startswith("data:image/png;base64,")
    m = body["metrics"]
    assert m["disruption_db"] == pytest.approx(
        m["recon_psnr_original_db"] - m["recon_psnr_protected_db"]
    )


# --- the page in a real browser ------------------------------------------------------------


def _chromium() -> str | None:
    for name in (os.environ.get("FASTPROTECT_CHROMIUM"), "chromium", "chromium-browser"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_server():
    """The app with the shipped model (and the attacker's decoder) on a free port."""
    import uvicorn

    port = _free_port()
    config = uvicorn.Config(
        create_app(Service(None)), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.mark.slow
@needs_weights
def test_page_in_a_real_browser(live_server, tmp_path):
    """Upload a photo, protect it, download it alone and in the zip; the bound holds and
    the input is unchanged. ``FASTPROTECT_SCREENSHOT=page.png`` saves the page (the
    README's picture)."""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    browser_path = _chromium()
    if browser_path is None:
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium)")
    from skimage import data

    rgb = np.asarray(Image.fromarray(data.chelsea()).resize((384, 256), Image.LANCZOS))
    src = tmp_path / "drawing.png"
    src.write_bytes(_png(rgb))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            page.goto(live_server)
            page.wait_for_selector("#stops span")
            assert page.inner_text("#intensity-name") == "default"
            page.set_input_files("#files", str(src))
            page.wait_for_selector("text=1 of 1 image protected", timeout=60_000)
            assert page.inner_text("#errors") == ""
            with page.expect_download() as info:
                page.click(".card .download")
            download = info.value
            assert download.suggested_filename == "drawing_protected.png"
            got = tmp_path / "got.png"
            download.save_as(got)
            with page.expect_download() as info:
                page.click("#download-all")
            info.value.save_as(tmp_path / "all.zip")
            shot = os.environ.get("FASTPROTECT_SCREENSHOT")
            if shot:
                page.screenshot(path=shot, full_page=True)
            page.click(".card .zoom")
            assert "actual" in page.get_attribute(".card .pair", "class")
            assert page.inner_text(".card .zoom") == "Fit to width"
            # a zip of two images at another intensity
            page.locator("#intensity").fill("3")
            assert page.inner_text("#intensity-name") == "strongest"
            pack = tmp_path / "pack.zip"
            with zipfile.ZipFile(pack, "w") as z:
                z.writestr("a.png", _png(rgb[:64, :64]))
                z.writestr("sub/b.png", _png(rgb[64:, 64:]))
                z.writestr("notes.txt", b"skipped")
            page.set_input_files("#files", str(pack))
            page.wait_for_selector("text=2 of 2 images protected", timeout=60_000)
            assert page.locator(".card").count() == 2
            assert "strongest" in page.inner_text(".card >> nth=1")
            assert "notes.txt: skipped, not an image file name" in page.inner_text("#errors")
            # a TIFF, which the browser cannot show: its original at its own size all the same
            scan = tmp_path / "scan.tif"
            Image.fromarray(rgb[:250, :370]).save(scan, "TIFF")  # the page's copy: 368 x 240
            page.set_input_files("#files", str(scan))
            page.wait_for_selector("text=1 of 1 image protected", timeout=60_000)
            shown = page.eval_on_selector(
                ".card .pair img", "i => i.complete && [i.naturalWidth, i.naturalHeight]"
            )
            assert shown == [370, 250]
            # a chosen folder: its images (searched recursively), named by their path
            album = tmp_path / "album"
            (album / "trip").mkdir(parents=True)
            (album / "a.png").write_bytes(_png(rgb[:64, :64]))
            (album / "trip" / "b.png").write_bytes(_png(rgb[64:128, :64]))
            (album / "notes.txt").write_text("not an image")
            page.set_input_files("#folder", str(album))
            page.wait_for_selector("text=2 of 2 images protected", timeout=60_000)
            titles = sorted(page.locator(".card h2").all_inner_texts())
            assert [t.split("\n")[0] for t in titles] == ["album/a.png", "album/trip/b.png"]
            assert page.inner_text("#errors") == ""
            with page.expect_download() as info:  # the zip keeps the folders
                page.click("#download-all")
            info.value.save_as(tmp_path / "album.zip")
            with zipfile.ZipFile(tmp_path / "album.zip") as z:
                names = sorted(z.namelist())
            assert names == ["album/a_protected.png", "album/trip/b_protected.png"]
            # the link opens the folder chooser, the rest of the drop zone the files chooser
            for selector, chooser in [("#choose-folder", "folder"), ("#drop strong", "files")]:
                with page.expect_file_chooser() as fc:
                    page.click(selector)
                assert fc.value.element.get_attribute("id") == chooser, selector
            # a dropped folder (a browser's entries, made by hand: no drag in a test)
            names = page.evaluate(
                """async () => {
                  const file = (path) => ({isFile: true, isDirectory: false, fullPath: path,
                    name: path.split("/").pop(), file: (ok) => ok(new File(["x"], "f"))});
                  const dir = (path, children) => {
                    let given = false;
                    return {isFile: false, isDirectory: true, fullPath: path,
                      name: path.split("/").pop(), createReader: () => ({readEntries: (ok) => {
                        ok(given ? [] : children); given = true; }})};
                  };
                  const tree = dir("/art", [file("/art/a.PNG"), file("/art/.hidden.png"),
                    file("/art/readme.txt"), dir("/art/old", [file("/art/old/b.jpg")])]);
                  const files = await dropped({items: [{webkitGetAsEntry: () => tree}],
                                               files: []});
                  return files.map((f) => f.name);
                }"""
            )
            assert names == ["art/a.PNG", "art/old/b.jpg"]
        finally:
            browser.close()
    out = np.asarray(Image.open(got)).astype(int)
    assert out.shape == rgb.shape
    assert 0 < np.abs(out - rgb).max() <= EIGHT
    assert hashlib.sha256(src.read_bytes()).hexdigest() == digest  # the input is unchanged
    with zipfile.ZipFile(tmp_path / "all.zip") as z:
        assert z.testzip() is None
        assert z.namelist() == ["drawing_protected.png"]
        assert z.read("drawing_protected.png") == got.read_bytes()
