"""Time one deform-stage training step on a saved scene: render 3 cells of one time, the
photometric loss against a random target, backward, a fused Adam step. Not a test.

The scene is a run's ``checkpoints/deform.safetensors`` (its Gaussian count, image size and
temporal MLP are what a late step of that fit costs). Prints the median of ``--steps`` timed steps
after ``--warmup``. ``--split`` runs torch's ops on one thread and only the compiled kernels on
``--threads`` (``recon._C.set_kernel_threads``), the variant BENCHMARKS.md measured and dropped.

Example::

    python tools/bench_fit_step.py runs/sample/checkpoints/deform.safetensors --threads 2
    python tools/bench_fit_step.py runs/sample/checkpoints/deform.safetensors --threads 2 --split
    python tools/bench_fit_step.py RUN/checkpoints/deform.safetensors --cells 1 --no-cull --concat-time

``--no-cull`` renders every splat at every time (a scene with lifespans otherwise leaves out the ones
whose opacity then is below 1/255, ``DeformableScene.alive_rows``); ``--life-cull`` leaves out only
those whose lifespan factor alone is below 1/255 (the first criterion); ``--concat-time`` evaluates the temporal MLP on
``[PE(x), PE(t)]`` per point, as before its time columns became a shared bias (the same function).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("scene", type=Path, help="a DeformableScene .safetensors (a run's checkpoints/deform.safetensors)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--split", action="store_true", help="torch on 1 thread, the compiled kernels on --threads")
    ap.add_argument("--cells", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--no-cull", action="store_true", help="render the splats not alive at a time too")
    ap.add_argument("--life-cull", action="store_true", help="leave out only the splats whose lifespan factor is below 1/255")
    ap.add_argument("--concat-time", action="store_true", help="the MLP on [PE(x), PE(t)] per point (the former way)")
    args = ap.parse_args()

    from recon import _C  # type: ignore[attr-defined]  # the compiled kernels (set_kernel_threads); after torch
    from recon.fit.losses import photometric_loss
    from recon.model.scene import DeformableScene

    torch.set_num_threads(1 if args.split else args.threads)
    _C.set_kernel_threads(args.threads if args.split else 0)
    scene = DeformableScene.load(args.scene)
    sp = scene.splats
    if args.no_cull:
        scene.alive_rows = lambda j: None
    elif args.life_cull and scene.field.has_lifespan:
        from recon.model.scene import LIFE_MIN

        def life_rows(j: int):
            with torch.no_grad():
                alive = scene.field.life(scene.times[j]) >= LIFE_MIN
            return None if bool(alive.all()) else alive.nonzero().squeeze(1)

        scene.alive_rows = life_rows
    if args.concat_time:
        from recon.model.deform import positional_encoding

        f = scene.field

        def concat_time_offset(means: torch.Tensor, t) -> torch.Tensor:
            x = (means - f.center) / f.radius
            tt = f.norm_time(t).reshape(1, 1).expand(means.shape[0], 1)
            return f.mlp(torch.cat([positional_encoding(x, f.pos_freqs), positional_encoding(tt, f.time_freqs)], -1)) * f.radius

        f.time_offset = concat_time_offset
    params = [sp.means, sp.colors, sp.opacity_logits, sp.log_scales, *scene.field.mlp.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=1e-4, eps=1e-15, fused=True)
    V, T = scene.num_views, scene.num_times
    g = torch.Generator().manual_seed(0)

    def step() -> float:
        j = int(torch.randint(T, (1,), generator=g))
        cells = [(int(v), j) for v in torch.randperm(V, generator=g)[: args.cells]]
        t0 = time.perf_counter()
        rgb, _, _, _ = scene.render(cells, backend=args.backend)
        loss = photometric_loss(rgb, torch.rand(rgb.shape, generator=g), 0.2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    for _ in range(args.warmup):
        step()
    times = [step() for _ in range(args.steps)]
    mode = f"torch 1 / kernels {args.threads} threads" if args.split else f"{args.threads} threads"
    mode += ", no cull" if args.no_cull else (", life cull" if args.life_cull else "")
    mode += ", time concatenated" if args.concat_time else ""
    print(f"{args.scene}: N={sp.num}, {args.cells} cells of {scene.size[0]}x{scene.size[1]}, {mode}: "
          f"median {1000 * statistics.median(times):.1f} ms per step (min {1000 * min(times):.1f}, {args.steps} steps)")


if __name__ == "__main__":
    main()
