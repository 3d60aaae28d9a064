"""Learning-rate schedules and small optimiser helpers shared by the fitting stages."""

from __future__ import annotations

import math

import numpy as np
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


class CurriculumBatches:
    """A loss-driven temporal curriculum: a lazy sequence of ``steps`` one-time batches (after the
    batches of ``prefix``, e.g. a static warm-up) whose admitted times widen from ``ref`` on each
    side separately, *between* two fixed schedules of :func:`time_batches`.

    ``fast`` and ``slow`` (steps, ``fast <= slow``) are the ramps of the fastest and the slowest
    admissible schedule: at step ``k`` a side's reach (distance in time indices from ``ref``) is at
    least ``ceil(d * k / slow)`` and at most ``ceil(d * k / fast)`` (``d``: the largest distance of a
    time from ``ref``, as in :func:`time_batches`). Between the two, a side advances by one time
    when its frontier (its farthest admitted time) has been drawn since it was admitted and its last
    photometric loss is at most ``ratio`` x the median of the last losses of the admitted times: a
    new time enters once the fit explains the outermost one about as well as the rest (a Gaussian can
    only follow an object whose image still overlaps its own; widening past a frame the fit has not
    caught up with loses the object there). A newly admitted time is drawn next, so its loss is seen
    at once. The fit reports each step's loss with :meth:`observe` (``FitEngine.run`` does).

    Iterating yields batches of ``min(per_step, cells at that time)`` cells ``(view, time)``; the
    sequence depends on the observed losses, so it is reproducible given the same fit (seeded
    ``generator``, deterministic losses). ``len()`` is ``len(prefix) + steps``.
    """

    def __init__(self, cells: list[tuple[int, int]], steps: int, per_step: int, generator: torch.Generator,
                 ref: int, fast: int, slow: int, ratio: float, prefix: list[list[tuple[int, int]]] | None = None):
        if not cells:
            raise ValueError("no cells")
        self.prefix = list(prefix or [])
        self.steps, self.per_step, self.g = int(steps), max(1, int(per_step)), generator
        self.by_time: dict[int, list[tuple[int, int]]] = {}
        for c in cells:
            self.by_time.setdefault(c[1], []).append(c)
        self.times = sorted(self.by_time)
        self.ref = int(ref)
        self.fast, self.slow = max(1, int(fast)), max(1, int(slow), int(fast))
        self.ratio = float(ratio)
        self.span = max(abs(t - self.ref) for t in self.times)
        # per side (-1 before ref, +1 after): the distances of its times, ascending
        self.side = {s: sorted(abs(t - self.ref) for t in self.times if (t - self.ref) * s > 0) for s in (-1, 1)}
        self.reach = {-1: 0, 1: 0}
        self.last: dict[int, float] = {}
        self.admitted_at: dict[int, int] = {}
        self.seen_since: set[int] = set()
        self.forced = {-1: 0, 1: 0}
        self.advanced = {-1: 0, 1: 0}
        self.full_at: dict[int, int | None] = {-1: None, 1: None}
        self.trace: list[tuple[int, int, int]] = []

    def __len__(self) -> int:
        return len(self.prefix) + self.steps

    def _allowed(self) -> list[int]:
        now = [t for t in self.times if (t <= self.ref and self.ref - t <= self.reach[-1])
               or (t >= self.ref and t - self.ref <= self.reach[1])]
        return now or [min(self.times, key=lambda t: abs(t - self.ref))]

    def _frontier(self, s: int) -> int | None:
        ds = [d for d in self.side[s] if d <= self.reach[s]]
        if not ds:
            return min(self.times, key=lambda t: abs(t - self.ref))
        return self.ref + s * ds[-1]

    def _ready(self, s: int, allowed: list[int]) -> bool:
        f = self._frontier(s)
        if f is None or f not in self.seen_since:
            return False
        losses = [self.last[t] for t in allowed if t in self.last]
        return bool(losses) and self.last[f] <= self.ratio * float(np.median(losses))

    def _update(self, k: int, allowed: list[int]) -> None:
        for s in (-1, 1):
            if not self.side[s] or self.reach[s] >= self.side[s][-1]:
                continue
            lo = math.ceil(self.span * k / self.slow)
            hi = math.ceil(self.span * k / self.fast)
            nxt = next(d for d in self.side[s] if d > self.reach[s])
            if lo >= nxt:
                self.reach[s] = max(d for d in self.side[s] if d <= lo)
                self.forced[s] += 1
            elif hi >= nxt and self._ready(s, allowed):
                self.reach[s] = nxt
                self.advanced[s] += 1
            if self.reach[s] >= self.side[s][-1]:
                self.full_at[s] = k

    def __iter__(self):
        yield from self.prefix
        allowed: list[int] = []
        queue: list[int] = []
        for k in range(self.steps):
            self._update(k, allowed)
            now = self._allowed()
            if now != allowed:
                new = [t for t in now if t not in allowed]
                for t in new:
                    self.admitted_at[t] = k
                    self.seen_since.discard(t)
                rest = [t for t in now if t not in new]
                queue = [rest[i] for i in torch.randperm(len(rest), generator=self.g).tolist()] + new[::-1]
                allowed = now
            if k % 50 == 0:
                self.trace.append((k, self.reach[-1], self.reach[1]))
            if not queue:
                queue = [allowed[i] for i in torch.randperm(len(allowed), generator=self.g).tolist()]
            group = self.by_time[queue.pop()]
            pick = torch.randperm(len(group), generator=self.g)[: self.per_step].tolist()
            yield [group[i] for i in sorted(pick)]

    def observe(self, step: int, batch: list[tuple[int, int]], loss: float) -> None:
        """Record the photometric loss of the step that drew ``batch`` (steps of the prefix are ignored)."""
        if step < len(self.prefix) or not batch:
            return
        t = batch[0][1]
        self.last[t] = float(loss)
        self.seen_since.add(t)

    def report(self) -> dict:
        """How the curriculum went: steps (after the prefix) at which each side reached its end, how
        many of its advances were loss-driven and how many forced by the slow bound, reach every 50 steps."""
        return {"fast_steps": self.fast, "slow_steps": self.slow, "ratio": self.ratio,
                "full_at_step": {"before": self.full_at[-1], "after": self.full_at[1]},
                "advances": {"before": self.advanced[-1], "after": self.advanced[1]},
                "forced": {"before": self.forced[-1], "after": self.forced[1]},
                "reach_every_50": self.trace}
