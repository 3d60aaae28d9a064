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

SUITES = ("synthetic", "panoptic", "generated", "custom")
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


def suite_options(quick: bool, **overrides: Any) -> SuiteOptions:
    """Defaults, or the ``--quick`` CPU set (synthetic: 2 scenes x 1 seed x clean/inconsistent, 64 px, 4 times; panoptic: 8 training cameras, 4 times, 160x90)."""
    o = SuiteOptions()
    if quick:
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
    return case


def synthetic_cases(o: SuiteOptions) -> list[Case]:
    from recon.synth import make_grid

    cases = []
    for scene in o.scenes:
        for seed in o.seeds:
            for inc in o.inconsistency:
                grid = make_grid(scene=scene, views=o.views, frames=o.frames, size=tuple(o.size), seed=seed, inconsistency=inc)
                name = f"{scene}-s{seed}-{'clean' if inc == 0 else f'inc{inc:g}'}"
                cases.append(case_from_grid(name, grid, o.holdout, {"scene": scene, "seed": seed, "inconsistency": inc}))
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
    if suite == "panoptic":
        return panoptic_cases(o)
    if suite in ("generated", "custom"):
        return grid_cases(o, suite)
    raise InputError(f"unknown suite {suite!r}; expected one of {', '.join(SUITES)}", field="--suite")
