"""Procedural ground-truth 4D scenes, rendered by an analytic ray caster.

``make_grid(scene=..., views=, frames=, size=(H, W), seed=, inconsistency=)`` returns a
:class:`~recon.grid.FrameGrid` whose extras hold exact ground truth: ``depth`` (z-depth),
``object_id`` and ``surface`` (each pixel's point in its object's rest frame). The scene is
stored in ``grid.meta["synth"]``; :func:`scene_from_meta` rebuilds it, and its
:meth:`~Scene.world_points`, :meth:`~Scene.sample_surface` and :meth:`~Scene.inside` give
exact trajectories, surface samples and occupancy at any time. Grids stored compactly (without
``surface``, e.g. ``data/sample``) get it back from :func:`ensure_ground_truth`.

Modules: :mod:`.scene` (language: shapes, objects, backdrop, ground, camera arc),
:mod:`.motion` (invertible motions), :mod:`.texture` (solid textures), :mod:`.raycast`
(renderer), :mod:`.inconsistency` (generator-like perturbations), :mod:`.scenes` (named scenes).
"""

from recon.synth.make import ensure_ground_truth, make_grid, render_time, scene_from_meta
from recon.synth.motion import Bend, Bounce, Drift, Rotate, Scale, Spin, Translate, Twist, Wave
from recon.synth.scene import (
    BACKDROP_ID,
    FIRST_OBJECT_ID,
    GROUND_ID,
    NO_SURFACE_ID,
    ArcRig,
    Backdrop,
    Box,
    Ground,
    Scene,
    SceneObject,
    Sphere,
)
from recon.synth.scenes import SCENES, build_scene
from recon.synth.texture import Texture

__all__ = [
    "BACKDROP_ID", "FIRST_OBJECT_ID", "GROUND_ID", "NO_SURFACE_ID", "SCENES",
    "ArcRig", "Backdrop", "Bend", "Bounce", "Box", "Drift", "Ground", "Rotate", "Scale", "Scene",
    "SceneObject", "Sphere", "Spin", "Texture", "Translate", "Twist", "Wave",
    "build_scene", "ensure_ground_truth", "make_grid", "render_time", "scene_from_meta",
]
