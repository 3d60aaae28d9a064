"""Headless-Chromium check of ``recon view``: screenshot the page snapped to a grid camera and
compare it with ``recon render`` of that cell (the viewer shows recon's render as the viewport
background, stretched to the window; the GUI panel covers the right side).

    python tools/bench_viewer.py RUN [--view 7] [--port 8123] [--size 800]

Prints the PSNR / correlation of the render against the screenshot's left part (where no GUI
is drawn) and writes the screenshot and the side-by-side to RUN/viewer_check/. Needs Debian's
chromium (apt install chromium) and the `view` extra.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _screenshot(browser: str, url: str, size: int, path: Path, settle_s: float = 1.5, timeout_s: float = 60.0) -> None:
    """Open ``url`` in headless Chromium and save a screenshot once the page has stopped changing
    (two captures ``settle_s`` apart are identical), over the DevTools protocol (real time: the
    viewer's frames arrive over a websocket, which virtual-time flags do not wait for)."""
    import asyncio
    import base64
    import json
    import socket
    import tempfile
    import urllib.request

    import websockets

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    profile = tempfile.mkdtemp(prefix="recon-chromium-")
    proc = subprocess.Popen([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
                             "--use-angle=swiftshader", f"--window-size={size},{size}", f"--remote-debugging-port={port}",
                             f"--user-data-dir={profile}", url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + timeout_s
        while True:
            try:
                pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2))
                ws_url = next(p["webSocketDebuggerUrl"] for p in pages if p.get("type") == "page")
                break
            except (OSError, StopIteration, ValueError):
                if time.monotonic() > end:
                    raise RuntimeError("chromium did not open the page") from None
                time.sleep(0.3)

        async def capture() -> bytes:
            async with websockets.connect(ws_url, max_size=None) as ws:
                last, k = None, 0
                while True:
                    await asyncio.sleep(settle_s)
                    k += 1
                    await ws.send(json.dumps({"id": k, "method": "Page.captureScreenshot", "params": {"format": "png"}}))
                    while True:
                        msg = json.loads(await ws.recv())
                        if msg.get("id") == k:
                            break
                    png = base64.b64decode(msg["result"]["data"])
                    if png == last or time.monotonic() > end:
                        return png
                    last = png

        path.write_bytes(asyncio.run(capture()))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--view", type=int, default=0)
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--size", type=int, default=800, help="square browser window (pixels)")
    a = ap.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("no chromium on PATH (apt install chromium)", file=sys.stderr)
        return 2
    out = a.run / "viewer_check"
    out.mkdir(exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "recon.cli", "view", str(a.run), "--port", str(a.port), "--camera",
                             str(a.view), "--device", "cpu"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        while line and not line.startswith("recon view:"):
            line = proc.stdout.readline()
        t0 = time.perf_counter()
        _screenshot(browser, f"http://127.0.0.1:{a.port}", a.size, out / "screenshot.png")
        shot_s = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    subprocess.run([sys.executable, "-m", "recon.cli", "render", str(a.run), "--view", str(a.view), "--time", "0",
                    "--out", str(out / "render.png"), "--device", "cpu"], check=True, capture_output=True)
    shot_im = Image.open(out / "screenshot.png").convert("RGB")
    ren_im = Image.open(out / "render.png").convert("RGB")
    # compared at the render's own resolution: the window's pixels box-averaged down (the browser's
    # upsampling filter is its own business), outside the GUI panel (right) and notifications (top left)
    shot = np.asarray(shot_im.resize(ren_im.size, Image.BOX)).astype(np.float64)
    ren = np.asarray(ren_im).astype(np.float64)
    x1, y0 = int(0.55 * ren.shape[1]), int(0.25 * ren.shape[0])
    a_, b_ = shot[y0:, :x1], ren[y0:, :x1]
    mse = float(((a_ - b_) ** 2).mean())
    psnr = 10 * np.log10(255.0**2 / max(mse, 1e-12))
    corr = float(np.corrcoef(a_.ravel(), b_.ravel())[0, 1])
    big = np.asarray(ren_im.resize(shot_im.size, Image.NEAREST))
    Image.fromarray(np.concatenate([np.asarray(shot_im), big], 1)).save(out / "side_by_side.png")
    print(f"viewer screenshot (box-averaged to {ren.shape[1]}x{ren.shape[0]}) vs recon render of view {a.view}, time 0 "
          f"(region x < {x1}, y >= {y0}): PSNR {psnr:.2f} dB, correlation {corr:.4f}; screenshot took {shot_s:.1f} s; "
          f"files in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
