"""Benchmark the rasterizer backends: forward, backward and peak memory, sweeping N and resolution.

Not a test. Prints a markdown table, writes JSON (and the table) when asked. Medians of
``--repeats`` runs after ``--warmup`` runs. A backend stops climbing N at a resolution once one
configuration's forward+backward exceeds ``--max-seconds`` (recorded as skipped). ``--vs gsplat``
adds gsplat's own ``rasterization`` (recon's ``gsplat`` backend: scale repeated on 3 axes, identity
quaternions) on the same scene in the same process (CUDA only).

Examples::

    python tools/bench_raster.py --backends torch cpu --sizes 20000 --res 256 --threads 2
    python tools/bench_raster.py --backends cpu --sizes 1000 10000 100000 1000000 --res 128 256 512 1080p
    python tools/bench_raster.py --backends cuda --vs gsplat --device cuda --json out.json

Peak memory: CUDA -> torch.cuda.max_memory_allocated above the scene; CPU -> peak resident set
size above the pre-run level, sampled every millisecond from /proc/self/statm (approximate; glibc is
told to serve and return blocks >= 64 KiB with mmap so freed tensors leave the resident set),
taken in one extra untimed run: the timed runs have no sampler thread, which on a 2-core machine
preempts the kernel's threads and inflated the fast backends' times by up to ~20 %.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import threading
import time
from pathlib import Path

import torch

from recon.device import resolve_device
from recon.render import rasterize

RES_NAMES = {"1080p": (1920, 1080), "720p": (1280, 720)}


def parse_res(text: str) -> tuple[int, int]:
    """'256' -> (256, 256); '320x240' -> (320, 240); '1080p' -> (1920, 1080)."""
    if text in RES_NAMES:
        return RES_NAMES[text]
    if "x" in text:
        w, h = text.split("x")
        return int(w), int(h)
    return int(text), int(text)


def make_scene(N: int, C: int, W: int, H: int, device: torch.device, seed: int = 0):
    """N splats filling a box in front of C cameras on a small arc; footprints ~1-4 px sigma."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(N, 3, generator=g) * 2 - 1) * torch.tensor([1.0, 0.75, 0.5]) + torch.tensor([0.0, 0.0, 3.0])
    # spacing ~ box area / sqrt(N): scale so the splats cover the image about once or twice
    log_scales = torch.log(torch.full((N,), 1.6 / math.sqrt(N))) + 0.3 * torch.randn(N, generator=g)
    logits = torch.randn(N, generator=g) + 1.0
    colors = torch.rand(N, 3, generator=g)
    viewmats = torch.eye(4).repeat(C, 1, 1)
    for c in range(C):
        a = 0.15 * (c - (C - 1) / 2)
        viewmats[c, 0, 0], viewmats[c, 0, 2], viewmats[c, 2, 0], viewmats[c, 2, 2] = math.cos(a), math.sin(a), -math.sin(a), math.cos(a)
        viewmats[c, :3, 3] = torch.tensor([0.0, 0.0, 3.0]) - viewmats[c, :3, :3] @ torch.tensor([0.0, 0.0, 3.0])
    f = 1.2 * max(W, H)
    Ks = torch.tensor([[f, 0.0, W / 2], [0.0, f, H / 2], [0.0, 0.0, 1.0]]).repeat(C, 1, 1)
    to = lambda t: t.to(device)  # noqa: E731
    return [to(t).requires_grad_() for t in (means, log_scales, logits, colors)], to(viewmats), to(Ks)


def return_freed_memory_to_os() -> None:
    """glibc: fixed 64 KiB mmap threshold, so large freed blocks leave RSS (Linux only; else a no-op)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


class PeakRSS:
    """Peak resident set size above the level at start, sampled in a thread (bytes)."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = 0
        self._stop = threading.Event()

    def _rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self.page

    def __enter__(self) -> "PeakRSS":
        self.base = self._rss()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss() - self.base)
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.thread.join()
        self.peak = max(self.peak, self._rss() - self.base)


def time_once(fn, sync) -> tuple[float, float]:
    t0 = time.perf_counter()
    out = fn()
    sync()
    t1 = time.perf_counter()
    loss = sum(o.sum() for o in out)
    loss.backward()
    sync()
    return t1 - t0, time.perf_counter() - t1


def bench_one(backend: str, N: int, C: int, W: int, H: int, device: torch.device, warmup: int, repeats: int) -> dict:
    leaves, viewmats, Ks = make_scene(N, C, W, H, device)
    fn = lambda: rasterize(*leaves, viewmats, Ks, W, H, backend=backend)[:3]  # noqa: E731
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(warmup):
        time_once(fn, sync)
    fwd, bwd = [], []
    for _ in range(repeats):  # timed runs: no memory sampler thread (on 2 cores it preempts the kernels)
        for t in leaves:
            t.grad = None
        f, b = time_once(fn, sync)
        fwd.append(f)
        bwd.append(b)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    with PeakRSS() as rss:  # one more, untimed run for the peak memory
        for t in leaves:
            t.grad = None
        time_once(fn, sync)
    peak = (torch.cuda.max_memory_allocated() - base) if cuda else rss.peak
    return {"backend": backend, "N": N, "C": C, "W": W, "H": H, "forward_ms": 1e3 * statistics.median(fwd),
            "backward_ms": 1e3 * statistics.median(bwd), "total_ms": 1e3 * statistics.median(a + b for a, b in zip(fwd, bwd)),
            "peak_mem_mb": peak / 2**20, "repeats": repeats, "threads": torch.get_num_threads()}


def markdown(rows: list[dict]) -> str:
    lines = ["| backend | N | cams | W x H | forward ms | backward ms | fwd+bwd ms | peak MB |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['backend']} | {r['N']} | {r['C']} | {r['W']}x{r['H']} | skipped: {r['skipped']} | | | |")
        else:
            lines.append(f"| {r['backend']} | {r['N']} | {r['C']} | {r['W']}x{r['H']} | {r['forward_ms']:.1f} | "
                         f"{r['backward_ms']:.1f} | {r['total_ms']:.1f} | {r['peak_mem_mb']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", nargs="+", default=["torch", "cpu"], help="torch cpu cuda gsplat")
    ap.add_argument("--sizes", nargs="+", type=int, default=[1000, 10000, 100000, 1000000])
    ap.add_argument("--res", nargs="+", default=["128", "256", "512", "1080p"], help="'256', '320x240', '1080p'")
    ap.add_argument("--cameras", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-seconds", type=float, default=20.0, help="stop climbing N once a run takes longer")
    ap.add_argument("--vs", choices=["gsplat"], default=None, help="also time gsplat.rasterization (CUDA only)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--md", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return_freed_memory_to_os()
    device = resolve_device(args.device)
    backends = list(dict.fromkeys(list(args.backends) + (["gsplat"] if args.vs == "gsplat" else [])))
    if "gsplat" in backends and device.type != "cuda":
        raise SystemExit("--vs gsplat needs a CUDA device (gsplat has no CPU rasterizer)")
    rows: list[dict] = []
    for res in args.res:
        W, H = parse_res(res)
        for backend in backends:
            too_slow = None
            for N in sorted(args.sizes):
                if too_slow:
                    rows.append({"backend": backend, "N": N, "C": args.cameras, "W": W, "H": H, "skipped": too_slow})
                    continue
                r = bench_one(backend, N, args.cameras, W, H, device, args.warmup, args.repeats)
                rows.append(r)
                print(markdown([r]).splitlines()[-1], flush=True)
                if r["total_ms"] > 1e3 * args.max_seconds:
                    too_slow = f"N={N} took {r['total_ms'] / 1e3:.1f} s"
    meta = {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "cpu": os.uname().machine, "cpu_count": os.cpu_count(), "time": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    table = markdown(rows)
    print("\n" + table)
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    if args.md:
        args.md.write_text(table + "\n")


if __name__ == "__main__":
    main()
