"""``recon bench``: suites, methods and ablations, metrics, and the report.

Modules:

* :mod:`.suites` -- the cases: ``synthetic`` (exact ground truth, clean and inconsistent),
  ``panoptic`` (real capture, held-out cameras 0 and 10), ``generated`` and ``custom`` grids;
* :mod:`.baselines` -- in-house initialisations of the ablations (``pointmap-init``,
  ``no-tracking``) as tracks files the pipeline reads;
* :mod:`.adapters` -- Dust3R / Splatt3R: run a local clone + checkpoint, convert the output into
  our canonical initialisation; "not available (needs ...)" without them;
* :mod:`.metrics` -- PSNR (capped), SSIM, masked PSNR, LPIPS (local weights only), Chamfer,
  3D track error, floater ratio, mask IoU;
* :mod:`.consistency` -- weights-free SfM consistency score (OpenCV) for grids without GT;
* :mod:`.evaluate` -- scoring a fitted scene on a case; :mod:`.cost` -- time, memory, sizes;
* :mod:`.runner` -- methods x cases; :mod:`.report` -- results.json, table.md, plots.
"""

from recon.bench.runner import DEFAULT_METHODS, METHODS, BenchSettings, run_bench
from recon.bench.suites import SUITES, Case, build_cases, suite_options

__all__ = ["DEFAULT_METHODS", "METHODS", "SUITES", "BenchSettings", "Case", "build_cases", "run_bench", "suite_options"]
