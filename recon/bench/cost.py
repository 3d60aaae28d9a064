"""Cost measurements: wall time, peak memory during a call, size of what a run wrote."""

from __future__ import annotations

import os
import resource
import threading
import time
from pathlib import Path

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss() -> int | None:
    """Resident set size of this process in bytes (Linux ``/proc/self/statm``), None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


class PeakMemory:
    """Context manager sampling this process's RSS every ``interval`` seconds (a daemon thread).

    ``peak_rss`` is the largest sample in bytes, ``delta_rss`` its excess over the RSS on entry
    (what the measured work added). On CUDA devices ``peak_cuda`` is ``torch.cuda.max_memory_allocated``
    over the block. Where ``/proc`` is missing, ``peak_rss`` falls back to ``ru_maxrss`` (the process'
    lifetime peak, an upper bound)."""

    def __init__(self, device: torch.device | None = None, interval: float = 0.05):
        self.device = device
        self.interval = interval
        self.peak_rss: int | None = None
        self.delta_rss: int | None = None
        self.peak_cuda: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            r = current_rss()
            if r is not None and (self.peak_rss is None or r > self.peak_rss):
                self.peak_rss = r

    def __enter__(self) -> "PeakMemory":
        self._start = current_rss()
        self.peak_rss = self._start
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        r = current_rss()
        if r is not None and (self.peak_rss is None or r > self.peak_rss):
            self.peak_rss = r
        if self.peak_rss is None:
            self.peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.delta_rss = None if self._start is None else max(0, self.peak_rss - self._start)
        if self.device is not None and self.device.type == "cuda":
            self.peak_cuda = int(torch.cuda.max_memory_allocated(self.device))


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds`` (wall clock, ``time.perf_counter``)."""

    def __enter__(self) -> "Stopwatch":
        self._t = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._t


def folder_bytes(path: Path, patterns: tuple[str, ...] = ("*",)) -> int:
    """Total size in bytes of the files under ``path`` matching any of ``patterns`` (recursive)."""
    path = Path(path)
    if not path.exists():
        return 0
    seen: set[Path] = set()
    for pat in patterns:
        seen.update(p for p in path.rglob(pat) if p.is_file())
    return sum(p.stat().st_size for p in seen)
