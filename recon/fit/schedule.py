"""Learning-rate schedules and small optimiser helpers shared by the fitting stages."""

from __future__ import annotations

import math

import torch


def exp_decay(lr_start: float, lr_end: float, step: int, total: int) -> float:
    """Log-linear interpolation from ``lr_start`` (step 0) to ``lr_end`` (step ``total``), as 3DGS's
    position schedule; constant ``lr_start`` when ``lr_end`` equals it or ``total`` <= 0."""
    if total <= 0 or lr_start <= 0 or lr_end <= 0:
        return lr_start
    f = min(max(step / total, 0.0), 1.0)
    return math.exp((1.0 - f) * math.log(lr_start) + f * math.log(lr_end))


def cell_order(cells: list[tuple[int, int]], steps: int, per_step: int, generator: torch.Generator) -> list[list[tuple[int, int]]]:
    """``steps`` batches of ``min(per_step, len(cells))`` distinct cells: epochs of seeded random
    permutations, so every training cell is seen equally often and the order is reproducible."""
    per_step = max(1, min(per_step, len(cells)))
    out: list[list[tuple[int, int]]] = []
    queue: list[int] = []
    for _ in range(steps):
        batch: list[int] = []
        while len(batch) < per_step:
            if not queue:
                queue = torch.randperm(len(cells), generator=generator).tolist()
            idx = queue.pop()
            if idx not in batch:
                batch.append(idx)
        out.append([cells[i] for i in batch])
    return out


def time_batches(cells: list[tuple[int, int]], steps: int, per_step: int, generator: torch.Generator,
                 curriculum: tuple[int, int] | None = None) -> list[list[tuple[int, int]]]:
    """``steps`` batches of cells (view, time) that share one time each: times cycle through seeded
    random permutations, the views of a batch are a seeded random subset of the cells at that
    time. One time per batch means one evaluation of the temporal MLP per step.

    ``curriculum = (ref, ramp)``: a temporal curriculum -- at step ``k`` only the time indices
    within ``ceil(d * k / ramp)`` of ``ref`` are drawn (``d``: the largest distance of a time from
    ``ref``), so motion is learned outward from the reference time in small increments (a
    Gaussian can only follow an object whose image still overlaps its own)."""
    by_time: dict[int, list[tuple[int, int]]] = {}
    for c in cells:
        by_time.setdefault(c[1], []).append(c)
    times = sorted(by_time)
    out: list[list[tuple[int, int]]] = []
    queue: list[int] = []
    span = max(abs(t - curriculum[0]) for t in times) if curriculum else 0
    allowed = times
    for k in range(steps):
        if curriculum and curriculum[1] > 0 and k <= curriculum[1]:
            reach = math.ceil(span * k / curriculum[1])
            now = [t for t in times if abs(t - curriculum[0]) <= reach] or [min(times, key=lambda t: abs(t - curriculum[0]))]
            if now != allowed:
                allowed, queue = now, []
        elif allowed is not times:
            allowed, queue = times, []
        if not queue:
            queue = [allowed[i] for i in torch.randperm(len(allowed), generator=generator).tolist()]
        group = by_time[queue.pop()]
        pick = torch.randperm(len(group), generator=generator)[: max(1, per_step)].tolist()
        out.append([group[k] for k in sorted(pick)])
    return out
