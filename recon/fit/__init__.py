"""The fitting stages of the reconstruction and their losses.

* :mod:`.canonical`: tracks -> canonical isotropic splats, poses, per-view offsets dp_i^v;
* :mod:`.prune`: floater pruning by re-rendering the freeze-time frames in their own coordinates;
* :mod:`.deform`: temporal deformation field fitted on the grid (plus splat fine-tuning);
* :mod:`.losses`: L1 + SSIM loss, PSNR / SSIM metrics; :mod:`.schedule`: schedules, batching.
"""

from recon.fit.canonical import Canonical, CanonicalConfig, build_canonical
from recon.fit.deform import DeformConfig, fit_deform, scene_from_canonical
from recon.fit.losses import photometric_loss, psnr, ssim
from recon.fit.prune import PruneConfig, prune_floaters

__all__ = [
    "Canonical", "CanonicalConfig", "DeformConfig", "PruneConfig", "build_canonical", "fit_deform",
    "photometric_loss", "prune_floaters", "psnr", "scene_from_canonical", "ssim",
]
