"""``recon synth``: render a procedural 4D scene with exact ground truth to a grid folder."""

from __future__ import annotations

from pathlib import Path


def synth(
    out: Path,
    scene: str = "orbit",
    views: int = 8,
    frames: int = 8,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
    inconsistency: float = 0.0,
    supersample: int = 2,
    compact: bool = False,
    overwrite: bool = False,
) -> None:
    """Render a procedural 4D scene (V views on an arc x T times) with GT depth and surface ids.

    Args:
        out: Output grid folder (written atomically).
        scene: Scene name: orbit, bounce, twist, grow, mixed, static, or random (built from --seed);
            see `recon.synth.SCENES`.
        views: Number of camera views V on the arc.
        frames: Number of time steps T.
        size: Image size as H W.
        seed: Random seed (scene variation, random scenes, injected inconsistency).
        inconsistency: Strength in [0, 1] of injected generator-like multi-view inconsistency
            (per-view warps, colour shifts, texture drift); 0 renders a consistent grid.
        supersample: Anti-aliasing: edge pixels average supersample^2 colour samples (1 = off).
        compact: Do not store extras["surface"] (the largest array); it is recomputed exactly
            from depth and object ids by `recon.synth.ensure_ground_truth(grid)`.
        overwrite: Replace an existing output folder.
    """
    from rich.console import Console

    from recon.device import check_seed
    from recon.errors import InputError
    from recon.io.gridfolder import write_grid
    from recon.synth import make_grid

    check_seed(seed)
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError("output already exists (pass --overwrite to replace it)", out)
    if views < 1 or frames < 1:
        raise InputError("views and frames must be >= 1", field="--views/--frames")
    if size[0] < 8 or size[1] < 8:
        raise InputError(f"size must be at least 8x8, got {size[0]}x{size[1]}", field="--size")
    grid = make_grid(scene=scene, views=views, frames=frames, size=size, seed=seed, inconsistency=inconsistency, supersample=supersample)
    if compact:
        del grid.extras["surface"]
        grid.meta["synth"]["surface"] = "not stored: recon.synth.ensure_ground_truth(grid) recomputes it"
    write_grid(grid, out)
    Console().print(f"wrote {grid.num_views}x{grid.num_times} grid ({grid.height}x{grid.width}) of scene [bold]{scene}[/] to {out}")
