"""Benchmark suites: the cases a method is run on, each a training grid plus what to score it against.

* ``synthetic`` -- procedural scenes x seeds, each clean and with injected multi-view
  inconsistency (:mod:`recon.synth`). Rendered with extra cameras on the same arc; the
  *held-out* ones never reach the reconstruction. Exact ground truth: held-out images (the clean,
  consistent renders even when the training views are perturbed), masks, depth, surfaces and
  trajectories (``Case.scene``, ``Case.full``).
* ``panoptic`` -- the real CMU Panoptic "basketball" capture (Dynamic-3DGS preprocessing): a few
  training cameras near the held-out test cameras 0 and 10, a few time steps, reduced size on CPU.
  Held-out images only (no masks on the test cameras, no depth). Its cameras are metres apart, so
  the tracking-initialised methods use ``rig`` tracks (MVS depth, sweep range from the rig
  geometry, moved between views with the given poses) and ``pointmap-init`` the same MVS depth.
* ``generated`` -- grid folders written by ``recon generate``: no ground truth; scored by
  training-cell fit and the weights-free SfM consistency of the input vs the reconstruction.
* ``custom`` -- any grid path ``load_grid`` reads, optionally with held-out views; synthetic grids
  (``meta["synth"]``) get their exact ground truth automatically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recon.errors import InputError
from recon.grid import FrameGrid

SUITES = ("synthetic", "seedlike", "panoptic", "generated", "custom")
NOVEL_CAMERAS: tuple[tuple[float, float], ...] = ((-0.25, 15.0), (0.25, 15.0))
"""Off-grid evaluation cameras of synthetic cases: ``(arc fraction, elevation above the arc in
degrees)`` (:meth:`recon.synth.scene.ArcRig.novel_cameras`): between the grid's arc positions
and 15 degrees higher, where no input view looked from."""
PANOPTIC_TEST_CAMERAS = (0, 10)
"""Held-out cameras of the Panoptic sequences in Dynamic 3D Gaussians' split (those in test_meta.json)."""


@dataclass
class Case:
    """One benchmark input.

    ``train`` is what the method sees. Held-out evaluation uses ``eval_images [E, T, H, W, 3]``
    uint8, ``eval_K [E, T, 3, 3]``, ``eval_w2c [E, T, 4, 4]`` (world = the train grid's world)
    and optional ``eval_masks [E, T, H, W]``. ``full`` (synthetic) is the grid with every camera,
    train and held-out, carrying GT depth / object ids / surfaces; ``scene`` the procedural scene.
    """

    name: str
    train: FrameGrid
    tags: dict[str, Any] = field(default_factory=dict)
    eval_images: np.ndarray | None = None
    eval_K: np.ndarray | None = None
    eval_w2c: np.ndarray | None = None
    eval_masks: np.ndarray | None = None
    eval_names: list[str] = field(default_factory=list)
    full: FrameGrid | None = None
    scene: Any = None
    novel_images: np.ndarray | None = None
    """Synthetic cases: ``uint8 [N, T, H, W, 3]`` ground truth of cameras that are not in the
    grid (:data:`NOVEL_CAMERAS`), rendered by the ray caster at every grid time; with
    ``novel_K [N, T, 3, 3]``, ``novel_w2c [N, T, 4, 4]``, ``novel_masks [N, T, H, W]`` (foreground)."""
    novel_K: np.ndarray | None = None
    novel_w2c: np.ndarray | None = None
    novel_masks: np.ndarray | None = None
    novel_names: list[str] = field(default_factory=list)
    tracks: str = "flow"
    """Track source that suits this input (used unless ``--tracks`` is given): ``flow`` for
    generated and synthetic grids (closely spaced views), ``rig`` for a calibrated wide-baseline
    capture (Panoptic), where flow finds no matches between neighbouring cameras."""
    depth: str = "auto"
    """Depth provider that suits this input (used unless ``--depth`` is given)."""

    @property
    def has_heldout(self) -> bool:
        return self.eval_images is not None and len(self.eval_images) > 0


@dataclass
class SuiteOptions:
    """Sizes of the suites (``quick`` picks a CPU-sized set, see :func:`suite_options`)."""

    scenes: tuple[str, ...] = ("orbit", "bounce", "twist", "mixed")
    seeds: tuple[int, ...] = (0, 1)
    inconsistency: tuple[float, ...] = (0.0, 0.6)
    views: int = 9
    """Cameras rendered on the arc; :attr:`holdout` of them are held out."""
    holdout: tuple[int, ...] = (2, 6)
    frames: int = 8
    size: tuple[int, int] = (128, 128)
    panoptic_root: Path | None = None
    panoptic_train_views: int = 8
    panoptic_frames: str = "0:16:4"
    panoptic_scale: float = 0.25
    grids: tuple[Path, ...] = ()
    """Grid paths for the ``generated`` and ``custom`` suites."""
    custom_holdout: tuple[int, ...] = ()


SEEDLIKE = dict(views=10, holdout=(2, 7), frames=8, size=(144, 256), scenes=("orbit", "bounce", "twist", "mixed"),
                seeds=(0, 1), inconsistency=(0.0, 0.6))
"""The ``seedlike`` suite: the seed's kind of input (4Real-Video: an 8 x 8 grid at 288 x 512 from a
video generator, depth from a monocular estimator) at half its size: 8 training views (+ 2 held
out on the arc, + the off-grid :data:`NOVEL_CAMERAS`) x 8 times at 144 x 256, four scenes x two
seeds, clean and with injected inconsistency, depth ``mono-sim`` (:mod:`recon.tracking.monosim`;
``--tracking.depth mvs`` for the second estimated-depth setting)."""
SEEDLIKE_QUICK = dict(SEEDLIKE, size=(72, 128), inconsistency=(0.6,))
"""``seedlike --quick``: the same cases at a quarter of the seed's size, inconsistent grids only
(the claims are about generated, i.e. inconsistent, input)."""
SEEDLIKE_QUICK_CONFIG = {"deform": {"iterations": 400, "density": {"max_gaussians": 20000}}}
"""Pipeline overrides of ``seedlike --quick`` (under the user's ``--config`` and flags): a short
deform fit with at most 20k Gaussians, so 8 cases x 4 methods fit in 20 minutes on 2 cores
(a default fit of one 72 x 128 case takes ~4 minutes there); the full protocol uses the defaults."""


def suite_options(quick: bool, suite: str = "synthetic", **overrides: Any) -> SuiteOptions:
    """Defaults, or the ``--quick`` CPU set (synthetic: 2 scenes x 1 seed x clean/inconsistent, 64 px, 4 times; panoptic: 8 training cameras, 4 times, 160x90;
    seedlike: :data:`SEEDLIKE` / :data:`SEEDLIKE_QUICK`)."""
    o = SuiteOptions()
    if suite == "seedlike":
        o = SuiteOptions(**(SEEDLIKE_QUICK if quick else SEEDLIKE))
    elif quick:
        o = SuiteOptions(scenes=("orbit", "bounce"), seeds=(0,), inconsistency=(0.0, 0.6), views=7, holdout=(1, 5),
                         frames=4, size=(64, 64), panoptic_train_views=8, panoptic_frames="0:8:2", panoptic_scale=0.25)
    for k, v in overrides.items():
        if v is not None:
            setattr(o, k, v)
    return o


def default_panoptic_root() -> Path:
    """``$RECON_SHARED_DATA/panoptic_basketball``, else ``../shared/data/panoptic_basketball`` next to the repo."""
    env = os.environ.get("RECON_SHARED_DATA")
    if env:
        return Path(env) / "panoptic_basketball"
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "panoptic_basketball"


def _split_views(grid: FrameGrid, holdout: tuple[int, ...], source: str) -> tuple[list[int], list[int]]:
    V = grid.num_views
    bad = [h for h in holdout if not 0 <= h < V]
    if bad:
        raise InputError(f"held-out view indices {bad} outside [0, {V})", source, "--holdout")
    if int(grid.central_view) in holdout:
        raise InputError(f"view {grid.central_view} is the central (canonical) view; it cannot be held out", source, "--holdout")
    train = [v for v in range(V) if v not in holdout]
    if len(train) < 2:
        raise InputError("fewer than 2 training views would remain", source, "--holdout")
    return train, list(holdout)


def case_from_grid(name: str, grid: FrameGrid, holdout: tuple[int, ...], tags: dict[str, Any], clean_eval: bool = True) -> Case:
    """Split ``grid`` into training views and held-out views (their images: ``extras["clean"]``
    when present and ``clean_eval``, i.e. the consistent truth of a perturbed synthetic grid)."""
    train_idx, held = _split_views(grid, holdout, grid.source)
    train = grid.subset(views=train_idx)
    case = Case(name=name, train=train, tags=dict(tags))
    if held:
        imgs = grid.extras["clean"] if clean_eval and "clean" in grid.extras else grid.images
        case.eval_images = imgs[held]
        case.eval_K = grid.cameras.K[held]
        case.eval_w2c = None if grid.cameras.w2c is None else grid.cameras.w2c[held]
        mask_views = grid.meta.get("mask_views", range(grid.num_views))
        case.eval_masks = None if grid.masks is None or any(h not in mask_views for h in held) else grid.masks[held]
        case.eval_names = [grid.view_names[h] for h in held] if grid.view_names else [str(h) for h in held]
        if case.eval_w2c is None:
            raise InputError("held-out evaluation needs camera poses; this grid has none", grid.source, "w2c")
    if "synth" in grid.meta:
        from recon.synth import ensure_ground_truth, scene_from_meta

        case.full = ensure_ground_truth(grid)
        case.scene = scene_from_meta(grid.meta)
        add_novel_views(case, grid)
    return case


def add_novel_views(case: Case, grid: FrameGrid, cameras: tuple[tuple[float, float], ...] = NOVEL_CAMERAS) -> None:
    """Render the ground truth of the off-grid ``cameras`` (:data:`NOVEL_CAMERAS`) of a synthetic
    case at every grid time into ``case.novel_*`` (the clean scene: no injected inconsistency)."""
    from recon.synth.make import render_time

    scene, H, W = case.scene, grid.height, grid.width
    rig = [scene.rig.novel_cameras((f,), (H, W), el) for f, el in cameras]
    K, w2c = np.concatenate([k for k, _ in rig]), np.concatenate([w for _, w in rig])
    imgs, masks = [], []
    for t in grid.times:
        r = render_time(scene, K, w2c, (H, W), float(t), supersample=2)
        imgs.append(np.clip(np.rint(r["rgb"] * 255.0), 0, 255).astype(np.uint8))
        masks.append(np.isin(r["object_id"], scene.foreground_ids))
    T = grid.num_times
    case.novel_images = np.stack(imgs, 1)
    case.novel_masks = np.stack(masks, 1)
    case.novel_K = np.repeat(K[:, None], T, 1)
    case.novel_w2c = np.repeat(w2c[:, None], T, 1)
    case.novel_names = [f"arc{f:+g}/el{el:+g}" for f, el in cameras]


def synthetic_cases(o: SuiteOptions, depth: str = "auto") -> list[Case]:
    """Procedural cases (``synthetic`` and ``seedlike``); ``depth``: the cases' depth provider."""
    from recon.synth import make_grid

    cases = []
    for scene in o.scenes:
        for seed in o.seeds:
            for inc in o.inconsistency:
                grid = make_grid(scene=scene, views=o.views, frames=o.frames, size=tuple(o.size), seed=seed, inconsistency=inc)
                name = f"{scene}-s{seed}-{'clean' if inc == 0 else f'inc{inc:g}'}"
                case = case_from_grid(name, grid, o.holdout, {"scene": scene, "seed": seed, "inconsistency": inc})
                case.depth = depth
                cases.append(case)
    return cases


def panoptic_cases(o: SuiteOptions) -> list[Case]:
    """One case: ``panoptic_train_views`` training cameras (those nearest the test cameras,
    alternating between them) + held-out test cameras 0 and 10."""
    import json

    from recon.io import LoadOptions, load_grid

    root = Path(o.panoptic_root) if o.panoptic_root else default_panoptic_root()
    meta = root / "train_meta.json"
    if not meta.is_file() or not (root / "test_meta.json").is_file():
        raise InputError("Panoptic data not found (expected train_meta.json and test_meta.json); pass --panoptic-root", root)
    m_train, m_test = json.loads(meta.read_text()), json.loads((root / "test_meta.json").read_text())
    centre, down = {}, []
    for m in (m_train, m_test):
        for cid, w2c in zip(m["cam_id"][0], m["w2c"][0]):
            w = np.asarray(w2c, np.float64)
            centre[int(cid)] = -w[:3, :3].T @ w[:3, 3]
            down.append(w[1, :3])  # camera y axis (OpenCV: down) in world coordinates
    train_ids = [int(c) for c in m_train["cam_id"][0]]
    chosen: list[int] = []
    ranked = [sorted(train_ids, key=lambda c: float(np.linalg.norm(centre[c] - centre[t]))) for t in PANOPTIC_TEST_CAMERAS]
    budget = min(o.panoptic_train_views, len(train_ids))
    while len(chosen) < budget:
        for r in ranked:
            if len(chosen) < budget:
                chosen.append(next(c for c in r if c not in chosen))
    # order views by azimuth about the rig's vertical axis, so grid neighbours are spatial neighbours
    up = -np.mean(down, axis=0)
    up /= np.linalg.norm(up)
    mid = np.mean(list(centre.values()), axis=0)
    e1 = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 0.0, 1.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    az = {c: float(np.arctan2((centre[c] - mid) @ e2, (centre[c] - mid) @ e1)) for c in chosen}
    chosen.sort(key=az.get)
    gaps = [(az[chosen[(i + 1) % len(chosen)]] - az[chosen[i]]) % (2 * np.pi) for i in range(len(chosen))]
    start = (int(np.argmax(gaps)) + 1) % len(chosen)  # open the circle at its widest gap
    chosen = chosen[start:] + chosen[:start]
    train = load_grid(root, LoadOptions(views=chosen, frames=o.panoptic_frames, scale=o.panoptic_scale, split="train"))
    train.central_view = len(chosen) // 2  # the middle of the azimuth-ordered arc
    test = load_grid(root, LoadOptions(views=list(PANOPTIC_TEST_CAMERAS), frames=o.panoptic_frames, scale=o.panoptic_scale, split="test"))
    case = Case(name="panoptic-basketball", train=train, tags={"scene": "basketball", "cameras": chosen},
                tracks="rig", depth="mvs")
    case.eval_images = test.images
    case.eval_K = test.cameras.K
    case.eval_w2c = test.cameras.w2c
    case.eval_names = [str(c) for c in PANOPTIC_TEST_CAMERAS]
    return [case]


def grid_cases(o: SuiteOptions, suite: str) -> list[Case]:
    from recon.io import load_grid

    if not o.grids:
        what = "folders written by `recon generate`" if suite == "generated" else "grid paths"
        raise InputError(f"the {suite} suite needs --grids ({what})", field="--grids")
    cases = []
    for p in o.grids:
        grid = load_grid(p)
        hold = o.custom_holdout if suite == "custom" else ()
        cases.append(case_from_grid(Path(p).name, grid, tuple(hold), {"path": str(p)}))
    return cases


def build_cases(suite: str, o: SuiteOptions) -> list[Case]:
    """The cases of ``suite`` (one of :data:`SUITES`)."""
    if suite == "synthetic":
        return synthetic_cases(o)
    if suite == "seedlike":
        return synthetic_cases(o, depth="mono-sim")
    if suite == "panoptic":
        return panoptic_cases(o)
    if suite in ("generated", "custom"):
        return grid_cases(o, suite)
    raise InputError(f"unknown suite {suite!r}; expected one of {', '.join(SUITES)}", field="--suite")
