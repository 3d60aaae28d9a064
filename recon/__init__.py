"""recon: multi-view x multi-time frame grids to deformable 4D isotropic Gaussian splats."""

__version__ = "0.1.0"

from recon.errors import InputError  # noqa: E402
from recon.grid import Cameras, FrameGrid  # noqa: E402

__all__ = ["Cameras", "FrameGrid", "InputError", "__version__"]
