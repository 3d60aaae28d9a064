"""``recon view RUN``: an interactive browser viewer of a finished run (viser, on localhost).

What you see is what recon fitted: every frame is rendered by recon's own rasterizer (the CPU
kernel, or CUDA when present) for the browser's camera and sent as the viewport's background.
The scene is shown in the run's canonical frame (the central camera's coordinates).

* a time slider with play / pause and fps; the frame at any slider position is the fitted
  deformation at that grid time;
* the grid's cameras as frusta, training cameras blue and held-out / test cameras orange;
  clicking one (or choosing it in "camera") snaps the viewport to it, renders exactly that grid
  cell (its intrinsics, its per-view offsets dp_i^v and colour response; the same pixels as
  ``recon render RUN --view i --time t``) and shows the ground-truth frame beside it when the
  run's input is readable;
* "view offsets" toggles dp_i^v for snapped cameras (free cameras render the exported geometry);
* "splat centres" shows the canonical splats as a point cloud.

Needs the ``view`` extra (``pip install recon4d[view]``: viser).
"""

from __future__ import annotations

import math
import socket
import threading
import time as _time
from pathlib import Path

import numpy as np

from recon.errors import InputError

MAX_SIDE = 512
"""Free-camera renders are at most this many pixels on their longer side (interactive speed)."""


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _wxyz(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a rotation matrix ``R [3, 3]``."""
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(R).as_quat()
    return np.array([w, x, y, z])


def _rotation(wxyz) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    w, x, y, z = (float(a) for a in wxyz)
    return Rotation.from_quat([x, y, z, w]).as_matrix()


class Viewer:
    """The state and the rendering of ``recon view`` (usable without a server, for tests):
    ``frame(time, camera)`` renders what the viewport shows."""

    def __init__(self, scene, run: Path, held_views: list[int], gt: np.ndarray | None, backend: str = "auto"):
        self.scene = scene
        self.run = run
        self.held_views = set(held_views)
        self.gt = gt  # uint8 [V, T, H, W, 3] or None
        self.backend = backend
        self.lock = threading.Lock()
        self._means: dict[float, object] = {}

    def cell(self, view: int, time: int, view_offsets: bool = True) -> np.ndarray:
        """Grid cell (view, time) exactly as ``recon render`` renders it: ``uint8 [H, W, 3]``."""
        import torch

        with self.lock, torch.no_grad():
            rgb, _, _, _ = self.scene.render([(view, time)], view_offsets=view_offsets)
        return (rgb[0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()

    def free(self, time: int, c2w: np.ndarray, fov_y: float, aspect: float, max_side: int = MAX_SIDE) -> np.ndarray:
        """A free camera (``c2w [4, 4]`` canonical, OpenCV; vertical field of view ``fov_y``
        radians; width / height ``aspect``) at grid time ``time``: ``uint8 [h, w, 3]``."""
        import torch

        w = max_side if aspect >= 1 else max(16, round(max_side * aspect))
        h = max(16, round(w / aspect)) if aspect >= 1 else max_side
        from recon.grid import fov_intrinsics

        K = torch.from_numpy(fov_intrinsics(h, w, math.degrees(fov_y), axis="y")).float()
        w2c = torch.from_numpy(np.linalg.inv(c2w)).float()
        t = float(self.scene.times[time])
        with self.lock, torch.no_grad():
            if t not in self._means:
                self._means = {t: self.scene.means_at_time(t)}
            rgb = self.scene.render_camera(w2c, K, (h, w), t, means=self._means[t], backend=self.backend)
        return (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()

    def camera(self, view: int, time: int = 0) -> tuple[np.ndarray, float, float]:
        """``(c2w [4, 4], vertical fov, aspect)`` of grid view ``view`` at ``time``."""
        c2w = np.linalg.inv(self.scene.poses[view, time].double().cpu().numpy())
        H, W = self.scene.size
        fy = float(self.scene.Ks[view, time, 1, 1])
        return c2w, 2 * math.atan(0.5 * H / fy), W / H


def _set_camera(client, R: np.ndarray, position: np.ndarray, fov: float) -> None:
    with client.atomic():
        client.camera.wxyz = _wxyz(R)
        client.camera.position = position
        client.camera.fov = fov


def _load_gt(info: dict, scene) -> tuple[np.ndarray | None, str]:
    """The run's input frames (for side-by-side ground truth) when they can be read as it was."""
    from recon.io import LoadOptions, load_grid

    src = info.get("input")
    if not src or not Path(src).exists():
        return None, "ground truth: the run's input is not here"
    load = {k: v for k, v in (info.get("load") or {}).items() if k in ("views", "frames", "scale", "split")}
    try:
        if "eval_split" in (info.get("load") or {}):
            from recon.io.protocol import load_protocol

            grid, _ = load_protocol(Path(src), LoadOptions(**load), info["load"]["eval_split"])
        else:
            grid = load_grid(Path(src), LoadOptions(**load))
    except InputError as e:
        return None, f"ground truth: cannot read the input ({e})"
    if grid.images.shape[:4] != (scene.num_views, scene.num_times, *scene.size):
        return None, "ground truth: the input no longer matches the run"
    return grid.images, "ground truth: the run's input"


def view(run: Path, /, port: int = 8080, host: str = "127.0.0.1", camera: int | None = None, device: str = "auto") -> None:
    """Open an interactive viewer of a finished run in the browser (viser): time slider with
    play / pause, the grid's cameras (click to snap, ground truth beside the render), per-view
    offsets toggle, the canonical splats as points. Ctrl-C stops it.

    Args:
        run: A run folder written by `recon reconstruct` (its deform stage finished).
        port: TCP port of the viewer (refused if in use).
        host: Interface to listen on (127.0.0.1: this machine only; 0.0.0.0: the network).
        camera: Start snapped to this grid view (default: a free camera at the central view).
        device: auto, cpu, cuda or cuda:N (the rasterizer's).
    """
    try:
        import viser
    except ImportError:
        raise InputError("recon view needs viser: pip install 'recon4d[view]' (or pip install viser)", field="view") from None

    from recon.commands.render import load_run_scene
    from recon.config import load_config_file
    from recon.device import resolve_device
    from recon.run import RunFolder

    run = Path(run)
    if not 1 <= int(port) <= 65535:
        raise InputError(f"expected a TCP port in [1, 65535], got {port}", field="--port")
    scene = load_run_scene(run, resolve_device(device))
    if camera is not None and not 0 <= camera < scene.num_views:
        raise InputError(f"view {camera} outside [0, {scene.num_views})", field="--camera")
    info = RunFolder.read_info(run)
    held = load_config_file(run / "config.json").holdout_views if (run / "config.json").is_file() else []
    if not _port_free(host, port):
        raise InputError(f"port {port} on {host} is in use; pass another --port", field="--port")
    gt, gt_note = _load_gt(info, scene)
    viewer = Viewer(scene, run, held, gt)
    import contextlib
    import io

    import logging

    # browsers open speculative connections that close before a request; websockets logs each as an error
    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    with contextlib.redirect_stdout(io.StringIO()):  # viser's own banner: recon prints the URL itself
        server = viser.ViserServer(host=host, port=port, verbose=False)
    _build(server, viewer, gt_note, camera)
    print(f"recon view: http://{host}:{port} ({scene.num_views} views x {scene.num_times} times, "
          f"{scene.splats.num} splats; {gt_note}); Ctrl-C stops", flush=True)
    import signal

    def _stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)  # a service manager's stop is a Ctrl-C
    try:
        while True:
            _time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    print("recon view: stopped", flush=True)


def _build(server, viewer: Viewer, gt_note: str, camera: int | None = None) -> None:
    """The GUI, the frusta, the point cloud and the per-client render loop; new browsers start at
    the central grid camera (free), or snapped to ``camera``."""
    from recon.render.paths import rig_of

    scene = viewer.scene
    rig = rig_of(scene.poses.cpu().numpy(), points=scene.splats.means.detach().cpu().numpy())
    server.scene.set_up_direction(tuple(float(x) for x in rig.up))
    first = scene.num_views // 2 if camera is None else camera
    start, start_fov, _ = viewer.camera(first)
    server.initial_camera.position = start[:3, 3]
    server.initial_camera.look_at = start[:3, 3] + start[:3, 2] * float(np.linalg.norm(rig.centre - start[:3, 3]))
    server.initial_camera.up = -start[:3, 1]
    server.initial_camera.fov = start_fov
    V, T = scene.num_views, scene.num_times
    gui = server.gui
    time_slider = gui.add_slider("time", min=0, max=max(T - 1, 1), step=1, initial_value=0, disabled=T == 1)
    playing = gui.add_checkbox("play", initial_value=False)
    fps = gui.add_number("fps", initial_value=8.0, min=0.5, max=60.0, step=0.5)
    names = ["free"] + [f"view {i} ({'held out' if i in viewer.held_views else 'train'})" for i in range(V)]
    snap = gui.add_dropdown("camera", names, initial_value="free" if camera is None else names[camera + 1])
    offsets = gui.add_checkbox("view offsets", initial_value=True)
    show_points = gui.add_checkbox("splat centres", initial_value=False)
    gui.add_markdown(gt_note)
    gt_image = gui.add_image(np.zeros((8, 8, 3), np.uint8), label="ground truth") if viewer.gt is not None else None

    means = scene.splats.means.detach().cpu().numpy()
    colors = (scene.splats.rgb().detach().clamp(0, 1).cpu().numpy() * 255).astype(np.uint8)
    points = server.scene.add_point_cloud("/splats", points=means, colors=colors, point_size=0.01, visible=False)
    show_points.on_update(lambda _: setattr(points, "visible", show_points.value))
    extent = float(np.linalg.norm(means.std(0))) if len(means) else 1.0
    frusta = []
    for i in range(V):
        c2w, fov, aspect = viewer.camera(i)
        fr = server.scene.add_camera_frustum(f"/cameras/view_{i:02d}", fov=fov, aspect=aspect, scale=0.15 * extent,
                                             thickness=2.0, thickness_units="screen",
                                             color=(240, 140, 30) if i in viewer.held_views else (40, 110, 230),
                                             wxyz=_wxyz(c2w[:3, :3]), position=c2w[:3, 3])
        fr.on_click(lambda _e, i=i: setattr(snap, "value", names[i + 1]))
        frusta.append(fr)

    # client id -> {"snapped": view or None, "pose": (R, position) the browser reported after the
    # snap (None: take the next report, which echoes the snap), so a snapped view stays exact
    # until the user moves the camera}
    state: dict[int, dict] = {}
    SNAP_TOL = 0.02  # rotation-matrix entries / fraction of the scene extent of movement that un-snap
    SNAP_GRACE_S = 2.0  # after a snap, camera reports that differ are the browser settling: the snap is re-asserted

    def snapped_view() -> int | None:
        return None if snap.value == "free" else names.index(snap.value) - 1

    def draw(client, moved: bool = False) -> None:
        st = state.setdefault(client.client_id, {"snapped": None, "pose": None, "since": 0.0, "target": None})
        t = int(time_slider.value)
        v = st["snapped"] if st.get("target") is not None else None
        if v is not None and moved:
            R, p = _rotation(client.camera.wxyz), np.asarray(client.camera.position, np.float64)
            ref = st["pose"] if st["pose"] is not None else st["target"][:2]
            away = np.abs(R - ref[0]).max() > SNAP_TOL or np.abs(p - ref[1]).max() > SNAP_TOL * max(extent, 1e-6)
            if _time.monotonic() - st["since"] < SNAP_GRACE_S:
                if away:  # the browser settling (its own initial camera, an up-direction change): re-assert
                    _set_camera(client, *st["target"])
            elif st["pose"] is None:  # the browser's echo of the snap: the reference from now on
                st["pose"] = (R, p)
            elif away:
                st["snapped"] = v = None  # the user moved away: a free camera again
                for fr in frusta:
                    fr.visible = True
        if v is not None:
            img = viewer.cell(v, t, view_offsets=offsets.value)
        else:
            c2w = np.eye(4)
            c2w[:3, :3] = _rotation(client.camera.wxyz)
            c2w[:3, 3] = client.camera.position
            img = viewer.free(t, c2w, float(client.camera.fov), float(client.camera.aspect))
        client.scene.set_background_image(img, format="png")
        if gt_image is not None:
            gt_image.image = viewer.gt[v if v is not None else int(scene.num_views // 2), t]

    def draw_all(_=None) -> None:
        for client in server.get_clients().values():
            draw(client)

    def snap_client(client, v: int | None) -> None:
        target = None
        if v is not None:
            c2w, fov, _ = viewer.camera(v, int(time_slider.value))
            target = (c2w[:3, :3], c2w[:3, 3], fov)
        # one assignment: a camera report handled meanwhile (another thread) sees all or nothing
        state[client.client_id] = {"snapped": v, "pose": None, "since": _time.monotonic(), "target": target}
        for fr in frusta:  # a snapped view shows the cell alone (no frusta in front of it)
            fr.visible = v is None
        if target is not None:
            _set_camera(client, *target)
        draw(client)

    def on_snap(_=None) -> None:
        for client in server.get_clients().values():
            snap_client(client, snapped_view())

    @server.on_client_connect
    def _(client) -> None:
        state[client.client_id] = {"snapped": None, "pose": None, "since": 0.0, "target": None}
        client.camera.on_update(lambda cam: draw(cam.client, moved=True))
        if snapped_view() is not None:
            snap_client(client, snapped_view())

    time_slider.on_update(draw_all)
    offsets.on_update(draw_all)
    snap.on_update(on_snap)

    def player() -> None:
        while True:
            _time.sleep(1.0 / max(float(fps.value), 0.5))
            if playing.value and T > 1:
                time_slider.value = (int(time_slider.value) + 1) % T

    threading.Thread(target=player, daemon=True).start()
