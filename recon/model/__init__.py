"""The reconstruction's model: isotropic canonical splats and the deformation field.

* :class:`Splats` (``splats``): means, one log-scale, opacity logit, RGB per Gaussian;
* :class:`DeformField` (``deform``): ``dp_ij = dp_i^v + dp_j^t``, temporal MLP + per-view offsets.
"""

from recon.model.deform import DeformField, positional_encoding
from recon.model.splats import Splats, neighbour_log_scales

__all__ = ["DeformField", "Splats", "neighbour_log_scales", "positional_encoding"]
