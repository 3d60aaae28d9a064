"""The fitted 4D scene: canonical splats + deformation field + the grid's cell cameras.

Renders any grid cell (view i, time j) with positions ``canonical + dp_i^v + dp_j^t``, viewmat
``poses[i, j]`` (canonical -> camera (i, j), OpenCV) and intrinsics ``Ks[i, j]``; gives per-time
positions without view offsets (``positions_at``) for export. Saved as one safetensors file
(tensors) plus the field's hyper-parameters in its metadata.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor

from recon.errors import InputError
from recon.model.appearance import CameraAppearance
from recon.model.deform import DeformField
from recon.model.splats import Splats
from recon.render import rasterize
from recon.render.constants import ALPHA_MIN

LIFE_MIN = ALPHA_MIN
"""A splat whose opacity at a time (peak x lifespan factor) is below this is left out of that time's
render (:meth:`DeformableScene.alive_rows`): the rasterizer culls it there anyway."""


class DeformableScene:
    """Splats ``[N]``, field, ``poses [V, T, 4, 4]``, ``Ks [V, T, 3, 3]``, ``times [T]``, image ``size (H, W)``."""

    def __init__(self, splats: Splats, field: DeformField, poses: Tensor, Ks: Tensor, times: Tensor, size: tuple[int, int],
                 to_world: Tensor | None = None, appearance: CameraAppearance | None = None,
                 background: Tensor | None = None):
        self.splats = splats
        self.field = field
        self.poses = poses.float()
        self.Ks = Ks.float()
        self.times = times.float()
        """``[T]`` float32: the times the temporal MLP sees."""
        self.source_times = times.detach().cpu().double()
        """``[T]`` float64: the same times at the precision they were given (the grid's; saved in
        the checkpoint, so an export writes the source's times, not their float32 copies)."""
        self.size = (int(size[0]), int(size[1]))
        self.to_world = torch.eye(4) if to_world is None else to_world.float()
        """[4, 4] canonical -> world (the inverse of the central camera's w2c when cameras are known)."""
        self.appearance = appearance
        """Per-camera colour response applied to renders (None: identity)."""
        self.background = None if background is None else background.float().reshape(3)
        """[3] colour behind the splats (the uniform background the images were composited on,
        e.g. white for D-NeRF); None: black."""
        self._motion_cache: dict[int, Tensor] | None = None

    @property
    def num_views(self) -> int:
        return int(self.poses.shape[0])

    @property
    def num_times(self) -> int:
        return int(self.poses.shape[1])

    @contextlib.contextmanager
    def frozen_motion(self) -> Iterator[None]:
        """Inside, dp^t of each grid time is computed once (without gradient) and reused: for a
        phase that trains neither the canonical positions nor the temporal field (e.g. the
        per-view residual), whose motion then does not change from step to step. The caller
        keeps them frozen; the cache is dropped on exit."""
        self._motion_cache = {}
        try:
            yield
        finally:
            self._motion_cache = None

    def _motion(self, j: int) -> Tensor:
        """dp^t ``[N, 3]`` of grid time index ``j`` (cached inside :meth:`frozen_motion`)."""
        cache = self._motion_cache
        if cache is None:
            return self.field.motion(self.splats.means, self.times[j])
        if j not in cache:
            with torch.no_grad():
                cache[j] = self.field.motion(self.splats.means, self.times[j])
        return cache[j]

    def cell_means(self, cells: list[tuple[int, int]], view_offsets: bool = True) -> Tensor:
        """Deformed positions ``[C, N, 3]`` (canonical coordinates) of the given cells. When the
        cells share one time and there are no per-view offsets (``view_offsets`` False, or they
        vanish: :attr:`DeformField.view_offsets_vanish`), the result is one ``[N, 3]`` tensor
        expanded over the cells (stride 0 on dim 0; :meth:`render` then projects it once)."""
        means = self.splats.means
        add_views = view_offsets and not self.field.view_offsets_vanish
        if not add_views and len({j for _, j in cells}) == 1:
            m = means + self._motion(cells[0][1])
            return m.expand(len(cells), *m.shape)
        dpt: dict[int, Tensor] = {}
        out = []
        for i, j in cells:
            if j not in dpt:
                dpt[j] = self._motion(j)
            m = means + dpt[j]
            if add_views:
                m = m + self.field.view_offset(i)
            out.append(m)
        return torch.stack(out)

    def render(self, cells: list[tuple[int, int]], backend: str = "auto", view_offsets: bool = True,
               appearance: bool = True) -> tuple[Tensor, Tensor, Tensor, dict]:
        """Render cells -> ``(rgb [C, H, W, 3], alpha [C, H, W, 1], depth [C, H, W, 1], meta)``;
        ``rgb`` has each camera's colour response applied when ``appearance`` (and the scene has one);
        ``meta["cell_means"]`` holds the rendered positions ``[C, N, 3]`` (see :meth:`cell_means`)."""
        dev = self.splats.means.device
        if self.field.has_lifespan and len({j for _, j in cells}) > 1:  # opacities differ per time: one render per cell
            parts = [self.render([c], backend, view_offsets, appearance) for c in cells]
            meta = {} if any("rows" in p[3] for p in parts) else {"cell_means": torch.cat([p[3]["cell_means"] for p in parts])}
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts]), meta
        idx_v = torch.tensor([i for i, _ in cells])
        idx_t = torch.tensor([j for _, j in cells])
        H, W = self.size
        rows = self.alive_rows(cells[0][1])
        if rows is None:
            means = self.cell_means(cells, view_offsets)
            scales = self.splats.log_scales
        else:  # only the splats alive at this time: the others' dp^t and projection cost nothing
            means = self._cell_means_rows(cells, view_offsets, rows)
            scales = self.splats.log_scales[rows]
        shared = means[0] if means.stride(0) == 0 else means  # [N or R, 3] when every cell has the same positions
        viewmats = self.poses[idx_v, idx_t].to(dev)
        opacity = self.field.opacity_logits_at(self.splats.opacity_logits, self.times[cells[0][1]])
        rgb, alpha, depth, meta = rasterize(shared, scales, opacity if rows is None else opacity[rows],
                                            self.colours(shared, viewmats, rows), viewmats, self.Ks[idx_v, idx_t].to(dev), W, H,
                                            background=None if self.background is None else self.background.to(dev),
                                            backend=backend)
        meta["cell_means"] = means  # [C, N or R, 3], in the autograd graph (terms on the positions reuse it)
        if rows is not None:  # per-splat meta (means2d, radii, ...) is of these R rows of the N
            meta["rows"], meta["num_splats"] = rows, self.splats.num
        if appearance and self.appearance is not None:
            rgb = self.appearance(rgb, idx_v)
        return rgb, alpha, depth, meta

    def colours(self, means: Tensor, viewmats: Tensor, rows: Tensor | None = None) -> Tensor:
        """The splats' colours for cameras ``viewmats [C, 4, 4]`` (canonical -> camera) with the
        splats at ``means [N, 3]`` or ``[C, N, 3]``: ``[N, 3]`` without view-dependent colour, else
        ``[C, N, 3]`` (spherical harmonics in the world frame of :attr:`to_world`, the frame the
        exported ``.ply`` is in; :mod:`recon.model.sh`). ``rows [R]``: only those splats (``means``
        then holds their R positions), ``[R, 3]`` / ``[C, R, 3]``."""
        from recon.model.sh import camera_centres, view_colours

        sp = self.splats
        if sp.sh_degree == 0:
            return sp.rgb() if rows is None else sp.rgb()[rows]
        R = self.to_world[:3, :3].to(means.device)
        if rows is None:
            return sp.view_rgb(means, camera_centres(viewmats), R)
        return view_colours(sp.colors[rows], sp.sh_rest[rows], means, camera_centres(viewmats), R)

    def alive_rows(self, j: int) -> Tensor | None:
        """Rows ``[R]`` of the splats whose opacity at grid time index ``j`` (peak opacity x
        lifespan factor) is at least :data:`LIFE_MIN`, or None when every splat's is (or there are no
        lifespans). The others are below the rasterizer's ``ALPHA_MIN`` there, so it would cull
        them anyway: leaving them out changes no pixel and no photometric gradient, and saves their
        temporal MLP and projection (terms on the rendered positions, e.g. the silhouette, then see
        the alive splats only)."""
        if not self.field.has_lifespan or self.field.lifespan.shape[0] != self.splats.num:
            return None
        with torch.no_grad():
            logits = self.field.opacity_logits_at(self.splats.opacity_logits, self.times[j])
            alive = torch.sigmoid(logits) >= LIFE_MIN
        if bool(alive.all()):
            return None
        return alive.nonzero().squeeze(1)

    def _cell_means_rows(self, cells: list[tuple[int, int]], view_offsets: bool, rows: Tensor) -> Tensor:
        """:meth:`cell_means` of the splats ``rows [R]`` only (the cells share one time): ``[C, R, 3]``,
        expanded (stride 0) when there are no per-view offsets."""
        j = cells[0][1]
        m = self.splats.means[rows]
        if self._motion_cache is not None:
            m = m + self._motion(j)[rows]
        else:
            m = m + self.field.motion_rows(m, self.times[j], rows)
        if not view_offsets or self.field.view_offsets_vanish:
            return m.expand(len(cells), *m.shape)
        return torch.stack([m + self.field.view_offset(i)[rows] for i, _ in cells])

    def means_at_time(self, time: float, view: int | None = None) -> Tensor:
        """Positions ``[N, 3]`` (canonical coordinates) at a continuous ``time`` (the grid's time
        unit, e.g. between two frames), with view ``view``'s offsets dp_i^v when given."""
        m = self.splats.means + self.field.motion(self.splats.means, torch.tensor(float(time), device=self.splats.means.device))
        return m if view is None else m + self.field.view_offset(view)

    def render_camera(self, w2c: Tensor, K: Tensor, size: tuple[int, int], time: float, view: int | None = None,
                      backend: str = "auto", means: Tensor | None = None) -> Tensor:
        """Render one free camera -> ``rgb [H, W, 3]``: ``w2c [4, 4]`` canonical -> camera (OpenCV),
        ``K [3, 3]`` pixels for ``size = (H, W)``, at continuous ``time``. ``view`` adds that grid
        view's offsets and colour response (so a grid cell's camera renders exactly as
        :meth:`render` does); None renders the exported geometry (no offsets, no colour response).
        ``means``: precomputed :meth:`means_at_time` (reused across the frames of a fixed time)."""
        dev = self.splats.means.device
        H, W = int(size[0]), int(size[1])
        m = self.means_at_time(time, view) if means is None else means
        vm = w2c.float().reshape(1, 4, 4).to(dev)
        opacity = self.field.opacity_logits_at(self.splats.opacity_logits, float(time))
        rgb, _, _, _ = rasterize(m, self.splats.log_scales, opacity, self.colours(m, vm),
                                 vm, K.float().reshape(1, 3, 3).to(dev), W, H,
                                 background=None if self.background is None else self.background.to(dev), backend=backend)
        if view is not None and self.appearance is not None:
            rgb = self.appearance(rgb, torch.tensor([view]))
        return rgb[0]

    @torch.no_grad()
    def positions_at(self, j: int, world: bool = True) -> Tensor:
        """Positions ``[N, 3]`` at time index ``j`` without view offsets (``canonical + dp_j^t``),
        in world coordinates (``to_world``) or canonical ones."""
        m = self.splats.means + self.field.motion(self.splats.means, self.times[j])
        if world:
            T = self.to_world.to(m.device)
            m = m @ T[:3, :3].T + T[:3, 3]
        return m

    # --- persistence -----------------------------------------------------------------------
    def field_config(self) -> dict[str, Any]:
        f = self.field
        return {"pos_freqs": f.pos_freqs, "time_freqs": f.time_freqs, "learn_view_offsets": f.learn_view_offsets,
                "width": f.mlp[0].out_features if len(f.mlp) > 1 else 0, "depth": (len(f.mlp) - 1) // 2,
                "activation": f.activation}

    def tensors(self) -> dict[str, Tensor]:
        out = {f"splats.{k}": v for k, v in self.splats.tensors().items()}
        out.update({f"field.{k}": v.detach().cpu().contiguous() for k, v in self.field.state_dict().items()})
        out.update(poses=self.poses.cpu(), Ks=self.Ks.cpu(), times=self.source_times, to_world=self.to_world.cpu())
        if self.background is not None:
            out["background"] = self.background.cpu()
        if self.appearance is not None:
            out.update({f"appearance.{k}": v.detach().cpu() for k, v in self.appearance.state_dict().items()})
        return {k: v.contiguous() for k, v in out.items()}

    def meta(self) -> dict[str, Any]:
        """The checkpoint metadata of this scene (the field's hyper-parameters, the image size)."""
        return {"field": self.field_config(), "size": list(self.size)}

    def save(self, path: Path, **meta: Any) -> None:
        """Write the scene checkpoint (:func:`recon.io.checkpoint.write_checkpoint`; ``meta``, e.g.
        a stage report, is added to :meth:`meta`)."""
        from recon.io.checkpoint import write_checkpoint

        write_checkpoint(path, self.tensors(), {**self.meta(), **meta})

    @classmethod
    def load(cls, path: Path, device: torch.device = torch.device("cpu")) -> "DeformableScene":
        """Read a scene checkpoint (:meth:`save`, or a run's ``checkpoints/deform.safetensors``);
        its tensors and metadata are checked (:data:`SCENE_TENSORS`, :data:`SCENE_META`) first."""
        from recon import schema as S
        from recon.io.checkpoint import read_checkpoint

        t, meta = read_checkpoint(path, "expected a recon scene checkpoint (.safetensors)", legacy=True)
        head = S.check({key: meta.get(key) for key in ("field", "size")}, SCENE_META, path, "metadata")
        fc, size = head["field"], tuple(head["size"])
        S.check_tensors(t, SCENE_TENSORS, path)
        splats = Splats.from_tensors(t, "splats.", str(path)).to(device)
        fs = {k[len("field."):]: v for k, v in t.items() if k.startswith("field.")}
        try:
            field = DeformField(fs["tracked_offsets"], fs["center"], float(fs["radius"]), tuple(fs["time_range"].tolist()),
                                fc["pos_freqs"], fc["time_freqs"], fc["width"], fc["depth"], fc["learn_view_offsets"],
                                fc["activation"] or "relu",
                                int(fs["trajectory"].shape[1]) if "trajectory" in fs else 0,
                                "lifespan" in fs and int(fs["lifespan"].shape[1]) > 0)
            fs.setdefault("lifespan", field.lifespan.detach())  # checkpoints before lifespans
            fs.setdefault("trajectory", field.trajectory.detach())  # checkpoints before the per-Gaussian paths
            fs.setdefault("dynamic", torch.ones(splats.num, dtype=torch.bool))  # checkpoints before the static/dynamic split
            field.load_state_dict(fs)
            appearance = None
            if "appearance.log_gain" in t:
                appearance = CameraAppearance(int(t["appearance.log_gain"].shape[0]))
                appearance.load_state_dict({k[len("appearance."):]: v for k, v in t.items() if k.startswith("appearance.")})
                appearance = appearance.to(device)
        except RuntimeError as e:  # load_state_dict: MLP tensors that do not match the metadata
            raise InputError(f"tensors do not match the field metadata ({' '.join(str(e).split())[:200]})", path, "field") from None
        return cls(splats, field.to(device), t["poses"], t["Ks"], t["times"], size, t["to_world"], appearance,
                   t.get("background"))


SCENE_TENSORS: dict[str, tuple] = {
    "splats.means": ("N", 3), "splats.colors": ("N", 3), "splats.log_scales": ("N",), "splats.opacity_logits": ("N",),
    "splats.sh_rest?": ("N", "S", "Cs"), "field.center": (3,), "field.radius": (), "field.time_range": (2,), "field.tracked_offsets": ("N", "V", 3),
    "field.view_correction": ("N", "V", 3), "field.dynamic?": ("N",), "field.trajectory?": ("N", "K", 3), "field.lifespan?": ("N", "L"), "poses": ("V", "T", 4, 4), "Ks": ("V", "T", 3, 3),
    "times": ("T",), "to_world": (4, 4), "background?": (3,), "appearance.log_gain?": ("V", 3),
    "appearance.bias?": ("V", 3), "appearance.trained?": ("V",),
}
"""Tensors of a scene checkpoint (N splats, V views, T times; ``?``: optional); the MLP's are
checked against the ``field`` metadata when they are loaded."""


def _scene_meta():
    from recon import schema as S
    from recon.model.deform import ACTIVATIONS

    return S.Obj({
        "field": S.Obj({"pos_freqs": S.Int(min=0, max=16), "time_freqs": S.Int(min=0, max=16),
                        "width": S.Int(min=0, max=4096), "depth": S.Int(min=0, max=64),
                        "learn_view_offsets": S.Bool(), "activation": S.Optional(S.Str(tuple(ACTIVATIONS)))}),
        "size": S.List(S.Int(min=1, max=1 << 16), min_len=2, max_len=2),
    })


SCENE_META = _scene_meta()
"""Metadata of a scene checkpoint: the field's hyper-parameters and the image size [H, W]."""
