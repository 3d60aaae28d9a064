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
        subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
                        "--use-angle=swiftshader", f"--window-size={a.size},{a.size}", "--virtual-time-budget=20000",
                        f"--screenshot={out / 'screenshot.png'}", f"http://127.0.0.1:{a.port}"],
                       check=True, capture_output=True, timeout=120)
        shot_s = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    subprocess.run([sys.executable, "-m", "recon.cli", "render", str(a.run), "--view", str(a.view), "--time", "0",
                    "--out", str(out / "render.png"), "--device", "cpu"], check=True, capture_output=True)
    shot = np.asarray(Image.open(out / "screenshot.png").convert("RGB")).astype(np.float64)
    ren = Image.open(out / "render.png").convert("RGB").resize((shot.shape[1], shot.shape[0]), Image.BICUBIC)
    ren = np.asarray(ren).astype(np.float64)
    x1 = int(0.55 * shot.shape[1])  # the GUI panel sits on the right
    y0 = int(0.25 * shot.shape[0])  # and viser's notifications on the top left
    a_, b_ = shot[y0:, :x1], ren[y0:, :x1]
    mse = float(((a_ - b_) ** 2).mean())
    psnr = 10 * np.log10(255.0**2 / max(mse, 1e-12))
    corr = float(np.corrcoef(a_.ravel(), b_.ravel())[0, 1])
    Image.fromarray(np.concatenate([shot, ren], 1).astype(np.uint8)).save(out / "side_by_side.png")
    print(f"viewer screenshot vs recon render of view {a.view}, time 0 (region x < {x1}, y >= {y0} of "
          f"{shot.shape[1]}x{shot.shape[0]}): PSNR {psnr:.2f} dB, correlation {corr:.4f}; screenshot took {shot_s:.1f} s; "
          f"files in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
