"""The scene language: shapes, objects with motion chains, backdrop, ground and the camera arc.

World frame: y up, ground plane ``y = ground.height``, scene centre ``rig.target``. Object ids
(``extras["object_id"]``): :data:`BACKDROP_ID` (0) the enclosing textured dome,
:data:`GROUND_ID` (1) the ground plane, ``FIRST_OBJECT_ID + i`` (2, 3, ...) foreground object
``Scene.objects[i]``, ``-1`` no surface. Backdrop and ground are static: their rest frame is the
world frame. A foreground object's rest frame is the shape's own frame (centred at its origin),
mapped to the world at time ``t`` by its motion chain (:mod:`recon.synth.motion`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recon.synth.motion import chain_forward, chain_inverse
from recon.synth.spec import spec_type
from recon.synth.texture import Texture

BACKDROP_ID = 0
GROUND_ID = 1
FIRST_OBJECT_ID = 2
NO_SURFACE_ID = -1


# --- shapes (rest frame) -----------------------------------------------------------------------
@spec_type
@dataclass(frozen=True)
class Sphere:
    """Sphere of ``radius`` centred at the rest origin."""

    radius: float = 0.4

    def sdf(self, p: np.ndarray) -> np.ndarray:
        """Signed distance ``[N]`` at rest points ``p [N, 3]`` (negative inside)."""
        return np.sqrt(p[:, 0] ** 2 + p[:, 1] ** 2 + p[:, 2] ** 2) - self.radius

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        """First ray parameter ``s [N] > 0`` with ``o + s d`` on the surface (``inf`` on a miss).
        ``o, d [N, 3]`` in the rest frame; ``d`` need not be unit."""
        a = np.einsum("ij,ij->i", d, d)
        b = np.einsum("ij,ij->i", o, d)
        c = np.einsum("ij,ij->i", o, o) - self.radius**2
        disc = b * b - a * c
        ok = disc >= 0
        sq = np.sqrt(np.where(ok, disc, 0.0))
        s0 = (-b - sq) / a
        s1 = (-b + sq) / a
        s = np.where(s0 > 1e-9, s0, np.where(s1 > 1e-9, s1, np.inf))
        return np.where(ok, s, np.inf)

    def normal(self, p: np.ndarray) -> np.ndarray:
        """Outward unit normals ``[N, 3]`` at rest surface points ``p [N, 3]``."""
        return p / np.linalg.norm(p, axis=1, keepdims=True)

    def area(self) -> float:
        return float(4 * np.pi * self.radius**2)

    def bound(self) -> float:
        """Radius of a rest-frame sphere about the origin enclosing the shape."""
        return float(self.radius)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` points ``[n, 3]`` uniform by area on the rest surface."""
        v = rng.normal(size=(n, 3))
        return self.radius * v / np.linalg.norm(v, axis=1, keepdims=True)


@spec_type
@dataclass(frozen=True)
class Box:
    """Axis-aligned box with half extents ``half`` centred at the rest origin."""

    half: tuple = (0.3, 0.3, 0.3)

    def sdf(self, p: np.ndarray) -> np.ndarray:
        # per-component arithmetic: reductions over a length-3 axis are slow in numpy
        qx, qy, qz = (np.abs(p[:, k]) - self.half[k] for k in range(3))
        outside = np.sqrt(np.maximum(qx, 0.0) ** 2 + np.maximum(qy, 0.0) ** 2 + np.maximum(qz, 0.0) ** 2)
        return outside + np.minimum(np.maximum(np.maximum(qx, qy), qz), 0.0)

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        h = np.asarray(self.half, np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / d
            t1 = (-h - o) * inv
            t2 = (h - o) * inv
        # a ray parallel to a slab: inside it -> unbounded, outside -> miss
        par = d == 0
        inside_slab = np.abs(o) <= h
        lo = np.where(par, np.where(inside_slab, -np.inf, np.inf), np.minimum(t1, t2))
        hi = np.where(par, np.where(inside_slab, np.inf, -np.inf), np.maximum(t1, t2))
        tn, tf = lo.max(axis=1), hi.min(axis=1)
        hit = (tn <= tf) & (tf > 1e-9)
        return np.where(hit, np.where(tn > 1e-9, tn, tf), np.inf)

    def normal(self, p: np.ndarray) -> np.ndarray:
        """Outward unit normals ``[N, 3]`` at rest surface points ``p [N, 3]`` (the face's; on an
        edge, the face the point is relatively closest to)."""
        k = np.argmax(np.abs(p) / np.asarray(self.half, np.float64), axis=1)
        n = np.zeros_like(p)
        n[np.arange(p.shape[0]), k] = np.sign(p[np.arange(p.shape[0]), k])
        return n

    def area(self) -> float:
        a, b, c = self.half
        return float(8 * (a * b + b * c + a * c))

    def bound(self) -> float:
        return float(np.linalg.norm(self.half))

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        h = np.asarray(self.half, np.float64)
        face_area = np.array([h[1] * h[2], h[0] * h[2], h[0] * h[1]] * 2)
        face = rng.choice(6, size=n, p=face_area / face_area.sum())
        p = (rng.random((n, 3)) * 2 - 1) * h
        ax = face % 3
        sign = np.where(face < 3, 1.0, -1.0)
        p[np.arange(n), ax] = sign * h[ax]
        return p


# --- scene parts ---------------------------------------------------------------------------------
@spec_type
@dataclass(frozen=True)
class SceneObject:
    """A foreground object: rest ``shape`` with a solid ``texture``, moved by ``motions`` (in order)."""

    name: str
    shape: Sphere | Box
    texture: Texture
    motions: list = field(default_factory=list)


@spec_type
@dataclass(frozen=True)
class Backdrop:
    """Static textured dome (inside of a sphere) enclosing scene and cameras: every ray hits a
    real surface at finite depth."""

    radius: float = 6.0
    center: tuple = (0.0, 0.0, 0.0)
    texture: Texture = Texture("marble", ((0.25, 0.35, 0.6), (0.7, 0.75, 0.85), (0.35, 0.55, 0.4)), scale=1.2, axis=(1.0, 0.3, 0.6))


@spec_type
@dataclass(frozen=True)
class Ground:
    """Static textured plane ``y = height`` (world), inside the backdrop."""

    height: float = 0.0
    texture: Texture = Texture("checker", ((0.45, 0.4, 0.35), (0.8, 0.75, 0.65)), scale=0.5, softness=0.7)


@spec_type
@dataclass(frozen=True)
class ArcRig:
    """Freeze-time camera trajectory: views on a horizontal arc around ``target``, static in time.

    Camera ``i`` of ``V`` sits at azimuth ``center_azimuth + arc (i / (V-1) - 1/2)`` degrees
    (azimuth 0 = on the +z axis, positive towards +x), horizontal distance ``radius`` from
    ``target`` and ``height`` above it, looking at ``target`` with world +y up. Horizontal field
    of view ``fov_deg``; square pixels; principal point at the image centre.
    """

    target: tuple = (0.0, 0.4, 0.0)
    radius: float = 2.6
    height: float = 0.8
    arc_deg: float = 75.0
    fov_deg: float = 42.0
    center_azimuth_deg: float = 0.0

    def cameras(self, views: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """``(K [V, 3, 3] pixels, w2c [V, 4, 4] OpenCV world-to-camera)`` for image ``size = (H, W)``."""
        H, W = size
        from recon.grid import fov_intrinsics

        K = fov_intrinsics(H, W, self.fov_deg)
        frac = np.linspace(-0.5, 0.5, views) if views > 1 else np.zeros(1)
        az = np.radians(self.center_azimuth_deg + self.arc_deg * frac)
        tgt = np.asarray(self.target, np.float64)
        w2c = np.stack([self.look_at(tgt + np.array([self.radius * np.sin(a), self.height, self.radius * np.cos(a)]))
                        for a in az])
        return np.broadcast_to(K, (views, 3, 3)).copy(), w2c

    def look_at(self, centre: np.ndarray) -> np.ndarray:
        """``[4, 4]`` OpenCV world-to-camera of a camera at ``centre`` looking at ``target``, world +y up."""
        c = np.asarray(centre, np.float64)
        z = np.asarray(self.target, np.float64) - c
        z /= np.linalg.norm(z)
        x = np.cross(z, np.array([0.0, 1.0, 0.0]))
        x /= np.linalg.norm(x)
        y = np.cross(z, x)  # OpenCV: y down
        R = np.stack([x, y, z])
        w2c = np.eye(4)
        w2c[:3, :3] = R
        w2c[:3, 3] = -R @ c
        return w2c

    def novel_cameras(self, fractions: tuple[float, ...], size: tuple[int, int],
                      elevation_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Cameras that are not on the grid: at arc positions ``fractions`` (-0.5 .. 0.5, the
        arc's ends; the grid's views sit at ``linspace(-0.5, 0.5, V)``), on the sphere around
        ``target`` through the arc, raised by ``elevation_deg`` above the arc's elevation.
        Returns ``(K [E, 3, 3], w2c [E, 4, 4])`` like :meth:`cameras`."""
        from recon.grid import fov_intrinsics

        H, W = size
        rho = float(np.hypot(self.radius, self.height))
        el = np.arctan2(self.height, self.radius) + np.radians(elevation_deg)
        tgt = np.asarray(self.target, np.float64)
        w2c = []
        for f in fractions:
            a = np.radians(self.center_azimuth_deg + self.arc_deg * float(f))
            w2c.append(self.look_at(tgt + rho * np.array([np.cos(el) * np.sin(a), np.sin(el), np.cos(el) * np.cos(a)])))
        K = fov_intrinsics(H, W, self.fov_deg)
        return np.broadcast_to(K, (len(fractions), 3, 3)).copy(), np.stack(w2c)


@spec_type
@dataclass(frozen=True)
class Scene:
    """A procedural 4D scene. ``shading`` in [0, 1] mixes in view-independent Lambertian shading
    of foreground objects from direction ``light`` (0 = unlit albedo, colour is then a function
    of the surface point only)."""

    objects: list = field(default_factory=list)
    backdrop: Backdrop = Backdrop()
    ground: Ground | None = Ground()
    rig: ArcRig = ArcRig()
    shading: float = 0.0
    light: tuple = (0.4, 1.0, 0.6)

    # --- ids -------------------------------------------------------------------------------
    @property
    def foreground_ids(self) -> list[int]:
        """Object ids of the foreground objects (``FIRST_OBJECT_ID + i``)."""
        return [FIRST_OBJECT_ID + i for i in range(len(self.objects))]

    def object_names(self) -> dict[int, str]:
        """Id -> name for every id that can appear in ``object_id``."""
        names = {BACKDROP_ID: "backdrop", GROUND_ID: "ground"}
        names.update({FIRST_OBJECT_ID + i: o.name for i, o in enumerate(self.objects)})
        return names

    def _obj(self, oid: int) -> SceneObject:
        return self.objects[oid - FIRST_OBJECT_ID]

    # --- exact geometry --------------------------------------------------------------------
    def world_points(self, object_id: np.ndarray, surface: np.ndarray, time: float) -> np.ndarray:
        """World positions ``[N, 3]`` at ``time`` of rest points ``surface [N, 3]`` of objects
        ``object_id [N]`` (exact trajectories; NaN where ``object_id == -1``)."""
        object_id = np.asarray(object_id).reshape(-1)
        surface = np.asarray(surface, np.float64).reshape(-1, 3)
        out = surface.copy()
        out[object_id == NO_SURFACE_ID] = np.nan
        for oid in np.unique(object_id):
            if oid >= FIRST_OBJECT_ID:
                sel = object_id == oid
                out[sel] = chain_forward(self._obj(int(oid)).motions, surface[sel], time)
        return out

    def rest_points(self, object_id: np.ndarray, world: np.ndarray, time: float) -> np.ndarray:
        """Inverse of :meth:`world_points`: world points ``[N, 3]`` at ``time`` -> rest ``[N, 3]``."""
        object_id = np.asarray(object_id).reshape(-1)
        out = np.asarray(world, np.float64).reshape(-1, 3).copy()
        out[object_id == NO_SURFACE_ID] = np.nan
        for oid in np.unique(object_id):
            if oid >= FIRST_OBJECT_ID:
                sel = object_id == oid
                out[sel] = chain_inverse(self._obj(int(oid)).motions, out[sel], time)
        return out

    def implicit(self, oid: int, world: np.ndarray, time: float) -> np.ndarray:
        """Implicit function ``[N]`` of foreground object ``oid`` at world points ``[N, 3]``:
        the rest-frame signed distance of the pulled-back point (negative inside; a true
        distance only for rigid motion, the sign is exact for all)."""
        obj = self._obj(oid)
        return obj.shape.sdf(chain_inverse(obj.motions, world, time))

    def inside(self, points: np.ndarray, time: float, tol: float = 0.0) -> np.ndarray:
        """``bool [N]``: world points ``[N, 3]`` inside or on (within ``tol``) any foreground object at ``time``."""
        points = np.asarray(points, np.float64).reshape(-1, 3)
        out = np.zeros(points.shape[0], bool)
        for oid in self.foreground_ids:
            out |= self.implicit(oid, points, time) <= tol
        return out

    def area_stretch(self, oid: int, rest: np.ndarray, time: float, h: float = 1e-5) -> np.ndarray:
        """Deformed / rest surface area element ``[N]`` of object ``oid`` at rest surface points
        ``rest [N, 3]`` (Nanson: ``det(J) |J^-T n|``, ``J`` the motion's Jacobian by central
        differences); 1 for rigid motion."""
        obj = self._obj(oid)
        J = np.stack([(chain_forward(obj.motions, rest + h * e, time) - chain_forward(obj.motions, rest - h * e, time)) / (2 * h) for e in np.eye(3)], axis=2)
        n = obj.shape.normal(rest)
        JinvT_n = np.linalg.solve(np.swapaxes(J, 1, 2), n[..., None])[..., 0]
        return np.linalg.det(J) * np.linalg.norm(JinvT_n, axis=1)

    def sample_surface(self, n: int, time: float, seed: int = 0, foreground_only: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Ground-truth surface samples at ``time``: ``(points [n, 3] world, object_id [n] int16)``.

        Points are uniform by area of the surfaces *at* ``time`` (deformation and scaling
        included: rest samples are thinned by :meth:`area_stretch`), with ``n`` shared among the
        foreground objects in proportion to their current area. Objects overlapping each other
        keep their hidden parts. With ``foreground_only=False`` the ground disc within the rig's
        radius of its target is included too.
        """
        rng = np.random.default_rng(seed)
        est = np.random.default_rng(7)  # area estimates do not depend on the seed
        parts: list[tuple[int, float, float]] = []  # (id, current area, max stretch)
        for oid in self.foreground_ids:
            shape = self._obj(oid).shape
            r = self.area_stretch(oid, shape.sample(4096, est), time)
            parts.append((oid, shape.area() * float(r.mean()), float(r.max()) * 1.05))
        ground_r = self.rig.radius
        if not foreground_only and self.ground is not None:
            parts.append((GROUND_ID, float(np.pi * ground_r**2), 1.0))
        if not parts:
            return np.zeros((0, 3)), np.zeros(0, np.int16)
        areas = np.array([a for _, a, _ in parts])
        counts = rng.multinomial(n, areas / areas.sum())
        pts, ids = [], []
        for (oid, _, rmax), k in zip(parts, counts):
            if oid == GROUND_ID:
                r = ground_r * np.sqrt(rng.random(k))
                a = rng.random(k) * 2 * np.pi
                tg = self.rig.target
                rest = np.stack([tg[0] + r * np.cos(a), np.full(k, self.ground.height), tg[2] + r * np.sin(a)], 1)
            else:
                shape, got = self._obj(oid).shape, []
                while sum(len(g) for g in got) < k:  # rejection: accept with stretch / max stretch
                    cand = shape.sample(2 * int(k) + 64, rng)
                    keep = rng.random(cand.shape[0]) * rmax < self.area_stretch(oid, cand, time)
                    got.append(cand[keep])
                rest = np.concatenate(got)[: int(k)]
            pts.append(self.world_points(np.full(k, oid), rest, time))
            ids.append(np.full(k, oid, np.int16))
        return np.concatenate(pts), np.concatenate(ids)

    def world_bound(self, oid: int, time: float, samples: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """A world axis-aligned box ``(lo [3], hi [3])`` enclosing foreground object ``oid`` at
        ``time`` (dense forward-mapped rest samples plus a margin; bounds the ray marching)."""
        obj = self._obj(oid)
        rest = obj.shape.sample(samples, np.random.default_rng(12345))
        if isinstance(obj.shape, Box):
            rest = np.concatenate([rest, np.array(np.meshgrid(*[[-h, h] for h in obj.shape.half])).reshape(3, -1).T])
        w = chain_forward(obj.motions, rest, time)
        lo, hi = w.min(0), w.max(0)
        margin = 0.05 * float(np.linalg.norm(hi - lo)) + 0.02
        return lo - margin, hi + margin
