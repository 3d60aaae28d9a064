"""Artefacts passed between the tracking stage and the canonical / deformation stages.

Frame indexing: a grid cell is (view i, time j). The freeze-time frames are the cells
(i, ref_time) for all views i. "Frame coordinates" of cell (i, j) are that camera's coordinates
(OpenCV: x right, y down, z forward), in which the frame is re-rendered with an identity
extrinsic and its own intrinsics ``K[i, j]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Tracks:
    """Dense 3D point tracks across the freeze-time frames (and optionally across time).

    P tracked points, V views (freeze-time frames), T times.
    """

    points: torch.Tensor
    """[P, V, 3] float32: position of each point in the camera coordinates of freeze-time frame (i, ref_time)."""
    visible: torch.Tensor
    """[P, V] bool: the point is observed (tracked, not occluded, depth valid) in that frame."""
    colors: torch.Tensor
    """[P, 3] float32 in [0, 1]: colour sampled where the track was seeded."""
    seed_view: torch.Tensor
    """[P] int64: the keyframe view the track was seeded in."""
    time_points: torch.Tensor | None = None
    """Optional [P, T, 3]: position over time in the central view's camera coordinates; None when
    only freeze-time tracks exist. No pipeline stage reads them (the temporal MLP is fitted by the
    rendering loss), so the pipeline does not compute them; ``build_tracks(with_time=True)`` does,
    for analysis and for tracks files."""
    time_visible: torch.Tensor | None = None
    """Optional [P, T] bool, visibility for ``time_points``."""
    source: str = ""
    """The track source that made them (``gt``, ``flow``, ``rig``, ``file``; after ``auto`` resolution)."""

    def __post_init__(self) -> None:
        P, V, _ = self.points.shape
        assert self.visible.shape == (P, V), f"visible {tuple(self.visible.shape)} != {(P, V)}"
        assert self.colors.shape == (P, 3), f"colors {tuple(self.colors.shape)} != {(P, 3)}"
        assert self.seed_view.shape == (P,), f"seed_view {tuple(self.seed_view.shape)} != {(P,)}"

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors of the tracks checkpoint (bool as uint8; time tracks when present)."""
        t = {"points": self.points, "visible": self.visible.to(torch.uint8), "colors": self.colors,
             "seed_view": self.seed_view}
        if self.time_points is not None:
            t["time_points"] = self.time_points
            t["time_visible"] = self.time_visible.to(torch.uint8)
        return t

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor], source: str = "") -> "Tracks":
        """Inverse of :meth:`tensors`."""
        return cls(points=t["points"], visible=t["visible"].bool(), colors=t["colors"], seed_view=t["seed_view"],
                   time_points=t.get("time_points"),
                   time_visible=t["time_visible"].bool() if "time_visible" in t else None, source=source)

    @property
    def num_points(self) -> int:
        return int(self.points.shape[0])

    @property
    def num_views(self) -> int:
        return int(self.points.shape[1])
