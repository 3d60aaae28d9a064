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
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from recon.errors import InputError
from recon.grid import FrameGrid
from recon.io import LoadOptions, detect_kind

PROTOCOL_KINDS = ("panoptic",)
"""Input kinds with a train/test protocol."""


def load_protocol(path: str | os.PathLike, options: LoadOptions, eval_split: str) -> tuple[FrameGrid, dict[str, Any]]:
    """Read ``path`` with the cameras of ``options.split`` (training) and of ``eval_split``
    (evaluation); returns the grid and ``{"split", "train_split", "views", "camera_ids"}`` where
    ``views`` are the grid's view indices of the evaluation cameras."""
    kind = detect_kind(path)
    if kind not in PROTOCOL_KINDS:
        raise InputError(f"--eval-split is supported for {', '.join(PROTOCOL_KINDS)} inputs, not {kind} "
                         "(use --holdout views=...,times=... to hold out cells)", path, "--eval-split")
    train = (options.split or "train").lower()
    ev = eval_split.lower()
    if ev == train:
        raise InputError(f"the evaluation split {ev!r} is also the training split", path, "--eval-split")
    return _panoptic(Path(path), options, train, ev)


def _panoptic(root: Path, options: LoadOptions, train: str, ev: str) -> tuple[FrameGrid, dict[str, Any]]:
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
