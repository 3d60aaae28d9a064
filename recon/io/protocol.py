"""Train/test protocols of multi-split datasets: one grid holding the training split's cameras and
the evaluation split's cameras, and which views are the evaluation cameras.

``load_protocol(path, options, "test")`` for a Panoptic / Dynamic-3DGS capture reads
``train_meta.json`` and ``test_meta.json`` together (merged by camera id, as ``--split all``
does) and returns the views of the test cameras; the pipeline then holds those views out at
every frame, so they are never trained on (and, being unseen at the reference time, never
tracked either) and are rendered from their given cameras -- the protocol of Dynamic 3D
Gaussians (train on the 27 training cameras, test on the others at every frame).

Both splits must describe the same rig: the same image size and time steps (checked by the
Panoptic reader, naming the file and field), valid poses and existing images.

For a D-NeRF-layout folder (``transforms_train.json`` and ``transforms_<eval_split>.json``, one
camera image per time: a *monocular* grid) the evaluation frames are the evaluation split's
images at *their* times: both splits are read as monocular grids and merged into one V = 1 grid
ordered by time (``meta["time_split"]`` says which split each time belongs to), and the
evaluation times are held out (``{"times": [...]}`` in the returned protocol). ``--frames``
selects training frames; evaluation frames outside the selected training time range are left
out. The splits must agree on image size and camera model, and every evaluation time must lie in
the training time range give or take :data:`EXTRAPOLATION` of its length (a deformation field
cannot extrapolate far; the MuJoCo D-NeRF scenes put their last test frames up to 1.8 % past the
last training frame), else an InputError names the evaluation json and the frame's field. How many
evaluation frames lie outside the training range is recorded (``meta["extrapolated_frames"]``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from recon.errors import InputError
from recon.grid import FrameGrid
from recon.io import READERS, LoadOptions, detect_kind
EXTRAPOLATION = 0.05
"""Evaluation times may lie outside the training time range by this fraction of its length."""


def load_protocol(path: str | os.PathLike, options: LoadOptions, eval_split: str) -> tuple[FrameGrid, dict[str, Any]]:
    """Read ``path`` with the cameras of ``options.split`` (training) and of ``eval_split``
    (evaluation); returns the grid and ``{"split", "train_split", "views", "camera_ids"}`` where
    ``views`` are the grid's view indices of the evaluation cameras."""
    options.check()
    kind = detect_kind(path)
    if READERS[kind].protocol is None:
        kinds = ", ".join(k for k, r in READERS.items() if r.protocol is not None)
        raise InputError(f"--eval-split is supported for {kinds} inputs, not {kind} "
                         "(use --holdout views=...,times=... to hold out cells)", path, "--eval-split")
    train = (options.split or "train").lower()
    ev = eval_split.lower()
    if ev == train:
        raise InputError(f"the evaluation split {ev!r} is also the training split", path, "--eval-split")
    return READERS[kind].protocol(Path(path), options, train, ev)


def dnerf_protocol(root: Path, options: LoadOptions, train: str, ev: str) -> tuple[FrameGrid, dict[str, Any]]:
    """The D-NeRF protocol (module docstring): train split + evaluation split as one monocular grid."""
    import numpy as np

    from recon.grid import Cameras
    from recon.io.nerfstudio import read_transforms

    if root.is_file():
        root = root.parent
    src = {s: root / f"transforms_{s}.json" for s in (train, ev)}
    missing = [f.name for f in src.values() if not f.is_file()]
    if missing:
        raise InputError(f"missing {' and '.join(missing)}: --eval-split {ev} with transforms json needs the D-NeRF "
                         f"layout (transforms_{train}.json and transforms_{ev}.json side by side)", root, "--eval-split")
    if options.views is not None:
        raise InputError("--views does not apply to the D-NeRF protocol (one camera per time)", root, "--views")
    tr = read_transforms(src[train], dataclasses.replace(options, views=None))
    te = read_transforms(src[ev], dataclasses.replace(options, views=None, frames=None))
    for g, f in ((tr, src[train]), (te, src[ev])):
        if g.meta.get("grouping") != "monocular":
            raise InputError(f"--eval-split for transforms json needs a monocular layout (one image per time, as "
                             f"D-NeRF), but the frames group as {g.meta.get('grouping')!r}", f, "frames")
        if g.cameras.w2c is None:
            raise InputError("camera poses are needed", f, "frames")
    ev_src = src[ev]
    if tr.meta["image_size"] != te.meta["image_size"]:
        (w0, h0), (w1, h1) = tr.meta["image_size"], te.meta["image_size"]
        raise InputError(f"images are {w1}x{h1}, but the {train} split's are {w0}x{h0} (the splits must share one size)",
                         ev_src, f"frames[0].w/h ({te.meta['frame_files'][0][0]})")
    if tr.meta["camera_model"] != te.meta["camera_model"]:
        raise InputError(f"camera model {te.meta['camera_model']} differs from the {train} split's {tr.meta['camera_model']}",
                         ev_src, "camera_model")
    lo, hi = float(tr.times.min()), float(tr.times.max())
    slack = EXTRAPOLATION * (hi - lo) + 1e-9
    inside = [(lo - slack) <= t <= (hi + slack) for t in te.times]
    if options.frames is None and not all(inside):
        k = inside.index(False)
        raise InputError(f"time {te.times[k]:g} lies outside the {train} split's time range [{lo:g}, {hi:g}] by more "
                         f"than {EXTRAPOLATION:.0%} of it (a deformation field cannot extrapolate)", ev_src,
                         f"frames[{te.meta['frame_index'][0][k]}].time")
    keep = [k for k, ok in enumerate(inside) if ok]
    if not keep:
        raise InputError(f"no {ev} frame lies in the selected training time range [{lo:g}, {hi:g}]", ev_src, "--frames")
    te = te.subset(times=keep)
    times = np.concatenate([tr.times, te.times])
    split = [train] * tr.num_times + [ev] * te.num_times
    order = np.argsort(times, kind="stable")
    cat = lambda a, b: np.concatenate([a, b], axis=1)[:, order]  # noqa: E731
    masks = cat(tr.masks, te.masks) if tr.masks is not None and te.masks is not None else None
    files = [f"transforms_{train}.json:{f}" for f in tr.meta["frame_files"][0]] + \
            [f"transforms_{ev}.json:{f}" for f in te.meta["frame_files"][0]]
    held = [k for k, o in enumerate(order) if split[o] == ev]
    train_times = [k for k, o in enumerate(order) if split[o] == train]
    mid = float(np.median(tr.times))
    ref = min(train_times, key=lambda k: abs(times[order[k]] - mid))  # the canonical frame: a training frame mid-sequence
    meta = dict(tr.meta)
    meta.update(extrapolated_frames=int(sum(not lo <= t <= hi for t in te.times)))
    meta.update(source=str(root), time_split=[split[o] for o in order], frame_files=[[files[o] for o in order]],
                protocol={"train_split": train, "eval_split": ev})
    meta.pop("frame_index", None)
    grid = FrameGrid(images=np.ascontiguousarray(cat(tr.images, te.images)),
                     cameras=Cameras(K=cat(tr.cameras.K, te.cameras.K), w2c=cat(tr.cameras.w2c, te.cameras.w2c)),
                     times=times[order], masks=masks, ref_time=ref, central_view=0, view_names=["camera"], meta=meta,
                     source=str(src[train]))
    return grid, {"split": ev, "train_split": train, "views": [0], "times": held,
                  "images": [files[order[k]] for k in held]}


def panoptic_protocol(root: Path, options: LoadOptions, train: str, ev: str) -> tuple[FrameGrid, dict[str, Any]]:
    from recon.io.panoptic import _Split, read_panoptic

    if ev not in ("train", "test") or train not in ("train", "test"):
        raise InputError(f"Panoptic splits are train and test; got --split {train!r}, --eval-split {ev!r}", root,
                         "--eval-split")
    meta = root / f"{ev}_meta.json"
    if not meta.is_file():
        raise InputError(f"missing {meta.name} (needed for --eval-split {ev})", meta)
    eval_ids = _Split(meta).ids
    views = options.views
    if views is not None:  # camera ids of the training cameras to use: the evaluation cameras come too
        views = list(views) + [i for i in eval_ids if i not in views]
    grid = read_panoptic(root, dataclasses.replace(options, split="all", views=views))
    split_of = grid.meta["view_split"]
    held = [v for v, s in enumerate(split_of) if s == ev]
    if len(held) == len(split_of):
        raise InputError(f"no {train} cameras selected; every view is in the evaluation split", root, "--views")
    ids = grid.meta["camera_ids"]
    trained = [v for v in range(len(split_of)) if v not in held]
    if grid.central_view in held:  # the canonical frame must be a trained camera's
        from recon.io import central_camera

        grid.central_view = trained[central_camera(grid.cameras.w2c[trained, grid.ref_time])]
    grid.meta["protocol"] = {"train_split": train, "eval_split": ev}
    return grid, {"split": ev, "train_split": train, "views": held, "camera_ids": [ids[v] for v in held]}
