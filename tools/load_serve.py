"""Load test of ``fastprotect serve``'s HTTP API on loopback.

Starts a server (the shipped model unless ``--model``) in a subprocess with its own empty
temp folder, then measures, printing a table you can paste:

1. one client, ``--single-size`` PNGs (2048x2048 by default) one after another: the
   round-trip latency of a large image;
2. ``--clients`` concurrent clients x ``--requests`` requests of ``--size`` PNGs: p50/p95
   latency, throughput, errors;
3. that the server answers a new request afterwards;
4. ``--malformed`` bad uploads (empty, text, truncated, decompression bomb, over the pixel
   or upload limit, animated, broken zip, ...): how many got a clear 4xx error with a
   message, how many crashed the request or the server, and the files left in the
   server's temp folder;
5. two concurrent ``--huge-size`` PNGs (4096x4096 by default), the largest the server
   takes by default;
6. the server's peak resident memory (VmHWM) after the concurrent phase and over the
   whole run.

The images are scikit-image's astronaut photo, resized (real content, not noise).

    python tools/load_serve.py                      # the issue's settings
    python tools/load_serve.py --clients 2 --requests 3 --size 512 --single 1024  # quick
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image


def png_of(size: int) -> bytes:
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).resize((size, size), Image.BICUBIC).save(buf, "PNG")
    return buf.getvalue()


def post(port: int, path: str, body: bytes, timeout: float = 300) -> tuple[int, bytes, float]:
    """``(status, body, seconds)``; status 0 when the connection failed."""
    t = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/octet-stream"})
        r = conn.getresponse()
        return r.status, r.read(), time.perf_counter() - t
    except OSError as e:
        return 0, str(e).encode(), time.perf_counter() - t
    finally:
        conn.close()


def malformed_uploads(max_upload_bytes: int) -> list[tuple[str, str, bytes]]:
    """``(case, path, body)`` of bad requests."""
    good = png_of(128)
    bomb, big, gif, zbomb = io.BytesIO(), io.BytesIO(), io.BytesIO(), io.BytesIO()
    Image.new("1", (12000, 12000)).save(bomb, "PNG")  # 144 Mpx in a few KB
    Image.new("L", (4200, 4200)).save(big, "PNG")  # over the default 4096x4096 limit
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "blue", "green")]
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    with zipfile.ZipFile(zbomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("huge.png", bytes(max_upload_bytes + 1))
    jpeg = io.BytesIO()
    Image.new("RGB", (256, 256), "white").save(jpeg, "JPEG")
    rng = np.random.default_rng(0)
    return [
        ("empty body", "/api/protect", b""),
        ("plain text", "/api/protect", b"this is not an image"),
        ("HTML", "/api/protect", b"<html><body>hello</body></html>"),
        ("truncated PNG", "/api/protect", good[: len(good) // 3]),
        ("truncated JPEG", "/api/protect", jpeg.getvalue()[:300]),
        ("PNG signature, random bytes", "/api/protect", b"\x89PNG\r\n\x1a\n" + rng.bytes(5000)),
        ("decompression bomb", "/api/protect", bomb.getvalue()),
        ("over the pixel limit", "/api/protect", big.getvalue()),
        ("over the upload limit", "/api/protect", b"\x89PNG" + bytes(max_upload_bytes + 1)),
        ("animated GIF", "/api/protect", gif.getvalue()),
        ("SVG", "/api/protect", b'<svg xmlns="http://www.w3.org/2000/svg"/>'),
        ("PDF header", "/api/protect", b"%PDF-1.7\n" + rng.bytes(2000)),
        ("unknown intensity", "/api/protect?intensity=max", good),
        ("zip of a non-image", "/api/protect", zbomb.getvalue()),
        ("broken zip", "/api/unzip", b"PK\x03\x04" + rng.bytes(500)),
        ("zip bomb entry", "/api/unzip?probe=1", zbomb.getvalue()),
        ("truncated PNG to inspect", "/api/inspect", good[:2000]),
        ("text to inspect", "/api/inspect", b"not an image"),
        ("empty zip body", "/api/unzip", b""),
        ("bomb to inspect", "/api/inspect", bomb.getvalue()),
    ]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="model file (default: the shipped model)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=25, help="per client")
    ap.add_argument("--size", type=int, default=1024, help="side of the concurrent images")
    ap.add_argument("--single-size", type=int, default=2048, help="side of the large image")
    ap.add_argument("--single", type=int, default=5, help="round trips of the large image")
    ap.add_argument("--malformed", type=int, default=20, help="bad uploads to send")
    ap.add_argument(
        "--huge-size", type=int, default=4096, help="two concurrent SIZE^2 PNGs (0: skip)"
    )
    ap.add_argument("--max-upload-mb", type=float, default=64)
    args = ap.parse_args()

    port = free_port()
    tmp = tempfile.mkdtemp(prefix="fastprotect-serve-tmp-")
    env = dict(os.environ, TMPDIR=tmp)
    cmd = [sys.executable, "-m", "fastprotect", "serve", "--port", str(port)]
    cmd += ["--max-upload-mb", str(args.max_upload_mb)]
    if args.model:
        cmd += ["--model", args.model]
    server = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/api/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.time() > deadline:
                print(server.stderr.read(), file=sys.stderr)
                return 1
            time.sleep(0.3)
        rows = []

        big = png_of(args.single_size)
        post(port, "/api/protect", png_of(256))  # warm-up (first call builds caches)
        single = [post(port, "/api/protect", big) for _ in range(args.single)]
        ok = [s for code, _, s in single if code == 200]
        rows.append(
            (
                f"1 client x {args.single} x {args.single_size}^2 PNG ({len(big) / 1e6:.1f} MB)",
                f"p50 {pct(ok, 50):.2f} s, max {max(ok, default=float('nan')):.2f} s",
                f"{args.single - len(ok)} errors",
            )
        )

        img = png_of(args.size)

        def client(_):
            return [post(port, "/api/protect", img) for _ in range(args.requests)]

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            results = [r for batch in pool.map(client, range(args.clients)) for r in batch]
        wall = time.perf_counter() - t0
        lat = [s for code, _, s in results if code == 200]
        errors = [(code, body[:200]) for code, body, _ in results if code != 200]
        rows.append(
            (
                f"{args.clients} clients x {args.requests} x {args.size}^2 PNG",
                f"p50 {pct(lat, 50):.2f} s, p95 {pct(lat, 95):.2f} s, "
                f"{len(results) / wall:.2f} images/s",
                f"{len(errors)} errors" + (f" (first: {errors[0]})" if errors else ""),
            )
        )
        code, _, s = post(port, "/api/protect", img)
        rows.append(("a new request afterwards", f"HTTP {code} in {s:.2f} s", ""))
        rows.append(("server peak RSS so far", f"{peak_rss_mb(server.pid):.0f} MB", ""))

        if args.huge_size:
            huge = png_of(args.huge_size)
            with ThreadPoolExecutor(2) as pool:
                both = list(pool.map(lambda _: post(port, "/api/protect", huge), range(2)))
            rows.append(
                (
                    f"2 clients x 1 x {args.huge_size}^2 PNG ({len(huge) / 1e6:.1f} MB)",
                    ", ".join(f"HTTP {c} in {t:.2f} s" for c, _, t in both),
                    f"server peak RSS {peak_rss_mb(server.pid):.0f} MB",
                )
            )
            errors += [(c, b[:200]) for c, b, _ in both if c != 200]

        cases = malformed_uploads(int(args.max_upload_mb * 2**20))
        clear, crashed, unclear = 0, [], []
        for k in range(args.malformed):
            case, path, body = cases[k % len(cases)]
            code, answer, _ = post(port, path, body)
            try:
                message = json.loads(answer).get("error", "") if code else ""
            except ValueError:
                message = ""
            if 400 <= code < 500 and message:
                clear += 1
            elif code == 0 or code >= 500:
                crashed.append(f"{case}: {code} {answer[:120]!r}")
            else:
                unclear.append(f"{case}: {code} {answer[:120]!r}")
        alive, _, _ = post(port, "/api/protect", png_of(128))
        left = sorted(p.name for p in Path(tmp).rglob("*"))
        rows.append(
            (
                f"{args.malformed} malformed uploads",
                f"{clear} clear errors, {len(crashed)} crashes, {len(unclear)} unclear",
                f"server alive: {alive == 200}; files left in its temp folder: {len(left)}",
            )
        )
        rows.append(("server peak RSS, whole run", f"{peak_rss_mb(server.pid):.0f} MB", ""))
    finally:
        server.terminate()
        server.wait(30)

    print(f"fastprotect serve load test on loopback ({os.cpu_count()} CPUs)")
    print("| what | result | notes |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    for line in crashed + unclear:
        print("  ", line)
    return 0 if not (errors or crashed or unclear or left) else 1


if __name__ == "__main__":
    sys.exit(main())
