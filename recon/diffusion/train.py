"""Training the grid generator: rectified-flow loss, EMA, the base / pseudo-4D / grid stages, resume.

A run folder holds ``train.json`` (the :class:`TrainConfig`), ``log.jsonl`` (one line per logged
step), ``state.pt`` (model, EMA, optimiser, step: for ``resume``), ``samples/step_XXXXXX.png``
(sample sheets: given frames / generated / ground truth) and ``checkpoint/`` (EMA weights as
``save_pretrained`` writes them: ``config.json`` + ``diffusion_pytorch_model.safetensors``).

Stages (seed section 1.1): ``base`` trains the video model on single-axis clips (the cross-view
attention and the sync layers idle), ``pseudo`` trains the grid model on pseudo-4D grids made from
videos by 2D transforms, ``grid`` on full procedural grids; ``schedule="mixed"`` replaces
pseudo-then-grid by one phase drawing pseudo-4D and procedural grids 1:2.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch

from recon.diffusion.data import clip_batch, downsample, grid_batch, grid_task_mask, pseudo_batch, synth_bank, to_uint8
from recon.diffusion.model import GridTransformer
from recon.diffusion.sampler import sample
from recon.errors import InputError
from recon.io.atomic import atomic_path, write_json


@dataclass
class ModelConfig:
    """Architecture of the generator (saved as the checkpoint's config.json)."""

    height: int = 32
    width: int = 32
    patch_size: int = 4
    width_dim: int = 64
    heads: int = 4
    depth: int = 6
    mlp_ratio: float = 2.0
    max_views: int = 4
    max_times: int = 4
    sync: Literal["hard", "soft", "learned"] = "learned"
    """Synchronisation of the cross-view and cross-time updates."""
    order: Literal["parallel", "sequential"] = "parallel"
    drop_sync: Literal["none", "first", "last"] = "none"
    """Remove the sync layers of the first or last third of the blocks."""
    prediction: Literal["anchored", "blended", "velocity"] = "anchored"
    """anchored: the clean frame as a correction of its anchor frame; blended: a correction of the blend
    of the anchor and the noisy input (a skip connection, see recon.diffusion.model.blend_coefficients);
    velocity: plain velocity."""
    anchor: Literal["nearest", "same_view"] = "nearest"
    """Anchor of an anchored prediction: the nearest given frame (grid distance) or the same view's
    nearest given frame (the freeze-time frame of the cell's view)."""
    anchor_std: float = 0.15
    """Assumed error std of the anchor frame (frames in [-1, 1]) for prediction="blended"."""


@dataclass
class TrainConfig:
    """One training run (all stages it runs, in order: base, pseudo, grid)."""

    out: Path
    """Run folder (created; resumed when it holds state.pt and resume is on)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    init_from: Path | None = None
    """Start from this checkpoint folder (e.g. a base-stage run's checkpoint/); its cross-time
    weights are copied into the cross-view attention when this run starts with a grid stage
    (unless inherit_cross_view is off)."""
    inherit_cross_view: bool = True
    """With init_from and no base stage: copy the cross-time attention into the cross-view one (right
    for a base-stage checkpoint; turn off to fine-tune a grid-stage checkpoint)."""
    reset_head: bool = False
    """Zero the output head after init_from, so an anchored model starts exactly at its anchor
    baseline (e.g. when fine-tuning a checkpoint with another anchor rule)."""
    base_steps: int = 0
    """Steps of video-model training on single-axis clips (first K frames given, K in [0, 4])."""
    pseudo_steps: int = 0
    """Steps on pseudo-4D grids made from videos (rows of procedural grids) by random 2D transforms."""
    grid_steps: int = 0
    """Steps on full procedural grids."""
    fill_frac: float = 0.5
    """Share of grid-stage tasks that fill a grid from its first row and column (the rest give 2..T-1
    columns: the overlap of an autoregressive extension)."""
    schedule: Literal["sequential", "mixed"] = "sequential"
    """sequential: pseudo-4D steps, then grid steps; mixed: pseudo_steps + grid_steps steps drawing
    pseudo-4D and procedural grids 1:2."""
    grid_train: Literal["all", "sync", "sync+cross"] = "all"
    """Parameters trained in the pseudo / grid stages."""
    batch: int = 4
    """Grids (or clips) per step."""
    lr: float = 5e-4
    """Peak AdamW learning rate (linear warm-up, then cosine decay to 0 within each stage)."""
    warmup: int = 50
    """Warm-up steps at the start of each stage."""
    ema_decay: float = 0.999
    """Maximum EMA decay (diffusers EMAModel with warm-up, power 3/4)."""
    scenes: int = 200
    """Procedural training scenes (scene "random", seeds scene_seed0 .. scene_seed0 + scenes - 1)."""
    scene_seed0: int = 1000
    render_size: int = 32
    """Size the procedural grids are rendered at (box-downsampled to the model size)."""
    bank_views: int = 4
    bank_frames: int = 8
    bank_cache: Path | None = None
    """A .pt file caching the rendered training grids (shared between runs)."""
    seed: int = 0
    """Seed of batches, noise and initial weights."""
    threads: int = 1
    """torch CPU threads."""
    log_every: int = 25
    sample_every: int = 250
    """Write a sample sheet (given / generated / truth) every this many steps."""
    save_every: int = 250
    """Save state.pt (for resume) every this many steps."""
    resume: bool = True
    """Continue from state.pt when the run folder has one."""


def flow_loss(
    model: GridTransformer,
    x0: torch.Tensor,  # [B, V, T, 3, H, W] clean frames
    cond_mask: torch.Tensor,  # [B, V, T] bool
    noise: torch.Tensor,  # [B, V, T, 3, H, W]
    sigma: torch.Tensor,  # [B] in (0, 1)
    video_only: bool = False,
) -> torch.Tensor:
    """Rectified-flow loss on the frames that are not given (scalar): MSE of the velocity
    ``noise - x0`` for ``prediction="velocity"``, MSE of the clean frames for ``"anchored"`` / ``"blended"`` (the
    velocity error weighted by ``sigma^2``, which keeps low noise levels from dominating)."""
    s = sigma.view(-1, 1, 1, 1, 1, 1)
    x_t = (1.0 - s) * x0 + s * noise
    if model.config.prediction == "velocity":
        v = model(x_t, sigma * 1000.0, x0, cond_mask, video_only=video_only)
        err = (v - (noise - x0)).pow(2).mean(dim=(3, 4, 5))  # [B, V, T]
    else:
        x0_hat = model(x_t, sigma * 1000.0, x0, cond_mask, video_only=video_only, return_x0=True)
        err = (x0_hat - x0).pow(2).mean(dim=(3, 4, 5))
    w = (~cond_mask).float()
    return (err * w).sum() / w.sum().clamp_min(1.0)


def sample_sigma(batch: int, gen: torch.Generator) -> torch.Tensor:
    """Logit-normal noise levels ``[B]`` (mass in the middle of the path, as SD3 trains)."""
    return torch.sigmoid(torch.randn(batch, generator=gen)).clamp(1e-3, 1.0 - 1e-3)


def build_model(cfg: ModelConfig) -> GridTransformer:
    return GridTransformer(**dataclasses.asdict(cfg))


def load_bank(cfg: TrainConfig) -> torch.Tensor:
    """Procedural training grids ``[scenes, bank_views, bank_frames, 3, h, w]`` at the model size."""
    key = dict(scenes=cfg.scenes, seed0=cfg.scene_seed0, size=cfg.render_size, views=cfg.bank_views, frames=cfg.bank_frames)
    bank = None
    if cfg.bank_cache is not None and Path(cfg.bank_cache).is_file():
        blob = torch.load(cfg.bank_cache, weights_only=True)
        if blob.get("key") == json.dumps(key, sort_keys=True):
            bank = blob["bank"].float()
    if bank is None:
        seeds = list(range(cfg.scene_seed0, cfg.scene_seed0 + cfg.scenes))
        bank = synth_bank(seeds, cfg.bank_views, cfg.bank_frames, (cfg.render_size, cfg.render_size))
        if cfg.bank_cache is not None:
            with atomic_path(cfg.bank_cache) as tmp:
                torch.save({"key": json.dumps(key, sort_keys=True), "bank": bank.half()}, tmp)
    factor = cfg.render_size // cfg.model.height
    if factor * cfg.model.height != cfg.render_size or cfg.model.height != cfg.model.width:
        raise InputError(f"render_size {cfg.render_size} is not a multiple of the model size {cfg.model.height}x{cfg.model.width}", field="render_size")
    return downsample(bank, factor)


def sample_sheet(frames: list[torch.Tensor]) -> np.ndarray:
    """Tile grids ``[V, T, 3, H, W]`` (one per row block, separated by a gap) -> ``uint8 [h, w, 3]``."""
    tiles = []
    for g in frames:
        V, T, _, H, W = g.shape
        im = to_uint8(g).transpose(0, 2, 1, 3, 4).reshape(V * H, T * W, 3)
        tiles.append(np.pad(im, ((0, 4), (0, 4), (0, 0)), constant_values=255))
    width = max(t.shape[1] for t in tiles)
    return np.concatenate([np.pad(t, ((0, 0), (0, width - t.shape[1]), (0, 0)), constant_values=255) for t in tiles], axis=0)


def _phases(cfg: TrainConfig) -> list[tuple[str, int]]:
    if cfg.schedule == "mixed":
        return [("base", cfg.base_steps), ("mixed", cfg.pseudo_steps + cfg.grid_steps)]
    return [("base", cfg.base_steps), ("pseudo", cfg.pseudo_steps), ("grid", cfg.grid_steps)]


def _trainable(model: GridTransformer, phase: str, cfg: TrainConfig) -> list[torch.nn.Parameter]:
    if phase == "base" or cfg.grid_train == "all":
        return list(model.parameters())
    params = model.sync_parameters()
    if cfg.grid_train == "sync+cross":
        params += model.cross_parameters()
    if not params:
        raise InputError(f"grid_train={cfg.grid_train!r} leaves nothing to train with sync={cfg.model.sync!r}", field="grid_train")
    return params


def train(cfg: TrainConfig, progress: Callable[[dict], None] | None = None) -> GridTransformer:
    """Run the stages of ``cfg`` and write the run folder; returns the EMA model (CPU, eval mode)."""
    from diffusers.training_utils import EMAModel

    from recon.io.images import write_png

    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "train.json", dataclasses.asdict(cfg))
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model)
    if cfg.init_from is not None:
        from recon.diffusion.checkpoint import load_weights_into

        load_weights_into(model, cfg.init_from)
        if cfg.base_steps == 0 and cfg.inherit_cross_view:
            model.inherit_cross_view()
        if cfg.reset_head:
            with torch.no_grad():
                for lin in (model.ada_out, model.patch_out):
                    lin.weight.zero_()
                    lin.bias.zero_()
    bank = load_bank(cfg)
    V, T = cfg.model.max_views, cfg.model.max_times
    videos = bank[:, 0]  # "ordinary videos" for pseudo-4D: one view of each scene over time
    sheet_x, sheet_m = bank[:2, :V, :T], grid_task_mask(V, T, 1)[None].expand(2, V, T)

    phases = [(p, n) for p, n in _phases(cfg) if n > 0]
    total = sum(n for _, n in phases)
    step, log_path, state_path = 0, out / "log.jsonl", out / "state.pt"
    state = torch.load(state_path, weights_only=False) if cfg.resume and state_path.is_file() else None
    if state is not None:
        model.load_state_dict(state["model"])
        step = state["step"]
        gen.set_state(state["gen"])
    t_start = time.time()
    for phase_idx, (phase, n) in enumerate(phases):
        first = sum(m for _, m in phases[:phase_idx])
        if step >= first + n:
            if state is not None and state.get("phase") == phase:  # resumed at the end of this phase
                done = EMAModel(model.parameters(), decay=cfg.ema_decay)
                done.load_state_dict(state["ema"])
                done.copy_to(model.parameters())
            continue
        if phase != "base" and first > 0 and step == first and phases[phase_idx - 1][0] == "base":
            model.inherit_cross_view()  # base -> grid: cross-view attention starts as the temporal one
        params = _trainable(model, phase, cfg)
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
        ema = EMAModel(model.parameters(), decay=cfg.ema_decay, use_ema_warmup=True, power=0.75)
        if state is not None and state.get("phase") == phase:
            opt.load_state_dict(state["opt"])
            ema.load_state_dict(state["ema"])
        state = None
        model.train()
        while step < first + n:
            lr = cfg.lr * min(1.0, (step - first + 1) / max(cfg.warmup, 1)) * 0.5 * (1 + math.cos(math.pi * (step - first) / n))
            for g in opt.param_groups:
                g["lr"] = lr
            video_only = phase == "base"
            if video_only:
                x0, mask = clip_batch(bank, cfg.batch, T, gen)
            elif phase == "pseudo" or (phase == "mixed" and bool(torch.rand(1, generator=gen) < 1 / 3)):
                x0, mask = pseudo_batch(videos, cfg.batch, V, T, gen, fill_frac=cfg.fill_frac)
            else:
                x0, mask = grid_batch(bank, cfg.batch, V, T, gen, fill_frac=cfg.fill_frac)
            noise = torch.randn(x0.shape, generator=gen)
            loss = flow_loss(model, x0, mask, noise, sample_sigma(cfg.batch, gen), video_only=video_only)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            ema.step(model.parameters())
            step += 1
            if step % cfg.log_every == 0 or step == total:
                rec = {"step": step, "phase": phase, "loss": loss.item(), "lr": lr, "elapsed_s": round(time.time() - t_start, 1)}
                with open(log_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                if progress:
                    progress(rec)
            last = step == first + n
            if step % cfg.sample_every == 0 or (last and phase_idx == len(phases) - 1):
                ema.store(model.parameters())
                ema.copy_to(model.parameters())
                sx, sm = (sheet_x[:, :1], sheet_m[:, :1] & (torch.arange(T) < 1)) if video_only else (sheet_x, sheet_m)
                gen_frames = sample(model, sx, sm, steps=16, generator=torch.Generator().manual_seed(0), video_only=video_only)
                ema.restore(model.parameters())
                model.train()
                sheet = sample_sheet([torch.where(sm[i, :, :, None, None, None], sx[i], torch.zeros_like(sx[i])) for i in range(2)]
                                     + [gen_frames[i] for i in range(2)] + [sx[i] for i in range(2)])
                write_png(out / "samples" / f"step_{step:06d}.png", sheet)
            if step % cfg.save_every == 0 or last:
                with atomic_path(state_path) as tmp:
                    torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step,
                                "phase": phase, "gen": gen.get_state()}, tmp)
        ema.copy_to(model.parameters())  # the next phase (and the checkpoint) continue from the EMA weights
    model.eval()
    from recon.diffusion.checkpoint import save_checkpoint

    save_checkpoint(model, out / "checkpoint", {"train": dataclasses.asdict(cfg), "steps": step})
    return model
