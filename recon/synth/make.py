"""Render a :class:`~recon.synth.scene.Scene` into a :class:`~recon.grid.FrameGrid` with exact ground truth."""

from __future__ import annotations

import numpy as np

from recon.errors import InputError
from recon.grid import Cameras, FrameGrid
from recon.synth.inconsistency import apply_image, draw_perturbation
from recon.synth.raycast import camera_rays, cast, pixel_rays, shade
from recon.synth.scene import BACKDROP_ID, GROUND_ID, NO_SURFACE_ID, Scene
from recon.synth.scenes import SCENES, build_scene
from recon.synth.spec import from_spec, to_spec

META_KEY = "synth"


def render_time(
    scene: Scene,
    K: np.ndarray,
    w2c: np.ndarray,
    size: tuple[int, int],
    t: float,
    supersample: int = 1,
    tex_offsets: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Render all ``V`` cameras at time ``t``.

    Args:
        K: ``[V, 3, 3]`` intrinsics (pixels, pixel centres at +0.5).
        w2c: ``[V, 4, 4]`` OpenCV world-to-camera.
        size: ``(H, W)``.
        supersample: anti-aliasing: pixels on an edge (object id or a >10% depth step differs
            from a 4-neighbour) take the mean colour of ``supersample^2`` stratified samples;
            elsewhere the (smooth) texture is sampled at the pixel centre. Geometry is always
            the pixel centre's.
        tex_offsets: optional ``[V, 3]`` texture drift per view (adds ``rgb_drift`` to the output).

    Returns dict: ``depth [V, H, W]`` float64 z-depth (0 = no surface), ``object_id [V, H, W]``
    int16, ``surface [V, H, W, 3]`` float64 rest coordinates (0 where no surface), ``rgb
    [V, H, W, 3]`` float64 in [0, 1] and, with ``tex_offsets``, ``rgb_drift`` likewise.
    """
    H, W = size
    V = K.shape[0]
    n = H * W
    o, d = zip(*(camera_rays(K[v], w2c[v], size) for v in range(V)))
    o, d = np.concatenate(o), np.concatenate(d)
    s, oid, rest = cast(scene, o, d, t)
    hit = np.isfinite(s)
    depth = np.where(hit, s, 0.0)
    out = {
        "depth": depth.reshape(V, H, W),
        "object_id": oid.reshape(V, H, W),
        "surface": np.where(hit[:, None], rest, 0.0).reshape(V, H, W, 3),
    }
    world = o + depth[:, None] * d
    tex = None if tex_offsets is None else np.repeat(np.asarray(tex_offsets, np.float64), n, axis=0)
    variants = {"rgb": None} if tex is None else {"rgb": None, "rgb_drift": tex}
    colours = {k: shade(scene, oid, rest, world, t, off) for k, off in variants.items()}
    if supersample > 1:
        edge = _edges(out["object_id"], out["depth"]).reshape(-1)
        sel = np.nonzero(edge)[0]
        if sel.size:
            view, pix = np.divmod(sel, n)
            base = np.stack([pix % W, pix // W], 1).astype(np.float64)
            acc = {k: np.zeros((sel.size, 3)) for k in variants}
            steps = (np.arange(supersample) + 0.5) / supersample
            for dy in steps:
                for dx in steps:
                    uv = base + np.array([dx, dy])
                    os_, ds_ = np.zeros((sel.size, 3)), np.zeros((sel.size, 3))
                    for v in np.unique(view):
                        m = view == v
                        os_[m], ds_[m] = pixel_rays(K[v], w2c[v], uv[m])
                    s2, oid2, rest2 = cast(scene, os_, ds_, t)
                    world2 = os_ + np.where(np.isfinite(s2), s2, 0.0)[:, None] * ds_
                    for k, off in variants.items():
                        acc[k] += shade(scene, oid2, rest2, world2, t, None if off is None else off[sel])
            for k in variants:
                colours[k][sel] = acc[k] / supersample**2
    for k in variants:
        out[k] = colours[k].reshape(V, H, W, 3)
    return out


def _edges(object_id: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """``bool [V, H, W]``: pixels whose object id, or depth by more than 10% (self-occlusion),
    differs from a 4-neighbour."""
    e = np.zeros(object_id.shape, bool)
    for axis in (1, 2):
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[axis], b[axis] = slice(1, None), slice(None, -1)
        diff = (object_id[tuple(a)] != object_id[tuple(b)]) | (
            np.abs(depth[tuple(a)] - depth[tuple(b)]) > 0.1 * np.minimum(depth[tuple(a)], depth[tuple(b)])
        )
        e[tuple(a)] |= diff
        e[tuple(b)] |= diff
    return e


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


MAX_SUPERSAMPLE = 8
"""Anti-aliasing beyond 8 x 8 samples per edge pixel changes nothing visible and costs 64x more."""


def make_grid(
    scene: str | Scene = "orbit",
    views: int = 8,
    frames: int = 8,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
    inconsistency: float = 0.0,
    supersample: int = 2,
) -> FrameGrid:
    """Render a procedural 4D scene into a ``views x frames`` grid with exact ground truth.

    Args:
        scene: a name in :data:`~recon.synth.scenes.SCENES` (built with ``seed``) or a :class:`Scene`.
        views: V cameras on the scene's arc (static over time, OpenCV convention).
        frames: T time steps, at normalised times ``linspace(0, 1, T)`` (``[0]`` for T = 1).
        size: ``(H, W)`` in pixels.
        seed: scene variation (noise textures, ``random`` scenes) and injected inconsistency.
        inconsistency: strength in [0, 1] (see :mod:`recon.synth.inconsistency`); > 0 also stores
            the unperturbed images in ``extras["clean"]``.
        supersample: anti-aliasing: edge pixels average ``supersample^2`` colour samples
            (see :func:`render_time`); 1 = pixel centre only.

    Returns a :class:`FrameGrid` with ``ref_time = 0``, ``central_view = V // 2``, masks = foreground
    objects, and extras: ``depth`` float32 ``[V, T, H, W]`` (z-depth, scene units),
    ``object_id`` int16 ``[V, T, H, W]`` (0 backdrop, 1 ground, 2+ foreground, -1 none),
    ``surface`` float32 ``[V, T, H, W, 3]`` (rest-frame coordinates; see
    :meth:`Scene.world_points`), and ``clean`` uint8 ``[V, T, H, W, 3]`` when ``inconsistency > 0``.
    ``meta["synth"]`` holds the scene spec, seed and perturbation (:func:`scene_from_meta`).
    With ``inconsistency > 0`` only ``images`` are perturbed: masks and extras describe the clean
    scene (``meta["synth"]["perturbation"]["homography"]`` maps clean to perturbed pixels).
    """
    name = scene if isinstance(scene, str) else "custom"
    sc = build_scene(scene, seed) if isinstance(scene, str) else scene
    if not 0.0 <= float(inconsistency) <= 1.0:
        raise InputError(f"expected a value in [0, 1], got {inconsistency}", field="inconsistency")
    H, W = int(size[0]), int(size[1])
    if views < 1 or frames < 1 or H < 1 or W < 1:
        raise InputError(f"expected positive views, frames and size, got {views}, {frames}, {H}x{W}", field="views/frames/size")
    if not 1 <= supersample <= MAX_SUPERSAMPLE:
        raise InputError(f"expected 1..{MAX_SUPERSAMPLE}, got {supersample}", field="supersample")
    from recon.io import check_memory

    # images + depth + ids + surfaces (+ clean images) kept, one time's render (x supersampled edges) in flight
    per_pixel = 3 + 4 + 2 + 12 + (3 if inconsistency > 0 else 0)
    check_memory(views * H * W * (frames * per_pixel + 64), f"a synthetic {views} views x {frames} frames grid at {W}x{H}",
                 None, hint="use a smaller --size, --views or --frames")
    K, w2c = sc.rig.cameras(views, (H, W))
    times = np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)
    central = views // 2
    pert = draw_perturbation(float(inconsistency), views, (H, W), seed, central)
    perturbed = inconsistency > 0

    images = np.zeros((views, frames, H, W, 3), np.uint8)
    clean = np.zeros_like(images) if perturbed else None
    depth = np.zeros((views, frames, H, W), np.float32)
    object_id = np.zeros((views, frames, H, W), np.int16)
    surface = np.zeros((views, frames, H, W, 3), np.float32)
    for j, t in enumerate(times):
        r = render_time(sc, K, w2c, (H, W), float(t), supersample, pert.texture_offset if perturbed else None)
        depth[:, j] = r["depth"]
        object_id[:, j] = r["object_id"]
        surface[:, j] = r["surface"]
        if perturbed:
            clean[:, j] = _to_uint8(r["rgb"])
            for v in range(views):
                images[v, j] = _to_uint8(apply_image(r["rgb_drift"][v], pert.homography[v], pert.gain[v], pert.bias[v]))
        else:
            images[:, j] = _to_uint8(r["rgb"])
    masks = np.isin(object_id, sc.foreground_ids)
    extras = {"depth": depth, "object_id": object_id, "surface": surface}
    if clean is not None:
        extras["clean"] = clean
    meta = {
        "source": "recon.synth",
        "time_unit": "normalised clip time in [0, 1]",
        "world_up": [0.0, 1.0, 0.0],
        META_KEY: {
            "scene_name": name,
            "seed": int(seed),
            "inconsistency": float(inconsistency),
            "supersample": int(supersample),
            "ids": {"no_surface": NO_SURFACE_ID, "backdrop": BACKDROP_ID, "ground": GROUND_ID, "foreground": sc.foreground_ids},
            "object_names": {str(k): v for k, v in sc.object_names().items()},
            "perturbation": pert.to_meta(),
            "scene": to_spec(sc),
        },
    }
    return FrameGrid(
        images=images,
        cameras=Cameras(K=K, w2c=w2c),
        times=times,
        masks=masks,
        ref_time=0,
        central_view=central,
        view_names=[f"arc_{v:02d}" for v in range(views)],
        meta=meta,
        extras=extras,
        source=f"recon.synth:{name}",
    )


def ensure_ground_truth(grid: FrameGrid) -> FrameGrid:
    """Complete a synthetic grid's ground truth in place and return it.

    A grid written with ``recon synth --compact`` (like ``data/sample``) stores ``depth`` and
    ``object_id`` but not ``surface``: each pixel's rest point is recomputed exactly from them
    (back-project the depth, pull the world point back through its object's motion at the
    frame's time; float32 depth makes this agree with the rendered value to ~1e-6 scene units).
    Raises :class:`InputError` when the grid is not synthetic or lacks depth / object ids.
    """
    scene = scene_from_meta(grid.meta)
    for k in ("depth", "object_id"):
        if k not in grid.extras:
            raise InputError(f"synthetic grid lacks ground-truth {k}", grid.source, f"extras.{k}")
    if "surface" in grid.extras:
        return grid
    V, T, H, W = grid.shape
    jj, ii = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    pix = np.stack([jj.ravel(), ii.ravel(), np.ones(H * W)], 1)
    surface = np.zeros((V, T, H, W, 3), np.float32)
    for v in range(V):
        for t in range(T):
            K, w2c = grid.cameras.K[v, t], grid.cameras.w2c[v, t]
            z = grid.extras["depth"][v, t].reshape(-1).astype(np.float64)
            Xc = (pix @ np.linalg.inv(K).T) * z[:, None]
            X = (Xc - w2c[:3, 3]) @ w2c[:3, :3]
            oid = grid.extras["object_id"][v, t].reshape(-1)
            rest = scene.rest_points(oid, X, float(grid.times[t]))
            surface[v, t] = np.where((oid == NO_SURFACE_ID)[:, None], 0.0, rest).reshape(H, W, 3)
    grid.extras["surface"] = surface
    return grid


def scene_from_meta(meta: dict) -> Scene:
    """Rebuild the :class:`Scene` of a grid made by :func:`make_grid` from its ``grid.meta``."""
    spec = meta.get(META_KEY) if isinstance(meta, dict) else None
    if not isinstance(spec, dict) or "scene" not in spec:
        raise InputError("grid has no synthetic scene (not made by recon synth)", field=f"meta.{META_KEY}.scene")
    scene = from_spec(spec["scene"], field=f"meta.{META_KEY}.scene")
    if not isinstance(scene, Scene):
        raise InputError(f"expected a Scene, got {type(scene).__name__}", field=f"meta.{META_KEY}.scene")
    return scene


__all__ = ["SCENES", "ensure_ground_truth", "make_grid", "render_time", "scene_from_meta"]
