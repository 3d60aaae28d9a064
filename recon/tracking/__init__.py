"""Depth providers, camera estimation, dense 3D tracking and alignment to the central frame."""

from recon.tracking.types import Tracks

__all__ = ["Tracks"]
