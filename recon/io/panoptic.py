"""CMU Panoptic captures as preprocessed for Dynamic 3D Gaussians (Luiten et al. 2024).

Layout::

    ROOT/train_meta.json, ROOT/test_meta.json   cameras and file names per split
    ROOT/ims/<cam>/<frame:06d>.jpg              RGB frames
    ROOT/seg/<cam>/<frame:06d>.png              foreground masks (training cameras only)

Each meta json holds ``w``, ``h`` (image size, pixels) and, for every time step ``t`` and camera
slot ``c``: ``k[t][c]`` (3x3 intrinsics, pixels), ``w2c[t][c]`` (4x4 world-to-camera, OpenCV: x
right, y down, z forward), ``fn[t][c]`` (image path relative to ``ims/``) and ``cam_id[t][c]``.

How it maps onto a :class:`~recon.grid.FrameGrid`:

* views are cameras, ordered by camera id; ``view_names`` are the ids as strings;
  ``meta["view_split"]`` says which split each view came from;
* :attr:`LoadOptions.views` holds **camera ids** for this reader (not indices), in the order wanted;
* :attr:`LoadOptions.split`: ``train``, ``test`` or ``all`` (both, merged by camera id);
* :attr:`LoadOptions.frames` slices the json's time steps; ``times = t / fps`` with the capture's
  30 fps (``meta["fps"]``, ``meta["frame_indices"]`` keeps the original t);
* ``ref_time`` is the first selected time; ``central_view`` the camera whose centre is nearest the
  mean camera centre;
* masks are read for the selected cameras that have a ``seg/<cam>`` folder (the test cameras have
  none: their masks are all False); ``meta["mask_views"]`` lists the views with masks and
  ``meta["masks"]`` says where they came from;
* :attr:`LoadOptions.scale` resizes each image right after decoding and scales ``K``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from recon import schema as S
from recon.errors import InputError
from recon.grid import Cameras, FrameGrid
from recon.io import LoadOptions, central_camera, parse_frames, read_image_grid, scale_intrinsics, scaled_size

FPS = 30.0
"""Frame rate of the Panoptic Studio HD cameras."""
SPLITS = {"train": ("train",), "test": ("test",), "all": ("train", "test"), "both": ("train", "test")}


META_HEAD = S.Obj({"w": S.Int(min=1, max=1 << 16), "h": S.Int(min=1, max=1 << 16),
                   **{key: S.List(min_len=1) for key in ("k", "w2c", "fn", "cam_id")}})
"""The top level of a meta json (one list entry per time step; the entries are checked below)."""


class _Split:
    """One validated meta json: ``K [T,C,3,3]``, ``w2c [T,C,4,4]``, ``fn`` (T lists of C names), ``ids [C]``."""

    def __init__(self, src: Path) -> None:
        self.src = src
        m = S.read_json(src, META_HEAD, "Panoptic meta json")
        self.w, self.h = int(m["w"]), int(m["h"])
        T = len(m["k"])
        for key in ("w2c", "fn", "cam_id"):
            if len(m[key]) != T:
                raise InputError(f"has {len(m[key])} time steps, k has {T}", src, key)
        C = None
        for key in ("k", "w2c", "fn", "cam_id"):
            for t, row in enumerate(m[key]):
                if not isinstance(row, list):
                    raise InputError("expected a list (one entry per camera)", src, f"{key}[{t}]")
                C = len(row) if C is None else C
                if len(row) != C or C == 0:
                    raise InputError(f"has {len(row)} cameras, expected {C} (the same count at every time step)", src, f"{key}[{t}]")
        self.T, self.C = T, int(C)
        self.K = self._matrices(m["k"], 3, "k")
        self.w2c = self._matrices(m["w2c"], 4, "w2c")
        ids0 = m["cam_id"][0]
        for c, i in enumerate(ids0):
            if not isinstance(i, int) or isinstance(i, bool):
                raise InputError(f"expected an integer camera id, got {i!r}", src, f"cam_id[0][{c}]")
        if len(set(ids0)) != len(ids0):
            raise InputError("duplicate camera ids", src, "cam_id[0]")
        for t, row in enumerate(m["cam_id"]):
            if row != ids0:
                raise InputError(f"camera ids {row} differ from time 0's {ids0}", src, f"cam_id[{t}]")
        for t, row in enumerate(m["fn"]):
            for c, f in enumerate(row):
                S.PathStr().check(f, src, f"fn[{t}][{c}]")
        self.fn: list[list[str]] = m["fn"]
        self.ids: list[int] = list(ids0)

    def _matrices(self, val: list, n: int, key: str) -> np.ndarray:
        for t, row in enumerate(val):  # entry by entry, so the message names the bad one
            for c, x in enumerate(row):
                S.Array((n, n), finite=False).check(x, self.src, f"{key}[{t}][{c}]")
        a = np.asarray(val, dtype=np.float64)
        bad = np.argwhere(~np.isfinite(a).all(axis=(2, 3)))
        if len(bad):
            t, c = bad[0]
            raise InputError("contains NaN or inf", self.src, f"{key}[{t}][{c}]")
        if n == 4:
            S.check_poses(a, self.src, key)
        if n == 3:
            det = np.abs(np.linalg.det(a))
            bad = np.argwhere((det < 1e-12) | (np.abs(a[..., 0, 0]) < 1e-8) | (np.abs(a[..., 1, 1]) < 1e-8))
            if len(bad):
                t, c = bad[0]
                raise InputError("singular intrinsics (zero focal length)", self.src, f"{key}[{t}][{c}]")
        return a


def read_panoptic(path: str | os.PathLike, options: LoadOptions | None = None) -> FrameGrid:
    """Read a Dynamic-3DGS / Panoptic folder into a FrameGrid (see the module docstring).

    Only the selected cameras and frames are decoded. Raises :class:`InputError` naming the file
    and field for missing or malformed json fields, NaN or singular cameras, a camera count that
    changes over time, unknown camera ids, and missing or wrongly sized image files.
    """
    options = (options or LoadOptions()).check()
    root = Path(path)
    if not root.is_dir():
        raise InputError("path does not exist" if not root.exists() else "expected a Panoptic folder", root)
    split = (options.split or "train").lower()
    if split not in SPLITS:
        raise InputError(f"unknown split {options.split!r} for Panoptic; expected train, test or all", root, "--split")
    metas: list[tuple[str, _Split]] = []
    for name in SPLITS[split]:
        f = root / f"{name}_meta.json"
        if not f.is_file():
            raise InputError(f"missing {f.name} (needed for split {split!r})", f)
        metas.append((name, _Split(f)))
    first = metas[0][1]
    for name, s in metas[1:]:
        if (s.w, s.h) != (first.w, first.h):
            raise InputError(f"image size {s.w}x{s.h} differs from {first.src.name}'s {first.w}x{first.h}", s.src, "w/h")
        if s.T != first.T:
            raise InputError(f"{s.T} time steps, {first.src.name} has {first.T}", s.src, "k")

    # camera id -> (split name, meta, slot)
    cams: dict[int, tuple[str, _Split, int]] = {}
    for name, s in metas:
        for c, i in enumerate(s.ids):
            if i in cams:
                raise InputError(f"camera {i} appears in both {cams[i][1].src.name} and {s.src.name}", s.src, "cam_id")
            cams[i] = (name, s, c)
    if options.views is None:
        ids = sorted(cams)
    else:
        ids = list(options.views)
        unknown = [i for i in ids if i not in cams]
        if unknown:
            raise InputError(f"camera ids {unknown} not in split {split!r} (available: {sorted(cams)})", root, "--views")
        if len(set(ids)) != len(ids):
            raise InputError(f"camera ids repeat in {ids}", root, "--views")
    frames = parse_frames(options.frames, first.T)

    K = np.stack([cams[i][1].K[frames, cams[i][2]] for i in ids])  # [V, T, 3, 3]
    w2c = np.stack([cams[i][1].w2c[frames, cams[i][2]] for i in ids])  # [V, T, 4, 4]
    im_paths = [[root / "ims" / cams[i][1].fn[t][cams[i][2]] for t in frames] for i in ids]
    for v, i in enumerate(ids):
        if not im_paths[v][0].parent.is_dir():
            raise InputError(f"missing image folder of camera {i}", im_paths[v][0].parent)
        for t, p in zip(frames, im_paths[v]):
            if not p.is_file():
                raise InputError(f"missing image of camera {i} at time step {t} (named by fn[{t}])", p)
    size_from = f"w, h of {first.src.name}"
    images = read_image_grid(im_paths, options.scale, (first.h, first.w), size_from)

    seg_dirs = [root / "seg" / str(i) for i in ids]
    with_seg = [v for v, d in enumerate(seg_dirs) if d.is_dir()]
    no_seg = [i for i, d in zip(ids, seg_dirs) if not d.is_dir()]
    masks = None
    mask_note = "read from seg/"
    if with_seg:
        mask_paths = [[seg_dirs[v] / Path(cams[ids[v]][1].fn[t][cams[ids[v]][2]]).with_suffix(".png").name for t in frames]
                      for v in with_seg]
        for row in mask_paths:
            for p in row:
                if not p.is_file():
                    raise InputError("missing mask file (the camera's seg/ folder exists)", p)
        read = read_image_grid(mask_paths, options.scale, (first.h, first.w), size_from, masks=True)
        if no_seg:  # e.g. the test cameras: no masks there (all False), meta says which views have them
            masks = np.zeros((len(ids),) + read.shape[1:], bool)
            masks[with_seg] = read
            mask_note = f"read from seg/ for {len(with_seg)} cameras; none for cameras {no_seg} (all False there)"
        else:
            masks = read
    else:
        mask_note = "left out: no seg/ folders"
    h, w = scaled_size(first.h, first.w, options.scale)
    K = scale_intrinsics(K, w / first.w, h / first.h)
    central = central_camera(w2c[:, 0])  # at the reference time
    meta: dict[str, Any] = {
        "source": str(root),
        "kind": "panoptic",
        "fps": FPS,
        "time_unit": "s",
        "split": split,
        "camera_ids": ids,
        "view_split": [cams[i][0] for i in ids],
        "frame_indices": frames,
        "masks": mask_note,
        "mask_views": with_seg,
        "scale": options.scale,
        "original_size": [first.w, first.h],
    }
    return FrameGrid(
        images=images,
        cameras=Cameras(K=K, w2c=w2c),
        times=np.asarray(frames, dtype=np.float64) / FPS,
        masks=masks,
        ref_time=0,
        central_view=central,
        view_names=[str(i) for i in ids],
        meta=meta,
        source=str(first.src),
    )
