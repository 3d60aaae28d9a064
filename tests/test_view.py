"""``recon view`` and ``recon render --path``: the viewer served by a subprocess and driven by a
websocket client speaking viser's wire protocol (time slider, camera snap, frames received and
compared with recon's own renders), SIGINT stops it; camera-path videos decode back."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from recon.cli import main

viser = pytest.importorskip("viser")
websockets = pytest.importorskip("websockets")

REPO = Path(__file__).resolve().parents[1]
TINY = {"prune": {"iterations": 4}, "deform": {"iterations": 30, "warmup": 2, "mlp_width": 16, "mlp_depth": 1},
        "outputs": {"preview_video": False}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from recon.io.gridfolder import write_grid
    from recon.synth import make_grid

    d = tmp_path_factory.mktemp("view")
    grid = write_grid(make_grid("orbit", views=4, frames=3, size=(32, 40), seed=1, supersample=1), d / "grid")
    (d / "tiny.json").write_text(json.dumps(TINY))
    run = d / "run"
    assert main(["reconstruct", str(grid), "--out", str(run), "--config", str(d / "tiny.json"), "--device", "cpu",
                 "--holdout", "views=3,times=1"]) == 0
    return run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _decode(raw: bytes) -> list[dict]:
    """One server -> client websocket frame of viser: [u64 msgpack size][u64 zstd size][zstd msgpack][binary buffers]."""
    import msgspec
    import zstandard

    n_comp = int.from_bytes(raw[8:16], "little")
    inner = zstandard.ZstdDecompressor().decompress(raw[16:16 + n_comp], max_output_size=int.from_bytes(raw[:8], "little"))
    doc = msgspec.msgpack.decode(inner)
    buffers, off = [], 16 + n_comp
    for n in doc.get("binaryBufferLengths", ()):
        off += (-off) % 8
        buffers.append(raw[off:off + n])
        off += n

    def fill(v):
        if isinstance(v, dict):
            if "__binary_index" in v:
                return buffers[v["__binary_index"]]
            return {k: fill(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fill(x) for x in v]
        return v

    return [fill(m) for m in doc["messages"]]


def _encode(message) -> bytes:
    import msgspec

    return msgspec.msgpack.encode(message.as_serializable_dict())


def _png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


class _Client:
    """A minimal viser client: collects messages, finds GUI elements by label, sends updates."""

    def __init__(self, ws):
        self.ws = ws
        self.messages: list[dict] = []

    async def pump(self, until, timeout: float = 30.0) -> dict:
        end = time.monotonic() + timeout
        while True:
            for m in self.messages:
                if until(m):
                    self.messages.remove(m)
                    return m
            left = end - time.monotonic()
            assert left > 0, f"timed out; types seen: {sorted({m['type'] for m in self.messages})}"
            self.messages.extend(_decode(await asyncio.wait_for(self.ws.recv(), left)))

    async def gui(self, label: str) -> str:
        m = await self.pump(lambda m: m["type"].startswith("Gui") and m.get("props", {}).get("label") == label)
        return m["uuid"]

    async def frame(self) -> np.ndarray:
        m = await self.pump(lambda m: m["type"] == "BackgroundImageMessage" and m.get("rgb_data"))
        assert m["format"] == "png"
        return _png(m["rgb_data"])

    def drop_frames(self) -> None:
        self.messages = [m for m in self.messages if m["type"] != "BackgroundImageMessage"]


def test_view_serves_frames_follows_the_slider_and_snaps_to_cells(run_dir, tmp_path):
    from viser import _messages as vm

    from recon.commands.render import load_run_scene
    from recon.commands.view import Viewer, _rotation

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "recon.cli", "view", str(run_dir), "--port", str(port), "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        while line and not line.startswith("recon view:"):
            line = proc.stdout.readline()
        assert line.startswith(f"recon view: http://127.0.0.1:{port}"), (line, proc.poll(), proc.stderr.read() if proc.poll() is not None else "")
        wxyz = (1.0, 0.0, 0.0, 0.0)
        position = (0.1, -0.2, -4.0)

        async def session():
            async with websockets.connect(f"ws://127.0.0.1:{port}", subprotocols=[f"viser-v{viser.__version__}"],
                                          max_size=None) as ws:
                c = _Client(ws)
                cam = vm.ViewerCameraMessage(wxyz=wxyz, position=position, fov=0.8, near=0.01, far=100.0, image_height=300,
                                             image_width=400, look_at=(0.0, 0.0, 0.0), up_direction=(0.0, -1.0, 0.0))
                await ws.send(_encode(cam))
                slider = await c.gui("time")
                snap = await c.gui("camera")
                await c.frame()  # the first render, at time 0
                c.drop_frames()
                await ws.send(_encode(vm.GuiUpdateMessage(slider, {"value": 2})))
                moved = await c.frame()
                c.drop_frames()
                await ws.send(_encode(vm.GuiUpdateMessage(snap, {"value": "view 1 (train)"})))
                snapped = await c.frame()
                return moved, snapped

        moved, snapped = asyncio.run(session())
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert "stopped" in out and "Traceback" not in err, (out, err[-2000:])

    # the free-camera frame after the slider moved is recon's render of that camera at time 2
    scene = load_run_scene(run_dir, __import__("torch").device("cpu"))
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = _rotation(wxyz), position
    expect = Viewer(scene, run_dir, [3], None).free(2, c2w, 0.8, 400 / 300)
    assert moved.shape == expect.shape == (384, 512, 3)
    assert np.array_equal(moved, expect)
    # a snapped training camera shows the same pixels as `recon render --view 1 --time 2`
    png = tmp_path / "cell.png"
    assert main(["render", str(run_dir), "--view", "1", "--time", "2", "--out", str(png), "--device", "cpu"]) == 0
    assert np.array_equal(snapped, _png(png.read_bytes()))


def test_view_bad_input_is_one_line_exit_2(run_dir, tmp_path, capsys):
    with socket.socket() as s:  # a port in use
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        busy = s.getsockname()[1]
        assert main(["view", str(run_dir), "--port", str(busy), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "in use" in err[0] and "--port" in err[0], err
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "run.json").write_text((run_dir / "run.json").read_text().replace('"done"', '"pending"'))
    assert main(["view", str(unfinished), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "deform stage has not finished" in err[0], err
    assert main(["view", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("path", ["bullet-time", "orbit", "spiral", "grid-views"])
def test_render_path_writes_a_playable_video(run_dir, tmp_path, path, capsys):
    import imageio.v3 as iio

    out = tmp_path / f"{path}.mp4"
    assert main(["render", str(run_dir), "--path", path, "--out", str(out), "--size", "48", "64", "--fps", "10",
                 "--seconds", "1.2", "--device", "cpu"]) == 0
    frames = iio.imread(out)
    assert frames.shape == (12, 48, 64, 3)
    assert frames.std() > 1.0  # not a blank video
    if path == "bullet-time":  # time frozen, there and back: the middle frame is the far end, the ends match
        assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() < np.abs(frames[0].astype(int) - frames[6].astype(int)).mean()


def test_render_path_frames_folder_and_bad_options(run_dir, tmp_path, capsys):
    out = tmp_path / "frames"
    assert main(["render", str(run_dir), "--path", "orbit", "--out", str(out), "--seconds", "0.5", "--fps", "8",
                 "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"frame_{k:04d}.png" for k in range(4)]
    capsys.readouterr()
    for args, needle in ((["--path", "zoom"], "--path"), (["--path", "orbit", "--fps", "0"], "--fps"),
                         (["--path", "orbit", "--out", str(tmp_path / "x.txt")], "suffix"),
                         (["--path", "orbit", "--out", str(out)], "exists")):
        assert main(["render", str(run_dir), *args, "--device", "cpu"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], (args, err)


@pytest.mark.slow
def test_browser_screenshot_shows_recons_render(run_dir):
    """Headless Chromium (Debian's chromium) opens the viewer snapped to a grid camera; the page's
    viewport must show recon's render of that cell (skipped where no chromium is installed)."""
    import re
    import shutil

    if shutil.which("chromium") is None and shutil.which("chromium-browser") is None:
        pytest.skip("no chromium on PATH (apt install chromium)")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, str(REPO / "tools" / "bench_viewer.py"), str(run_dir), "--view", "1", "--port",
                        str(_free_port()), "--size", "800"], capture_output=True, text=True, env=env, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    psnr = float(re.search(r"PSNR ([\d.]+) dB", r.stdout).group(1))
    assert psnr > 25.0, r.stdout
