"""Evaluate grid generators on held-out procedural scenes (seeds never used in training).

For each variant and seed: render the ground-truth grid (scene ``random``), give the generator its
first row and first column, and measure on the generated cells

* ``psnr``: PSNR (dB) against the ground truth, pooled over the generated cells;
* ``mv_err``: multi-view consistency error: mean absolute colour difference (0..1) between pixels of
  two views at the same time that see the same scene point (ground-truth depth + cameras);

next to the same numbers for two trivial baselines: ``copy_nearest`` copies the nearest given frame
(grid distance), ``copy_same_view`` copies the nearest given frame of the cell's own view (for the 4D
task: the freeze-time frame of its view, the anchor of ``anchor="same_view"`` models); and the
consistency error of the ground truth itself (the resampling floor).

Variants are ``NAME=DIR`` (a trained checkpoint) or ``NAME=DIR:key=value,...`` to rebuild a base-stage
checkpoint with other settings, untrained (e.g. ``hard-untrained=runs/base/checkpoint:sync=hard``;
the cross-view attention inherits the base model's cross-time weights).

    python tools/eval_diffusion.py --variants learned=data/diffusion --seeds 0 1 2 --out runs/eval.json
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import tyro  # noqa: E402

from recon.diffusion.checkpoint import load_generator, load_weights_into  # noqa: E402
from recon.diffusion.data import downsample, grid_task_mask, to_model_range  # noqa: E402
from recon.diffusion.metrics import copy_nearest_baseline, multiview_consistency, psnr_generated  # noqa: E402
from recon.diffusion.model import GridTransformer  # noqa: E402
from recon.diffusion.sampler import fill_grid  # noqa: E402


@dataclass
class EvalConfig:
    variants: list[str]
    """NAME=DIR or NAME=DIR:key=value,... (untrained rebuild of a base checkpoint)."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Held-out scene seeds (training uses 1000 and up)."""
    scene: str = "random"
    render_size: int = 32
    steps: int = 20
    start_sigma: float = 1.0
    """Noise level the sampler starts from (1: pure noise; below: the noised anchor frames)."""
    frames: int | None = None
    """Time steps T of the evaluated grids (default: the model's chunk; more: autoregressive extension)."""
    context: int = 1
    """Time steps carried between chunks when extending."""
    threads: int = 1
    out: Path | None = None
    """Write the results as JSON here."""
    notes_into: Path | None = None
    """Also record the first variant's mean metrics in this checkpoint's recon.json (under notes_key)."""
    notes_key: str = "metrics"


def build_variant(spec: str) -> tuple[str, GridTransformer]:
    name, _, rest = spec.partition("=")
    path, _, opts = rest.partition(":")
    if not opts:
        return name, load_generator(path)
    cfg = dict(GridTransformer.load_config(path))
    for kv in opts.split(","):
        k, _, v = kv.partition("=")
        cfg[k] = type(cfg[k])(v) if k in cfg and not isinstance(cfg[k], str) else v
    model = GridTransformer.from_config(cfg)
    load_weights_into(model, path)
    model.inherit_cross_view()
    return name, model.eval()


def truth_grid(scene: str, seed: int, V: int, T: int, render: int, size: int) -> dict:
    """Ground truth at the model size: frames in [0, 1] ``[V, T, H, W, 3]``, depth, K, w2c (scaled)."""
    from recon.synth import make_grid

    g = make_grid(scene=scene, views=V, frames=T, size=(render, render), seed=seed)
    f = render // size
    frames = downsample(to_model_range(g.images), f)  # [V, T, 3, h, w] in [-1, 1]
    S = np.diag([1.0 / f, 1.0 / f, 1.0])
    # depth of the top-left pixel of each f x f block; its centre sits (f - 1) / 2 render pixels off
    return {"frames": frames, "images": (frames.movedim(-3, -1).numpy() + 1) / 2, "depth": g.extras["depth"][:, :, ::f, ::f],
            "K": S @ g.cameras.K, "w2c": g.cameras.w2c}


def main() -> int:
    cfg = tyro.cli(EvalConfig, description=__doc__.split("\n")[0])
    torch.set_num_threads(cfg.threads)
    results: dict[str, dict] = {}
    truths: dict[tuple, dict] = {}
    for spec in cfg.variants:
        name, model = build_variant(spec)
        mc = model.config
        V, T = mc.max_views, cfg.frames or mc.max_times
        given = grid_task_mask(V, T, 1).numpy()
        rows = []
        for seed in cfg.seeds:
            key = (seed, V, T, mc.height)
            if key not in truths:
                truths[key] = truth_grid(cfg.scene, seed, V, T, cfg.render_size, mc.height)
            tr = truths[key]
            t0 = time.time()
            gen = fill_grid(model, tr["frames"][0], tr["frames"][:, 0], steps=cfg.steps, seed=seed, context=cfg.context,
                            start_sigma=cfg.start_sigma)
            secs = time.time() - t0
            pred = (gen.movedim(-3, -1).numpy() + 1) / 2
            base = copy_nearest_baseline(tr["images"], given)
            same = copy_nearest_baseline(tr["images"], given, rule="same_view")
            rows.append({
                "seed": seed,
                "psnr": psnr_generated(pred, tr["images"], given),
                "psnr_copy_nearest": psnr_generated(base, tr["images"], given),
                "psnr_copy_same_view": psnr_generated(same, tr["images"], given),
                "mv_err": multiview_consistency(pred, tr["depth"], tr["K"], tr["w2c"], given),
                "mv_err_copy_nearest": multiview_consistency(base, tr["depth"], tr["K"], tr["w2c"], given),
                "mv_err_copy_same_view": multiview_consistency(same, tr["depth"], tr["K"], tr["w2c"], given),
                "mv_err_truth": multiview_consistency(tr["images"], tr["depth"], tr["K"], tr["w2c"], given),
                "seconds": secs,
            })
        mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "seed"}
        results[name] = {"spec": spec, "mean": mean, "per_seed": rows}
        print(f"{name:>22}: psnr {mean['psnr']:6.2f} dB (copy-nearest {mean['psnr_copy_nearest']:6.2f}, "
              f"copy-same-view {mean['psnr_copy_same_view']:6.2f})  mv_err {mean['mv_err']:.4f} (copy-nearest "
              f"{mean['mv_err_copy_nearest']:.4f}, copy-same-view {mean['mv_err_copy_same_view']:.4f}, truth {mean['mv_err_truth']:.4f})  "
              f"{mean['seconds']:.2f} s/grid", flush=True)
    from recon.io.atomic import write_json

    if cfg.notes_into is not None:
        from recon.diffusion.checkpoint import read_notes

        notes = read_notes(cfg.notes_into)
        first = results[next(iter(results))]
        notes[cfg.notes_key] = {**first["mean"], "seeds": list(cfg.seeds), "scene": cfg.scene, "steps": cfg.steps,
                                "start_sigma": cfg.start_sigma, "frames": cfg.frames, "measured_by": "tools/eval_diffusion.py"}
        write_json(Path(cfg.notes_into) / "recon.json", notes)
    if cfg.out is not None:

        write_json(cfg.out, {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(cfg).items()}, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
