"""Named procedural scenes (:data:`SCENES`) and ``random`` scenes built from a seed.

Every builder is ``builder(seed) -> Scene``. The named scenes keep their layout and motions
fixed (the seed only varies noise textures); ``random`` draws everything from the seed. Motion
is moderate by design (a few pixels per frame at 128 px) so a reconstruction can follow it.
Layout: world y up, ground at y = 0, objects within ~1 unit of the origin, cameras on an arc of
radius 2.6 looking at (0, 0.4, 0) (see :class:`~recon.synth.scene.ArcRig`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from recon.errors import InputError
from recon.synth.motion import Bend, Bounce, Drift, Rotate, Scale, Spin, Translate, Twist, Wave
from recon.synth.scene import ArcRig, Backdrop, Box, Ground, Scene, SceneObject, Sphere
from recon.synth.texture import PATTERNS, Texture

# palettes: saturated, mutually distinct, mid-luminance (no clipping after colour shifts)
RED = ((0.85, 0.25, 0.2), (0.95, 0.75, 0.3))
BLUE = ((0.15, 0.3, 0.75), (0.45, 0.8, 0.9))
GREEN = ((0.2, 0.55, 0.25), (0.75, 0.85, 0.35), (0.15, 0.35, 0.3))
PURPLE = ((0.5, 0.2, 0.6), (0.9, 0.6, 0.8))
ORANGE = ((0.9, 0.5, 0.15), (0.35, 0.2, 0.1), (0.95, 0.9, 0.7))
TEAL = ((0.1, 0.5, 0.5), (0.8, 0.9, 0.85))
PALETTES = (RED, BLUE, GREEN, PURPLE, ORANGE, TEAL)
UP = (0.0, 1.0, 0.0)


def _orbit(seed: int, static: bool = False) -> Scene:
    def m(*motions):
        return [x for x in motions if not (static and isinstance(x, (Spin, Bounce)))]

    return Scene(
        objects=[
            SceneObject("pedestal", Box((0.32, 0.32, 0.32)), Texture("checker", RED, scale=0.2, softness=0.35, seed=seed),
                        m(Rotate(UP, 0.4), Spin(UP, turns=0.08), Translate((0.0, 0.32, 0.0)))),
            SceneObject("moon_a", Sphere(0.28), Texture("marble", BLUE, scale=0.3, axis=(1, 1, 0), seed=seed + 1),
                        m(Spin((1, 0, 0), turns=0.1), Translate((0.62, 0.45, 0.4)), Spin(UP, turns=0.1))),
            SceneObject("moon_b", Sphere(0.22), Texture("stripes", GREEN, scale=0.22, axis=(0, 1, 1), seed=seed + 2),
                        m(Translate((-0.7, 0.62, -0.1)), Spin(UP, turns=0.1))),
        ],
        ground=Ground(texture=Texture("checker", ((0.5, 0.45, 0.4), (0.8, 0.78, 0.7)), scale=0.5, softness=0.7, seed=seed + 3)),
        backdrop=Backdrop(texture=Texture("marble", ((0.3, 0.4, 0.65), (0.75, 0.78, 0.85), (0.4, 0.6, 0.45)), scale=1.2, axis=(1.0, 0.3, 0.6), seed=seed + 4)),
    )


def orbit(seed: int = 0) -> Scene:
    """A spinning textured box; two spheres orbiting it (rigid motion)."""
    return _orbit(seed)


def static(seed: int = 0) -> Scene:
    """The ``orbit`` layout without motion (a static scene, for the canonical stage alone)."""
    return _orbit(seed, static=True)


def bounce(seed: int = 0) -> Scene:
    """Balls hopping on the ground with squash-and-stretch, a box sliding (rigid + scaling)."""
    squash = Scale((1, 1, 1), (0.08, -0.12, 0.08), cycles=1.0, phase=np.pi / 2)
    return Scene(
        objects=[
            SceneObject("ball_a", Sphere(0.3), Texture("checker", ORANGE, scale=0.18, seed=seed),
                        [squash, Translate((-0.55, 0.32, 0.1)), Bounce(0.35, bounces=1.0)]),
            SceneObject("ball_b", Sphere(0.25), Texture("rings", TEAL, scale=0.2, seed=seed + 1),
                        [Translate((0.55, 0.27, -0.15)), Bounce(0.3, bounces=1.0, phase=np.pi / 2)]),
            SceneObject("crate", Box((0.25, 0.2, 0.25)), Texture("stripes", PURPLE, scale=0.16, axis=(1, 0, 1), seed=seed + 2),
                        [Translate((0.0, 0.2, 0.55)), Drift((0.25, 0.0, -0.1))]),
        ],
    )


def twist(seed: int = 0) -> Scene:
    """Non-rigid: a twisting pillar, a bending column, a waving slab."""
    return Scene(
        objects=[
            SceneObject("pillar", Box((0.2, 0.5, 0.2)), Texture("checker", RED, scale=0.14, seed=seed),
                        [Twist(axis=1, amount=1.4, cycles=0.5), Translate((-0.6, 0.5, 0.0))]),
            SceneObject("column", Box((0.16, 0.45, 0.16)), Texture("marble", BLUE, scale=0.25, seed=seed + 1),
                        [Translate((0.0, 0.45, 0.0)), Bend(axis=1, direction=0, amount=0.35, cycles=0.5), Translate((0.55, 0.0, 0.1))]),
            SceneObject("slab", Box((0.35, 0.22, 0.08)), Texture("stripes", GREEN, scale=0.15, axis=(1, 1, 0), seed=seed + 2),
                        [Wave(axis=0, direction=2, amplitude=0.06, wavelength=0.7, cycles=0.5), Translate((0.0, 0.35, 0.6))]),
        ],
    )


def grow(seed: int = 0) -> Scene:
    """Objects growing and shrinking (time-varying scale)."""
    return Scene(
        objects=[
            SceneObject("bulb", Sphere(0.3), Texture("noise", GREEN, scale=0.12, seed=seed),
                        [Scale((1, 1, 1), (0.3, 0.3, 0.3), cycles=0.5), Translate((-0.5, 0.42, 0.0))]),
            SceneObject("tower", Box((0.2, 0.3, 0.2)), Texture("checker", PURPLE, scale=0.15, seed=seed + 1),
                        [Translate((0.0, 0.3, 0.0)), Scale((1, 1, 1), (0.0, 0.35, 0.0), cycles=0.5), Translate((0.5, 0.0, -0.1))]),
            SceneObject("pebble", Sphere(0.18), Texture("rings", ORANGE, scale=0.12, seed=seed + 2),
                        [Scale((1.2, 0.8, 1.0), (-0.2, 0.25, 0.0), cycles=1.0), Translate((0.05, 0.2, 0.6))]),
        ],
    )


def mixed(seed: int = 0) -> Scene:
    """Everything at once, with Lambertian shading: orbit, bounce, twist, bend, growth."""
    return Scene(
        objects=[
            SceneObject("pillar", Box((0.18, 0.45, 0.18)), Texture("checker", RED, scale=0.15, seed=seed),
                        [Twist(axis=1, amount=1.2, cycles=0.5), Translate((0.0, 0.45, -0.2))]),
            SceneObject("moon", Sphere(0.22), Texture("marble", BLUE, scale=0.25, seed=seed + 1),
                        [Translate((0.75, 0.55, 0.2)), Spin(UP, turns=0.12)]),
            SceneObject("ball", Sphere(0.2), Texture("rings", ORANGE, scale=0.15, seed=seed + 2),
                        [Scale((1, 1, 1), (0.2, 0.2, 0.2), cycles=0.5), Translate((-0.6, 0.22, 0.35)), Bounce(0.3)]),
            SceneObject("reed", Box((0.08, 0.35, 0.08)), Texture("stripes", GREEN, scale=0.12, seed=seed + 3),
                        [Translate((0.0, 0.35, 0.0)), Bend(axis=1, direction=2, amount=0.5, cycles=0.5), Translate((-0.45, 0.0, -0.45))]),
        ],
        shading=0.3,
    )


def random_scene(seed: int = 0) -> Scene:
    """2-4 objects with shapes, textures, placements and motions drawn from ``seed``."""
    rng = np.random.default_rng([seed, 4242])
    n = int(rng.integers(2, 5))
    angles = rng.permutation(np.linspace(0, 2 * np.pi, n, endpoint=False)) + rng.uniform(0, 2 * np.pi)
    objects = []
    for i in range(n):
        if rng.random() < 0.5:
            shape = Sphere(float(rng.uniform(0.18, 0.32)))
            lift = shape.radius
        else:
            half = tuple(float(h) for h in rng.uniform(0.12, 0.3, 3))
            shape = Box(half)
            lift = half[1]
        r = float(rng.uniform(0.3, 0.85)) if n > 1 else 0.0
        pos = (r * np.cos(angles[i]), lift + float(rng.uniform(0.0, 0.2)), r * np.sin(angles[i]))
        tex = Texture(str(rng.choice([p for p in PATTERNS if p != "gradient"])), PALETTES[int(rng.integers(len(PALETTES)))],
                      scale=float(rng.uniform(0.12, 0.3)), axis=tuple(float(a) for a in rng.normal(size=3)), seed=int(rng.integers(1 << 16)))
        local: list = []
        kind = str(rng.choice(["rigid", "twist", "bend", "wave", "scale"]))
        if kind == "twist":
            local.append(Twist(axis=1, amount=float(rng.uniform(0.6, 1.5)), cycles=0.5))
        elif kind == "bend":
            local.append(Bend(axis=1, direction=int(rng.choice([0, 2])), amount=float(rng.uniform(0.2, 0.5)), cycles=0.5))
        elif kind == "wave":
            local.append(Wave(axis=1, direction=0, amplitude=float(rng.uniform(0.02, 0.05)), wavelength=float(rng.uniform(0.5, 1.0))))
        elif kind == "scale":
            local.append(Scale((1, 1, 1), tuple(float(a) for a in rng.uniform(-0.25, 0.25, 3)), cycles=0.5))
        local.append(Spin(UP, turns=float(rng.uniform(-0.1, 0.1)), phase=float(rng.uniform(0, 2 * np.pi))))
        world: list = [Translate(tuple(float(x) for x in pos))]
        glob = str(rng.choice(["orbit", "bounce", "drift", "none"]))
        if glob == "orbit":
            world.append(Spin(UP, turns=float(rng.uniform(-0.1, 0.1))))
        elif glob == "bounce":
            world.append(Bounce(float(rng.uniform(0.1, 0.3)), bounces=float(rng.choice([0.5, 1.0]))))
        elif glob == "drift":
            world.append(Drift(tuple(float(v) for v in rng.uniform(-0.25, 0.25, 3) * (1, 0, 1))))
        objects.append(SceneObject(f"obj{i}_{kind}", shape, tex, local + world))
    return Scene(
        objects=objects,
        backdrop=Backdrop(texture=Texture("marble", PALETTES[int(rng.integers(len(PALETTES)))], scale=1.2, axis=(1.0, 0.3, 0.6), seed=int(rng.integers(1 << 16)))),
        ground=Ground(texture=Texture("checker", ((0.5, 0.45, 0.4), (0.8, 0.78, 0.7)), scale=float(rng.uniform(0.35, 0.6)))),
        rig=ArcRig(center_azimuth_deg=float(rng.uniform(-30, 30))),
        shading=float(rng.choice([0.0, 0.3])),
    )


SCENES: dict[str, Callable[[int], Scene]] = {
    "orbit": orbit,
    "bounce": bounce,
    "twist": twist,
    "grow": grow,
    "mixed": mixed,
    "static": static,
    "random": random_scene,
}
"""Scene name -> ``builder(seed) -> Scene``."""


def build_scene(name: str, seed: int = 0) -> Scene:
    """The scene registered as ``name`` in :data:`SCENES`; :class:`InputError` lists valid names."""
    if name not in SCENES:
        raise InputError(f"unknown scene {name!r}; valid scenes: {', '.join(SCENES)}", field="scene")
    return SCENES[name](int(seed))
