"""Train the grid generator (recon.diffusion) on procedural scenes and pseudo-4D grids.

Examples (CPU, one thread; see BENCHMARKS.md, section Diffusion, for the runs behind the bundled
checkpoint)::

    # base stage: video model on single-axis clips
    python tools/train_diffusion.py --out runs/diffusion/base --base-steps 600
    # grid stage from the base checkpoint: pseudo-4D pre-training, then procedural grids
    python tools/train_diffusion.py --out runs/diffusion/learned --init-from runs/diffusion/base/checkpoint \
        --pseudo-steps 200 --grid-steps 600 --model.sync learned

A run folder is resumed when it already holds state.pt (``--no-resume`` starts over).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tyro  # noqa: E402
from rich.console import Console  # noqa: E402

from recon.diffusion.train import TrainConfig, train  # noqa: E402
from recon.errors import InputError  # noqa: E402


def main() -> int:
    cfg = tyro.cli(TrainConfig, description=__doc__.split("\n")[0])
    con = Console()
    total = cfg.base_steps + cfg.pseudo_steps + cfg.grid_steps

    def progress(rec: dict) -> None:
        con.print(f"[{rec['phase']:>6}] step {rec['step']:>6}/{total}  loss {rec['loss']:.4f}  lr {rec['lr']:.2e}  {rec['elapsed_s']:.0f}s")

    try:
        train(cfg, progress)
    except InputError as e:
        print(f"train_diffusion: error: {e}", file=sys.stderr)
        return 2
    con.print(f"checkpoint: {Path(cfg.out) / 'checkpoint'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
