"""Readers and writers. :func:`load_grid` detects the input kind and dispatches (:data:`READERS`).

Input kinds (see each module for its layout):

* ``grid``      a recon grid folder (``grid.json``)                 -> :mod:`recon.io.gridfolder`
* ``panoptic``  Dynamic-3DGS / CMU Panoptic (``train_meta.json``)   -> :mod:`recon.io.panoptic`
* ``nerfstudio``/``dnerf`` ``transforms*.json`` with a time field   -> :mod:`recon.io.nerfstudio`
* ``videos``    a folder of one video per view (+ cameras.json)     -> :mod:`recon.io.video`
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import numpy as np

from recon.errors import InputError
from recon.grid import FrameGrid

VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".gif")


@dataclass
class LoadOptions:
    """Selection applied while reading (readers that support it read only what is selected)."""

    views: list[int] | None = None
    """Indices (or camera ids, for Panoptic) of the views to keep; None keeps all."""
    frames: str | None = None
    """Frame range as ``start:stop[:step]`` over the time axis (Python slice semantics)."""
    scale: float = 1.0
    """Resolution scale applied to images, masks and intrinsics (0.5 = half size)."""
    split: str = "train"
    """For multi-split datasets: Panoptic train, test or all (both, merged by camera id);
    D-NeRF picks ``transforms_<split>.json`` (train, val, test) when given a folder."""

    def check(self) -> "LoadOptions":
        """Raise :class:`InputError` (naming the flag) for a bad selection; returns ``self``.
        Every reader checks its options first (the command line builds them unchecked)."""
        import math

        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not math.isfinite(self.scale) \
                or not 0.0 < self.scale <= 8.0:
            raise InputError(f"scale must be a number in (0, 8], got {self.scale!r}", field="--scale")
        if self.views is not None:
            bad = [v for v in self.views if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**31]
            if bad:
                raise InputError(f"view indices must be integers >= 0, got {bad[0]!r}", field="--views")
            if len(set(self.views)) != len(self.views):
                raise InputError(f"views repeat in {list(self.views)}", field="--views")
        if not isinstance(self.split, str) or not self.split:
            raise InputError(f"expected a split name, got {self.split!r}", field="--split")
        return self


def parse_frames(spec: str | None, n: int, field: str = "--frames") -> list[int]:
    """``"start:stop[:step]"`` (or ``"i"``) -> list of frame indices within ``range(n)``."""
    if spec is None or spec == "":
        return list(range(n))
    try:
        parts = [int(p) if p.strip() else None for p in spec.split(":")]
    except ValueError:
        raise InputError(f"expected start:stop[:step] with integers, got {spec!r}", field=field) from None
    if len(parts) == 1:
        idx = [parts[0]] if parts[0] is not None and 0 <= parts[0] < n else []
    elif len(parts) in (2, 3):
        if len(parts) == 3 and parts[2] == 0:
            raise InputError("step must not be 0", field=field)
        idx = list(range(n))[slice(*parts)]
    else:
        raise InputError(f"expected start:stop[:step], got {spec!r}", field=field)
    if not idx:
        raise InputError(f"selects no frames out of {n}", field=field)
    return idx


@dataclass(frozen=True)
class Reader:
    """One input kind: how to recognise it and how to read it (a row of :data:`READERS`)."""

    detect: Callable[[Path], bool]
    """``path`` (an existing file or folder) -> whether it is this kind."""
    read: Callable[[Path, LoadOptions], FrameGrid]
    """``(path, options) -> FrameGrid`` with ``options`` applied (see :func:`apply_options`)."""
    layout: str
    """What the kind looks like on disk (named in the 'unrecognised input' message)."""
    splits: bool = False
    """Whether ``LoadOptions.split`` means something for this kind."""
    protocol: Callable[[Path, LoadOptions, str, str], tuple[FrameGrid, dict]] | None = None
    """The train/test protocol of ``--eval-split`` (:mod:`recon.io.protocol`):
    ``(path, options, train_split, eval_split) -> (grid, info)``; None: the kind has none."""


def _read_gridfolder(path: Path, options: LoadOptions) -> FrameGrid:
    from recon.io.gridfolder import read_grid

    return apply_options(read_grid(path), options, path)


def _read_panoptic(path: Path, options: LoadOptions) -> FrameGrid:
    from recon.io.panoptic import read_panoptic

    return read_panoptic(path, options)


def _read_transforms(path: Path, options: LoadOptions) -> FrameGrid:
    from recon.io.nerfstudio import read_transforms

    return read_transforms(path, options)


def _read_videos(path: Path, options: LoadOptions) -> FrameGrid:
    from recon.io.video import read_videos

    return read_videos(path, options)


def _protocol(name: str) -> Callable[[Path, LoadOptions, str, str], tuple[FrameGrid, dict]]:
    def run(path: Path, options: LoadOptions, train: str, ev: str) -> tuple[FrameGrid, dict]:
        from recon.io import protocol

        return getattr(protocol, name)(path, options, train, ev)
    return run


READERS: dict[str, Reader] = {
    "grid": Reader(lambda p: p.is_dir() and (p / "grid.json").is_file(), _read_gridfolder, "grid.json"),
    "panoptic": Reader(lambda p: p.is_dir() and ((p / "train_meta.json").is_file() or (p / "test_meta.json").is_file()),
                       _read_panoptic, "train_meta.json", splits=True, protocol=_protocol("panoptic_protocol")),
    "nerfstudio": Reader(lambda p: p.suffix.lower() == ".json" if p.is_file()
                         else any(f.is_file() for f in p.glob("transforms*.json")),
                         _read_transforms, "transforms*.json", splits=True, protocol=_protocol("dnerf_protocol")),
    "videos": Reader(lambda p: p.is_dir() and any(f.suffix.lower() in VIDEO_EXTS for f in p.iterdir() if f.is_file()),
                     _read_videos, "videos"),
}
"""Input kinds, tried in this order by :func:`detect_kind` (the first that matches reads). A new
input format is one module with its ``read(path, options)`` plus one row here."""


def detect_kind(path: str | os.PathLike) -> str:
    """Return the input kind of ``path`` (a key of :data:`READERS`) or raise InputError."""
    p = Path(path)
    if not p.exists():
        raise InputError("path does not exist", p)
    for kind, reader in READERS.items():
        if reader.detect(p):
            return kind
    if p.is_file():
        raise InputError("expected a folder or a transforms json", p)
    if not any(p.iterdir()):
        raise InputError("folder is empty", p)
    layouts = [r.layout for r in READERS.values()]
    raise InputError(f"unrecognised input: expected {', '.join(layouts[:-1])} or {layouts[-1]}", p)


def load_grid(path: str | os.PathLike, options: LoadOptions | None = None) -> FrameGrid:
    """Read any supported input into a :class:`FrameGrid`, applying ``options`` (selection, scale)."""
    options = (options or LoadOptions()).check()
    kind = detect_kind(path)
    reader = READERS[kind]
    if not reader.splits and options.split != "train":
        split_kinds = " and ".join(k for k, r in READERS.items() if r.splits)
        raise InputError(f"a {kind} input has no splits (--split is for {split_kinds} inputs)", path, "--split")
    return reader.read(Path(path), options)


def apply_options(grid: FrameGrid, options: LoadOptions, src: Path) -> FrameGrid:
    """Apply view / frame selection and scale to an already-loaded grid."""
    views = options.views
    if views is not None:
        bad = [v for v in views if not 0 <= v < grid.num_views]
        if bad:
            raise InputError(f"view indices {bad} outside [0, {grid.num_views})", src, "--views")
    times = parse_frames(options.frames, grid.num_times)
    if views is not None or len(times) != grid.num_times:
        grid = grid.subset(views, times)
    if options.scale != 1.0:
        grid = rescale(grid, options.scale)
    return grid


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """``(h, w)`` of an ``height x width`` image resized by ``scale``; raises InputError on a bad scale."""
    if not (0.0 < scale <= 8.0):
        raise InputError(f"scale must be in (0, 8], got {scale}", field="--scale")
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``uint8 [H, W, C]`` -> ``[h, w, C]`` for ``size = (h, w)`` (area when shrinking, bilinear when growing)."""
    import cv2

    h, w = size
    if image.shape[:2] == (h, w):
        return image
    interp = cv2.INTER_AREA if h * w < image.shape[0] * image.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``bool [H, W]`` -> ``bool [h, w]`` (nearest) for ``size = (h, w)``."""
    import cv2

    h, w = size
    if mask.shape[:2] == (h, w):
        return mask
    return cv2.resize(mask.astype("uint8"), (w, h), interpolation=cv2.INTER_NEAREST) > 0


def scale_intrinsics(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Intrinsics ``[..., 3, 3]`` (pixels) of images resized by ``sx`` horizontally and ``sy`` vertically.

    With the pixel-centre convention of :mod:`recon.grid` (continuous coordinates, top-left pixel
    centre at 0.5) a resize scales ``fx, skew, cx`` by ``sx`` and ``fy, cy`` by ``sy``.
    """
    import numpy as np

    K = np.array(K, dtype=np.float64, copy=True)
    K[..., 0, :] *= sx
    K[..., 1, :] *= sy
    K[..., 2, :] = [0.0, 0.0, 1.0]
    return K


MEMORY_FRACTION = 0.6
"""A decoded grid may take at most this fraction of the memory available when it is read (the fit
needs the rest: renders, gradients, the splats)."""


def available_memory() -> int:
    """Bytes of memory available to new allocations (``MemAvailable`` of /proc/meminfo; elsewhere
    the physical memory reported by ``os.sysconf``); ``RECON_MEMORY_LIMIT`` (bytes) overrides it."""
    env = os.environ.get("RECON_MEMORY_LIMIT")
    if env:
        return int(float(env))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def check_memory(nbytes: int, what: str, source: Path | str | None = None,
                 hint: str = "read less with --scale, --frames or --views") -> None:
    """Raise :class:`InputError` before allocating ``nbytes`` for ``what`` when that exceeds
    :data:`MEMORY_FRACTION` of the available memory, saying (``hint``) which options make it smaller."""
    avail = available_memory()
    if nbytes > MEMORY_FRACTION * avail:
        raise InputError(f"{what} would take {nbytes / 2**30:.1f} GiB, more than {MEMORY_FRACTION:.0%} of the "
                         f"{avail / 2**30:.1f} GiB of memory available; {hint}", source, "size")


def read_image_grid(
    paths: list[list[Path]],
    scale: float = 1.0,
    expected_hw: tuple[int, int] | None = None,
    expected_from: str = "",
    masks: bool = False,
    reader: Callable[[Path], np.ndarray] | None = None,
) -> np.ndarray:
    """Read a V x T nested list of image files into ``uint8 [V, T, h, w, C]`` (C = 3 for RGB), or
    ``bool [V, T, h, w]`` with ``masks=True``; each image is resized by ``scale`` right after
    decoding, so only the small copy is kept.

    ``reader`` (path -> array ``[H, W]`` or ``[H, W, C]``) replaces the default
    :func:`~recon.io.images.read_rgb` / :func:`~recon.io.images.read_mask`. Every file must be
    ``expected_hw = (H, W)`` before resizing (default: the first file's size); otherwise
    InputError names the file and ``expected_from`` (where the expected size comes from).
    Decoding runs in a few threads (PIL and OpenCV release the GIL).
    """
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from recon.io.images import read_mask, read_rgb

    flat = [(v, t, p) for v, row in enumerate(paths) for t, p in enumerate(row)]
    if not flat:
        raise InputError("no images selected", field="--views/--frames")
    reader = reader or (read_mask if masks else read_rgb)
    first = reader(flat[0][2])
    if expected_hw is None:
        expected_hw, expected_from = first.shape[:2], f"size of the first image {flat[0][2]}"
    H, W = expected_hw
    h, w = scaled_size(H, W, scale)
    V, T = len(paths), max(len(r) for r in paths)
    check_memory(V * T * h * w * int(np.prod(first.shape[2:], dtype=np.int64)), f"{V} views x {T} frames at {w}x{h}",
                 flat[0][2])
    out = np.zeros((V, T, h, w) + first.shape[2:], bool if masks else np.uint8)

    def load(item, a=None):
        v, t, p = item
        a = reader(p) if a is None else a
        if a.shape[:2] != (H, W) or a.shape[2:] != first.shape[2:]:
            src = f" ({expected_from})" if expected_from else ""
            raise InputError(f"image is {a.shape[1]}x{a.shape[0]}, expected {W}x{H}{src}", p, "size")
        out[v, t] = resize_mask(a, (h, w)) if masks else resize_rgb(a, (h, w))

    load(flat[0], first)
    workers = max(1, min(8, os.cpu_count() or 1, len(flat)))
    pool = ThreadPoolExecutor(workers)
    try:
        for fut in [pool.submit(load, item) for item in flat[1:]]:
            fut.result()  # re-raises the first failure in grid order
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return out


def central_camera(w2c: np.ndarray) -> int:
    """Index of the camera ``w2c [V, 4, 4]`` (world-to-camera) whose centre is nearest the mean centre."""
    import numpy as np

    w2c = np.asarray(w2c, dtype=np.float64)
    centres = -np.einsum("vji,vj->vi", w2c[:, :3, :3], w2c[:, :3, 3])  # -R^T t
    return int(np.argmin(np.linalg.norm(centres - centres.mean(axis=0), axis=1)))


def rescale(grid: FrameGrid, scale: float) -> FrameGrid:
    """Resize images (area), masks (nearest), intrinsics and image-aligned extras by ``scale``."""
    import cv2
    import numpy as np

    V, T, H, W = grid.shape
    h, w = scaled_size(H, W, scale)
    sx, sy = w / W, h / H
    imgs = np.stack([np.stack([resize_rgb(grid.images[v, t], (h, w)) for t in range(T)]) for v in range(V)])
    masks = None
    if grid.masks is not None:
        masks = np.stack([np.stack([resize_mask(grid.masks[v, t], (h, w)) for t in range(T)]) for v in range(V)])
    K = scale_intrinsics(grid.cameras.K, sx, sy)
    extras = {}
    for k, a in grid.extras.items():
        if a.shape[2:4] == (H, W):
            extras[k] = np.stack(
                [np.stack([cv2.resize(a[v, t], (w, h), interpolation=cv2.INTER_NEAREST) for t in range(T)]) for v in range(V)]
            )
        else:  # not image-aligned (e.g. per-frame vectors): unchanged by a resize
            extras[k] = a
    from recon.grid import Cameras

    return FrameGrid(
        images=imgs, cameras=Cameras(K=K, w2c=grid.cameras.w2c), times=grid.times, masks=masks, ref_time=grid.ref_time,
        central_view=grid.central_view, view_names=grid.view_names, meta={**grid.meta, "scale": scale}, extras=extras,
        source=grid.source,
    )
