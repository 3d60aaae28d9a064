"""The bundled 4D video generator: a grid video transformer with synchronised cross-view / cross-time
attention, trained with rectified flow, that fills a V x T frame grid from a reference video (first
row) and a freeze-time video (first column).

Public API: :class:`GridTransformer` (a diffusers ``ModelMixin``), :func:`load_generator`,
:func:`fill_grid`, :func:`sample`, :func:`pseudo4d_grid`; training in :mod:`recon.diffusion.train`,
metrics in :mod:`recon.diffusion.metrics`.
"""

from recon.diffusion.checkpoint import BUNDLED, load_generator, save_checkpoint
from recon.diffusion.data import pseudo4d_grid
from recon.diffusion.model import GridTransformer
from recon.diffusion.sampler import fill_grid, sample

__all__ = ["BUNDLED", "GridTransformer", "fill_grid", "load_generator", "pseudo4d_grid", "sample", "save_checkpoint"]
