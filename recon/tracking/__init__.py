"""Depth providers, camera estimation, dense 3D tracking and alignment to the central frame.

Entry points:

* :func:`build_tracks` (``build``): the tracking stage for the pipeline -> :class:`Tracks`;
* :func:`estimate_depth` (``depth``): z-depth per grid cell, providers ``gt`` | ``mvs`` | ``file``;
* :func:`estimate_cameras` (``cameras``): poses of the freeze-time frames when none are given;
* :func:`umeyama` (``align``): rigid / similarity fit of corresponding points;
* :func:`read_tracks` / :func:`write_tracks` (``trackio``): tracks files (ours, DELTA's).
"""

from recon.tracking.align import umeyama
from recon.tracking.build import build_tracks
from recon.tracking.cameras import CameraEstimate, estimate_cameras
from recon.tracking.depth import estimate_depth
from recon.tracking.trackio import read_tracks, write_tracks
from recon.tracking.types import Tracks

__all__ = [
    "CameraEstimate",
    "Tracks",
    "build_tracks",
    "estimate_cameras",
    "estimate_depth",
    "read_tracks",
    "umeyama",
    "write_tracks",
]
