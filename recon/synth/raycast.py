"""Analytic ray caster for :class:`~recon.synth.scene.Scene` (independent of any splat rasterizer).

Rays are ``o + s d`` with ``d = R^T K^-1 [u, v, 1]`` (OpenCV camera, pixel centres at
``(j + 0.5, i + 0.5)``), so the ray parameter ``s`` is the z-depth of the hit in that camera.

* Backdrop (inside of a sphere) and ground plane: closed form.
* Foreground objects with an all-affine motion chain: the ray is mapped into the rest frame
  (an affine map keeps ``s``) and intersected in closed form (sphere / box).
* Non-rigid chains (twist, bend, wave): the implicit function ``sdf_rest(inverse(x, t))`` is
  sampled along the ray every :data:`MARCH_STEP` scene units inside the object's world bounding
  box, and the first sign change is refined by :data:`BISECT_ITERS` bisection steps (to
  ~1e-9 scene units, far below float32 depth precision). Rays that come close to the surface
  without a sample inside (grazing an edge between two samples) get a golden-section search for
  the implicit's minimum, so silhouettes are not ragged. The hit point, when found, is exact.

Every hit's rest point is ``inverse(o + s d, t)``, so depth, object id and rest coordinates
describe the same 3D point.
"""

from __future__ import annotations

import numpy as np

from recon.synth.motion import apply_affine, chain_is_affine, chain_matrix
from recon.synth.scene import BACKDROP_ID, FIRST_OBJECT_ID, GROUND_ID, NO_SURFACE_ID, Scene

MARCH_STEP = 0.04  # scene units; a quarter of the thinnest part of the named scenes (0.16)
MARCH_BLOCK = 8  # samples evaluated per ray per pass; rays leave once they found a crossing
BISECT_ITERS = 24  # brackets the root to MARCH_STEP * 2^-24 ~ 1.5e-9 scene units
GRAZE_FACTOR = 0.75  # a sampled minimum below this * MARCH_STEP may hide a clipped edge (slope <= 1.5)
GOLDEN_ITERS = 14  # locates the minimum to 2 MARCH_STEP * 0.618^14 ~ 1e-4 scene units


def pixel_rays(K: np.ndarray, w2c: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World rays through pixel positions ``uv [N, 2]`` (recon convention: the top-left pixel
    centre is (0.5, 0.5)) of a camera ``K [3, 3]``, ``w2c [4, 4]`` (OpenCV).

    Returns ``(origins [N, 3], dirs [N, 3])``; ``dirs`` have unit z in the camera frame, so the
    ray parameter of a hit is its z-depth.
    """
    pix = np.concatenate([uv, np.ones((uv.shape[0], 1))], 1)
    d_cam = pix @ np.linalg.inv(K).T
    R, tr = w2c[:3, :3], w2c[:3, 3]
    c = -R.T @ tr
    d = d_cam @ R  # rows are R^T d_cam
    return np.broadcast_to(c, d.shape).copy(), d


def camera_rays(K: np.ndarray, w2c: np.ndarray, size: tuple[int, int], offset: tuple[float, float] = (0.5, 0.5)) -> tuple[np.ndarray, np.ndarray]:
    """Rays of every pixel of an ``size = (H, W)`` image, row-major: ``(origins, dirs) [H*W, 3]``.
    ``offset`` is the sample position inside each pixel ((0.5, 0.5) = centre)."""
    H, W = size
    jj, ii = np.meshgrid(np.arange(W) + offset[0], np.arange(H) + offset[1])
    return pixel_rays(K, w2c, np.stack([jj.ravel(), ii.ravel()], 1))


def _hit_backdrop(scene: Scene, o: np.ndarray, d: np.ndarray) -> np.ndarray:
    bd = scene.backdrop
    oc = o - np.asarray(bd.center, np.float64)
    a = np.einsum("ij,ij->i", d, d)
    b = np.einsum("ij,ij->i", oc, d)
    c = np.einsum("ij,ij->i", oc, oc) - bd.radius**2
    disc = b * b - a * c
    s = (-b + np.sqrt(np.maximum(disc, 0.0))) / a  # far root: seen from inside
    return np.where((disc >= 0) & (s > 0), s, np.inf)


def _hit_ground(scene: Scene, o: np.ndarray, d: np.ndarray) -> np.ndarray:
    if scene.ground is None:
        return np.full(o.shape[0], np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (scene.ground.height - o[:, 1]) / d[:, 1]
    return np.where(np.isfinite(s) & (s > 1e-9), s, np.inf)


def _hit_affine(scene: Scene, oid: int, o: np.ndarray, d: np.ndarray, t: float) -> np.ndarray:
    obj = scene.objects[oid - FIRST_OBJECT_ID]
    Minv = np.linalg.inv(chain_matrix(obj.motions, t))
    o_r = apply_affine(Minv, o)
    d_r = d[:, 0:1] * Minv[:3, 0] + d[:, 1:2] * Minv[:3, 1] + d[:, 2:3] * Minv[:3, 2]
    return obj.shape.intersect(o_r, d_r)


def _hit_march(scene: Scene, oid: int, o: np.ndarray, d: np.ndarray, t: float, s_max: np.ndarray) -> np.ndarray:
    """First root of the deformed implicit along each ray, nearer than ``s_max`` (else inf).

    Samples every :data:`MARCH_STEP` scene units (measured along ``d``, whose length is >= 1)
    from the entry into the object's world bounding box, in blocks, dropping rays as they
    find a sign change; then bisects the bracketing step :data:`BISECT_ITERS` times.
    """
    lo_box, hi_box = scene.world_bound(oid, t)
    a = np.einsum("ij,ij->i", d, d)
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (lo_box - o) / d
        t2 = (hi_box - o) / d
    t1 = np.where(np.isnan(t1), -np.inf, t1)  # d == 0 with the origin on a slab face: unbounded
    t2 = np.where(np.isnan(t2), np.inf, t2)
    s0 = np.maximum(np.minimum(t1, t2).max(axis=1), 1e-6)
    s1 = np.minimum(np.maximum(t1, t2).min(axis=1), s_max)
    out = np.full(o.shape[0], np.inf)
    idx = np.nonzero(s1 > s0)[0]
    ds = MARCH_STEP / np.sqrt(a[idx])  # ray-parameter step for a world step of MARCH_STEP
    lo = s0[idx]
    g_lo = scene.implicit(oid, o[idx] + lo[:, None] * d[idx], t)
    keep = g_lo > 0  # starting inside: the bound is not enclosing; not a front hit
    idx, ds, lo = idx[keep], ds[keep], lo[keep]
    hit_idx, hit_a, hit_b = [], [], []
    g_min = np.full(o.shape[0], np.inf)  # smallest sample of the implicit along each ray
    s_min = np.zeros(o.shape[0])
    step = np.zeros(o.shape[0])
    step[idx] = ds
    while idx.size:
        ks = np.arange(1, MARCH_BLOCK + 1)
        ss = np.minimum(lo[:, None] + ds[:, None] * ks[None, :], s1[idx][:, None])  # [n, B]
        pts = o[idx][:, None, :] + ss[..., None] * d[idx][:, None, :]
        g = scene.implicit(oid, pts.reshape(-1, 3), t).reshape(idx.size, MARCH_BLOCK)
        neg = g <= 0
        found = neg.any(axis=1)
        first = np.argmax(neg, axis=1)
        rows = np.nonzero(found)[0]
        prev = np.where(first[rows] > 0, ss[rows, np.maximum(first[rows] - 1, 0)], lo[rows])
        hit_idx.append(idx[rows])
        hit_a.append(prev)
        hit_b.append(ss[rows, first[rows]])
        k = np.argmin(g, axis=1)
        gk = g[np.arange(idx.size), k]
        better = gk < g_min[idx]
        g_min[idx[better]] = gk[better]
        s_min[idx[better]] = ss[better, k[better]]
        last = ss[:, -1]
        more = ~found & (last < s1[idx])
        idx, ds, lo = idx[more], ds[more], last[more]
    # grazing rays: no sample fell inside, but the implicit came within a step of zero; the
    # ray may clip an edge between two samples. Golden-section search for the minimum around
    # the closest sample; a negative minimum brackets a root.
    found_any = np.zeros(o.shape[0], bool)
    for h in hit_idx:
        found_any[h] = True
    near = np.nonzero(~found_any & (g_min < GRAZE_FACTOR * MARCH_STEP))[0]
    if near.size:
        left = np.maximum(s_min[near] - step[near], s0[near])
        right = np.minimum(s_min[near] + step[near], s1[near])
        a_s, b_s = left.copy(), right.copy()
        on, dn = o[near], d[near]
        phi = (np.sqrt(5.0) - 1.0) / 2.0
        for _ in range(GOLDEN_ITERS):
            x1 = b_s - phi * (b_s - a_s)
            x2 = a_s + phi * (b_s - a_s)
            g1 = scene.implicit(oid, on + x1[:, None] * dn, t)
            g2 = scene.implicit(oid, on + x2[:, None] * dn, t)
            lower = g1 < g2
            b_s = np.where(lower, x2, b_s)
            a_s = np.where(lower, a_s, x1)
        sm = 0.5 * (a_s + b_s)
        inside = scene.implicit(oid, on + sm[:, None] * dn, t) <= 0
        hit_idx.append(near[inside])
        hit_a.append(left[inside])
        hit_b.append(sm[inside])
    if not any(h.size for h in hit_idx):
        return out
    rows = np.concatenate(hit_idx)
    a_s, b_s = np.concatenate(hit_a), np.concatenate(hit_b)
    o2, d2 = o[rows], d[rows]
    for _ in range(BISECT_ITERS):
        m = 0.5 * (a_s + b_s)
        inside = scene.implicit(oid, o2 + m[:, None] * d2, t) <= 0
        b_s = np.where(inside, m, b_s)
        a_s = np.where(inside, a_s, m)
    out[rows] = b_s
    return out


def cast(scene: Scene, o: np.ndarray, d: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit of rays ``o, d [N, 3]`` at time ``t``.

    Returns ``(s [N] float64 ray parameter (inf on no hit), object_id [N] int16,
    rest [N, 3] float64 rest-frame coordinates of the hit, NaN on no hit)``.
    """
    N = o.shape[0]
    best = np.full(N, np.inf)
    oid_out = np.full(N, NO_SURFACE_ID, np.int16)
    for oid, s in ((BACKDROP_ID, _hit_backdrop(scene, o, d)), (GROUND_ID, _hit_ground(scene, o, d))):
        closer = s < best
        best[closer] = s[closer]
        oid_out[closer] = oid
    for oid in scene.foreground_ids:
        obj = scene.objects[oid - FIRST_OBJECT_ID]
        if chain_is_affine(obj.motions):
            s = _hit_affine(scene, oid, o, d, t)
        else:
            s = _hit_march(scene, oid, o, d, t, best)
        closer = s < best
        best[closer] = s[closer]
        oid_out[closer] = oid
    world = o + np.where(np.isfinite(best), best, np.nan)[:, None] * d
    rest = scene.rest_points(oid_out, world, t)
    return best, oid_out, rest


def shade(scene: Scene, object_id: np.ndarray, rest: np.ndarray, world: np.ndarray, t: float, tex_offset: np.ndarray | None = None) -> np.ndarray:
    """Linear RGB ``[N, 3]`` in [0, 1] of hits (``object_id [N]``, ``rest``/``world [N, 3]``).

    ``tex_offset [N, 3]`` (optional) shifts the texture lookup in rest coordinates (the injected
    texture drift); geometry is unaffected. Shading (``scene.shading``) is Lambertian from
    ``scene.light`` on foreground objects, with normals from central differences of the implicit.
    """
    rgb = np.zeros((object_id.shape[0], 3))
    q = rest if tex_offset is None else rest + tex_offset
    light = np.asarray(scene.light, np.float64)
    light = light / np.linalg.norm(light)
    for oid in np.unique(object_id):
        sel = object_id == oid
        if oid == BACKDROP_ID:
            rgb[sel] = scene.backdrop.texture.color(q[sel])
        elif oid == GROUND_ID:
            rgb[sel] = scene.ground.texture.color(q[sel])
        elif oid >= FIRST_OBJECT_ID:
            col = scene.objects[oid - FIRST_OBJECT_ID].texture.color(q[sel])
            if scene.shading > 0:
                x = world[sel]
                eps = 1e-4
                n = np.stack([scene.implicit(int(oid), x + eps * e, t) - scene.implicit(int(oid), x - eps * e, t) for e in np.eye(3)], 1)
                n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
                lam = np.clip(n @ light, 0.0, 1.0)
                col = col * ((1.0 - scene.shading) + scene.shading * lam)[:, None]
            rgb[sel] = col
    return rgb
