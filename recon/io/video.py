"""One video per view (a folder), and writing preview videos.

Input folder::

    DIR/<view>.mp4 | .mov | .avi | .mkv | .webm | .gif    one video per view, views sorted by file
                                                         name with numbers compared as numbers
                                                         (cam2 before cam10); view names = stems
    DIR/cameras.json                                     optional, schema below

``cameras.json`` (every field optional)::

    {
      "fps": 30.0,                 frames per second (default: the first video's own rate, else 30)
      "fov_deg": 60.0,             horizontal field of view in degrees for views without "K"
      "K": [[fx,0,cx],[0,fy,cy],[0,0,1]],   intrinsics shared by all views (pixels, full video size)
      "views": {                   per view, keyed by video file name ("cam0.mp4") or stem ("cam0")
        "cam0": {"K": 3x3 | "fov_deg": 55.0, "w2c": 4x4 world-to-camera, OpenCV (x right, y down, z forward)}
      }
    }

Without ``cameras.json`` the intrinsics come from a 60 degree horizontal field-of-view guess
(``fx = fy = W / (2 tan(30 deg))``, principal point at the image centre) and poses are unknown
(``w2c`` None). Poses are all-or-nothing: either every view has a ``w2c`` or none does.

Frame counts: videos of one rig often differ by a frame or two, so all views are truncated to the
shortest video, with a warning and ``meta["truncated_from"]`` (frame counts per view). Frame sizes
must match exactly (an InputError names the file otherwise). ``times = index / fps`` seconds.
:attr:`LoadOptions.views` holds view indices in the sorted order; ``frames`` and ``scale`` as usual
(decoded frames are resized at once, but every frame up to the selection's end is decoded).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from recon import schema as S
from recon.errors import InputError
from recon.grid import Cameras, FrameGrid, fov_intrinsics
from recon.io import VIDEO_EXTS, LoadOptions, central_camera, parse_frames, resize_rgb, scale_intrinsics, scaled_size
from recon.io.atomic import atomic_path

DEFAULT_FOV_DEG = 60.0
"""Horizontal field of view assumed when a video comes without intrinsics (a typical phone / generator camera)."""
DEFAULT_FPS = 30.0
_FFMPEG_FORMATS = {".mp4": ("mp4", "libx264"), ".mov": ("mov", "libx264"), ".mkv": ("matroska", "libx264"),
                   ".avi": ("avi", "mpeg4"), ".webm": ("webm", "libvpx-vp9")}


def _natural_key(name: str) -> list[Any]:
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", name)]


def list_videos(folder: str | os.PathLike) -> list[Path]:
    """The video files of ``folder`` in view order (natural sort by name)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("path does not exist" if not folder.exists() else "expected a folder of videos", folder)
    vids = [f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in VIDEO_EXTS and not f.name.startswith(".")]
    if not vids:
        raise InputError(f"no videos ({', '.join(VIDEO_EXTS)}) in the folder", folder)
    return sorted(vids, key=lambda f: _natural_key(f.name))


def read_video(path: str | os.PathLike, scale: float = 1.0, stop: int | None = None) -> tuple[np.ndarray, float | None, tuple[int, int]]:
    """Decode a video -> (frames ``uint8 [N, h, w, 3]`` resized by ``scale``, its fps or None, native ``(H, W)``).

    Decodes at most ``stop`` frames when given. GIFs are read with Pillow, the rest with OpenCV's
    FFmpeg backend (in-process, applies rotation metadata). Raises InputError naming the file when it cannot be decoded or is empty.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("video file does not exist", path)
    frames: list[np.ndarray] = []
    fps: float | None = None
    size: tuple[int, int] | None = None
    if path.suffix.lower() == ".gif":
        from PIL import Image, ImageSequence, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                durations = []
                for fr in ImageSequence.Iterator(im):
                    if stop is not None and len(frames) >= stop:
                        break
                    a = np.asarray(fr.convert("RGB"))
                    size = size or a.shape[:2]
                    frames.append(resize_rgb(a, scaled_size(*size, scale)))
                    durations.append(fr.info.get("duration", 0) or 0)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
            raise InputError(f"cannot decode GIF (corrupt or truncated?): {e}", path) from None
        if durations and np.median(durations) > 0:
            fps = 1000.0 / float(np.median(durations))
    else:
        import cv2

        # ffmpeg's own log lines would break the CLI's one-line error; our InputError names the file.
        # Read once by OpenCV at its first capture; a user's own setting wins.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        cap = cv2.VideoCapture(str(path))
        try:
            if not cap.isOpened():
                raise InputError("cannot decode video (corrupt, truncated or unsupported?)", path)
            f = cap.get(cv2.CAP_PROP_FPS)
            fps = float(f) if math.isfinite(f) and f > 0 else None
            hw = None
            while stop is None or len(frames) < stop:
                ok, bgr = cap.read()
                if not ok:
                    break
                if size is None:
                    size = bgr.shape[:2]
                    hw = scaled_size(*size, scale)
                frames.append(resize_rgb(np.ascontiguousarray(bgr[..., ::-1]), hw))
            listed = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            if frames and stop is None and len(frames) < listed:
                warnings.warn(f"{path}: decoded {len(frames)} of the {listed} frames the container lists (truncated file?)", stacklevel=3)
        except cv2.error as e:
            raise InputError(f"cannot decode video (corrupt, truncated or unsupported?): {e}", path) from None
        finally:
            cap.release()
    if not frames:
        raise InputError("video has no frames (empty or corrupt)", path)
    return np.stack(frames), fps, size  # type: ignore[return-value]


def _matrix(val: Any, n: int, src: Path, key: str) -> np.ndarray:
    """An ``n x n`` matrix of finite numbers; 4x4 ones must be rigid world-to-camera poses."""
    a = S.Array((n, n)).check(val, src, key)
    return S.check_poses(a, src, key) if n == 4 else a


def _fov_K(fov_deg: Any, W: int, H: int, src: Path | None, key: str) -> np.ndarray:
    if isinstance(fov_deg, bool) or not isinstance(fov_deg, (int, float)) or not 0 < fov_deg < 180:
        raise InputError(f"expected a horizontal field of view in degrees in (0, 180), got {fov_deg!r}", src, key)
    return fov_intrinsics(H, W, float(fov_deg))


def _cameras(folder: Path, vids: list[Path], W: int, H: int) -> tuple[np.ndarray, np.ndarray | None, float | None, dict]:
    """Parse cameras.json -> (K [V,3,3], w2c [V,4,4] or None, fps or None, meta notes)."""
    src = folder / "cameras.json"
    V = len(vids)
    if not src.is_file():
        return np.stack([_fov_K(DEFAULT_FOV_DEG, W, H, None, "fov_deg")] * V), None, None, {"intrinsics": f"guessed: {DEFAULT_FOV_DEG} deg horizontal field of view"}
    cfg = S.read_json(src, what="cameras.json")
    if not isinstance(cfg, dict):
        raise InputError("expected a JSON object", src)
    unknown = sorted(set(cfg) - {"fps", "fov_deg", "K", "views"})
    if unknown:
        raise InputError(f"unknown fields {unknown} (expected fps, fov_deg, K, views)", src, unknown[0])
    fps = cfg.get("fps")
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0 or not math.isfinite(fps)):
        raise InputError(f"expected a positive number, got {fps!r}", src, "fps")
    shared_K = _matrix(cfg["K"], 3, src, "K") if "K" in cfg else None
    fov = cfg.get("fov_deg", DEFAULT_FOV_DEG)
    views = cfg.get("views", {})
    if not isinstance(views, dict):
        raise InputError("expected an object keyed by video file name or stem", src, "views")
    known = {v.name for v in vids} | {v.stem for v in vids}
    stray = sorted(set(views) - known)
    if stray:
        raise InputError(f"no video for {stray} (videos: {[v.name for v in vids]})", src, f"views.{stray[0]}")
    Ks, w2cs, notes = [], [], []
    for vid in vids:
        key = vid.name if vid.name in views else vid.stem
        entry = views.get(key, {})
        where = f"views.{key}"
        if not isinstance(entry, dict):
            raise InputError("expected an object with K / fov_deg / w2c", src, where)
        if "K" in entry:
            Ks.append(_matrix(entry["K"], 3, src, f"{where}.K"))
            notes.append("K")
        elif "fov_deg" in entry:
            Ks.append(_fov_K(entry["fov_deg"], W, H, src, f"{where}.fov_deg"))
            notes.append("fov_deg")
        elif shared_K is not None:
            Ks.append(shared_K)
            notes.append("K (shared)")
        else:
            Ks.append(_fov_K(fov, W, H, src, "fov_deg"))
            notes.append(f"fov_deg {fov}" + ("" if "fov_deg" in cfg else " (default guess)"))
        w2cs.append(_matrix(entry["w2c"], 4, src, f"{where}.w2c") if "w2c" in entry else None)
    have = [w is not None for w in w2cs]
    if any(have) and not all(have):
        missing = vids[have.index(False)]
        raise InputError("w2c given for some views but not this one (all or none)", src, f"views.{missing.stem}.w2c")
    w2c = np.stack(w2cs) if all(have) else None  # type: ignore[arg-type]
    return np.stack(Ks), w2c, (None if fps is None else float(fps)), {"intrinsics": dict(zip((v.stem for v in vids), notes))}


def _check_decoded_size(vids: list[Path], H: int, W: int, scale: float, stop: int | None) -> None:
    """Refuse before decoding when the selected frames of all videos would not fit in memory
    (frame counts as the containers list them; GIFs and unknown counts are left to the decoder)."""
    from recon.io import check_memory

    h, w = scaled_size(H, W, scale)
    counts = []
    for v in vids:
        n = 0
        if v.suffix.lower() != ".gif":
            import cv2

            cap = cv2.VideoCapture(str(v))
            try:
                n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else 0
            finally:
                cap.release()
        counts.append(min(n, stop) if stop is not None else n)
    check_memory(sum(counts) * h * w * 3, f"{len(vids)} videos x {max(counts)} frames at {w}x{h}", vids[0])


def _stop_of(spec: str | None) -> int | None:
    """The frame count that must be decoded for ``spec`` when that is known before decoding."""
    if not spec:
        return None
    parts = spec.split(":")
    try:
        nums = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        return None  # parse_frames reports it
    if len(nums) == 1:
        return None if nums[0] is None or nums[0] < 0 else nums[0] + 1
    start, stop = nums[0], nums[1]
    step = nums[2] if len(nums) == 3 else None
    if (step is None or step > 0) and stop is not None and stop >= 0 and (start is None or start >= 0):
        return stop
    return None


def read_videos(path: str | os.PathLike, options: LoadOptions | None = None) -> FrameGrid:
    """Read a folder of one video per view into a FrameGrid (see the module docstring for the layout)."""
    options = (options or LoadOptions()).check()
    folder = Path(path)
    all_vids = list_videos(folder)
    sel = list(range(len(all_vids))) if options.views is None else list(options.views)
    bad = [v for v in sel if not 0 <= v < len(all_vids)]
    if bad:
        raise InputError(f"view indices {bad} outside [0, {len(all_vids)})", folder, "--views")
    vids = [all_vids[v] for v in sel]
    # cameras.json is checked before the (slow) decoding; a fov needs the video size: peek one frame
    H, W = read_video(vids[0], 1.0, stop=1)[2]
    K, w2c, fps, notes = _cameras(folder, all_vids, W, H)
    K, w2c = K[sel], None if w2c is None else w2c[sel]
    stop = _stop_of(options.frames)
    _check_decoded_size(vids, H, W, options.scale, stop)
    with ThreadPoolExecutor(max(1, min(4, len(vids), os.cpu_count() or 1))) as pool:
        decoded = list(pool.map(lambda v: read_video(v, options.scale, stop), vids))
    for vid, (_, _, size) in zip(vids, decoded):
        if size != (H, W):
            raise InputError(f"video is {size[1]}x{size[0]}, {vids[0].name} is {W}x{H} (all views must have one size)", vid, "size")
    counts = [d[0].shape[0] for d in decoded]
    n = min(counts)
    meta: dict[str, Any] = {"source": str(folder), "kind": "videos", "videos": [v.name for v in vids]}
    if len(set(counts)) > 1:  # counts are capped at `stop`, so only a real shortfall differs
        warnings.warn(f"{folder}: videos have {counts} frames; all views truncated to the shortest ({n})", stacklevel=2)
        meta["truncated_from"] = dict(zip((v.name for v in vids), counts))
    meta.update(notes)
    if fps is None:
        fps = decoded[0][1]
        meta["fps_from"] = "video" if fps else f"default {DEFAULT_FPS}"
    else:
        meta["fps_from"] = "cameras.json"
    fps = fps or DEFAULT_FPS
    tsel = parse_frames(options.frames, n)
    images = np.stack([d[0][tsel] for d in decoded])
    h, w = scaled_size(H, W, options.scale)
    K = scale_intrinsics(K, w / W, h / H)
    meta.update({"fps": fps, "time_unit": "s", "frame_indices": tsel, "scale": options.scale})
    return FrameGrid(
        images=images,
        cameras=Cameras(K=K, w2c=w2c),
        times=np.asarray(tsel, dtype=np.float64) / fps,
        ref_time=0,
        central_view=len(vids) // 2 if w2c is None else central_camera(w2c),
        view_names=[v.stem for v in vids],
        meta=meta,
        source=str(folder / "cameras.json") if (folder / "cameras.json").is_file() else str(folder),
    )


# --- writing ------------------------------------------------------------------------------------
def _write_gif(path: Path, frames: np.ndarray, fps: float) -> None:
    from PIL import Image

    ims = [Image.fromarray(f) for f in frames]
    with atomic_path(path) as tmp:
        ims[0].save(tmp, format="GIF", save_all=True, append_images=ims[1:], duration=max(20, round(1000 / fps)),
                    loop=0, optimize=False, disposal=1)


def _write_ffmpeg(path: Path, frames: np.ndarray, fps: float, ext: str, quality: float) -> None:
    import imageio_ffmpeg

    fmt, codec = _FFMPEG_FORMATS[ext]
    N, H, W, _ = frames.shape
    # yuv420p needs even sizes: replicate the last row / column when odd
    ph, pw = H % 2, W % 2
    with atomic_path(path) as tmp:
        gen = imageio_ffmpeg.write_frames(str(tmp), (W + pw, H + ph), fps=fps, codec=codec, quality=quality,
                                          macro_block_size=1, ffmpeg_log_level="error", output_params=["-f", fmt])
        try:
            gen.send(None)
            for f in frames:
                if ph or pw:
                    f = np.pad(f, ((0, ph), (0, pw), (0, 0)), mode="edge")
                gen.send(np.ascontiguousarray(f).tobytes())
        finally:
            gen.close()
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise RuntimeError("ffmpeg wrote nothing")


def write_video(path: str | os.PathLike, frames: Any, fps: float = 30.0, quality: float = 8.0) -> Path:
    """Write ``frames`` (``uint8 [N, H, W, 3]`` RGB) as a video, atomically; returns the path written.

    The container follows the suffix: .mp4 / .mov / .mkv (H.264), .webm (VP9), .avi (MPEG-4) via
    imageio-ffmpeg, or .gif via Pillow. Odd sizes are padded by one replicated row / column for
    H.264. ``quality`` is imageio-ffmpeg's 0-10 scale. GIF frame times have 10 ms steps. If ffmpeg fails, an animated GIF is written
    next to ``path`` instead (``path`` with suffix .gif) with a warning, and that path is returned.
    """
    a = np.asarray(frames)
    if a.ndim != 4 or a.shape[-1] != 3 or a.shape[0] < 1:
        raise ValueError(f"write_video: expected frames [N, H, W, 3] with N >= 1, got {list(a.shape)}")
    if a.dtype != np.uint8:
        raise ValueError(f"write_video: expected uint8 frames, got {a.dtype} (use recon.io.images.to_uint8)")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"write_video: fps must be positive, got {fps}")
    path = Path(path)
    ext = path.suffix.lower()
    if ext == ".gif":
        _write_gif(path, a, fps)
        return path
    if ext not in _FFMPEG_FORMATS:
        raise ValueError(f"write_video: unsupported suffix {ext!r} (use {', '.join(list(_FFMPEG_FORMATS) + ['.gif'])})")
    try:
        _write_ffmpeg(path, a, fps, ext, quality)
        return path
    except (RuntimeError, OSError, BrokenPipeError, ValueError) as e:
        gif = path.with_suffix(".gif")
        warnings.warn(f"{path}: ffmpeg failed ({str(e).strip()[:200]}); wrote an animated GIF {gif} instead", stacklevel=2)
        _write_gif(gif, a, fps)
        return gif
